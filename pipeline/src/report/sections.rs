//! The report's sections other than the model's: summary, tiers and cohorts, the
//! service evaluation, data quality, history, the model facts box with the TRIPOD+AI
//! checklist, and timings.

use super::svg::{Chart, PALETTE, YAxis};
use super::{Inputs, fmt, num, section, text};
use crate::outputs::manifest::Manifest;
use crate::outputs::report::esc;

pub fn summary(inputs: &Inputs) -> String {
    let m = &inputs.manifest;
    let quarantined: u64 = m.rows.values().map(|r| r.quarantined).sum();
    let mut s = format!(
        "<p><b id=\"s-population\" data-value=\"{pop}\">{pop}</b> people in the population at {as_of}. Opt-outs applied before anything else: <b>{oo_p}</b> patients and {oo_r} rows of their data excluded. <b>{quarantined}</b> input rows quarantined (see Data quality).</p>\n<table id=\"cohorts\"><tr><th>cohort</th><th>people</th><th>share of population</th><th>entered</th><th>left</th></tr>\n",
        pop = m.population,
        as_of = m.as_of,
        oo_p = m.optouts.patients_excluded,
        oo_r = m.optouts.rows_excluded,
    );
    for (name, n) in &m.cohorts {
        let pct = 100.0 * *n as f64 / m.population.max(1) as f64;
        let change = m.changes.get(name);
        s.push_str(&format!(
            "<tr><td>{}</td><td data-cohort=\"{}\" data-value=\"{n}\">{n}</td><td>{pct:.2}%</td><td>{}</td><td>{}</td></tr>\n",
            esc(name),
            esc(name),
            change.map_or("-".into(), |c| c.entered.to_string()),
            change.map_or("-".into(), |c| c.left.to_string()),
        ));
    }
    s.push_str("</table>\n");
    match &m.compared_with {
        Some(prev) => s.push_str(&format!(
            "<p>Entered and left are counted against the job's previous run, <code>{}</code>.</p>\n",
            esc(prev)
        )),
        None => s.push_str("<p>This is the job's first run: no changes to count.</p>\n"),
    }
    if let Some(t) = &m.temporal_validation {
        if t.refit {
            s.push_str(&format!(
                "<p class=\"flag\" id=\"refit\">Refit the model: {}.</p>\n",
                esc(&t.refit_reasons.join("; "))
            ));
        }
    }
    section("summary", "Summary", &s)
}

/// The cohorts' criteria, from the comment at the head of a built-in cohort's SQL.
fn criteria(name: &str) -> String {
    match crate::sql::builtin(&format!("cohorts/{name}.sql")) {
        Some(sql) => sql
            .lines()
            .take_while(|l| l.starts_with("--"))
            .map(|l| l.trim_start_matches("--").trim())
            .collect::<Vec<_>>()
            .join(" "),
        None => "defined by the job's own SQL file".into(),
    }
}

pub fn tiers(inputs: &Inputs) -> String {
    let m = &inputs.manifest;
    // Highest risk first, in the order of the model's tiers.
    let order: Vec<String> = inputs.model["tiers"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .filter(|v: &Vec<String>| !v.is_empty())
        .unwrap_or_else(|| m.tiers.keys().cloned().collect());
    let mut s = String::new();
    if !m.tiers.is_empty() {
        let sizes: Vec<(String, f64)> = order
            .iter()
            .map(|t| (t.clone(), m.tiers.get(t).copied().unwrap_or(0) as f64))
            .collect();
        let widest = sizes.iter().map(|t| t.1).fold(1.0, f64::max);
        let desc: Vec<String> = sizes.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let mut c = Chart::new(
            "chart-tiers",
            "Risk tiers",
            &format!(
                "People in each risk tier, highest risk at the top: {}.",
                desc.join(", ")
            ),
            ("people (centred)", -widest / 2.0, widest / 2.0),
            YAxis::Rows(order.clone()),
        );
        for (k, (_, n)) in sizes.iter().enumerate() {
            c.bar("people", PALETTE[0], k, (-n / 2.0, n / 2.0), (0, 1), *n);
        }
        s.push_str(&c.finish());
    }
    s.push_str("<table id=\"criteria\"><tr><th>cohort</th><th>criteria</th></tr>\n");
    for name in m.cohorts.keys() {
        s.push_str(&format!(
            "<tr><td>{}</td><td style=\"text-align:left\">{}</td></tr>\n",
            esc(name),
            esc(&criteria(name))
        ));
    }
    s.push_str("</table>\n");
    section("tiers", "Tiers and cohorts", &s)
}

pub fn services(inputs: &Inputs) -> String {
    if inputs.services.is_empty() {
        return String::new();
    }
    let rows: Vec<_> = inputs
        .services
        .iter()
        .filter(|r| num(r, "did").is_some())
        .collect();
    let mut s = String::from(
        "<p>Matched difference in differences per 1,000 person-years, enrolled against matched comparison patients (risk-set matching at each start date; see the README), with person-clustered 95% intervals. Hollow marks carry a warning (low match rate, imbalance after matching, or a pre-trend in the placebo year).</p>\n",
    );
    // Each outcome once, in order of first appearance (rows come by service, so a
    // `dedup` of neighbours drew every chart once per service).
    let mut outcomes: Vec<&str> = Vec::new();
    for r in &rows {
        if !outcomes.contains(&text(r, "outcome")) {
            outcomes.push(text(r, "outcome"));
        }
    }
    for outcome in outcomes {
        let rows: Vec<_> = rows
            .iter()
            .filter(|r| text(r, "outcome") == outcome)
            .collect();
        s.push_str(&service_effects(outcome, &rows));
    }
    s.push_str("<table id=\"service-table\"><tr><th>service</th><th>outcome</th><th>enrolled</th><th>matched</th><th>match rate</th><th>DiD (95% CI)</th><th>placebo DiD</th><th>warnings</th></tr>\n");
    for r in &inputs.services {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({} to {})</td><td>{}</td><td>{}</td></tr>\n",
            esc(text(r, "service_code")),
            esc(text(r, "outcome")),
            esc(text(r, "enrolled")),
            esc(text(r, "treated")),
            fmt(num(r, "match_rate"), 3),
            fmt(num(r, "did"), 1),
            fmt(num(r, "did_ci_low"), 1),
            fmt(num(r, "did_ci_high"), 1),
            fmt(num(r, "placebo_did"), 1),
            esc(text(r, "warnings")),
        ));
    }
    s.push_str("</table>\n");
    s.push_str(&balance(inputs));
    section("services", "Service evaluation", &s)
}

/// One outcome's differences in differences as a forest plot.
fn service_effects(outcome: &str, rows: &[&&super::Row]) -> String {
    let labels: Vec<String> = rows
        .iter()
        .map(|r| text(r, "service_code").to_string())
        .collect();
    let lo = rows
        .iter()
        .filter_map(|r| num(r, "did_ci_low"))
        .fold(0.0, f64::min);
    let hi = rows
        .iter()
        .filter_map(|r| num(r, "did_ci_high"))
        .fold(0.0, f64::max);
    let pad = (hi - lo).max(1.0) * 0.05;
    let what = outcome.replace('_', " ");
    let mut c = Chart::new(
        &format!("chart-services-{outcome}"),
        &format!("Service effects on {what}"),
        &format!(
            "The difference in differences of {what} per 1,000 person-years for each service, with its 95% interval; left of zero the service reduced them."
        ),
        (
            "difference in differences per 1,000 person-years",
            lo - pad,
            hi + pad,
        ),
        YAxis::Rows(labels),
    );
    c.reference_x(0.0, "no effect");
    for (k, r) in rows.iter().enumerate() {
        let est = num(r, "did").unwrap_or(f64::NAN);
        let ci = (
            num(r, "did_ci_low").unwrap_or(est),
            num(r, "did_ci_high").unwrap_or(est),
        );
        c.estimate(
            "DiD",
            PALETTE[0],
            k,
            est,
            ci,
            !text(r, "warnings").is_empty(),
        );
    }
    c.finish()
}

/// Standardised mean differences before and after matching (a Love plot).
fn balance(inputs: &Inputs) -> String {
    let rows: Vec<_> = inputs
        .balance
        .iter()
        .filter(|r| num(r, "smd_before").is_some())
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}", text(r, "service_code"), text(r, "variable")))
        .collect();
    let hi = rows
        .iter()
        .flat_map(|r| [num(r, "smd_before"), num(r, "smd_after")])
        .flatten()
        .map(f64::abs)
        .fold(0.25, f64::max);
    let mut c = Chart::new(
        "chart-balance",
        "Balance before and after matching",
        "The absolute standardised mean difference of each matching variable between enrolled patients and, before matching, everyone eligible, after matching the matched comparison patients; under 0.1 (dashed) is usually taken as balanced.",
        ("|standardised mean difference|", 0.0, hi * 1.05),
        YAxis::Rows(labels),
    );
    c.reference_x(0.1, "0.1");
    for (k, r) in rows.iter().enumerate() {
        if let Some(v) = num(r, "smd_before") {
            c.bar("before matching", PALETTE[1], k, (0.0, v.abs()), (0, 2), v);
        }
        if let Some(v) = num(r, "smd_after") {
            c.bar("after matching", PALETTE[0], k, (0.0, v.abs()), (1, 2), v);
        }
    }
    format!("<h3>Balance</h3>\n{}", c.finish())
}

pub fn quality(inputs: &Inputs) -> String {
    let m = &inputs.manifest;
    let mut s = String::from(
        "<table id=\"quality-table\"><tr><th>table</th><th>rows read</th><th>excluded (opt-out)</th><th>valid</th><th>quarantined</th><th>by reason</th><th>linked to patients</th></tr>\n",
    );
    for (table, r) in &m.rows {
        let reasons: Vec<String> = r
            .quarantined_by_reason
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        let unlinked = r
            .quarantined_by_reason
            .get("unknown_pseudo_id")
            .copied()
            .unwrap_or(0);
        let considered = r.read.saturating_sub(r.excluded_optout);
        // Opt-outs of people not registered here are expected, not a linkage failure.
        let linkage = if table == "patients" || table == "optouts" || considered == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1}%",
                100.0 * (considered - unlinked) as f64 / considered as f64
            )
        };
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{linkage}</td></tr>\n",
            esc(table),
            r.read,
            r.excluded_optout,
            r.valid,
            r.quarantined,
            reasons.join(", ")
        ));
    }
    s.push_str("</table>\n<p class=\"note\">Linked: the share of a table's rows (after opt-outs) whose pseudo_id is in patients. Quarantined rows are in the run folder's <code>quarantine/</code> with their reasons.</p>\n");
    section("quality", "Data quality", &s)
}

pub fn history(inputs: &Inputs) -> String {
    let h = &inputs.history;
    if h.len() < 2 {
        return section(
            "history",
            "History",
            "<p>The job's first run: its history starts here.</p>\n",
        );
    }
    let x = |k: usize| k as f64 + 1.0;
    let n = h.len() as f64;
    let desc = |what: &str| {
        format!(
            "{what} over the job's {} runs, oldest first (run 1 is the oldest).",
            h.len()
        )
    };
    let mut s = String::new();
    let top = h
        .iter()
        .filter_map(|r| r.population)
        .map(|p| p as f64)
        .fold(1.0, f64::max);
    let mut c = Chart::new(
        "chart-history-population",
        "Population and cohorts",
        &desc("The population and each cohort's size"),
        ("run", 1.0, n),
        YAxis::Numbers {
            label: "people".into(),
            lo: 0.0,
            hi: top * 1.05,
        },
    );
    c.line(
        "population",
        PALETTE[6],
        false,
        &h.iter()
            .enumerate()
            .filter_map(|(k, r)| r.population.map(|p| (x(k), p as f64)))
            .collect::<Vec<_>>(),
    );
    let names: std::collections::BTreeSet<&String> =
        h.iter().flat_map(|r| r.cohorts.keys()).collect();
    for (i, name) in names.into_iter().enumerate() {
        let pts: Vec<(f64, f64)> = h
            .iter()
            .enumerate()
            .filter_map(|(k, r)| r.cohorts.get(name).map(|v| (x(k), *v as f64)))
            .collect();
        c.line(name, PALETTE[i % 6], false, &pts);
    }
    s.push_str(&c.finish());
    let auc: Vec<(f64, f64)> = h
        .iter()
        .enumerate()
        .filter_map(|(k, r)| r.validation_auc.or(r.temporal_auc).map(|v| (x(k), v)))
        .collect();
    let slope: Vec<(f64, f64)> = h
        .iter()
        .enumerate()
        .filter_map(|(k, r)| {
            r.calibration_slope
                .or(r.temporal_calibration_slope)
                .map(|v| (x(k), v))
        })
        .collect();
    if !auc.is_empty() || !slope.is_empty() {
        let hi = auc.iter().chain(&slope).map(|p| p.1).fold(1.3, f64::max);
        let mut c = Chart::new(
            "chart-history-model",
            "Model checks",
            &desc(
                "The AUC (validation, or temporal validation for score-only runs) and the calibration slope",
            ),
            ("run", 1.0, n),
            YAxis::Numbers {
                label: "AUC, calibration slope".into(),
                lo: 0.0,
                hi,
            },
        );
        c.line("slope 0.8", PALETTE[6], true, &[(1.0, 0.8), (n, 0.8)]);
        c.line("slope 1.2", PALETTE[6], true, &[(1.0, 1.2), (n, 1.2)]);
        c.line("AUC", PALETTE[0], false, &auc);
        c.line("calibration slope", PALETTE[1], false, &slope);
        s.push_str(&c.finish());
    }
    s.push_str(&history_table(h));
    section("history", "History", &s)
}

fn history_table(h: &[crate::history::HistoryRow]) -> String {
    let mut s = String::new();
    s.push_str("<table id=\"history-table\"><tr><th>run</th><th>run_id</th><th>as of</th><th>population</th><th>cohorts</th><th>AUC</th><th>slope</th><th></th></tr>\n");
    for (k, r) in h.iter().enumerate() {
        let cohorts: Vec<String> = r
            .cohorts
            .iter()
            .map(|(c, v)| format!("{} {v}", esc(c)))
            .collect();
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            k + 1,
            esc(r.run_id.as_deref().unwrap_or("-")),
            r.as_of,
            r.population.map_or("-".to_string(), |p| p.to_string()),
            cohorts.join(", "),
            fmt(r.validation_auc.or(r.temporal_auc), 3),
            fmt(r.calibration_slope.or(r.temporal_calibration_slope), 2),
            if r.refit { "refit" } else { "" }
        ));
    }
    s.push_str("</table>\n");
    s
}

/// The TRIPOD+AI items (Collins et al., BMJ 2024) a run can fill itself, and the rest
/// marked for the analyst.
const TRIPOD: &[(&str, &str)] = &[
    ("1 Title", "analyst"),
    ("3 Background: healthcare context and rationale", "analyst"),
    (
        "4 Objectives: intended use (case finding for direct care)",
        "run",
    ),
    ("5 Source of data and dates", "run"),
    (
        "6 Setting and eligibility (registered and alive at A, no opt-out)",
        "run",
    ),
    ("7 Data preparation and quality checks", "run"),
    (
        "8 Outcome: emergency admission within 12 months, how and when assessed",
        "run",
    ),
    ("9 Predictors: definitions and timing", "run"),
    ("10 Sample size", "run"),
    ("11 Missing data (IMD decile 5 where unknown)", "run"),
    (
        "12 Analytical methods: logistic regression, split, performance measures",
        "run",
    ),
    ("13 Class imbalance", "analyst"),
    (
        "14 Fairness: performance by sex, age band and deprivation",
        "run",
    ),
    ("15 Model output: risk, tiers and reasons", "run"),
    ("16 Training versus evaluation data", "run"),
    ("17 Ethical approval", "analyst"),
    ("18 Funding", "analyst"),
    ("19 Conflicts of interest", "analyst"),
    ("20 Protocol and registration", "analyst"),
    ("21 Data sharing", "analyst"),
    ("22 Code availability (riskstrat, its version)", "run"),
    ("23 Patient and public involvement", "analyst"),
    ("24 Participants: numbers and outcome events", "run"),
    ("25 Model specification: coefficients", "run"),
    (
        "26 Model performance: discrimination, calibration, with intervals",
        "run",
    ),
    ("27 Model updating: temporal validation and drift", "run"),
    ("28 Interpretation and limitations", "analyst"),
    ("29 Usability in practice", "analyst"),
];

pub fn facts_and_tripod(inputs: &Inputs) -> String {
    let m = &inputs.manifest;
    let (fitted_on, n_train) = (
        inputs.model["t0"].as_str().unwrap_or("-"),
        inputs.model["n_train"].as_u64(),
    );
    let mut s = format!(
        "<div class=\"facts\" id=\"facts-card\"><h3>Model facts</h3>\n<p><b>Intended use:</b> case finding for direct care: finding people with complex needs whom a care team should review for joined-up care.</p>\n<p><b>Not for:</b> rationing care, setting cost targets, or any decision about a person without a clinician's review.</p>\n<p><b>Fitted on:</b> the population registered on {fitted_on}{}, outcome an emergency admission in the following year; validated on the people held out by the contract's split{}.</p>\n<p><b>Known limitations:</b> it sees only primary care appointments, prescriptions and hospital admissions; deaths, social care and mental health services are not in its data; it ranks by the risk of an emergency admission, not by what care would help; subgroups flagged above are served worse.</p>\n</div>\n",
        n_train.map_or(String::new(), |n| format!(" ({n} people in training)")),
        if m.temporal_validation.is_some() {
            "; this run scored with it as saved and checked it on the newest outcome year"
        } else {
            ""
        },
    );
    s.push_str("<h3>TRIPOD+AI checklist</h3>\n<table id=\"tripod\"><tr><th>item</th><th>status</th></tr>\n");
    for (item, who) in TRIPOD {
        let status = if *who == "run" {
            "filled from this run (this report, <code>metrics.json</code>, <code>model.json</code>, the README)"
        } else {
            "<b>for the analyst</b>"
        };
        s.push_str(&format!(
            "<tr><td>{}</td><td style=\"text-align:left\">{status}</td></tr>\n",
            esc(item)
        ));
    }
    s.push_str("</table>\n");
    section("facts", "Model facts and reporting checklist", &s)
}

pub fn timings(m: &Manifest) -> String {
    let mut s = String::from("<table id=\"timings-table\"><tr><th>stage</th><th>time</th></tr>\n");
    for (stage, ms) in &m.timings_ms {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{:.2} s</td></tr>\n",
            esc(stage),
            *ms as f64 / 1000.0
        ));
    }
    s.push_str("</table>\n");
    section("timings", "Timings", &s)
}

//! The report for commissioners (`riskstrat report RUN_DIR --for commissioners`):
//! every number in it is an answer of the commissioner path (`serve::Commissioner`:
//! the closed grammar, then cell-key perturbation, rounding and suppression), asked
//! with the queries below; nothing is read from the run's files directly but its
//! manifest's dates and names. A query that disclosure control refuses leaves its
//! part out and says so.

use super::svg::{Chart, PALETTE, YAxis};
use super::{Row, fmt, num, page, rows, section, text};
use crate::error::Result;
use crate::governance::disclosure_control::Policy;
use crate::governance::pseudonym::Key;
use crate::outputs::report::esc;
use crate::outputs::run_store::RunHandle;
use crate::serve::Commissioner;

/// What the report asks, by part.
pub const QUERIES: &[(&str, &str)] = &[
    ("population", "SELECT count(*) AS people FROM people"),
    (
        "cohorts",
        "SELECT cohort, count(*) AS people FROM cohort_people GROUP BY cohort",
    ),
    (
        "tiers",
        "SELECT tier, count(*) AS people FROM people GROUP BY tier",
    ),
    (
        "ages",
        "SELECT age_band, count(*) AS people, avg(risk) AS mean_risk FROM people GROUP BY age_band",
    ),
    ("changes", "SELECT * FROM cohort_changes"),
    ("services", "SELECT * FROM service_outcomes"),
];

async fn ask(c: &Commissioner, part: &str) -> Option<Vec<Row>> {
    let sql = QUERIES.iter().find(|(p, _)| *p == part)?.1;
    match c.query(sql).await {
        Ok(a) => rows(&a.batches).ok(),
        Err(e) => {
            tracing::info!("commissioner report: {part} not released ({})", e.message);
            None
        }
    }
}

fn withheld() -> String {
    "<p class=\"note\">Not released by disclosure control.</p>\n".into()
}

/// A released count, marked for readers and tests.
fn count(v: Option<f64>) -> String {
    match v {
        Some(v) => format!("<span class=\"released\" data-value=\"{v}\">{v:.0}</span>"),
        None => "-".into(),
    }
}

pub async fn render(run: &RunHandle, secret: &Key) -> Result<String> {
    let manifest = run.manifest().await?;
    let c = Commissioner::open_runs(std::slice::from_ref(run), Policy::default(), secret).await?;
    let mut body = String::new();

    let mut s = String::new();
    match ask(&c, "population").await {
        Some(r) => s.push_str(&format!(
            "<p>{} people in the population at {} (opt-outs applied).</p>\n",
            count(r.first().and_then(|r| num(r, "people"))),
            manifest.as_of
        )),
        None => s.push_str(&withheld()),
    }
    if let Some(r) = ask(&c, "cohorts").await {
        s.push_str("<table id=\"cohorts\"><tr><th>cohort</th><th>people</th></tr>\n");
        for row in &r {
            s.push_str(&format!(
                "<tr><td>{}</td><td>{}</td></tr>\n",
                esc(text(row, "cohort")),
                count(num(row, "people"))
            ));
        }
        s.push_str("</table>\n");
    }
    body.push_str(&section("summary", "Summary", &s));
    body.push_str(&tiers(&c).await);
    body.push_str(&changes(&c).await);
    body.push_str(&services(&c).await);
    body.push_str(&section(
        "facts",
        "About the model",
        "<div class=\"facts\"><p><b>Intended use:</b> case finding for direct care. <b>Not for</b> rationing care or cost targets.</p><p>Every count here is perturbed by its cell key and rounded to a multiple of 5; counts under 8 people and cuts that could single someone out are not shown. Numbers from different tables need not add up exactly.</p></div>\n",
    ));
    Ok(page(
        &format!("riskstrat run {} for commissioners", manifest.run_id),
        &format!(
            "<h1>riskstrat: {} (for commissioners)</h1>\n<p>Run <b>{}</b>, as of <b>{}</b>. Built only from what disclosure control releases.</p>\n",
            esc(&manifest.job),
            esc(&manifest.run_id),
            manifest.as_of
        ),
        &body,
    ))
}

async fn tiers(c: &Commissioner) -> String {
    let mut s = String::new();
    match ask(c, "tiers").await {
        Some(r) if !r.is_empty() => {
            let labels: Vec<String> = r.iter().map(|row| text(row, "tier").to_string()).collect();
            let widest = r
                .iter()
                .filter_map(|row| num(row, "people"))
                .fold(1.0, f64::max);
            let mut chart = Chart::new(
                "chart-tiers",
                "Risk tiers",
                "People in each risk tier as released by disclosure control (perturbed and rounded).",
                ("people (centred)", -widest / 2.0, widest / 2.0),
                YAxis::Rows(labels),
            );
            for (k, row) in r.iter().enumerate() {
                let n = num(row, "people").unwrap_or(0.0);
                chart.bar("people", PALETTE[0], k, (-n / 2.0, n / 2.0), (0, 1), n);
            }
            s.push_str(&chart.finish());
        }
        _ => s.push_str(&withheld()),
    }
    if let Some(r) = ask(c, "ages").await {
        s.push_str(
            "<table id=\"ages\"><tr><th>age band</th><th>people</th><th>mean risk</th></tr>\n",
        );
        for row in &r {
            s.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(text(row, "age_band")),
                count(num(row, "people")),
                fmt(num(row, "mean_risk"), 3)
            ));
        }
        s.push_str("</table>\n");
    }
    section("tiers", "Tiers", &s)
}

/// Entered, left and stayed per cohort: sums of the released cells of
/// `cohort_changes` (each already protected).
async fn changes(c: &Commissioner) -> String {
    let Some(r) = ask(c, "changes").await else {
        return section("changes", "Changes since the previous run", &withheld());
    };
    if r.is_empty() {
        return section(
            "changes",
            "Changes since the previous run",
            "<p>No changes released (a job's first run, or every cell under 8 people).</p>\n",
        );
    }
    let mut totals: std::collections::BTreeMap<(String, String), f64> = Default::default();
    for row in &r {
        *totals
            .entry((text(row, "cohort").into(), text(row, "change").into()))
            .or_default() += num(row, "people").unwrap_or(0.0);
    }
    let mut s = String::from(
        "<table id=\"changes\"><tr><th>cohort</th><th>change</th><th>people (sum of released cells)</th></tr>\n",
    );
    for ((cohort, change), n) in totals {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><span class=\"released-sum\" data-cohort=\"{}\" data-change=\"{}\" data-sum=\"{n}\">{n:.0}</span></td></tr>\n",
            esc(&cohort),
            esc(&change),
            esc(&cohort),
            esc(&change),
        ));
    }
    s.push_str("</table>\n");
    section("changes", "Changes since the previous run", &s)
}

async fn services(c: &Commissioner) -> String {
    let Some(r) = ask(c, "services").await else {
        return String::new();
    };
    if r.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "<table id=\"service-table\"><tr><th>service</th><th>outcome</th><th>enrolled</th><th>DiD per 1,000 person-years (95% CI)</th><th>warnings</th></tr>\n",
    );
    for row in &r {
        s.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ({} to {})</td><td>{}</td></tr>\n",
            esc(text(row, "service_code")),
            esc(text(row, "outcome")),
            count(num(row, "enrolled")),
            fmt(num(row, "did"), 1),
            fmt(num(row, "did_ci_low"), 1),
            fmt(num(row, "did_ci_high"), 1),
            esc(&warnings(row)),
        ));
    }
    s.push_str("</table>\n");
    s.push_str(&warning_legend(&r));
    section("services", "Service evaluation", &s)
}

/// What each warning raised in the table means, in words.
fn warning_legend(rows: &[Row]) -> String {
    use crate::service_evaluation::Warning;
    let raised: Vec<Warning> = Warning::ALL
        .into_iter()
        .filter(|w| {
            let flag = format!("warning_{}", w.text());
            rows.iter().any(|row| num(row, &flag) == Some(1.0))
        })
        .collect();
    if raised.is_empty() {
        return String::new();
    }
    let mut s = String::from("<ul id=\"service-warnings\">\n");
    for w in raised {
        s.push_str(&format!(
            "<li><b>{}</b>: {}</li>\n",
            w.text(),
            esc(w.meaning())
        ));
    }
    s.push_str("</ul>\n");
    s
}

/// A service row's warnings, from the view's 0/1 flags (regression: the report read a
/// `warnings` column the view does not have, and showed none).
fn warnings(row: &Row) -> String {
    use crate::service_evaluation::Warning;
    let on = Warning::ALL
        .into_iter()
        .filter(|w| num(row, &format!("warning_{}", w.text())) == Some(1.0));
    on.map(Warning::text).collect::<Vec<_>>().join(",")
}

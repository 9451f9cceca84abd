//! The run report, end to end: the demo's `report.html` read back chart by chart
//! (each mark's data attributes) against `metrics.json`, `model.json`, the manifest and
//! the service evaluation's table; rendered in headless Chromium (no console error, no
//! request, a screenshot per section, the numbers shown equal to the run's); and the
//! commissioners' report, every number of which is an answer of the commissioner path.

use crate::common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The demo's last run (two runs of one job, a service evaluation, feedback), made once
/// for every test here.
fn demo_run() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("report-demo");
        let o = riskstrat()
            .args(["demo", "--patients", "20000", "--out"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
    })
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The attributes of every element of a chart (its `<figure>`) whose tag opens with
/// `open` (say `circle class="point"`).
fn marks(html: &str, chart: &str, open: &str) -> Vec<BTreeMap<String, String>> {
    let start = html
        .find(&format!("<figure class=\"chart\" id=\"{chart}\">"))
        .unwrap_or_else(|| panic!("no chart {chart}"));
    let end = start + html[start..].find("</figure>").unwrap();
    html[start..end]
        .split('<')
        .filter(|tag| tag.starts_with(open))
        .map(|tag| {
            let mut attrs = BTreeMap::new();
            let mut rest = tag;
            while let Some(eq) = rest.find("=\"") {
                let name = rest[..eq].rsplit(' ').next().unwrap().to_string();
                let after = &rest[eq + 2..];
                let close = after.find('"').unwrap();
                attrs.insert(name, after[..close].to_string());
                rest = &after[close + 1..];
            }
            attrs
        })
        .collect()
}

fn f(attrs: &BTreeMap<String, String>, name: &str) -> f64 {
    attrs[name].parse().unwrap_or(f64::NAN)
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: the chart says {got}, the run {want}"
    );
}

/// A series' (x, y) points of a chart.
fn series(html: &str, chart: &str, name: &str) -> Vec<(f64, f64)> {
    marks(html, chart, "circle class=\"point\"")
        .into_iter()
        .filter(|m| m["data-series"] == name)
        .map(|m| (f(&m, "data-x"), f(&m, "data-y")))
        .collect()
}

#[test]
fn the_reports_charts_hold_the_runs_metrics() {
    let run = demo_run();
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    let metrics = json(&run.join("metrics.json"));
    let model = json(&run.join("model.json"));
    let manifest = json(&run.join("manifest.json"));
    let v = &metrics["validation"];

    // Regression: each service chart was drawn once per service, and sections shared
    // their ids with their tables, so labels pointed at the wrong element.
    let ids: Vec<&str> = html
        .split(" id=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "repeated ids: {ids:?}");

    // Self-contained: no script, nothing fetched.
    assert!(!html.contains("<script"), "a script");
    for bad in ["src=", "href=", "url(", "@import"] {
        assert!(!html.contains(bad), "an external resource ({bad})");
    }

    // ROC: the curve's points are metrics.json's.
    let roc = series(&html, "chart-roc", "model");
    let want: Vec<&Value> = v["roc"].as_array().unwrap().iter().collect();
    assert!(roc.len() > 20, "{} ROC points", roc.len());
    assert_eq!(roc.len(), want.len());
    for (p, w) in roc.iter().zip(&want) {
        close("ROC x", p.0, w[0].as_f64().unwrap());
        close("ROC y", p.1, w[1].as_f64().unwrap());
    }
    close(
        "AUC shown",
        html.split("id=\"m-auc\" data-value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
        v["auc"].as_f64().unwrap(),
    );

    // Calibration: each decile's mean risk and observed share, with an interval
    // around it.
    let deciles = marks(
        &html,
        "chart-calibration",
        "circle class=\"point\" data-series=\"risk decile\"",
    );
    let want = v["deciles"].as_array().unwrap();
    assert_eq!(deciles.len(), want.len());
    for (d, w) in deciles.iter().zip(want) {
        close(
            "decile risk",
            f(d, "data-x"),
            w["mean_risk"].as_f64().unwrap(),
        );
        close(
            "decile observed",
            f(d, "data-y"),
            w["observed_rate"].as_f64().unwrap(),
        );
        assert!(f(d, "data-low") <= f(d, "data-y") && f(d, "data-y") <= f(d, "data-high"));
    }

    // Decision curve: the model's net benefit at each threshold.
    let nb = series(&html, "chart-decision", "the model");
    let want = v["net_benefit"].as_array().unwrap();
    assert_eq!(nb.len(), want.len());
    for (p, w) in nb.iter().zip(want) {
        close("threshold", p.0, w["threshold"].as_f64().unwrap());
        close("net benefit", p.1, w["model"].as_f64().unwrap());
    }

    // Coefficients with their intervals, as model.json has them.
    let coef = marks(&html, "chart-coefficients", "rect class=\"estimate\"");
    assert_eq!(coef.len(), model["features"].as_array().unwrap().len());
    for c in &coef {
        let term = &c["data-row"];
        close(
            term,
            f(c, "data-estimate"),
            model["coefficients"][term].as_f64().unwrap(),
        );
        close(
            term,
            f(c, "data-low"),
            model["ci_low"][term].as_f64().unwrap(),
        );
        close(
            term,
            f(c, "data-high"),
            model["ci_high"][term].as_f64().unwrap(),
        );
    }

    // Subgroups: the AUC of each, and the flag where a subgroup is served worse.
    let overall = v["auc"].as_f64().unwrap();
    let subs = marks(&html, "chart-subgroups", "rect class=\"estimate\"");
    assert!(subs.len() >= 8, "{} subgroups", subs.len());
    for s in &subs {
        let (kind, group) = s["data-row"].split_once(' ').unwrap();
        let kind = kind.replace(' ', "_");
        let group = group
            .trim_start_matches("band ")
            .trim_start_matches("quintile ");
        let kind = match kind.as_str() {
            "age" => "age_band",
            "imd" => "imd_quintile",
            k => k,
        };
        let w = &metrics["subgroups"][kind][group];
        close(
            &s["data-row"],
            f(s, "data-estimate"),
            w["auc"].as_f64().unwrap(),
        );
        let slope = w["calibration_slope"].as_f64().unwrap();
        let worse = w["auc_ci"][1].as_f64().unwrap() < overall || !(0.8..=1.2).contains(&slope);
        assert_eq!(s["data-flag"], worse.to_string(), "{}", s["data-row"]);
    }

    // Tiers: one bar per tier, the manifest's sizes.
    let tiers = marks(&html, "chart-tiers", "rect class=\"bar\"");
    let want = manifest["tiers"].as_object().unwrap();
    assert_eq!(tiers.len(), want.len());
    for t in &tiers {
        close(
            &t["data-row"],
            f(t, "data-value"),
            want[&t["data-row"]].as_f64().unwrap(),
        );
    }

    // Service effects, one chart per outcome: service_outcomes.parquet's differences
    // in differences.
    let outcomes = read_parquet(&run.join("service_outcomes.parquet"));
    let did: Vec<f64> = outcomes
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("did").unwrap();
            let c = c
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Float64Array>()
                .unwrap();
            c.iter().map(|v| v.unwrap_or(f64::NAN)).collect::<Vec<_>>()
        })
        .collect();
    let names = texts(&run.join("service_outcomes.parquet"), "outcome");
    let services = texts(&run.join("service_outcomes.parquet"), "service_code");
    assert!(did.len() >= 2);
    for (k, d) in did.iter().enumerate() {
        let outcome = names[k].as_deref().unwrap();
        let service = services[k].as_deref().unwrap();
        let e = marks(
            &html,
            &format!("chart-services-{outcome}"),
            "rect class=\"estimate\"",
        )
        .into_iter()
        .find(|e| e["data-row"] == service)
        .unwrap_or_else(|| panic!("{service} {outcome} is not drawn"));
        close(&format!("{service} {outcome}"), f(&e, "data-estimate"), *d);
    }

    // History: the demo's two runs.
    let population = series(&html, "chart-history-population", "population");
    assert_eq!(population.len(), 2);
    close(
        "history population",
        population[1].1,
        manifest["population"].as_f64().unwrap(),
    );

    // Every chart is titled and described; the facts box and the checklist are there.
    let charts = html.matches("<figure class=\"chart\"").count();
    assert!(charts >= 10, "{charts} charts");
    assert_eq!(html.matches("role=\"img\"").count(), charts);
    assert_eq!(html.matches("<desc id=").count(), charts);
    assert!(html.contains("Intended use:") && html.contains("TRIPOD+AI"));
    assert!(html.contains("<b>for the analyst</b>"));
}

/// The report in a real browser: no console error, no request, each section on
/// screen, and the numbers a reader sees equal to the run's.
#[test]
fn the_report_renders_in_chromium_with_the_runs_numbers() {
    let python = std::env::var("RISKSTRAT_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RISKSTRAT_PYTHON is not set: run ./scripts/test.sh, which installs Chromium and Playwright and points RISKSTRAT_PYTHON at the Python that has it"
        )
    });
    let run = demo_run();
    let shots = scratch("report-screenshots");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/report_browser.py");
    let o = std::process::Command::new(&python)
        .arg(&script)
        .arg(run.join("report.html"))
        .arg(&shots)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let seen: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(seen["console_errors"], serde_json::json!([]));
    assert_eq!(seen["page_errors"], serde_json::json!([]));
    assert_eq!(
        seen["requests"],
        serde_json::json!([]),
        "the report fetched something"
    );
    assert_eq!(seen["scripts"], 0);
    for id in [
        "summary", "model", "tiers", "services", "quality", "history", "facts",
    ] {
        let size = seen["sections"][id].as_u64().unwrap_or(0);
        assert!(size > 1000, "section {id}: screenshot of {size} bytes");
    }

    let metrics = json(&run.join("metrics.json"));
    let manifest = json(&run.join("manifest.json"));
    let shown = |k: &str| seen[k].as_str().unwrap().parse::<f64>().unwrap();
    assert_eq!(
        format!("{:.3}", metrics["validation"]["auc"].as_f64().unwrap()),
        seen["auc_text"].as_str().unwrap()
    );
    assert_eq!(
        format!(
            "{:.2}",
            metrics["validation"]["calibration_slope"].as_f64().unwrap()
        ),
        seen["slope_text"].as_str().unwrap()
    );
    assert_eq!(
        shown("population_text"),
        manifest["population"].as_f64().unwrap()
    );
    for (cohort, n) in manifest["cohorts"].as_object().unwrap() {
        assert_eq!(
            seen["cohorts"][cohort].as_str(),
            Some(n.to_string().as_str()),
            "{cohort}"
        );
    }
    // Tier bars: the manifest's sizes, drawn wider for bigger tiers.
    let mut bars: Vec<(f64, f64)> = seen["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let tier = t["tier"].as_str().unwrap();
            let value: f64 = t["value"].as_str().unwrap().parse().unwrap();
            assert_eq!(value, manifest["tiers"][tier].as_f64().unwrap(), "{tier}");
            (value, t["width"].as_f64().unwrap())
        })
        .collect();
    bars.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(bars.windows(2).all(|w| w[0].1 <= w[1].1), "{bars:?}");
    for c in seen["charts"].as_array().unwrap() {
        assert_eq!(c["role"], "img");
        assert!(
            !c["title"].as_str().unwrap().is_empty() && c["desc"].as_str().unwrap().len() > 40,
            "{c}"
        );
    }
}

/// The commissioners' report: every number is an answer the commissioner path gives
/// (the same queries through `riskstrat query`), none is a count of 1 to 7, and none
/// of the analyst's exact figures leaks into it.
#[test]
fn the_commissioners_report_holds_only_released_numbers() {
    let run = demo_run();
    let (key, _) = cell_key();
    let out = scratch("report-commissioners").join("c.html");
    let o = riskstrat()
        .arg("report")
        .arg(run)
        .args(["--for", "commissioners", "--cell-key"])
        .arg(&key)
        .arg("--out")
        .arg(&out)
        .args(["--requester", "commissioner.1", "--audit"])
        .arg(out.with_file_name("audit.jsonl"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&out).unwrap();
    // Regression (disclosure review of 2026-12-07): the report was not audited.
    let records = riskstrat::governance::audit::read(&out.with_file_name("audit.jsonl")).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.actor.as_str(), r.action.as_str()),
        ("commissioner.1", "query")
    );
    assert_eq!(r.run.as_deref(), run.file_name().unwrap().to_str());
    for (_, sql) in riskstrat::report::commissioners::QUERIES {
        assert!(r.query.as_deref().unwrap().contains(sql), "{sql}");
    }
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(html.as_bytes()))
    };
    assert_eq!(r.file_sha256.as_deref(), Some(digest.as_str()));
    let released: Vec<f64> = html
        .split("data-value=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse().unwrap())
        .collect();
    assert!(released.len() >= 6, "{} numbers", released.len());

    // Every number the commissioner path gives for the report's queries.
    let mut answers: Vec<f64> = Vec::new();
    let mut change_sums: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut warned: Vec<String> = Vec::new();
    for (part, sql) in riskstrat::report::commissioners::QUERIES {
        let o = riskstrat()
            .args(["query", "--format", "json", "--cell-key"])
            .arg(&key)
            .args(["--requester", "commissioner.1", "--audit"])
            .arg(run.parent().unwrap().join("query-audit.jsonl"))
            .arg("--run")
            .arg(run)
            .arg(sql)
            .output()
            .unwrap();
        if !o.status.success() {
            continue;
        }
        let rows: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
        for row in rows {
            if *part == "services" {
                let flags = ["low_match_rate", "imbalance", "pre_trend", "imprecise"];
                let on: Vec<&str> = flags
                    .into_iter()
                    .filter(|w| row[format!("warning_{w}")].as_f64() == Some(1.0))
                    .collect();
                if !on.is_empty() {
                    warned.push(
                        format!(
                            "<tr><td>{}</td><td>{}</td>",
                            row["service_code"].as_str().unwrap(),
                            row["outcome"].as_str().unwrap()
                        ) + "|"
                            + &on.join(","),
                    );
                }
            }
            if *part == "changes" {
                let key = (
                    row["cohort"].as_str().unwrap().to_string(),
                    row["change"].as_str().unwrap().to_string(),
                );
                *change_sums.entry(key).or_default() += row["people"].as_f64().unwrap();
            }
            for v in row.as_object().unwrap().values() {
                if let Some(x) = v.as_f64() {
                    answers.push(x);
                }
            }
        }
    }
    // Regression: the report read a `warnings` column the view does not have, so a
    // service with a low match rate showed no warning.
    assert!(!warned.is_empty(), "the demo has a service with a warning");
    for w in &warned {
        let (start, flags) = w.split_once('|').unwrap();
        let row = html
            .split(start)
            .nth(1)
            .unwrap()
            .split("</tr>")
            .next()
            .unwrap();
        assert!(
            row.ends_with(&format!("<td>{flags}</td>")),
            "{start}: {row}"
        );
        // Each flag raised is explained in words under the table.
        let legend = html.split("<ul id=\"service-warnings\">").nth(1).unwrap();
        let legend = legend.split("</ul>").next().unwrap();
        for f in flags.split(',') {
            assert!(
                legend.contains(&format!("<li><b>{f}</b>: ")),
                "{f}: {legend}"
            );
        }
    }
    let manifest = json(&run.join("manifest.json"));
    for v in &released {
        assert!(!(1.0..=7.0).contains(v), "a count of {v}");
        assert_eq!(v % 5.0, 0.0, "{v} is not rounded");
        assert!(
            answers.contains(v),
            "{v} was not released by the commissioner path"
        );
    }
    // Entrants and leavers by cohort: sums of the released cells of cohort_changes.
    let sums: Vec<(String, String, f64)> = html
        .split("class=\"released-sum\" ")
        .skip(1)
        .map(|s| {
            let attr = |n: &str| {
                s.split(&format!("{n}=\""))
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            };
            (
                attr("data-cohort"),
                attr("data-change"),
                attr("data-sum").parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(sums.len(), change_sums.len());
    for (cohort, change, n) in sums {
        assert_eq!(
            change_sums[&(cohort.clone(), change.clone())],
            n,
            "{cohort} {change}"
        );
        assert_eq!(n % 5.0, 0.0);
    }
    for exact in [manifest["population"].as_f64().unwrap()]
        .into_iter()
        .chain(
            manifest["tiers"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(Value::as_f64),
        )
        .filter(|x| x % 5.0 != 0.0)
    {
        assert!(
            !released.contains(&exact),
            "the exact count {exact} is in the report"
        );
        assert!(
            !html.contains(&format!(">{exact}<")),
            "the exact count {exact} is shown"
        );
    }
    assert!(!html.contains("<script"));
    assert!(
        !html.contains("AUC"),
        "model figures do not go through disclosure control"
    );
}

/// `report` names what is wrong with its arguments.
#[test]
fn report_refuses_what_it_cannot_use() {
    let run = demo_run();
    let o = riskstrat()
        .arg("report")
        .arg(scratch("report-not-a-run"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a complete run folder"),
        "{}",
        stderr(&o)
    );
    let o = riskstrat()
        .arg("report")
        .arg(run)
        .args(["--for", "commissioners"])
        .args(["--requester", "commissioner.1", "--audit", "unused.jsonl"])
        .env_remove("RISKSTRAT_CELL_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--cell-key"), "{}", stderr(&o));
    // Not without saying who asks, and where that is audited.
    let o = riskstrat()
        .arg("report")
        .arg(run)
        .args(["--for", "commissioners", "--cell-key"])
        .arg(cell_key().0)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--requester"), "{}", stderr(&o));
    // No audit record, no report: an audit log that cannot be written to (a folder).
    let out = scratch("report-unaudited").join("c.html");
    let o = riskstrat()
        .arg("report")
        .arg(run)
        .args(["--for", "commissioners", "--cell-key"])
        .arg(cell_key().0)
        .args(["--requester", "commissioner.1", "--audit"])
        .arg(out.parent().unwrap())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("could not be audited"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

//! `report.html`: the manifest for people. Counts only, never identifiers.

use super::manifest::Manifest;

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `services`: the service evaluation's section (HTML), empty without one.
pub fn render(m: &Manifest, services: &str) -> String {
    let mut rows = String::new();
    for (table, r) in &m.rows {
        let reasons: Vec<String> = r
            .quarantined_by_reason
            .iter()
            .map(|(k, v)| format!("{} {v}", esc(k)))
            .collect();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            esc(table),
            r.read,
            r.excluded_optout,
            r.valid,
            r.quarantined,
            reasons.join(", ")
        ));
    }
    let mut cohorts = String::new();
    for (name, n) in &m.cohorts {
        let pct = if m.population > 0 {
            100.0 * *n as f64 / m.population as f64
        } else {
            0.0
        };
        cohorts.push_str(&format!(
            "<tr><td>{}</td><td>{n}</td><td>{pct:.2}%</td></tr>\n",
            esc(name)
        ));
    }
    let mut timings = String::new();
    for (stage, ms) in &m.timings_ms {
        timings.push_str(&format!(
            "<tr><td>{}</td><td>{:.2} s</td></tr>\n",
            esc(stage),
            *ms as f64 / 1000.0
        ));
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>riskstrat run {run}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style>
</head><body>
<h1>riskstrat: {job}</h1>
<p>Run <b>{run}</b>, as of <b>{as_of}</b>, finished {finished} (riskstrat {ver}, DataFusion {dfv}).</p>
<h2>Population</h2>
<p>{pop} people in the population at {as_of}. Opt-outs applied: {oo_p} patients and {oo_r} rows excluded before any processing.</p>
<h2>Cohorts</h2>
<table><tr><th>cohort</th><th>people</th><th>share of population</th></tr>
{cohorts}</table>
{model}<h2>Rows</h2>
<table><tr><th>table</th><th>read</th><th>excluded (opt-out)</th><th>valid</th><th>quarantined</th><th>reasons</th></tr>
{rows}</table>
{services}<h2>Timings</h2>
<table><tr><th>stage</th><th>time</th></tr>
{timings}</table>
</body></html>
"#,
        run = esc(&m.run_id),
        job = esc(&m.job),
        as_of = m.as_of,
        finished = esc(&m.finished_utc.to_rfc3339()),
        ver = esc(&m.riskstrat_version),
        dfv = esc(&m.datafusion_version),
        pop = m.population,
        oo_p = m.optouts.patients_excluded,
        oo_r = m.optouts.rows_excluded,
        model = model_section(m),
    )
}

/// A score-only run's temporal validation, and "refit" when its model has drifted.
fn model_section(m: &Manifest) -> String {
    let Some(t) = &m.temporal_validation else {
        return String::new();
    };
    let num =
        |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    let verdict = if t.refit {
        format!(
            "<p><b>Refit</b> the model: {}.</p>",
            esc(&t.refit_reasons.join("; "))
        )
    } else {
        "<p>No drift: calibration slope within 0.8-1.2 and AUC within 0.03 of the fitted model's.</p>".to_string()
    };
    format!(
        "<h2>Model</h2>\n<p>Scored with a saved model. Temporal validation on the newest complete outcome year: AUC {} (fitted model {}), calibration slope {}, intercept {}.</p>\n{verdict}\n",
        num(t.auc, 3),
        num(t.fitted_auc, 3),
        num(t.calibration_slope, 2),
        num(t.calibration_intercept, 2),
    )
}

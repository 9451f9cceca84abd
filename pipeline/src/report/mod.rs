//! `report.html`: the run report a governing body, an IG lead and a care team lead
//! read. Self-contained (inline SVG and CSS, no script, nothing fetched), written with
//! every run and by `riskstrat report RUN_DIR`. Built only from the run folder (its
//! manifest, `metrics.json`, `model.json`, the service evaluation's tables) and the
//! job's earlier manifests, so a report can be rebuilt from any run.
//!
//! `commissioners.rs` builds the version for commissioners from what disclosure control
//! releases, and nothing else; `svg.rs` draws the charts; `sections.rs` and `model.rs`
//! write the sections.

pub mod commissioners;
mod model;
mod sections;
pub mod svg;

use crate::error::Result;
use crate::history::HistoryRow;
use crate::outputs::manifest::Manifest;
use crate::outputs::report::esc;
use crate::outputs::run_store::RunHandle;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use serde_json::Value;
use std::collections::BTreeMap;

/// Everything a report is made from.
pub struct Inputs {
    pub manifest: Manifest,
    pub metrics: Value,
    pub model: Value,
    /// `service_outcomes.parquet` and `service_balance.parquet`, row by row.
    pub services: Vec<Row>,
    pub balance: Vec<Row>,
    /// The job's runs up to this one, oldest first.
    pub history: Vec<HistoryRow>,
}

/// A table row by column name, values as text (None for null).
pub type Row = BTreeMap<String, Option<String>>;

pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let mut row = Row::new();
            for (k, f) in b.schema().fields().iter().enumerate() {
                let c = b.column(k);
                let v = if c.is_null(i) {
                    None
                } else {
                    Some(array_value_to_string(c, i)?)
                };
                row.insert(f.name().clone(), v);
            }
            out.push(row);
        }
    }
    Ok(out)
}

/// A row's number (None when absent, null or not a number).
pub fn num(row: &Row, column: &str) -> Option<f64> {
    row.get(column)?.as_deref()?.parse().ok()
}

pub fn text<'a>(row: &'a Row, column: &str) -> &'a str {
    row.get(column).and_then(|v| v.as_deref()).unwrap_or("")
}

/// What a run folder holds for its report. `history` is the job's runs (this one
/// included or not: it is added when missing).
pub async fn gather(
    run: &RunHandle,
    manifest: Manifest,
    history: Vec<HistoryRow>,
) -> Result<Inputs> {
    let json = |bytes: Result<Vec<u8>>| -> Value {
        bytes
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let metrics = json(run.read("metrics.json").await);
    let model = json(run.read("model.json").await);
    let ctx = crate::session::new_context(&crate::session::SessionOptions::default())?;
    let table = async |file: &str| -> Result<Vec<Row>> {
        if !run.exists(file).await {
            return Ok(Vec::new());
        }
        let batches = run.read_parquet(&ctx, file).await?.collect().await?;
        rows(&batches)
    };
    let services = table("service_outcomes.parquet").await?;
    let balance = table("service_balance.parquet").await?;
    let mut history: Vec<HistoryRow> = history
        .into_iter()
        // Complete runs only: a failed tick has no figures to draw.
        .filter(|h| h.run_id.is_some() && h.as_of <= manifest.as_of)
        .collect();
    if !history
        .iter()
        .any(|h| h.run_id.as_deref() == Some(manifest.run_id.as_str()))
    {
        history.push(crate::history::row_of(&manifest));
    }
    Ok(Inputs {
        manifest,
        metrics,
        model,
        services,
        balance,
        history,
    })
}

/// The analyst's report: every section.
pub fn analyst(inputs: &Inputs) -> String {
    let m = &inputs.manifest;
    let body = [
        sections::summary(inputs),
        model::render(inputs),
        sections::tiers(inputs),
        sections::services(inputs),
        sections::quality(inputs),
        sections::history(inputs),
        sections::facts_and_tripod(inputs),
        sections::timings(m),
    ]
    .concat();
    page(
        &format!("riskstrat run {}", m.run_id),
        &format!(
            "<h1>riskstrat: {}</h1>\n<p>Run <b>{}</b>, as of <b>{}</b>, finished {} (riskstrat {}, DataFusion {}). For the analyst, the IG lead and the care team leads: it holds no person's data, but counts are exact; give commissioners the report made with <code>--for commissioners</code>.</p>\n",
            esc(&m.job),
            esc(&m.run_id),
            m.as_of,
            esc(&m.finished_utc.to_rfc3339()),
            esc(&m.riskstrat_version),
            esc(&m.datafusion_version)
        ),
        &body,
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:64em;color:#222;line-height:1.4}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}\
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}\
section{border-top:2px solid #0072B2;margin-top:2em}figure.chart{margin:1em 0}figcaption{font-size:.9em}\
.key{margin-left:1em;white-space:nowrap}.swatch{display:inline-block;width:1.5em;margin-right:.3em;vertical-align:middle}\
.facts{border:2px solid #222;padding:.5em 1em;max-width:40em}.flag{color:#D55E00;font-weight:bold}\
.note{color:#555;font-size:.9em}";

/// A whole page around `body`.
pub fn page(title: &str, header: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{STYLE}</style>\n</head><body>\n{header}{body}</body></html>\n",
        esc(title)
    )
}

/// A section with an id (for links and screenshots) and a heading.
pub fn section(id: &str, heading: &str, inner: &str) -> String {
    format!(
        "<section id=\"{id}\">\n<h2>{}</h2>\n{inner}</section>\n",
        esc(heading)
    )
}

/// A number for the page, `-` when missing.
pub fn fmt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("-".to_string(), |v| format!("{v:.digits$}"))
}

//! `riskstrat history`: a job's runs, oldest first, from their manifests.

use crate::error::Result;
use crate::outputs::manifest::{ChangeCounts, Manifest};
use crate::outputs::run_store::RunStore;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How a run ended: complete runs are their run folders; failed and skipped ticks
/// are in the scheduler's record (`.schedule.jsonl`).
pub use crate::scheduler::AttemptStatus as RunStatus;

/// One run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    /// None for a tick that has no complete run.
    pub run_id: Option<String>,
    /// The scheduled tick, for runs made by `schedule` or `backfill`.
    pub tick: Option<String>,
    #[serde(with = "crate::outputs::manifest::iso_date")]
    pub as_of: NaiveDate,
    pub status: RunStatus,
    /// None for a tick that has no complete run.
    pub population: Option<u64>,
    pub cohorts: BTreeMap<String, u64>,
    pub validation_auc: Option<f64>,
    pub calibration_slope: Option<f64>,
    pub duration_s: f64,
    pub compared_with: Option<String>,
    pub changes: BTreeMap<String, ChangeCounts>,
    /// A score-only run's temporal validation of its saved model: AUC, calibration
    /// slope, and whether the drift rule says to refit.
    pub temporal_auc: Option<f64>,
    pub temporal_calibration_slope: Option<f64>,
    pub refit: bool,
}

/// The runs of `job` in `store`, oldest first: its complete runs, and the scheduled
/// ticks that failed every attempt or were skipped (from the scheduler's record in
/// the job's local `state` folder, when there is one), by when they started.
pub async fn history(store: &RunStore, job: &str, state: Option<&Path>) -> Result<Vec<HistoryRow>> {
    let mut rows: Vec<(DateTime<Utc>, HistoryRow)> = Vec::new();
    let mut ticks_done = std::collections::BTreeSet::new();
    for run in store.list(job).await? {
        let Some(m) = crate::outputs::run_store::readable_manifest(&run).await else {
            continue;
        };
        ticks_done.extend(m.tick.clone());
        rows.push((m.started_utc, row_of(&m)));
    }
    // A tick's last attempt, when no attempt made a complete run.
    let mut last: BTreeMap<String, crate::scheduler::Attempt> = BTreeMap::new();
    let attempts = match state {
        Some(dir) => crate::scheduler::attempts(dir)?,
        None => Vec::new(),
    };
    for a in attempts {
        if !ticks_done.contains(&a.tick)
            && matches!(a.status, RunStatus::Failed | RunStatus::Skipped)
        {
            last.insert(a.tick.clone(), a);
        }
    }
    for (_, a) in last {
        rows.push((
            a.started_utc,
            HistoryRow {
                run_id: None,
                tick: Some(a.tick),
                as_of: a.as_of,
                status: a.status,
                population: None,
                cohorts: BTreeMap::new(),
                validation_auc: None,
                calibration_slope: None,
                duration_s: (a.finished_utc - a.started_utc).num_milliseconds() as f64 / 1000.0,
                compared_with: None,
                changes: BTreeMap::new(),
                temporal_auc: None,
                temporal_calibration_slope: None,
                refit: false,
            },
        ));
    }
    rows.sort_by_key(|(t, _)| *t);
    Ok(rows.into_iter().map(|(_, r)| r).collect())
}

/// A complete run's row, from its manifest.
pub fn row_of(m: &Manifest) -> HistoryRow {
    let temporal = m.temporal_validation.as_ref();
    HistoryRow {
        run_id: Some(m.run_id.clone()),
        tick: m.tick.clone(),
        as_of: m.as_of,
        status: RunStatus::Complete,
        population: Some(m.population),
        cohorts: m.cohorts.clone(),
        validation_auc: m.validation_auc,
        calibration_slope: m.validation_calibration_slope,
        duration_s: (m.finished_utc - m.started_utc).num_milliseconds() as f64 / 1000.0,
        compared_with: m.compared_with.clone(),
        changes: m.changes.clone(),
        temporal_auc: temporal.and_then(|t| t.auc),
        temporal_calibration_slope: temporal.and_then(|t| t.calibration_slope),
        refit: temporal.is_some_and(|t| t.refit),
    }
}

/// The text table `riskstrat history` prints.
pub fn render(rows: &[HistoryRow]) -> String {
    use std::fmt::Write;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut s = String::from(
        "run_id\ttick\tas_of\tstatus\tpopulation\tcohorts\tvalidation_auc\tcalibration_slope\ttemporal_auc\ttemporal_slope\tmodel\tduration_s\tchanges\n",
    );
    for r in rows {
        let cohorts: Vec<String> = r.cohorts.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let changes: Vec<String> = r
            .changes
            .iter()
            .map(|(k, c)| format!("{k}: +{} -{} ={}", c.entered, c.left, c.stayed))
            .collect();
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}",
            r.run_id.as_deref().unwrap_or("-"),
            r.tick.as_deref().unwrap_or("-"),
            r.as_of,
            r.status.as_str(),
            r.population.map_or("-".to_string(), |p| p.to_string()),
            cohorts.join(" "),
            opt(r.validation_auc),
            opt(r.calibration_slope),
            opt(r.temporal_auc),
            opt(r.temporal_calibration_slope),
            if r.refit { "refit" } else { "-" },
            r.duration_s,
            if changes.is_empty() {
                "-".to_string()
            } else {
                changes.join(", ")
            }
        );
    }
    s
}

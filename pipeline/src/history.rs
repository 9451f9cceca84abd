//! `riskstrat history`: a job's runs, oldest first, from their manifests.

use crate::error::Result;
use crate::outputs::manifest::ChangeCounts;
use crate::outputs::run_store::RunStore;
use chrono::NaiveDate;
use serde::Serialize;
use std::collections::BTreeMap;

/// How a run ended. Only complete runs leave a run folder; the scheduler's record of
/// failed and skipped ticks is for the schedules that come later (issue 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Complete,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Complete => "complete",
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRow {
    pub run_id: String,
    #[serde(with = "crate::outputs::manifest::iso_date")]
    pub as_of: NaiveDate,
    pub status: RunStatus,
    pub population: u64,
    pub cohorts: BTreeMap<String, u64>,
    pub validation_auc: Option<f64>,
    pub calibration_slope: Option<f64>,
    pub duration_s: f64,
    pub compared_with: Option<String>,
    pub changes: BTreeMap<String, ChangeCounts>,
}

/// The complete runs of `job` in `store`, oldest first (by sequence number).
pub async fn history(store: &RunStore, job: &str) -> Result<Vec<HistoryRow>> {
    let mut rows = Vec::new();
    for run in store.list(job).await? {
        let m = run.manifest().await?;
        rows.push(HistoryRow {
            run_id: m.run_id,
            as_of: m.as_of,
            status: RunStatus::Complete,
            population: m.population,
            cohorts: m.cohorts,
            validation_auc: m.validation_auc,
            calibration_slope: m.validation_calibration_slope,
            duration_s: (m.finished_utc - m.started_utc).num_milliseconds() as f64 / 1000.0,
            compared_with: m.compared_with,
            changes: m.changes,
        });
    }
    Ok(rows)
}

/// The text table `riskstrat history` prints.
pub fn render(rows: &[HistoryRow]) -> String {
    use std::fmt::Write;
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut s = String::from(
        "run_id\tas_of\tstatus\tpopulation\tcohorts\tvalidation_auc\tcalibration_slope\tduration_s\tchanges\n",
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
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.1}\t{}",
            r.run_id,
            r.as_of,
            r.status.as_str(),
            r.population,
            cohorts.join(" "),
            opt(r.validation_auc),
            opt(r.calibration_slope),
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

//! `manifest.json`: what a run read, what it did with each row, and what it wrote.
//! It holds counts, never identifiers.

use crate::ingest::InputTable;
use crate::ingest::validate::TableCounts;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub riskstrat_version: String,
    pub datafusion_version: String,
    pub job: String,
    pub job_file: String,
    pub run_id: String,
    /// The run's number in its job's sequence: the newest run has the highest.
    /// Absent in runs written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub as_of: String,
    pub started_utc: String,
    pub finished_utc: String,
    pub inputs: Vec<InputSummary>,
    /// Per table: rows read, excluded for opt-outs, valid, quarantined by reason.
    pub rows: BTreeMap<String, RowCounts>,
    pub optouts: OptOutCounts,
    pub population: u64,
    pub features: Vec<String>,
    pub cohorts: BTreeMap<String, u64>,
    /// People per risk tier.
    pub tiers: BTreeMap<String, u64>,
    /// Care teams' feedback recorded up to A, by outcome (valid rows).
    pub feedback: BTreeMap<String, u64>,
    /// Per cohort: people left out because of recent declined / not appropriate feedback.
    pub feedback_excluded: BTreeMap<String, u64>,
    /// The model's AUC on the validation split (absent when scoring with a saved model).
    pub validation_auc: Option<f64>,
    pub outputs: Vec<String>,
    pub timings_ms: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputSummary {
    pub table: String,
    pub location: String,
    pub rows: u64,
    pub bytes: u64,
    pub files: Vec<FileSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSummary {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    pub modified: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RowCounts {
    pub read: u64,
    pub excluded_optout: u64,
    pub valid: u64,
    pub quarantined: u64,
    pub quarantined_by_reason: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OptOutCounts {
    /// Patients (rows of patients) excluded because they have an opt-out.
    pub patients_excluded: u64,
    /// Rows excluded across all person-level tables, patients included.
    pub rows_excluded: u64,
}

impl InputSummary {
    pub fn from_input(t: &InputTable) -> Self {
        Self {
            table: t.table.to_string(),
            location: t.location.clone(),
            rows: t.rows,
            bytes: t.files.iter().map(|f| f.bytes).sum(),
            files: t
                .files
                .iter()
                .map(|f| FileSummary {
                    path: f.path.clone(),
                    bytes: f.bytes,
                    rows: f.rows,
                    modified: f.modified.clone(),
                    fingerprint: f.fingerprint.clone(),
                })
                .collect(),
        }
    }
}

/// Row accounting for one table from what was read and what validation found.
pub fn row_counts(read: u64, c: &TableCounts) -> RowCounts {
    RowCounts {
        read,
        excluded_optout: read.saturating_sub(c.rows_after_optouts),
        valid: c.valid,
        quarantined: c.quarantined_total(),
        quarantined_by_reason: c.quarantined.clone(),
    }
}

/// Valid feedback rows recorded up to `as_of`, by outcome.
pub async fn feedback_outcomes(
    ctx: &datafusion::prelude::SessionContext,
    as_of: chrono::NaiveDate,
) -> crate::error::Result<BTreeMap<String, u64>> {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::prelude::{col, lit};
    let day = datafusion::scalar::ScalarValue::Date32(Some(crate::sql::date32(as_of)));
    let batches = ctx
        .table("feedback")
        .await?
        .filter(col("recorded_date").lt_eq(lit(day)))?
        .aggregate(
            vec![col("outcome")],
            vec![datafusion::functions_aggregate::count::count_all().alias("n")],
        )?
        .collect()
        .await?;
    let mut out = BTreeMap::new();
    for b in batches {
        let (Some(o), Some(n)) = (
            b.column(0).as_any().downcast_ref::<StringArray>(),
            b.column(1).as_any().downcast_ref::<Int64Array>(),
        ) else {
            continue;
        };
        for i in 0..b.num_rows() {
            out.insert(o.value(i).to_string(), n.value(i) as u64);
        }
    }
    Ok(out)
}

//! `manifest.json`: what a run read, what it did with each row, and what it wrote.
//! It holds counts, never identifiers.

use crate::ingest::InputTable;
use crate::ingest::validate::TableCounts;
use chrono::{DateTime, NaiveDate, Utc};
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
    /// The scheduled tick the run was for (`schedule`, `backfill`), its run key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<String>,
    /// The population date `A`, as `YYYY-MM-DD`.
    #[serde(with = "iso_date")]
    pub as_of: NaiveDate,
    /// When the run started and finished, as RFC 3339 (`to_rfc3339`).
    #[serde(with = "rfc3339")]
    pub started_utc: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub finished_utc: DateTime<Utc>,
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
    /// Its calibration slope there (absent when scoring with a saved model, and in
    /// runs written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_calibration_slope: Option<f64>,
    /// The run each cohort's changes (`changes_<cohort>.parquet`) were computed
    /// against: the job's previous complete run. Absent for a job's first run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    /// Per cohort compared: entered, left and stayed since `compared_with`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub changes: BTreeMap<String, ChangeCounts>,
    /// A score-only run's check of its saved model on the newest complete outcome
    /// year (the whole of it is `metrics.json`'s `temporal_validation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temporal_validation: Option<TemporalSummary>,
    pub outputs: Vec<String>,
    pub timings_ms: BTreeMap<String, u64>,
    /// The process's peak resident memory during each stage, in MiB (Linux; absent
    /// elsewhere and in manifests of older runs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peak_memory_mib: BTreeMap<String, u64>,
    /// Where the relational stages ran: "in-process", or the `df://` address of the
    /// Ballista scheduler of the job's `[cluster]` (absent in older runs' manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_on: Option<String>,
}

/// The figures of a temporal validation that history and the summary show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TemporalSummary {
    pub auc: Option<f64>,
    pub calibration_slope: Option<f64>,
    pub calibration_intercept: Option<f64>,
    pub fitted_auc: Option<f64>,
    pub refit: bool,
    pub refit_reasons: Vec<String>,
}

impl TemporalSummary {
    pub fn of(t: &crate::model::metrics::TemporalValidation) -> Self {
        let finite = |v: f64| Some(v).filter(|v| v.is_finite());
        let e = match &t.validation {
            crate::model::metrics::Validation::Evaluated(e) => Some(e),
            crate::model::metrics::Validation::Failed { .. } => None,
        };
        Self {
            auc: e.and_then(|e| finite(e.auc)),
            calibration_slope: e.and_then(|e| finite(e.calibration_slope)),
            calibration_intercept: e.and_then(|e| finite(e.calibration_intercept)),
            fitted_auc: t.fitted_auc,
            refit: t.refit,
            refit_reasons: t.refit_reasons.clone(),
        }
    }
}

/// One cohort's changes since the previous run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    pub entered: u64,
    pub left: u64,
    pub stayed: u64,
}

/// A date as `YYYY-MM-DD`, the text manifests have always held.
pub(crate) mod iso_date {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &NaiveDate, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&d.format("%Y-%m-%d"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveDate, D::Error> {
        let s = String::deserialize(d)?;
        NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(D::Error::custom)
    }
}

/// A time as RFC 3339 in UTC (`DateTime::to_rfc3339`), the text manifests have always
/// held; read back from any RFC 3339 offset.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(D::Error::custom)
    }
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
        .table(crate::ingest::contract::FEEDBACK.name)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest as runs wrote it when its dates were strings.
    fn old(started: &str) -> String {
        format!(
            r#"{{"riskstrat_version":"0.1.0","datafusion_version":"55.2.0","job":"j","job_file":"j.toml","run_id":"20260401T101112Z-1","as_of":"2026-04-01","started_utc":"{started}","finished_utc":"2026-04-01T10:12:00.500+00:00","inputs":[],"rows":{{}},"optouts":{{"patients_excluded":0,"rows_excluded":0}},"population":0,"features":[],"cohorts":{{}},"tiers":{{}},"feedback":{{}},"feedback_excluded":{{}},"validation_auc":null,"outputs":[],"timings_ms":{{}}}}"#
        )
    }

    #[test]
    fn dates_are_dates_written_as_the_text_manifests_always_held() {
        for started in [
            "2026-04-01T10:11:12+00:00",
            "2026-04-01T10:11:12.123+00:00",
            "2026-04-01T10:11:12.123456789+00:00",
        ] {
            let text = old(started);
            let m: Manifest = serde_json::from_str(&text).unwrap();
            assert_eq!(m.as_of, NaiveDate::from_ymd_opt(2026, 4, 1).unwrap());
            assert_eq!(m.started_utc.to_rfc3339(), started);
            assert!(m.started_utc < m.finished_utc);
            assert_eq!(serde_json::to_string(&m).unwrap(), text);
        }
        // As `run` makes them: the clock's time, written with `to_rfc3339`.
        let now = Utc::now();
        let mut m: Manifest = serde_json::from_str(&old("2026-04-01T10:11:12+00:00")).unwrap();
        m.started_utc = now;
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["started_utc"], now.to_rfc3339());
        assert_eq!(v["as_of"], "2026-04-01");
        let bad = old("2026-04-01").replace("\"as_of\":\"2026-04-01\"", "\"as_of\":\"01/04/2026\"");
        assert!(serde_json::from_str::<Manifest>(&bad).is_err());
    }
}

//! Does the service evaluation tell the truth? `synth` a population whose services
//! have known effects, `run` the default job on it, and compare each service's
//! difference in differences with `truth/service_effects.json`, over many seeds:
//! the mean error and its Monte Carlo standard error, and how often the 95% interval
//! covers the truth. `pipeline/examples/service_eval_check.rs` runs the full check
//! and prints the table the README quotes; `tests/service_evaluation.rs` a reduced one.

use crate::error::{Error, Result};
use crate::job::Job;
use crate::synth::{ServiceEffects, SynthOptions, TRUTH_FILE, generate};
use chrono::NaiveDate;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// One service and outcome of one seed.
#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    pub service: String,
    pub outcome: String,
    pub rate_ratio: f64,
    pub treated: i64,
    pub match_rate: f64,
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub truth: f64,
    /// The enrolled's rate without the service (the truth's untreated rate).
    pub baseline: f64,
    pub max_smd_after: f64,
    pub pre_trend: bool,
}

fn read(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::failed(format!("{}: {e}", path.display())).with_source(e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Synthesise `patients` people with `seed` into `dir`, run the job, and compare.
pub async fn run_seed(
    dir: &Path,
    patients: u64,
    seed: u64,
    as_of: NaiveDate,
    effects: &ServiceEffects,
    candidates: Option<usize>,
) -> Result<Vec<SeedResult>> {
    let opts = SynthOptions {
        patients,
        seed,
        as_of,
        out: dir.to_path_buf(),
        identifiable: false,
        service_effects: effects.clone(),
    };
    let summary = tokio::task::spawn_blocking(move || generate(&opts))
        .await
        .map_err(|e| Error::failed(e.to_string()).with_source(e))??;
    let truth: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(TRUTH_FILE))?)?;
    let mut job = Job::load(&summary.job_file, None)?;
    if let Some(c) = candidates {
        job.outcomes_candidates = c;
    }
    let run = crate::run::run(&job).await?;
    let mut out = Vec::new();
    for b in read(&run.dir.join("service_outcomes.parquet"))? {
        let s = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .expect("Utf8")
                .clone()
        };
        let f = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .expect("Float64")
                .clone()
        };
        let i = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .expect("Int64")
                .clone()
        };
        let (service, outcome) = (s("service_code"), s("outcome"));
        let (did, lo, hi) = (f("did"), f("did_ci_low"), f("did_ci_high"));
        let (rate, smd, pre) = (f("match_rate"), f("max_smd_after"), i("warning_pre_trend"));
        let treated = i("treated");
        for r in 0..b.num_rows() {
            let t = &truth["services"][service.value(r)];
            let o = &t[outcome.value(r)];
            let (Some(truth), Some(baseline)) =
                (o["effect"].as_f64(), o["untreated_rate"].as_f64())
            else {
                continue;
            };
            let value = |a: &Float64Array| if a.is_null(r) { f64::NAN } else { a.value(r) };
            out.push(SeedResult {
                seed,
                service: service.value(r).to_string(),
                outcome: outcome.value(r).to_string(),
                rate_ratio: t["rate_ratio"].as_f64().unwrap_or(f64::NAN),
                treated: treated.value(r),
                match_rate: value(&rate),
                estimate: value(&did),
                ci_low: value(&lo),
                ci_high: value(&hi),
                truth,
                baseline,
                max_smd_after: value(&smd),
                pre_trend: pre.value(r) == 1,
            });
        }
    }
    Ok(out)
}

/// One service and outcome over all seeds.
#[derive(Debug, Clone)]
pub struct Summary {
    pub service: String,
    pub outcome: String,
    pub rate_ratio: f64,
    pub runs: usize,
    pub mean_treated: f64,
    pub mean_match_rate: f64,
    pub mean_estimate: f64,
    pub mean_truth: f64,
    pub baseline: f64,
    pub mean_error: f64,
    /// Monte Carlo standard error of the mean error: sd(errors) / sqrt(runs).
    pub mc_se: f64,
    pub coverage: f64,
    pub worst_smd_after: f64,
    pub pre_trend_warnings: usize,
}

impl Summary {
    /// The criteria, each with whether it holds.
    pub fn criteria(&self) -> Vec<(String, bool)> {
        let b = self.baseline;
        vec![
            (
                format!("MC SE {:.1} < 5% of baseline ({:.1})", self.mc_se, 0.05 * b),
                self.mc_se < 0.05 * b,
            ),
            (
                format!(
                    "|mean error| {:.1} < 10% of baseline ({:.1})",
                    self.mean_error.abs(),
                    0.1 * b
                ),
                self.mean_error.abs() < 0.1 * b,
            ),
            (
                format!(
                    "|mean error| {:.1} within 2 MC SE ({:.1})",
                    self.mean_error.abs(),
                    2.0 * self.mc_se
                ),
                self.mean_error.abs() <= 2.0 * self.mc_se,
            ),
            (
                format!("coverage {:.0}% >= 85%", 100.0 * self.coverage),
                self.coverage >= 0.85,
            ),
            (
                format!("max SMD after matching {:.3} < 0.1", self.worst_smd_after),
                self.worst_smd_after < 0.1,
            ),
        ]
    }
}

pub fn summarise(results: &[SeedResult]) -> Vec<Summary> {
    let mut keys: Vec<(String, String)> = results
        .iter()
        .map(|r| (r.service.clone(), r.outcome.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(service, outcome)| {
            let rs: Vec<&SeedResult> = results
                .iter()
                .filter(|r| r.service == service && r.outcome == outcome && r.estimate.is_finite())
                .collect();
            let n = rs.len() as f64;
            let mean = |f: &dyn Fn(&SeedResult) -> f64| rs.iter().map(|r| f(r)).sum::<f64>() / n;
            let errors: Vec<f64> = rs.iter().map(|r| r.estimate - r.truth).collect();
            let mean_error = errors.iter().sum::<f64>() / n;
            let sd =
                (errors.iter().map(|e| (e - mean_error).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            Summary {
                rate_ratio: rs.first().map_or(f64::NAN, |r| r.rate_ratio),
                runs: rs.len(),
                mean_treated: mean(&|r| r.treated as f64),
                mean_match_rate: mean(&|r| r.match_rate),
                mean_estimate: mean(&|r| r.estimate),
                mean_truth: mean(&|r| r.truth),
                baseline: mean(&|r| r.baseline),
                mean_error,
                mc_se: sd / n.sqrt(),
                coverage: rs
                    .iter()
                    .filter(|r| r.ci_low <= r.truth && r.truth <= r.ci_high)
                    .count() as f64
                    / n,
                worst_smd_after: rs.iter().map(|r| r.max_smd_after).fold(0.0, f64::max),
                pre_trend_warnings: rs.iter().filter(|r| r.pre_trend).count(),
                service,
                outcome,
            }
        })
        .collect()
}

/// The table, as Markdown (rates per 1,000 person-years).
pub fn table(summaries: &[Summary]) -> String {
    let mut s = String::from(
        "| service | outcome | true rate ratio | runs | matched (mean) | match rate | baseline rate | mean estimate | mean truth | mean error | MC SE of mean error | 95% CI coverage | worst max SMD after | placebo warnings |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for x in summaries {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.3} | {:.1} | {:.1} | {:.1} | {:+.1} | {:.1} | {:.0}% | {:.3} | {} |\n",
            x.service,
            x.outcome,
            x.rate_ratio,
            x.runs,
            x.mean_treated,
            x.mean_match_rate,
            x.baseline,
            x.mean_estimate,
            x.mean_truth,
            x.mean_error,
            x.mc_se,
            100.0 * x.coverage,
            x.worst_smd_after,
            x.pre_trend_warnings,
        ));
    }
    s
}

//! `run`: one run of a job, as the list of its stages (`stages.rs`), each a function
//! from the run context (`context.rs`) to a typed output; the manifest is assembled from
//! those outputs. Everything is written into a staging folder that becomes the run
//! folder only when the whole run has succeeded, the manifest last.

pub mod context;
pub mod stages;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::ingest::{self, contract};
use crate::job::Job;
use crate::model::metrics::Metrics;
use crate::outputs::manifest::{InputSummary, Manifest, OptOutCounts, row_counts};
use context::RunContext;
use stages::{Changes, Cohorts, Features, Feedback, Loaded, Scored, Trained};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct RunOutcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub metrics: Metrics,
}

/// Run a job on the wall clock.
pub async fn run(job: &Job) -> Result<RunOutcome> {
    run_with(job, Clock::system()).await
}

/// Run a job with the times (run id, manifest) read from `clock`.
pub async fn run_with(job: &Job, clock: Clock) -> Result<RunOutcome> {
    match run_stages(job, clock).await {
        // A damaged data page surfaces in whichever stage reads it first: name the file.
        Err(e) => Err(over_memory_limit(
            job,
            ingest::name_damaged_input(&job.inputs, e).await,
        )),
        ok => ok,
    }
}

/// A run that ran out of `[resources] memory_limit` is a setting to change: exit 2,
/// naming it and what would fix it.
fn over_memory_limit(job: &Job, e: Error) -> Error {
    let (Some(limit), Some(source)) = (&job.resources.memory_limit, e.source.as_deref()) else {
        return e;
    };
    if !crate::error::is_memory_limit(source) {
        return e;
    }
    Error {
        kind: crate::error::ErrorKind::BadInput,
        message: format!(
            "{}\nthe run needs more memory than `[resources] memory_limit = \"{limit}\"` \
             allows: raise it, or lower `[resources] target_partitions` so that fewer \
             tasks hold memory at once",
            e.message
        ),
        source: e.source,
    }
}

async fn run_stages(job: &Job, clock: Clock) -> Result<RunOutcome> {
    let rc = RunContext::claim(job, clock).await?;
    // On a cluster, the tables the run wrote to scratch storage go, whatever happened.
    let result = stages_of(&rc, job).await;
    let cleaned = crate::session::cluster::clean(&rc.ctx).await;
    let manifest = result?;
    cleaned?;
    let dir = rc.into_folder()?.commit().await?;
    Ok(RunOutcome {
        dir,
        metrics: manifest.1,
        manifest: manifest.0,
    })
}

/// Every stage, the report and the manifest written into the staging folder.
async fn stages_of(rc: &RunContext<'_>, job: &Job) -> Result<(Manifest, Metrics)> {
    if let Some(e) = crate::faults::failure("run.start") {
        return Err(crate::error::Error::failed(e));
    }
    // The tee feeds a plan in this process; a cluster's plans read the valid rows.
    let checks = match job.cluster {
        None => stages::Checks::WithFeatures,
        Some(_) => stages::Checks::Now,
    };
    let mut loaded = stages::load(rc, checks).await?;
    let saved = stages::saved_model(rc)?;
    if saved.is_none() {
        stages::refuse_no_training_year(&loaded.inputs, job.as_of, &job.model.terms)?;
    }
    let features_at = stages::features(rc, &mut loaded, saved.as_ref().map(|(_, m)| m)).await;
    // A wholly quarantined table is the cause to name, before what it made fail.
    stages::refuse_wholly_quarantined(&loaded)?;
    let (features, at_t0) = features_at?;
    let trained = stages::model(rc, at_t0, saved).await?;
    let scored = stages::score(rc, &trained).await?;
    stages::service_evaluation(rc, &trained, &scored).await?;
    stages::model_files(rc, &trained)?;
    let feedback = stages::feedback(rc).await?;
    let cohorts = stages::cohorts(rc, &feedback).await?;
    let changes = stages::changes(rc).await?;
    let manifest = manifest(
        rc, &loaded, &features, &trained, &scored, &feedback, &cohorts, changes,
    );
    // An input rewritten while the run read it could mix old and new data.
    crate::faults::point("run.before_recheck");
    ingest::recheck::unchanged(&rc.ctx, &loaded.inputs).await?;
    rc.write("report.html", report_html(rc, &manifest).await?.as_bytes())?;
    // The manifest last: it marks the run complete.
    rc.write("manifest.json", &serde_json::to_vec_pretty(&manifest)?)?;
    Ok((manifest, trained.metrics))
}

/// The run's report, from the staging folder as it stands (everything but the report
/// and the manifest is written) and the job's earlier runs.
async fn report_html(rc: &RunContext<'_>, manifest: &Manifest) -> Result<String> {
    let staged = rc
        .path("report.html")
        .ok_or_else(|| crate::error::Error::failed("no run folder"))?;
    let folder = crate::outputs::run_store::RunHandle::local(staged.parent().unwrap_or(&staged));
    // History is for the reader; a job folder that cannot be listed leaves it out.
    let state = rc.job.output.state_dir(&rc.job.name);
    let history = match crate::outputs::run_store::RunStore::of(&rc.job.output, &rc.job.storage) {
        Ok(store) => crate::history::history(&store, &rc.job.name, Some(&state))
            .await
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    let inputs = crate::report::gather(&folder, manifest.clone(), history).await?;
    Ok(crate::report::analyst(&inputs))
}

/// The manifest, from the stages' outputs.
fn manifest(
    rc: &RunContext<'_>,
    loaded: &Loaded,
    features: &Features,
    trained: &Trained,
    scored: &Scored,
    feedback: &Feedback,
    cohorts: &Cohorts,
    changes: Changes,
) -> Manifest {
    let job = rc.job;
    let mut rows = BTreeMap::new();
    let mut optouts = OptOutCounts::default();
    for (table, c) in &loaded.counts {
        let read = loaded.inputs.get(table).map(|t| t.rows).unwrap_or(0);
        let r = row_counts(read, c);
        optouts.rows_excluded += r.excluded_optout;
        if table == contract::PATIENTS.name {
            optouts.patients_excluded = r.excluded_optout;
        }
        rows.insert(table.clone(), r);
    }
    // Written after the manifest is assembled, but part of the run.
    let mut outputs = rc.outputs();
    outputs.extend(["report.html".into(), "manifest.json".into()]);
    Manifest {
        riskstrat_version: env!("CARGO_PKG_VERSION").into(),
        datafusion_version: datafusion::DATAFUSION_VERSION.into(),
        job: job.name.clone(),
        job_file: job.source.display().to_string(),
        run_id: rc.run_id().map(ToString::to_string).unwrap_or_default(),
        seq: rc.run_id().map(|id| id.seq),
        tick: job.tick.clone(),
        as_of: job.as_of,
        started_utc: rc.started,
        finished_utc: rc.clock.now(),
        inputs: loaded
            .inputs
            .tables
            .iter()
            .map(InputSummary::from_input)
            .collect(),
        rows,
        optouts,
        population: features.population,
        features: features.names.clone(),
        cohorts: cohorts.sizes.clone(),
        tiers: scored.tier_sizes.clone(),
        feedback: feedback.outcomes.clone(),
        feedback_excluded: cohorts.feedback_excluded.clone(),
        validation_auc: trained.metrics.validation_auc(),
        validation_calibration_slope: trained
            .metrics
            .validation()
            .map(|e| e.calibration_slope)
            .filter(|s| s.is_finite()),
        compared_with: changes.compared_with,
        changes: changes.counts,
        temporal_validation: trained
            .metrics
            .temporal()
            .map(crate::outputs::manifest::TemporalSummary::of),
        outputs,
        timings_ms: rc.progress.timings_ms(),
        peak_memory_mib: rc.progress.peak_memory_mib(),
        ran_on: Some(
            crate::session::cluster::scheduler(&rc.ctx).unwrap_or_else(|| "in-process".to_string()),
        ),
    }
}

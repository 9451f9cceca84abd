//! One run of a job, stage by stage: ingest (opt-outs applied), validate, features,
//! cohorts, outputs. Everything is written into a staging folder that becomes the
//! run folder only when the whole run has succeeded.

use crate::bad_input;
use crate::error::Result;
use crate::ingest::{self, contract, tables, validate};
use crate::job::{CohortSpec, Job};
use crate::outputs::manifest::{InputSummary, Manifest, OptOutCounts, row_counts};
use crate::outputs::run_store::{RunStore, RunWriter};
use crate::outputs::{report, write_batch, write_parquet};
use crate::progress::Progress;
use crate::session::{SessionOptions, new_context};
use crate::sql::{Params, SqlSource};
use datafusion::common::JoinType;
use datafusion::prelude::{ParquetReadOptions, SessionContext, ident};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct RunOutcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub metrics: crate::model::metrics::Metrics,
}

/// Checked, opted-out, validated inputs in a session: shared by `run` and `validate`.
pub struct Loaded {
    pub ctx: SessionContext,
    pub inputs: ingest::Inputs,
    pub counts: BTreeMap<String, validate::TableCounts>,
}

/// Ingest and validate. With a run folder, quarantined rows are written into it in the
/// same pass that counts them.
pub async fn load(
    job: &Job,
    progress: &mut Progress,
    folder: Option<&RunWriter>,
) -> Result<Loaded> {
    let ctx = new_context(&SessionOptions::from_job(&job.resources)?)?;
    let sql = SqlSource {
        override_dir: job.sql_dir.clone(),
    };
    let params = Params {
        as_of: job.as_of,
        feedback_months: job.feedback_months,
    };
    let inputs = progress
        .stage(
            "ingest",
            ingest::register_inputs(&ctx, &job.inputs, job.allow_empty_optouts),
        )
        .await?;
    let counts = progress
        .stage("validate", async {
            let tables = validate::register_valid(&ctx, &sql, &params).await?;
            let mut counts = BTreeMap::new();
            for t in tables {
                let path = folder.map(|f| f.path(&format!("quarantine/{}.parquet", t.name)));
                counts.insert(
                    t.name.to_string(),
                    validate::check(&ctx, t.name, path.as_deref()).await?,
                );
            }
            Ok::<_, crate::error::Error>(counts)
        })
        .await?;
    Ok(Loaded {
        ctx,
        inputs,
        counts,
    })
}

pub async fn run(job: &Job) -> Result<RunOutcome> {
    match run_stages(job).await {
        // A damaged data page surfaces in whichever stage reads it first: name the file.
        Err(e) => Err(ingest::name_damaged_input(&job.inputs, e).await),
        ok => ok,
    }
}

async fn run_stages(job: &Job) -> Result<RunOutcome> {
    let started = crate::faults::now();
    let mut progress = Progress::new();
    let sql = SqlSource {
        override_dir: job.sql_dir.clone(),
    };
    let params = Params {
        as_of: job.as_of,
        feedback_months: job.feedback_months,
    };

    let folder = RunStore::local(&job.output)
        .create(&job.name, started)
        .await?;
    let Loaded {
        ctx,
        inputs,
        counts,
    } = load(job, &mut progress, Some(&folder)).await?;
    let mut outputs: Vec<String> = counts
        .iter()
        .filter(|(_, c)| c.quarantined_total() > 0)
        .map(|(t, _)| format!("quarantine/{t}.parquet"))
        .collect();

    let population = progress
        .stage("features", async {
            let df = crate::features::plan(&ctx, &sql, &params, &job.extra_features).await?;
            let n = write_parquet(df, &folder.path("features.parquet")).await?;
            Ok::<_, crate::error::Error>(n)
        })
        .await?;
    outputs.push("features.parquet".to_string());
    let features_path = folder.path("features.parquet");
    ctx.register_parquet(
        tables::FEATURES,
        features_path.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await?;
    let feature_names: Vec<String> = ctx
        .table(tables::FEATURES)
        .await?
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "pseudo_id")
        .collect();

    let (model, metrics) = progress
        .stage("model", async {
            match &job.model.load {
                Some(path) => {
                    let m = crate::model::load_model(path)?;
                    let note = crate::model::metrics::Metrics::score_only(path);
                    Ok::<_, crate::error::Error>((m, note))
                }
                None => {
                    let t =
                        crate::model::train(&ctx, &sql, job.as_of, &job.extra_features, &job.model)
                            .await?;
                    Ok((t.model, t.metrics))
                }
            }
        })
        .await?;
    let (tier_sizes, population_risk) = progress
        .stage("score", async {
            let (batch, sizes) =
                crate::model::score(ctx.table(tables::FEATURES).await?, &model, &job.model.tiers)
                    .await?;
            write_batch(&folder.path("scores.parquet"), &batch)?;
            let risk: Vec<f64> = batch
                .column_by_name("risk")
                .and_then(|c| {
                    c.as_any()
                        .downcast_ref::<datafusion::arrow::array::Float64Array>()
                })
                .map(|r| r.values().to_vec())
                .unwrap_or_default();
            ctx.register_batch(tables::SCORES, batch)?;
            Ok::<_, crate::error::Error>((sizes, risk))
        })
        .await?;
    let mut services_report = String::new();
    if job.evaluate_services && ctx.table_exist(contract::SERVICES.name)? {
        services_report = progress
            .stage("outcomes", async {
                let e = crate::outcomes::evaluate(
                    &ctx,
                    &sql,
                    &params,
                    &job.extra_features,
                    &model,
                    &population_risk,
                    job.outcomes_candidates,
                )
                .await?;
                write_batch(&folder.path("service_outcomes.parquet"), &e.outcomes)?;
                write_batch(&folder.path("service_balance.parquet"), &e.balance)?;
                write_batch(&folder.path("service_people.parquet"), &e.people)?;
                Ok::<_, crate::error::Error>(e.report)
            })
            .await?;
        outputs.push("service_outcomes.parquet".to_string());
        outputs.push("service_balance.parquet".to_string());
        outputs.push("service_people.parquet".to_string());
    }
    folder.write("model.json", &serde_json::to_vec_pretty(&model)?)?;
    folder.write("metrics.json", &metrics.to_json()?)?;
    outputs.extend([
        "scores.parquet".to_string(),
        "model.json".into(),
        "metrics.json".into(),
    ]);

    let mut cohorts = BTreeMap::new();
    let mut feedback_excluded = BTreeMap::new();
    if ctx.table_exist(contract::FEEDBACK.name)? {
        let df = crate::sql::query(&ctx, &sql.get("feedback_outcomes.sql")?, &params).await?;
        write_parquet(df, &folder.path("feedback_people.parquet")).await?;
        outputs.push("feedback_people.parquet".to_string());
    }
    let (exclusions, feedback) = if ctx.table_exist(contract::FEEDBACK.name)? {
        let ex = crate::sql::query(&ctx, &sql.get("feedback_exclusions.sql")?, &params)
            .await?
            .cache()
            .await?;
        (
            Some(ex),
            crate::outputs::manifest::feedback_outcomes(&ctx, job.as_of).await?,
        )
    } else {
        (None, BTreeMap::new())
    };
    progress
        .stage("cohorts", async {
            for spec in &job.cohorts {
                let text = match spec {
                    CohortSpec::Builtin(n) => sql.get(&format!("cohorts/{n}.sql"))?,
                    CohortSpec::File(p) => crate::sql::read_file(p)?,
                };
                let df = crate::sql::query(&ctx, &text, &params).await?;
                if !df.schema().has_column_with_unqualified_name("pseudo_id") {
                    return Err(bad_input!(
                        "{}: a cohort must return a pseudo_id column",
                        text.origin
                    ));
                }
                crate::sql::check_columns(
                    &df,
                    &text.origin,
                    &[("pseudo_id", crate::sql::Kind::Text)],
                )?;
                // Only people in the population at A can be in a cohort, whatever the SQL read.
                let members = ctx
                    .table(tables::FEATURES)
                    .await?
                    .select(vec![ident("pseudo_id").alias("__member")])?;
                let df = df.join(
                    members,
                    JoinType::LeftSemi,
                    &["pseudo_id"],
                    &["__member"],
                    None,
                )?;
                // Feedback: people a team marked declined or not appropriate lately are out.
                let df = match &exclusions {
                    Some(ex) => {
                        let ex = ex
                            .clone()
                            .select(vec![ident("pseudo_id").alias("__excluded")])?;
                        let hit = df.clone().join(
                            ex.clone(),
                            JoinType::LeftSemi,
                            &["pseudo_id"],
                            &["__excluded"],
                            None,
                        )?;
                        let n = hit
                            .count()
                            .await
                            .map_err(|e| crate::sql::run_time_error(&text.origin, e.into()))?;
                        feedback_excluded.insert(spec.name(), n as u64);
                        df.join(
                            ex,
                            JoinType::LeftAnti,
                            &["pseudo_id"],
                            &["__excluded"],
                            None,
                        )?
                    }
                    None => df,
                };
                let name = format!("cohort_{}.parquet", spec.name());
                let n = write_parquet(df, &folder.path(&name))
                    .await
                    .map_err(|e| crate::sql::run_time_error(&text.origin, e))?;
                cohorts.insert(spec.name(), n);
                outputs.push(name);
            }
            Ok::<_, crate::error::Error>(())
        })
        .await?;

    let mut rows = BTreeMap::new();
    let mut optouts = OptOutCounts::default();
    for (table, c) in &counts {
        let read = inputs.get(table).map(|t| t.rows).unwrap_or(0);
        let r = row_counts(read, c);
        optouts.rows_excluded += r.excluded_optout;
        if table == contract::PATIENTS.name {
            optouts.patients_excluded = r.excluded_optout;
        }
        rows.insert(table.clone(), r);
    }
    outputs.push("manifest.json".into());
    outputs.push("report.html".into());
    let manifest = Manifest {
        riskstrat_version: env!("CARGO_PKG_VERSION").into(),
        datafusion_version: datafusion::DATAFUSION_VERSION.into(),
        job: job.name.clone(),
        job_file: job.source.display().to_string(),
        run_id: folder.run_id().to_string(),
        seq: Some(folder.run_id().seq),
        as_of: job.as_of,
        started_utc: started,
        finished_utc: crate::faults::now(),
        inputs: inputs.tables.iter().map(InputSummary::from_input).collect(),
        rows,
        optouts,
        population,
        features: feature_names,
        cohorts,
        tiers: tier_sizes,
        feedback,
        feedback_excluded,
        validation_auc: metrics.validation_auc(),
        outputs,
        timings_ms: progress.timings_ms.clone(),
    };
    // An input rewritten while the run read it could mix old and new data.
    crate::faults::point("run.before_recheck");
    ingest::recheck::unchanged(&ctx, &inputs).await?;
    // The manifest last: it marks the run complete.
    folder.write(
        "report.html",
        report::render(&manifest, &services_report).as_bytes(),
    )?;
    folder.write("manifest.json", &serde_json::to_vec_pretty(&manifest)?)?;
    let dir = folder.commit().await?;
    Ok(RunOutcome {
        dir,
        manifest,
        metrics,
    })
}

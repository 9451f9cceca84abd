//! The stages of a run, each a function from the run context to a typed output. The
//! relational work is in the modules they call (`ingest`, `features`, `model`,
//! `outcomes`, the SQL in `sql/`); a stage decides what goes into the run folder.

use super::context::RunContext;
use crate::bad_input;
use crate::error::{Error, Result};
use crate::ingest::tee::Tee;
use crate::ingest::{self, contract, tables, validate};
use crate::job::CohortSpec;
use crate::model::ModelFile;
use crate::model::metrics::Metrics;
use crate::outputs::manifest::ChangeCounts;
use crate::outputs::run_store::RunStore;
use crate::outputs::{write_batch, write_parquet};
use crate::sql::{Kind, SqlText, check_columns};
use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{Date32Array, Float64Array, RecordBatch};
use datafusion::common::{JoinType, ScalarValue};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{DataFrame, ident, lit};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Checked, opted-out, validated inputs, registered in the context's session.
pub struct Loaded {
    pub inputs: ingest::Inputs,
    /// Each table's counts: complete after `validate`, or, for the tables it left to
    /// the features ([`Checks::WithFeatures`]), after `features`.
    pub counts: BTreeMap<String, validate::TableCounts>,
    tees: Vec<Tee>,
}

/// Where the event tables read by a tee (`validate::is_teed`: appointments and
/// prescriptions) are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// In the stage `validate`, like every other table (the `validate` command).
    Now,
    /// In the stage `features`, in the same pass that feeds them (`ingest::tee`).
    WithFeatures,
}

/// Ingest and validate. In a run, quarantined rows are written in the same pass that
/// counts them.
pub async fn load(rc: &RunContext<'_>, checks: Checks) -> Result<Loaded> {
    let job = rc.job;
    // Inputs in cloud stores are read through the store their URL names.
    ingest::stores::register(&rc.ctx, job.inputs.values(), &job.storage)?;
    let inputs = rc
        .progress
        .stage(
            "ingest",
            ingest::register_inputs(&rc.ctx, &job.inputs, job.allow_empty_optouts),
        )
        .await?;
    warn_of_uncovered_time(&inputs, job.as_of);
    let (counts, tees) = rc
        .progress
        .stage("validate", async {
            let tables = validate::register_valid(&rc.ctx, &rc.sql, &rc.params).await?;
            let mut counts = BTreeMap::new();
            let mut tees = Vec::new();
            for t in tables {
                if checks == Checks::WithFeatures && validate::is_teed(t) {
                    let rows = inputs.get(t.name).map(|i| i.rows).unwrap_or(0);
                    tees.push(Tee::install(&rc.ctx, t.name, rows).await?);
                    continue;
                }
                let path = quarantine(rc, t.name);
                let c = validate::check(&rc.ctx, t.name, path.as_deref()).await?;
                record_quarantine(rc, t.name, &c);
                counts.insert(t.name.to_string(), c);
            }
            Ok::<_, Error>((counts, tees))
        })
        .await?;
    Ok(Loaded {
        inputs,
        counts,
        tees,
    })
}

/// An event table that ends this many days or more before `A`, or starts as long
/// after the two years a run reads, misses months its features count.
const STALE_AFTER_DAYS: i64 = 62;

/// The required event tables, each with the first and last days of its events (a
/// service or feedback may end or start anywhere).
fn event_spans(inputs: &ingest::Inputs) -> impl Iterator<Item = (&str, NaiveDate, NaiveDate)> {
    inputs
        .tables
        .iter()
        .filter(|t| contract::table(t.table).is_some_and(|c| c.required))
        .filter_map(|t| t.event_span.map(|(first, last)| (t.table, first, last)))
}

/// The first day of the two years a run reads, `[A - 730, A)`: the training year
/// before `T0 = A - 365`, then the outcome's year, which is also the features' at `A`.
fn first_day_read(as_of: NaiveDate) -> NaiveDate {
    as_of - Days::new(730)
}

/// Say so when an event table does not cover the two years the run reads: ending
/// long before `A` (regression: a scheduled run in December on an extract ending in
/// March made a list from a third of the events, with no word), or starting long
/// after `A - 730` (regression: a backfill of months near the extract's start trained
/// on two months of events counted as a year, and the coefficients came out four
/// times too large, with no word).
fn warn_of_uncovered_time(inputs: &ingest::Inputs, as_of: NaiveDate) {
    let from = first_day_read(as_of);
    for (table, first, latest) in event_spans(inputs) {
        let days = (as_of - latest).num_days();
        if days >= STALE_AFTER_DAYS {
            tracing::warn!(
                "input {table}: its latest event is on {latest}, {days} days before this run's date {as_of}; if the extract was not refreshed, its features count months without events: refresh it, or run with --as-of an earlier date"
            );
        }
        let late = (first - from).num_days();
        if late >= STALE_AFTER_DAYS {
            tracing::warn!(
                "input {table}: its first event is on {first}, {late} days after {from}, where the two years this run reads begin; the model is trained on features at {} counted over part of a year, which inflates its coefficients: supply a longer extract, or run with --as-of {} or later",
                as_of - Days::new(365),
                first + Days::new(730)
            );
        }
    }
}

/// A model cannot be trained on features of a table with no event in its training
/// year `[A - 730, A - 365)`: refused, naming the table and the time it covers
/// (regression: the fit failed on a constant feature, advising to remove it from the
/// model). A table none of the model's `terms` counts events of may lack that year.
pub fn refuse_no_training_year(
    inputs: &ingest::Inputs,
    as_of: NaiveDate,
    terms: &[String],
) -> Result<()> {
    let (from, t0) = (first_day_read(as_of), as_of - Days::new(365));
    let trained_on = |table: &str| {
        crate::features::registry::FEATURES
            .iter()
            .any(|f| f.event_tables().contains(&table) && terms.iter().any(|t| t == f.name))
    };
    for (table, first, latest) in event_spans(inputs).filter(|(t, ..)| trained_on(t)) {
        let date = if first >= t0 {
            format!("{} or later", first + Days::new(730))
        } else if latest < from {
            format!("{} or earlier", latest + Days::new(1))
        } else {
            continue;
        };
        return Err(bad_input!(
            "input {table}: its events run from {first} to {latest}, none in the model's training year [{from}, {t0}) (the year before T0, a year before this run's date {as_of}); run with --as-of {date}, supply a longer extract, or score with a saved model ([model] load)"
        ));
    }
    Ok(())
}

/// Where a table's quarantined rows go, when the run writes files.
fn quarantine(rc: &RunContext<'_>, table: &str) -> Option<PathBuf> {
    rc.path(&quarantine_name(table))
}

fn quarantine_name(table: &str) -> String {
    format!("quarantine/{table}.parquet")
}

/// A quarantine file is part of the run only when it holds rows.
fn record_quarantine(rc: &RunContext<'_>, table: &str, counts: &validate::TableCounts) {
    if quarantine(rc, table).is_some() && counts.quarantined_total() > 0 {
        rc.record(&quarantine_name(table));
    }
}

/// A table whose every row broke a row rule is a broken extract, not data: refused
/// (exit 2), naming it and its commonest reason, before a model is fitted to nothing
/// (regression: upper-cased pseudo_ids emptied the appointments, and the run went on
/// or failed naming a model feature). The `validate` command still reports it. Only
/// the required tables: feedback about people who have all left the list is data.
pub fn refuse_wholly_quarantined(loaded: &Loaded) -> Result<()> {
    // Patients first: with none valid, every event row is of an unknown patient
    // (regression: the error named admissions, "unknown_pseudo_id").
    let mut tables: Vec<_> = loaded.counts.iter().collect();
    tables.sort_by_key(|(table, _)| table.as_str() != contract::PATIENTS.name);
    for (table, c) in tables {
        let required = contract::table(table).is_some_and(|t| t.required);
        if !required || c.valid > 0 || c.rows_after_optouts == 0 {
            continue;
        }
        let (reason, n) = c
            .quarantined
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or(("", 0), |(r, n)| (r.as_str(), *n));
        return Err(bad_input!(
            "input {table}: none of its {} rows is valid ({n} quarantined as {reason}); fix the extract (`riskstrat validate` lists every reason)",
            c.rows_after_optouts
        ));
    }
    Ok(())
}

/// Run `work` (the plans that read the event tables) while the tees left by `load`
/// validate those tables and feed it, then put the plain tables back; their counts go
/// into `loaded`. A failed validation is the error reported, before the work's.
async fn with_tees<T>(
    rc: &RunContext<'_>,
    loaded: &mut Loaded,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let tees = std::mem::take(&mut loaded.tees);
    let closers: Vec<_> = tees.iter().map(Tee::closer).collect();
    let work = async {
        let result = work.await;
        // Unblock any drain whose rows no plan took: every closer runs, even after
        // one fails, or a drain would wait for ever.
        let closed: Vec<Result<()>> = closers.into_iter().map(|c| c.close(&rc.ctx)).collect();
        closed.into_iter().collect::<Result<()>>()?;
        result
    };
    let drains = futures::future::join_all(tees.into_iter().map(|tee| async move {
        let table = tee.table();
        let path = quarantine(rc, table);
        (table, tee.drain(path.as_deref()).await)
    }));
    let (result, drained) = futures::join!(work, drains);
    for (table, counts) in drained {
        let counts = counts?;
        record_quarantine(rc, table, &counts);
        loaded.counts.insert(table.to_string(), counts);
    }
    result
}

/// The feature table at `A`, one row per person of the population.
pub struct Features {
    pub population: u64,
    pub names: Vec<String>,
}

/// A saved model the job scores with (`[model] load`), read before the features: its
/// terms are the columns the features stage keeps at `T0`.
pub fn saved_model(rc: &RunContext<'_>) -> Result<Option<(PathBuf, ModelFile)>> {
    rc.job
        .model
        .load
        .as_ref()
        .map(|path| crate::model::load_model(path).map(|m| (path.clone(), m)))
        .transpose()
}

/// `features.parquet` (at `A`, registered as `features` for the stages after) and the
/// model's columns at `T0` (everyone in the population then), from one plan over both
/// dates: each event table is read once for both (stage `features`).
pub async fn features(
    rc: &RunContext<'_>,
    loaded: &mut Loaded,
    saved: Option<&ModelFile>,
) -> Result<(Features, crate::model::Columns)> {
    let path = rc.file("features.parquet")?;
    let terms = match saved {
        Some(m) => &m.features,
        None => &rc.job.model.terms,
    };
    let (a, t0) = (rc.job.as_of, rc.job.as_of - Days::new(365));
    let (population, at_t0) = rc
        .progress
        .stage(
            "features",
            with_tees(rc, loaded, async {
                let df = crate::features::plan_at(
                    &rc.ctx,
                    &rc.sql,
                    &rc.params,
                    &[a, t0],
                    &rc.job.extra_features,
                )
                .await?;
                let mut columns = vec!["pseudo_id".to_string()];
                columns.extend(crate::features::non_key_columns(&df));
                let df = crate::model::with_t0_columns(&rc.ctx, &rc.sql, df, a, terms).await?;
                let mut at_t0 = crate::model::Columns::new(terms.len());
                let population =
                    split_dates(df, a, &columns, &path, |rows| at_t0.push(rows, terms)).await?;
                Ok::<_, Error>((population, at_t0))
            }),
        )
        .await?;
    crate::session::cluster::register_file(&rc.ctx, tables::FEATURES, &path).await?;
    let names = crate::features::non_key_columns(&rc.ctx.table(tables::FEATURES).await?);
    Ok((Features { population, names }, at_t0))
}

/// One pass over the features at both dates: the rows at `a` (their `columns`) to
/// Parquet at `path`, returning how many; the other rows' model columns (named
/// `__...`, `model::with_t0_columns`) to `others`, batch by batch.
async fn split_dates(
    df: DataFrame,
    a: NaiveDate,
    columns: &[String],
    path: &std::path::Path,
    mut others: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<u64> {
    use datafusion::arrow::compute::{filter_record_batch, kernels::cmp::eq, not};
    let at_a = Date32Array::new_scalar(crate::sql::date32(a));
    let written = |e: Error| e.context(format!("writing {}", path.display()));
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), task)?;
    let schema = stream.schema();
    let date = schema.index_of(crate::features::AS_OF)?;
    let feature_columns = columns
        .iter()
        .map(|c| schema.index_of(c))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let model_columns: Vec<usize> = (0..schema.fields().len())
        .filter(|&i| schema.field(i).name().starts_with("__"))
        .collect();
    let file = std::fs::File::create(path).map_err(|e| written(e.into()))?;
    let mut writer = ArrowWriter::try_new(file, Arc::new(schema.project(&feature_columns)?), None)
        .map_err(|e| written(e.into()))?;
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let is_a = eq(batch.column(date), &at_a)?;
        let rows = filter_record_batch(&batch.project(&feature_columns)?, &is_a)?;
        n += rows.num_rows() as u64;
        writer.write(&rows).map_err(|e| written(e.into()))?;
        others(&filter_record_batch(
            &batch.project(&model_columns)?,
            &not(&is_a)?,
        )?)?;
    }
    writer.close().map_err(|e| written(e.into()))?;
    crate::progress::log_plan_metrics("features at both dates", plan.as_ref());
    Ok(n)
}

/// The model the run scores with: trained at `T0` and evaluated, or loaded (score-only).
pub struct Trained {
    pub model: ModelFile,
    pub metrics: Metrics,
}

/// The fit at `T0` and its metrics, or a saved model's check for drift (stage `model`).
/// Takes the columns at `T0` and drops them when done: at 10 million people they are
/// over 1 GB, which the service evaluation after it needs.
pub async fn model(
    rc: &RunContext<'_>,
    at_t0: crate::model::Columns,
    saved: Option<(PathBuf, ModelFile)>,
) -> Result<Trained> {
    let job = rc.job;
    rc.progress
        .stage("model", async {
            let cols = &at_t0.in_pseudo_id_order();
            match saved {
                Some((path, model)) => {
                    let fitted_auc = crate::model::fitted_auc(&model, &path);
                    let temporal =
                        crate::model::temporal_validation(cols, job.as_of, &model, fitted_auc)?;
                    Ok(Trained {
                        model,
                        metrics: Metrics::score_only(&path, Some(temporal)),
                    })
                }
                None => {
                    let t = crate::model::train(cols, job.as_of, &job.model)?;
                    Ok(Trained {
                        model: t.model,
                        metrics: t.metrics,
                    })
                }
            }
        })
        .await
}

/// Everyone's risk, reasons and tier at `A`.
pub struct Scored {
    pub tier_sizes: BTreeMap<String, u64>,
    /// Every person's risk, the reference the service evaluation ranks against.
    pub risk: Vec<f64>,
}

/// `scores.parquet`, registered as `scores` for the cohorts.
pub async fn score(rc: &RunContext<'_>, trained: &Trained) -> Result<Scored> {
    let path = rc.file("scores.parquet")?;
    rc.progress
        .stage("score", async {
            let features = rc.ctx.table(tables::FEATURES).await?;
            let (batch, tier_sizes) =
                crate::model::score(features, &trained.model, &rc.job.model.tiers).await?;
            write_batch(&path, &batch)?;
            let risk = batch
                .column_by_name("risk")
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
                .map(|r| r.values().to_vec())
                .unwrap_or_default();
            crate::session::cluster::register_batch(&rc.ctx, tables::SCORES, batch).await?;
            Ok(Scored { tier_sizes, risk })
        })
        .await
}

/// The service evaluation's tables, when the job evaluates services and has a services
/// table.
pub async fn service_evaluation(
    rc: &RunContext<'_>,
    trained: &Trained,
    scored: &Scored,
) -> Result<()> {
    if !rc.job.evaluate_services || !rc.ctx.table_exist(contract::SERVICES.name)? {
        return Ok(());
    }
    rc.progress
        .stage("service_evaluation", async {
            let e = crate::service_evaluation::evaluate(
                &rc.ctx,
                &rc.sql,
                &rc.params,
                &rc.job.extra_features,
                &trained.model,
                &scored.risk,
                rc.job.outcomes_candidates,
            )
            .await?;
            write_batch(&rc.file("service_outcomes.parquet")?, &e.outcomes)?;
            write_batch(&rc.file("service_balance.parquet")?, &e.balance)?;
            write_batch(&rc.file("service_people.parquet")?, &e.people)?;
            Ok(())
        })
        .await
}

/// `model.json` and `metrics.json`.
pub fn model_files(rc: &RunContext<'_>, trained: &Trained) -> Result<()> {
    rc.write("model.json", &serde_json::to_vec_pretty(&trained.model)?)?;
    rc.write("metrics.json", &trained.metrics.to_json()?)
}

/// What care teams fed back, when the job has a feedback table.
#[derive(Default)]
pub struct Feedback {
    /// People a team marked declined or not appropriate lately: kept out of cohorts.
    pub exclusions: Option<DataFrame>,
    /// Feedback outcomes by kind, for the manifest.
    pub outcomes: BTreeMap<String, u64>,
}

/// What `feedback_outcomes.sql` returns: the commissioner view `feedback_outcomes`
/// counts these columns.
const FEEDBACK_PEOPLE: &[(&str, Kind)] = &[
    ("team", Kind::Text),
    ("outcome", Kind::Text),
    ("service_code", Kind::Text),
    ("pseudo_id", Kind::Text),
];

/// `feedback_people.parquet`, and who is kept out of cohorts.
pub async fn feedback(rc: &RunContext<'_>) -> Result<Feedback> {
    if !rc.ctx.table_exist(contract::FEEDBACK.name)? {
        return Ok(Feedback::default());
    }
    // Outcomes recorded after A count from the run at or after their day; said, so a
    // rerun at an earlier date is not taken to have honoured them (regression: two
    // people who had declined stayed on the list, with no word).
    let later = rc
        .ctx
        .table(contract::FEEDBACK.name)
        .await?
        .filter(
            ident("recorded_date").gt(lit(ScalarValue::Date32(Some(crate::sql::date32(
                rc.job.as_of,
            ))))),
        )?
        .count()
        .await?;
    if later > 0 {
        tracing::warn!(
            "{later} feedback outcomes are recorded after this run's date {}: they count from a run at or after their own date, not in this one",
            rc.job.as_of
        );
    }
    let text = rc.sql.get("feedback_outcomes.sql")?;
    let people = crate::sql::query(&rc.ctx, &text, &rc.params).await?;
    check_columns(&people, &text.origin, FEEDBACK_PEOPLE)?;
    write_parquet(people, &rc.file("feedback_people.parquet")?).await?;
    let text = rc.sql.get("feedback_exclusions.sql")?;
    let exclusions = crate::sql::query(&rc.ctx, &text, &rc.params).await?;
    check_columns(&exclusions, &text.origin, &[("pseudo_id", Kind::Text)])?;
    let exclusions =
        crate::session::cluster::cache(&rc.ctx, "feedback exclusions", exclusions).await?;
    Ok(Feedback {
        exclusions: Some(exclusions),
        outcomes: crate::outputs::manifest::feedback_outcomes(&rc.ctx, rc.job.as_of).await?,
    })
}

/// Each cohort's size, and how many feedback kept out of it.
#[derive(Default)]
pub struct Cohorts {
    pub sizes: BTreeMap<String, u64>,
    pub feedback_excluded: BTreeMap<String, u64>,
}

/// `cohort_<name>.parquet` for each of the job's cohorts.
pub async fn cohorts(rc: &RunContext<'_>, feedback: &Feedback) -> Result<Cohorts> {
    rc.progress
        .stage("cohorts", async {
            let mut out = Cohorts::default();
            for spec in &rc.job.cohorts {
                let text = match spec {
                    CohortSpec::Builtin(n) => rc.sql.get(&format!("cohorts/{n}.sql"))?,
                    CohortSpec::File(p) => crate::sql::read_file(p)?,
                };
                let (members, excluded) = cohort_members(rc, &text, feedback).await?;
                if let Some(n) = excluded {
                    out.feedback_excluded.insert(spec.name(), n);
                }
                let name = format!("cohort_{}.parquet", spec.name());
                let n = write_parquet(members, &rc.file(&name)?)
                    .await
                    .map_err(|e| crate::sql::run_time_error(&text.origin, e))?;
                out.sizes.insert(spec.name(), n);
            }
            Ok(out)
        })
        .await
}

/// Each cohort against the job's previous complete run (see [`crate::changes`]).
#[derive(Default)]
pub struct Changes {
    pub compared_with: Option<String>,
    pub counts: BTreeMap<String, ChangeCounts>,
}

pub async fn changes(rc: &RunContext<'_>) -> Result<Changes> {
    rc.progress
        .stage("changes", async {
            let store = RunStore::of(&rc.job.output, &rc.job.storage)?;
            let Some((previous, id)) = crate::changes::previous_run(
                &store,
                &rc.job.name,
                rc.job.as_of,
                rc.run_id().map(|r| r.seq),
            )
            .await?
            else {
                return Ok(Changes::default());
            };
            // Small files of this run's staging folder, which only this process sees.
            let ctx = crate::session::cluster::in_process(&rc.ctx).await?;
            if !crate::changes::register_previous(&ctx, &previous).await? {
                return Ok(Changes::default());
            }
            let mut out = Changes {
                compared_with: Some(id),
                counts: BTreeMap::new(),
            };
            for spec in &rc.job.cohorts {
                let name = spec.name();
                let current = rc
                    .path(&format!("cohort_{name}.parquet"))
                    .ok_or_else(|| Error::failed("internal: changes are computed only in a run"))?;
                let file = crate::changes::file_name(&name);
                let Some(path) = rc.path(&file) else { continue };
                let counts = crate::changes::compare(
                    &ctx, &rc.sql, &rc.params, &previous, &name, &current, &path,
                )
                .await?;
                if let Some(c) = counts {
                    rc.record(&file);
                    out.counts.insert(name, c);
                }
            }
            ctx.deregister_table(tables::PREVIOUS_SCORES)?;
            Ok(out)
        })
        .await
}

/// A cohort's SQL, checked, limited to the population at `A` and with the people
/// feedback keeps out removed (and how many that was, when there is feedback).
async fn cohort_members(
    rc: &RunContext<'_>,
    text: &SqlText,
    feedback: &Feedback,
) -> Result<(DataFrame, Option<u64>)> {
    let df = crate::sql::query(&rc.ctx, text, &rc.params).await?;
    if !df.schema().has_column_with_unqualified_name("pseudo_id") {
        return Err(bad_input!(
            "{}: a cohort must return a pseudo_id column",
            text.origin
        ));
    }
    check_columns(&df, &text.origin, &[("pseudo_id", Kind::Text)])?;
    // Only people in the population at A can be in a cohort, whatever the SQL read.
    let population = rc
        .ctx
        .table(tables::FEATURES)
        .await?
        .select(vec![ident("pseudo_id").alias("__member")])?;
    let df = df.join(
        population,
        JoinType::LeftSemi,
        &["pseudo_id"],
        &["__member"],
        None,
    )?;
    let Some(ex) = &feedback.exclusions else {
        return Ok((df, None));
    };
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
    let df = df.join(
        ex,
        JoinType::LeftAnti,
        &["pseudo_id"],
        &["__excluded"],
        None,
    )?;
    Ok((df, Some(n as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::displayable;

    /// Regression (issue 16): each of the three parts of the features plan that read the
    /// admissions (their features, the Charlson index, the outcome) validated them again,
    /// 23 s of the features stage at 10,000,000 people. They are now checked once and
    /// kept, as the patients are; the prescriptions are left to the features' tee.
    #[tokio::test]
    async fn admissions_are_checked_once_and_kept_and_prescriptions_are_teed() {
        let dir = std::env::temp_dir().join(format!("rs-kept-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = crate::synth::SynthOptions {
            patients: 400,
            seed: 7,
            as_of: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
            out: dir.clone(),
            identifiable: false,
            service_effects: Default::default(),
        };
        let summary = crate::synth::generate(&opts).unwrap();
        let job = crate::job::Job::load(&summary.job_file, None).unwrap();
        let rc = RunContext::checking(&job, crate::clock::Clock::system())
            .await
            .unwrap();
        let loaded = load(&rc, Checks::WithFeatures).await.unwrap();
        let ctx = &rc.ctx;
        let plan = |table: &'static str| async move {
            let df = ctx.table(table).await.unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            displayable(plan.as_ref()).indent(true).to_string()
        };
        let admissions = plan("admissions").await;
        assert!(!admissions.contains(".parquet"), "{admissions}");
        assert!(loaded.counts.contains_key("admissions"));
        // Counted in `validate`: every row after opt-outs, valid or quarantined.
        let counts = &loaded.counts["admissions"];
        let valid = ctx
            .table("admissions")
            .await
            .unwrap()
            .count()
            .await
            .unwrap();
        assert_eq!(counts.valid, valid as u64);
        assert!(valid > 100, "{valid}");
        assert_eq!(
            counts.rows_after_optouts,
            counts.valid + counts.quarantined_total()
        );
        // The prescriptions wait for the features: a tee, no counts yet.
        assert!(!loaded.counts.contains_key("prescriptions"));
        assert_eq!(loaded.tees.len(), 2);
        assert!(plan("prescriptions").await.contains("TeeExec"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

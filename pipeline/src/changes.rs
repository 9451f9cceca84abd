//! Entrants and leavers: each cohort of a run against the job's previous complete run
//! (`sql/changes.sql`, written as `changes_<cohort>.parquet`), and `riskstrat diff`
//! between any two runs of a job.

use crate::error::Result;
use crate::ingest::tables::{COHORT, PREVIOUS_COHORT, PREVIOUS_SCORES};
use crate::outputs::manifest::ChangeCounts;
use crate::outputs::run_store::{RunHandle, RunStore};
use crate::sql::{Kind, Params, SqlSource};
use chrono::NaiveDate;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::functions::expr_fn::coalesce;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// What happened to a person between two runs of a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Entered,
    Left,
    Stayed,
}

impl Change {
    pub const ALL: [Change; 3] = [Change::Entered, Change::Left, Change::Stayed];

    /// The value in a changes file's `change` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Entered => "entered",
            Change::Left => "left",
            Change::Stayed => "stayed",
        }
    }

    pub fn parse(s: &str) -> Option<Change> {
        Change::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The columns of a changes file, in order.
pub const COLUMNS: [(&str, Kind); 5] = [
    ("pseudo_id", Kind::Text),
    ("change", Kind::Text),
    ("previous_tier", Kind::Text),
    ("current_tier", Kind::Text),
    ("practice_code", Kind::Text),
];

pub fn file_name(cohort: &str) -> String {
    format!("changes_{cohort}.parquet")
}

/// The run a new run of `job` at `as_of` is compared with: of the job's complete
/// runs numbered before it, the one with the latest `as_of` not after it (the newest
/// of those on a tie).
/// A backfill of an earlier month is compared with the month before it, not with
/// this month's run.
pub async fn previous_run(
    store: &RunStore,
    job: &str,
    as_of: NaiveDate,
    own_seq: Option<u64>,
) -> Result<Option<(RunHandle, String)>> {
    let mut best: Option<(NaiveDate, RunHandle, String)> = None;
    // Oldest first: a later run with the same as_of replaces an earlier one.
    for run in store.list(job).await? {
        let Some(m) = crate::outputs::run_store::readable_manifest(&run).await else {
            continue;
        };
        // A run numbered after this one finished first (concurrent runs): it is not
        // this run's previous one (regression: run 1 was compared with run 4).
        if m.seq.zip(own_seq).is_some_and(|(seq, own)| seq >= own) {
            continue;
        }
        if m.as_of <= as_of && best.as_ref().is_none_or(|b| m.as_of >= b.0) {
            best = Some((m.as_of, run, m.run_id));
        }
    }
    Ok(best.map(|(_, run, id)| (run, id)))
}

/// Register the previous run's scores for [`compare`]. `false` when it has none.
pub async fn register_previous(ctx: &SessionContext, previous: &RunHandle) -> Result<bool> {
    if !previous.exists("scores.parquet").await {
        return Ok(false);
    }
    let _ = ctx.deregister_table(PREVIOUS_SCORES)?;
    previous
        .register(ctx, PREVIOUS_SCORES, "scores.parquet")
        .await?;
    Ok(true)
}

/// One cohort's changes: this run's cohort file `current` against the previous run's
/// file of the same cohort, written to `out`. `None` when the previous run did not
/// have this cohort. `ctx` holds this run's `scores` and `patients` and
/// [`register_previous`]'s table.
pub async fn compare(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    previous: &RunHandle,
    cohort: &str,
    current: &Path,
    out: &Path,
) -> Result<Option<ChangeCounts>> {
    let file = format!("cohort_{cohort}.parquet");
    if !previous.exists(&file).await {
        return Ok(None);
    }
    let cohorts = [
        (COHORT, current.to_string_lossy().into_owned()),
        (PREVIOUS_COHORT, previous.url(&file)),
    ];
    let (df, origin) = changes_frame(ctx, sql, params, previous, &cohorts).await?;
    crate::outputs::write_parquet(df, out)
        .await
        .map_err(|e| crate::sql::run_time_error(&origin, e))?;
    for (t, _) in &cohorts {
        ctx.deregister_table(*t)?;
    }
    let written = ctx
        .read_parquet(
            out.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
    Ok(Some(counts(written).await?))
}

/// `sql/changes.sql` over the two cohort files (each table name with its URL).
async fn changes_frame(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    previous: &RunHandle,
    cohorts: &[(&str, String)],
) -> Result<(DataFrame, String)> {
    previous.attach(ctx);
    for (t, url) in cohorts {
        let _ = ctx.deregister_table(*t)?;
        ctx.register_parquet(*t, url.as_str(), ParquetReadOptions::default())
            .await?;
    }
    crate::sql::planned(ctx, sql, params, "changes.sql", &COLUMNS).await
}

/// Entered, left and stayed in a changes table.
pub async fn counts(changes: DataFrame) -> Result<ChangeCounts> {
    let mut out = ChangeCounts::default();
    let batches = changes
        .aggregate(vec![col("change")], vec![count(lit(1)).alias("n")])?
        .collect()
        .await?;
    for b in batches {
        let change = text(b.column(0))?;
        let n = b.column(1).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let c = change.is_valid(r).then(|| change.value(r));
            add(&mut out, c.and_then(Change::parse), n.value(r) as u64)?;
        }
    }
    Ok(out)
}

/// One cohort's changes between two runs, as `riskstrat diff` prints them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CohortDiff {
    pub cohort: String,
    #[serde(flatten)]
    pub counts: ChangeCounts,
    /// People by previous and current tier ("none" where not scored), of everyone in
    /// the cohort in either run.
    pub transitions: Vec<Transition>,
    /// Per practice (the practice in the later run's data).
    pub by_practice: BTreeMap<String, ChangeCounts>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub people: u64,
}

/// Every cohort of `later` that `earlier` also has, compared. When `later` was
/// computed against `earlier` its changes files are read as they are; otherwise the
/// same SQL runs over the two folders, with the later run's population standing for
/// its patients (so only people the later run could use are counted).
pub async fn diff(earlier: &RunHandle, later: &RunHandle) -> Result<Vec<CohortDiff>> {
    let (a, b) = (earlier.manifest().await?, later.manifest().await?);
    if a.job != b.job {
        return Err(crate::bad_input!(
            "diff: {} is a run of job {} and {} of job {}; compare two runs of one job",
            earlier.location().display(),
            a.job,
            later.location().display(),
            b.job
        ));
    }
    let ctx = crate::session::new_context(&crate::session::SessionOptions::default())?;
    let sql = SqlSource { override_dir: None };
    let params = Params::at(b.as_of);
    let direct = b.compared_with.as_deref() == Some(a.run_id.as_str());
    if !direct {
        register_previous(&ctx, earlier).await?;
        later
            .register(&ctx, crate::ingest::tables::SCORES, "scores.parquet")
            .await?;
        let features = later.read_parquet(&ctx, "features.parquet").await?;
        ctx.register_table(
            crate::ingest::contract::PATIENTS.name,
            features
                .select(vec![col("pseudo_id"), col("practice_code")])?
                .into_view(),
        )?;
    }
    let mut out = Vec::new();
    for cohort in b.cohorts.keys() {
        let file = format!("cohort_{cohort}.parquet");
        if !a.cohorts.contains_key(cohort) || !earlier.exists(&file).await {
            continue;
        }
        let changes = if direct && later.exists(&file_name(cohort)).await {
            later.read_parquet(&ctx, &file_name(cohort)).await?
        } else {
            let cohorts = [
                (COHORT, later.url(&file)),
                (PREVIOUS_COHORT, earlier.url(&file)),
            ];
            changes_frame(&ctx, &sql, &params, earlier, &cohorts)
                .await?
                .0
        };
        out.push(summarise(cohort, changes).await?);
    }
    Ok(out)
}

async fn summarise(cohort: &str, changes: DataFrame) -> Result<CohortDiff> {
    let none = |c: &str| coalesce(vec![col(c), lit("none")]);
    let transitions = changes
        .clone()
        .aggregate(
            vec![
                none("previous_tier").alias("from"),
                none("current_tier").alias("to"),
            ],
            vec![count(lit(1)).alias("n")],
        )?
        .sort_by(vec![col("from"), col("to")])?
        .collect()
        .await?;
    let mut t = Vec::new();
    for b in &transitions {
        let (from, to) = (text(b.column(0))?, text(b.column(1))?);
        let n = b.column(2).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            t.push(Transition {
                from: from.value(r).to_string(),
                to: to.value(r).to_string(),
                people: n.value(r) as u64,
            });
        }
    }
    let mut by_practice: BTreeMap<String, ChangeCounts> = BTreeMap::new();
    let practices = changes
        .clone()
        .aggregate(
            vec![none("practice_code").alias("practice"), col("change")],
            vec![count(lit(1)).alias("n")],
        )?
        .collect()
        .await?;
    for b in &practices {
        let (practice, change) = (text(b.column(0))?, text(b.column(1))?);
        let n = b.column(2).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            let c = by_practice
                .entry(practice.value(r).to_string())
                .or_default();
            add(c, Change::parse(change.value(r)), n.value(r) as u64)?;
        }
    }
    Ok(CohortDiff {
        cohort: cohort.to_string(),
        counts: counts(changes).await?,
        transitions: t,
        by_practice,
    })
}

fn text(a: &ArrayRef) -> Result<StringArray> {
    let a = datafusion::arrow::compute::cast(a, &DataType::Utf8)?;
    Ok(a.as_string::<i32>().clone())
}

fn add(c: &mut ChangeCounts, change: Option<Change>, n: u64) -> Result<()> {
    match change {
        Some(Change::Entered) => c.entered += n,
        Some(Change::Left) => c.left += n,
        Some(Change::Stayed) => c.stayed += n,
        None => {
            return Err(crate::bad_input!(
                "changes.sql: a change must be entered, left or stayed"
            ));
        }
    }
    Ok(())
}

/// `riskstrat diff`'s text.
pub fn render(diffs: &[CohortDiff]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if diffs.is_empty() {
        s.push_str("no cohort is in both runs\n");
    }
    for d in diffs {
        let c = d.counts;
        let _ = writeln!(
            s,
            "{}: entered {}, left {}, stayed {}",
            d.cohort, c.entered, c.left, c.stayed
        );
        let _ = writeln!(s, "  tier transitions (previous -> current: people)");
        for t in &d.transitions {
            let _ = writeln!(s, "    {} -> {}: {}", t.from, t.to, t.people);
        }
        let _ = writeln!(s, "  by practice (entered / left / stayed)");
        for (p, c) in &d.by_practice {
            let _ = writeln!(s, "    {p}: {} / {} / {}", c.entered, c.left, c.stayed);
        }
    }
    s
}

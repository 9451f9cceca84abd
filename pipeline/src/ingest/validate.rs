//! Row validation. Each table's rules are a SQL file (`sql/validate/<table>.sql`) that
//! gives every row the first rule it breaks as `reason`, or NULL. Valid rows are
//! registered under the contract's table name; `check` counts and writes the rest.
//! Opt-outs were applied before this runs, so quarantine never holds opted-out rows.

use crate::error::Result;
use crate::ingest::contract::{ADMISSIONS, PATIENTS, PERSON, PERSON_TABLES, Table, is_event_table};
use crate::ingest::tables;
use crate::sql::{Kind, Params, SqlSource, check_columns};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::prelude::{DataFrame, SessionContext, col, ident};
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows of one table after opt-outs, split into valid and quarantined by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableCounts {
    pub rows_after_optouts: u64,
    pub valid: u64,
    pub quarantined: BTreeMap<String, u64>,
}

impl TableCounts {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// Register `<table>` (valid rows) and `checked_<table>` (all rows, with `reason`)
/// for every person table the job has.
pub async fn register_valid(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
) -> Result<Vec<&'static Table>> {
    let mut done = Vec::new();
    for table in PERSON_TABLES.iter() {
        if !ctx.table_exist(tables::input(table.name))? {
            continue;
        }
        let text = sql.get(&format!("validate/{}.sql", table.name))?;
        let checked = crate::sql::query(ctx, &text, params).await?;
        let mut want: Vec<(&str, Kind)> = table
            .columns
            .iter()
            .map(|c| (c.name, Kind::Contract(c.ty)))
            .collect();
        want.push(("reason", Kind::Text));
        let keyed = is_event_table(table);
        if keyed {
            want.push((PERSON, Kind::Integer));
        }
        check_columns(&checked, &text.origin, &want)?;
        let mut checked = checked;
        let patients = table.name == PATIENTS.name;
        if patients {
            // Small (one row per person) and read by every other rule, the quarantine
            // count and every stage: checked once and kept, with the person key
            // numbered here, once, so that it is the same in every plan. (Invalid rows
            // get a number too: a key is only ever joined on, never counted.)
            checked = crate::session::cluster::cache(
                ctx,
                "checked patients",
                checked.with_column(PERSON, row_number())?,
            )
            .await?;
        } else if is_kept(table) {
            let what = format!("checked {}", table.name);
            checked = crate::session::cluster::cache(ctx, &what, checked).await?;
        }
        let mut columns: Vec<_> = table.columns.iter().map(|c| ident(c.name)).collect();
        if keyed || patients {
            columns.push(ident(PERSON));
        }
        let valid = checked
            .clone()
            .filter(col("reason").is_null())?
            .select(columns)?;
        ctx.register_table(table.name, valid.into_view())?;
        ctx.register_table(tables::checked(table.name), checked.into_view())?;
        done.push(table);
    }
    Ok(done)
}

/// Whether `table`'s rows are checked once and kept (in memory; on a cluster, in its
/// scratch folder), so that every plan reads them without validating them again:
/// patients (one row per person, read by every other table's rules, the quarantine
/// count and every stage) and admissions (under one row per person, read by three
/// parts of the features plan, the admissions' features, the Charlson index and the
/// outcome, and by the service evaluation). Validated in each of those plans, the
/// admissions took 23 s of the features stage at 10,000,000 people (issue 16).
pub fn is_kept(table: &Table) -> bool {
    [PATIENTS.name, ADMISSIONS.name].contains(&table.name)
}

/// Whether `table` is validated in the features stage, by a [`crate::ingest::tee::Tee`]
/// that feeds its valid rows to the features plan as it goes: the event tables of tens
/// of rows per person, too large to keep.
pub fn is_teed(table: &Table) -> bool {
    is_event_table(table) && !is_kept(table)
}

/// One pass over a table: how many rows survived opt-outs, why any were quarantined,
/// and (given a path) the quarantined rows written as Parquet. DataFusion does the
/// checking; here each batch is only split by its `reason` column.
pub async fn check(
    ctx: &SessionContext,
    table: &str,
    quarantine: Option<&Path>,
) -> Result<TableCounts> {
    let df = ctx.table(tables::checked(table)).await?;
    if crate::session::cluster::scratch(ctx).is_some() {
        return check_on_cluster(df, table, quarantine).await;
    }
    let df = match quarantine {
        Some(_) => df,
        // Counting needs only the reasons: let DataFusion skip the other columns.
        None => df.select(vec![col("reason")])?,
    };
    split(df, table, quarantine, None).await
}

/// [`check`] on a cluster: only what the client needs comes back, each reason's count
/// (the executors count every row) and the quarantined rows, never the valid ones.
async fn check_on_cluster(
    df: DataFrame,
    table: &str,
    quarantine: Option<&Path>,
) -> Result<TableCounts> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::lit;
    // Any text type (register_valid checked it), counted as Utf8.
    let reason = datafusion::prelude::cast(col("reason"), DataType::Utf8).alias("reason");
    let counted = df
        .clone()
        .select(vec![reason])?
        .aggregate(vec![col("reason")], vec![count(lit(1)).alias("n")])?
        .collect()
        .await?;
    let mut counts = TableCounts::default();
    for b in &counted {
        let (reasons, n) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_primitive::<Int64Type>(),
        );
        for i in 0..b.num_rows() {
            let rows = n.value(i) as u64;
            counts.rows_after_optouts += rows;
            match reasons.is_null(i) {
                true => counts.valid += rows,
                false => {
                    *counts
                        .quarantined
                        .entry(reasons.value(i).to_string())
                        .or_default() += rows
                }
            }
        }
    }
    if quarantine.is_some() && counts.quarantined_total() > 0 {
        split(
            df.filter(col("reason").is_not_null())?,
            table,
            quarantine,
            None,
        )
        .await?;
    }
    Ok(counts)
}

/// [`check`] over `checked` (`checked_<table>` or some of its columns), also sending
/// the valid rows to `valid` when given (`tee::Tee::drain`).
pub(crate) async fn split(
    checked: DataFrame,
    table: &str,
    quarantine: Option<&Path>,
    mut valid: Option<&mut crate::ingest::tee::Feed>,
) -> Result<TableCounts> {
    let (plan, task) = collected_plan(checked).await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan.clone(), task)?;
    let mut counts = TableCounts::default();
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // Any text type (register_valid checked it), read as Utf8.
        let reasons = batch
            .column_by_name("reason")
            .map(|c| cast(c, &DataType::Utf8))
            .transpose()?;
        let not_text = || Error::failed(format!("validation of {table}: reason is not a string"));
        let reasons = reasons
            .as_ref()
            .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            .ok_or_else(not_text)?;
        counts.rows_after_optouts += batch.num_rows() as u64;
        counts.valid += reasons.null_count() as u64;
        if let Some(feed) = valid.as_deref_mut() {
            feed.send(&batch, &is_null(reasons)?).await?;
        }
        if reasons.null_count() == batch.num_rows() {
            continue;
        }
        let is_bad = is_not_null(reasons)?;
        let bad = filter_record_batch(&batch, &is_bad)?;
        // The run's person key means nothing outside it: quarantine keeps the input's columns.
        let bad = match bad.schema().index_of(PERSON) {
            Ok(i) => {
                let mut bad = bad;
                bad.remove_column(i);
                bad
            }
            Err(_) => bad,
        };
        let bad_reasons = filter(reasons, &is_bad)?;
        let bad_reasons = bad_reasons
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(not_text)?;
        for r in bad_reasons.iter().flatten() {
            *counts.quarantined.entry(r.to_string()).or_default() += 1;
        }
        if let Some(path) = quarantine {
            if writer.is_none() {
                writer = Some(ArrowWriter::try_new(
                    std::fs::File::create(path)?,
                    bad.schema(),
                    None,
                )?);
            }
            writer.as_mut().expect("just made").write(&bad)?;
        }
    }
    if let Some(w) = writer {
        w.close()?;
    }
    crate::progress::log_plan_metrics(&format!("validation of {table}"), plan.as_ref());
    Ok(counts)
}

/// `checked` planned with its joins' build sides collected once, up to
/// [`COLLECTED_BUILD_BYTES`], rather than hash-partitioned. The build side of an
/// event table's validation join is the valid patients (one row per person, about 40
/// bytes each): collected, every partition probes one table, and the events (tens of
/// rows per person) are not repartitioned by pseudo_id first, which copied every column
/// of every row. Only these plans are planned so: the feature plans' joins of
/// per-person aggregates stay partitioned, where memory matters more (issue 16).
async fn collected_plan(
    checked: DataFrame,
) -> Result<(
    std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    std::sync::Arc<datafusion::execution::TaskContext>,
)> {
    let (mut state, plan) = checked.into_parts();
    let optimizer = &mut state.config_mut().options_mut().optimizer;
    optimizer.hash_join_single_partition_threshold = COLLECTED_BUILD_BYTES;
    optimizer.hash_join_single_partition_threshold_rows = usize::MAX;
    Ok((state.create_physical_plan(&plan).await?, state.task_ctx()))
}

/// The largest build side [`collected_plan`] collects: the valid patients of
/// 10 million people take about 400 MB.
const COLLECTED_BUILD_BYTES: usize = 1 << 30;

use crate::error::Error;
use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, is_not_null, is_null};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use futures::StreamExt;
use std::path::Path;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use std::sync::Arc;

    /// `patients` (past the default limits of a collected build side: 200,000 rows)
    /// and `events` (three per patient, and 1,000 of unknown patients), two partitions.
    async fn session() -> SessionContext {
        let ctx = crate::session::new_context(&crate::session::SessionOptions {
            target_partitions: Some(2),
            ..Default::default()
        })
        .unwrap();
        let table = |ids: Vec<i64>, with_person: bool| {
            let pseudo: ArrayRef = Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("{i:032x}")),
            ));
            let mut columns = vec![("pseudo_id", pseudo)];
            if with_person {
                columns.push((
                    "person",
                    Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
                ));
            }
            let batch = RecordBatch::try_from_iter(columns).unwrap();
            let half = batch.num_rows() / 2;
            let parts = vec![
                vec![batch.slice(0, half)],
                vec![batch.slice(half, batch.num_rows() - half)],
            ];
            Arc::new(MemTable::try_new(batch.schema(), parts).unwrap())
        };
        ctx.register_table("patients", table((0..200_000).collect(), true))
            .unwrap();
        let events = (0..600_000).map(|i| i % 200_000).chain(300_000..301_000);
        ctx.register_table("events", table(events.collect(), false))
            .unwrap();
        ctx
    }

    const CHECKED: &str = "SELECT e.pseudo_id, p.person, \
        CASE WHEN p.person IS NULL THEN 'unknown_pseudo_id' END AS reason \
        FROM events e LEFT JOIN patients p ON e.pseudo_id = p.pseudo_id";

    /// Regression (issue 16): the validation join hash-partitioned every event row by its
    /// pseudo_id, copying all its columns, to probe the patients in two halves.
    #[tokio::test]
    async fn validation_probes_the_patients_collected_once_without_repartitioning_events() {
        let ctx = session().await;
        let checked = ctx.sql(CHECKED).await.unwrap();
        let default = checked.clone().create_physical_plan().await.unwrap();
        let default = displayable(default.as_ref()).indent(true).to_string();
        assert!(default.contains("mode=Partitioned"), "{default}");
        let (plan, _) = collected_plan(checked.clone()).await.unwrap();
        let plan = displayable(plan.as_ref()).indent(true).to_string();
        assert!(plan.contains("HashJoinExec: mode=CollectLeft"), "{plan}");
        assert!(!plan.contains("RepartitionExec"), "{plan}");
        // And the same answer: every row once, the unknown ones quarantined.
        let counts = split(checked, "events", None, None).await.unwrap();
        assert_eq!(counts.rows_after_optouts, 601_000);
        assert_eq!(counts.valid, 600_000);
        assert_eq!(counts.quarantined["unknown_pseudo_id"], 1_000);
    }
}

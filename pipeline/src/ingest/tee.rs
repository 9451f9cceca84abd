//! One pass over an event table for both its validation and the features (issue 16).
//!
//! Without this, each event table is read, opted-out and validated twice: once to count
//! and write its quarantine (`validate::check`), and again under the features, which
//! read the valid rows. A [`Tee`] replaces the table `<table>` (its valid rows) with a
//! source fed by the quarantine pass itself: [`Tee::drain`] runs `checked_<table>` once,
//! writes the invalid rows to quarantine and sends the valid ones, batch by batch,
//! through a bounded channel to whichever plan scans `<table>` first. Any later scan (a
//! plan that reads the table twice, a stage after the features) reads the valid rows as
//! before, so a query over `<table>` gives the same answer however it is written; only
//! the first one is spared the second pass.
//!
//! The drain and the plan must run at the same time (the channel holds a few batches):
//! `drain` and the plan are awaited together, and [`Tee::close`] drops a channel no
//! plan took, so that a drain never waits on a reader that will not come.

use crate::error::Result;
use crate::ingest::tables;
use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Statistics, internal_err};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::{DataFrame, Expr, SessionContext};
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};

type Batches = mpsc::Receiver<std::result::Result<RecordBatch, DataFusionError>>;
type Slot = Arc<Mutex<Option<Batches>>>;

/// Batches a drain may run ahead of the plan reading them.
const AHEAD: usize = 4;

/// An event table whose validation pass also feeds its first reader.
pub struct Tee {
    table: &'static str,
    checked: DataFrame,
    valid: Arc<dyn TableProvider>,
    feed: Feed,
    slot: Slot,
}

/// The sending end: the valid rows of each checked batch, as `<table>`'s schema.
pub struct Feed {
    schema: SchemaRef,
    /// Where the table's columns are in a checked batch, found at the first batch.
    columns: Option<Vec<usize>>,
    sender: Option<mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>>,
}

impl Feed {
    /// Send `batch`'s rows where `valid` is true, projected onto the table's columns.
    /// A reader that went away (a plan stopped early, or none took the rows) is not an
    /// error: the quarantine pass goes on without it.
    pub async fn send(
        &mut self,
        batch: &RecordBatch,
        valid: &datafusion::arrow::array::BooleanArray,
    ) -> Result<()> {
        let Some(sender) = self.sender.as_mut() else {
            return Ok(());
        };
        let columns = match &mut self.columns {
            Some(c) => c,
            None => self.columns.insert(
                self.schema
                    .fields()
                    .iter()
                    .map(|f| batch.schema().index_of(f.name()))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            ),
        };
        let rows =
            datafusion::arrow::compute::filter_record_batch(&batch.project(columns)?, valid)?;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let rows = RecordBatch::try_new(self.schema.clone(), rows.columns().to_vec())?;
        if sender.send(Ok(rows)).await.is_err() {
            self.sender = None;
        }
        Ok(())
    }
}

impl Tee {
    /// Put a tee in place of `<table>` (registered by `validate::register_valid`), with
    /// `rows` (the input's row count) as the optimiser's estimate of its size.
    pub async fn install(ctx: &SessionContext, table: &'static str, rows: u64) -> Result<Tee> {
        let checked = ctx.table(tables::checked(table)).await?;
        let valid_df = ctx.table(table).await?;
        let schema: SchemaRef = Arc::new(valid_df.schema().as_arrow().clone());
        let valid = valid_df.into_view();
        let (sender, receiver) = mpsc::channel(AHEAD);
        let slot: Slot = Arc::new(Mutex::new(Some(receiver)));
        ctx.deregister_table(table)?;
        ctx.register_table(
            table,
            Arc::new(TeeTable {
                table,
                schema: schema.clone(),
                slot: slot.clone(),
                valid: valid.clone(),
                rows: rows as usize,
            }),
        )?;
        Ok(Tee {
            table,
            checked,
            valid,
            feed: Feed {
                schema,
                columns: None,
                sender: Some(sender),
            },
            slot,
        })
    }

    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The one pass: counts, quarantine (given a path) and the valid rows to the reader.
    pub async fn drain(
        mut self,
        quarantine: Option<&std::path::Path>,
    ) -> Result<crate::ingest::validate::TableCounts> {
        let result = crate::ingest::validate::split(
            self.checked,
            self.table,
            quarantine,
            Some(&mut self.feed),
        )
        .await;
        if result.is_err()
            && let Some(mut sender) = self.feed.sender.take()
        {
            // The reader must not take a cut-short table for the whole of it.
            let failed = format!("validation of {} failed", self.table);
            let _ = sender.send(Err(DataFusionError::Execution(failed))).await;
        }
        result
    }

    /// A handle that, once the plans that could read the tee are done, drops a channel
    /// none of them took, and puts the plain valid rows back under `<table>`.
    pub fn closer(&self) -> Closer {
        Closer {
            table: self.table,
            valid: self.valid.clone(),
            slot: self.slot.clone(),
        }
    }
}

/// See [`Tee::closer`].
pub struct Closer {
    table: &'static str,
    valid: Arc<dyn TableProvider>,
    slot: Slot,
}

impl Closer {
    pub fn close(self, ctx: &SessionContext) -> Result<()> {
        drop(self.slot.lock().map(|mut s| s.take()));
        ctx.deregister_table(self.table)?;
        ctx.register_table(self.table, self.valid)?;
        Ok(())
    }
}

/// `<table>` while a tee is in place: the first scan gets the drain's rows, any other
/// scan the valid rows computed again.
#[derive(Debug)]
struct TeeTable {
    table: &'static str,
    schema: SchemaRef,
    slot: Slot,
    valid: Arc<dyn TableProvider>,
    rows: usize,
}

#[async_trait]
impl TableProvider for TeeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let taken = self.slot.lock().ok().and_then(|mut s| s.take());
        match taken {
            Some(receiver) => {
                tracing::debug!("{}: read from its validation pass", self.table);
                Ok(Arc::new(TeeExec::new(
                    self.schema.clone(),
                    projection.cloned(),
                    receiver,
                    self.rows,
                    state.config().target_partitions(),
                )?))
            }
            None => {
                tracing::debug!("{}: validated again for another reader", self.table);
                let inner = planned_once(state)?;
                self.valid.scan(&inner, projection, filters, limit).await
            }
        }
    }
}

/// The session a second reader's valid rows are planned in. That plan is a subtree of
/// its reader's, which DataFusion optimises again as a whole: its joins must not carry
/// dynamic filters yet, or the outer `join_selection` that swaps a join's sides fails
/// ("Cannot swap HashJoinExec inputs after dynamic filters have been constructed"). The
/// outer optimisation adds them, once.
fn planned_once(state: &dyn Session) -> datafusion::error::Result<SessionState> {
    let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
        return internal_err!("a tee is read in a session that is not a SessionState");
    };
    let mut state = state.clone();
    state.config_mut().options_mut().set(
        "datafusion.optimizer.enable_dynamic_filter_pushdown",
        "false",
    )?;
    Ok(state)
}

/// The leaf that reads a drain's channel, as `partitions` partitions that share it:
/// whichever is polled takes the next batch, so the plan above works on the rows in
/// parallel without repartitioning them first (issue 16), and a plan that polls its
/// partitions one after another still reads them all, never waiting on a partition
/// that is not polled.
struct TeeExec {
    projection: Option<Vec<usize>>,
    receiver: Arc<tokio::sync::Mutex<Batches>>,
    rows: usize,
    properties: Arc<PlanProperties>,
}

impl TeeExec {
    fn new(
        schema: SchemaRef,
        projection: Option<Vec<usize>>,
        receiver: Batches,
        rows: usize,
        partitions: usize,
    ) -> datafusion::error::Result<Self> {
        let projected = match &projection {
            Some(p) => Arc::new(schema.project(p)?),
            None => schema,
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(projected),
            Partitioning::UnknownPartitioning(partitions.max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            projection,
            receiver: Arc::new(tokio::sync::Mutex::new(receiver)),
            rows,
            properties: Arc::new(properties),
        })
    }
}

impl std::fmt::Debug for TeeExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TeeExec")
    }
}

impl DisplayAs for TeeExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "TeeExec: rows of the validation pass")
    }
}

impl ExecutionPlan for TeeExec {
    fn name(&self) -> &str {
        "TeeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            internal_err!("TeeExec has no children")
        }
    }

    fn execute(
        &self,
        partition: usize,
        _: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        if partition >= self.properties.partitioning.partition_count() {
            return internal_err!("TeeExec: no partition {partition}");
        }
        let projection = self.projection.clone();
        let next = |receiver: Arc<tokio::sync::Mutex<Batches>>| async move {
            let batch = receiver.lock().await.next().await;
            batch.map(|b| (b, receiver))
        };
        let stream =
            futures::stream::unfold(self.receiver.clone(), next).map(
                move |batch| match &projection {
                    Some(p) => batch.and_then(|b| Ok(b.project(p)?)),
                    None => batch,
                },
            );
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream,
        )))
    }

    fn partition_statistics(&self, _: Option<usize>) -> datafusion::error::Result<Arc<Statistics>> {
        // Without a size the optimiser could build a join's hash table from this side.
        let mut stats = Statistics::new_unknown(&self.schema());
        stats.num_rows = Precision::Inexact(self.rows);
        Ok(Arc::new(stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray};
    use datafusion::datasource::MemTable;
    use std::time::Duration;

    /// `checked_t` (`checked`, over `raw`: `batches` batches of 100 rows, every tenth
    /// invalid) and `t` its valid rows, as `validate::register_valid` registers them.
    async fn session(batches: i64, checked: &str) -> SessionContext {
        let reason: ArrayRef = Arc::new(StringArray::from_iter(
            (0..100).map(|i| (i % 10 == 0).then_some("bad")),
        ));
        let ctx = SessionContext::new();
        let rows: Vec<RecordBatch> = (0..batches)
            .map(|b| {
                let v: ArrayRef =
                    Arc::new(Int64Array::from_iter_values((0..100).map(|i| b * 100 + i)));
                RecordBatch::try_from_iter([("v", v), ("reason", reason.clone())]).unwrap()
            })
            .collect();
        let table = MemTable::try_new(rows[0].schema(), vec![rows]).unwrap();
        ctx.register_table("raw", Arc::new(table)).unwrap();
        register_checked(&ctx, checked).await;
        ctx
    }

    /// `checked_t` as `checked` and `t` its valid rows, in place of any before.
    async fn register_checked(ctx: &SessionContext, checked: &str) {
        ctx.deregister_table("checked_t").unwrap();
        ctx.deregister_table("t").unwrap();
        let checked = ctx.sql(checked).await.unwrap();
        ctx.register_table("checked_t", checked.into_view())
            .unwrap();
        let valid = ctx
            .sql("SELECT v FROM checked_t WHERE reason IS NULL")
            .await
            .unwrap();
        ctx.register_table("t", valid.into_view()).unwrap();
    }

    const CHECKED: &str = "SELECT v, reason FROM raw";

    async fn sum(ctx: &SessionContext) -> Result<i64> {
        let batches = ctx
            .sql("SELECT sum(v) AS s FROM t")
            .await?
            .collect()
            .await?;
        let s = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        Ok(s.value(0))
    }

    const WAIT: Duration = Duration::from_secs(20);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_reader_gets_the_drained_rows_and_a_second_the_same_rows_again() {
        let ctx = session(50, CHECKED).await;
        let tee = Tee::install(&ctx, "t", 5000).await.unwrap();
        let closer = tee.closer();
        let readers = async {
            let first = sum(&ctx).await;
            let second = sum(&ctx).await;
            closer.close(&ctx).unwrap();
            (first, second)
        };
        let ((first, second), counts) =
            tokio::time::timeout(WAIT, async { futures::join!(readers, tee.drain(None)) })
                .await
                .expect("no deadlock");
        let all: i64 = (0..5000).sum();
        let bad: i64 = (0..5000).filter(|v| v % 10 == 0).sum();
        assert_eq!(first.unwrap(), all - bad);
        assert_eq!(second.unwrap(), all - bad);
        let counts = counts.unwrap();
        assert_eq!((counts.rows_after_optouts, counts.valid), (5000, 4500));
        assert_eq!(counts.quarantined.get("bad"), Some(&500));
        // After closing, the table is the plain valid rows again.
        assert_eq!(sum(&ctx).await.unwrap(), all - bad);
    }

    /// The tee's partitions share one channel: a consumer that reads them one after
    /// another (each to its end) gets every row once, and does not wait forever on a
    /// partition it has not started.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn partitions_read_one_after_another_get_every_row_once() {
        let ctx = session(200, CHECKED).await;
        let tee = Tee::install(&ctx, "t", 20_000).await.unwrap();
        let closer = tee.closer();
        let read = async {
            let plan = ctx.table("t").await?.create_physical_plan().await?;
            let n = plan.properties().partitioning.partition_count();
            let (mut sum, mut rows) = (0i64, 0usize);
            for p in 0..n {
                let mut stream = plan.execute(p, ctx.task_ctx())?;
                while let Some(batch) = stream.next().await {
                    let batch = batch?;
                    rows += batch.num_rows();
                    let v = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap();
                    sum += v.values().iter().sum::<i64>();
                }
            }
            closer.close(&ctx)?;
            Ok::<_, crate::error::Error>((n, rows, sum))
        };
        let (read, counts) =
            tokio::time::timeout(WAIT, async { futures::join!(read, tee.drain(None)) })
                .await
                .expect("no deadlock");
        let (n, rows, sum) = read.unwrap();
        assert_eq!(n, ctx.copied_config().target_partitions());
        let all: i64 = (0..20_000).sum();
        let bad: i64 = (0..20_000).filter(|v| v % 10 == 0).sum();
        assert_eq!((rows, sum), (18_000, all - bad));
        assert_eq!(counts.unwrap().valid, 18_000);
    }

    /// Regression: a run whose feature plan read admissions twice (two feature files)
    /// failed in `join_selection` ("Cannot swap HashJoinExec inputs after dynamic filters
    /// have been constructed") once the validation joins' sizes changed: the second
    /// reader's rows were planned, dynamic filters and all, then optimised again inside
    /// the reader's plan. Its plan must leave dynamic filters to that outer optimisation.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn second_reader_plan_leaves_dynamic_filters_to_its_reader() {
        use datafusion::common::tree_node::TreeNode;
        use datafusion::physical_plan::joins::HashJoinExec;
        // `raw`'s rows (the build side, kept) checked against `keys` (a Parquet file,
        // the probe side, into whose scan a join pushes its dynamic filter).
        let dir = std::env::temp_dir().join(format!("rs-tee-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = dir.join("keys.parquet");
        let k: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (0..50_000).filter(|v| v % 7 != 0),
        ));
        let batch = RecordBatch::try_from_iter([("k", k)]).unwrap();
        let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&keys).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let checked = "SELECT r.v, CASE WHEN k.k IS NULL THEN 'unknown' ELSE r.reason END AS reason \
                       FROM raw r LEFT JOIN keys k ON r.v = k.k";
        let ctx = session(10, CHECKED).await;
        ctx.register_parquet("keys", keys.to_str().unwrap(), Default::default())
            .await
            .unwrap();
        register_checked(&ctx, checked).await;

        let tee = Tee::install(&ctx, "t", 1000).await.unwrap();
        let closer = tee.closer();
        let t = ctx.table_provider("t").await.unwrap();
        let state = ctx.state();
        // The first scan takes the drain's rows; not run, it lets them go.
        drop(t.scan(&state, None, &[], None).await.unwrap());
        let second = t.scan(&state, None, &[], None).await.unwrap();
        let mut joins = 0;
        second
            .apply(|node| {
                if let Some(join) = node.downcast_ref::<HashJoinExec>() {
                    joins += 1;
                    // Its successor, `dynamic_expressions_produced`, is empty for a
                    // HashJoinExec in DataFusion 55.2 whatever it holds.
                    #[allow(deprecated)]
                    let filter = join.dynamic_filter_expr();
                    assert!(filter.is_none(), "a dynamic filter");
                }
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        assert_eq!(joins, 1);
        // The reader's own optimisation may swap the join and add the filter; both
        // readers see the same rows.
        let (read, drained) = tokio::time::timeout(WAIT, async {
            let read = async {
                let (a, b) = (sum(&ctx).await, sum(&ctx).await);
                closer.close(&ctx).unwrap();
                (a, b)
            };
            futures::join!(read, tee.drain(None))
        })
        .await
        .expect("no deadlock");
        let want: i64 = (0..1000).filter(|v| v % 10 != 0 && v % 7 != 0).sum();
        assert_eq!((read.0.unwrap(), read.1.unwrap()), (want, want));
        assert_eq!(drained.unwrap().quarantined.get("unknown"), Some(&143));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_drain_no_plan_reads_finishes_once_closed() {
        // Many more batches than the channel holds.
        let ctx = session(200, CHECKED).await;
        let tee = Tee::install(&ctx, "t", 20_000).await.unwrap();
        let closer = tee.closer();
        let work = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            closer.close(&ctx).unwrap();
        };
        let ((), counts) =
            tokio::time::timeout(WAIT, async { futures::join!(work, tee.drain(None)) })
                .await
                .expect("no deadlock");
        assert_eq!(counts.unwrap().valid, 18_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_validation_fails_its_reader_rather_than_cutting_the_table_short() {
        // The checking fails at run time from the sixth batch on, after sending rows.
        let failing = "SELECT v, CASE WHEN CAST(CASE WHEN v >= 500 THEN 'x' ELSE '1' END AS BIGINT) > 1 \
                       THEN 'never' ELSE reason END AS reason FROM raw";
        let ctx = session(10, failing).await;
        let tee = Tee::install(&ctx, "t", 1000).await.unwrap();
        let (read, drained) =
            tokio::time::timeout(WAIT, async { futures::join!(sum(&ctx), tee.drain(None)) })
                .await
                .expect("no deadlock");
        assert!(drained.is_err());
        let e = read.expect_err("the reader fails too").to_string();
        assert!(e.contains("validation of t failed"), "{e}");
    }
}

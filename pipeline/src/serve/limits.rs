//! What keeps one commissioner query from taking `serve` away from the others.
//!
//! - Each query runs on a thread of its own, with its own (current-thread) tokio
//!   runtime, away from the network runtime that answers gRPC and keeps the timers
//!   that end queries. The operating system shares the cores among these threads
//!   preemptively, so a query that computes for long between two awaits slows the
//!   others by its share of the cores only, and never holds a worker that other
//!   queries' tasks are queued behind, as it would in one shared tokio pool.
//! - At most `--max-concurrent-queries` run at once; a query waits at most
//!   `--queue-timeout` for a slot, then is refused as busy (RESOURCE_EXHAUSTED).
//! - `--query-timeout` counts from the slot. At the limit the network runtime answers
//!   the caller DEADLINE_EXCEEDED and cancels the query: its thread drops the query
//!   (its streams and every task it spawned) at its next await. The query keeps its
//!   slot until it has actually stopped, so work that stops late still counts
//!   against the cap. A caller that goes away cancels its query the same way.
//! - Memory: each query has its own DataFusion memory pool of `--query-memory`
//!   ([`QueryPool`]), no spilling, and its answer is reserved in the same pool, so
//!   operators and answer together stay under the limit. The pool remembers that it
//!   refused a reservation, so a query that failed for want of memory is reported as
//!   such however the error was wrapped on its way out.

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, oneshot};
use tonic::{Code, Status};

/// Rows per batch in commissioner queries (DataFusion's default is 8,192): the work
/// between two chances to cancel, and what a batch holds outside the pool.
pub const BATCH_ROWS: usize = 1024;

/// The longest query text accepted: parsing and planning allocate outside the
/// memory pool in proportion to it, and the audit log keeps every query's text.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;

/// Stack of a query thread: planning walks expressions recursively, so a long
/// filter (`a = 'x' OR a = 'y' OR ...`) needs depth; only the pages used count.
const QUERY_STACK: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct Limits {
    /// From getting a slot to the last row.
    pub time: Duration,
    /// Bytes one query may reserve, its answer included.
    pub memory: usize,
    /// As given (e.g. 512MiB), for messages.
    pub memory_text: String,
    /// Queries running at once.
    pub concurrent: usize,
    /// How long a query may wait for a slot.
    pub queue: Duration,
}

impl Limits {
    pub fn timed_out(&self) -> Status {
        Status::deadline_exceeded(format!(
            "the query took longer than the {:?} limit (--query-timeout); narrow it, or ask whoever runs this service",
            self.time
        ))
    }

    pub fn out_of_memory(&self) -> Status {
        Status::resource_exhausted(format!(
            "the query needed more than its {} of memory (--query-memory); narrow it, or ask whoever runs this service",
            self.memory_text
        ))
    }

    pub fn busy(&self) -> Status {
        Status::resource_exhausted(format!(
            "the service is busy: all {} query slots (--max-concurrent-queries) stayed in use for {:?} (--queue-timeout); try again shortly",
            self.concurrent, self.queue
        ))
    }

    /// Refuse a query text too long to plan within bounds.
    pub fn check_text(&self, sql: &str) -> Result<(), Status> {
        if sql.len() > MAX_QUERY_BYTES {
            return Err(Status::invalid_argument(format!(
                "the query is {} bytes long, more than the {MAX_QUERY_BYTES} allowed; group by a dimension instead of listing its values",
                sql.len()
            )));
        }
        Ok(())
    }
}

/// One query's memory pool: DataFusion's greedy pool of `--query-memory` bytes, which
/// remembers whether it ever refused a reservation, and the query's stop flag.
#[derive(Debug)]
pub struct QueryPool {
    inner: GreedyMemoryPool,
    refused: AtomicBool,
    stopped: Arc<AtomicBool>,
}

impl QueryPool {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: GreedyMemoryPool::new(limit),
            refused: AtomicBool::new(false),
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether a reservation was refused: the query ran out of memory.
    pub fn refused(&self) -> bool {
        self.refused.load(Relaxed)
    }

    /// Set at the time limit; the query's scans read it before each batch.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopped.clone()
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query pool ({})", self.inner)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "query"
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional)
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let out = self.inner.try_grow(reservation, additional);
        if out.is_err() {
            self.refused.store(true, Relaxed);
        }
        out
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// Whether a query's error is its memory pool's limit (`error::is_memory_limit`).
pub fn is_memory(e: &DataFusionError) -> bool {
    crate::error::is_memory_limit(e)
}

/// The query slots, and the limits queries run under.
pub struct Queries {
    slots: Arc<Semaphore>,
    pub limits: Limits,
}

impl Queries {
    pub fn new(limits: Limits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.concurrent)),
            limits,
        }
    }

    /// Run `work` (given the query's memory pool) on a query thread under a slot and
    /// the time limit. Returns when it has finished, or at the time limit; a query
    /// stopped by the limit winds down on its thread (holding its slot) until its
    /// next await. Call from the network runtime, which keeps the timers.
    pub async fn run<T, F, Fut>(&self, work: F) -> Result<T, Status>
    where
        F: FnOnce(Arc<QueryPool>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + 'static,
        T: Send + 'static,
    {
        let slot = tokio::time::timeout(self.limits.queue, self.slots.clone().acquire_owned());
        let slot = match slot.await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return Err(Status::unavailable("the service is stopping")),
            Err(_) => return Err(self.limits.busy()),
        };
        let started = Instant::now();
        let pool = Arc::new(QueryPool::new(self.limits.memory));
        let mine = pool.clone();
        // Dropping `cancel` (at the time limit, or when this call is dropped because
        // the client went away) ends the query at its next await.
        let (cancel, cancelled) = oneshot::channel::<()>();
        let (done, mut answer) = oneshot::channel::<Result<T, Status>>();
        std::thread::Builder::new()
            .name("query".into())
            .stack_size(QUERY_STACK)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = done.send(Err(Status::unavailable(format!(
                            "cannot start a query runtime ({e})"
                        ))));
                        return;
                    }
                };
                let out = runtime.block_on(async move {
                    tokio::select! {
                        biased;
                        _ = cancelled => None,
                        out = work(mine) => Some(out),
                    }
                });
                let stopped = match out {
                    Some(out) => {
                        let _ = done.send(out);
                        None
                    }
                    None => Some(done),
                };
                // The query's tasks go with the runtime, then the slot; only then is
                // a cancelled query's `done` dropped, which tells the network
                // runtime that its work has stopped.
                runtime.shutdown_timeout(Duration::from_secs(1));
                drop(slot);
                drop(stopped);
            })
            .map_err(|e| Status::unavailable(format!("cannot start a query thread ({e})")))?;
        let deadline = tokio::time::Instant::from_std(started + self.limits.time);
        match tokio::time::timeout_at(deadline, &mut answer).await {
            Ok(Ok(Err(s))) if pool.refused() && is_failure(&s) => Err(self.limits.out_of_memory()),
            Ok(Ok(out)) => out,
            // The thread ended without answering: the query panicked.
            Ok(Err(_)) => Err(Status::internal("the query failed")),
            Err(_) => {
                // The flag first: the query thread's scheduler may run each of the
                // query's ready tasks (one batch each) before it sees `cancel`.
                pool.stopped.store(true, Relaxed);
                drop(cancel);
                let limit = self.limits.time;
                // How long the cancelled work took to stop, for the operator.
                tokio::spawn(async move {
                    let _ = answer.await;
                    tracing::info!(
                        "a query over its {limit:?} limit (--query-timeout) stopped {} ms after it",
                        started.elapsed().saturating_sub(limit).as_millis()
                    );
                });
                Err(self.limits.timed_out())
            }
        }
    }
}

/// A failure while running (not a refusal of the query as written).
fn is_failure(s: &Status) -> bool {
    matches!(s.code(), Code::Internal | Code::Unknown)
}

/// A physical optimizer rule for commissioner queries: every leaf of the plan (the
/// views' scans) yields to the runtime before each batch it produces. DataFusion's
/// own cooperative yielding spends tokio's budget of 128 batches per poll, so over
/// in-memory views a whole query can run in one poll; yielding per batch lets a
/// cancelled query stop within one batch of work. Each leaf also reads the query's
/// stop flag before each batch and ends when it is set, so that tasks the query
/// thread runs before it sees the cancellation do no more work.
#[derive(Debug)]
pub struct YieldPerBatch {
    pub stopped: Arc<AtomicBool>,
}

impl PhysicalOptimizerRule for YieldPerBatch {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Down, jumping over what is wrapped: a view's plan, planned by its scan in
        // the querying session, is wrapped already.
        plan.transform_down(|p| {
            if p.is::<YieldExec>() {
                Ok(Transformed::new(p, false, TreeNodeRecursion::Jump))
            } else if p.children().is_empty() {
                let wrapped: Arc<dyn ExecutionPlan> =
                    Arc::new(YieldExec::new(p, self.stopped.clone()));
                Ok(Transformed::new(wrapped, true, TreeNodeRecursion::Jump))
            } else {
                Ok(Transformed::no(p))
            }
        })
        .map(|t| t.data)
    }
    fn name(&self) -> &str {
        "yield_per_batch"
    }
    fn schema_check(&self) -> bool {
        true
    }
}

/// Its input, yielding once before each batch, and ending once `stopped` is set.
#[derive(Debug, Clone)]
struct YieldExec {
    input: Arc<dyn ExecutionPlan>,
    stopped: Arc<AtomicBool>,
}

impl YieldExec {
    fn new(input: Arc<dyn ExecutionPlan>, stopped: Arc<AtomicBool>) -> Self {
        Self { input, stopped }
    }
}

impl DisplayAs for YieldExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "YieldExec")
    }
}

impl ExecutionPlan for YieldExec {
    fn name(&self) -> &str {
        "YieldExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(YieldExec::new(
            children.swap_remove(0),
            self.stopped.clone(),
        )))
    }
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let mut yielded = false;
        let stopped = self.stopped.clone();
        let batches = futures::stream::poll_fn(move |cx| {
            if stopped.load(Relaxed) {
                return Poll::Ready(Some(Err(DataFusionError::Execution(
                    "stopped at the time limit".into(),
                ))));
            }
            if !yielded {
                yielded = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            yielded = false;
            crate::faults::point("query.batch");
            input.poll_next_unpin(cx)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::error::ArrowError;

    fn exhausted() -> DataFusionError {
        DataFusionError::ResourcesExhausted("Failed to allocate 1 MB".into())
    }

    #[test]
    fn a_memory_limit_is_found_by_type_however_it_is_wrapped() {
        let in_arrow = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(exhausted()))),
            None,
        );
        let shared_in_context = DataFusionError::Context(
            "hash join".into(),
            Box::new(DataFusionError::Shared(Arc::new(exhausted()))),
        );
        for e in [exhausted(), in_arrow, shared_in_context] {
            assert!(is_memory(&e), "{e}");
        }
    }

    #[test]
    fn regression_a_message_quoting_the_words_is_not_a_memory_limit() {
        // A failure whose text says "Resources exhausted" (a value quoted from the
        // data, say) was answered as the memory limit while the text decided.
        let e = DataFusionError::Execution("cast of 'Resources exhausted' failed".into());
        assert!(!is_memory(&e));
        assert!(!is_memory(&DataFusionError::External(Box::new(e))));
    }
}

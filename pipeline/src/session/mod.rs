//! The DataFusion session riskstrat runs in: its configuration (memory pool, spill
//! folder, parallelism) here, its functions in `functions.rs` and its reference tables
//! in `reference.rs`. `register_functions` is the one place that adds UDFs and
//! reference data, so that an in-process run, a Ballista scheduler and its executors
//! can all call it.
//!
//! Person-level tables are not registered here: only `ingest::register_inputs` does
//! that, and it always goes through `governance::optouts`.

pub mod cluster;
pub mod functions;
pub mod reference;

use crate::error::Result;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::MemTable;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use std::path::PathBuf;
use std::sync::Arc;

pub use functions::{cell_key_udfs, is_pseudo_id, reason_fields, reasons_udf};
pub use reference::{CHARLSON_CSV, LTC_BNF_GROUPS_CSV, PrefixLookup, age_band, parse_csv};

#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub memory_limit: Option<usize>,
    pub temp_dir: Option<PathBuf>,
    pub target_partitions: Option<usize>,
}

impl SessionOptions {
    pub fn from_job(r: &crate::job::ResourcesSection) -> Result<Self> {
        Ok(Self {
            memory_limit: r
                .memory_limit
                .as_deref()
                .map(crate::job::parse_bytes)
                .transpose()?,
            temp_dir: r.temp_dir.as_ref().map(PathBuf::from),
            target_partitions: r.target_partitions,
        })
    }
}

/// riskstrat's session configuration, in-process or on a cluster.
pub(crate) fn config(opts: &SessionOptions) -> SessionConfig {
    let mut config = SessionConfig::new()
        .with_information_schema(false)
        // Contract types are Utf8; keep them so outputs match the contract.
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
        // A folder input includes its subfolders (hive-partitioned extracts).
        .set_bool(
            "datafusion.execution.listing_table_ignore_subdirectory",
            false,
        );
    if let Some(n) = opts.target_partitions {
        config = config.with_target_partitions(n);
    }
    config
}

/// A fresh session with riskstrat's configuration, functions and reference tables.
pub fn new_context(opts: &SessionOptions) -> Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = opts.memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    if let Some(dir) = &opts.temp_dir {
        runtime = runtime.with_temp_file_path(dir.clone());
    }
    let ctx = SessionContext::new_with_config_rt(config(opts), runtime.build_arc()?);
    register_functions(&ctx)?;
    Ok(ctx)
}

/// riskstrat's UDFs: `is_pseudo_id`, `age_band`, `feature_date`, `chemical_substance`,
/// `bit_count`,
/// `score_reasons` (the scores' reasons), `normalised_pseudo_id` and `usable_optout`
/// (opt-outs), and the
/// reference lists as lookups, `ltc_group(bnf_code)`, `ltc_group_bit(bnf_code)` and
/// `charlson_condition(icd10_code)`.
pub(crate) fn scalar_functions() -> Result<Vec<Arc<ScalarUDF>>> {
    Ok(vec![
        Arc::new(functions::is_pseudo_id_udf()),
        Arc::new(functions::age_band_udf()),
        Arc::new(functions::feature_date_udf()),
        Arc::new(functions::chemical_substance_udf()),
        Arc::new(functions::prefix_lookup_udf(
            PrefixLookup::ltc_groups()?,
            "ltc_group",
        )),
        Arc::new(functions::prefix_bit_udf(
            PrefixLookup::ltc_groups()?,
            "ltc_group_bit",
        )?),
        Arc::new(functions::bit_count_udf()),
        // The cluster's executors apply opt-outs too.
        Arc::new(crate::governance::optouts::normalise_udf()),
        Arc::new(crate::governance::optouts::usable_udf()),
        Arc::new(functions::reasons_udf()),
        Arc::new(functions::prefix_lookup_udf(
            PrefixLookup::charlson()?,
            "charlson_condition",
        )),
    ])
}

/// UDFs and reference tables (in memory). Idempotent per session.
pub fn register_functions(ctx: &SessionContext) -> Result<()> {
    for f in scalar_functions()? {
        ctx.register_udf(Arc::unwrap_or_clone(f));
    }
    for (name, batch) in reference::tables()? {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}

/// The reservations of a session's cached tables, one per [`cache_in_pool`] call.
struct Held(std::sync::Mutex<Vec<datafusion::execution::memory_pool::MemoryReservation>>);

/// `df` collected into memory, with its bytes reserved in the session's memory pool
/// (as `what`) for the session's life: `[resources] memory_limit` then bounds the
/// cached rows (the valid patients, about 110 bytes a person) as well as DataFusion's
/// own work, which gets the rest.
pub(crate) async fn cache_in_pool(
    ctx: &SessionContext,
    what: &str,
    df: DataFrame,
) -> Result<DataFrame> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let partitions = datafusion::physical_plan::collect_partitioned(plan.clone(), task).await?;
    crate::progress::log_plan_metrics(&format!("{what}, kept"), plan.as_ref());
    let partitions = partitions
        .into_iter()
        .map(|p| p.into_iter().map(compact).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    let bytes = buffers_size(partitions.iter().flatten());
    let held = reserve(ctx, what, bytes)?;
    // Held by the session, so reserved for as long as the table can be read.
    let state = ctx.state_ref();
    let mut state = state.write();
    match state.config().get_extension::<Held>() {
        Some(all) => all.0.lock().unwrap_or_else(|p| p.into_inner()).push(held),
        None => state
            .config_mut()
            .set_extension(Arc::new(Held(std::sync::Mutex::new(vec![held])))),
    }
    drop(state);
    let table = MemTable::try_new(schema, partitions)?;
    Ok(ctx.read_table(Arc::new(table))?)
}

/// `bytes` that a stage holds in Rust, outside DataFusion's operators, reserved in the
/// session's memory pool (as `what`) until the reservation is dropped: `[resources]
/// memory_limit` then bounds them too, and the operators that spill get the rest.
pub(crate) fn reserve(
    ctx: &SessionContext,
    what: &str,
    bytes: usize,
) -> Result<datafusion::execution::memory_pool::MemoryReservation> {
    use datafusion::execution::memory_pool::MemoryConsumer;
    let held = MemoryConsumer::new(what).register(&ctx.runtime_env().memory_pool);
    held.try_grow(bytes)?;
    Ok(held)
}

/// The memory `batches` hold: each buffer counted once, not once per batch that
/// shares it (operators emit one large batch as many slices).
pub(crate) fn buffers_size<'a>(batches: impl IntoIterator<Item = &'a RecordBatch>) -> usize {
    let mut counter = datafusion::common::utils::memory::RecordBatchMemoryCounter::new();
    batches.into_iter().for_each(|b| _ = counter.count_batch(b));
    counter.memory_usage()
}

/// `batch` with buffers of its own when it is a small view of larger ones (a join emits
/// its build side's unmatched rows as slices of one batch). A cached table is sized by
/// each batch's buffers in full (its reservation, and DataFusion's statistics of a
/// MemTable, by which the optimiser picks a join's build side): slices of one buffer
/// made 10,000,000 patients look like 343 GB.
fn compact(batch: RecordBatch) -> Result<RecordBatch> {
    let mut slice = 0;
    for c in batch.columns() {
        slice += c.to_data().get_slice_memory_size()?;
    }
    if batch.get_array_memory_size() <= 2 * slice + (1 << 16) {
        return Ok(batch);
    }
    let rows = datafusion::arrow::array::UInt32Array::from_iter_values(0..batch.num_rows() as u32);
    Ok(datafusion::arrow::compute::take_record_batch(
        &batch, &rows,
    )?)
}

#[cfg(test)]
mod tests {
    use super::{SessionOptions, cache_in_pool, new_context, reserve};

    fn options(limit: usize) -> SessionOptions {
        SessionOptions {
            memory_limit: Some(limit),
            temp_dir: None,
            target_partitions: Some(2),
        }
    }

    /// The cached patients count against `memory_limit`: their bytes stay reserved in
    /// the pool while the session lives, and a limit they do not fit in is an error.
    #[tokio::test]
    async fn cached_rows_are_reserved_in_the_memory_pool() {
        let ctx = new_context(&options(64 << 20)).unwrap();
        let df = ctx
            .sql("SELECT v, repeat('x', 32) AS s FROM generate_series(1, 20000) AS t(v)")
            .await
            .unwrap();
        let before = ctx.runtime_env().memory_pool.reserved();
        let cached = cache_in_pool(&ctx, "cached patients", df).await.unwrap();
        let held = ctx.runtime_env().memory_pool.reserved() - before;
        assert!(held > 20_000 * 40, "{held} bytes reserved");
        assert_eq!(cached.clone().count().await.unwrap(), 20_000);
        assert_eq!(ctx.runtime_env().memory_pool.reserved() - before, held);
        // A second cached table adds to the first's reservation, not replaces it. (As
        // in a run, only the table is kept: a DataFrame would hold a copy of the
        // session's configuration, and with it the first reservation.)
        ctx.register_table("cached", cached.into_view()).unwrap();
        let df = ctx
            .sql("SELECT v FROM generate_series(1, 1000) AS t(v)")
            .await
            .unwrap();
        let _second = cache_in_pool(&ctx, "feedback exclusions", df)
            .await
            .unwrap();
        assert!(ctx.runtime_env().memory_pool.reserved() - before > held);

        let small = new_context(&options(1 << 10)).unwrap();
        let df = small
            .sql("SELECT v, repeat('x', 32) AS s FROM generate_series(1, 20000) AS t(v)")
            .await
            .unwrap();
        let err = cache_in_pool(&small, "cached patients", df)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cached patients"), "{err}");
    }

    /// What a stage holds in Rust (the service evaluation's histories) counts against
    /// `memory_limit` while held, and a limit it does not fit in is the pool's error,
    /// which a run reports as the setting to change (exit 2).
    #[test]
    fn held_bytes_are_reserved_until_dropped_and_refused_beyond_the_limit() {
        let ctx = new_context(&options(64 << 20)).unwrap();
        let pool = ctx.runtime_env().memory_pool.clone();
        let before = pool.reserved();
        let held = reserve(&ctx, "histories", 40 << 20).unwrap();
        assert_eq!(pool.reserved() - before, 40 << 20);
        let e = reserve(&ctx, "more histories", 30 << 20).unwrap_err();
        let source = e.source.as_deref().expect("the pool's error");
        assert!(crate::error::is_memory_limit(source), "{e:?}");
        drop(held);
        assert_eq!(pool.reserved(), before);
        assert!(reserve(&ctx, "more histories", 30 << 20).is_ok());
    }

    /// Regression: a 10,000,000-person run under a 7 GiB limit failed caching its
    /// patients ("Failed to allocate additional 343.1 GB"), whose batches were slices
    /// of one buffer each counted in full; counted once, the run then built a join on
    /// the events, as the optimiser took the patients' size from the same count. The
    /// cached table holds compact batches, and the pool and the optimiser see their size.
    #[tokio::test]
    async fn cached_slices_of_one_buffer_are_reserved_once() {
        use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
        let ctx = new_context(&options(64 << 20)).unwrap();
        let v: ArrayRef = std::sync::Arc::new(Int64Array::from_iter_values(0..1_000_000));
        let whole = RecordBatch::try_from_iter([("v", v)]).unwrap();
        let slices: Vec<_> = (0..100).map(|i| whole.slice(i * 10_000, 10_000)).collect();
        let before = ctx.runtime_env().memory_pool.reserved();
        let cached = cache_in_pool(&ctx, "checked patients", ctx.read_batches(slices).unwrap())
            .await
            .unwrap();
        let held = ctx.runtime_env().memory_pool.reserved() - before;
        assert!(
            (8_000_000..9_000_000).contains(&held),
            "{held} bytes reserved"
        );
        // As DataFusion's statistics of a MemTable count them: each batch in full.
        let batches = cached.clone().collect().await.unwrap();
        let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        assert!(
            (8_000_000..9_000_000).contains(&size),
            "{size} bytes by the statistics"
        );
        assert_eq!(cached.count().await.unwrap(), 1_000_000);
    }
}

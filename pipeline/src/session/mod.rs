//! The DataFusion session riskstrat runs in: its configuration (memory pool, spill
//! folder, parallelism) here, its functions in `functions.rs` and its reference tables
//! in `reference.rs`. `register_functions` is the one place that adds UDFs and
//! reference data, so that an in-process run, a Ballista scheduler and its executors
//! can all call it.
//!
//! Person-level tables are not registered here: only `ingest::register_inputs` does
//! that, and it always goes through `governance::optouts`.

pub mod functions;
pub mod reference;

use crate::error::Result;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use std::path::PathBuf;
use std::sync::Arc;

pub use functions::{cell_key_udfs, is_pseudo_id};
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

/// A fresh session with riskstrat's configuration, functions and reference tables.
pub fn new_context(opts: &SessionOptions) -> Result<SessionContext> {
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
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = opts.memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
    }
    if let Some(dir) = &opts.temp_dir {
        runtime = runtime.with_temp_file_path(dir.clone());
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
    register_functions(&ctx)?;
    Ok(ctx)
}

/// UDFs and reference tables. Idempotent per session.
pub fn register_functions(ctx: &SessionContext) -> Result<()> {
    ctx.register_udf(functions::is_pseudo_id_udf());
    ctx.register_udf(functions::age_band_udf());
    // ltc_group(bnf_code), charlson_condition(icd10_code): the reference lists as lookups.
    ctx.register_udf(functions::prefix_lookup_udf(
        PrefixLookup::ltc_groups()?,
        "ltc_group",
    ));
    ctx.register_udf(functions::prefix_lookup_udf(
        PrefixLookup::charlson()?,
        "charlson_condition",
    ));
    reference::register_reference_tables(ctx)
}

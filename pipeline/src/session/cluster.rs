//! A session whose plans run on an Apache Ballista cluster (`[cluster]` in a job), and
//! the session every cluster process builds (`riskstrat cluster scheduler|executor`).
//!
//! [`process_state`] is the one registration function: riskstrat's functions and the
//! object stores (built from the process's environment, `ingest::stores`), used by the
//! client, the scheduler and every executor alike.
//!
//! Ballista sends the client's logical plan to the scheduler, which can encode only
//! files (Parquet listing tables) and views over them: a table held in the client's
//! memory cannot travel. So a cluster session writes each table a run builds in memory
//! (the reference tables, the cached valid patients, the feature dates, the scores,
//! the feedback exclusions) as Parquet under the job's `[cluster] scratch`, storage
//! every process sees, in a folder of its own that [`clean`] removes; an in-process
//! session keeps them in memory as before. Stages call [`register_batch`], [`cache`]
//! and [`register_file`] and need not know where they run.

use crate::error::{Error, Result};
use datafusion::arrow::array::RecordBatch;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::session_state::SessionState;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionConfig, SessionContext};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a cluster session's in-memory tables go: a folder of its own under the job's
/// `[cluster] scratch`. Its presence in a session's configuration is what makes the
/// session a cluster one.
#[derive(Debug)]
pub struct Scratch {
    /// `file:///shared/scratch/riskstrat-<pid>-<nanos>-<random>/` or
    /// `s3://bucket/scratch/riskstrat-...`.
    base: String,
    scheduler: String,
    written: AtomicU64,
}

impl Scratch {
    fn new(scratch: &str, scheduler: &str) -> Result<Self> {
        let root = if crate::job::is_url(scratch) {
            scratch.trim_end_matches('/').to_string()
        } else {
            let url = url::Url::from_directory_path(scratch).map_err(|_| {
                crate::bad_input!(
                    "[cluster] scratch: '{scratch}' must be an absolute path or a URL"
                )
            })?;
            url.as_str().trim_end_matches('/').to_string()
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let unique: u32 = rand::random();
        let scratch = Self {
            base: format!(
                "{root}/riskstrat-{}-{nanos}-{unique:08x}/",
                std::process::id()
            ),
            scheduler: scheduler.to_string(),
            written: AtomicU64::new(0),
        };
        if let Some(dir) = scratch.local_dir() {
            // Person-level rows go here: owner-only, like a run folder (every process
            // of the cluster runs as the same service account).
            crate::durable::create_private_dir(&dir)?;
        }
        Ok(scratch)
    }

    /// The folder on this machine's file system, for a `file://` scratch.
    fn local_dir(&self) -> Option<std::path::PathBuf> {
        let url = url::Url::parse(&self.base).ok()?;
        (url.scheme() == "file")
            .then(|| url.to_file_path().ok())
            .flatten()
    }

    /// A new folder for one table: never reused, so no cached listing is stale.
    fn folder(&self, name: &str) -> String {
        let n = self.written.fetch_add(1, Ordering::Relaxed);
        format!("{}{name}-{n}/", self.base)
    }
}

/// Whatever way the session ends (an error, a panic), a local scratch folder goes with
/// it; [`clean`] removes one in an object store.
impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.local_dir()
            && dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!("cannot remove the scratch folder {}: {e}", dir.display());
        }
    }
}

/// The cluster a session runs on, if it is a cluster session.
pub fn scratch(ctx: &SessionContext) -> Option<Arc<Scratch>> {
    ctx.state_ref().read().config().get_extension::<Scratch>()
}

/// The scheduler's URL when `ctx` runs on a cluster: the manifest's `ran_on`.
pub fn scheduler(ctx: &SessionContext) -> Option<String> {
    scratch(ctx).map(|s| s.scheduler.clone())
}

/// The session of a cluster process (scheduler or executor) or of a client before it
/// connects: `config`, a runtime whose object stores come from the environment (and
/// whose spill files go to `temp_dir`), and riskstrat's functions.
pub fn process_state(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Result<SessionState> {
    use datafusion::execution::FunctionRegistry;
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .build();
    for f in super::scalar_functions()? {
        state.register_udf(f)?;
    }
    Ok(state)
}

/// The runtime of a cluster process: object stores built on first use from the
/// process's environment, spill files under `temp_dir`.
pub fn process_runtime(temp_dir: Option<&std::path::Path>) -> Result<Arc<RuntimeEnv>> {
    runtime(temp_dir, None)
}

fn runtime(
    temp_dir: Option<&std::path::Path>,
    memory_limit: Option<usize>,
) -> Result<Arc<RuntimeEnv>> {
    let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(Arc::new(crate::ingest::stores::FromEnvironment::default()));
    if let Some(dir) = temp_dir {
        runtime = runtime.with_temp_file_path(dir);
    }
    if let Some(limit) = memory_limit {
        runtime = runtime.with_memory_pool(Arc::new(
            datafusion::execution::memory_pool::FairSpillPool::new(limit),
        ));
    }
    Ok(runtime.build_arc()?)
}

/// The Ballista settings a run sends with every job (the scheduler and the executors
/// take a job's settings from its client), measured with `scripts/bench_cluster.sh`.
fn settings(broadcast_limit: usize) -> [(&'static str, String); 3] {
    [
        // Shuffle files compressed with zstd rather than lz4: 1M people's run left
        // 1.3 GB on the executors instead of 2.4 GB, for 15% more time; at 10M
        // people lz4's shuffle filled a 30 GB disk during validation.
        ("ballista.shuffle.compression.codec", "zstd".into()),
        // A join's smaller side up to this size is sent whole to every task of the
        // join instead of shuffling both sides by key: at 10M people the valid
        // patients' keys (about 45 bytes a person) rather than every event row. Each
        // executor needs about twice this much memory per concurrent task.
        (
            "ballista.optimizer.broadcast_join_threshold_bytes",
            broadcast_limit.to_string(),
        ),
        // The same limit in rows, for tables whose size is known only in rows.
        (
            "ballista.optimizer.broadcast_join_threshold_rows",
            (broadcast_limit / BYTES_PER_KEY).to_string(),
        ),
    ]
}

/// A valid patient's key as a join's build side: a 32-character pseudo_id, its
/// offset and the integer `person`.
const BYTES_PER_KEY: usize = 45;

/// A session whose plans run on the job's Ballista scheduler (`df://H:P`), with
/// `opts`' parallelism, writing its in-memory tables under the job's scratch storage.
pub async fn connect(
    opts: &super::SessionOptions,
    cluster: &crate::job::Cluster,
) -> Result<SessionContext> {
    let (scheduler, scratch) = (cluster.scheduler.as_str(), cluster.scratch.as_str());
    use ballista::prelude::SessionContextExt;
    let mut config = super::config(opts);
    if opts.target_partitions.is_none() {
        // Ballista's own default; the shuffle's fan-out across the executors.
        config = config.with_target_partitions(16);
    }
    reachable(scheduler).await?;
    // The client's own work (the model's columns, the scores, the service
    // evaluation's local plans) within the job's memory limit, as in-process.
    let state = process_state(
        config,
        runtime(opts.temp_dir.as_deref(), opts.memory_limit)?,
    )?;
    let ctx = SessionContext::remote_with_state(scheduler, state)
        .await
        .map_err(|e| Error::from(e).context(format!("[cluster] scheduler {scheduler}")))?;
    // Connecting replaced the session's function lists with Ballista's: ours again.
    for f in super::scalar_functions()? {
        ctx.register_udf(Arc::unwrap_or_clone(f));
    }
    for (key, value) in settings(cluster.broadcast_limit) {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .set(key, &value)?;
    }
    let scratch = Arc::new(Scratch::new(scratch, scheduler)?);
    ctx.state_ref()
        .write()
        .config_mut()
        .set_extension(scratch.clone());
    for (name, batch) in super::reference::tables()? {
        register_batch(&ctx, name, batch).await?;
    }
    Ok(ctx)
}

/// Fail at once, naming the setting, when nothing answers at the scheduler's address
/// (Ballista itself would connect only at the first query).
async fn reachable(scheduler: &str) -> Result<()> {
    let address = scheduler.strip_prefix("df://").unwrap_or(scheduler);
    let connect = tokio::net::TcpStream::connect(address);
    match tokio::time::timeout(std::time::Duration::from_secs(10), connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(scheduler, &e.to_string())),
        Err(_) => Err(unreachable(scheduler, "no answer in 10 s")),
    }
}

fn unreachable(scheduler: &str, why: &str) -> Error {
    Error::failed(format!(
        "[cluster] scheduler {scheduler}: cannot connect ({why}); start `riskstrat cluster scheduler` there, or fix the address in the job file"
    ))
}

/// Register `batch` as table `name`: in memory in-process, as Parquet in the scratch
/// folder on a cluster.
pub async fn register_batch(ctx: &SessionContext, name: &str, batch: RecordBatch) -> Result<()> {
    let _ = ctx.deregister_table(name)?;
    let Some(scratch) = scratch(ctx) else {
        ctx.register_batch(name, batch)?;
        return Ok(());
    };
    let folder = scratch.folder(name);
    let mut bytes = Vec::new();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), None)?;
    w.write(&batch)?;
    w.close()?;
    put(ctx, &format!("{folder}part-0.parquet"), bytes).await?;
    register_folder(ctx, name, &folder).await
}

/// Register the Parquet file at `path` (written by this process) as table `name`: read
/// where it is in-process, copied to the scratch folder first on a cluster.
pub async fn register_file(ctx: &SessionContext, name: &str, path: &std::path::Path) -> Result<()> {
    let _ = ctx.deregister_table(name)?;
    let Some(scratch) = scratch(ctx) else {
        ctx.register_parquet(name, path.to_string_lossy().as_ref(), Default::default())
            .await?;
        return Ok(());
    };
    let folder = scratch.folder(name);
    copy_to(ctx, path, &format!("{folder}part-0.parquet")).await?;
    register_folder(ctx, name, &folder).await
}

/// Upload a local file in parts, never whole in memory (a single put is capped).
async fn copy_to(ctx: &SessionContext, path: &std::path::Path, location: &str) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let (store, target) = store_and_path(ctx, location)?;
    let failed = |e: std::io::Error| Error::failed(format!("writing {location}: {e}"));
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(crate::durable::io_at(path, "reading"))?;
    let mut out = object_store::buffered::BufWriter::new(store, target);
    tokio::io::copy(&mut file, &mut out).await.map_err(failed)?;
    out.shutdown().await.map_err(failed)?;
    Ok(())
}

/// `df`'s rows computed once and kept for the session: in-process in memory, reserved
/// in the memory pool as `what` ([`super::cache_in_pool`]); on a cluster written by the
/// executors as Parquet in the scratch folder.
pub async fn cache(ctx: &SessionContext, what: &str, df: DataFrame) -> Result<DataFrame> {
    let Some(scratch) = scratch(ctx) else {
        return super::cache_in_pool(ctx, what, df).await;
    };
    let folder = scratch.folder(&what.replace(' ', "_"));
    df.write_parquet(&folder, DataFrameWriteOptions::new(), None)
        .await?;
    Ok(ctx
        .read_parquet(folder.as_str(), ParquetReadOptions::default())
        .await?)
}

/// A session like `ctx` whose plans run in this process: for the work a cluster is not
/// for (the service evaluation's few thousand people, comparing a run's small files).
/// `ctx` itself when it is not a cluster session. It sees `ctx`'s tables.
pub async fn in_process(ctx: &SessionContext) -> Result<SessionContext> {
    if scratch(ctx).is_none() {
        return Ok(ctx.clone());
    }
    let local = SessionContext::new_with_config_rt(ctx.copied_config(), ctx.runtime_env());
    for f in super::scalar_functions()? {
        local.register_udf(Arc::unwrap_or_clone(f));
    }
    let catalog = ctx.catalog("datafusion").expect("the default catalog");
    let schema = catalog.schema("public").expect("the default schema");
    for name in schema.table_names() {
        if let Some(table) = schema.table(&name).await? {
            local.register_table(name.as_str(), table)?;
        }
    }
    Ok(local)
}

/// Remove the session's scratch folder (nothing when in-process). A run calls it
/// whether it succeeded or not.
pub async fn clean(ctx: &SessionContext) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let Some(scratch) = scratch(ctx) else {
        return Ok(());
    };
    if let Some(dir) = scratch.local_dir() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(crate::durable::io_at(&dir, "removing"))?;
        }
        return Ok(());
    }
    let (store, prefix) = store_and_path(ctx, &scratch.base)?;
    let listed = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(listed)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| Error::failed(format!("removing the scratch folder {}: {e}", scratch.base)))?;
    Ok(())
}

async fn register_folder(ctx: &SessionContext, name: &str, folder: &str) -> Result<()> {
    ctx.register_parquet(name, folder, ParquetReadOptions::default())
        .await?;
    Ok(())
}

async fn put(ctx: &SessionContext, location: &str, bytes: Vec<u8>) -> Result<()> {
    use object_store::ObjectStoreExt;
    let (store, path) = store_and_path(ctx, location)?;
    store
        .put(&path, bytes.into())
        .await
        .map_err(|e| Error::failed(format!("writing {location}: {e}")))?;
    Ok(())
}

fn store_and_path(
    ctx: &SessionContext,
    location: &str,
) -> Result<(Arc<dyn object_store::ObjectStore>, object_store::path::Path)> {
    let url = url::Url::parse(location)
        .map_err(|e| Error::failed(format!("the scratch location {location}: {e}")))?;
    let store_url = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    let store = ctx.runtime_env().object_store(store_url)?;
    let path = object_store::path::Path::from_url_path(url.path())
        .map_err(|e| Error::failed(format!("the scratch location {location}: {e}")))?;
    Ok((store, path))
}

#[cfg(test)]
mod tests {
    use super::Scratch;
    use std::os::unix::fs::PermissionsExt;

    /// A local scratch folder holds person-level rows: owner-only from its creation,
    /// and gone when the session that owns it ends, however it ends.
    #[test]
    fn a_local_scratch_folder_is_owner_only_and_goes_with_its_session() {
        let root = std::env::temp_dir().join(format!("rs-scratch-{}", std::process::id()));
        let scratch = Scratch::new(root.to_str().unwrap(), "df://127.0.0.1:1").unwrap();
        let dir = scratch.local_dir().unwrap();
        assert!(dir.starts_with(&root), "{}", dir.display());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(dir.join("part-0.parquet"), b"rows").unwrap();
        let other = Scratch::new(root.to_str().unwrap(), "df://127.0.0.1:1").unwrap();
        assert_ne!(
            other.local_dir(),
            Some(dir.clone()),
            "two runs share a folder"
        );
        drop(scratch);
        assert!(!dir.exists());
        drop(other);
        std::fs::remove_dir_all(&root).unwrap();
    }
}

//! The run store: every run folder is written and read through it, on any
//! `object_store` (the local filesystem by default; tests also use the in-memory
//! store).
//!
//! Layout: `<base>/<job>/<run_id>/<file>`, the run id `<UTC start>-<seq>` always the
//! folder's name. A run is complete exactly when its `manifest.json` is there: the
//! manifest is written last, and readers (`list`, `latest`, `open`) ignore prefixes
//! without one.
//!
//! Two commit protocols behind one API:
//! - On the local filesystem ([`RunStore::local`]), today's durable one
//!   (`run_folder::RunFolder`): a staging folder claimed exclusively and owned through
//!   a lock for the run's life, fsynced, renamed into place.
//! - On any other store (no atomic rename, no locks), the run is staged in a local
//!   scratch folder and uploaded at commit, every file under the run's prefix and the
//!   manifest last. Its number is claimed first with a create-if-absent put of
//!   `<job>/.claims/<seq>` (`PutMode::Create`): two writers cannot take one number,
//!   and a claim is never removed, so no number is taken twice. A prefix with no
//!   manifest and nothing written to it for [`ABANDONED_AFTER`] is a dead writer's
//!   and is removed by the next run of the job.

use crate::bad_input;
use crate::error::{Error, Result};
use crate::ingest::stores::StorageOptions;
use crate::job::Output;
use crate::outputs::manifest::Manifest;
use crate::outputs::run_folder::{RunFolder, RunId};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MANIFEST: &str = "manifest.json";
const CLAIMS: &str = ".claims";
/// An incomplete run prefix untouched this long belongs to a writer that died
/// mid-upload (a run is uploaded only at commit, file after file).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Where run folders live: a store, the URL DataFusion reads it under, and a prefix.
#[derive(Clone, Debug)]
pub struct RunStore {
    store: Arc<dyn ObjectStore>,
    url: ObjectStoreUrl,
    base: ObjPath,
    /// The output folder on disk, for the local backend.
    local: Option<PathBuf>,
    /// Local scratch space where a run for a remote store is staged.
    staging: PathBuf,
    abandoned_after: Duration,
    /// The store's URL as the user gave it (`s3://bucket/runs`), for messages.
    remote: Option<String>,
}

/// One complete run of a store, for reading.
#[derive(Clone, Debug)]
pub struct RunHandle {
    store: RunStore,
    prefix: ObjPath,
    name: String,
    /// The run folder on disk, for the local backend.
    local: Option<PathBuf>,
}

/// A run being written: files go into its staging folder, `commit` makes it a run.
pub struct RunWriter {
    folder: RunFolder,
    /// For a store other than the local filesystem: where the run is uploaded.
    upload: Option<(RunStore, String, RunId)>,
}

fn absolute(dir: &Path) -> PathBuf {
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn obj_path(dir: &Path) -> ObjPath {
    ObjPath::from_absolute_path(dir)
        .unwrap_or_else(|_| ObjPath::from(dir.to_string_lossy().into_owned()))
}

fn store_error(what: &str, e: object_store::Error) -> Error {
    Error::failed(format!("run store: {what}: {e}")).with_source(e)
}

/// `p` as an object store URL (`s3://bucket/runs`), if it is one (`file://` is not).
pub fn store_url(p: &Path) -> Option<&str> {
    let s = p.to_str()?;
    let (scheme, _) = s.split_once("://")?;
    crate::ingest::stores::Cloud::of(scheme).map(|_| s)
}

fn not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl RunStore {
    /// Run folders under `dir` on the local filesystem (a job's `output`).
    pub fn local(dir: &Path) -> Self {
        let dir = absolute(dir);
        Self {
            store: Arc::new(LocalFileSystem::new()),
            url: ObjectStoreUrl::local_filesystem(),
            base: obj_path(&dir),
            local: Some(dir),
            staging: std::env::temp_dir().join("riskstrat-staging"),
            abandoned_after: ABANDONED_AFTER,
            remote: None,
        }
    }

    /// Run folders under `base` in `store`, which DataFusion reads under `url`
    /// (scheme and host, e.g. `memory://runs`).
    pub fn new(store: Arc<dyn ObjectStore>, url: &str, base: &str) -> Result<Self> {
        let url = ObjectStoreUrl::parse(url)?;
        let base = ObjPath::parse(base).map_err(|e| bad_input!("run store prefix {base}: {e}"))?;
        Ok(Self {
            store,
            url,
            base,
            local: None,
            staging: std::env::temp_dir().join("riskstrat-staging"),
            abandoned_after: ABANDONED_AFTER,
            remote: None,
        })
    }

    /// The run store of a job's `[job] output`.
    pub fn of(output: &Output, storage: &StorageOptions) -> Result<Self> {
        match output {
            Output::Folder(dir) => Ok(Self::local(dir)),
            Output::Store { url, .. } => Self::at_url(url, storage),
        }
    }

    /// Run folders under a folder or an object store URL given on the command line,
    /// the store's settings from its environment variables.
    pub fn at(location: &Path) -> Result<Self> {
        match store_url(location) {
            Some(url) => Self::at_url(url, &StorageOptions::default()),
            None => Ok(Self::local(location)),
        }
    }

    /// Run folders under `s3://bucket/prefix` (or `az://`, `gs://`).
    fn at_url(url: &str, storage: &StorageOptions) -> Result<Self> {
        let (store_url, store) = crate::ingest::stores::build(url, storage)?;
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let base = rest.split_once('/').map_or("", |(_, p)| p);
        let mut s = Self::new(store, store_url.as_str(), base.trim_matches('/'))?;
        s.remote = Some(url.trim_end_matches('/').to_string());
        Ok(s)
    }

    /// An error from the store: for a cloud store, what to fix, named by URL, exit 2
    /// when a setting is wrong (the bucket, the endpoint, the credentials).
    fn error(&self, what: &str, e: object_store::Error) -> Error {
        let Some(url) = &self.remote else {
            return store_error(what, e);
        };
        let text = e.to_string();
        let message = format!(
            "run store {url}: {what}: {}",
            crate::ingest::stores::explain(url, &text)
        );
        let error = if crate::ingest::stores::Problem::of(&text).is_setting() {
            Error::bad_input(message)
        } else {
            Error::failed(message)
        };
        error.with_source(e)
    }

    /// Stage runs for a remote store in `dir` (default: the system's temporary folder).
    pub fn with_staging(mut self, dir: &Path) -> Self {
        self.staging = dir.to_path_buf();
        self
    }

    /// How long an incomplete prefix must be untouched before it is removed.
    pub fn with_abandoned_after(mut self, after: Duration) -> Self {
        self.abandoned_after = after;
        self
    }

    /// The store for messages: its folder or its URL.
    pub fn describe(&self) -> String {
        match (&self.local, &self.remote) {
            (Some(d), _) => d.display().to_string(),
            (None, Some(u)) => u.clone(),
            (None, None) => format!("{}{}", self.url.as_str(), self.base),
        }
    }

    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    fn job_prefix(&self, job: &str) -> ObjPath {
        self.base.clone().join(job)
    }

    /// The names directly under `prefix` that are folders (prefixes).
    async fn folders(&self, prefix: &ObjPath) -> Result<Vec<String>> {
        match self.store.list_with_delimiter(Some(prefix)).await {
            Ok(l) => Ok(l
                .common_prefixes
                .iter()
                .filter_map(|p| p.filename().map(str::to_string))
                .collect()),
            Err(e) if not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(self.error(&format!("listing {prefix}"), e)),
        }
    }

    /// The jobs with run folders here, by name.
    pub async fn jobs(&self) -> Result<Vec<String>> {
        if let Some(dir) = &self.local {
            std::fs::read_dir(dir).map_err(|e| bad_input!("{e}"))?;
        }
        let mut jobs: Vec<String> = self
            .folders(&self.base)
            .await?
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect();
        jobs.sort();
        Ok(jobs)
    }

    fn handle(&self, job: &str, name: &str) -> RunHandle {
        RunHandle {
            store: self.clone(),
            prefix: self.job_prefix(job).join(name),
            name: name.to_string(),
            local: self.local.as_ref().map(|d| d.join(job).join(name)),
        }
    }

    /// The complete runs of a job (with a manifest), oldest first by sequence number
    /// (runs written before sequence numbers first, by name): the last is the newest,
    /// whatever the clock said.
    pub async fn list(&self, job: &str) -> Result<Vec<RunHandle>> {
        let mut runs = Vec::new();
        for name in self.folders(&self.job_prefix(job)).await? {
            // Hidden names (staging, trash, claims) are no runs.
            if name.starts_with('.') {
                continue;
            }
            let run = self.handle(job, &name);
            if run.exists(MANIFEST).await {
                runs.push((RunId::parse(&name).map_or(0, |r| r.seq), run));
            }
        }
        runs.sort_by(|a, b| (a.0, &a.1.name).cmp(&(b.0, &b.1.name)));
        Ok(runs.into_iter().map(|(_, r)| r).collect())
    }

    /// The newest complete run of a job.
    pub async fn latest(&self, job: &str) -> Result<Option<RunHandle>> {
        Ok(self.list(job).await?.pop())
    }

    /// A complete run of a job by its id.
    pub async fn open(&self, job: &str, run_id: &str) -> Result<RunHandle> {
        let run = self.handle(job, run_id);
        if !run.exists(MANIFEST).await {
            return Err(bad_input!(
                "run {job}/{run_id}: not a complete run (no manifest.json)"
            ));
        }
        Ok(run)
    }

    /// Claim a run id for a run of `job` started at `started` and start writing it.
    pub async fn create(
        &self,
        job: &str,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<RunWriter> {
        if let Some(dir) = &self.local {
            let folder = RunFolder::create(dir, job, started)?;
            return Ok(RunWriter {
                folder,
                upload: None,
            });
        }
        self.remove_abandoned(job).await?;
        let id = self.claim(job, &started).await?;
        std::fs::create_dir_all(&self.staging)
            .map_err(crate::durable::io_at(&self.staging, "creating"))?;
        let folder = RunFolder::create(&self.staging, job, started)?;
        Ok(RunWriter {
            folder,
            upload: Some((self.clone(), job.to_string(), id)),
        })
    }

    /// Take the next free number of the job's sequence with a create-if-absent put.
    async fn claim(&self, job: &str, started: &chrono::DateTime<chrono::Utc>) -> Result<RunId> {
        let started = started.format("%Y%m%dT%H%M%SZ").to_string();
        let claims = self.job_prefix(job).join(CLAIMS);
        let mut seq = self.highest_seq(job).await? + 1;
        for _ in 0..1000 {
            let id = RunId {
                started: started.clone(),
                seq,
            };
            let at = claims.clone().join(format!("{seq:06}"));
            let body = PutPayload::from(id.to_string().into_bytes());
            match self.store.put_opts(&at, body, PutMode::Create.into()).await {
                Ok(_) => return Ok(id),
                Err(object_store::Error::AlreadyExists { .. }) => seq += 1,
                Err(e) => return Err(self.error(&format!("claiming {at}"), e)),
            }
        }
        Err(Error::failed(format!(
            "run store: {job}: could not claim a run id"
        )))
    }

    /// The highest number held by a claim or a run prefix of the job.
    async fn highest_seq(&self, job: &str) -> Result<u64> {
        let claims = self.job_prefix(job).join(CLAIMS);
        let claimed: Vec<u64> = match self.store.list_with_delimiter(Some(&claims)).await {
            Ok(l) => l
                .objects
                .iter()
                .filter_map(|o| o.location.filename()?.parse().ok())
                .collect(),
            Err(e) if not_found(&e) => Vec::new(),
            Err(e) => return Err(self.error(&format!("listing {claims}"), e)),
        };
        let runs = self.folders(&self.job_prefix(job)).await?;
        Ok(runs
            .iter()
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| RunId::parse(n).map(|r| r.seq))
            .chain(claimed)
            .max()
            .unwrap_or(0))
    }

    /// Remove the incomplete prefixes of writers that died mid-upload: no manifest,
    /// nothing written for `abandoned_after`.
    async fn remove_abandoned(&self, job: &str) -> Result<()> {
        let now = crate::faults::now();
        for name in self.folders(&self.job_prefix(job)).await? {
            let run = self.handle(job, &name);
            if name.starts_with('.') || run.exists(MANIFEST).await {
                continue;
            }
            let objects: Vec<_> = self
                .store
                .list(Some(&run.prefix))
                .try_collect()
                .await
                .map_err(|e| self.error(&format!("listing {}", run.prefix), e))?;
            let newest = objects.iter().map(|o| o.last_modified).max();
            let idle = newest.map_or(Duration::MAX, |t| (now - t).to_std().unwrap_or_default());
            if idle < self.abandoned_after {
                continue;
            }
            for o in &objects {
                match self.store.delete(&o.location).await {
                    Ok(()) => {}
                    Err(e) if not_found(&e) => {}
                    Err(e) => return Err(self.error(&format!("removing {}", o.location), e)),
                }
            }
            tracing::info!("removed the incomplete run {name} of a writer that died");
        }
        Ok(())
    }
}

impl RunWriter {
    pub fn run_id(&self) -> &RunId {
        match &self.upload {
            Some((_, _, id)) => id,
            None => self.folder.run_id(),
        }
    }

    /// Where a file of the run is written while the run is under way.
    pub fn path(&self, name: &str) -> PathBuf {
        self.folder.path(name)
    }

    /// Write one small file of the run (JSON, HTML).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.folder.write(name, bytes)
    }

    /// Make the run complete: on disk, sync and rename into place; on another store,
    /// upload every file and then the manifest. Returns where the run is.
    pub async fn commit(self) -> Result<PathBuf> {
        let Some((store, job, id)) = self.upload else {
            return self.folder.commit();
        };
        let run = store.handle(&job, &id.to_string());
        upload(&store, &run, self.folder.staging_dir()).await?;
        // `self.folder` is dropped uncommitted: the local staging copy goes.
        Ok(run.location())
    }
}

/// Every file of `staging` under the run's prefix, the manifest last.
async fn upload(store: &RunStore, run: &RunHandle, staging: &Path) -> Result<()> {
    crate::faults::point("run.commit");
    let mut files = Vec::new();
    let mut dirs = vec![staging.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).map_err(crate::durable::io_at(&d, "reading"))? {
            let p = e?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .file_name()
                .is_some_and(|n| n != crate::durable::LOCK_FILE)
            {
                files.push(p);
            }
        }
    }
    let manifest = staging.join(MANIFEST);
    if !files.contains(&manifest) {
        return Err(Error::failed(
            "run store: a run cannot be committed without its manifest",
        ));
    }
    files.retain(|f| f != &manifest);
    files.sort();
    files.push(manifest.clone());
    let mut locations = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(staging).unwrap_or(f);
        let at = rel.iter().fold(run.prefix.clone(), |p, part| {
            p.join(part.to_string_lossy().as_ref())
        });
        if f == &manifest {
            // Each file must still be there: a cleaner may not have taken a slow upload.
            for l in &locations {
                store
                    .store
                    .head(l)
                    .await
                    .map_err(|e| store.error("checking the upload", e))?;
            }
            crate::faults::point("run.before_rename");
        }
        put_file(store, f, &at).await?;
        if locations.is_empty() {
            crate::faults::point("run.upload");
        }
        locations.push(at);
    }
    Ok(())
}

/// Stream one local file to the store: small files in one put, large ones as a
/// multipart upload of 16 MiB parts, never the whole file in memory.
async fn put_file(store: &RunStore, file: &Path, at: &ObjPath) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut src = tokio::fs::File::open(file)
        .await
        .map_err(crate::durable::io_at(file, "reading"))?;
    let mut dst =
        object_store::buffered::BufWriter::with_capacity(store.store.clone(), at.clone(), 16 << 20);
    let copied = match tokio::io::copy(&mut src, &mut dst).await {
        Ok(_) => dst.shutdown().await,
        Err(e) => Err(e),
    };
    if let Err(e) = copied {
        let _ = dst.abort().await;
        let e = match e.downcast::<object_store::Error>() {
            Ok(e) => store.error(&format!("writing {at}"), e),
            Err(e) => Error::failed(format!("run store {}: writing {at}: {e}", store.describe()))
                .with_source(e),
        };
        return Err(e);
    }
    Ok(())
}

impl RunHandle {
    /// The run folder on the local filesystem (`--run DIR`), wherever it sits.
    pub fn local(dir: &Path) -> Self {
        let dir = absolute(dir);
        let store = RunStore::local(&dir);
        Self {
            prefix: store.base.clone(),
            name: dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            local: Some(dir),
            store,
        }
    }

    /// A run named on the command line: its folder, or its URL in an object store
    /// (`s3://bucket/runs/<job>/<run_id>`, the store's settings from its environment).
    pub fn at(location: &Path) -> Result<Self> {
        let Some(url) = store_url(location) else {
            return Ok(Self::local(location));
        };
        let url = url.trim_end_matches('/');
        let (parent, name) = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .and_then(|_| url.rsplit_once('/'))
            .ok_or_else(|| {
                bad_input!("{url}: not a run's URL; give <output URL>/<job>/<run_id>")
            })?;
        let store = RunStore::at_url(parent, &StorageOptions::default())?;
        Ok(Self {
            prefix: store.base.clone().join(name),
            name: name.to_string(),
            local: None,
            store,
        })
    }

    /// Another run of the same job (a folder beside this one), by its id.
    pub fn sibling(&self, run_id: &str) -> Self {
        let mut parts: Vec<_> = self.prefix.parts().collect();
        parts.pop();
        Self {
            store: self.store.clone(),
            prefix: ObjPath::from_iter(parts).join(run_id),
            name: run_id.to_string(),
            local: self
                .local
                .as_ref()
                .map(|d| d.parent().unwrap_or(d).join(run_id)),
        }
    }

    /// The run's id: its folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the run is: its folder on disk, or its URL in the store.
    pub fn location(&self) -> PathBuf {
        match &self.local {
            Some(d) => d.clone(),
            None => PathBuf::from(format!("{}{}", self.store.url.as_str(), self.prefix)),
        }
    }

    /// The URL of one file of the run, as DataFusion reads it.
    pub fn url(&self, file: &str) -> String {
        match &self.local {
            Some(d) => d.join(file).to_string_lossy().into_owned(),
            None => format!("{}{}/{file}", self.store.url.as_str(), self.prefix),
        }
    }

    fn object(&self, file: &str) -> ObjPath {
        file.split('/')
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    /// Whether the run has this file.
    pub async fn exists(&self, file: &str) -> bool {
        self.store.store.head(&self.object(file)).await.is_ok()
    }

    /// The bytes of one file of the run.
    pub async fn read(&self, file: &str) -> Result<Vec<u8>> {
        let at = self.object(file);
        let got = self.store.store.get(&at).await;
        let bytes = match got {
            Ok(g) => g.bytes().await,
            Err(e) => Err(e),
        };
        bytes
            .map(|b| b.to_vec())
            .map_err(|e| self.store.error(&format!("reading {at}"), e))
    }

    /// The manifest of the run: readers of runs (the gate, commissioner views) start
    /// here.
    pub async fn manifest(&self) -> Result<Manifest> {
        let dir = self.location();
        let text = self.read(MANIFEST).await.map_err(|_| {
            bad_input!(
                "--run {}: not a complete run folder (no manifest.json)",
                dir.display()
            )
        })?;
        serde_json::from_slice(&text)
            .map_err(|e| bad_input!("--run {}: manifest.json is unreadable ({e})", dir.display()))
    }

    /// Make the run's store readable by `ctx` under the store's URL.
    pub fn attach(&self, ctx: &SessionContext) {
        ctx.runtime_env()
            .register_object_store(self.store.url.as_ref(), self.store.store.clone());
    }

    /// Register one Parquet file of the run as a table.
    pub async fn register(&self, ctx: &SessionContext, table: &str, file: &str) -> Result<()> {
        self.register_as(ctx, table, file, None).await
    }

    /// As [`register`](Self::register), read as `schema` when given: columns that a
    /// run of an earlier version did not write read as NULL.
    pub async fn register_as(
        &self,
        ctx: &SessionContext,
        table: &str,
        file: &str,
        schema: Option<&datafusion::arrow::datatypes::Schema>,
    ) -> Result<()> {
        if !self.exists(file).await {
            return Err(bad_input!(
                "run folder: {} is missing; is this a complete run?",
                self.location().join(file).display()
            ));
        }
        self.attach(ctx);
        let options = ParquetReadOptions {
            schema,
            ..Default::default()
        };
        ctx.register_parquet(table, self.url(file), options)
            .await
            .map_err(|e| self.damaged(file, e))?;
        Ok(())
    }

    /// One Parquet file of the run as a data frame.
    pub async fn read_parquet(&self, ctx: &SessionContext, file: &str) -> Result<DataFrame> {
        self.attach(ctx);
        ctx.read_parquet(self.url(file), ParquetReadOptions::default())
            .await
            .map_err(|e| self.damaged(file, e))
    }

    /// A file of the run that cannot be read as the run wrote it.
    pub fn damaged(&self, file: &str, e: datafusion::error::DataFusionError) -> Error {
        crate::outputs::run_folder::damaged(&self.location().join(file), e)
    }

    /// The URLs of the run's own Parquet files (not its quarantine), by name.
    async fn parquet_files(&self) -> Vec<String> {
        let Ok(l) = self
            .store
            .store
            .list_with_delimiter(Some(&self.prefix))
            .await
        else {
            return Vec::new();
        };
        let mut names: Vec<String> = l
            .objects
            .iter()
            .filter_map(|o| o.location.filename().map(str::to_string))
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        names.sort();
        names.iter().map(|n| self.url(n)).collect()
    }
}

/// After a query of runs failed on a Parquet decoding error, name the damaged file
/// (decoding each Parquet file of the runs in turn); any other error as it is.
/// A run's manifest for readers that go over all of a job's runs (the previous run,
/// the ticks run, history): a run whose manifest cannot be read is left out with a
/// warning, so that one damaged old run cannot stop every later run.
pub async fn readable_manifest(run: &RunHandle) -> Option<Manifest> {
    match run.manifest().await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("left out run {}: {e}", run.location().display());
            None
        }
    }
}

pub async fn name_damaged_file(
    runs: &[&RunHandle],
    e: datafusion::error::DataFusionError,
) -> std::result::Result<Error, datafusion::error::DataFusionError> {
    if !crate::damage::caused_by_decoding(&e) {
        return Err(e);
    }
    let Ok(ctx) = crate::session::new_context(&Default::default()) else {
        return Err(e);
    };
    for run in runs {
        run.attach(&ctx);
        let urls = run.parquet_files().await;
        if let Some((file, err)) = crate::damage::first_damaged(&ctx, urls, None).await {
            return Ok(crate::outputs::run_folder::damaged(Path::new(&file), err));
        }
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn memory(name: &str) -> (RunStore, Arc<InMemory>) {
        let mem = Arc::new(InMemory::new());
        let staging = std::env::temp_dir().join(format!("rs-store-{name}-{}", std::process::id()));
        let store = RunStore::new(mem.clone(), "memory://runs", "out")
            .unwrap()
            .with_staging(&staging);
        (store, mem)
    }

    /// A run of `job` started at the tests' moment.
    async fn start(store: &RunStore) -> RunWriter {
        store
            .create("job", at("2026-01-01T00:00:00Z"))
            .await
            .unwrap()
    }

    async fn commit(w: RunWriter) -> PathBuf {
        std::fs::write(w.path("scores.parquet"), b"x").unwrap();
        let id = w.run_id().to_string();
        w.write(
            "manifest.json",
            format!("{{\"run_id\": \"{id}\"}}").as_bytes(),
        )
        .unwrap();
        w.commit().await.unwrap()
    }

    /// Four writers in one second, concurrently, on a store without rename or locks:
    /// four distinct ids, each its folder's name, listed oldest first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_runs_on_an_object_store_get_distinct_ids() {
        let (store, _) = memory("concurrent");
        let t = at("2026-01-01T00:00:00Z");
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { commit(store.create("job", t).await.unwrap()).await })
            })
            .collect();
        let mut made = Vec::new();
        for t in tasks {
            made.push(t.await.unwrap());
        }
        let runs = store.list("job").await.unwrap();
        assert_eq!(runs.len(), 4);
        let names: Vec<&str> = runs.iter().map(|r| r.name()).collect();
        assert_eq!(
            names,
            (1..=4)
                .map(|s| format!("20260101T000000Z-{s:06}"))
                .collect::<Vec<_>>()
        );
        for r in &runs {
            let m: serde_json::Value =
                serde_json::from_slice(&r.read("manifest.json").await.unwrap()).unwrap();
            assert_eq!(m["run_id"], r.name());
            assert!(made.contains(&r.location()));
        }
        // The clock jumped back: the next run is still the newest.
        commit(
            store
                .create("job", at("2025-01-01T00:00:00Z"))
                .await
                .unwrap(),
        )
        .await;
        let latest = store.latest("job").await.unwrap().unwrap();
        assert_eq!(latest.name(), "20250101T000000Z-000005");
        assert_eq!(store.jobs().await.unwrap(), vec!["job".to_string()]);
    }

    /// A file above the 16 MiB part size goes up as a multipart upload and arrives
    /// whole, byte for byte.
    #[tokio::test]
    async fn a_large_file_is_uploaded_in_parts_and_arrives_whole() {
        let (store, _) = memory("large");
        let w = start(&store).await;
        let big: Vec<u8> = (0..(40u32 << 20) + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(w.path("features.parquet"), &big).unwrap();
        let id = w.run_id().to_string();
        w.write(
            "manifest.json",
            format!("{{\"run_id\": \"{id}\"}}").as_bytes(),
        )
        .unwrap();
        w.commit().await.unwrap();
        let run = store.latest("job").await.unwrap().unwrap();
        assert!(run.read("features.parquet").await.unwrap() == big);
    }

    /// A prefix without a manifest is no run; once abandoned, the next run removes it,
    /// and its number is not taken again.
    #[tokio::test]
    async fn incomplete_prefixes_are_ignored_then_removed() {
        let (store, mem) = memory("incomplete");
        let w = start(&store).await;
        let dead = format!("out/job/{}/features.parquet", w.run_id());
        // A writer that died mid-upload: one file, no manifest.
        mem.put(&ObjPath::from(dead.as_str()), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        drop(w);
        assert!(store.list("job").await.unwrap().is_empty());
        assert!(store.open("job", "20260101T000000Z-000001").await.is_err());
        // Not yet abandoned: left alone.
        let next = start(&store).await;
        assert!(mem.head(&ObjPath::from(dead.as_str())).await.is_ok());
        assert_eq!(next.run_id().seq, 2);
        drop(next);
        let store = store.with_abandoned_after(Duration::ZERO);
        let third = commit(start(&store).await).await;
        assert!(mem.head(&ObjPath::from(dead.as_str())).await.is_err());
        assert!(
            third.to_string_lossy().ends_with("-000003"),
            "{}",
            third.display()
        );
        let runs = store.list("job").await.unwrap();
        assert_eq!(runs.len(), 1);
        assert!(store.open("job", runs[0].name()).await.is_ok());
    }

    /// The manifest is the last object written: a reader never sees a manifest
    /// without the files before it.
    #[tokio::test]
    async fn the_manifest_is_uploaded_last() {
        let (store, mem) = memory("last");
        let w = start(&store).await;
        std::fs::create_dir_all(w.path("quarantine")).unwrap();
        std::fs::write(w.path("quarantine/patients.parquet"), b"q").unwrap();
        let run = commit(w).await;
        let mut objects: Vec<_> = mem
            .list(Some(&ObjPath::from("out/job/20260101T000000Z-000001")))
            .try_collect()
            .await
            .unwrap();
        objects.sort_by_key(|o| o.last_modified);
        let names: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
        assert_eq!(
            names.last().unwrap(),
            "out/job/20260101T000000Z-000001/manifest.json"
        );
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(
            run,
            PathBuf::from("memory://runs/out/job/20260101T000000Z-000001")
        );
    }
}

//! `riskstrat serve`: the commissioner views over Arrow Flight SQL, so any Flight SQL
//! client (Python ADBC, the JDBC driver, DBeaver) can query them.
//!
//! Every call passes a tonic interceptor that checks the bearer token against the
//! access file's hashes and attaches the caller's session (a `Commissioner` holding
//! only the jobs that token may see, built once at start-up); failed authentications
//! are counted and audited. Every query is planned and checked by disclosure control
//! on a query thread of its own under the limits of `limits` (a slot, a time limit,
//! its own memory pool), protected (suppressed, rounded), and audited before any row
//! leaves.
//!
//! Statement handles and prepared-statement handles are the SQL itself: the server
//! keeps nothing per statement, and each execution is planned and guarded afresh
//! under the token that executes it.

use super::access::{Access, Grant};
use super::limits::{Limits, Queries, QueryPool, is_memory};
use super::{Answer, CATALOG, Commissioner, RunViews, open_run, schema_name};
use crate::bad_input;
use crate::error::{Error, ErrorKind, Result};
use crate::governance::audit::{self, Action, Record};
use crate::governance::disclosure_control::{Guarded, Policy};
use crate::governance::pseudonym::Key;
use crate::outputs::run_store::RunStore;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataMap;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// A job output folder ([job] output) holding <job>/<run_id>/ run folders; the
    /// newest complete run of each job is served, one schema per job.
    #[arg(long)]
    pub runs: PathBuf,
    /// The access file: [[token]] entries (sha256, name, role, jobs).
    #[arg(long)]
    pub access: PathBuf,
    /// host:port to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long)]
    pub listen: String,
    /// The query audit log [default: RUNS/serve-audit.jsonl].
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, clients connect with TLS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Seconds a query may take, planning and running, from when it gets a slot.
    #[arg(long, default_value = "30")]
    pub query_timeout: String,
    /// Memory one query may reserve (e.g. 512MiB), its answer included; beyond it the
    /// query fails.
    #[arg(long, default_value = "1GiB")]
    pub query_memory: String,
    /// Queries that may run at once, each on a thread of its own; others wait for a slot.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrent_queries: u32,
    /// Seconds a query may wait for a slot before it is refused as busy.
    #[arg(long, default_value = "10")]
    pub queue_timeout: String,
    #[command(flatten)]
    pub cell_key: super::CellKeyArg,
}

/// One token's view of the service: built once, shared by all its calls.
struct Caller {
    name: String,
    jobs: Vec<String>,
    /// None when no job it may see has a run here: it can connect and sees nothing.
    commissioner: Option<Commissioner>,
    /// `job/run_id` of each run it sees, for the audit log.
    runs: String,
}

type Callers = HashMap<[u8; 32], Arc<Caller>>;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let access = Access::load(&args.access)?;
    let limits = Limits {
        time: parse_seconds(&args.query_timeout, "--query-timeout")?,
        memory: match crate::job::parse_bytes(&args.query_memory) {
            Ok(0) => return Err(bad_input!("--query-memory must be more than 0")),
            Ok(n) => n,
            Err(e) => return Err(e.context("--query-memory")),
        },
        memory_text: args.query_memory.clone(),
        concurrent: args.max_concurrent_queries as usize,
        queue: parse_seconds(&args.queue_timeout, "--queue-timeout")?,
    };
    let secret = args.cell_key.load(&args.runs)?;
    let runs = newest_runs(&args.runs, &secret).await?;
    for r in &runs {
        tracing::info!(
            "serving {CATALOG}.{} from run {}",
            schema_name(&r.job),
            r.dir.display()
        );
    }
    let callers = callers(&access, &runs)?;
    let audit_path = args
        .audit
        .clone()
        .unwrap_or_else(|| args.runs.join("serve-audit.jsonl"));
    let audit = Arc::new(audit::Writer::open(&audit_path).map_err(|e| e.context("--audit"))?);
    tracing::info!("auditing queries to {}", audit_path.display());

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| bad_input!("--listen {}: cannot listen there ({e})", args.listen))?;
    let addr = listener.local_addr()?;
    let mut server = Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |p: &Path, flag: &str| {
            std::fs::read(p).map_err(|e| bad_input!("{flag} {}: cannot read it ({e})", p.display()))
        };
        let identity = Identity::from_pem(read(cert, "--tls-cert")?, read(key, "--tls-key")?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                bad_input!("--tls-cert/--tls-key: not a usable certificate and key ({e})")
            })?;
    }
    if args.tls_cert.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            "no TLS on {addr}: tokens and answers cross the network in clear; give --tls-cert and --tls-key"
        );
    }
    tracing::info!(
        "queries: at most {} at once (waiting up to {:?} for a slot), {:?} and {} each",
        limits.concurrent,
        limits.queue,
        limits.time,
        limits.memory_text
    );
    let refused = Arc::new(Unauthenticated::start(audit.clone()));
    let service = Service {
        audit,
        queries: Queries::new(limits),
    };
    let counted = refused.clone();
    let svc = FlightServiceServer::with_interceptor(service, move |mut req: Request<()>| {
        match authenticate(&callers, req.metadata()) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Ok(req)
            }
            Err(why) => {
                counted.record(&why, req.remote_addr());
                Err(why.status())
            }
        }
    });
    // The bound address, so `--listen 127.0.0.1:0` can be used by scripts and tests.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    server
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await
        .map_err(|e| Error::failed(format!("serve: {e}")))?;
    tracing::info!(
        "stopped; {} calls were refused for want of a valid token",
        refused.count()
    );
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn parse_seconds(s: &str, flag: &str) -> Result<Duration> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .and_then(|x| Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| bad_input!("{flag} {s}: give a number of seconds above 0, e.g. 30"))
}

/// The newest complete run of each job under `dir` (`<job>/<run_id>/`), by job name.
pub async fn newest_runs(dir: &Path, secret: &Key) -> Result<Vec<RunViews>> {
    let store = RunStore::local(dir);
    let jobs = store.jobs().await.map_err(|e| {
        bad_input!(
            "--runs {}: cannot read it ({}); give a job's output folder ([job] output)",
            dir.display(),
            e.message
        )
    })?;
    let mut runs: Vec<RunViews> = Vec::new();
    for job in jobs {
        let Some(newest) = store.latest(&job).await? else {
            continue;
        };
        let run = open_run(&newest, secret, &Policy::default()).await?;
        if let Some(other) = runs.iter().find(|r| r.job == run.job) {
            return Err(bad_input!(
                "--runs {}: {} and {} both hold runs of job {}; keep one folder per job",
                dir.display(),
                other.dir.display(),
                run.dir.display(),
                run.job
            ));
        }
        runs.push(run);
    }
    if runs.is_empty() {
        return Err(bad_input!(
            "--runs {}: no complete run folders (<job>/<run_id>/manifest.json) in it; give the folder named by [job] output, after a run",
            dir.display()
        ));
    }
    Ok(runs)
}

/// A session per token, over the runs of the jobs it may see (in the access file's
/// order, so its first job is the default schema).
fn callers(access: &Access, runs: &[RunViews]) -> Result<Callers> {
    let mut out = HashMap::new();
    for (hash, Grant { name, jobs }) in access.grants() {
        let mine: Vec<RunViews> = jobs
            .iter()
            .filter_map(|j| runs.iter().find(|r| &r.job == j).cloned())
            .collect();
        let missing: Vec<&str> = jobs
            .iter()
            .filter(|j| !mine.iter().any(|r| &r.job == *j))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                "token {name:?}: no run of {} to serve; {}",
                missing.join(", "),
                if mine.is_empty() {
                    "it can connect but sees nothing"
                } else {
                    "it sees its other jobs"
                }
            );
        }
        let runs = mine
            .iter()
            .map(|r| format!("{}/{}", r.job, r.run_id))
            .collect::<Vec<_>>()
            .join(", ");
        let commissioner = if mine.is_empty() {
            None
        } else {
            Some(Commissioner::from_runs(mine, Policy::default())?)
        };
        out.insert(
            *hash,
            Arc::new(Caller {
                name: name.clone(),
                jobs: jobs.clone(),
                commissioner,
                runs,
            }),
        );
    }
    Ok(out)
}

/// Why a call was not authenticated. Holds nothing of the token but, for an unknown
/// one, the first 8 hex digits of its SHA-256: enough to tell one misconfigured client
/// from many guesses, far too little to find the token by.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    NoToken,
    NotBearer,
    Unknown { sha256_prefix: String },
}

impl Why {
    fn status(&self) -> Status {
        const HOW: &str = "send the header `authorization: Bearer <token>`";
        match self {
            Why::NoToken => Status::unauthenticated(format!("no token: {HOW}")),
            Why::NotBearer => Status::unauthenticated(format!("not a bearer token: {HOW}")),
            Why::Unknown { .. } => {
                Status::unauthenticated("unknown token: check it with whoever runs this service")
            }
        }
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::NoToken => f.write_str("no token"),
            Why::NotBearer => f.write_str("not a bearer token"),
            Why::Unknown { sha256_prefix } => {
                write!(f, "unknown token (sha256 {sha256_prefix}...)")
            }
        }
    }
}

/// The caller of a request, from its bearer token. Never logs or echoes the token.
fn authenticate(callers: &Callers, metadata: &MetadataMap) -> Result<Arc<Caller>, Why> {
    let header = metadata.get("authorization").ok_or(Why::NoToken)?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .ok_or(Why::NotBearer)?;
    let hash = super::access::token_sha256(token);
    callers.get(&hash).cloned().ok_or_else(|| Why::Unknown {
        sha256_prefix: hex::encode(&hash[..4]),
    })
}

/// The audit actor of a call refused for want of a valid token.
const UNAUTHENTICATED: &str = Action::Unauthenticated.as_str();

/// Failed authentications: counted, and each an audit record (action
/// `unauthenticated`). The interceptor must not wait for the disk (nor for stderr),
/// so it only counts and hands the record to a bounded queue, which one task writes
/// out (and logs); when a flood fills the queue, the failures left out are counted and
/// the next record written says how many.
struct Unauthenticated {
    count: AtomicU64,
    unrecorded: Arc<AtomicU64>,
    queue: tokio::sync::mpsc::Sender<Record>,
}

impl Unauthenticated {
    const QUEUE: usize = 1024;

    fn start(audit: Arc<audit::Writer>) -> Self {
        let (queue, mut records) = tokio::sync::mpsc::channel::<Record>(Self::QUEUE);
        let unrecorded = Arc::new(AtomicU64::new(0));
        let missed = unrecorded.clone();
        tokio::spawn(async move {
            while let Some(mut r) = records.recv().await {
                let n = missed.swap(0, Relaxed);
                if n > 0 {
                    let d = r.detail.take().unwrap_or_default();
                    r.detail = Some(format!(
                        "{d}; {n} failed authentications before it were counted but not recorded one by one (too many at once)"
                    ));
                }
                tracing::warn!(
                    "refused a call: {}",
                    r.detail.as_deref().unwrap_or_default()
                );
                let writer = audit.clone();
                match tokio::task::spawn_blocking(move || writer.append(r)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!("a failed authentication was not audited: {e}"),
                    Err(e) => tracing::error!("a failed authentication was not audited: {e}"),
                }
            }
        });
        Self {
            count: AtomicU64::new(0),
            unrecorded,
            queue,
        }
    }

    /// Count a failed call and queue its record; never blocks.
    fn record(&self, why: &Why, peer: Option<std::net::SocketAddr>) {
        let n = self.count.fetch_add(1, Relaxed) + 1;
        let from = peer.map_or_else(|| "an unknown address".to_string(), |a| a.to_string());
        let record = Record {
            actor: UNAUTHENTICATED.into(),
            action: Action::Unauthenticated,
            detail: Some(format!(
                "{why}, from {from}; failed authentication {n} since the server started"
            )),
            ..Default::default()
        };
        if self.queue.try_send(record).is_err() {
            self.unrecorded.fetch_add(1, Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

fn caller<T>(req: &Request<T>) -> Result<Arc<Caller>, Status> {
    // The interceptor puts it there on every call; its absence is a wiring bug.
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no token"))
}

impl Caller {
    fn commissioner(&self) -> Result<&Commissioner, Status> {
        self.commissioner.as_ref().ok_or_else(|| {
            Status::permission_denied(format!(
                "no run of the jobs this token may see ({}) is being served; ask whoever runs this service",
                self.jobs.join(", ")
            ))
        })
    }
}

fn status(e: Error) -> Status {
    match e.kind {
        ErrorKind::BadInput => Status::invalid_argument(e.message),
        ErrorKind::Failed => Status::internal(e.message),
    }
}

fn utf8(bytes: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(bytes)
        .map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))
}

fn no_transactions(id: &Option<prost::bytes::Bytes>) -> Result<(), Status> {
    match id {
        Some(_) => Err(Status::invalid_argument(
            "transactions are not supported: the service is read-only",
        )),
        None => Ok(()),
    }
}

fn read_only() -> Status {
    Status::permission_denied("the service is read-only: only SELECT queries over the views")
}

pub struct Service {
    audit: Arc<audit::Writer>,
    queries: Queries,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

impl Service {
    /// The protected schema of a query (planned and guarded, not run). A refusal is
    /// audited here, since the client will not come back to run it.
    async fn schema(&self, caller: &Arc<Caller>, sql: &str) -> Result<SchemaRef, Status> {
        let result = self
            .under_limits(caller, sql, |c, text| async move {
                let g = c.plan(&text).await.map_err(status)?;
                Ok(c.protect(&g, vec![]).map_err(status)?.schema)
            })
            .await;
        if let Err(e) = &result {
            self.audit(caller, sql, Err(e)).await?;
        }
        result
    }

    /// Plan, guard, run under the limits, protect, and audit a query: only then may
    /// its rows be sent. If the audit record cannot be written, nothing is sent.
    async fn answer(&self, caller: &Arc<Caller>, sql: &str) -> Result<Answer, Status> {
        let started = Instant::now();
        let limits = self.queries.limits.clone();
        let result = self
            .under_limits(caller, sql, |c, text| async move {
                let g = c.plan(&text).await.map_err(status)?;
                answer_within(&c, &g, &limits).await
            })
            .await;
        self.audit(caller, sql, result.as_ref().map(|a| a.rows))
            .await?;
        tracing::debug!(
            "query by {:?}: {} in {} ms",
            caller.name,
            match &result {
                Ok(a) => format!("{} rows", a.rows),
                Err(e) => format!("{:?}", e.code()),
            },
            started.elapsed().as_millis()
        );
        result
    }

    /// Run `work` on the caller's session with the query's own memory pool, on a query
    /// thread under a slot and the time limit.
    async fn under_limits<T, F, Fut>(
        &self,
        caller: &Arc<Caller>,
        sql: &str,
        work: F,
    ) -> Result<T, Status>
    where
        F: FnOnce(Commissioner, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, Status>> + 'static,
        T: Send + 'static,
    {
        self.queries.limits.check_text(sql)?;
        caller.commissioner()?;
        let (who, text) = (caller.clone(), sql.to_string());
        self.queries
            .run(move |pool: Arc<QueryPool>| async move {
                let c = who.commissioner()?.with_memory_pool(pool).map_err(status)?;
                work(c, text).await
            })
            .await
    }

    /// One record per query: who, the SQL, when (the record's time), and the rows
    /// returned or why none were.
    async fn audit(
        &self,
        caller: &Caller,
        sql: &str,
        outcome: Result<usize, &Status>,
    ) -> Result<(), Status> {
        let (action, rows, detail) = match outcome {
            Ok(rows) => (Action::Query, Some(rows as u64), None),
            Err(e) => (Action::Refuse, None, Some(e.message().to_string())),
        };
        let record = Record {
            actor: caller.name.clone(),
            action,
            run: Some(caller.runs.clone()),
            query: Some(sql.to_string()),
            rows,
            detail,
            ..Default::default()
        };
        let writer = self.audit.clone();
        tokio::task::spawn_blocking(move || writer.append(record))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|_| ())
            .map_err(|e| {
                tracing::error!("{e}");
                Status::internal(format!("{e}; nothing was sent"))
            })
    }

    async fn info(
        &self,
        caller: &Arc<Caller>,
        sql: &str,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema(caller, sql).await?;
        flight_info(ticket, &schema, descriptor)
    }

    async fn rows(&self, caller: &Arc<Caller>, sql: &str) -> Result<Response<DoGetStream>, Status> {
        let a = self.answer(caller, sql).await?;
        Ok(stream(a.schema, a.batches))
    }
}

/// Run a guarded plan and protect its rows, with the raw rows and then the answer
/// reserved in the query's memory pool, so that operators and answer together stay
/// within `--query-memory` (the pool does not otherwise see the batches a query
/// returns).
async fn answer_within(c: &Commissioner, g: &Guarded, limits: &Limits) -> Result<Answer, Status> {
    let pool = c.context().runtime_env().memory_pool.clone();
    let mut held = MemoryConsumer::new("answer").register(&pool);
    let failed = |e: DataFusionError| {
        if is_memory(&e) {
            limits.out_of_memory()
        } else {
            status(super::query_failed(&e.strip_backtrace()))
        }
    };
    let mut rows = DataFrame::new(c.context().state(), g.plan.clone())
        .execute_stream()
        .await
        .map_err(failed)?;
    let mut batches = Vec::new();
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(failed)?;
        reserve(&mut held, batch.get_array_memory_size(), limits)?;
        batches.push(batch);
    }
    drop(rows);
    let answer = c.protect(g, batches).map_err(status)?;
    let size = answer
        .batches
        .iter()
        .map(|b| b.get_array_memory_size())
        .sum();
    // The raw rows are gone with `protect`: only the answer is held from here.
    held.free();
    reserve(&mut held, size, limits)?;
    Ok(answer)
}

fn reserve(held: &mut MemoryReservation, bytes: usize, limits: &Limits) -> Result<(), Status> {
    held.try_grow(bytes).map_err(|_| limits.out_of_memory())
}

fn flight_info(
    ticket: Vec<u8>,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn stream(schema: SchemaRef, batches: Vec<RecordBatch>) -> Response<DoGetStream> {
    let s = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .map_err(Status::from);
    Response::new(Box::pin(s))
}

fn batch_stream(
    batch: std::result::Result<RecordBatch, arrow_flight::error::FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(Status::from)?;
    Ok(stream(batch.schema(), vec![batch]))
}

/// What generic clients ask before they browse or query (JDBC's DatabaseMetaData).
static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "riskstrat");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    // Prepared statements are their SQL: they never expire.
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    // What disclosure control allows: ORDER BY output columns, one view, no subqueries,
    // unions or joins.
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, false);
    b.append(SqlInfo::SqlSupportedSubqueries, 0i32);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, false);
    b.append(SqlInfo::SqlSupportedUnions, 0i32);
    b.append(SqlInfo::SqlMaxTablesInSelect, 1i64);
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.build().expect("SQL info is well formed")
});

#[tonic::async_trait]
impl FlightSqlService for Service {
    type FlightService = Service;

    /// The token is checked by the interceptor; a client that handshakes first (some
    /// do, whatever the auth) gets an empty answer and goes on with its bearer token.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        no_transactions(&query.transaction_id)?;
        let caller = caller(&request)?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into_bytes().into(),
        };
        self.info(
            &caller,
            &query.query,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(&caller(&request)?, utf8(&ticket.statement_handle)?)
            .await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        no_transactions(&query.transaction_id)?;
        let schema = self.schema(&caller(&request)?, &query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            // No parameters: values go into the SQL, where disclosure control sees them.
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        let sql = utf8(&cmd.prepared_statement_handle)?.to_string();
        self.info(
            &caller,
            &sql,
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.rows(&caller(&request)?, utf8(&cmd.prepared_statement_handle)?)
            .await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        Err(Status::invalid_argument(
            "prepared statements here take no parameters: write the values into the SQL",
        ))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    // Catalog metadata: the ticket is the command itself, answered per caller.

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        if caller(&request)?.commissioner.is_some() {
            b.append(CATALOG);
        }
        batch_stream(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for r in runs_of(&*caller(&request)?) {
            b.append(CATALOG, schema_name(&r.job));
        }
        batch_stream(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        flight_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for r in runs_of(&*caller(&request)?) {
            for (view, schema) in &r.catalog.views {
                // Hidden columns (record keys) are no business of a client's browser.
                let visible: Vec<_> = schema
                    .fields()
                    .iter()
                    .filter(|f| !f.name().starts_with("__"))
                    .cloned()
                    .collect();
                let schema = datafusion::arrow::datatypes::Schema::new(visible);
                b.append(CATALOG, schema_name(&r.job), view.name, "VIEW", &schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
            }
        }
        batch_stream(b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        flight_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("VIEW");
        batch_stream(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&SQL_INFO).schema();
        flight_info(
            query.as_any().encode_to_vec(),
            &schema,
            request.into_inner(),
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        batch_stream(query.into_builder(&SQL_INFO).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

fn runs_of(caller: &Caller) -> &[RunViews] {
    caller.commissioner.as_ref().map_or(&[], |c| &c.runs)
}

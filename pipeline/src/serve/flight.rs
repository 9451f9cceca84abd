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

mod auth;
mod metadata;
mod service;

use super::access::{Access, Grant};
use super::limits::{Limits, Queries};
use super::{CATALOG, Commissioner, RunViews, open_run, schema_name};
use crate::bad_input;
use crate::error::{Error, Result};
use crate::governance::audit;
use crate::governance::disclosure_control::Policy;
use crate::governance::pseudonym::Key;
use crate::outputs::run_store::RunStore;
use arrow_flight::flight_service_server::FlightServiceServer;
use auth::{Unauthenticated, authenticate};
use service::Service;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};

/// What `riskstrat serve` serves, and how (its command line is parsed in `main`).
pub struct ServeConfig {
    /// A job output folder ([job] output) holding <job>/<run_id>/ run folders.
    pub runs: PathBuf,
    /// The access file: [[token]] entries (sha256, name, role, jobs).
    pub access: PathBuf,
    /// host:port to listen on; port 0 picks a free port.
    pub listen: String,
    /// The query audit log [default: RUNS/serve-audit.jsonl].
    pub audit: Option<PathBuf>,
    /// TLS certificate chain and private key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    pub limits: Limits,
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

/// Serve until SIGTERM or Ctrl-C: the newest run of each job under `args.runs`, to
/// the tokens of the access file, under `args.limits`.
pub async fn serve(args: ServeConfig) -> Result<()> {
    let limits = args.limits.clone();
    let access = Access::load(&args.access)?;
    let secret = args.cell_key.load(&args.runs)?;
    // Decided before any run is read: a bucket's runs never get the audit log.
    let audit_path = match &args.audit {
        Some(p) => p.clone(),
        None if crate::outputs::run_store::store_url(&args.runs).is_some() => {
            return Err(bad_input!(
                "--audit: the query audit log is kept on local disk; with --runs in an object store, give --audit FILE"
            ));
        }
        None => args.runs.join("serve-audit.jsonl"),
    };
    let runs = newest_runs(&args.runs, &secret).await?;
    for r in &runs {
        tracing::info!(
            "serving {CATALOG}.{} from run {}",
            schema_name(&r.job),
            r.dir.display()
        );
    }
    let callers = callers(&access, &runs)?;
    let audit = Arc::new(audit::Writer::open(&audit_path).map_err(|e| e.context("--audit"))?);
    tracing::info!("auditing queries to {}", audit_path.display());

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| bad_input!("--listen {}: cannot listen there ({e})", args.listen))?;
    let addr = listener.local_addr()?;
    let mut server = Server::builder();
    if let Some((cert, key)) = &args.tls {
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
    if args.tls.is_none() && !addr.ip().is_loopback() {
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
    let service = Service::new(audit, Queries::new(limits));
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

/// The newest complete run of each job under `dir` (`<job>/<run_id>/`), by job name.
pub async fn newest_runs(dir: &Path, secret: &Key) -> Result<Vec<RunViews>> {
    let store = RunStore::at(dir)?;
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

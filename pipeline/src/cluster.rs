//! `riskstrat cluster scheduler|executor`: Apache Ballista's scheduler and executor,
//! embedded in the riskstrat binary so that both know riskstrat's functions and object
//! stores (`session::cluster::process_state`, the same registration as the client's).
//!
//! Only the relational stages of a run travel to a cluster, as plans over Parquet
//! files: the keys, the vault, the gate and disclosure control never do (nothing here
//! imports them, checked in `layers.rs`).
//!
//! Each process prints one `ready` line on stdout when it can take work; the scheduler
//! also answers `GET /readyz` on its port (200 once `--min-executors` executors have
//! registered), which is what a script waits on.

use crate::bad_input;
use crate::error::{Error, Result};
use crate::session::cluster::{process_runtime, process_state};
use ballista_core::ConfigProducer;
use ballista_core::extension::SessionConfigExt;
use datafusion::prelude::SessionConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `cluster scheduler`'s settings.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where it listens (gRPC and `/readyz`), an IP address and port.
    pub bind: SocketAddr,
    /// The host executors and clients reach it by (default: the bind address).
    pub external_host: Option<String>,
    /// `/readyz` answers 200 once this many executors have registered.
    pub min_executors: usize,
}

/// `cluster executor`'s settings.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// Its Arrow Flight data port (shuffle reads, results), an IP address and port.
    pub bind: SocketAddr,
    /// Its gRPC port (the scheduler pushes tasks to it).
    pub grpc_port: u16,
    /// The host other processes reach it by (default: the bind address).
    pub external_host: Option<String>,
    /// Shuffle files and spills; one folder per executor.
    pub work_dir: PathBuf,
    /// Tasks run at once (default: the number of cores).
    pub concurrent_tasks: Option<usize>,
    /// The executor's memory pool, shared by its tasks; beyond it they spill.
    pub memory_limit: Option<usize>,
}

/// How long a finished job's shuffle files and results stay on the executors before
/// the scheduler removes them: a client streams a job's results as it writes its files
/// (Ballista's default, 5 minutes, is short for that at scale), and a run's jobs must
/// not pile up on the executors' disks (at 10M people a run shuffles tens of GB).
const RESULTS_KEPT_SECONDS: u64 = 600;

/// Files older than this in an executor's work folder (the scheduler's removal missed
/// them: it stopped, or lost the executor) are swept every 10 minutes.
const SWEPT_AFTER_SECONDS: u64 = 3600;

/// The session configuration every cluster process starts its sessions from:
/// Ballista's (which a client's settings then override, job by job).
fn config_producer() -> ConfigProducer {
    Arc::new(SessionConfig::new_with_ballista)
}

/// Run a scheduler until the process is stopped.
pub async fn scheduler(opts: SchedulerOptions) -> Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
    let runtime = process_runtime(None)?;
    let builder: ballista_scheduler::SessionBuilder = Arc::new(move |config: SessionConfig| {
        process_state(config, runtime.clone()).map_err(into_df)
    });
    let config = SchedulerConfig {
        bind_host: opts.bind.ip().to_string(),
        bind_port: opts.bind.port(),
        external_host: opts
            .external_host
            .clone()
            .unwrap_or_else(|| opts.bind.ip().to_string()),
        min_ready_executors: opts.min_executors,
        finished_job_data_clean_up_interval_seconds: RESULTS_KEPT_SECONDS,
        override_session_builder: Some(builder),
        override_config_producer: Some(config_producer()),
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|e| {
            bad_input!(
                "cluster scheduler --bind {}: cannot listen there ({e})",
                opts.bind
            )
        })?;
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista)?;
    let server = ballista_scheduler::scheduler_process::create_scheduler::<
        LogicalPlanNode,
        PhysicalPlanNode,
    >(cluster, Arc::new(config))
    .await
    .map_err(ballista)?;
    println!(
        "ready: scheduler on {} (GET /readyz answers 200 once {} executor(s) have registered)",
        opts.bind, opts.min_executors
    );
    tokio::select! {
        served = ballista_scheduler::scheduler_process::start_grpc_service_with_listener(listener, server) => {
            served.map_err(ballista)
        }
        _ = stopped() => Ok(()),
    }
}

/// Run an executor until the process is stopped (it then finishes its tasks).
pub async fn executor(opts: ExecutorOptions) -> Result<()> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
    let (host, port) = crate::job::host_port(opts.scheduler.trim_start_matches("df://"))
        .map(|(h, p)| (h.to_string(), p))
        .ok_or_else(|| {
            bad_input!(
                "cluster executor --scheduler '{}': write HOST:PORT (the scheduler's --bind)",
                opts.scheduler
            )
        })?;
    for (flag, port) in [
        ("--bind", opts.bind.port()),
        ("--grpc-port", opts.grpc_port),
    ] {
        std::net::TcpListener::bind((opts.bind.ip(), port)).map_err(|e| {
            bad_input!(
                "cluster executor {flag}: cannot listen on {}:{port} ({e})",
                opts.bind.ip()
            )
        })?;
    }
    // Shuffle files are person-level rows: owner-only.
    crate::durable::create_private_dir(&opts.work_dir)?;
    let runtime = process_runtime(Some(&opts.work_dir))?;
    let registry = ballista_core::registry::BallistaFunctionRegistry::from(&process_state(
        config_producer()(),
        runtime.clone(),
    )?);
    let health = ballista_executor::health::ExecutorHealth::new();
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        external_host: opts.external_host.clone(),
        scheduler_host: host,
        scheduler_port: port,
        // Wait for a scheduler that is still starting.
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.concurrent_tasks.unwrap_or(0),
        work_dir: Some(opts.work_dir.to_string_lossy().into_owned()),
        memory_pool_size: opts.memory_limit.map(|b| b as u64),
        // Sweep jobs' files the scheduler did not remove (it stopped, or lost us).
        job_data_ttl_seconds: SWEPT_AFTER_SECONDS,
        job_data_clean_up_interval_seconds: 600,
        override_function_registry: Some(Arc::new(registry)),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| Ok(runtime.clone()))),
        override_config_producer: Some(config_producer()),
        health: health.clone(),
        ..Default::default()
    };
    let bind = opts.bind;
    let announce = tokio::spawn(async move {
        while !health.is_ready() {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        println!("ready: executor on {bind}, registered with the scheduler");
    });
    let result = start_executor_process(Arc::new(config))
        .await
        .map_err(ballista);
    announce.abort();
    result
}

/// SIGTERM or Ctrl-C.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn ballista(e: ballista_core::error::BallistaError) -> Error {
    Error::failed(format!("cluster: {e}"))
}

fn into_df(e: Error) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

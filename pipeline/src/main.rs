//! The `riskstrat` command line. Exit codes: 0 success, 1 run failed, 2 bad usage or
//! bad input.

use clap::{Parser, Subcommand};
use riskstrat::clock::Clock;
use riskstrat::error::{Error, Result};
use riskstrat::job::{Job, parse_date};
use riskstrat::synth::{SynthOptions, generate};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "riskstrat",
    version,
    about = "Find the people who most need joined-up care, from linked pseudonymised NHS data."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Synthesise a population, run the default job on it, and say where to look.
    Demo(DemoArgs),
    /// Write a synthetic population in the contract's pseudonymised tables, and a job file.
    Synth(SynthArgs),
    /// Run a job: validate, compute features and cohorts, write a run folder.
    Run(RunArgs),
    /// The data-quality report of a job's inputs, without running it.
    Validate(ValidateArgs),
    /// Identifiable extracts -> pseudonymised tables for the analysts + the encrypted
    /// identity vault (the gate operator; needs both keys).
    Pseudonymise(PseudonymiseArgs),
    /// The gate: a cohort's list, with names, for one care team under an approval.
    Reidentify(ReidentifyArgs),
    /// Print the feature registry as a Markdown table.
    Features,
    /// A commissioner query on a run's views, through disclosure control.
    Query(QueryArgs),
    /// Write a new random key file (64 hex characters, owner-only): a cell key
    /// secret, a pseudonymisation key or a vault key.
    Keygen { file: PathBuf },
    /// Print the commissioner views as a Markdown table.
    Views,
    /// Serve the newest run of each job to commissioners over Arrow Flight SQL
    /// (bearer tokens, disclosure control, audited, per-query limits).
    Serve(ServeArgs),
    /// Approve a care team to receive a cohort (the gate operator; recorded in the audit log).
    Approve(ApproveArgs),
    /// Care teams' feedback on the people they were sent.
    Feedback {
        #[command(subcommand)]
        command: FeedbackCommand,
    },
    /// A job's runs, oldest first: population, cohorts, model checks, changes.
    History(HistoryArgs),
    /// Entrants, leavers and tier transitions of each cohort between two runs of a job.
    Diff(DiffArgs),
    /// Write a run's report.html again, or the version for commissioners (built only
    /// from what disclosure control releases).
    Report(ReportArgs),
    /// Run jobs at the ticks of their [schedule]s until SIGTERM (logs to stderr).
    Schedule {
        /// Job files, each with a [schedule] section.
        #[arg(required = true)]
        jobs: Vec<PathBuf>,
    },
    /// Run every tick of a job's [schedule] between two dates, oldest first (ticks
    /// that already have a complete run are not run again).
    Backfill(BackfillArgs),
    /// The audit log of disclosures and approvals.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// An Apache Ballista cluster for jobs with a [cluster] section: its scheduler and
    /// executors, each a process of this binary.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// The scheduler: plans jobs' queries into tasks for the executors. Prints a
    /// `ready` line when it listens; GET /readyz on its port answers 200 once
    /// --min-executors executors have registered.
    Scheduler {
        /// IP address and port to listen on (gRPC and /readyz).
        #[arg(long)]
        bind: std::net::SocketAddr,
        /// Host name executors and clients reach it by (default: the bind address).
        #[arg(long)]
        external_host: Option<String>,
        /// Executors /readyz waits for.
        #[arg(long, default_value_t = 1)]
        min_executors: usize,
    },
    /// An executor: runs tasks for the scheduler. Prints a `ready` line once it has
    /// registered.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long)]
        scheduler: String,
        /// IP address and port of its Arrow Flight data service.
        #[arg(long)]
        bind: std::net::SocketAddr,
        /// Port of its gRPC service (on the bind address).
        #[arg(long)]
        grpc_port: u16,
        /// Host name other processes reach it by (default: the bind address).
        #[arg(long)]
        external_host: Option<String>,
        /// Folder for its shuffle files and spills (one per executor).
        #[arg(long)]
        work_dir: PathBuf,
        /// Tasks run at once (default: the number of cores).
        #[arg(long)]
        concurrent_tasks: Option<usize>,
        /// Its memory pool, e.g. 4GiB; tasks spill beyond it.
        #[arg(long)]
        memory_limit: Option<String>,
    },
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Folder for the synthetic data and the runs.
    #[arg(long, default_value = "demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 50_000)]
    patients: u64,
}

#[derive(clap::Args)]
struct SynthArgs {
    #[arg(long)]
    patients: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The extract date A (YYYY-MM-DD): history runs up to the day before.
    #[arg(long)]
    as_of: String,
    #[arg(long)]
    out: PathBuf,
    /// Write identifiable extracts (NHS numbers, names, addresses), keys and a
    /// care-team registry instead, for showing the gate's whole flow.
    #[arg(long)]
    identifiable: bool,
    /// The services' true effects, as rate ratios of emergency admissions while
    /// enrolled (e.g. VW01=0.8,CM01=1.0; default: no effect). Written with the
    /// truth to truth/service_effects.json, which `run` never reads.
    #[arg(long, default_value = "")]
    service_effect: String,
}

#[derive(clap::Args)]
struct RunArgs {
    job: PathBuf,
    /// Override the job's as_of date (YYYY-MM-DD).
    #[arg(long)]
    as_of: Option<String>,
    #[command(flatten)]
    no_keys: NoKeys,
}

#[derive(clap::Args)]
struct ValidateArgs {
    job: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    no_keys: NoKeys,
}

#[derive(clap::Args)]
struct PseudonymiseArgs {
    /// The pseudonymisation key file.
    #[arg(long)]
    key: PathBuf,
    /// Folder of identifiable extracts (<table>.parquet or <table>/ for each table).
    #[arg(long = "in")]
    input: PathBuf,
    /// Folder for the pseudonymised tables (replaced whole).
    #[arg(long)]
    out: PathBuf,
    /// The identity vault to write (encrypted Parquet).
    #[arg(long)]
    vault: PathBuf,
    /// The vault key file.
    #[arg(long)]
    vault_key: PathBuf,
    /// Gate-side folder for rows whose NHS number fails [default: beside the vault].
    #[arg(long)]
    quarantine: Option<PathBuf>,
    /// Use an opt-out extract with no rows (refused otherwise: it is almost always a
    /// failed extract, and would let every objector through).
    #[arg(long)]
    allow_empty_optouts: bool,
}

#[derive(clap::Args)]
struct ReidentifyArgs {
    /// The run folder the cohort comes from.
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    cohort: String,
    #[arg(long)]
    team: String,
    /// The team member asking (audited).
    #[arg(long)]
    requester: String,
    #[arg(long)]
    vault: PathBuf,
    #[arg(long)]
    vault_key: PathBuf,
    #[arg(long)]
    teams: PathBuf,
    #[arg(long)]
    audit: PathBuf,
    /// The list to write: FILE.csv and FILE.parquet.
    #[arg(long)]
    out: PathBuf,
    /// Only who entered and who left the team's list since its previous release of
    /// the cohort (a `change` column says which).
    #[arg(long)]
    changes: bool,
}

#[derive(clap::Args)]
struct QueryArgs {
    /// The run folder.
    #[arg(long)]
    run: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    format: riskstrat::serve::render::Format,
    /// One SELECT over the views (see `riskstrat views`).
    sql: String,
    /// Who is asking (audited).
    #[arg(long)]
    requester: String,
    /// The audit log each query (or refusal) is recorded in before anything is shown.
    #[arg(long)]
    audit: PathBuf,
    #[command(flatten)]
    cell_key: riskstrat::serve::CellKeyArg,
    #[command(flatten)]
    no_keys: NoKeys,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The run folder.
    run: PathBuf,
    /// Where to write the report [default: RUN_ID-report.html, or
    /// RUN_ID-commissioners.html with --for commissioners, in the current folder].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Who the report is for.
    #[arg(long = "for", value_enum, default_value = "analysts")]
    audience: Audience,
    /// Who asks for the commissioners' report (audited).
    #[arg(long, required_if_eq("audience", "commissioners"))]
    requester: Option<String>,
    /// The audit log the commissioners' report is recorded in before it is written.
    #[arg(long, required_if_eq("audience", "commissioners"))]
    audit: Option<PathBuf>,
    #[command(flatten)]
    cell_key: riskstrat::serve::CellKeyArg,
    #[command(flatten)]
    no_keys: NoKeys,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Audience {
    Analysts,
    Commissioners,
}

#[derive(clap::Args)]
struct HistoryArgs {
    /// The job's folder of runs: the job's `output` folder and its name
    /// (OUTPUT_DIR/JOB).
    job_runs: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct BackfillArgs {
    job: PathBuf,
    /// First day (YYYY-MM-DD, the schedule's local date).
    #[arg(long)]
    from: String,
    /// Last day (YYYY-MM-DD), included.
    #[arg(long)]
    to: String,
}

#[derive(clap::Args)]
struct DiffArgs {
    /// The earlier run folder.
    run_a: PathBuf,
    /// The later run folder.
    run_b: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct ApproveArgs {
    #[arg(long)]
    team: String,
    /// The job whose runs the approval covers (its `[job] name`).
    #[arg(long)]
    job: String,
    #[arg(long)]
    cohort: String,
    #[arg(long)]
    purpose: String,
    /// Last day the approval holds (YYYY-MM-DD).
    #[arg(long)]
    expires: String,
    #[arg(long)]
    approver: String,
    #[arg(long)]
    teams: PathBuf,
    #[arg(long)]
    audit: PathBuf,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// A job output folder ([job] output) holding <job>/<run_id>/ run folders; the
    /// newest complete run of each job is served, one schema per job.
    #[arg(long)]
    runs: PathBuf,
    /// The access file: [[token]] entries (sha256, name, role, jobs).
    #[arg(long)]
    access: PathBuf,
    /// host:port to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long)]
    listen: String,
    /// The query audit log [default: RUNS/serve-audit.jsonl].
    #[arg(long)]
    audit: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, clients connect with TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Seconds a query may take, planning and running, from when it gets a slot.
    #[arg(long, default_value = "30")]
    query_timeout: String,
    /// Memory one query may reserve (e.g. 512MiB), its answer included; beyond it the
    /// query fails.
    #[arg(long, default_value = "1GiB")]
    query_memory: String,
    /// Queries that may run at once, each on a thread of its own; others wait for a slot.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    max_concurrent_queries: u32,
    /// Seconds a query may wait for a slot before it is refused as busy.
    #[arg(long, default_value = "10")]
    queue_timeout: String,
    #[command(flatten)]
    cell_key: riskstrat::serve::CellKeyArg,
}

/// Keys belong to the gate. These options exist only to refuse them clearly.
#[derive(clap::Args)]
struct NoKeys {
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
    #[arg(long, hide = true)]
    vault: Option<PathBuf>,
    #[arg(long, hide = true)]
    vault_key: Option<PathBuf>,
}

impl NoKeys {
    fn refuse(&self, command: &str) -> Result<()> {
        let given = [
            ("--key", &self.key),
            ("--vault", &self.vault),
            ("--vault-key", &self.vault_key),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, v)| v.is_some()) {
            return Err(Error::bad_input(format!(
                "{command} never takes {flag}: analysts work on pseudonymised data only; keys and the vault stay with the gate (pseudonymise, reidentify, feedback import)"
            )));
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum FeedbackCommand {
    /// Pseudonymise a team's returned list (CSV: nhs_number, outcome) into FEEDBACK_DIR.
    Import(ImportArgs),
}

#[derive(clap::Args)]
struct ImportArgs {
    #[arg(long)]
    team: String,
    /// The team member importing it (audited).
    #[arg(long)]
    importer: String,
    #[arg(long = "in")]
    input: PathBuf,
    /// The pseudonymisation key file.
    #[arg(long)]
    key: PathBuf,
    /// The vault: feedback counts only for people it places at the team's practices.
    #[arg(long)]
    vault: PathBuf,
    #[arg(long)]
    vault_key: PathBuf,
    #[arg(long)]
    teams: PathBuf,
    #[arg(long)]
    audit: PathBuf,
    /// Folder of pseudonymised feedback, named as `feedback` under a job's [inputs].
    #[arg(long)]
    out: PathBuf,
    /// The day the team recorded these outcomes (YYYY-MM-DD) [default: today].
    #[arg(long)]
    recorded: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain: exit 0 if intact, 1 at the first broken link (saying
    /// whether a failed write tore the last record, which `repair` fixes, or records
    /// were tampered with).
    Verify { log: PathBuf },
    /// Remove a last record torn by a failed write (and only that); the repair is
    /// itself recorded in the log.
    Repair {
        log: PathBuf,
        /// The gate operator repairing it (audited).
        #[arg(long)]
        operator: String,
    },
}

/// `println!` that tolerates a closed stdout (`riskstrat reidentify ... | head`): the
/// work is done (and audited) by the time it is reported, and a panic (exit 101) would
/// read as a failure to retry (regression: a retried release). SIGPIPE stays ignored,
/// as Rust sets it: a default disposition would let any closed socket kill `serve`
/// or a cluster executor.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` as [`outln!`] prints lines.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Deep plans recurse when a cluster encodes and decodes them.
        .thread_stack_size(32 << 20)
        .build()
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(dispatch(cli.command)));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

/// Log to stderr as `RISKSTRAT_LOG` says (default `riskstrat=info,warn`), except
/// that other crates never log below INFO: their debug output quotes data (DataFusion's
/// pruning predicates hold pseudo_ids; regression: `RISKSTRAT_LOG=debug reidentify`
/// printed the cohort's).
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let env = tracing_subscriber::EnvFilter::try_from_env("RISKSTRAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("riskstrat=info,warn"));
    // Static targets, not a closure: decided once per call site, so a debug! in a
    // dependency's hot loop costs nothing (a closure made every one a dynamic check).
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("riskstrat", tracing::level_filters::LevelFilter::TRACE)
        .with_default(tracing::level_filters::LevelFilter::INFO);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(riskstrat::progress::interactive())
        .with_filter(env)
        .with_filter(ours);
    tracing_subscriber::registry().with(layer).init();
}

/// Each command is one call to its entry function below.
async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Demo(a) => riskstrat::demo::demo(&a.out, a.patients).await,
        Command::Synth(a) => synth(a).await,
        Command::Run(a) => run(a).await,
        Command::Validate(a) => validate(a).await,
        Command::Pseudonymise(a) => pseudonymise(a).await,
        Command::Reidentify(a) => reidentify(a).await,
        Command::Features => {
            out!("{}", riskstrat::features::registry::markdown());
            Ok(())
        }
        Command::Query(a) => query(a).await,
        Command::Keygen { file } => keygen(&file),
        Command::Views => {
            out!("{}", riskstrat::serve::views::markdown());
            Ok(())
        }
        Command::Serve(a) => serve(a).await,
        Command::Approve(a) => approve(a),
        Command::History(a) => history(a).await,
        Command::Diff(a) => diff(a).await,
        Command::Report(a) => report(a).await,
        Command::Backfill(a) => backfill(a).await,
        Command::Schedule { jobs } => riskstrat::scheduler::schedule(&jobs, Clock::system()).await,
        Command::Feedback {
            command: FeedbackCommand::Import(a),
        } => feedback_import(a),
        Command::Audit {
            command: AuditCommand::Verify { log },
        } => audit_verify(&log),
        Command::Audit {
            command: AuditCommand::Repair { log, operator },
        } => audit_repair(&log, &operator),
        Command::Cluster { command } => cluster(command).await,
    }
}

/// `cluster scheduler|executor`: a process of a Ballista cluster, until stopped.
async fn cluster(command: ClusterCommand) -> Result<()> {
    use riskstrat::cluster::{ExecutorOptions, SchedulerOptions};
    match command {
        ClusterCommand::Scheduler {
            bind,
            external_host,
            min_executors,
        } => {
            riskstrat::cluster::scheduler(SchedulerOptions {
                bind,
                external_host,
                min_executors,
            })
            .await
        }
        ClusterCommand::Executor {
            scheduler,
            bind,
            grpc_port,
            external_host,
            work_dir,
            concurrent_tasks,
            memory_limit,
        } => {
            let memory_limit = memory_limit
                .as_deref()
                .map(riskstrat::job::parse_bytes)
                .transpose()
                .map_err(|e| e.context("cluster executor --memory-limit"))?;
            riskstrat::cluster::executor(ExecutorOptions {
                scheduler,
                bind,
                grpc_port,
                external_host,
                work_dir,
                concurrent_tasks,
                memory_limit,
            })
            .await
        }
    }
}

/// `history OUTPUT_DIR/JOB`: the job's complete runs, oldest first.
/// `report`: a run's report, for analysts (every section, from the run folder and the
/// job's history) or for commissioners (through disclosure control).
async fn report(a: ReportArgs) -> Result<()> {
    a.no_keys.refuse("report")?;
    let handle = riskstrat::outputs::run_store::RunHandle::at(&a.run)?;
    let manifest = handle.manifest().await?;
    let id = manifest.run_id.clone();
    let (html, name) = match a.audience {
        Audience::Analysts => {
            // The job's other runs sit beside this one; without them, no history.
            let history = match job_runs(a.run.parent().unwrap_or(&a.run)) {
                Ok((store, job, state)) => {
                    riskstrat::history::history(&store, &job, state.as_deref())
                        .await
                        .unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            let inputs = riskstrat::report::gather(&handle, manifest, history).await?;
            (
                riskstrat::report::analyst(&inputs),
                format!("{id}-report.html"),
            )
        }
        Audience::Commissioners => {
            let secret = a.cell_key.load(a.run.parent().unwrap_or(&a.run))?;
            let html = riskstrat::report::commissioners::render(&handle, &secret).await?;
            audit_commissioners_report(&a, &id, &html)?;
            (html, format!("{id}-commissioners.html"))
        }
    };
    let out = a.out.unwrap_or_else(|| PathBuf::from(name));
    riskstrat::durable::write_file(&out, html.as_bytes())
        .map_err(|e| Error::bad_input(format!("--out {}: {}", out.display(), e.message)))?;
    outln!("{}", out.display());
    Ok(())
}

/// The commissioners' report is a disclosure like any answer to a query: audited, with
/// the queries it asked, before it is written (regression: it was not audited).
fn audit_commissioners_report(a: &ReportArgs, run_id: &str, html: &str) -> Result<()> {
    use riskstrat::governance::audit::{self, Action, Record};
    use sha2::{Digest, Sha256};
    let (Some(requester), Some(log)) = (&a.requester, &a.audit) else {
        return Err(Error::bad_input(
            "report --for commissioners needs --requester and --audit",
        ));
    };
    let queries: Vec<&str> = riskstrat::report::commissioners::QUERIES
        .iter()
        .map(|(_, sql)| *sql)
        .collect();
    let record = Record {
        actor: requester.clone(),
        action: Action::Query,
        run: Some(run_id.to_string()),
        query: Some(queries.join(";\n")),
        // A copy found later can be matched to its record.
        file_sha256: Some(hex::encode(Sha256::digest(html.as_bytes()))),
        detail: Some("report --for commissioners".into()),
        ..Default::default()
    };
    audit::append(log, record).map_err(|e| {
        e.context("--audit: the report could not be audited, so it was not written")
    })?;
    Ok(())
}

/// `OUTPUT/JOB` (a folder or a URL): the run store, the job's name and, for a local
/// folder, the job's scheduler state (in that folder).
fn job_runs(
    p: &Path,
) -> Result<(
    riskstrat::outputs::run_store::RunStore,
    String,
    Option<PathBuf>,
)> {
    use riskstrat::outputs::run_store::{RunStore, store_url};
    let text = p.to_string_lossy();
    let text = text.trim_end_matches('/');
    let not_job = || {
        Error::bad_input(format!(
            "{text} is not OUTPUT/JOB (a job's folder of runs); give the job's output folder and its name, as in runs/complex-needs or s3://bucket/runs/complex-needs"
        ))
    };
    if store_url(p).is_some() {
        let (output, job) = text.rsplit_once('/').ok_or_else(not_job)?;
        if !output.contains("://") || output.ends_with(':') || output.ends_with("://") {
            return Err(not_job());
        }
        return Ok((RunStore::at(Path::new(output))?, job.to_string(), None));
    }
    let (Some(dir), Some(job)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Err(not_job());
    };
    if !p.is_dir() {
        return Err(Error::bad_input(format!(
            "{} is not a folder; give the job's output folder and its name, as in runs/complex-needs",
            p.display()
        )));
    }
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Ok((RunStore::local(dir), job.to_string(), Some(p.to_path_buf())))
}

/// The folders inside `dir` that hold a job's runs or its schedule's state.
fn job_folders_in(dir: &Path) -> Vec<String> {
    let holds_runs = |job: &Path| {
        riskstrat::scheduler::log_path(job).exists()
            || std::fs::read_dir(job)
                .into_iter()
                .flatten()
                .flatten()
                .any(|run| run.path().join("manifest.json").is_file())
    };
    let mut jobs: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir() && holds_runs(&e.path()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    jobs.sort();
    jobs
}

async fn history(a: HistoryArgs) -> Result<()> {
    let (store, job, state) = job_runs(&a.job_runs).map_err(|e| e.context("history"))?;
    let rows = riskstrat::history::history(&store, &job, state.as_deref()).await?;
    // Regression: the output folder given without the job's name printed an empty
    // table, as if the job had never run.
    let jobs = state.as_deref().map(job_folders_in).unwrap_or_default();
    if rows.is_empty() && !jobs.is_empty() {
        return Err(Error::bad_input(format!(
            "history: {} holds no runs of its own but the job folders {}; give one of them, as in {}",
            a.job_runs.display(),
            jobs.join(", "),
            a.job_runs.join(&jobs[0]).display()
        )));
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        out!("{}", riskstrat::history::render(&rows));
    }
    Ok(())
}

/// `backfill JOB --from --to`: one line per tick; exit 1 when a tick failed every
/// attempt (the others still ran).
async fn backfill(a: BackfillArgs) -> Result<()> {
    let from = parse_date(&a.from, "--from")?;
    let to = parse_date(&a.to, "--to")?;
    let r = riskstrat::scheduler::backfill(&a.job, from, to, Clock::system()).await?;
    for (tick, run) in &r.already {
        outln!("{tick}\talready run\t{run}");
    }
    for (tick, run) in &r.ran {
        outln!("{tick}\tran\t{run}");
    }
    for (tick, _) in &r.failed {
        outln!("{tick}\tfailed (see the job's .schedule.jsonl)");
    }
    if let Some((tick, e)) = r.failed.last() {
        return Err(Error::failed(format!(
            "backfill: {} of {} ticks failed every attempt; the last, {tick}: {e}",
            r.failed.len(),
            r.failed.len() + r.ran.len() + r.already.len()
        )));
    }
    Ok(())
}

/// `diff RUN_A RUN_B`: each cohort's changes from the earlier run to the later.
async fn diff(a: DiffArgs) -> Result<()> {
    let (earlier, later) = (complete_run(&a.run_a).await?, complete_run(&a.run_b).await?);
    let diffs = riskstrat::changes::diff(&earlier, &later).await?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&diffs)?);
    } else {
        out!("{}", riskstrat::changes::render(&diffs));
    }
    Ok(())
}

async fn complete_run(p: &Path) -> Result<riskstrat::outputs::run_store::RunHandle> {
    let run = riskstrat::outputs::run_store::RunHandle::at(p)?;
    if !run.exists("manifest.json").await {
        return Err(Error::bad_input(format!(
            "diff: {} is not a complete run folder (no manifest.json)",
            p.display()
        )));
    }
    Ok(run)
}

/// `synth`: a synthetic population and its job file; prints the counts and the job
/// file's path.
async fn synth(a: SynthArgs) -> Result<()> {
    let as_of = parse_date(&a.as_of, "--as-of")?;
    let opts = SynthOptions {
        patients: a.patients,
        seed: a.seed,
        as_of,
        out: a.out,
        identifiable: a.identifiable,
        service_effects: riskstrat::synth::ServiceEffects::parse(&a.service_effect)?,
    };
    let s = tokio::task::spawn_blocking(move || generate(&opts))
        .await
        .map_err(|e| Error::failed(e.to_string()).with_source(e))??;
    outln!(
        "wrote {} patients, {} appointments, {} prescriptions, {} admissions, {} opt-out rows, {} service enrolments",
        s.patients,
        s.appointments,
        s.prescriptions,
        s.admissions,
        s.optouts,
        s.services
    );
    outln!("{}", s.job_file.display());
    Ok(())
}

/// `run`: one run of a job; prints the run folder, the population and cohorts to
/// stderr.
async fn run(a: RunArgs) -> Result<()> {
    a.no_keys.refuse("run")?;
    let job = Job::load(&a.job, a.as_of.as_deref())?;
    let outcome = riskstrat::run::run(&job).await?;
    let m = &outcome.manifest;
    eprintln!(
        "population {} at {}; cohorts: {}",
        m.population,
        m.as_of,
        m.cohorts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(t) = &m.temporal_validation {
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
        eprintln!(
            "saved model on the newest outcome year: AUC {} (fitted {}), calibration slope {}",
            num(t.auc),
            num(t.fitted_auc),
            num(t.calibration_slope)
        );
        if t.refit {
            eprintln!("refit: {}", t.refit_reasons.join("; "));
        }
    }
    outln!("{}", outcome.dir.display());
    Ok(())
}

/// `validate`: the data-quality report of a job's inputs, as text or JSON.
async fn validate(a: ValidateArgs) -> Result<()> {
    a.no_keys.refuse("validate")?;
    let job = Job::load(&a.job, None)?;
    let report = async {
        let rc = riskstrat::run::context::RunContext::checking(&job, Clock::system()).await?;
        let report = async {
            let loaded =
                riskstrat::run::stages::load(&rc, riskstrat::run::stages::Checks::Now).await?;
            riskstrat::quality::report(&rc.ctx, &loaded.inputs, &loaded.counts, job.as_of).await
        }
        .await;
        let cleaned = riskstrat::session::cluster::clean(&rc.ctx).await;
        let report = report?;
        cleaned.map(|()| report)
    }
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => return Err(riskstrat::ingest::name_damaged_input(&job.inputs, e).await),
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", report.to_text());
    }
    Ok(())
}

/// `pseudonymise` (the gate operator): identifiable extracts to pseudonymised tables
/// and the vault; prints counts per table, never an identifier.
async fn pseudonymise(a: PseudonymiseArgs) -> Result<()> {
    use riskstrat::pseudonymise::{Request, pseudonymise};
    let s = pseudonymise(&Request {
        input: &a.input,
        out: &a.out,
        key_path: &a.key,
        vault: &a.vault,
        vault_key_path: &a.vault_key,
        quarantine: a.quarantine.as_deref(),
        allow_empty_optouts: a.allow_empty_optouts,
    })
    .await?;
    for (table, t) in &s.tables {
        let q = t.reasons();
        outln!(
            "{table}: {} rows read, {} written, {} withheld (opt-outs), {} quarantined{}",
            t.rows_read,
            t.rows_written,
            t.rows_withheld_optout,
            t.quarantined.values().sum::<u64>(),
            if q.is_empty() {
                String::new()
            } else {
                format!(" ({q})")
            }
        );
    }
    outln!("vault: {} people", s.vault_patients);
    if s.quarantined_total() > 0 {
        outln!("quarantine (gate side): {}", s.quarantine_dir.display());
    }
    outln!("{}", a.out.display());
    Ok(())
}

/// `reidentify` (the gate): a cohort's list with names for one team under an
/// approval; prints counts and the files written.
async fn reidentify(a: ReidentifyArgs) -> Result<()> {
    use riskstrat::gate::{Request, reidentify};
    let registry = riskstrat::governance::teams::Registry::load(&a.teams)?;
    let (cohort, team) = (&a.cohort, &a.team);
    let r = reidentify(&Request {
        run: &a.run,
        cohort,
        team,
        requester: &a.requester,
        vault: &a.vault,
        vault_key_path: &a.vault_key,
        registry: &registry,
        audit_log: &a.audit,
        out: &a.out,
        today: chrono::Utc::now().date_naive(),
        changes: a.changes,
    })
    .await?;
    match &r.changes {
        None => outln!(
            "released {} people of cohort {cohort} to team {team} (audit record {})",
            r.patients,
            r.audit_seq
        ),
        Some(c) => outln!(
            "released the changes to cohort {cohort} for team {team} since its list of audit record {} (run {}): {} entered, {} left (audit record {})",
            c.compared_with,
            c.earlier_run,
            c.entered,
            c.left,
            r.audit_seq
        ),
    }
    if r.not_in_vault > 0 {
        outln!(
            "  {} cohort members at the team's practices are not in the vault (opted out since, or not in this vault): not released",
            r.not_in_vault
        );
    }
    if r.practice_differs > 0 {
        eprintln!(
            "warning: {} cohort members are registered, by the vault's record, at a practice other than the run's: not released. Either the vault is older than the extract the run read (run pseudonymise again) or the run's files were altered",
            r.practice_differs
        );
    }
    outln!("{}", r.csv.display());
    outln!("{}", r.parquet.display());
    Ok(())
}

/// `serve`: the newest run of each job over Flight SQL, under the query limits
/// given.
async fn serve(a: ServeArgs) -> Result<()> {
    let limits = riskstrat::serve::limits::Limits {
        time: parse_seconds(&a.query_timeout, "--query-timeout")?,
        memory: match riskstrat::job::parse_bytes(&a.query_memory) {
            Ok(0) => return Err(riskstrat::bad_input!("--query-memory must be more than 0")),
            Ok(n) => n,
            Err(e) => return Err(e.context("--query-memory")),
        },
        memory_text: a.query_memory.clone(),
        concurrent: a.max_concurrent_queries as usize,
        queue: parse_seconds(&a.queue_timeout, "--queue-timeout")?,
    };
    riskstrat::serve::flight::serve(riskstrat::serve::flight::ServeConfig {
        runs: a.runs,
        access: a.access,
        listen: a.listen,
        audit: a.audit,
        tls: a.tls_cert.zip(a.tls_key),
        limits,
        cell_key: a.cell_key,
    })
    .await
}

/// Seconds above 0, for a flag.
fn parse_seconds(s: &str, flag: &str) -> Result<Duration> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && *x > 0.0)
        .and_then(|x| Duration::try_from_secs_f64(x).ok())
        .ok_or_else(|| {
            riskstrat::bad_input!("{flag} {s}: give a number of seconds above 0, e.g. 30")
        })
}

/// `keygen`: a new random key file; never overwrites one.
fn keygen(file: &Path) -> Result<()> {
    if file.exists() {
        return Err(riskstrat::bad_input!(
            "keygen {}: already exists; a key is never overwritten (remove it yourself if it is really unused)",
            file.display()
        ));
    }
    riskstrat::governance::pseudonym::Key::random().write_file(file)?;
    eprintln!("wrote a new key to {} (owner-only)", file.display());
    Ok(())
}

/// `query`: one commissioner query on a run, through disclosure control.
async fn query(a: QueryArgs) -> Result<()> {
    a.no_keys.refuse("query")?;
    let run = a.run;
    let secret = a.cell_key.load(run.parent().unwrap_or(&run))?;
    let policy = riskstrat::governance::disclosure_control::Policy::default();
    let run_id = run.file_name().map(|n| n.to_string_lossy().into_owned());
    let c = riskstrat::serve::Commissioner::open(&[run], policy, &secret).await?;
    let answer = c.query(&a.sql).await;
    // Every disclosure is audited, as `serve`'s are: no record, nothing shown.
    use riskstrat::governance::audit::{self, Action, Record};
    let (action, rows, detail) = match &answer {
        Ok(answer) => (Action::Query, Some(answer.rows as u64), None),
        Err(e) => (Action::Refuse, None, Some(e.message.clone())),
    };
    let record = Record {
        actor: a.requester,
        action,
        run: run_id,
        query: Some(a.sql),
        rows,
        detail,
        ..Default::default()
    };
    audit::append(&a.audit, record)
        .map_err(|e| e.context("--audit: the query could not be audited, so nothing is shown"))?;
    out!("{}", riskstrat::serve::render::render(&answer?, a.format)?);
    Ok(())
}

/// `approve` (the gate operator): a team may receive a cohort for a purpose until a
/// day; recorded in the audit log.
fn approve(a: ApproveArgs) -> Result<()> {
    use riskstrat::governance::teams::{Approval, Registry, approve};
    let registry = Registry::load(&a.teams)?;
    let approval = Approval {
        team: a.team,
        job: Some(a.job),
        cohort: a.cohort,
        purpose: a.purpose,
        expires: parse_date(&a.expires, "--expires")?,
        approver: a.approver,
    };
    let r = approve(
        &registry,
        &a.audit,
        &approval,
        chrono::Utc::now().date_naive(),
    )?;
    outln!(
        "approved: team {} may receive cohort {} of job {} for {} until {} (audit record {})",
        approval.team,
        approval.cohort,
        approval.job.as_deref().unwrap_or_default(),
        approval.purpose,
        approval.expires,
        r.seq
    );
    Ok(())
}

/// `feedback import` (the gate): a team's returned list, pseudonymised; prints
/// counts by outcome and the lines not imported.
fn feedback_import(a: ImportArgs) -> Result<()> {
    use riskstrat::feedback::{ImportRequest, import};
    use riskstrat::governance::pseudonym::Key;
    let registry = riskstrat::governance::teams::Registry::load(&a.teams)?;
    let k = Key::read_file(&a.key)?;
    let vault = riskstrat::governance::vault::read(&a.vault, &Key::read_file(&a.vault_key)?)?;
    let team = &a.team;
    let s = import(&ImportRequest {
        team,
        importer: &a.importer,
        input: &a.input,
        key: &k,
        key_path: &a.key,
        vault: &vault,
        registry: &registry,
        out_dir: &a.out,
        audit_log: &a.audit,
        recorded: match a.recorded {
            Some(d) => parse_date(&d, "--recorded")?,
            None => chrono::Utc::now().date_naive(),
        },
    })?;
    let outcomes: Vec<String> = s
        .by_outcome
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    outln!(
        "imported {} of {} rows from team {team}: {}",
        s.imported,
        s.rows,
        outcomes.join(", ")
    );
    for (line, reason) in &s.rejected {
        outln!("  line {line} not imported: {reason}");
    }
    outln!("{}", s.file.display());
    Ok(())
}

/// `audit verify`: exit 0 with the record count if the chain is intact, else 1.
fn audit_verify(log: &Path) -> Result<()> {
    let records = riskstrat::governance::audit::check(log)
        .map_err(|e| Error::failed(e.message.clone()).with_source(e))?
        .map_err(|d| Error::failed(format!("audit log {}: {d}", log.display())))?;
    let last = records
        .last()
        .map_or(riskstrat::governance::audit::GENESIS, |r| r.sha256.as_str());
    outln!(
        "{}: {} records, chain intact; last sha256 {last}",
        log.display(),
        records.len()
    );
    Ok(())
}

/// `audit repair`: removes a last record torn by a failed write, and records that.
fn audit_repair(log: &Path, operator: &str) -> Result<()> {
    match riskstrat::governance::audit::repair(log, operator)? {
        None => outln!("{}: chain intact; nothing to repair", log.display()),
        Some(r) => outln!(
            "{}: removed an incomplete last record ({} bytes); the repair is audit record {}",
            log.display(),
            r.removed_bytes,
            r.record.seq
        ),
    }
    Ok(())
}

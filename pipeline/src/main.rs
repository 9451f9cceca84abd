//! The `riskstrat` command line. Exit codes: 0 success, 1 run failed, 2 bad usage or
//! bad input.

use clap::{Parser, Subcommand};
use riskstrat::error::{Error, Result};
use riskstrat::job::{Job, parse_date};
use riskstrat::synth::{SynthOptions, generate};
use std::path::PathBuf;

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
    Demo {
        /// Folder for the synthetic data and the runs.
        #[arg(long, default_value = "demo")]
        out: PathBuf,
        #[arg(long, default_value_t = 50_000)]
        patients: u64,
    },
    /// Write a synthetic population in the contract's pseudonymised tables, and a job file.
    Synth {
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
    },
    /// Run a job: validate, compute features and cohorts, write a run folder.
    Run {
        job: PathBuf,
        /// Override the job's as_of date (YYYY-MM-DD).
        #[arg(long)]
        as_of: Option<String>,
        #[command(flatten)]
        no_keys: NoKeys,
    },
    /// The data-quality report of a job's inputs, without running it.
    Validate {
        job: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        no_keys: NoKeys,
    },
    /// Identifiable extracts -> pseudonymised tables for the analysts + the encrypted
    /// identity vault (the gate operator; needs both keys).
    Pseudonymise {
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
    },
    /// The gate: a cohort's list, with names, for one care team under an approval.
    Reidentify {
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
    },
    /// Print the feature registry as a Markdown table.
    Features,
    /// A commissioner query on a run's views, through disclosure control.
    Query {
        /// The run folder.
        #[arg(long)]
        run: PathBuf,
        #[arg(long, value_enum, default_value = "table")]
        format: riskstrat::serve::render::Format,
        /// One SELECT over the views (see `riskstrat views`).
        sql: String,
        #[command(flatten)]
        cell_key: riskstrat::serve::CellKeyArg,
        #[command(flatten)]
        no_keys: NoKeys,
    },
    /// Write a new random key file (64 hex characters, owner-only): a cell key
    /// secret, a pseudonymisation key or a vault key.
    Keygen { file: PathBuf },
    /// Print the commissioner views as a Markdown table.
    Views,
    /// Serve the newest run of each job to commissioners over Arrow Flight SQL
    /// (bearer tokens, disclosure control, audited, per-query limits).
    Serve(riskstrat::serve::flight::ServeArgs),
    /// Approve a care team to receive a cohort (the gate operator; recorded in the audit log).
    Approve {
        #[arg(long)]
        team: String,
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
    },
    /// Care teams' feedback on the people they were sent.
    Feedback {
        #[command(subcommand)]
        command: FeedbackCommand,
    },
    /// The audit log of disclosures and approvals.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
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
    Import {
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
    },
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

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RISKSTRAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("riskstrat=info,warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(riskstrat::progress::interactive())
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::from)
        .and_then(|rt| rt.block_on(dispatch(cli.command)));
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}

async fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Synth {
            patients,
            seed,
            as_of,
            out,
            identifiable,
            service_effect,
        } => {
            let as_of = parse_date(&as_of, "--as-of")?;
            let opts = SynthOptions {
                patients,
                seed,
                as_of,
                out,
                identifiable,
                service_effects: riskstrat::synth::ServiceEffects::parse(&service_effect)?,
            };
            let s = tokio::task::spawn_blocking(move || generate(&opts))
                .await
                .map_err(|e| Error::failed(e.to_string()))??;
            println!(
                "wrote {} patients, {} appointments, {} prescriptions, {} admissions, {} opt-out rows, {} service enrolments",
                s.patients, s.appointments, s.prescriptions, s.admissions, s.optouts, s.services
            );
            println!("{}", s.job_file.display());
        }
        Command::Run {
            job,
            as_of,
            no_keys,
        } => {
            no_keys.refuse("run")?;
            let job = Job::load(&job, as_of.as_deref())?;
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
            println!("{}", outcome.dir.display());
        }
        Command::Validate { job, json, no_keys } => {
            no_keys.refuse("validate")?;
            let job = Job::load(&job, None)?;
            let mut progress = riskstrat::progress::Progress::new();
            let report = async {
                let loaded = riskstrat::run::load(&job, &mut progress, None).await?;
                riskstrat::quality::report(&loaded.ctx, &loaded.inputs, &loaded.counts, job.as_of)
                    .await
            }
            .await;
            let report = match report {
                Ok(r) => r,
                Err(e) => return Err(riskstrat::ingest::name_damaged_input(&job.inputs, e).await),
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
        }
        Command::Pseudonymise {
            key,
            input,
            out,
            vault,
            vault_key,
            quarantine,
        } => {
            use riskstrat::governance::pseudonymise::{Request, pseudonymise};
            let s = pseudonymise(&Request {
                input: &input,
                out: &out,
                key_path: &key,
                vault: &vault,
                vault_key_path: &vault_key,
                quarantine: quarantine.as_deref(),
            })
            .await?;
            for (table, t) in &s.tables {
                let q: Vec<String> = t
                    .quarantined
                    .iter()
                    .map(|(r, n)| format!("{r} {n}"))
                    .collect();
                println!(
                    "{table}: {} rows read, {} written, {} withheld (opt-outs), {} quarantined{}",
                    t.rows_read,
                    t.rows_written,
                    t.rows_withheld_optout,
                    t.quarantined.values().sum::<u64>(),
                    if q.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", q.join(", "))
                    }
                );
            }
            println!("vault: {} people", s.vault_patients);
            if s.quarantined_total() > 0 {
                println!("quarantine (gate side): {}", s.quarantine_dir.display());
            }
            println!("{}", out.display());
        }
        Command::Reidentify {
            run,
            cohort,
            team,
            requester,
            vault,
            vault_key,
            teams,
            audit,
            out,
        } => {
            use riskstrat::governance::gate::{Request, reidentify};
            let registry = riskstrat::governance::teams::Registry::load(&teams)?;
            let r = reidentify(&Request {
                run: &run,
                cohort: &cohort,
                team: &team,
                requester: &requester,
                vault: &vault,
                vault_key_path: &vault_key,
                registry: &registry,
                audit_log: &audit,
                out: &out,
                today: chrono::Utc::now().date_naive(),
            })
            .await?;
            println!(
                "released {} people of cohort {cohort} to team {team} (audit record {})",
                r.patients, r.audit_seq
            );
            if r.not_in_vault > 0 {
                println!(
                    "  {} cohort members at the team's practices are not in the vault (opted out since, or not in this vault): not released",
                    r.not_in_vault
                );
            }
            println!("{}", r.csv.display());
            println!("{}", r.parquet.display());
        }
        Command::Demo { out, patients } => riskstrat::demo::demo(&out, patients).await?,
        Command::Features => print!("{}", riskstrat::features::registry::markdown()),
        Command::Views => print!("{}", riskstrat::serve::views::markdown()),
        Command::Serve(args) => riskstrat::serve::flight::serve(args).await?,
        Command::Keygen { file } => {
            if file.exists() {
                return Err(riskstrat::bad_input!(
                    "keygen {}: already exists; a key is never overwritten (remove it yourself if it is really unused)",
                    file.display()
                ));
            }
            riskstrat::governance::pseudonym::Key::random().write_file(&file)?;
            eprintln!("wrote a new key to {} (owner-only)", file.display());
        }
        Command::Query {
            run,
            format,
            sql,
            cell_key,
            no_keys,
        } => {
            no_keys.refuse("query")?;
            let secret = cell_key.load(run.parent().unwrap_or(&run))?;
            let policy = riskstrat::governance::disclosure_control::Policy::default();
            let c = riskstrat::serve::Commissioner::open(&[run], policy, &secret).await?;
            let answer = c.query(&sql).await?;
            print!("{}", riskstrat::serve::render::render(&answer, format)?);
        }
        Command::Approve {
            team,
            cohort,
            purpose,
            expires,
            approver,
            teams,
            audit,
        } => {
            use riskstrat::governance::teams::{Approval, Registry, approve};
            let registry = Registry::load(&teams)?;
            let approval = Approval {
                team,
                cohort,
                purpose,
                expires: parse_date(&expires, "--expires")?,
                approver,
            };
            let r = approve(
                &registry,
                &audit,
                &approval,
                chrono::Utc::now().date_naive(),
            )?;
            println!(
                "approved: team {} may receive cohort {} for {} until {} (audit record {})",
                approval.team, approval.cohort, approval.purpose, approval.expires, r.seq
            );
        }
        Command::Feedback {
            command:
                FeedbackCommand::Import {
                    team,
                    importer,
                    input,
                    key,
                    teams,
                    audit,
                    out,
                    recorded,
                },
        } => {
            use riskstrat::governance::feedback::{ImportRequest, import};
            use riskstrat::governance::pseudonym::Key;
            let registry = riskstrat::governance::teams::Registry::load(&teams)?;
            let k = Key::read_file(&key)?;
            let s = import(&ImportRequest {
                team: &team,
                importer: &importer,
                input: &input,
                key: &k,
                key_path: &key,
                registry: &registry,
                out_dir: &out,
                audit_log: &audit,
                recorded: match recorded {
                    Some(d) => parse_date(&d, "--recorded")?,
                    None => chrono::Utc::now().date_naive(),
                },
            })?;
            let outcomes: Vec<String> = s
                .by_outcome
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!(
                "imported {} of {} rows from team {team}: {}",
                s.imported,
                s.rows,
                outcomes.join(", ")
            );
            for (line, reason) in &s.rejected {
                println!("  line {line} not imported: {reason}");
            }
            println!("{}", s.file.display());
        }
        Command::Audit {
            command: AuditCommand::Verify { log },
        } => {
            let records = riskstrat::governance::audit::check(&log)
                .map_err(|e| Error::failed(e.message))?
                .map_err(|d| Error::failed(format!("audit log {}: {d}", log.display())))?;
            let last = records
                .last()
                .map_or(riskstrat::governance::audit::GENESIS, |r| r.sha256.as_str());
            println!(
                "{}: {} records, chain intact; last sha256 {last}",
                log.display(),
                records.len()
            );
        }
        Command::Audit {
            command: AuditCommand::Repair { log, operator },
        } => match riskstrat::governance::audit::repair(&log, &operator)? {
            None => println!("{}: chain intact; nothing to repair", log.display()),
            Some(r) => println!(
                "{}: removed an incomplete last record ({} bytes); the repair is audit record {}",
                log.display(),
                r.removed_bytes,
                r.record.seq
            ),
        },
    }
    Ok(())
}

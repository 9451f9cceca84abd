//! Running a job's scheduled ticks: `schedule` runs them as the clock reaches them,
//! `backfill` every tick of a date range, oldest first. A tick's run key is the job
//! and the tick's instant; the manifest of its run holds the key, so a tick with a
//! complete run is never run again. One process at a time runs a job's ticks (an
//! exclusive lock on `<output>/<job>/.schedule.lock`: `backfill` holds it throughout,
//! `schedule` for each tick, so two schedulers of one job take turns and the second
//! finds each tick already handled), and every attempt, failed or not, is appended to
//! `<output>/<job>/.schedule.jsonl`, with a `started` line before each run so that a
//! scheduler restarted after a crash runs the interrupted tick again.

use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::job::Job;
use crate::outputs::manifest::{ChangeCounts, Manifest};
use crate::outputs::run_store::RunStore;
use crate::schedule::{Missed, Schedule, Tick};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How one attempt at a tick ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// A run begun (no run folder yet); followed by how it ended unless the process died.
    Started,
    Complete,
    Failed,
    Skipped,
}

impl AttemptStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Started => "started",
            AttemptStatus::Complete => "complete",
            AttemptStatus::Failed => "failed",
            AttemptStatus::Skipped => "skipped",
        }
    }
}

/// One line of `.schedule.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub tick: String,
    #[serde(with = "crate::outputs::manifest::iso_date")]
    pub as_of: NaiveDate,
    /// 1 for the first attempt at a tick.
    pub attempt: u32,
    pub status: AttemptStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "crate::outputs::manifest::rfc3339")]
    pub started_utc: DateTime<Utc>,
    #[serde(with = "crate::outputs::manifest::rfc3339")]
    pub finished_utc: DateTime<Utc>,
}

/// The attempts log of a job's ticks, in its local state folder
/// ([`crate::job::Output::state_dir`]).
pub fn log_path(state: &Path) -> PathBuf {
    state.join(".schedule.jsonl")
}

/// Every attempt recorded for a job, in the order made. A last line torn by a crash
/// is ignored.
pub fn attempts(state: &Path) -> Result<Vec<Attempt>> {
    let path = log_path(state);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::durable::io_at(&path, "reading")(e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn record(state: &Path, a: &Attempt) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = log_path(state);
    // The owner's only: an attempt's error names the job's files and settings.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(crate::durable::io_at(&path, "opening"))?;
    let mut line = serde_json::to_vec(a)?;
    line.push(b'\n');
    // A last line torn by a crash part way through an append is cut off first: the
    // record written after it would join it and be lost (regression). Under an
    // exclusive lock, as two schedulers of a job may record at once (one skipping a
    // tick outside the job's lease): neither cuts a line the other is writing.
    let mut bytes = Vec::new();
    f.lock()
        .and_then(|_| f.read_to_end(&mut bytes))
        .and_then(|_| {
            let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if whole < bytes.len() {
                f.set_len(whole as u64)?;
            }
            f.write_all(&line)?;
            f.sync_data()
        })
        .map_err(crate::durable::io_at(&path, "appending to"))
}

/// What a backfill did, tick by tick.
#[derive(Debug, Default)]
pub struct Report {
    /// Ticks run to a complete run: (tick key, run id).
    pub ran: Vec<(String, String)>,
    /// Ticks that already had a complete run: (tick key, run id).
    pub already: Vec<(String, String)>,
    /// Ticks that failed every attempt: (tick key, last error).
    pub failed: Vec<(String, String)>,
}

/// `riskstrat backfill JOB --from --to`: every tick of the job's schedule from the
/// start of local day `from` to the end of `to`, oldest first, with `A` the tick's
/// local date.
pub async fn backfill(
    job_file: &Path,
    from: NaiveDate,
    to: NaiveDate,
    clock: Clock,
) -> Result<Report> {
    let job = Job::load(job_file, None)?;
    let schedule = schedule_of(&job)?;
    if from > to {
        return Err(crate::bad_input!(
            "backfill: --from {from} is after --to {to}; give the earlier date first"
        ));
    }
    let _lease = lease(&job)?;
    let mut done = completed_ticks(&job).await?;
    let mut report = Report::default();
    for tick in schedule.ticks(from, to)? {
        if let Some(run_id) = done.get(&tick.key()) {
            report.already.push((tick.key(), run_id.clone()));
            continue;
        }
        match run_tick(job_file, &job, &schedule, tick, clock).await {
            Ok(run_id) => {
                done.insert(tick.key(), run_id.clone());
                report.ran.push((tick.key(), run_id));
            }
            // Every later tick would fail the same way: stop, having recorded it.
            Err(e) if e.kind == ErrorKind::BadInput => return Err(e),
            Err(e) => report.failed.push((tick.key(), e.message)),
        }
    }
    Ok(report)
}

fn schedule_of(job: &Job) -> Result<Schedule> {
    job.schedule.clone().ok_or_else(|| {
        crate::bad_input!(
            "job file {}: no [schedule] section; add one, e.g. [schedule] cron = \"0 2 1 * *\"",
            job.source.display()
        )
    })
}

/// The job's lease: one scheduler or backfill at a time.
fn lease(job: &Job) -> Result<crate::durable::TargetLock> {
    try_lease(job)?.ok_or_else(|| {
        Error::failed(format!(
            "job {}: another riskstrat schedule or backfill is running its ticks now ({} is locked); wait for it to finish",
            job.name,
            job.output.state_dir(&job.name).join(".schedule.lock").display()
        ))
    })
}

fn try_lease(job: &Job) -> Result<Option<crate::durable::TargetLock>> {
    let dir = job.output.state_dir(&job.name);
    std::fs::create_dir_all(&dir).map_err(crate::durable::io_at(&dir, "creating"))?;
    crate::durable::try_lock_target(&dir.join("schedule"))
}

/// Tick key -> run id, of the job's complete runs made for a tick.
async fn completed_ticks(job: &Job) -> Result<BTreeMap<String, String>> {
    let mut done = BTreeMap::new();
    for run in RunStore::of(&job.output, &job.storage)?
        .list(&job.name)
        .await?
    {
        let Some(m) = crate::outputs::run_store::readable_manifest(&run).await else {
            continue;
        };
        if let Some(t) = m.tick {
            done.insert(t, m.run_id);
        }
    }
    Ok(done)
}

/// Run one tick, with the schedule's retries (waiting 1, 2, 4 ... s between them);
/// each attempt is recorded. Bad input is not retried.
async fn run_tick(
    job_file: &Path,
    job: &Job,
    schedule: &Schedule,
    tick: Tick,
    clock: Clock,
) -> Result<String> {
    let mut attempt = 0;
    let result = run_attempts(job_file, job, schedule, tick, clock, &mut attempt).await;
    if let Some(url) = &schedule.notify {
        notify(url, &Summary::of(job, tick, attempt, &result)).await;
    }
    result.map(|m| m.run_id)
}

async fn run_attempts(
    job_file: &Path,
    job: &Job,
    schedule: &Schedule,
    tick: Tick,
    clock: Clock,
    attempt: &mut u32,
) -> Result<Manifest> {
    loop {
        *attempt += 1;
        let attempt = *attempt;
        let started = clock.now();
        let mark = |status, run_id, error| Attempt {
            tick: tick.key(),
            as_of: tick.as_of,
            attempt,
            status,
            run_id,
            error,
            started_utc: started,
            finished_utc: clock.now(),
        };
        let state = job.output.state_dir(&job.name);
        record(&state, &mark(AttemptStatus::Started, None, None))?;
        let result = async {
            let mut j = Job::load(job_file, Some(&tick.as_of.to_string()))?;
            j.tick = Some(tick.key());
            crate::run::run_with(&j, clock).await
        }
        .await;
        let (status, run_id, error) = match &result {
            Ok(o) => (
                AttemptStatus::Complete,
                Some(o.manifest.run_id.clone()),
                None,
            ),
            Err(e) => (AttemptStatus::Failed, None, Some(e.message.clone())),
        };
        record(&state, &mark(status, run_id, error))?;
        match result {
            Ok(o) => return Ok(o.manifest),
            Err(e) if e.kind == ErrorKind::BadInput || attempt > schedule.retries => {
                tracing::warn!("tick {}: attempt {attempt} failed: {}", tick.key(), e);
                return Err(e);
            }
            Err(e) => {
                let wait = Duration::from_secs(1 << (attempt - 1).min(10));
                tracing::warn!(
                    "tick {}: attempt {attempt} failed ({}); retrying in {} s",
                    tick.key(),
                    e,
                    wait.as_secs()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// `riskstrat schedule JOB...`: run each job's ticks as the clock reaches them, until
/// SIGTERM or SIGINT (a run under way is finished first). At start, for each job, a
/// tick whose run was interrupted (a `started` line and nothing after it) runs again,
/// and the ticks that passed since the job's last recorded tick are handled as its
/// `missed` says.
pub async fn schedule(job_files: &[PathBuf], clock: Clock) -> Result<()> {
    let mut jobs = Vec::new();
    for f in job_files {
        let job = Job::load(f, None)?;
        let schedule = schedule_of(&job)?;
        jobs.push((f.clone(), job, schedule));
    }
    let stop = stop_on_signal()?;
    let started = clock.now();
    let mut after = Vec::new();
    for (file, job, schedule) in &jobs {
        tracing::info!(
            "job {}: schedule \"{}\" in {}",
            job.name,
            schedule.pattern,
            schedule.timezone
        );
        let log = attempts(&job.output.state_dir(&job.name))?;
        let done = completed_ticks(job).await?;
        let last = log
            .iter()
            .map(|a| a.tick.clone())
            .chain(done.keys().cloned())
            .max();
        for a in &log {
            let interrupted = a.status == AttemptStatus::Started
                && !log.iter().any(|b| {
                    b.tick == a.tick && b.attempt == a.attempt && b.status != AttemptStatus::Started
                });
            if interrupted && !stop.load(Ordering::SeqCst) {
                if let Some(tick) = parse_tick(&a.tick, a.as_of) {
                    tracing::info!(
                        "job {}: tick {}: interrupted; running it again",
                        job.name,
                        a.tick
                    );
                    run_due(file, job, schedule, tick, clock, &stop).await?;
                }
            }
        }
        let baseline = last
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .map_or(started, |t| t.min(started));
        let missed = schedule.ticks_between(baseline, started);
        let run: Vec<Tick> = match schedule.missed {
            Missed::All => missed.clone(),
            Missed::Latest => missed.last().copied().into_iter().collect(),
            Missed::Skip => Vec::new(),
        };
        for t in &missed {
            if !run.contains(t) {
                skip(job, *t, clock)?;
            }
        }
        for t in run {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            run_due(file, job, schedule, t, clock, &stop).await?;
        }
        after.push(started);
    }
    // A fast test clock needs short naps to see each tick near its time.
    let nap = if crate::faults::clock_speed() > 1.0 {
        Duration::from_millis(10)
    } else {
        Duration::from_secs(1)
    };
    while !stop.load(Ordering::SeqCst) {
        let now = clock.now();
        for (k, (file, job, schedule)) in jobs.iter().enumerate() {
            for t in schedule.ticks_between(after[k], now) {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                run_due(file, job, schedule, t, clock, &stop).await?;
                after[k] = t.at;
            }
            after[k] = after[k].max(now);
        }
        tokio::time::sleep(nap).await;
    }
    tracing::info!("stopped");
    Ok(())
}

fn parse_tick(key: &str, as_of: NaiveDate) -> Option<Tick> {
    let at = DateTime::parse_from_rfc3339(key).ok()?.with_timezone(&Utc);
    Some(Tick { at, as_of })
}

fn skip(job: &Job, tick: Tick, clock: Clock) -> Result<()> {
    tracing::info!("job {}: tick {}: missed, skipped", job.name, tick.key());
    let now = clock.now();
    record(
        &job.output.state_dir(&job.name),
        &Attempt {
            tick: tick.key(),
            as_of: tick.as_of,
            attempt: 0,
            status: AttemptStatus::Skipped,
            run_id: None,
            error: None,
            started_utc: now,
            finished_utc: now,
        },
    )
}

/// Run a due tick under the job's lease (waiting for another scheduler's run to end),
/// unless it has been handled: a complete run, a skip, or every attempt failed.
/// A failed tick is logged and the scheduler goes on; bad input ends it.
async fn run_due(
    file: &Path,
    job: &Job,
    schedule: &Schedule,
    tick: Tick,
    clock: Clock,
    stop: &AtomicBool,
) -> Result<()> {
    let _lease = loop {
        if let Some(l) = try_lease(job)? {
            break l;
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let key = tick.key();
    if completed_ticks(job).await?.contains_key(&key) {
        return Ok(());
    }
    let log = attempts(&job.output.state_dir(&job.name))?;
    let mine = || log.iter().filter(|a| a.tick == key);
    let failed = mine().filter(|a| a.status == AttemptStatus::Failed).count();
    if mine().any(|a| a.status == AttemptStatus::Skipped) || failed > schedule.retries as usize {
        return Ok(());
    }
    match run_tick(file, job, schedule, tick, clock).await {
        Ok(run_id) => {
            tracing::info!("job {}: tick {key}: complete, run {run_id}", job.name);
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::BadInput => Err(e),
        Err(e) => {
            tracing::error!("job {}: tick {key}: failed every attempt: {e}", job.name);
            Ok(())
        }
    }
}

/// A flag set by SIGTERM or SIGINT.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::failed(format!("cannot listen for SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::failed(format!("cannot listen for SIGINT: {e}")))?;
    let flag = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: the run under way, if any, finishes first");
        flag.store(true, Ordering::SeqCst);
    });
    Ok(stop)
}

/// What a schedule's webhook receives after each tick: counts and the tick's outcome,
/// never a person's identifier, an error's text (it may quote an input) or a path.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub job: String,
    pub tick: String,
    #[serde(with = "crate::outputs::manifest::iso_date")]
    pub as_of: NaiveDate,
    pub status: AttemptStatus,
    pub attempts: u32,
    pub run_id: Option<String>,
    pub population: Option<u64>,
    pub cohorts: BTreeMap<String, u64>,
    pub changes: BTreeMap<String, ChangeCounts>,
    /// A score-only run whose saved model the drift rule says to refit.
    pub refit: bool,
    /// `bad_input` (exit code 2: the job or its inputs need fixing) or `failed`.
    pub error: Option<&'static str>,
}

impl Summary {
    fn of(job: &Job, tick: Tick, attempts: u32, result: &Result<Manifest>) -> Summary {
        let mut s = Summary {
            job: job.name.clone(),
            tick: tick.key(),
            as_of: tick.as_of,
            status: AttemptStatus::Failed,
            attempts,
            run_id: None,
            population: None,
            cohorts: BTreeMap::new(),
            changes: BTreeMap::new(),
            refit: false,
            error: None,
        };
        match result {
            Ok(m) => {
                s.status = AttemptStatus::Complete;
                s.run_id = Some(m.run_id.clone());
                s.population = Some(m.population);
                s.cohorts = m.cohorts.clone();
                s.changes = m.changes.clone();
                s.refit = m.temporal_validation.as_ref().is_some_and(|t| t.refit);
            }
            Err(e) => {
                s.error = Some(match e.kind {
                    ErrorKind::BadInput => "bad_input",
                    ErrorKind::Failed => "failed",
                })
            }
        }
        s
    }
}

/// POST the summary as JSON, within 10 s. A webhook that fails is logged (without its
/// URL, which may hold a token) and does not fail the tick.
async fn notify(url: &str, summary: &Summary) {
    let (url, body) = (url.to_string(), serde_json::to_vec(summary));
    let Ok(body) = body else { return };
    let sent = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        agent
            .post(&url)
            .header("content-type", "application/json")
            .send(&body[..])
            .map(|_| ())
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the schedule's notify webhook failed: {}", kind_of(&e)),
        Err(_) => tracing::warn!("the schedule's notify webhook failed"),
    }
}

fn kind_of(e: &ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(c) => format!("HTTP status {c}"),
        ureq::Error::Timeout(_) => "timed out".into(),
        ureq::Error::Io(io) => format!("{}", io.kind()),
        _ => "could not send".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(tick: &str, status: AttemptStatus) -> Attempt {
        let now = Utc::now();
        Attempt {
            tick: tick.into(),
            as_of: NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
            attempt: 1,
            status,
            run_id: None,
            error: None,
            started_utc: now,
            finished_utc: now,
        }
    }

    /// Regression (fault review of 2026-12-07): a record appended after a torn last
    /// line joined it, and was lost.
    #[test]
    fn a_record_after_a_torn_line_is_kept() {
        let dir = std::env::temp_dir().join(format!("rs-sched-torn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        record(&dir, &attempt("t1", AttemptStatus::Started)).unwrap();
        record(&dir, &attempt("t1", AttemptStatus::Complete)).unwrap();
        let path = log_path(&dir);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
        record(&dir, &attempt("t2", AttemptStatus::Failed)).unwrap();
        let got: Vec<(String, AttemptStatus)> = attempts(&dir)
            .unwrap()
            .into_iter()
            .map(|a| (a.tick, a.status))
            .collect();
        assert_eq!(
            got,
            [
                ("t1".to_string(), AttemptStatus::Started),
                ("t2".to_string(), AttemptStatus::Failed)
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

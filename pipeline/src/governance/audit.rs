//! The audit log: append-only JSON lines, each holding the SHA-256 of the record
//! before it, so that editing, deleting, reordering or truncating records breaks the
//! chain at the first record touched. Every approval, release, refusal and feedback
//! import is a record; the gate reads approvals from here, so they are as
//! tamper-evident as disclosures.
//!
//! A hash chain cannot notice whole records cut from the end of the log: keep a copy of
//! the last `sha256` that `verify` prints somewhere else (the gate operator's notes)
//! and compare it.
//!
//! Appends cannot tear: a write that fails (a full disk) is cut back to the last
//! complete record under the lock, so the action is refused and the next one, once
//! there is space, succeeds. What only a killed process or a crash can leave, an
//! incomplete last line after an intact chain, is told apart from tampering
//! ([`Damage::Torn`]) and removed by [`repair`], itself an audited action.

use crate::bad_input;
use crate::durable::io_at;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audited event was. Serialised as the snake_case names the log has always
/// held, so existing logs verify unchanged. The default is `Refuse`, which grants
/// nothing: a record built without naming its action must never read as an approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An IG lead approved a team's re-identification of a run's cohort.
    Approve,
    /// The gate released a list of named patients to a team (written before the
    /// list's files are put in place: no record, no list).
    Reidentify,
    /// The files of the release `compared_with` names are in place: that list is the
    /// team's, the one a later change list compares with.
    Delivered,
    /// The gate or `serve` refused a request (the reason in `detail`).
    #[default]
    Refuse,
    /// A care team's feedback was imported.
    FeedbackImport,
    /// `serve` answered a commissioner's query.
    Query,
    /// `serve` planned a commissioner's query without running it (its schema, for
    /// GetFlightInfo or a prepared statement): disclosure control checked it against
    /// the data, which answers whether it passes.
    Plan,
    /// `audit repair` removed a torn last record.
    Repair,
    /// `serve` refused a call for want of a valid token.
    Unauthenticated,
}

impl Action {
    pub const fn as_str(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Reidentify => "reidentify",
            Action::Delivered => "delivered",
            Action::Refuse => "refuse",
            Action::FeedbackImport => "feedback_import",
            Action::Query => "query",
            Action::Plan => "plan",
            Action::Repair => "repair",
            Action::Unauthenticated => "unauthenticated",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One audited event. Counts and hashes only: no identifier of any patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_utc: String,
    /// Who acted: the requester, approver or importer.
    pub actor: String,
    pub action: Action,
    pub team: Option<String>,
    pub purpose: Option<String>,
    pub run: Option<String>,
    pub cohort: Option<String>,
    pub patients: Option<u64>,
    /// SHA-256 of the released or imported file.
    pub file_sha256: Option<String>,
    /// A refusal's reason, a release's file and approval, and the like.
    pub detail: Option<String>,
    /// An approval's last day; on a release, that of the approval it was made under.
    /// Left out of the JSON when absent, so records written before it existed keep
    /// their hashes (those held it in `detail` as `expires=YYYY-MM-DD`, which is
    /// still read).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "iso_date")]
    pub expires: Option<chrono::NaiveDate>,
    /// On a release, who approved it (the `actor` of the approval record). Left out of
    /// the JSON when absent, so records written before it existed (which held it in
    /// `detail` as `approved_by=`) keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// A commissioner's query (the SQL as sent), for `serve`'s query and refuse records.
    /// Left out of the JSON when absent, so records written before it existed keep
    /// their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Rows a query returned (after disclosure control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// On a change list (`reidentify --changes`), the `seq` of the team's earlier
    /// release it was compared with; on a delivery, the `seq` of the release delivered.
    /// Left out of the JSON when absent, so records written before it existed keep
    /// their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<u64>,
    /// On an approval, the job whose runs it covers (`[job] name`). Left out of the
    /// JSON when absent, so records written before it existed keep their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub prev_sha256: String,
    /// SHA-256 of this record's JSON with this field empty.
    pub sha256: String,
}

/// `Option<NaiveDate>` as `"YYYY-MM-DD"` (chrono's serde feature is not enabled).
mod iso_date {
    use chrono::NaiveDate;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(d: &Option<NaiveDate>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&d.format("%Y-%m-%d")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(D::Error::custom))
            .transpose()
    }
}

impl Record {
    fn digest(&self) -> String {
        let mut r = self.clone();
        r.sha256 = String::new();
        let json = serde_json::to_vec(&r).expect("records serialise");
        hex::encode(Sha256::digest(&json))
    }
}

/// Append a record to the log, filling in `seq`, `time_utc` and the chain. The file is
/// locked while appending and synced before returning: when this returns Ok the record
/// is on disk, and when it fails nothing may be released.
pub fn append(log: &Path, mut record: Record) -> Result<Record> {
    let mut file = open_for_append(log)?;
    let lock = file.try_clone()?;
    with_lock(log, &lock, || {
        let bytes = std::fs::read(log).map_err(io_at(log, "reading the audit log"))?;
        let last = verify_bytes(&bytes).map_err(|e| broken(log, e))?;
        chain(&mut record, last.as_ref());
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        write_at_end(&mut file, bytes.len() as u64, &line, log)?;
        Ok(record)
    })
}

/// Append `bytes` to a log whose verified length is `end`, and sync. If the write or
/// the sync fails, the log is cut back to `end` (no torn record is left to refuse
/// every later action) and the error names the log.
fn write_at_end(file: &mut File, end: u64, bytes: &[u8], log: &Path) -> Result<()> {
    let mut write = || -> std::io::Result<()> {
        // Two writes in debug builds, so the fault suite can kill between them.
        let half = if cfg!(debug_assertions) {
            bytes.len() / 2
        } else {
            0
        };
        file.write_all(&bytes[..half])?;
        crate::faults::point("audit.mid_write");
        file.write_all(&bytes[half..])?;
        crate::faults::point("audit.before_sync");
        file.sync_data()
    };
    let Err(e) = write() else {
        return Ok(());
    };
    let err = io_at(log, "appending to the audit log")(e);
    match file.set_len(end).and_then(|_| file.sync_data()) {
        Ok(()) => Err(err.context("nothing was recorded")),
        Err(cut) => Err(err.context(format!(
            "and cutting the log back failed too ({cut}): run `riskstrat audit repair {}` once the disk is fixed",
            log.display()
        ))),
    }
}

/// An appender for a long-running process (the Flight SQL server writes a record per
/// query). `append` re-reads the whole log to chain each record, which is quadratic
/// over thousands of queries; a `Writer` verifies the log once when opened and keeps
/// its tail in memory, in one writer thread. Records that arrive while a sync is
/// under way are written together and covered by one sync (group commit), so
/// concurrent queries do not queue for the disk one by one. Each write still locks
/// the file, and if another process appended meanwhile (the file grew), the log is
/// re-read and re-verified before chaining on.
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

/// A record to write, and where to send the outcome (an error is shared by the batch).
type Job = (
    Record,
    mpsc::SyncSender<std::result::Result<Record, std::sync::Arc<Error>>>,
);

struct Tail {
    file: File,
    /// The log's length after our last write: the file's length differs only if
    /// someone else wrote to it (or a write of ours failed part way).
    len: u64,
    last: Option<Record>,
}

impl Writer {
    /// Open (or create) a log and verify its chain: nothing is written to a broken log.
    pub fn open(log: &Path) -> Result<Self> {
        let mut tail = Tail {
            file: open_for_append(log)?,
            len: u64::MAX,
            last: None,
        };
        with_lock(log, &tail.file.try_clone()?, || tail.reread(log))?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let path = log.to_path_buf();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || tail.serve(&path, queue))?;
        Ok(Self { jobs })
    }

    /// As `append`: fills in `seq`, `time_utc` and the chain; Ok means on disk.
    /// Blocks until then.
    pub fn append(&self, record: Record) -> Result<Record> {
        let (reply, answer) = mpsc::sync_channel(1);
        let stopped = || Error::failed("the audit log writer has stopped");
        self.jobs.send((record, reply)).map_err(|_| stopped())?;
        answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(|e| Error::failed(e.message.clone()).with_source(e))
    }
}

impl Tail {
    fn serve(mut self, log: &Path, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            batch.extend(queue.try_iter());
            let records = batch.iter().map(|(r, _)| r.clone()).collect();
            match self.write(log, records) {
                Ok(written) => {
                    for ((_, reply), r) in batch.into_iter().zip(written) {
                        let _ = reply.send(Ok(r));
                    }
                }
                Err(e) => {
                    let e = std::sync::Arc::new(e);
                    for (_, reply) in batch {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    fn write(&mut self, log: &Path, records: Vec<Record>) -> Result<Vec<Record>> {
        let file = self.file.try_clone()?;
        with_lock(log, &file, || {
            if self.file.metadata()?.len() != self.len {
                self.reread(log)?;
            }
            let (mut buf, mut out) = (Vec::new(), Vec::with_capacity(records.len()));
            for mut r in records {
                chain(&mut r, out.last().or(self.last.as_ref()));
                serde_json::to_writer(&mut buf, &r)?;
                buf.push(b'\n');
                out.push(r);
            }
            // A failed write is cut back to `len`, so the next write chains on as if
            // it never happened; if even that failed, the length differs and the next
            // write re-reads the log and finds the damage.
            write_at_end(&mut self.file, self.len, &buf, log)?;
            self.len += buf.len() as u64;
            self.last = out.last().cloned();
            Ok(out)
        })
    }

    fn reread(&mut self, log: &Path) -> Result<()> {
        let bytes = std::fs::read(log).map_err(io_at(log, "reading the audit log"))?;
        self.last = verify_bytes(&bytes).map_err(|e| broken(log, e))?;
        self.len = bytes.len() as u64;
        Ok(())
    }
}

fn open_for_append(log: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(log)
        .map_err(|e| {
            bad_input!(
                "audit log {}: cannot open it for appending ({e})",
                log.display()
            )
        })
}

/// Run `f` holding the log's exclusive lock (shared with `append` in other processes).
fn with_lock<T>(log: &Path, file: &File, f: impl FnOnce() -> Result<T>) -> Result<T> {
    file.lock()
        .map_err(|e| Error::failed(format!("audit log {}: cannot lock it ({e})", log.display())))?;
    let out = f();
    let _ = file.unlock();
    out
}

fn broken(log: &Path, d: Damage) -> Error {
    Error::failed(format!(
        "audit log {} is broken, so nothing more is written to it: {d}",
        log.display()
    ))
}

fn chain(record: &mut Record, last: Option<&Record>) {
    record.seq = last.map_or(1, |r| r.seq + 1);
    record.prev_sha256 = last.map_or(GENESIS.to_string(), |r| r.sha256.clone());
    record.time_utc = crate::faults::now().to_rfc3339();
    record.sha256 = record.digest();
}

/// What is wrong with a log that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Every complete record verifies and chains, and after them comes one incomplete
    /// line: what a write that failed part way leaves (a killed process, a crash).
    /// That record was never acknowledged, so nothing was released under it.
    /// `repair` removes it. (Cutting the log through its last record by hand looks
    /// the same; the repair record keeps the removed bytes.)
    Torn {
        /// The incomplete line's number.
        line: usize,
        /// The length of the log up to the last complete record.
        complete_len: u64,
    },
    /// A complete record was edited, deleted, inserted or moved: tampering (or
    /// corruption), which no tool repairs.
    Tampered { line: usize, what: String },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Torn { line, .. } => write!(
                f,
                "line {line}: the last record is incomplete (torn by a write that failed part way, or truncated); it was never acknowledged. `riskstrat audit repair LOG --operator ID` removes it (an audited action)"
            ),
            Damage::Tampered { line, what } => write!(f, "line {line}: {what}"),
        }
    }
}

/// Every record of an intact log, or the first broken link.
pub fn read(log: &Path) -> Result<Vec<Record>> {
    check(log)?.map_err(|e| Error::bad_input(format!("audit log {}: {e}", log.display())))
}

/// Every record of an intact log, or what is wrong with it.
/// Read under a shared lock: an append in progress (another process, or `serve`'s
/// writer) is never mistaken for a torn record.
pub fn check(log: &Path) -> Result<std::result::Result<Vec<Record>, Damage>> {
    let cannot =
        |e: std::io::Error| bad_input!("audit log {}: cannot read it ({e})", log.display());
    let mut file = File::open(log).map_err(cannot)?;
    file.lock_shared().map_err(cannot)?;
    let mut bytes = Vec::new();
    let read = file.read_to_end(&mut bytes);
    let _ = file.unlock();
    read.map_err(cannot)?;
    Ok(records(&bytes))
}

fn records(bytes: &[u8]) -> std::result::Result<Vec<Record>, Damage> {
    // Blank lines or NUL bytes after the last record (a stray newline, or what a crash
    // leaves on some file systems) are a torn tail, which `repair` removes (regression:
    // one appended newline bricked the gate, and `repair` refused it as tampering).
    let junk = |b: &u8| matches!(b, b'\n' | b'\r' | b' ' | b'\t' | 0);
    let content = bytes.iter().rposition(|b| !junk(b)).map_or(0, |i| i + 1);
    let clean = match bytes.get(content) {
        Some(b'\n') => content + 1,
        _ => content,
    };
    if clean < bytes.len() && clean > 0 {
        let kept = records(&bytes[..clean])?;
        return Err(Damage::Torn {
            line: kept.len() + 1,
            complete_len: clean as u64,
        });
    }
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = std::str::from_utf8(&bytes[..complete]).map_err(|e| Damage::Tampered {
        line: bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1,
        what: "not text".into(),
    })?;
    let mut out: Vec<Record> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let tampered = |what: String| Damage::Tampered { line: n, what };
        let r: Record =
            serde_json::from_str(line).map_err(|e| tampered(format!("not a record ({e})")))?;
        if r.digest() != r.sha256 {
            return Err(tampered(format!(
                "record {} was changed after it was written (its hash does not match)",
                r.seq
            )));
        }
        let (want_prev, want_seq) = out
            .last()
            .map_or((GENESIS, 1), |p| (p.sha256.as_str(), p.seq + 1));
        if r.prev_sha256 != want_prev || r.seq != want_seq {
            return Err(tampered(format!(
                "record {} does not follow record {} (a record was deleted, inserted or moved)",
                r.seq,
                want_seq - 1
            )));
        }
        out.push(r);
    }
    if complete < bytes.len() {
        // A torn write leaves the start of the next record of the chain.
        let next = out.last().map_or(1, |r| r.seq + 1);
        let tail = String::from_utf8_lossy(&bytes[complete..]);
        let start = format!("{{\"seq\":{next},");
        let line = out.len() + 1;
        if start.starts_with(tail.as_ref()) || tail.starts_with(&start) {
            return Err(Damage::Torn {
                line,
                complete_len: complete as u64,
            });
        }
        return Err(Damage::Tampered {
            line,
            what: "the last line is not a record of this chain".into(),
        });
    }
    Ok(out)
}

fn verify_bytes(bytes: &[u8]) -> std::result::Result<Option<Record>, Damage> {
    Ok(records(bytes)?.pop())
}

/// What `repair` did.
#[derive(Debug)]
pub struct Repaired {
    /// Bytes of the incomplete record removed.
    pub removed_bytes: u64,
    /// The audit record of the repair.
    pub record: Record,
}

/// Remove a torn last record (and only that), under the lock, and record the repair
/// in the log: who, how many bytes, their SHA-256 and the bytes themselves, so that a
/// cut made by hand is still in the log. `Ok(None)`: the log is intact. A tampered
/// log is refused: repairing it would hide what happened.
pub fn repair(log: &Path, operator: &str) -> Result<Option<Repaired>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(log)
        .map_err(|e| bad_input!("audit log {}: cannot open it ({e})", log.display()))?;
    let lock = file.try_clone()?;
    with_lock(log, &lock, || {
        let bytes = std::fs::read(log).map_err(io_at(log, "reading the audit log"))?;
        let complete_len = match records(&bytes) {
            Ok(_) => return Ok(None),
            Err(Damage::Torn { complete_len, .. }) => complete_len,
            Err(d @ Damage::Tampered { .. }) => {
                return Err(Error::failed(format!(
                    "audit log {}: {d}. That is not a torn write: nothing was repaired; keep the log as evidence",
                    log.display()
                )));
            }
        };
        let removed = &bytes[complete_len as usize..];
        let mut record = Record {
            actor: operator.to_string(),
            action: Action::Repair,
            detail: Some(format!(
                "removed an incomplete last record ({} bytes, sha256 {}): {}",
                removed.len(),
                hex::encode(Sha256::digest(removed)),
                String::from_utf8_lossy(removed)
            )),
            ..Default::default()
        };
        file.set_len(complete_len)
            .and_then(|_| file.sync_data())
            .map_err(io_at(log, "cutting the audit log back"))?;
        let last = verify_bytes(&bytes[..complete_len as usize]).map_err(|e| broken(log, e))?;
        chain(&mut record, last.as_ref());
        let mut line = serde_json::to_vec(&record)?;
        line.push(b'\n');
        write_at_end(&mut file, complete_len, &line, log)?;
        Ok(Some(Repaired {
            removed_bytes: removed.len() as u64,
            record,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_serialise_as_their_names_and_default_to_one_that_grants_nothing() {
        use Action::*;
        for a in [
            Approve,
            Reidentify,
            Delivered,
            Refuse,
            FeedbackImport,
            Query,
            Repair,
            Unauthenticated,
        ] {
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{a}\""));
            assert_eq!(serde_json::from_str::<Action>(&json).unwrap(), a);
        }
        assert_eq!(Record::default().action, Refuse);
    }

    fn log_with(n: usize, name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("rs-audit-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        for k in 0..n {
            append(
                &path,
                Record {
                    actor: format!("user{k}"),
                    action: Action::Approve,
                    ..Default::default()
                },
            )
            .unwrap();
        }
        path
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Regression: `serve`'s test read the log while the writer was between the two
    /// halves of a record, and took the append in progress for a torn record.
    #[test]
    fn a_reader_waits_for_an_append_in_progress() {
        let p = log_with(2, "reader");
        let l = lines(&p);
        let mut writer = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        writer.lock().unwrap();
        writer.write_all(&l[1].as_bytes()[..10]).unwrap();
        let path = p.clone();
        let reader = std::thread::spawn(move || check(&path).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !reader.is_finished(),
            "the reader did not wait for the lock"
        );
        // Undo the half record, as a finished (cut back) append would leave it.
        writer
            .set_len((l[0].len() + l[1].len() + 2) as u64)
            .unwrap();
        writer.unlock().unwrap();
        assert_eq!(reader.join().unwrap().unwrap().len(), 2);
    }

    #[test]
    fn untouched_log_verifies_and_chains() {
        let p = log_with(3, "ok");
        let r = read(&p).unwrap();
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(r[0].prev_sha256, GENESIS);
        assert_eq!(r[2].prev_sha256, r[1].sha256);
    }

    #[test]
    fn edited_byte_is_caught_at_its_line() {
        let p = log_with(3, "edit");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replacen("user1", "user9", 1);
        std::fs::write(&p, text).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            e.message.contains("line 2") && e.message.contains("changed"),
            "{}",
            e.message
        );
    }

    #[test]
    fn deleted_swapped_and_truncated_records_are_caught() {
        let p = log_with(4, "del");
        let l = lines(&p);
        std::fs::write(&p, format!("{}\n{}\n{}\n", l[0], l[2], l[3])).unwrap();
        assert!(read(&p).unwrap_err().message.contains("line 2"));

        std::fs::write(&p, format!("{}\n{}\n{}\n{}\n", l[0], l[2], l[1], l[3])).unwrap();
        assert!(read(&p).unwrap_err().message.contains("line 2"));

        // Swapped, then cut mid-record: the swap is what is reported (tampering).
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        let e = read(&p).unwrap_err().message;
        assert!(e.contains("line 2") && !e.contains("torn"), "{e}");

        // An intact log cut mid-record: torn (or truncated), repairable.
        std::fs::write(&p, format!("{}\n{}\n{}\n{}", l[0], l[1], l[2], &l[3][..20])).unwrap();
        let e = read(&p).unwrap_err().message;
        assert!(e.contains("line 4") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn nothing_is_appended_to_a_broken_log() {
        let p = log_with(2, "broken");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replacen("user0", "userX", 1);
        std::fs::write(&p, &text).unwrap();
        assert!(
            append(
                &p,
                Record {
                    actor: "x".into(),
                    action: Action::Approve,
                    ..Default::default()
                }
            )
            .is_err()
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
    #[test]
    fn writer_chains_concurrent_appends_and_others_in_between() {
        let p = log_with(2, "writer");
        let w = std::sync::Arc::new(Writer::open(&p).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for k in 0..25 {
                        w.append(Record {
                            actor: format!("t{t}"),
                            action: Action::Query,
                            query: Some(format!("SELECT {k}")),
                            rows: Some(k),
                            ..Default::default()
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Another process's append in between: the writer re-reads and chains on.
        let other = append(
            &p,
            Record {
                actor: "gate".into(),
                action: Action::Approve,
                ..Default::default()
            },
        )
        .unwrap();
        let next = w
            .append(Record {
                actor: "t0".into(),
                action: Action::Refuse,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((other.seq, next.seq), (203, 204));
        assert_eq!(next.prev_sha256, other.sha256);
        let r = read(&p).unwrap();
        assert_eq!(r.len(), 204);
        assert_eq!(r.iter().filter(|r| r.action == "query").count(), 200);
        // Records without the new fields hash as before.
        assert!(!lines(&p)[0].contains("\"rows\""));
    }

    #[test]
    fn a_torn_last_record_is_told_apart_from_tampering_and_repaired() {
        let p = log_with(3, "torn");
        let intact = std::fs::read(&p).unwrap();
        // A write that died part way: the start of record 4.
        let mut torn = intact.clone();
        torn.extend_from_slice(br#"{"seq":4,"time_utc":"2026-"#);
        std::fs::write(&p, &torn).unwrap();
        assert_eq!(
            check(&p).unwrap(),
            Err(Damage::Torn {
                line: 4,
                complete_len: intact.len() as u64
            })
        );
        assert!(
            append(&p, Record::default()).is_err(),
            "nothing chains onto a tear"
        );
        // Not the start of the chain's next record: tampering.
        let mut odd = intact.clone();
        odd.extend_from_slice(br#"{"seq":9,"#);
        std::fs::write(&p, &odd).unwrap();
        assert!(matches!(
            check(&p).unwrap(),
            Err(Damage::Tampered { line: 4, .. })
        ));
        assert!(repair(&p, "ig.lead").is_err());
        assert_eq!(
            std::fs::read(&p).unwrap(),
            odd,
            "a tampered log is left as evidence"
        );

        std::fs::write(&p, &torn).unwrap();
        let r = repair(&p, "ig.lead").unwrap().expect("a repair");
        assert_eq!(r.removed_bytes, (torn.len() - intact.len()) as u64);
        let records = read(&p).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(
            (records[3].action.as_str(), records[3].actor.as_str()),
            ("repair", "ig.lead")
        );
        assert!(
            records[3]
                .detail
                .as_deref()
                .unwrap()
                .contains(r#"{"seq":4,"time_utc":"2026-"#)
        );
        assert!(
            repair(&p, "ig.lead").unwrap().is_none(),
            "an intact log needs none"
        );
        assert_eq!(append(&p, Record::default()).unwrap().seq, 5);

        // A stray blank line or a tail of NUL bytes: torn, repaired, not tampering.
        for tail in [&b"\n"[..], &[0u8; 64][..], &b"\n\n \r\n"[..]] {
            let intact = std::fs::read(&p).unwrap();
            let n = read(&p).unwrap().len();
            let mut bad = intact.clone();
            bad.extend_from_slice(tail);
            std::fs::write(&p, &bad).unwrap();
            assert_eq!(
                check(&p).unwrap(),
                Err(Damage::Torn {
                    line: n + 1,
                    complete_len: intact.len() as u64
                }),
                "{tail:?}"
            );
            let r = repair(&p, "ig.lead").unwrap().expect("a repair");
            assert_eq!(r.removed_bytes, tail.len() as u64);
            assert_eq!(read(&p).unwrap().len(), n + 1);
        }
    }

    /// A log as written before an approval's expiry and approver were fields (they were
    /// in `detail`), with the hashes of then.
    const OLD_LOG: &str = concat!(
        r#"{"seq":1,"time_utc":"2026-11-22T09:00:00+00:00","actor":"caldicott.guardian","action":"approve","team":"T01","purpose":"direct-care","run":null,"cohort":"complex_needs","patients":null,"file_sha256":null,"detail":"expires=2026-12-31","prev_sha256":"0000000000000000000000000000000000000000000000000000000000000000","sha256":"4669e8ee04570d953e47f602bf7f1d6f4077ee9a29f1af0dd90a17db5fe58529"}"#,
        "\n",
        r#"{"seq":2,"time_utc":"2026-11-23T10:30:00+00:00","actor":"gp.north.1","action":"reidentify","team":"T01","purpose":"direct-care","run":"20261122T080000Z-1","cohort":"complex_needs","patients":12,"file_sha256":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","detail":"parquet_sha256=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb approved_by=caldicott.guardian expires=2026-12-31 not_in_vault=0","prev_sha256":"4669e8ee04570d953e47f602bf7f1d6f4077ee9a29f1af0dd90a17db5fe58529","sha256":"b5ff891a3d0569a0d4a59b9a49d74cc7857d6141b27306f9bdc9ccc2fc3c6841"}"#,
        "\n",
    );

    #[test]
    fn a_log_from_before_the_typed_fields_verifies_and_new_records_chain_onto_it() {
        let p = std::env::temp_dir().join(format!("rs-audit-old-{}.jsonl", std::process::id()));
        std::fs::write(&p, OLD_LOG).unwrap();
        let old = read(&p).unwrap();
        assert_eq!(old.len(), 2);
        assert_eq!((old[1].approver.as_deref(), old[1].expires), (None, None));
        for (r, line) in old.iter().zip(OLD_LOG.lines()) {
            assert_eq!(
                serde_json::to_string(r).unwrap(),
                line,
                "written as it was read"
            );
        }
        let expires = chrono::NaiveDate::from_ymd_opt(2026, 12, 31);
        let new = append(
            &p,
            Record {
                actor: "gp.north.1".into(),
                action: Action::Reidentify,
                approver: Some("caldicott.guardian".into()),
                expires,
                ..Default::default()
            },
        )
        .unwrap();
        let line = &lines(&p)[2];
        assert!(
            line.contains(r#""expires":"2026-12-31","approver":"caldicott.guardian""#),
            "{line}"
        );
        let all = read(&p).unwrap();
        assert_eq!(all[2], new);
        assert_eq!(all[2].prev_sha256, old[1].sha256);
        assert_eq!(
            (all[2].approver.as_deref(), all[2].expires),
            (Some("caldicott.guardian"), expires)
        );
    }

    #[test]
    fn writer_refuses_a_broken_log() {
        let p = log_with(2, "writer-broken");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replacen("user1", "userX", 1);
        std::fs::write(&p, &text).unwrap();
        let e = Writer::open(&p).err().expect("a broken log is refused");
        assert!(e.message.contains("broken"), "{}", e.message);
    }
}

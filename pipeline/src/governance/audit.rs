//! The audit log: append-only JSON lines, each holding the SHA-256 of the record
//! before it, so that editing, deleting, reordering or truncating records breaks the
//! chain at the first record touched. Every approval, release, refusal and feedback
//! import is a record; the gate reads approvals from here, so they are as
//! tamper-evident as disclosures.
//!
//! A hash chain cannot notice whole records cut from the end of the log: keep a copy of
//! the last `sha256` that `verify` prints somewhere else (the gate operator's notes)
//! and compare it.

use crate::bad_input;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::mpsc;

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audited event. Counts and hashes only: no identifier of any patient.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_utc: String,
    /// Who acted: the requester, approver or importer.
    pub actor: String,
    /// approve, reidentify, refuse, feedback_import.
    pub action: String,
    pub team: Option<String>,
    pub purpose: Option<String>,
    pub run: Option<String>,
    pub cohort: Option<String>,
    pub patients: Option<u64>,
    /// SHA-256 of the released or imported file.
    pub file_sha256: Option<String>,
    /// Approval expiry, refusal reason, and the like.
    pub detail: Option<String>,
    /// A commissioner's query (the SQL as sent), for `serve`'s query and refuse records.
    /// Left out of the JSON when absent, so records written before it existed keep
    /// their hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// Rows a query returned (after disclosure control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    pub prev_sha256: String,
    /// SHA-256 of this record's JSON with this field empty.
    pub sha256: String,
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
    file.lock()
        .map_err(|e| Error::failed(format!("audit log {}: cannot lock it ({e})", log.display())))?;
    let text = std::fs::read_to_string(log)?;
    let last = verify_text(&text).map_err(|e| broken(log, e))?;
    chain(&mut record, last.as_ref());
    let mut line = serde_json::to_vec(&record)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_all()?;
    Ok(record)
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

type Job = (
    Record,
    mpsc::SyncSender<std::result::Result<Record, String>>,
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
        answer.recv().map_err(|_| stopped())?.map_err(Error::failed)
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
                    for (_, reply) in batch {
                        let _ = reply.send(Err(e.message.clone()));
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
            // On a failed write `len` is left stale, so the next write re-reads the
            // log and finds the damage instead of chaining onto it.
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.len += buf.len() as u64;
            self.last = out.last().cloned();
            Ok(out)
        })
    }

    fn reread(&mut self, log: &Path) -> Result<()> {
        let text = std::fs::read_to_string(log)?;
        self.last = verify_text(&text).map_err(|e| broken(log, e))?;
        self.len = text.len() as u64;
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

fn broken(log: &Path, e: String) -> Error {
    Error::failed(format!(
        "audit log {} is broken, so nothing more is written to it: {e}",
        log.display()
    ))
}

fn chain(record: &mut Record, last: Option<&Record>) {
    record.seq = last.map_or(1, |r| r.seq + 1);
    record.prev_sha256 = last.map_or(GENESIS.to_string(), |r| r.sha256.clone());
    record.time_utc = chrono::Utc::now().to_rfc3339();
    record.sha256 = record.digest();
}

/// Every record of an intact log, or the first broken link.
pub fn read(log: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(log)
        .map_err(|e| bad_input!("audit log {}: cannot read it ({e})", log.display()))?;
    records(&text).map_err(|e| Error::bad_input(format!("audit log {}: {e}", log.display())))
}

fn records(text: &str) -> std::result::Result<Vec<Record>, String> {
    if !text.is_empty() && !text.ends_with('\n') {
        let line = text.lines().count();
        return Err(format!(
            "line {line}: the last record is incomplete (the file was truncated)"
        ));
    }
    let mut out: Vec<Record> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let r: Record =
            serde_json::from_str(line).map_err(|e| format!("line {n}: not a record ({e})"))?;
        if r.digest() != r.sha256 {
            return Err(format!(
                "line {n}: record {} was changed after it was written (its hash does not match)",
                r.seq
            ));
        }
        let (want_prev, want_seq) = out
            .last()
            .map_or((GENESIS, 1), |p| (p.sha256.as_str(), p.seq + 1));
        if r.prev_sha256 != want_prev || r.seq != want_seq {
            return Err(format!(
                "line {n}: record {} does not follow record {} (a record was deleted, inserted or moved)",
                r.seq,
                want_seq - 1
            ));
        }
        out.push(r);
    }
    Ok(out)
}

fn verify_text(text: &str) -> std::result::Result<Option<Record>, String> {
    Ok(records(text)?.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: usize, name: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("rs-audit-{name}-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        for k in 0..n {
            append(
                &path,
                Record {
                    actor: format!("user{k}"),
                    action: "approve".into(),
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

        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        assert!(read(&p).unwrap_err().message.contains("truncated"));
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
                    action: "approve".into(),
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
                            action: "query".into(),
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
                action: "approve".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let next = w
            .append(Record {
                actor: "t0".into(),
                action: "refuse".into(),
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

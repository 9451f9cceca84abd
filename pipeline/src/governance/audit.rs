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
use std::io::Write;
use std::path::Path;

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
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(log)
        .map_err(|e| {
            bad_input!(
                "audit log {}: cannot open it for appending ({e})",
                log.display()
            )
        })?;
    file.lock()
        .map_err(|e| Error::failed(format!("audit log {}: cannot lock it ({e})", log.display())))?;
    let text = std::fs::read_to_string(log)?;
    let last = verify_text(&text).map_err(|e| {
        Error::failed(format!(
            "audit log {} is broken, so nothing more is written to it: {e}",
            log.display()
        ))
    })?;
    record.seq = last.as_ref().map_or(1, |r| r.seq + 1);
    record.prev_sha256 = last.map_or(GENESIS.to_string(), |r| r.sha256);
    record.time_utc = chrono::Utc::now().to_rfc3339();
    record.sha256 = record.digest();
    let mut line = serde_json::to_vec(&record)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_all()?;
    Ok(record)
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
}

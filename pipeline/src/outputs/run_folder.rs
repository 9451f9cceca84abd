//! Run folders on the local filesystem: the durable writer behind the run store
//! (`run_store.rs`, through which every run is written and read).
//!
//! - A run first claims its run id, `<UTC start>-<seq>`, where `seq` is the next
//!   number of the job's sequence: it is taken by creating the staging folder
//!   `<job>/.staging-<seq>/` exclusively (a name that cannot be taken twice; on a
//!   collision the next number is tried) and checking that no complete run holds it.
//!   The manifest's `run_id` and `seq` are the folder's, even for runs started in the
//!   same second.
//! - "Newest" is the highest `seq`, never the clock: a clock that jumps back cannot
//!   make an older run look newer.
//! - The staging folder is owned through an exclusive lock on its lock file for the
//!   run's life (`durable::Owned`). Each run removes the staging folders whose lock
//!   nobody holds (killed runs, in any PID namespace or host sharing the volume).
//! - The manifest is written last; everything is synced, then the folder is renamed
//!   into place. Readers take only folders with a manifest for runs. On an object
//!   store (no rename) the run store claims with a create-if-absent put and uploads
//!   the manifest last as the completeness marker.

use crate::bad_input;
use crate::durable::{self, Owned, io_at};
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

const STAGING_PREFIX: &str = ".staging-";
const TRASH_PREFIX: &str = ".trash-";
/// Sequence numbers are written with at least this many digits.
const SEQ_DIGITS: usize = 6;

/// A run's id: its UTC start time and its number in the job's sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub started: String,
    pub seq: u64,
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:0w$}", self.started, self.seq, w = SEQ_DIGITS)
    }
}

impl RunId {
    /// The id of a run folder named `<start>-<seq>`; `None` for other names (runs
    /// written before sequence numbers).
    pub fn parse(name: &str) -> Option<Self> {
        let (started, seq) = name.rsplit_once('-')?;
        if seq.len() < SEQ_DIGITS || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            started: started.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

pub struct RunFolder {
    owned: Owned,
    job_dir: PathBuf,
    run_id: RunId,
    committed: bool,
}

impl RunFolder {
    /// Claim a run id for a run of `job` started at `started`, creating and owning its
    /// staging folder, after removing abandoned ones.
    pub fn create(
        output: &Path,
        job: &str,
        started: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self> {
        let job_dir = output.join(job);
        std::fs::create_dir_all(&job_dir).map_err(|e| {
            Error::bad_input(format!(
                "output folder {}: cannot create it ({e}); check [job] output",
                job_dir.display()
            ))
        })?;
        remove_abandoned(&job_dir);
        let started = started.format("%Y%m%dT%H%M%SZ").to_string();
        let mut seq = highest_seq(&job_dir)? + 1;
        for _ in 0..1000 {
            let staging = job_dir.join(format!("{STAGING_PREFIX}{seq:0w$}", w = SEQ_DIGITS));
            let Some(owned) = Owned::create(&staging).map_err(|e| not_writable(&staging, e))?
            else {
                seq += 1;
                continue;
            };
            // A run that held this number may have been renamed into place between our
            // listing and our claim: its folder is visible now.
            if committed_seqs(&job_dir)?.contains(&seq) {
                let _ = std::fs::remove_dir_all(&staging);
                seq += 1;
                continue;
            }
            crate::faults::point("run.claimed");
            let q = staging.join("quarantine");
            std::fs::create_dir(&q).map_err(io_at(&q, "creating"))?;
            return Ok(Self {
                owned,
                job_dir,
                run_id: RunId { started, seq },
                committed: false,
            });
        }
        Err(Error::failed(format!(
            "{}: could not claim a run id",
            job_dir.display()
        )))
    }

    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.owned.path().join(name)
    }

    pub fn staging_dir(&self) -> &Path {
        self.owned.path()
    }

    /// Where the run will be once committed.
    pub fn final_dir(&self) -> PathBuf {
        self.job_dir.join(self.run_id.to_string())
    }

    /// Write one small file of the run (JSON, HTML).
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(name);
        std::fs::write(&p, bytes).map_err(io_at(&p, "writing"))
    }

    /// Flush every file and folder to disk and rename the staging folder into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        crate::faults::point("run.commit");
        durable::sync_tree(self.owned.path())?;
        let dir = self.final_dir();
        crate::faults::point("run.before_rename");
        std::fs::rename(self.owned.path(), &dir).map_err(io_at(&dir, "renaming the run into"))?;
        self.owned.moved_to(&dir);
        self.committed = true;
        durable::sync_dir(&self.job_dir)?;
        crate::faults::point("run.after_rename");
        let _ = std::fs::remove_file(dir.join(durable::LOCK_FILE));
        Ok(dir)
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(self.owned.path());
        }
    }
}

/// Sequence numbers of the job's run folders (complete or not: a folder being renamed
/// into place has its manifest already).
/// A job folder the run cannot write in is the job's setting to fix, as one it cannot
/// create is (regression: exit 1, not naming `[job] output`); other faults keep their
/// kind.
fn not_writable(staging: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
    match e.kind() {
        PermissionDenied | ReadOnlyFilesystem => bad_input!(
            "output folder {}: cannot write in it ({e}); check [job] output, and make the folder writable or choose another",
            staging.parent().unwrap_or(staging).display()
        ),
        _ => io_at(staging, "creating")(e),
    }
}

fn committed_seqs(job_dir: &Path) -> Result<Vec<u64>> {
    Ok(std::fs::read_dir(job_dir)
        .map_err(io_at(job_dir, "reading"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            // Hidden names (staging, trash) end in a number too; they are no runs.
            (!name.starts_with('.'))
                .then(|| RunId::parse(&name))?
                .map(|r| r.seq)
        })
        .collect())
}

/// The highest sequence number held by a run folder or a staging folder.
fn highest_seq(job_dir: &Path) -> Result<u64> {
    let staging = std::fs::read_dir(job_dir)
        .map_err(io_at(job_dir, "reading"))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(STAGING_PREFIX)?.parse::<u64>().ok()
        })
        .max();
    Ok(committed_seqs(job_dir)?
        .into_iter()
        .chain(staging)
        .max()
        .unwrap_or(0))
}

/// Remove staging folders whose owner is gone, and half-removed ones.
fn remove_abandoned(job_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING_PREFIX) {
            let trash = job_dir.join(format!("{TRASH_PREFIX}{:016x}", rand::random::<u64>()));
            if durable::remove_if_abandoned(&e.path(), &trash) {
                tracing::info!("removed the staging folder of a run that was killed: {name}");
            }
        } else if name.starts_with(TRASH_PREFIX) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A run folder file that cannot be read as the run wrote it.
pub fn damaged(path: &Path, e: datafusion::error::DataFusionError) -> Error {
    bad_input!(
        "run folder file {} is damaged ({}); it changed after the run wrote it: restore the run folder from a copy, or move it out of the job's output folder (the job's later runs compare with its latest run, so running again reads it again)",
        path.display(),
        e.strip_backtrace()
    )
    .with_source(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().into()
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rs-rf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn commit_with_seq(rf: RunFolder) -> PathBuf {
        let seq = rf.run_id().seq;
        rf.write("manifest.json", format!("{{\"seq\": {seq}}}").as_bytes())
            .unwrap();
        rf.commit().unwrap()
    }

    /// Complete runs of a job, oldest first, through the run store.
    fn list_runs(output: &Path, job: &str) -> Vec<PathBuf> {
        let store = crate::outputs::run_store::RunStore::local(output);
        futures::executor::block_on(store.list(job))
            .unwrap()
            .iter()
            .map(|r| r.location())
            .collect()
    }

    /// Regression (fault review of 2026-12-07): a job folder the run could not write
    /// in was exit 1, not naming the setting; one it could not create was exit 2.
    #[test]
    fn a_job_folder_it_cannot_write_in_is_the_jobs_setting_to_fix() {
        use std::io::{Error as IoError, ErrorKind};
        let staging = Path::new("/runs/job/.staging-000001");
        for kind in [ErrorKind::PermissionDenied, ErrorKind::ReadOnlyFilesystem] {
            let e = not_writable(staging, IoError::from(kind));
            assert_eq!(e.exit_code(), 2, "{kind:?}");
            assert!(
                e.message
                    .starts_with("output folder /runs/job: cannot write in it")
                    && e.message.contains("check [job] output"),
                "{}",
                e.message
            );
        }
        let e = not_writable(staging, IoError::from(ErrorKind::StorageFull));
        assert_eq!(e.exit_code(), 1, "{}", e.message);
    }

    #[test]
    fn uncommitted_run_leaves_nothing() {
        let tmp = scratch("drop");
        {
            let rf = RunFolder::create(&tmp, "job", at("2026-01-01T00:00:00Z")).unwrap();
            std::fs::write(rf.path("x"), b"x").unwrap();
        }
        assert!(std::fs::read_dir(tmp.join("job")).unwrap().next().is_none());
        let rf = RunFolder::create(&tmp, "job", at("2026-01-01T00:00:00Z")).unwrap();
        let dir = commit_with_seq(rf);
        assert_eq!(dir, tmp.join("job/20260101T000000Z-000001"));
        assert!(!dir.join(durable::LOCK_FILE).exists());
        assert_eq!(list_runs(&tmp, "job"), vec![dir]);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn runs_in_one_second_get_distinct_ids_and_newest_ignores_the_clock() {
        let tmp = scratch("ids");
        let t = at("2026-01-01T00:00:00Z");
        let a = RunFolder::create(&tmp, "job", t).unwrap();
        let b = RunFolder::create(&tmp, "job", t).unwrap();
        assert_ne!(a.final_dir(), b.final_dir());
        let (b_dir, a_dir) = (commit_with_seq(b), commit_with_seq(a));
        // The clock jumped back a year before the third run: it is still the newest.
        let c =
            commit_with_seq(RunFolder::create(&tmp, "job", at("2025-01-01T00:00:00Z")).unwrap());
        assert_eq!(list_runs(&tmp, "job"), vec![a_dir, b_dir, c.clone()]);
        let store = crate::outputs::run_store::RunStore::local(&tmp);
        let newest = futures::executor::block_on(store.latest("job")).unwrap();
        assert_eq!(newest.map(|r| r.location()), Some(c));
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn only_abandoned_staging_folders_are_removed() {
        let tmp = scratch("stale");
        // A killed run's folder (no owner, whatever its name says about a pid) and a
        // live one (its lock held).
        let stale = tmp.join("job/.staging-r0-1");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(durable::LOCK_FILE), b"").unwrap();
        let live = RunFolder::create(&tmp, "job", at("2026-01-01T00:00:00Z")).unwrap();
        std::fs::write(live.path("features.parquet"), b"x").unwrap();
        let _next = RunFolder::create(&tmp, "job", at("2026-01-01T00:00:00Z")).unwrap();
        assert!(!stale.exists());
        assert!(live.path("features.parquet").exists());
        drop(live);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

//! A run is written into a staging folder beside its final place and renamed into
//! place only when complete. Rename within one file system is atomic, so a reader
//! sees a whole run folder or none; a run that fails or is killed leaves only a
//! hidden staging folder, which the next run of the job removes.

use crate::bad_input;
use crate::error::{Error, Result};
use crate::outputs::manifest::Manifest;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use std::path::{Path, PathBuf};

const STAGING_PREFIX: &str = ".staging-";

pub struct RunFolder {
    staging: PathBuf,
    job_dir: PathBuf,
    run_id: String,
    committed: bool,
}

impl RunFolder {
    /// Create `<output>/<job>/.staging-<run_id>-<pid>/`, first removing staging
    /// folders left by runs that no longer exist.
    pub fn create(output: &Path, job: &str, run_id: &str) -> Result<Self> {
        let job_dir = output.join(job);
        std::fs::create_dir_all(&job_dir).map_err(|e| {
            Error::bad_input(format!(
                "output folder {}: cannot create it ({e}); check [job] output",
                job_dir.display()
            ))
        })?;
        remove_stale_staging(&job_dir);
        let staging = job_dir.join(format!("{STAGING_PREFIX}{run_id}-{}", std::process::id()));
        std::fs::create_dir_all(staging.join("quarantine"))?;
        Ok(Self {
            staging,
            job_dir,
            run_id: run_id.to_string(),
            committed: false,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Where the run will be once committed (a suffix is added if taken).
    pub fn final_dir(&self) -> PathBuf {
        let mut dir = self.job_dir.join(&self.run_id);
        let mut k = 1;
        while dir.exists() {
            dir = self.job_dir.join(format!("{}-{k}", self.run_id));
            k += 1;
        }
        dir
    }

    /// Flush every file to disk and rename the staging folder into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        sync_tree(&self.staging)?;
        let dir = self.final_dir();
        std::fs::rename(&self.staging, &dir)?;
        if let Ok(d) = std::fs::File::open(&self.job_dir) {
            let _ = d.sync_all();
        }
        self.committed = true;
        Ok(dir)
    }
}

impl Drop for RunFolder {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

fn sync_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            std::fs::File::open(&p)?.sync_all()?;
        }
    }
    Ok(())
}

/// Remove `.staging-*-<pid>` folders whose process is gone (killed runs).
fn remove_stale_staging(job_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(job_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(STAGING_PREFIX) else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Completed run folders of a job, oldest first (staging folders excluded).
pub fn list_runs(output: &Path, job: &str) -> Vec<PathBuf> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(output.join(job))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            !e.file_name().to_string_lossy().starts_with('.')
                && e.path().join("manifest.json").is_file()
        })
        .map(|e| e.path())
        .collect();
    runs.sort();
    runs
}

/// The manifest of a complete run folder: readers of runs (the gate, commissioner
/// views) start here.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).map_err(|_| {
        bad_input!(
            "--run {}: not a complete run folder (no manifest.json)",
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| bad_input!("--run {}: manifest.json is unreadable ({e})", dir.display()))
}

/// Register one Parquet file of a run folder as a table.
pub async fn register_file(ctx: &SessionContext, name: &str, path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(bad_input!(
            "run folder: {} is missing; is this a complete run?",
            path.display()
        ));
    }
    ctx.register_parquet(
        name,
        path.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| damaged(path, e))?;
    Ok(())
}

/// A run folder file that cannot be read as the run wrote it.
pub fn damaged(path: &Path, e: datafusion::error::DataFusionError) -> Error {
    bad_input!(
        "run folder file {} is damaged ({}); it changed after the run wrote it: restore the run folder from a copy or run the job again",
        path.display(),
        e.strip_backtrace()
    )
    .with_source(e)
}

/// After a query of run folders failed on a Parquet decoding error, name the damaged
/// file (decoding each Parquet file of the runs in turn); any other error as it is.
pub async fn name_damaged_file(
    dirs: &[&Path],
    e: datafusion::error::DataFusionError,
) -> std::result::Result<Error, datafusion::error::DataFusionError> {
    if !crate::damage::caused_by_decoding(&e) {
        return Err(e);
    }
    let Ok(ctx) = crate::session::new_context(&Default::default()) else {
        return Err(e);
    };
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|f| f.path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        files.sort();
        for f in files {
            if let Err(err) = crate::damage::decode(&ctx, &f.to_string_lossy(), None).await
                && crate::damage::caused_by_decoding(&err)
            {
                return Ok(damaged(&f, err));
            }
        }
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_run_leaves_nothing() {
        let tmp = std::env::temp_dir().join(format!("rs-rf-{}", std::process::id()));
        {
            let rf = RunFolder::create(&tmp, "job", "r1").unwrap();
            std::fs::write(rf.path("x"), b"x").unwrap();
        }
        assert!(std::fs::read_dir(tmp.join("job")).unwrap().next().is_none());
        let rf = RunFolder::create(&tmp, "job", "r1").unwrap();
        std::fs::write(rf.path("manifest.json"), b"{}").unwrap();
        let dir = rf.commit().unwrap();
        assert_eq!(dir, tmp.join("job/r1"));
        assert_eq!(list_runs(&tmp, "job"), vec![dir]);
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn stale_staging_of_dead_process_is_removed() {
        let tmp = std::env::temp_dir().join(format!("rs-rf2-{}", std::process::id()));
        let stale = tmp.join("job/.staging-r0-999999999");
        std::fs::create_dir_all(&stale).unwrap();
        let _rf = RunFolder::create(&tmp, "job", "r1").unwrap();
        assert!(!stale.exists());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}

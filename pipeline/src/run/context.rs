//! What every stage of a run shares, in one value: the job, the DataFusion session, the
//! SQL and its bound parameters, the clock, progress and timings, and the run folder
//! being written with the files written into it so far.

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::job::Job;
use crate::outputs::run_folder::RunId;
use crate::outputs::run_store::{RunStore, RunWriter};
use crate::progress::Progress;
use crate::session::{SessionOptions, new_context};
use crate::sql::{Params, SqlSource};
use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use std::path::PathBuf;
use std::sync::Mutex;

pub struct RunContext<'j> {
    pub job: &'j Job,
    pub ctx: SessionContext,
    pub sql: SqlSource,
    pub params: Params,
    pub clock: Clock,
    pub started: DateTime<Utc>,
    pub progress: Progress,
    /// `None` when the inputs are only checked (`validate`): nothing is written.
    folder: Option<RunWriter>,
    /// The run folder's files in the order they were written (the manifest's `outputs`).
    outputs: Mutex<Vec<String>>,
}

impl<'j> RunContext<'j> {
    /// A context that reads and checks the inputs and writes nothing. Its session runs
    /// in-process, or on the job's `[cluster]`.
    pub async fn checking(job: &'j Job, clock: Clock) -> Result<Self> {
        let opts = SessionOptions::from_job(&job.resources)?;
        let ctx = match &job.cluster {
            None => new_context(&opts)?,
            Some(c) => crate::session::cluster::connect(&opts, c).await?,
        };
        Ok(Self {
            job,
            ctx,
            sql: SqlSource {
                override_dir: job.sql_dir.clone(),
            },
            params: Params {
                as_of: job.as_of,
                feedback_months: job.feedback_months,
            },
            started: clock.now(),
            clock,
            progress: Progress::new(),
            folder: None,
            outputs: Mutex::new(Vec::new()),
        })
    }

    /// A context for a run: claims the run's id and folder in the job's run store.
    pub async fn claim(job: &'j Job, clock: Clock) -> Result<Self> {
        let mut rc = Self::checking(job, clock).await?;
        let folder = RunStore::of(&job.output, &job.storage)?
            .create(&job.name, rc.started)
            .await?;
        rc.folder = Some(folder);
        Ok(rc)
    }

    pub fn run_id(&self) -> Option<&RunId> {
        self.folder.as_ref().map(RunWriter::run_id)
    }

    /// Where a run file would go; `None` when this context writes nothing.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.folder.as_ref().map(|f| f.path(name))
    }

    /// Record a file written into the run folder as one of the run's outputs.
    pub fn record(&self, name: &str) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|p| p.into_inner());
        if !outputs.iter().any(|o| o == name) {
            outputs.push(name.to_string());
        }
    }

    /// Where a run file goes, recorded as an output: for the stages only a run has.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.path(name).ok_or_else(|| no_folder(name))?;
        self.record(name);
        Ok(path)
    }

    /// Write a whole run file.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let folder = self.folder.as_ref().ok_or_else(|| no_folder(name))?;
        folder.write(name, bytes)?;
        self.record(name);
        Ok(())
    }

    pub fn outputs(&self) -> Vec<String> {
        self.outputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The folder, for the last step of a run: committing it.
    pub fn into_folder(self) -> Result<RunWriter> {
        self.folder.ok_or_else(|| no_folder("the run folder"))
    }
}

fn no_folder(name: &str) -> Error {
    Error::failed(format!(
        "internal: {name} is written by a run, but this context only checks inputs"
    ))
}

//! THE re-identification gate. Read this file to know when names leave riskstrat.
//!
//! A list is released only when, checked in this order:
//! 1. the team is in the care-team registry;
//! 2. the requester is one of its members;
//! 3. an approval in the intact audit log covers this team, this cohort and the
//!    direct-care purpose, and has not expired;
//! 4. the vault key opens the vault;
//! 5. the run folder is a complete run that made this cohort, under its own run id;
//! 6. one of those approvals names the run's job (a cohort's name alone could be
//!    any job's, with any SQL behind it).
//!
//! It holds only the cohort's people registered at the run's `A` with a practice the
//! team serves, who are in the vault (which holds no one with an opt-out: see
//! `pseudonymise`), with the minimum fields of `sql/gate/release.sql`. The audit
//! record is written before the list is put in place; if it cannot be written,
//! nothing is released. Every refusal is audited too, and is exit code 2.
//!
//! A change list (`changes`) passes the same checks and holds only what changed since
//! the team's previous release of the cohort (the last `reidentify` record for this
//! team and cohort in the audit log): the people who entered the team's list, with the
//! same minimum fields, and those who left it, with only what identifies them
//! (`sql/gate/changes.sql`). The previous list is recomputed from that release's run,
//! which must sit beside this one; its record's `seq` goes into this one's
//! `compared_with`. A team with no previous release gets its whole list first.

use crate::bad_input;
use crate::durable::{self, io_at};
use crate::error::{Error, Result};
use crate::governance::audit::{self, Record};
use crate::governance::pseudonym::Key;
use crate::governance::teams::{Approval, DIRECT_CARE, Registry, Team, approvals};
use crate::governance::{refuse_inside, vault};
use crate::outputs::manifest::Manifest;
use crate::outputs::run_store::RunHandle;
use crate::session::{SessionOptions, new_context};
use crate::sql::Params;
use chrono::NaiveDate;
use datafusion::arrow::array::{BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::catalog::MemTable;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct Request<'a> {
    pub run: &'a Path,
    pub cohort: &'a str,
    pub team: &'a str,
    pub requester: &'a str,
    pub vault: &'a Path,
    pub vault_key_path: &'a Path,
    pub registry: &'a Registry,
    pub audit_log: &'a Path,
    /// The list's path without extension: `.csv` and `.parquet` are written.
    pub out: &'a Path,
    pub today: NaiveDate,
    /// Release only the changes since the team's previous release of this cohort.
    pub changes: bool,
}

#[derive(Debug)]
pub struct Release {
    pub patients: u64,
    /// Cohort people at the team's practices who are not in the vault (opted out
    /// since the run, or not in this vault): counted, never named.
    pub not_in_vault: u64,
    /// Cohort people whose practice in the run is not the one the vault records
    /// (the run's files altered, or a vault older than the extract): never named.
    pub practice_differs: u64,
    pub csv: PathBuf,
    pub parquet: PathBuf,
    pub audit_seq: u64,
    /// For a change list: what it was compared with and what changed.
    pub changes: Option<Changes>,
}

/// A change list's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The audit `seq` of the team's previous release of the cohort.
    pub compared_with: u64,
    /// That release's run.
    pub earlier_run: String,
    pub entered: u64,
    pub left: u64,
}

/// The team's previous release of the cohort: its audit record's `seq` and its run.
struct Earlier {
    seq: u64,
    run: RunHandle,
}

/// Audit a refusal, then return it as bad input. If even the refusal cannot be
/// audited, that failure is returned: nothing is released either way.
fn refuse(req: &Request, run: Option<&str>, why: &str, message: String) -> Error {
    let record = Record {
        actor: req.requester.to_string(),
        action: audit::Action::Refuse,
        team: Some(req.team.to_string()),
        purpose: Some(DIRECT_CARE.into()),
        run: run.map(str::to_string),
        cohort: Some(req.cohort.to_string()),
        detail: Some(format!("reidentify: {why}")),
        ..Default::default()
    };
    match audit::append(req.audit_log, record) {
        Ok(_) => bad_input!("{message} (refusal audited)"),
        Err(e) => e,
    }
}

/// The run, and the name of its cohort file.
async fn open_run(
    run: &RunHandle,
    cohort: &str,
) -> std::result::Result<(Manifest, String), String> {
    let manifest = run.manifest().await.map_err(|e| e.message)?;
    // Regression: a copy of a run with its files altered was released, and audited
    // under the original run's id.
    if run.name() != manifest.run_id {
        return Err(format!(
            "--run {}: the folder is named {} but its manifest is run {}: a copied or renamed run folder; release from the run folder as the job wrote it",
            run.location().display(),
            run.name(),
            manifest.run_id
        ));
    }
    let file = format!("cohort_{cohort}.parquet");
    if !manifest.cohorts.contains_key(cohort) || !run.exists(&file).await {
        let names: Vec<&str> = manifest.cohorts.keys().map(String::as_str).collect();
        return Err(format!(
            "--cohort {cohort}: run {} made no such cohort (it made: {})",
            manifest.run_id,
            names.join(", ")
        ));
    }
    Ok((manifest, file))
}

/// Release a list from the run `req.run`: a folder, or a run's URL in an object store.
pub async fn reidentify(req: &Request<'_>) -> Result<Release> {
    reidentify_from(req, &RunHandle::at(req.run)?).await
}

/// Release a list from `run`, a run of any run store (`req.run` names it for the
/// `--out` check). The checks run in the order the module's documentation lists.
pub async fn reidentify_from(req: &Request<'_>, run: &RunHandle) -> Result<Release> {
    let out = Out::prepare(req)?;
    // 1-3: who asks, and whether they may.
    let (team, covering) = authorise(req)?;
    // 4: the vault opens only with its key.
    let vault_rows =
        match Key::read_file(req.vault_key_path).and_then(|k| vault::read(req.vault, &k)) {
            Ok(rows) => rows,
            Err(e) => {
                return Err(refuse(
                    req,
                    None,
                    "vault key does not open the vault",
                    e.message,
                ));
            }
        };
    // 5: the run and its cohort.
    let (manifest, cohort_file) = match open_run(run, req.cohort).await {
        Ok(x) => x,
        Err(message) => return Err(refuse(req, None, "no such run or cohort", message)),
    };
    // 6: an approval for the run's job.
    let Some(approval) = covering
        .into_iter()
        .rev()
        .find(|a| a.job.as_deref() == Some(manifest.job.as_str()))
    else {
        return Err(refuse(
            req,
            Some(&manifest.run_id),
            "no approval for this job",
            format!(
                "team {} is approved for cohort {} of other jobs, not of job {} (approvals given before 0.6.2 name no job and cover none); ask the gate operator to run `riskstrat approve --job {}`",
                req.team, req.cohort, manifest.job, manifest.job
            ),
        ));
    };
    let lists = Lists {
        run,
        manifest: &manifest,
        cohort_file: &cohort_file,
        practices: &team.practices,
    };
    let (rows, earlier) = if req.changes {
        let earlier = match earlier_release(req, run).await {
            Ok(e) => e,
            Err((why, message)) => {
                return Err(refuse(req, Some(&manifest.run_id), why, message));
            }
        };
        (lists.changes(vault_rows, &earlier).await?, Some(earlier))
    } else {
        (lists.release(vault_rows).await?, None)
    };
    let (list, withheld) = named_rows(rows)?;
    let changes = earlier.map(|e| Changes {
        compared_with: e.seq,
        earlier_run: e.run.name().to_string(),
        entered: count_change(&list, "entered"),
        left: count_change(&list, "left"),
    });
    out.publish(req, &manifest, &approval, &list, withheld, changes)
}

/// The last release of `req.cohort` to `req.team` in the (verified) audit log, and its
/// run, found beside `run`; or why there is none to compare with.
async fn earlier_release(
    req: &Request<'_>,
    run: &RunHandle,
) -> std::result::Result<Earlier, (&'static str, String)> {
    let records = audit::read(req.audit_log).map_err(|e| ("audit log unreadable", e.message))?;
    // The team's list is the last one delivered: a release audited but never put in
    // place (killed, or its rename failed) never reached the team (regression: it
    // became the baseline, and its entrants were never sent).
    let theirs = |r: &&Record, action| {
        r.action == action
            && r.team.as_deref() == Some(req.team)
            && r.cohort.as_deref() == Some(req.cohort)
    };
    let Some(last) = records
        .iter()
        .rev()
        .find(|r| theirs(r, audit::Action::Delivered))
    else {
        let (team, cohort) = (req.team, req.cohort);
        let released_before = records
            .iter()
            .any(|r| theirs(&r, audit::Action::Reidentify));
        let what = match released_before {
            true => format!(
                "has no list of cohort {cohort} whose delivery is recorded (releases before 0.6.1 recorded none, or the last one was not put in place)"
            ),
            false => format!("has had no list of cohort {cohort}"),
        };
        return Err((
            "no earlier release to compare with",
            format!(
                "--changes: team {team} {what}; release its whole list first (reidentify without --changes)"
            ),
        ));
    };
    let released = last.compared_with.unwrap_or_default();
    let run_id = last.run.as_deref().unwrap_or_default();
    let earlier = run.sibling(run_id);
    let found = is_run_id(run_id)
        && matches!(earlier.manifest().await, Ok(m) if m.run_id == run_id && m.cohorts.contains_key(req.cohort));
    if !found {
        return Err((
            "earlier release's run not found",
            format!(
                "--changes: the team's previous list of cohort {} (audit record {}) came from run {run_id:?}, which is not a complete run beside {} that made this cohort; restore that run folder, or release the whole list (reidentify without --changes)",
                req.cohort,
                released,
                run.location().display()
            ),
        ));
    }
    Ok(Earlier {
        seq: released,
        run: earlier,
    })
}

/// Whether an audited run id names a folder beside the run, not a path elsewhere: a
/// run's manifest is the analyst's, and its id reaches the audit log from there.
fn is_run_id(id: &str) -> bool {
    !id.is_empty() && id != "." && id != ".." && !id.contains(['/', '\\'])
}

fn count_change(list: &[RecordBatch], change: &str) -> u64 {
    list.iter()
        .map(|b| {
            b.column_by_name("change")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .map_or(0, |c| {
                    c.iter().filter(|v| *v == Some(change)).count() as u64
                })
        })
        .sum()
}

/// `--out FILE`'s file with extension `ext`: FILE.ext, FILE's own `.csv` or
/// `.parquet` replaced (regression: `--out T01.2026-01` wrote T01.csv, and the next
/// month's list overwrote it).
fn list_file(out: &Path, ext: &str) -> PathBuf {
    let known = out
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("csv") || e.eq_ignore_ascii_case("parquet"));
    if known {
        return out.with_extension(ext);
    }
    let mut name = out.as_os_str().to_os_string();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// A list file inside a folder `pseudonymise` wrote (it holds its summary), however
/// deep: refused.
fn refuse_among_pseudonymised_tables(list: &Path) -> Result<()> {
    // Its folder as it will be once made (code review of 2026-12-07: a folder not yet
    // made, given relative to one inside the data, was searched from itself only).
    let data = durable::absolute(list)
        .ancestors()
        .skip(1)
        .find(|a| a.join(crate::pseudonymise::SUMMARY_FILE).is_file())
        .map(Path::to_path_buf);
    match data {
        Some(data) => Err(bad_input!(
            "--out {}: inside {}, a folder of pseudonymised tables the analysts read; write lists on the gate's side",
            list.display(),
            data.display()
        )),
        None => Ok(()),
    }
}

/// The SHA-256 of every file the gate released (the list's CSV and Parquet), from
/// the audit log's release records.
fn released_files(log: &Path) -> Result<HashSet<String>> {
    if !log.exists() {
        return Ok(HashSet::new());
    }
    let mut released = HashSet::new();
    for r in audit::read(log)? {
        if r.action != audit::Action::Reidentify {
            continue;
        }
        released.extend(r.file_sha256);
        let parquet = r.detail.as_deref().unwrap_or_default().split(' ');
        released
            .extend(parquet.filter_map(|w| w.strip_prefix("parquet_sha256=").map(str::to_string)));
    }
    Ok(released)
}

/// A file at the list's name is replaced only when it is a list this gate released,
/// unchanged: never the vault, a key, the audit log or anything else (regression:
/// `--out gate/vault` replaced the encrypted vault with a plaintext list).
fn refuse_unreleased(file: &Path, released: &HashSet<String>, out: &Path) -> Result<()> {
    if !file.exists() || (file.is_file() && released.contains(&sha256_of(file)?)) {
        return Ok(());
    }
    Err(bad_input!(
        "--out {}: {} exists and is not a list this gate released (no release record in the audit log has its SHA-256); the list would replace it, so name a new file or move that one away",
        out.display(),
        file.display()
    ))
}

/// The list's two files, their folder made, held by this writer alone.
struct Out {
    csv: PathBuf,
    parquet: PathBuf,
    _lock: durable::TargetLock,
}

impl Out {
    fn prepare(req: &Request) -> Result<Self> {
        let (csv, parquet) = (list_file(req.out, "csv"), list_file(req.out, "parquet"));
        // Names go nowhere the analysts work: not beside the job's runs, nor among
        // pseudonymised tables (regression: `--out pseudonymised/patients` put the list
        // where the next run reads its patients).
        // The output folder of the run's job (which holds every job's runs), when the
        // run is one on this disk.
        let output = req
            .run
            .canonicalize()
            .ok()
            .and_then(|r| Some(r.parent()?.parent()?.to_path_buf()));
        for p in [&csv, &parquet] {
            refuse_inside(p, output.as_deref().unwrap_or(req.run), "--out")?;
            refuse_among_pseudonymised_tables(p)?;
        }
        if let Some(parent) = csv.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                bad_input!(
                    "--out {}: cannot create its folder ({e})",
                    req.out.display()
                )
            })?;
        }
        // One writer of this list at a time; what a killed one left (hidden copies with
        // names) goes now.
        let lock = durable::lock_target(&csv)?;
        for p in [&csv, &parquet] {
            for tmp in durable::hidden_siblings(p, "tmp") {
                durable::remove(&tmp).map_err(io_at(&tmp, "removing"))?;
            }
        }
        if csv.exists() || parquet.exists() {
            let released = released_files(req.audit_log)?;
            for p in [&csv, &parquet] {
                refuse_unreleased(p, &released, req.out)?;
            }
        }
        Ok(Self {
            csv,
            parquet,
            _lock: lock,
        })
    }

    /// Written beside their final names, audited, then put in place: no audit record,
    /// no list.
    fn publish(
        self,
        req: &Request,
        manifest: &Manifest,
        approval: &Approval,
        list: &[RecordBatch],
        withheld: Withheld,
        changes: Option<Changes>,
    ) -> Result<Release> {
        let Withheld {
            not_in_vault,
            practice_differs,
        } = withheld;
        let patients: u64 = list.iter().map(|b| b.num_rows() as u64).sum();
        let (csv, parquet) = (&self.csv, &self.parquet);
        let tmp_csv = durable::staging_name(csv);
        let tmp_parquet = durable::staging_name(parquet);
        let audited = write_list(&tmp_csv, &tmp_parquet, list).and_then(|_| {
            audit::append(
                req.audit_log,
                Record {
                    actor: req.requester.to_string(),
                    action: audit::Action::Reidentify,
                    team: Some(req.team.to_string()),
                    purpose: Some(DIRECT_CARE.into()),
                    run: Some(manifest.run_id.clone()),
                    cohort: Some(req.cohort.to_string()),
                    patients: Some(patients),
                    file_sha256: Some(sha256_of(&tmp_csv)?),
                    detail: Some(format!(
                        "parquet_sha256={} not_in_vault={not_in_vault} practice_differs={practice_differs}{}",
                        sha256_of(&tmp_parquet)?,
                        changes.as_ref().map_or(String::new(), |c| format!(
                            " changes_since_run={} entered={} left={}",
                            c.earlier_run, c.entered, c.left
                        )),
                    )),
                    approver: Some(approval.approver.clone()),
                    expires: Some(approval.expires),
                    compared_with: changes.as_ref().map(|c| c.compared_with),
                    ..Default::default()
                },
            )
        });
        let record = match audited {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp_csv);
                let _ = std::fs::remove_file(&tmp_parquet);
                return Err(
                    Error::failed(format!("nothing released: {}", e.message)).with_source(e)
                );
            }
        };
        self.deliver(req, &record, (&tmp_csv, &tmp_parquet))?;
        Ok(Release {
            patients,
            not_in_vault,
            practice_differs,
            csv: self.csv,
            parquet: self.parquet,
            audit_seq: record.seq,
            changes,
        })
    }

    /// The audited release's files put in place from their staging names, then its
    /// delivery audited: only a delivered list is the team's previous one.
    fn deliver(&self, req: &Request, record: &Record, tmp: (&Path, &Path)) -> Result<()> {
        let (csv, parquet) = (&self.csv, &self.parquet);
        let (tmp_csv, tmp_parquet) = tmp;
        crate::faults::point("reidentify.before_rename");
        let placed = std::fs::rename(tmp_csv, csv)
            .map_err(io_at(csv, "renaming into place"))
            .and_then(|_| {
                crate::faults::point("reidentify.between_renames");
                std::fs::rename(tmp_parquet, parquet).map_err(io_at(parquet, "renaming into place"))
            })
            .and_then(
                |_| match csv.parent().filter(|p| !p.as_os_str().is_empty()) {
                    Some(parent) => durable::sync_dir(parent),
                    None => Ok(()),
                },
            );
        if let Err(e) = placed {
            // Names and NHS numbers are not left in hidden copies.
            let _ = std::fs::remove_file(tmp_csv);
            let _ = std::fs::remove_file(tmp_parquet);
            return Err(e);
        }
        let delivered = Record {
            actor: record.actor.clone(),
            action: audit::Action::Delivered,
            team: record.team.clone(),
            run: record.run.clone(),
            cohort: record.cohort.clone(),
            patients: record.patients,
            file_sha256: record.file_sha256.clone(),
            compared_with: Some(record.seq),
            ..Default::default()
        };
        audit::append(req.audit_log, delivered).map_err(|e| {
            Error::failed(format!(
                "the list is at {} but its delivery could not be audited, so a later --changes will not compare with it: {}",
                csv.display(),
                e.message
            ))
            .with_source(e)
        })?;
        Ok(())
    }
}

/// Checks 1-3: the team exists, the requester is a member, and approvals in the
/// intact audit log cover this team, cohort and purpose today (newest last).
fn authorise<'r>(req: &Request<'r>) -> Result<(&'r Team, Vec<Approval>)> {
    let Some(team) = req.registry.team(req.team) else {
        return Err(refuse(
            req,
            None,
            "unknown team",
            format!(
                "--team {}: no such team in the care-team registry",
                req.team
            ),
        ));
    };
    if !team.members.iter().any(|m| m == req.requester) {
        return Err(refuse(
            req,
            None,
            "requester is not a member of the team",
            format!(
                "--requester {}: not a member of team {}",
                req.requester, req.team
            ),
        ));
    }
    let approved = if req.audit_log.exists() {
        approvals(req.audit_log)
            .map_err(|e| Error::failed(format!("{}; nothing released", e.message)).with_source(e))?
    } else {
        Vec::new()
    };
    let covering: Vec<Approval> = approved
        .iter()
        .filter(|a| a.covers(req.team, req.cohort, DIRECT_CARE, req.today))
        .cloned()
        .collect();
    if !covering.is_empty() {
        return Ok((team, covering));
    }
    let lapsed = approved
        .iter()
        .any(|a| a.team == req.team && a.cohort == req.cohort && a.purpose == DIRECT_CARE);
    let why = if lapsed {
        "approval expired"
    } else {
        "no approval for this team and cohort"
    };
    Err(refuse(
        req,
        None,
        why,
        format!(
            "team {} has no current {DIRECT_CARE} approval for cohort {} ({why}); ask the gate operator to run `riskstrat approve`",
            req.team, req.cohort
        ),
    ))
}

/// What the lists are made from: the run, its cohort and the team's practices.
struct Lists<'a> {
    run: &'a RunHandle,
    manifest: &'a Manifest,
    cohort_file: &'a str,
    practices: &'a [String],
}

impl Lists<'_> {
    /// `sql/gate/release.sql`: the team's whole list, each row marked whether its
    /// person is in the vault.
    async fn release(&self, vault_rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        let ctx = self.context(vault_rows).await?;
        self.query(&ctx, "gate/release.sql").await
    }

    /// `sql/gate/changes.sql`: who entered and who left the team's list since the
    /// earlier release.
    async fn changes(
        &self,
        vault_rows: Vec<RecordBatch>,
        earlier: &Earlier,
    ) -> Result<Vec<RecordBatch>> {
        let ctx = self.context(vault_rows).await?;
        earlier
            .run
            .register(&ctx, "previous_features", "features.parquet")
            .await?;
        earlier
            .run
            .register(&ctx, "previous_scores", "scores.parquet")
            .await?;
        // The same cohort, so the same file name, in the earlier run.
        earlier
            .run
            .register(&ctx, "previous_cohort", self.cohort_file)
            .await?;
        self.query(&ctx, "gate/changes.sql").await
    }

    /// A session holding the run's cohort, features and scores, the vault and the
    /// team's practices.
    async fn context(&self, vault_rows: Vec<RecordBatch>) -> Result<SessionContext> {
        let ctx = new_context(&SessionOptions::default())?;
        self.run.register(&ctx, "cohort", self.cohort_file).await?;
        self.run
            .register(&ctx, "features", "features.parquet")
            .await?;
        self.run.register(&ctx, "scores", "scores.parquet").await?;
        ctx.register_table(
            "vault",
            Arc::new(MemTable::try_new(vault::schema(), vec![vault_rows])?),
        )?;
        ctx.register_batch(
            "team_practices",
            RecordBatch::try_from_iter(vec![(
                "practice_code",
                Arc::new(StringArray::from(self.practices.to_vec())) as _,
            )])?,
        )?;
        Ok(ctx)
    }

    async fn query(&self, ctx: &SessionContext, file: &str) -> Result<Vec<RecordBatch>> {
        let df = crate::sql::query(
            ctx,
            &crate::sql::fixed(file)?,
            &Params::at(self.manifest.as_of),
        )
        .await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let mut rows = df.collect().await?;
        if rows.is_empty() {
            rows.push(RecordBatch::new_empty(schema));
        }
        Ok(rows)
    }
}

/// Cohort people at the team's practices whom a release does not name.
#[derive(Debug, Clone, Copy, Default)]
struct Withheld {
    not_in_vault: u64,
    practice_differs: u64,
}

/// Split off the rows the gate does not name (release.sql's `in_vault` and
/// `practice_confirmed`), and drop those two columns.
fn named_rows(rows: Vec<RecordBatch>) -> Result<(Vec<RecordBatch>, Withheld)> {
    let mut withheld = Withheld::default();
    let mut out = Vec::new();
    for b in rows {
        let flag = |name: &str| -> Result<(usize, BooleanArray)> {
            let idx = b.schema().index_of(name)?;
            let values = b
                .column(idx)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| Error::failed(format!("release.sql: {name} must be a boolean")))?
                .clone();
            Ok((idx, values))
        };
        let (in_idx, in_vault) = flag("in_vault")?;
        let (pc_idx, confirmed) = flag("practice_confirmed")?;
        let keep = datafusion::arrow::compute::and(&in_vault, &confirmed)?;
        withheld.not_in_vault += (b.num_rows() - in_vault.true_count()) as u64;
        withheld.practice_differs += (in_vault.true_count() - keep.true_count()) as u64;
        let kept = filter_record_batch(&b, &keep)?;
        let columns: Vec<usize> = (0..kept.num_columns())
            .filter(|&i| i != in_idx && i != pc_idx)
            .collect();
        out.push(kept.project(&columns)?);
    }
    Ok((out, withheld))
}

/// The list as CSV and Parquet, owner-only: it names people.
fn write_list(csv: &Path, parquet: &Path, list: &[RecordBatch]) -> Result<()> {
    let open = |p: &Path| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        opts.open(p)
            .map_err(|e| bad_input!("--out {}: cannot write it ({e})", p.display()))
    };
    let schema = list
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| Error::failed("release.sql returned no schema"))?;
    let mut w = datafusion::arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(open(csv)?);
    for b in list {
        w.write(b)?;
    }
    w.into_inner().sync_all()?;
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(open(parquet)?, schema, None)?;
    for b in list {
        w.write(b)?;
    }
    w.into_inner()?.sync_all()?;
    Ok(())
}

fn sha256_of(path: &Path) -> Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An earlier release's run id from a crafted manifest cannot send the gate to
    /// read another folder.
    #[test]
    fn a_dotted_out_name_keeps_its_dots() {
        let f = |out: &str, ext: &str| list_file(Path::new(out), ext);
        assert_eq!(
            f("lists/T01.2026-01", "csv"),
            Path::new("lists/T01.2026-01.csv")
        );
        assert_eq!(
            f("lists/T01.2026-02", "parquet"),
            Path::new("lists/T01.2026-02.parquet")
        );
        assert_eq!(f("lists/T01", "csv"), Path::new("lists/T01.csv"));
        assert_eq!(
            f("lists/T01.csv", "parquet"),
            Path::new("lists/T01.parquet")
        );
    }

    #[test]
    fn an_audited_run_id_cannot_point_outside_the_job() {
        for bad in [
            "",
            ".",
            "..",
            "../other-job/20260401T000000Z-1",
            "a/b",
            "a\\b",
            "/etc",
        ] {
            assert!(!is_run_id(bad), "{bad:?}");
        }
        assert!(is_run_id("20260401T020000Z-000001"));
    }
}

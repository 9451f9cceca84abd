//! The run store end to end: run ids under concurrency (the binary run four times at
//! once in one clock second), and a run folder in a second store implementation
//! (object_store's in-memory store) read by `query`'s commissioner session and by the
//! gate exactly as the same run on local disk.

use crate::common::*;
use object_store::ObjectStoreExt;
use object_store::memory::InMemory;
use riskstrat::gate::{Request, reidentify, reidentify_from};
use riskstrat::governance::disclosure_control::Policy;
use riskstrat::governance::teams::Registry;
use riskstrat::outputs::run_store::{RunHandle, RunStore};
use riskstrat::serve::Commissioner;
use riskstrat::serve::render::{Format, render};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Four runs of one job started at the same moment (one fixed clock second) give
/// four complete run folders, each manifest's run id its folder's name, read back
/// through the run store.
#[test]
fn four_runs_started_at_one_moment_give_four_complete_runs() {
    let dir = scratch("store_four_runs");
    let job = small_dataset().write(&dir, "2026-04-01");
    let children: Vec<Child> = (0..4)
        .map(|_| {
            riskstrat()
                .arg("run")
                .arg(&job)
                .env("RISKSTRAT_CLOCK", "2026-03-01T02:00:00Z")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let store = RunStore::local(&dir.join("runs"));
    let runs = block_on(store.list("test-job")).unwrap();
    assert_eq!(runs.len(), 4);
    let mut seqs = Vec::new();
    for r in &runs {
        let m = block_on(r.manifest()).unwrap();
        assert_eq!(m.run_id, r.name());
        assert!(m.run_id.starts_with("20260301T020000Z-"), "{}", m.run_id);
        assert_eq!(r.location().file_name().unwrap().to_str(), Some(r.name()));
        for f in &m.outputs {
            assert!(block_on(r.exists(f)), "{} lacks {f}", r.name());
        }
        seqs.push(m.seq.unwrap());
    }
    assert_eq!(seqs, vec![1, 2, 3, 4], "oldest first, one number each");
    let latest = block_on(store.latest("test-job")).unwrap().unwrap();
    assert_eq!(latest.name(), runs[3].name());
    // Nothing but the four runs is left in the job's folder.
    let names: Vec<String> = std::fs::read_dir(dir.join("runs/test-job"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

/// A run in-process with a clock the test sets: the run id, the folder's name and the
/// manifest's times come from that clock, and every stage is timed in the manifest
/// with every file it wrote listed.
#[test]
fn a_run_reads_its_times_from_the_clock_it_is_given() {
    use riskstrat::clock::Clock;
    let dir = scratch("store_set_clock");
    let job_file = small_dataset().write(&dir, "2026-04-01");
    let job = riskstrat::job::Job::load(&job_file, None).unwrap();
    let t = chrono::DateTime::parse_from_rfc3339("2031-05-06T07:08:09Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let out = block_on(riskstrat::run::run_with(&job, Clock::starting_at(t))).unwrap();
    let m = &out.manifest;
    assert!(m.run_id.starts_with("20310506T070809Z-"), "{}", m.run_id);
    assert_eq!(
        out.dir.file_name().unwrap().to_str(),
        Some(m.run_id.as_str())
    );
    assert!(m.started_utc >= t && m.started_utc - t < chrono::Duration::seconds(2));
    assert!(m.finished_utc >= m.started_utc);
    assert!(m.finished_utc - t < chrono::Duration::minutes(5));
    for stage in [
        "ingest", "validate", "features", "model", "score", "cohorts",
    ] {
        assert!(
            m.timings_ms.contains_key(stage),
            "{stage}: {:?}",
            m.timings_ms
        );
    }
    let mut on_disk: Vec<String> = walk(&out.dir)
        .into_iter()
        .map(|p| {
            p.strip_prefix(&out.dir)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let mut listed = m.outputs.clone();
    on_disk.sort();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "the manifest lists exactly the run's files"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Write the local run folder `run` as a new run of `store` through its writer (the
/// object-store commit: claim, upload, manifest last), the manifest's run id and
/// sequence number the new run's.
async fn copy_into(store: &RunStore, run: &Path) -> RunHandle {
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let job = manifest["job"].as_str().unwrap().to_string();
    let w = store.create(&job, chrono::Utc::now()).await.unwrap();
    for f in walk(run) {
        let rel = f.strip_prefix(run).unwrap();
        if rel == Path::new("manifest.json") {
            continue;
        }
        let to = w.path(&rel.to_string_lossy());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&f, &to).unwrap();
    }
    manifest["run_id"] = w.run_id().to_string().into();
    manifest["seq"] = w.run_id().seq.into();
    w.write(
        "manifest.json",
        &serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let id = w.run_id().to_string();
    w.commit().await.unwrap();
    store.open(&job, &id).await.unwrap()
}

/// Every query's answer (as CSV) or refusal, for comparing two sessions.
async fn answers(c: &Commissioner) -> Vec<String> {
    let queries = [
        "SELECT count(*) AS people, avg(risk) AS mean_risk FROM people",
        "SELECT tier, count(*) AS people FROM people GROUP BY tier ORDER BY tier",
        "SELECT sex, count(*) AS people, sum(age) AS age FROM people GROUP BY sex ORDER BY sex",
        "SELECT cohort, count(*) AS people FROM cohort_people GROUP BY cohort ORDER BY cohort",
        "SELECT cohort, tier, people, mean_risk FROM cohort_summary ORDER BY cohort, tier",
        "SELECT risk FROM people",
    ];
    let mut out = Vec::new();
    for q in queries {
        out.push(match c.query(q).await {
            Ok(a) => render(&a, Format::Csv).unwrap(),
            Err(e) => format!("refused: {}", e.message),
        });
    }
    out
}

/// The pseudonymised synthetic flow the gate needs: keys, vault, teams and one run.
fn gate_flow(dir: &Path) -> PathBuf {
    let ok = |o: std::process::Output| assert!(o.status.success(), "{}", stderr(&o));
    ok(riskstrat()
        .args([
            "synth",
            "--identifiable",
            "--patients",
            "4000",
            "--seed",
            "11",
        ])
        .args(["--as-of", "2026-04-01", "--out"])
        .arg(dir)
        .output()
        .unwrap());
    let mut pseudonymise = riskstrat();
    pseudonymise.arg("pseudonymise");
    for (flag, path) in [
        ("--key", "keys/pseudonym.key"),
        ("--in", "identifiable"),
        ("--out", "pseudonymised"),
        ("--vault", "gate/vault.parquet"),
        ("--vault-key", "keys/vault.key"),
    ] {
        pseudonymise.arg(flag).arg(dir.join(path));
    }
    ok(pseudonymise.output().unwrap());
    // The service evaluation only costs time here.
    let job = dir.join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap() + "\n[outcomes]\nevaluate = false\n";
    std::fs::write(&job, text).unwrap();
    let o = run_job(&dir.join("job.toml"));
    let run = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    ok(o);
    let tomorrow = (chrono::Utc::now().date_naive() + chrono::Days::new(1)).to_string();
    ok(riskstrat()
        .args(["approve", "--team", "T01", "--cohort", "complex_needs"])
        .args(["--job", "complex-needs"])
        .args(["--purpose", "direct-care", "--expires", &tomorrow])
        .args(["--approver", "caldicott.guardian", "--teams"])
        .arg(dir.join("teams.toml"))
        .arg("--audit")
        .arg(dir.join("gate/audit.jsonl"))
        .output()
        .unwrap());
    run
}

/// A run folder written through the run store to the in-memory store is read back
/// by the commissioner session `query` uses and by the gate exactly as the same run
/// on local disk: the same answers, the same released list.
#[test]
fn a_run_in_an_in_memory_store_reads_as_a_local_one() {
    let dir = scratch("store_in_memory");
    let local_run = gate_flow(&dir);
    let objects = Arc::new(InMemory::new());
    let memory = RunStore::new(objects.clone(), "memory://runs", "riskstrat")
        .unwrap()
        .with_staging(&dir.join("staging"));
    let secret = cell_key().1;
    block_on(async {
        let in_memory = copy_into(&memory, &local_run).await;
        assert!(in_memory.location().starts_with("memory://runs/riskstrat/"));
        let listed = memory.list(&in_memory_job(&in_memory).await).await.unwrap();
        assert_eq!(listed.len(), 1);

        let local = Commissioner::open(&[local_run.clone()], Policy::default(), &secret)
            .await
            .unwrap();
        let remote = Commissioner::open_runs(&[in_memory.clone()], Policy::default(), &secret)
            .await
            .unwrap();
        let (a, b) = (answers(&local).await, answers(&remote).await);
        assert!(!a[0].starts_with("refused"), "{}", a[0]);
        assert!(a.iter().any(|x| x.starts_with("refused")), "{a:?}");
        assert_eq!(a, b);

        let gate = Gate::at(&dir);
        let (out_disk, out_memory) = (dir.join("lists/local"), dir.join("lists/memory"));
        let from_disk = reidentify(&gate.request(&local_run, &out_disk))
            .await
            .unwrap();
        let elsewhere = dir.join("elsewhere");
        let from_memory = reidentify_from(&gate.request(&elsewhere, &out_memory), &in_memory)
            .await
            .unwrap();
        assert!(from_disk.patients > 0);
        assert_eq!(from_disk.patients, from_memory.patients);
        assert_eq!(from_disk.not_in_vault, from_memory.not_in_vault);
        assert_eq!(
            std::fs::read(&from_disk.csv).unwrap(),
            std::fs::read(&from_memory.csv).unwrap()
        );

        // A file of the stored run damaged (truncated): named, as on disk.
        let scores = in_memory.read("scores.parquet").await.unwrap();
        let at = format!(
            "riskstrat/{}/{}/scores.parquet",
            in_memory_job(&in_memory).await,
            in_memory.name()
        );
        objects
            .put(
                &at.as_str().into(),
                scores[..scores.len() / 2].to_vec().into(),
            )
            .await
            .unwrap();
        let e = Commissioner::open_runs(&[in_memory.clone()], Policy::default(), &secret)
            .await
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "{}", e.message);
        assert!(e.message.contains("scores.parquet"), "{}", e.message);
    });
}

/// The gate's own files (local, whatever store the runs are in).
struct Gate {
    registry: Registry,
    vault: PathBuf,
    vault_key: PathBuf,
    audit: PathBuf,
}

impl Gate {
    fn at(dir: &Path) -> Self {
        Self {
            registry: Registry::load(&dir.join("teams.toml")).unwrap(),
            vault: dir.join("gate/vault.parquet"),
            vault_key: dir.join("keys/vault.key"),
            audit: dir.join("gate/audit.jsonl"),
        }
    }

    fn request<'a>(&'a self, run: &'a Path, out: &'a Path) -> Request<'a> {
        Request {
            run,
            cohort: "complex_needs",
            team: "T01",
            requester: "gp.north.1",
            vault: &self.vault,
            vault_key_path: &self.vault_key,
            registry: &self.registry,
            audit_log: &self.audit,
            out,
            today: chrono::Utc::now().date_naive(),
            changes: false,
        }
    }
}

async fn in_memory_job(run: &RunHandle) -> String {
    run.manifest().await.unwrap().job
}

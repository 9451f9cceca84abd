//! Fault injection through the binary (debug builds): a full disk (a small tmpfs),
//! SIGKILL at each rename and at random moments, four concurrent runs started in one
//! second, a run in a second PID namespace, a clock that jumps back, an input
//! rewritten during a run. Each fault is survived with nothing lost, and the next
//! operation succeeds. Hooks: `RISKSTRAT_FAULT`, `RISKSTRAT_CLOCK` (pipeline/src/faults.rs).

use crate::common;

use crate::common::*;
use riskstrat::governance::audit;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn runs_of(dir: &Path) -> Vec<PathBuf> {
    list_runs(&dir.join("runs"), "test-job")
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

/// Every complete run: its manifest's run id is its folder's name, its sequence
/// numbers are distinct, and every output it lists is there.
fn assert_runs_consistent(dir: &Path) -> Vec<PathBuf> {
    let runs = runs_of(dir);
    let mut seqs = Vec::new();
    for r in &runs {
        let m = manifest(r);
        let name = r.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            m["run_id"],
            name,
            "manifest of {} names another run",
            r.display()
        );
        seqs.push(m["seq"].as_u64().unwrap());
        for f in m["outputs"].as_array().unwrap() {
            assert!(
                r.join(f.as_str().unwrap()).exists(),
                "{} lacks {f}",
                r.display()
            );
        }
    }
    let mut unique = seqs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seqs.len(), "two runs share a sequence number");
    runs
}

/// Nothing left in the job's folder but runs.
fn assert_no_leftovers(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir.join("runs/test-job"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn run_cmd(job: &Path) -> Command {
    let mut c = riskstrat();
    c.arg("run").arg(job);
    c
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

fn killed(o: &Output) {
    assert_eq!(
        o.status.signal(),
        Some(9),
        "expected SIGKILL at the fault point: {:?} {}",
        o.status,
        stderr(o)
    );
}

/// Start `cmd` paused at `point`; returns once it is waiting there.
fn paused_at(mut cmd: Command, point: &str, go: &Path) -> Child {
    let _ = std::fs::remove_file(go);
    let reached = go.with_extension("reached");
    let _ = std::fs::remove_file(&reached);
    let mut child = cmd
        .env("RISKSTRAT_FAULT", format!("{point}=wait:{}", go.display()))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !reached.exists() {
        if let Some(s) = child.try_wait().unwrap() {
            panic!("finished ({s}) without pausing at {point}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never reached {point}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Four runs of one job started in the same second (a fixed fake clock) get four run
/// folders whose manifests carry their own run ids; then a run after the clock jumped
/// back a year is the newest, for `list_runs` and for `serve`.
#[test]
fn four_runs_in_one_second_and_a_clock_jump() {
    let dir = scratch("faults_concurrent");
    let job = small_dataset().write(&dir, "2026-04-01");
    let children: Vec<Child> = (0..4)
        .map(|_| {
            run_cmd(&job)
                .env("RISKSTRAT_CLOCK", "2026-03-01T02:00:00Z")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut printed = Vec::new();
    for c in children {
        printed.push(PathBuf::from(ok(&c.wait_with_output().unwrap())));
    }
    let runs = assert_runs_consistent(&dir);
    assert_eq!(runs.len(), 4);
    printed.sort();
    let mut listed = runs.clone();
    listed.sort();
    assert_eq!(printed, listed);
    for r in &runs {
        assert!(
            manifest(r)["run_id"]
                .as_str()
                .unwrap()
                .starts_with("20260301T0200")
        );
    }

    let o = run_cmd(&job)
        .env("RISKSTRAT_CLOCK", "2025-03-01T02:00:00Z")
        .output()
        .unwrap();
    let jumped = PathBuf::from(ok(&o));
    assert!(jumped.to_string_lossy().contains("20250301T0200"));
    let runs = assert_runs_consistent(&dir);
    assert_eq!(
        runs.last(),
        Some(&jumped),
        "the newest run is the last one made"
    );
    let served = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(riskstrat::serve::flight::newest_runs(
            &dir.join("runs"),
            &cell_key().1,
        ))
        .unwrap();
    assert_eq!(served[0].dir, jumped);
    assert_no_leftovers(&dir);
}

/// Regression (fault review of 2026-12-07): of two concurrent runs, the one numbered
/// first but finishing last compared its cohorts with the other, a later run.
#[test]
fn a_run_is_never_compared_with_one_numbered_after_it() {
    let dir = scratch("faults_compared_later");
    let job = small_dataset().write(&dir, "2026-04-01");
    let go = dir.join("go");
    let mut first = run_cmd(&job);
    first.stdout(std::process::Stdio::piped());
    let first = paused_at(first, "run.claimed", &go);
    let second = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    std::fs::write(&go, "").unwrap();
    let first = PathBuf::from(ok(&first.wait_with_output().unwrap()));
    assert!(
        first.to_string_lossy().ends_with("-000001"),
        "{}",
        first.display()
    );
    assert!(
        second.to_string_lossy().ends_with("-000002"),
        "{}",
        second.display()
    );
    assert!(
        manifest(&first).get("compared_with").is_none(),
        "{}",
        manifest(&first)
    );
    assert!(manifest(&second).get("compared_with").is_none());
    // A third run compares with the second, the newest before it.
    let third = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    let second_id = second.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(manifest(&third)["compared_with"], second_id.as_str());
}

/// A run in a second PID namespace (a container on the same volume) leaves a live
/// run's staging folder alone: both complete.
#[test]
fn a_run_in_another_pid_namespace_leaves_a_live_run_alone() {
    if !Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        println!("SKIPPED: `unshare --pid --fork --mount-proc` is not possible here");
        return;
    }
    let dir = scratch("faults_pidns");
    let job = small_dataset().write(&dir, "2026-04-01");
    let go = dir.join("go");
    let mut a = run_cmd(&job);
    a.stdout(std::process::Stdio::piped());
    let a = paused_at(a, "run.before_recheck", &go);
    let o = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_riskstrat"))
        .arg("run")
        .arg(&job)
        .env("RISKSTRAT_LOG", "warn")
        .output()
        .unwrap();
    let b = PathBuf::from(ok(&o));
    std::fs::write(&go, b"").unwrap();
    let a = PathBuf::from(ok(&a.wait_with_output().unwrap()));
    let runs = assert_runs_consistent(&dir);
    assert_eq!(runs.len(), 2);
    assert!(runs.contains(&a) && runs.contains(&b));
    assert_no_leftovers(&dir);
}

/// An input rewritten while the run reads it: exit 1 naming the input, no run; the
/// next run succeeds.
#[test]
fn an_input_changed_during_a_run_fails_it() {
    let dir = scratch("faults_input_changed");
    let job = small_dataset().write(&dir, "2026-04-01");
    let go = dir.join("go");
    let child = paused_at(
        {
            let mut c = run_cmd(&job);
            c.stderr(std::process::Stdio::piped());
            c
        },
        "run.before_recheck",
        &go,
    );
    // The same bytes written again: only the file's size, time and e-tag tell.
    let optouts = dir.join("optouts.parquet");
    let bytes = std::fs::read(&optouts).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&optouts, &bytes).unwrap();
    std::fs::write(&go, b"").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("input optouts") && err.contains("changed during the run"),
        "{err}"
    );
    assert!(runs_of(&dir).is_empty());
    assert_no_leftovers(&dir);
    ok(&run_cmd(&job).output().unwrap());
    assert_eq!(assert_runs_consistent(&dir).len(), 1);
}

/// SIGKILL at each named point of a run (its claim, before the input check, before
/// the sync, at the rename, after it) and at random moments: earlier runs untouched,
/// every run listed is whole, the next run succeeds and removes what was left.
#[test]
fn sigkill_at_each_rename_and_at_random_moments() {
    let dir = scratch("faults_sigkill");
    let job = small_dataset().write(&dir, "2026-04-01");
    let t = Instant::now();
    let first = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    let one_run = t.elapsed();
    let before = snapshot(&first);
    for point in [
        "run.claimed",
        "run.before_recheck",
        "run.commit",
        "run.before_rename",
        "run.after_rename",
    ] {
        let o = run_cmd(&job)
            .env("RISKSTRAT_FAULT", format!("{point}=kill"))
            .output()
            .unwrap();
        killed(&o);
        assert_eq!(snapshot(&first), before, "killed at {point}");
        let runs = assert_runs_consistent(&dir);
        let expected = if point == "run.after_rename" { 2 } else { 1 };
        assert_eq!(runs.len(), expected, "killed at {point}");
        if point == "run.after_rename" {
            std::fs::remove_dir_all(runs.last().unwrap()).unwrap();
        }
    }
    // Random moments over a run's length (seeded by the clock; printed to replay).
    let seed = std::env::var("RISKSTRAT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("random kills: RISKSTRAT_FAULT_SEED={seed}");
    let mut x = seed | 1;
    for _ in 0..4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let delay = Duration::from_micros(x % (one_run.as_micros() as u64 + 1));
        let mut c = run_cmd(&job)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(snapshot(&first), before);
        assert_runs_consistent(&dir);
    }
    let last = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    assert_eq!(runs_of(&dir).last(), Some(&last));
    assert_runs_consistent(&dir);
    assert_no_leftovers(&dir);
}

/// The tmpfs of a full-disk test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !o.status.success() {
            println!(
                "SKIPPED: cannot mount a tmpfs for the full-disk test ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fill the disk: a file grown until the device is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Regression: suites left this tmpfs mounted (one more each run) when a file
        // on it was still open as the test ended; detach it lazily then.
        let done = Command::new("umount").arg(&self.0).status();
        if !done.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn approve(teams: &Path, log: &Path, approver: &str) -> Output {
    riskstrat()
        .args(["approve", "--team", "T01", "--cohort", "complex_needs"])
        .args(["--job", "complex-needs"])
        .args(["--purpose", "direct-care", "--expires"])
        .arg((chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string())
        .args(["--approver", approver, "--teams"])
        .arg(teams)
        .arg("--audit")
        .arg(log)
        .output()
        .unwrap()
}

fn teams_file(dir: &Path) -> PathBuf {
    let p = dir.join("teams.toml");
    std::fs::write(
        &p,
        "[[team]]\nid = \"T01\"\nname = \"North\"\npractices = [\"A81001\"]\nmembers = [\"gp.1\"]\n",
    )
    .unwrap();
    p
}

/// A full disk: a run fails with exit 1 naming the path and leaves earlier runs and
/// nothing else; an approval is refused naming the audit log, which stays intact;
/// serve's audit writer refuses a record and takes the next; once space is free,
/// every next operation succeeds.
#[test]
fn a_full_disk_refuses_and_the_next_operation_succeeds() {
    let dir = scratch("faults_full_disk");
    let Some(disk) = Tmpfs::mount(&dir.join("disk"), "4m") else {
        return;
    };
    let data = disk.0.join("data");
    let job = small_dataset().write(&data, "2026-04-01");
    let first = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    let before = snapshot(&first);
    let teams = teams_file(&disk.0);
    let log = disk.0.join("audit.jsonl");
    ok(&approve(&teams, &log, "ig.lead"));
    let writer = audit::Writer::open(&log).unwrap();
    let query = |k: u64| audit::Record {
        actor: "commissioner".into(),
        action: audit::Action::Query,
        query: Some(format!("SELECT {k} {}", "x".repeat(300))),
        rows: Some(k),
        ..Default::default()
    };
    writer.append(query(0)).unwrap();

    let filler = disk.fill();
    let o = run_cmd(&job).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&disk.0.display().to_string()),
        "the error names no path: {}",
        stderr(&o)
    );
    assert_eq!(runs_of(&data), vec![first.clone()]);
    assert_eq!(snapshot(&first), before);
    // Records fill the log's last page first: the disk refuses within a few.
    let refused = (0..40)
        .map(|k| approve(&teams, &log, &format!("ig.lead.{k}")))
        .find(|o| !o.status.success())
        .expect("a full disk refused no approval");
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&log.display().to_string()),
        "{}",
        stderr(&refused)
    );
    let failed_query = (1..40)
        .map(|k| writer.append(query(k)))
        .find(|r| r.is_err());
    assert!(
        failed_query.is_some(),
        "a full disk refused no query record"
    );
    let intact = audit::read(&log).expect("the log is intact after a failed write");

    std::fs::remove_file(filler).unwrap();
    ok(&approve(&teams, &log, "ig.lead.after"));
    writer
        .append(query(99))
        .expect("serve's writer takes the next record");
    let records = audit::read(&log).unwrap();
    assert_eq!(records.len(), intact.len() + 2);
    let next = PathBuf::from(ok(&run_cmd(&job).output().unwrap()));
    assert_eq!(runs_of(&data), vec![first, next]);
    let left: Vec<_> = std::fs::read_dir(data.join("runs/test-job"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty());
}

/// An approval killed half way through its audit record leaves a torn log: `audit
/// verify` says so (not tampering) and `audit repair` fixes it as an audited action;
/// the next approval succeeds. A tampered log is not "repaired".
#[test]
fn a_torn_audit_record_is_repaired_not_taken_for_tampering() {
    let dir = scratch("faults_audit_log");
    let teams = teams_file(&dir);
    let log = dir.join("audit.jsonl");
    ok(&approve(&teams, &log, "ig.lead"));
    let mut c = riskstrat();
    c.args(["approve", "--team", "T01", "--cohort", "complex_needs"])
        .args(["--job", "complex-needs"])
        .args(["--purpose", "direct-care", "--expires"])
        .arg((chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string())
        .args(["--approver", "ig.lead.2", "--teams"])
        .arg(&teams)
        .arg("--audit")
        .arg(&log)
        .env("RISKSTRAT_FAULT", "audit.mid_write=kill");
    killed(&c.output().unwrap());
    let verify = |log: &Path| {
        riskstrat()
            .args(["audit", "verify"])
            .arg(log)
            .output()
            .unwrap()
    };
    let o = verify(&log);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("torn") && stderr(&o).contains("audit repair"),
        "{}",
        stderr(&o)
    );
    // Refused until repaired (never chained onto a torn record).
    assert!(!approve(&teams, &log, "ig.lead.3").status.success());

    // A tampered copy is told apart, and repair refuses it.
    let tampered = dir.join("tampered.jsonl");
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replacen("ig.lead", "ig.leaf", 1);
    std::fs::write(&tampered, &text).unwrap();
    let o = verify(&tampered);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("changed after it was written"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("torn"), "{}", stderr(&o));
    let o = riskstrat()
        .args(["audit", "repair"])
        .arg(&tampered)
        .args(["--operator", "ig.lead"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&tampered).unwrap(), text);

    let o = riskstrat()
        .args(["audit", "repair"])
        .arg(&log)
        .args(["--operator", "ig.lead"])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(verify(&log).status.code(), Some(0));
    ok(&approve(&teams, &log, "ig.lead.4"));
    let records = audit::read(&log).unwrap();
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.action.as_str(), r.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("approve", "ig.lead"),
            ("repair", "ig.lead"),
            ("approve", "ig.lead.4")
        ]
    );
}

/// Killed gate commands: `pseudonymise` killed between its renames and `reidentify`
/// killed before putting the list in place leave hidden copies holding NHS numbers;
/// the next start of each puts the previous output back or removes the copies, and
/// succeeds. The gate-side quarantine and the lists are owner-only.
#[test]
fn killed_gate_commands_are_cleaned_up_at_their_next_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("faults_gate");
    let o = riskstrat()
        .args([
            "synth",
            "--identifiable",
            "--patients",
            "1500",
            "--seed",
            "3",
        ])
        .args(["--as-of", "2026-04-01", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    ok(&o);
    let pseudonymise = || common::pseudonymise(&dir);
    ok(&pseudonymise().output().unwrap());
    let hidden = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') && !n.ends_with(".lock"))
            .collect()
    };
    let quarantine = dir.join("gate/vault-quarantine");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&quarantine), 0o700);
    for f in walk(&quarantine) {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
    let summary = std::fs::read(dir.join("pseudonymised/pseudonymise.json")).unwrap();

    let o = pseudonymise()
        .env("RISKSTRAT_FAULT", "pseudonymise.between_renames=kill")
        .output()
        .unwrap();
    killed(&o);
    assert!(
        !dir.join("pseudonymised").exists(),
        "killed between the renames"
    );
    assert!(!hidden(&dir).is_empty() && !hidden(&dir.join("gate")).is_empty());
    // A failing start still puts the previous output back.
    let o = pseudonymise()
        .env("RISKSTRAT_FAULT", "pseudonymise.between_renames=kill")
        .output()
        .unwrap();
    killed(&o);
    ok(&pseudonymise().output().unwrap());
    assert!(hidden(&dir).is_empty(), "{:?}", hidden(&dir));
    assert!(
        hidden(&dir.join("gate")).is_empty(),
        "{:?}",
        hidden(&dir.join("gate"))
    );
    assert_eq!(
        std::fs::read(dir.join("pseudonymised/pseudonymise.json")).unwrap(),
        summary
    );

    let job = std::fs::read_to_string(dir.join("job.toml")).unwrap();
    std::fs::write(
        dir.join("job.toml"),
        job + "\n[outcomes]\nevaluate = false\n",
    )
    .unwrap();
    let run = PathBuf::from(ok(&run_job(&dir.join("job.toml"))));
    let log = dir.join("gate/audit.jsonl");
    ok(&approve(
        &dir.join("teams.toml"),
        &log,
        "caldicott.guardian",
    ));
    let run = run.to_string_lossy().into_owned();
    let reidentify = || release_t01(riskstrat(), &dir, &run, &log, &dir.join("lists/T01"));
    killed(
        &reidentify()
            .env("RISKSTRAT_FAULT", "reidentify.before_rename=kill")
            .output()
            .unwrap(),
    );
    assert_eq!(hidden(&dir.join("lists")).len(), 2);
    ok(&reidentify().output().unwrap());
    assert!(hidden(&dir.join("lists")).is_empty());
    for ext in ["csv", "parquet"] {
        assert_eq!(mode(&dir.join(format!("lists/T01.{ext}"))), 0o600);
    }
    audit::read(&log).unwrap();
}

//! Scheduled cohort jobs, end to end through the binary: a job's runs month after
//! month, entrants and leavers against an independent set difference of the cohort
//! files, `diff` and `history`, and the opt-out rule across runs.

use crate::common;

use crate::common::*;
use std::collections::BTreeSet;
use std::path::Path;

/// Forty people. Person k < 12 has two emergency admissions 30 k days after
/// 2025-01-05, person 12 two in January 2026 and person 13 two in February 2026; no one
/// else has any. With the hand-written model, those with two admissions in the year
/// before `A` are the top of the risk ranking and in `complex_needs` (two or more
/// emergency admissions), so each month one person leaves and one enters:
/// 2026-01-01 {0..11}, 2026-02-01 {1..12}, 2026-03-01 {2..13}.
fn monthly_dataset() -> Dataset {
    let mut ds = Dataset::default();
    for k in 0..40 {
        ds.add_patient_with_a_visit(&format!("m{k}"));
    }
    let first = |k: i64| match k {
        0..12 => d("2025-01-05") + chrono::Duration::days(30 * k),
        12 => d("2026-01-10"),
        _ => d("2026-02-10"),
    };
    // Someone opted out long ago: an extract always has some.
    ds.optouts.push((pid("m39"), "type1", d("2020-01-01")));
    for k in 0..14 {
        for (j, offset) in [0, 3].into_iter().enumerate() {
            let day = first(k) + chrono::Duration::days(offset);
            ds.admissions.push(Spell {
                id: pid(&format!("m{k}")),
                spell: format!("S{k}-{j}"),
                date: day,
                discharge: Some(day + chrono::Duration::days(1)),
                method: "21",
                primary: Some("J189"),
                secondary: Some(vec![]),
                cost: 100.0,
            });
        }
    }
    ds
}

fn run_at(job: &Path, as_of: &str) {
    let o = riskstrat()
        .args(["run", job.to_str().unwrap(), "--as-of", as_of])
        .output()
        .unwrap();
    assert!(o.status.success(), "run at {as_of}: {}", stderr(&o));
}

fn ids(path: &Path) -> BTreeSet<String> {
    pseudo_ids(path).into_iter().collect()
}

fn people(ks: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
    ks.into_iter().map(|k| pid(&format!("m{k}"))).collect()
}

/// The rows of a changes file with the given change.
fn changed(path: &Path, change: &str) -> BTreeSet<String> {
    let changes = texts(path, "change");
    assert!(changes.iter().all(Option::is_some));
    let ids = texts(path, "pseudo_id");
    ids.into_iter()
        .zip(changes)
        .filter(|(_, c)| c.as_deref() == Some(change))
        .map(|(p, _)| p.unwrap())
        .collect()
}

/// (as_of, status) of each row of `history --json` or each webhook summary.
fn statuses(rows: &[serde_json::Value]) -> Vec<(&str, &str)> {
    rows.iter()
        .map(|r| (r["as_of"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect()
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn entrants_and_leavers_are_the_set_difference_of_the_cohort_files() {
    let dir = scratch("changes-monthly");
    let ds = monthly_dataset();
    let job = ds.write(&dir, "2026-01-01");
    run_at(&job, "2026-01-01");
    run_at(&job, "2026-02-01");
    // Person 5 opts out between the second run and the third.
    let mut ds = ds;
    ds.optouts.push((pid("m5"), "type1", d("2026-02-15")));
    ds.write(&dir, "2026-01-01");
    run_at(&job, "2026-03-01");
    let runs = runs(&dir);
    assert_eq!(runs.len(), 3);
    let cohort = |r: &Path| ids(&r.join("cohort_complex_needs.parquet"));
    let c: Vec<_> = runs.iter().map(|r| cohort(r)).collect();
    // The data do what they were built to do, so the comparisons below mean something.
    assert_eq!(c[0], people(0..12));
    assert_eq!(c[1], people(1..13));
    assert_eq!(c[2], people((2..14).filter(|&k| k != 5)));

    // The first run has nothing to compare with.
    assert!(!runs[0].join("changes_complex_needs.parquet").exists());
    assert!(manifest(&runs[0]).get("changes").is_none());
    for i in 1..3 {
        let file = runs[i].join("changes_complex_needs.parquet");
        let (before, now) = (&c[i - 1], &c[i]);
        let opted_out = if i == 2 { people([5]) } else { BTreeSet::new() };
        let entered: BTreeSet<_> = now.difference(before).cloned().collect();
        let left: BTreeSet<_> = before
            .difference(now)
            .filter(|p| !opted_out.contains(*p))
            .cloned()
            .collect();
        let stayed: BTreeSet<_> = now.intersection(before).cloned().collect();
        assert_eq!(changed(&file, "entered"), entered, "run {i}");
        assert_eq!(changed(&file, "left"), left, "run {i}");
        assert_eq!(changed(&file, "stayed"), stayed, "run {i}");
        assert_eq!(entered.len(), 1);
        assert_eq!(left.len(), 1);
        let m = manifest(&runs[i]);
        let counts = &m["changes"]["complex_needs"];
        assert_eq!(counts["entered"], entered.len() as u64);
        assert_eq!(counts["left"], left.len() as u64);
        assert_eq!(counts["stayed"], stayed.len() as u64);
        assert_eq!(
            m["compared_with"],
            manifest(&runs[i - 1])["run_id"],
            "each run is compared with the one before"
        );
        assert!(
            m["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o == "changes_complex_needs.parquet")
        );
    }
    // Regression (opt-outs across runs): the person who opted out after the second run
    // is in no file of the third, though the second run's cohort held them.
    assert_no_ids_in(&runs[2], &people([5]).into_iter().collect());

    // diff of consecutive runs reads the changes file; of runs two apart it computes
    // them, over the later run's population (person 5 is not in it).
    let diff = |a: &Path, b: &Path| -> serde_json::Value {
        let o = riskstrat()
            .args(["diff", a.to_str().unwrap(), b.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0].clone()
    };
    let d12 = diff(&runs[1], &runs[2]);
    assert_eq!(d12["cohort"], "complex_needs");
    assert_eq!(
        (
            d12["entered"].clone(),
            d12["left"].clone(),
            d12["stayed"].clone()
        ),
        (1.into(), 1.into(), 10.into())
    );
    let d02 = diff(&runs[0], &runs[2]);
    assert_eq!(
        (
            d02["entered"].clone(),
            d02["left"].clone(),
            d02["stayed"].clone()
        ),
        (2.into(), 2.into(), 9.into())
    );
    // Tier transitions and practices count the same people.
    let total = |key: &str, field: &str| -> u64 {
        match &d02[key] {
            serde_json::Value::Array(a) => a.iter().map(|t| t[field].as_u64().unwrap()).sum(),
            serde_json::Value::Object(o) => o
                .values()
                .map(|c| {
                    ["entered", "left", "stayed"]
                        .iter()
                        .map(|f| c[*f].as_u64().unwrap())
                        .sum::<u64>()
                })
                .sum(),
            _ => panic!("{key}"),
        }
    };
    assert_eq!(total("transitions", "people"), 13);
    assert_eq!(total("by_practice", ""), 13);

    // history lists the three runs, oldest first, with their changes.
    let h = history(&dir);
    let as_of: Vec<_> = h.iter().map(|r| r["as_of"].as_str().unwrap()).collect();
    assert_eq!(as_of, ["2026-01-01", "2026-02-01", "2026-03-01"]);
    assert!(h.iter().all(|r| r["status"] == "complete"));
    assert_eq!(h[2]["cohorts"]["complex_needs"], 11);
    assert_eq!(h[2]["changes"]["complex_needs"]["left"], 1);
    assert_eq!(h[1]["compared_with"], h[0]["run_id"]);
}

/// A backfill of an earlier month, run after a later one, is compared with the month
/// before it, not with the newest run.
#[test]
fn an_earlier_month_is_compared_with_the_month_before_it() {
    let dir = scratch("changes-backfilled");
    let job = monthly_dataset().write(&dir, "2026-01-01");
    run_at(&job, "2026-01-01");
    run_at(&job, "2026-03-01");
    run_at(&job, "2026-02-01");
    let runs = runs(&dir);
    let (jan, feb) = (manifest(&runs[0]), manifest(&runs[2]));
    assert_eq!(feb["as_of"], "2026-02-01");
    assert_eq!(feb["compared_with"], jan["run_id"]);
    assert_eq!(feb["changes"]["complex_needs"]["entered"], 1);
}

#[test]
fn history_and_diff_name_what_is_wrong() {
    let dir = scratch("changes-errors");
    for args in [
        vec![
            "history".to_string(),
            dir.join("no-such-job").display().to_string(),
        ],
        vec![
            "diff".to_string(),
            dir.display().to_string(),
            dir.display().to_string(),
        ],
    ] {
        let o = riskstrat().args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(&dir.display().to_string()), "{e}");
    }
}

/// The monthly dataset's job with a schedule: 02:00 London time on the 1st.
fn scheduled_job(dir: &Path, extra: &str) -> std::path::PathBuf {
    let job = monthly_dataset().write(dir, "2026-01-01");
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str(&format!(
        "[schedule]\ncron = \"0 2 1 * *\"\ntimezone = \"Europe/London\"\n{extra}"
    ));
    std::fs::write(&job, text).unwrap();
    job
}

fn backfill(job: &Path, fault: Option<&str>) -> std::process::Output {
    let mut c = riskstrat();
    c.args([
        "backfill",
        job.to_str().unwrap(),
        "--from",
        "2026-01-01",
        "--to",
        "2026-03-31",
    ]);
    if let Some(f) = fault {
        c.env("RISKSTRAT_FAULT", f);
    }
    c.output().unwrap()
}

/// The scheduler's record of how attempts ended (not the `started` lines before them).
fn attempts(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("runs/test-job/.schedule.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["status"] != "started")
        .collect()
}

/// `history --json` of the test job.
fn history(dir: &Path) -> Vec<serde_json::Value> {
    let o = riskstrat()
        .args([
            "history",
            dir.join("runs/test-job").to_str().unwrap(),
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn a_backfill_runs_each_tick_once() {
    let dir = scratch("backfill-once");
    let job = scheduled_job(&dir, "");
    let o = backfill(&job, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = runs(&dir);
    let ticks: Vec<_> = runs.iter().map(|r| manifest(r)["tick"].clone()).collect();
    assert_eq!(
        ticks,
        [
            "2026-01-01T02:00:00Z",
            "2026-02-01T02:00:00Z",
            "2026-03-01T02:00:00Z"
        ]
    );
    let as_of: Vec<_> = runs.iter().map(|r| manifest(r)["as_of"].clone()).collect();
    assert_eq!(as_of, ["2026-01-01", "2026-02-01", "2026-03-01"]);
    // The runs are the months of the first test: each compared with the one before.
    assert_eq!(manifest(&runs[2])["changes"]["complex_needs"]["entered"], 1);

    // Again: nothing new.
    let o = backfill(&job, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(common::runs(&dir).len(), 3);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("already run").count(), 3, "{out}");
    assert_eq!(
        attempts(&dir).len(),
        3,
        "the second backfill made no attempt"
    );

    let h = history(&dir);
    assert_eq!(h.len(), 3);
    assert_eq!(h[1]["tick"], "2026-02-01T02:00:00Z");
}

/// A failed attempt is retried and recorded; a tick that fails every attempt is in the
/// history as failed, the other ticks still run, and the next backfill runs only it.
#[test]
fn failed_ticks_are_retried_recorded_and_run_by_the_next_backfill() {
    let dir = scratch("backfill-retries");
    let job = scheduled_job(&dir, "retries = 1\n");
    let o = backfill(&job, Some("run.start=fail:1"));
    assert!(o.status.success(), "{}", stderr(&o));
    let a = attempts(&dir);
    let first: Vec<_> = a
        .iter()
        .filter(|a| a["tick"] == "2026-01-01T02:00:00Z")
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(first, [(1, "failed"), (2, "complete")]);
    assert_eq!(runs(&dir).len(), 3);

    let dir = scratch("backfill-fails");
    let job = scheduled_job(&dir, "");
    let o = backfill(&job, Some("run.start=fail:1"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 3 ticks failed"), "{}", stderr(&o));
    assert_eq!(runs(&dir).len(), 2);
    let h = history(&dir);
    assert_eq!(
        statuses(&h),
        [
            ("2026-01-01", "failed"),
            ("2026-02-01", "complete"),
            ("2026-03-01", "complete")
        ]
    );
    // A failed tick has no population: null in JSON, `-` in the text, not 0.
    assert_eq!(h[0]["population"], serde_json::Value::Null);
    assert_eq!(h[1]["population"], 39);
    let o = riskstrat()
        .args(["history", dir.join("runs/test-job").to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        lines[0][..5],
        ["run_id", "tick", "as_of", "status", "population"]
    );
    assert_eq!(
        lines[1][..5],
        ["-", "2026-01-01T02:00:00Z", "2026-01-01", "failed", "-"],
        "{text}"
    );
    assert_eq!(
        lines[2][1..5],
        ["2026-02-01T02:00:00Z", "2026-02-01", "complete", "39"]
    );
    // Regression (fault review of 2026-12-07): the output folder without the job's
    // name printed an empty table, exit 0, as if the job had never run.
    let o = riskstrat()
        .args(["history", dir.join("runs").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("holds no runs of its own but the job folders test-job"),
        "{}",
        stderr(&o)
    );
    let o = backfill(&job, None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches("\tran\t").count(), 1, "{out}");
    assert_eq!(runs(&dir).len(), 3);
}

/// Two processes never run one job's ticks at once.
#[test]
fn a_second_backfill_of_the_same_job_is_refused_while_one_runs() {
    let dir = scratch("backfill-lease");
    let job = scheduled_job(&dir, "");
    std::fs::create_dir_all(dir.join("runs/test-job")).unwrap();
    let lock = std::fs::File::create(dir.join("runs/test-job/.schedule.lock")).unwrap();
    lock.try_lock().unwrap();
    let o = backfill(&job, None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("another riskstrat schedule or backfill"),
        "{}",
        stderr(&o)
    );
    assert!(runs(&dir).is_empty());
    drop(lock);
    assert!(backfill(&job, None).status.success());
}

#[test]
fn a_bad_schedule_names_the_setting() {
    let dir = scratch("backfill-bad");
    for (extra, what) in [
        ("missed = \"sometimes\"\n", "missed"),
        ("every = \"month\"\n", "every"),
    ] {
        let job = scheduled_job(&dir, extra);
        let o = backfill(&job, None);
        assert_eq!(o.status.code(), Some(2), "{extra}");
        assert!(stderr(&o).contains(what), "{}", stderr(&o));
    }
    let job = monthly_dataset().write(&dir, "2026-01-01");
    let o = backfill(&job, None);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no [schedule] section"),
        "{}",
        stderr(&o)
    );
}

// --- `riskstrat schedule`, on a clock the tests set (and speed up) ---

/// A scheduler of `job` whose clock starts at `start` and runs `speed` times faster.
fn scheduler(jobs: &[&Path], start: &str, speed: u64, fault: Option<&str>) -> std::process::Child {
    let mut c = riskstrat();
    c.arg("schedule");
    for j in jobs {
        c.arg(j);
    }
    c.env("RISKSTRAT_CLOCK", start)
        .env("RISKSTRAT_CLOCK_SPEED", speed.to_string())
        .env("RISKSTRAT_LOG", "riskstrat=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    if let Some(f) = fault {
        c.env("RISKSTRAT_FAULT", f);
    }
    c.spawn().unwrap()
}

/// SIGTERM, then the exit status and stderr.
fn stop(child: std::process::Child) -> (Option<i32>, String) {
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn ticks_of(dir: &Path) -> Vec<String> {
    runs(dir)
        .iter()
        .map(|r| manifest(r)["tick"].as_str().unwrap().to_string())
        .collect()
}

/// Two schedulers of one job, on a clock running ten days a second from 29 December:
/// the January, February and March ticks each run once, in order, and SIGTERM ends
/// both cleanly.
#[test]
fn two_schedulers_run_each_monthly_tick_once() {
    let dir = scratch("schedule-monthly");
    let job = scheduled_job(&dir, "");
    let a = scheduler(&[&job], "2025-12-29T00:00:00Z", 864_000, None);
    let b = scheduler(&[&job], "2025-12-29T00:00:00Z", 864_000, None);
    wait_for("three runs", || runs(&dir).len() >= 3);
    let (ca, ea) = stop(a);
    let (cb, eb) = stop(b);
    assert_eq!((ca, cb), (Some(0), Some(0)), "{ea}\n{eb}");
    let ticks = ticks_of(&dir);
    assert_eq!(
        ticks[..3],
        [
            "2026-01-01T02:00:00Z",
            "2026-02-01T02:00:00Z",
            "2026-03-01T02:00:00Z"
        ]
    );
    let unique: BTreeSet<_> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    assert!(
        ea.contains("complete, run") || eb.contains("complete, run"),
        "{ea}\n{eb}"
    );
}

/// Down from after January's run until 15 March: February and March were missed.
#[test]
fn missed_ticks_are_handled_as_the_job_says() {
    for (missed, ran, skipped) in [
        ("latest", vec!["2026-03-01"], vec!["2026-02-01"]),
        ("all", vec!["2026-02-01", "2026-03-01"], vec![]),
        ("skip", vec![], vec!["2026-02-01", "2026-03-01"]),
    ] {
        let dir = scratch(&format!("schedule-missed-{missed}"));
        let job = scheduled_job(&dir, &format!("missed = \"{missed}\"\n"));
        let o = riskstrat()
            .args([
                "backfill",
                job.to_str().unwrap(),
                "--from",
                "2026-01-01",
                "--to",
                "2026-01-01",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let s = scheduler(&[&job], "2026-03-15T00:00:00Z", 1, None);
        let expected_runs = 1 + ran.len();
        let expected_lines = 1 + ran.len() + skipped.len();
        wait_for("the missed ticks", || {
            runs(&dir).len() >= expected_runs
                && std::fs::read_to_string(dir.join("runs/test-job/.schedule.jsonl"))
                    .map(|t| {
                        t.lines().filter(|l| !l.contains("\"started\"")).count() >= expected_lines
                    })
                    .unwrap_or(false)
        });
        let (code, err) = stop(s);
        assert_eq!(code, Some(0), "{err}");
        let h = history(&dir);
        let with = |status: &str| -> Vec<String> {
            h.iter()
                .filter(|r| r["status"] == status && r["as_of"] != "2026-01-01")
                .map(|r| r["as_of"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(with("complete"), ran, "{missed}");
        let mut s = with("skipped");
        s.sort();
        assert_eq!(s, skipped, "{missed}");
    }
}

/// A scheduler killed in the middle of January's run, restarted: the tick runs once.
#[test]
fn a_scheduler_killed_mid_run_runs_the_tick_once_after_restart() {
    let dir = scratch("schedule-killed");
    let job = scheduled_job(&dir, "");
    let s = scheduler(
        &[&job],
        "2026-01-01T01:59:59Z",
        1,
        Some("run.before_recheck=kill"),
    );
    let out = s.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed by the fault");
    assert!(runs(&dir).is_empty());
    // Restarted later the same night: the interrupted tick runs again, once.
    let s = scheduler(&[&job], "2026-01-01T03:00:00Z", 1, None);
    wait_for("the rerun", || !runs(&dir).is_empty());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, err) = stop(s);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(ticks_of(&dir), ["2026-01-01T02:00:00Z"]);
    assert!(err.contains("interrupted"), "{err}");
}

/// A webhook on 127.0.0.1: the body of every POST it receives.
fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hook?token=s3cr3t-token",
        listener.local_addr().unwrap()
    );
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let got = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            got.lock().unwrap().push(String::from_utf8(body).unwrap());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

/// Each tick's summary reaches the webhook, failed or complete, with counts and no
/// identifier, path or error text; the webhook's URL (with its token) is not logged.
#[test]
fn the_webhook_gets_each_ticks_counts_and_never_an_identifier() {
    let dir = scratch("backfill-notify");
    let (url, bodies) = webhook();
    let job = scheduled_job(&dir, &format!("notify = \"{url}\"\n"));
    let o = backfill(&job, Some("run.start=fail:1"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let got: Vec<serde_json::Value> = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    assert_eq!(
        statuses(&got),
        [
            ("2026-01-01", "failed"),
            ("2026-02-01", "complete"),
            ("2026-03-01", "complete")
        ]
    );
    assert_eq!(got[0]["error"], "failed");
    assert_eq!(got[1]["cohorts"]["complex_needs"], 12);
    assert_eq!(got[1]["population"], 40 - 1);
    assert_eq!(got[2]["job"], "test-job");
    assert!(got[1]["refit"].is_boolean(), "the drift verdict is sent");
    let everything = bodies.lock().unwrap().join("\n");
    for k in 0..40 {
        assert!(
            !everything.contains(&pid(&format!("m{k}"))),
            "an identifier was sent"
        );
    }
    assert!(
        !everything.contains(dir.to_str().unwrap()),
        "a path was sent"
    );
    assert!(!everything.contains("injected"), "an error's text was sent");
    assert!(!stderr(&o).contains("s3cr3t"), "{}", stderr(&o));
}

/// Commissioners see changes only through disclosure control: the `cohort_changes`
/// view releases a row only for at least 8 people, as a multiple of 5 near the truth
/// (an independent count of the changes file), and the handful who entered or left a
/// cohort this month are not shown. Empty for a job's first run.
#[test]
fn commissioners_see_changes_only_in_protected_counts() {
    use std::collections::BTreeMap;
    let dir = scratch("changes-view");
    let o = synth(&dir, 3000, 3);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = dir.join("job.toml");
    for as_of in ["2026-03-01", "2026-04-01"] {
        let o = riskstrat()
            .args(["run", job.to_str().unwrap(), "--as-of", as_of])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let job_runs = list_runs(&dir.join("runs"), "complex-needs");
    let query = |run: &Path| -> Vec<serde_json::Value> {
        let o = riskstrat()
            .args(["query", "--run", run.to_str().unwrap(), "--format", "json"])
            .args(["--requester", "commissioner.1", "--audit"])
            .arg(dir.join("query-audit.jsonl"))
            .arg("SELECT * FROM cohort_changes")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    assert!(query(&job_runs[0]).is_empty());

    let mut truth: BTreeMap<[String; 4], i64> = BTreeMap::new();
    let file = job_runs[1].join("changes_complex_needs.parquet");
    let columns =
        ["change", "practice_code", "previous_tier", "current_tier"].map(|c| texts(&file, c));
    for r in 0..columns[0].len() {
        let key = [0, 1, 2, 3].map(|c| columns[c][r].clone().unwrap_or("none".into()));
        *truth.entry(key).or_default() += 1;
    }
    let released = query(&job_runs[1]);
    assert!(!released.is_empty(), "some cells hold 8 or more people");
    for row in &released {
        let key = ["change", "practice_code", "previous_tier", "current_tier"]
            .map(|c| row[c].as_str().unwrap().to_string());
        let people = row["people"].as_i64().unwrap();
        let true_count = truth[&key];
        assert!(true_count >= 8, "{key:?}: {true_count} people released");
        assert_eq!(people % 5, 0, "{key:?}");
        assert!(
            (people - true_count).abs() <= 5,
            "{key:?}: {people} for {true_count}"
        );
    }
    // Every cell of 8 or more is released; none smaller is.
    let big = truth.values().filter(|&&n| n >= 8).count();
    assert_eq!(released.len(), big);
    let entered: i64 = truth
        .iter()
        .filter(|(k, _)| k[0] == "entered")
        .map(|(_, n)| n)
        .sum();
    assert!(entered > 0, "people did enter the cohort");
}

/// Regression (a damaged old run): a run whose manifest.json no longer parses is left
/// out of the comparison, the ticks run and the history, instead of failing every
/// later run until someone deletes it by hand.
#[test]
fn a_damaged_old_manifest_does_not_stop_later_runs() {
    let dir = scratch("changes-damaged");
    let job = monthly_dataset().write(&dir, "2026-01-01");
    run_at(&job, "2026-01-01");
    run_at(&job, "2026-02-01");
    let first = runs(&dir)[0].clone();
    std::fs::write(first.join("manifest.json"), b"{ torn").unwrap();
    run_at(&job, "2026-03-01");
    let r = runs(&dir);
    let m = manifest(&r[2]);
    assert_eq!(m["compared_with"], manifest(&r[1])["run_id"]);
    let h = history(&dir);
    assert_eq!(h.len(), 2, "the damaged run is left out");
}

/// The temporal validation fixture's population (`tests/fixtures/temporal_validation`,
/// made by `make_temporal.py`) as the contract's tables, with its saved model.
fn temporal_fixture(dir: &Path) -> std::path::PathBuf {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/temporal_validation");
    let csv = |name: &str| -> Vec<Vec<String>> {
        std::fs::read_to_string(fixture.join(name))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let mut ds = Dataset::default();
    for r in csv("people.csv") {
        let mut p = Patient::new(&r[0]);
        p.yob = r[1].parse().unwrap();
        p.sex = if r[2] == "F" { "F" } else { "M" };
        // Registered since birth or 2000, whichever is later.
        p.start = d(&format!("{}-12-31", p.yob.max(1999)));
        ds.patients.push(p);
    }
    for (k, r) in csv("events.csv").into_iter().enumerate() {
        let day = d(&r[2]);
        if r[1] == "gp" {
            ds.appointments.push(Appt {
                id: Some(pid(&r[0])),
                date: day,
                hcp: "GP",
                mode: "Face-to-Face",
                status: "Attended",
            });
        } else {
            ds.admissions.push(Spell {
                id: pid(&r[0]),
                spell: format!("E{k}"),
                date: day,
                discharge: Some(day + chrono::Duration::days(2)),
                method: "21",
                primary: Some("J189"),
                secondary: Some(vec![]),
                cost: 1000.0,
            });
        }
    }
    // An extract always has prescriptions; the fixture's model reads none.
    ds.prescriptions.push(Rx {
        id: Some(pid("tv0")),
        date: d("2024-01-01"),
        bnf: "0601023A0AAABAB",
        items: 1,
        nic: 1.0,
    });
    // And opt-outs: here of someone who is not in the fixture, so its figures stand.
    ds.optouts
        .push((pid("not-in-the-fixture"), "type1", d("2020-01-01")));
    let job = ds.write(dir, "2026-04-01");
    std::fs::copy(fixture.join("model.json"), dir.join("model.json")).unwrap();
    job
}

fn close(what: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{what}: riskstrat {got}, reference {want}"
    );
}

/// A score-only run checks its saved model on the newest complete outcome year: the
/// AUC equals scikit-learn's and the calibration statsmodels', the drift rule says to
/// refit, and the run's summary, the manifest and history say so.
#[test]
fn a_saved_models_temporal_validation_matches_scikit_learn_and_statsmodels() {
    let dir = scratch("temporal-validation");
    let job = temporal_fixture(&dir);
    let o = riskstrat()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/temporal_validation/expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    let t = &metrics["temporal_validation"];
    assert_eq!(t["t0"], "2025-04-01");
    let v = &t["validation"];
    assert_eq!(v["n"], want["n"]);
    assert_eq!(v["events"], want["events"]);
    for (ours, theirs, tol) in [
        ("auc", "auc", 1e-12),
        ("calibration_slope", "calibration_slope", 1e-6),
        ("calibration_intercept", "calibration_intercept", 1e-6),
    ] {
        close(
            ours,
            v[ours].as_f64().unwrap(),
            want[theirs].as_f64().unwrap(),
            tol,
        );
    }
    assert_eq!(t["fitted_auc"], want["fitted_auc"]);
    assert_eq!(t["refit"], want["refit"]);
    let reasons: Vec<&str> = t["refit_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        (
            reasons.iter().any(|r| r.starts_with("calibration slope")),
            reasons.iter().any(|r| r.starts_with("AUC"))
        ),
        (
            want["refit_because_slope"].as_bool().unwrap(),
            want["refit_because_auc"].as_bool().unwrap()
        )
    );
    let said = format!(
        "refit: calibration slope {:.2} is outside 0.8-1.2",
        want["calibration_slope"].as_f64().unwrap()
    );
    assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    let report = std::fs::read_to_string(run.join("report.html")).unwrap();
    assert!(
        report.contains("id=\"refit\">Refit the model: calibration slope"),
        "the report says refit"
    );
    let h = history(&dir);
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["refit"], true);
    close(
        "history temporal_auc",
        h[0]["temporal_auc"].as_f64().unwrap(),
        want["auc"].as_f64().unwrap(),
        1e-12,
    );

    // A model fitted on the same population and year, loaded: its temporal validation
    // is its own validation (same people, same year), so nothing has drifted.
    let text = std::fs::read_to_string(&job).unwrap();
    let fit = "features = [\"age\", \"gp_appts_12m\", \"emergency_admissions_12m\"]\n";
    std::fs::write(&job, text.replace("load = \"model.json\"\n", fit)).unwrap();
    let o = riskstrat()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let fitted = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let fitted_metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fitted.join("metrics.json")).unwrap()).unwrap();
    std::fs::write(
        &job,
        text.replace(
            "load = \"model.json\"",
            &format!(
                "load = {:?}",
                fitted.join("model.json").display().to_string()
            ),
        ),
    )
    .unwrap();
    let o = riskstrat()
        .args(["run", job.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("metrics.json")).unwrap()).unwrap();
    let t = &m["temporal_validation"];
    let fitted_auc = fitted_metrics["validation"]["auc"].as_f64().unwrap();
    close(
        "same-year AUC",
        t["validation"]["auc"].as_f64().unwrap(),
        fitted_auc,
        1e-9,
    );
    assert_eq!(t["fitted_auc"].as_f64(), Some(fitted_auc));
    assert_eq!(t["refit"], false, "{t}");
    assert!(!stderr(&o).contains("refit"), "{}", stderr(&o));
    let h = history(&dir);
    assert_eq!(h.len(), 3);
    assert_eq!(
        h[1]["temporal_auc"],
        serde_json::Value::Null,
        "a fitted run"
    );
    assert_eq!(h[2]["refit"], false);
}

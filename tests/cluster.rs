//! The same job in-process and on an Apache Ballista cluster (issue 17): a scheduler
//! and two executors started here as separate `riskstrat cluster` processes on
//! 127.0.0.1, data written by an independent generator (tests/python/cluster_data.py,
//! not `synth`), and the run folders compared file by file. Also: what a job with a
//! `[cluster]` must give (absolute inputs, a scheduler address), and a cluster that is
//! not there.

use crate::common::moto::*;
use crate::common::*;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process of the cluster, killed when dropped; its output goes to `log`.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[String], log: PathBuf, s3: Option<&str>) -> Process {
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = riskstrat();
    if let Some(endpoint) = s3 {
        with_s3(&mut cmd, endpoint);
    }
    let child = cmd
        .env("RISKSTRAT_LOG", "warn")
        .args(args)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap();
    Process { child, log }
}

/// One scheduler and `n` executors on 127.0.0.1, ready (the scheduler's /readyz).
struct Cluster {
    port: u16,
    processes: Vec<Process>,
}

impl Cluster {
    /// `s3`: the endpoint of an S3 store every process reads (from its environment).
    fn start(dir: &Path, n: usize, s3: Option<&str>) -> Cluster {
        let port = free_port();
        let mut processes = vec![spawn(
            &[
                "cluster".into(),
                "scheduler".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
                "--min-executors".into(),
                n.to_string(),
            ],
            dir.join("scheduler.log"),
            s3,
        )];
        for i in 0..n {
            processes.push(spawn(
                &[
                    "cluster".into(),
                    "executor".into(),
                    "--scheduler".into(),
                    format!("127.0.0.1:{port}"),
                    "--bind".into(),
                    format!("127.0.0.1:{}", free_port()),
                    "--grpc-port".into(),
                    free_port().to_string(),
                    "--work-dir".into(),
                    dir.join(format!("executor-{i}"))
                        .to_string_lossy()
                        .into_owned(),
                    "--concurrent-tasks".into(),
                    "2".into(),
                ],
                dir.join(format!("executor-{i}.log")),
                s3,
            ));
        }
        let cluster = Cluster { port, processes };
        cluster.wait_ready();
        cluster
    }

    /// What a script does: poll GET /readyz until it answers 200.
    fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.port);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(r) = ureq::get(&url).call()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the cluster was not ready in 60 s:\n{}", self.logs());
    }

    fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.log.display(),
                    std::fs::read_to_string(&p.log).unwrap_or_default()
                )
            })
            .collect()
    }

    fn address(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }
}

/// Extracts from the independent generator, `people` people.
fn extracts(dir: &Path, people: usize) -> PathBuf {
    let python = std::env::var("RISKSTRAT_PYTHON").unwrap_or_else(|_| {
        panic!("RISKSTRAT_PYTHON is not set: run ./scripts/test.sh, which installs pyarrow into target/pyenv")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/cluster_data.py");
    let data = dir.join("data");
    let o = Command::new(python)
        .arg(script)
        .arg(&data)
        .args([people.to_string(), "17".into()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    data
}

const TABLES: [&str; 7] = [
    "patients",
    "optouts",
    "appointments",
    "prescriptions",
    "admissions",
    "services",
    "feedback",
];

fn job(dir: &Path, name: &str, data: &Path, cluster: Option<(&str, &Path)>) -> PathBuf {
    let data = data.display().to_string();
    let cluster = cluster.map(|(s, p)| (s, p.display().to_string()));
    job_at(
        dir,
        name,
        &data,
        cluster.as_ref().map(|(s, p)| (*s, p.as_str())),
    )
}

/// A job over the tables under `data` (a folder or a URL), on `cluster` (scheduler,
/// scratch) if given.
fn job_at(dir: &Path, name: &str, data: &str, cluster: Option<(&str, &str)>) -> PathBuf {
    let mut text = format!(
        "[job]\nname = \"{name}\"\nas_of = \"2026-04-01\"\noutput = \"{}\"\n\n[inputs]\n",
        dir.join("runs").display()
    );
    for t in TABLES {
        text += &format!("{t} = \"{data}/{t}/\"\n");
    }
    if let Some((scheduler, scratch)) = cluster {
        text += &format!("\n[cluster]\nscheduler = \"{scheduler}\"\nscratch = \"{scratch}\"\n");
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A Parquet file's rows keyed by pseudo_id, every column as text (floats to 9
/// significant digits: the model is fitted from the same rows in another order).
fn rows(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for b in read_parquet(path) {
        let ids = b
            .column_by_name("pseudo_id")
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone();
        for r in 0..b.num_rows() {
            let values = (0..b.num_columns()).map(|c| cell(&b, c, r)).collect();
            assert!(
                out.insert(ids.value(r).to_string(), values).is_none(),
                "{}: a pseudo_id twice",
                path.display()
            );
        }
    }
    out
}

/// Every row of a Parquet file as text, sorted.
fn all_rows(path: &Path) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = read_parquet(path)
        .iter()
        .flat_map(|b| {
            (0..b.num_rows())
                .map(|r| (0..b.num_columns()).map(|c| cell(b, c, r)).collect())
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

fn cell(b: &RecordBatch, c: usize, r: usize) -> String {
    let col = b.column(c);
    if col.is_null(r) {
        return "null".into();
    }
    if let Some(f) = col.as_any().downcast_ref::<Float64Array>() {
        return format!("{:.9e}", f.value(r));
    }
    if let Some(i) = col.as_any().downcast_ref::<Int64Array>() {
        return i.value(r).to_string();
    }
    datafusion::arrow::util::display::array_value_to_string(col, r).unwrap()
}

/// Count the record batches of every Arrow IPC shuffle file under `dir` by the codec
/// that compressed them ("none" for uncompressed). A file holds IPC streams one after
/// another; each message is a 0xFFFFFFFF marker, the metadata's length, the metadata
/// and the body.
fn shuffle_codecs(dir: &Path, codecs: &mut BTreeMap<String, usize>) {
    use datafusion::arrow::ipc::{MessageHeader, root_as_message};
    for path in shuffle_files(dir) {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 0;
        while at + 8 <= bytes.len() {
            assert_eq!(bytes[at..at + 4], [0xff; 4], "{} at {at}", path.display());
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            at += 8;
            if len == 0 {
                continue; // the end of one stream
            }
            let message = root_as_message(&bytes[at..at + len]).unwrap();
            at += len + message.bodyLength() as usize;
            if message.header_type() == MessageHeader::RecordBatch {
                let batch = message.header_as_record_batch().unwrap();
                let codec = batch.compression().map_or("none".into(), |c| {
                    c.codec().variant_name().unwrap_or("?").to_string()
                });
                *codecs.entry(codec).or_default() += 1;
            }
        }
        assert_eq!(at, bytes.len(), "{}", path.display());
    }
}

/// The Arrow IPC shuffle files under an executor's work folder `dir`.
fn shuffle_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(shuffle_files(&path));
        } else if path.extension().is_some_and(|e| e == "arrow") {
            files.push(path);
        }
    }
    files
}

/// Bytes of shuffle files on the cluster's two executors.
fn shuffle_bytes(dir: &Path) -> u64 {
    (0..2)
        .flat_map(|i| shuffle_files(&dir.join(format!("executor-{i}"))))
        .map(|f| f.metadata().unwrap().len())
        .sum()
}

/// The two runs' per-person files hold the same rows.
fn same_people(a_run: &Path, b_run: &Path) {
    for file in [
        "features.parquet",
        "scores.parquet",
        "cohort_complex_needs.parquet",
        "feedback_people.parquet",
    ] {
        let (a, b) = (rows(&a_run.join(file)), rows(&b_run.join(file)));
        assert!(a.len() > 20, "{file}: {} rows", a.len());
        assert_eq!(a.len(), b.len(), "{file}");
        for (id, values) in &a {
            assert_eq!(Some(values), b.get(id), "{file}, one person's row");
        }
    }
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn a_job_gives_the_same_run_on_a_cluster_as_in_process() {
    let dir = scratch("cluster_same_run");
    let data = extracts(&dir, 4000);
    let cluster = Cluster::start(&dir, 2, None);
    let scratch_dir = dir.join("shared-scratch");
    std::fs::create_dir_all(&scratch_dir).unwrap();

    let local = run_job(&job(&dir, "local", &data, None));
    assert!(local.status.success(), "{}", stderr(&local));
    let address = cluster.address();
    let remote = run_job(&job(&dir, "remote", &data, Some((&address, &scratch_dir))));
    assert!(
        remote.status.success(),
        "{}\n{}",
        stderr(&remote),
        cluster.logs()
    );

    // Each a second time: the runs compare themselves with the first ones (changes).
    let second = run_job(&dir.join("local.toml"));
    assert!(second.status.success(), "{}", stderr(&second));
    let second = run_job(&dir.join("remote.toml"));
    assert!(second.status.success(), "{}", stderr(&second));

    let local = list_runs(&dir.join("runs"), "local").pop().unwrap();
    let remote = list_runs(&dir.join("runs"), "remote").pop().unwrap();
    same_people(&local, &remote);
    // The service evaluation ran in the client's process, over the cluster's tables.
    for file in [
        "service_outcomes.parquet",
        "service_balance.parquet",
        "changes_complex_needs.parquet",
    ] {
        let a = all_rows(&local.join(file));
        assert!(!a.is_empty(), "{file}");
        assert_eq!(a, all_rows(&remote.join(file)), "{file}");
    }
    let (ml, mr) = (manifest(&local), manifest(&remote));
    assert_eq!(ml["ran_on"], "in-process");
    assert_eq!(mr["ran_on"], address.as_str());
    for key in [
        "rows",
        "optouts",
        "population",
        "cohorts",
        "tiers",
        "feedback",
        "feedback_excluded",
        "changes",
    ] {
        assert_eq!(ml[key], mr[key], "manifest {key}");
    }
    // The generator's rule-breaking rows were quarantined on the cluster too.
    assert_eq!(
        mr["rows"]["admissions"]["quarantined_by_reason"]["invalid_admission_method"], 1,
        "{}",
        mr["rows"]
    );
    // Both executors ran tasks: each holds shuffle output of the run's jobs.
    for i in 0..2 {
        let jobs = std::fs::read_dir(dir.join(format!("executor-{i}")))
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with("datafusion-"))
            .count();
        assert!(jobs > 0, "executor {i} ran no job\n{}", cluster.logs());
    }
    // Regression (10M people's validation filled a 30 GB disk with lz4 shuffle
    // files): the run's settings reach the executors, which write zstd.
    let mut codecs = BTreeMap::new();
    for i in 0..2 {
        shuffle_codecs(&dir.join(format!("executor-{i}")), &mut codecs);
    }
    assert_eq!(codecs.keys().collect::<Vec<_>>(), ["ZSTD"], "{codecs:?}");
    // The run's tables in scratch storage are gone, and the run folder holds only
    // what a run writes (nothing written there by an executor).
    let left: Vec<_> = std::fs::read_dir(&scratch_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in scratch: {left:?}");
    // A run that fails on the cluster after its tables reached scratch storage leaves
    // neither a run nor scratch behind.
    let bad = dir.join("bad.sql");
    std::fs::write(
        &bad,
        "SELECT pseudo_id FROM scores WHERE no_such_column > 1\n",
    )
    .unwrap();
    let failing = dir.join("failing.toml");
    let text = std::fs::read_to_string(dir.join("remote.toml")).unwrap();
    std::fs::write(
        &failing,
        format!("{text}\n[cohorts]\ninclude = [\"{}\"]\n", bad.display())
            .replace("name = \"remote\"", "name = \"failing\""),
    )
    .unwrap();
    let o = run_job(&failing);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("bad.sql"), "{}", stderr(&o));
    assert!(list_runs(&dir.join("runs"), "failing").is_empty());
    let left: Vec<_> = std::fs::read_dir(&scratch_dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "left in scratch by a failed run: {left:?}");
    let files = |run: &Path| -> Vec<String> {
        let mut f: Vec<String> = walk(run)
            .iter()
            .map(|p| p.strip_prefix(run).unwrap().display().to_string())
            .collect();
        f.sort();
        f
    };
    assert_eq!(files(&local), files(&remote));
    // No pseudo_id in what the cluster's processes printed.
    let logs = cluster.logs();
    for id in rows(&local.join("scores.parquet")).keys().take(200) {
        assert!(
            !logs.contains(id.as_str()),
            "a pseudo_id in the cluster's logs"
        );
    }
}

/// `broadcast_limit = "0"` turns the joins that broadcast the patients' keys into joins
/// that shuffle both sides by key, as at 60M people: the same run.
#[test]
fn joins_that_shuffle_both_sides_give_the_same_run() {
    let dir = scratch("cluster_shuffled_joins");
    let data = extracts(&dir, 1500);
    let cluster = Cluster::start(&dir, 2, None);
    let local = run_job(&job(&dir, "local", &data, None));
    assert!(local.status.success(), "{}", stderr(&local));
    let on_cluster = |name: &str, extra: &str| {
        let path = job(&dir, name, &data, Some((&cluster.address(), &dir)));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}{extra}")).unwrap();
        let before = shuffle_bytes(&dir);
        let out = run_job(&path);
        assert!(out.status.success(), "{}\n{}", stderr(&out), cluster.logs());
        shuffle_bytes(&dir) - before
    };
    let broadcast = on_cluster("broadcast", "");
    let shuffled = on_cluster("shuffled", "broadcast_limit = \"0\"\n");
    // The setting reaches the scheduler: every event row is shuffled by key rather
    // than the patients' keys being sent whole to each task.
    assert!(
        shuffled > broadcast * 3 / 2,
        "shuffle bytes: {shuffled} with broadcast_limit 0, {broadcast} by default"
    );
    let local = list_runs(&dir.join("runs"), "local").pop().unwrap();
    same_people(
        &local,
        &list_runs(&dir.join("runs"), "shuffled").pop().unwrap(),
    );
    same_people(
        &local,
        &list_runs(&dir.join("runs"), "broadcast").pop().unwrap(),
    );
}

#[test]
fn a_cluster_job_needs_absolute_inputs_and_a_scheduler_address() {
    let dir = scratch("cluster_settings");
    let data = extracts(&dir, 50);
    let path = job(&dir, "j", &data, Some(("df://127.0.0.1:1", &dir)));
    let text = std::fs::read_to_string(&path).unwrap();

    let relative = text.replace(
        &format!("{}/appointments/", data.display()),
        "data/appointments/",
    );
    std::fs::write(&path, relative).unwrap();
    let o = run_job(&path);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("[inputs] appointments") && e.contains("relative path"),
        "{e}"
    );

    for (bad, setting) in [
        (
            "scheduler = \"df://127.0.0.1:1\"",
            "scheduler = \"127.0.0.1:50050\"",
        ),
        (
            "scheduler = \"df://127.0.0.1:1\"",
            "scheduler = \"df://127.0.0.1:port\"",
        ),
    ] {
        std::fs::write(&path, text.replace(bad, setting)).unwrap();
        let o = run_job(&path);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("[cluster] scheduler"), "{}", stderr(&o));
    }
    for scratch in ["scratch", "hdfs://cluster/scratch"] {
        std::fs::write(
            &path,
            text.replace(
                &format!("scratch = \"{}\"", dir.display()),
                &format!("scratch = \"{scratch}\""),
            ),
        )
        .unwrap();
        let o = run_job(&path);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("[cluster] scratch"), "{}", stderr(&o));
    }
    std::fs::write(&path, format!("{text}broadcast_limit = \"lots\"\n")).unwrap();
    let o = run_job(&path);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("[cluster] broadcast_limit"),
        "{}",
        stderr(&o)
    );
    // The cluster's processes never see the job file: its [storage] would be ignored.
    std::fs::write(&path, format!("{text}\n[storage]\nallow_http = true\n")).unwrap();
    let o = run_job(&path);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("[storage]"), "{}", stderr(&o));

    // An executor's own settings: the scheduler's address, its ports.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let work = dir.join("work").to_string_lossy().into_owned();
    for (scheduler, grpc, flag) in [
        (":50050", free_port().to_string(), "--scheduler"),
        ("127.0.0.1:port", free_port().to_string(), "--scheduler"),
        ("127.0.0.1:50050", taken_port, "--grpc-port"),
    ] {
        let bind = format!("127.0.0.1:{}", free_port());
        let o = riskstrat()
            .args([
                "cluster",
                "executor",
                "--scheduler",
                scheduler,
                "--bind",
                &bind,
            ])
            .args(["--grpc-port", &grpc, "--work-dir", &work])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{}", stderr(&o));
    }
}

/// Nothing listens at the scheduler's address: the run fails with an error naming the
/// setting, promptly, and leaves no run behind.
#[test]
fn a_cluster_that_is_not_there_fails_the_run_naming_the_scheduler() {
    let dir = scratch("cluster_absent");
    let data = extracts(&dir, 50);
    let address = format!("df://127.0.0.1:{}", free_port());
    let path = job(&dir, "absent", &data, Some((&address, &dir)));
    let start = Instant::now();
    let o = run_job(&path);
    assert!(!o.status.success());
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let e = stderr(&o);
    assert!(e.contains(&address), "{e}");
    assert!(list_runs(&dir.join("runs"), "absent").is_empty());
}

/// Inputs in S3 (moto on 127.0.0.1) and the scratch storage there too: every process of
/// the cluster builds its store from its environment, and the run equals an in-process
/// run over local copies of the same files.
#[test]
fn a_job_with_inputs_in_s3_runs_on_the_cluster() {
    let dir = scratch("cluster_s3");
    let data = extracts(&dir, 1500);
    let moto = Moto::start(false);
    let mut files = Vec::new();
    for t in TABLES {
        for f in std::fs::read_dir(data.join(t)).unwrap().flatten() {
            let key = format!("extract/{t}/{}", f.file_name().to_string_lossy());
            files.push((key, std::fs::read(f.path()).unwrap()));
        }
    }
    moto.put("cluster-in", &files);
    let cluster = Cluster::start(&dir, 2, Some(&moto.endpoint()));

    let local = run_job(&job(&dir, "local", &data, None));
    assert!(local.status.success(), "{}", stderr(&local));
    let address = cluster.address();
    let path = job_at(
        &dir,
        "s3",
        "s3://cluster-in/extract",
        Some((&address, "s3://cluster-in/scratch")),
    );
    let mut cmd = riskstrat();
    with_s3(&mut cmd, &moto.endpoint());
    let o = cmd.arg("run").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}\n{}", stderr(&o), cluster.logs());
    assert!(!stderr(&o).contains(SECRET));

    let local = list_runs(&dir.join("runs"), "local").pop().unwrap();
    let remote = list_runs(&dir.join("runs"), "s3").pop().unwrap();
    for file in [
        "features.parquet",
        "scores.parquet",
        "cohort_complex_needs.parquet",
    ] {
        assert_eq!(rows(&local.join(file)), rows(&remote.join(file)), "{file}");
    }
    assert_eq!(manifest(&remote)["ran_on"], address.as_str());
    // Nothing is left under the scratch prefix.
    let listing = ureq::get(&format!(
        "{}/cluster-in?list-type=2&prefix=scratch/",
        moto.endpoint()
    ))
    .call()
    .unwrap()
    .into_body()
    .read_to_string()
    .unwrap();
    assert!(!listing.contains("<Key>"), "{listing}");
    assert!(!cluster.logs().contains(SECRET));
}

//! Inputs and run folders in cloud object stores, against real emulators on loopback,
//! installed by the test command: `moto` in server mode for S3 (into target/pyenv),
//! `azurite` for Azure Blob Storage (from npm, into target/node) and
//! `gcp-storage-emulator` for GCS (into target/pyenv; behind tests/python/gcs_front.py,
//! as it speaks the JSON API and object_store the XML API). A job whose inputs are in a
//! bucket or container makes the same run as over local copies; a run written to a
//! bucket is read there by `query`, `reidentify`, `history`, `report` and `serve`; a
//! run killed while uploading leaves no complete run; a missing bucket, a wrong
//! endpoint, refused credentials and a missing object are each exit 2 naming the URL
//! and the setting to fix, and no secret is printed.

use crate::common::moto::*;
use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The small dataset written locally, and its files as (key under `extract/`, bytes),
/// the appointments in a hive-style partition folder.
fn dataset(dir: &Path) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let job = small_dataset().write(dir, "2026-04-01");
    let mut files = Vec::new();
    for t in [
        "patients",
        "prescriptions",
        "admissions",
        "optouts",
        "services",
    ] {
        let bytes = std::fs::read(dir.join(format!("{t}.parquet"))).unwrap();
        files.push((format!("extract/{t}.parquet"), bytes));
    }
    let appts = std::fs::read(dir.join("appointments.parquet")).unwrap();
    // A hive-style partition folder under the folder named as the input.
    files.push((
        "extract/appointments/year=2026/part-0.parquet".into(),
        appts,
    ));
    (job, files)
}

fn job_over(dir: &Path, local_job: &Path, inputs: &str) -> PathBuf {
    let text = std::fs::read_to_string(local_job).unwrap();
    let start = text.find("[inputs]").unwrap();
    let end = start + text[start..].find("[model]").unwrap();
    let job = dir.join("cloud-job.toml");
    std::fs::write(
        &job,
        format!("{}[inputs]\n{inputs}\n{}", &text[..start], &text[end..])
            .replace("output = \"runs\"", "output = \"cloud-runs\""),
    )
    .unwrap();
    job
}

fn s3_inputs(bucket: &str) -> String {
    let at = |t: &str| format!("s3://{bucket}/extract/{t}.parquet");
    format!(
        "patients = \"{}\"\nappointments = \"s3://{bucket}/extract/appointments/\"\nprescriptions = \"{}\"\nadmissions = \"{}\"\noptouts = \"{}\"\nservices = \"{}\"\n",
        at("patients"),
        // A glob, as on local disk.
        format!("s3://{bucket}/extract/prescri*.parquet"),
        at("admissions"),
        at("optouts"),
        at("services")
    )
}

fn run(job: &Path, endpoint: &str) -> Output {
    let mut cmd = riskstrat();
    cmd.args(["run", job.to_str().unwrap()]);
    with_s3(&mut cmd, endpoint);
    cmd.output().unwrap()
}

fn assert_no_secret(o: &Output) {
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
    assert!(!all.contains(SECRET), "the secret was printed: {all}");
}

/// The rows of a Parquet file, sorted, each a list of (column, value).
fn content(path: &Path) -> Vec<Vec<(String, Option<String>)>> {
    let mut rows: Vec<Vec<(String, Option<String>)>> = riskstrat::report::rows(&read_parquet(path))
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().collect())
        .collect();
    let key = |r: &Vec<(String, Option<String>)>| format!("{r:?}");
    rows.sort_by_cached_key(key);
    rows
}

/// Two files hold the same rows, to the last bit: a run's sums of money are exact and
/// its model is fitted on rows in pseudo_id order, so where the inputs come from (or
/// the order their rows arrive in) changes nothing.
fn assert_same_rows(a: &Path, b: &Path, name: &str) {
    let (a, b) = (content(a), content(b));
    assert_eq!(a.len(), b.len(), "{name}: rows");
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y, "{name}");
    }
}

/// Every Parquet file of one run holds what the other's does.
fn assert_same_run(local_run: &Path, cloud_run: &Path) {
    let mut compared = 0;
    for f in walk(local_run) {
        let name = f.strip_prefix(local_run).unwrap();
        if f.extension().is_some_and(|e| e == "parquet") {
            assert_same_rows(&f, &cloud_run.join(name), &name.display().to_string());
            compared += 1;
        }
    }
    assert!(compared >= 5, "{compared} files compared");
}

#[test]
fn a_job_over_an_s3_bucket_makes_the_same_run_as_over_local_copies() {
    let moto = Moto::start(false);
    let dir = scratch("s3-inputs");
    let (local_job, files) = dataset(&dir);
    moto.put("extract-bucket", &files);
    let local = run_job(&local_job);
    assert!(local.status.success(), "{}", stderr(&local));
    let local_run = PathBuf::from(String::from_utf8_lossy(&local.stdout).trim());

    let job = job_over(&dir, &local_job, &s3_inputs("extract-bucket"));
    let o = run(&job, &moto.endpoint());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_secret(&o);
    let cloud_run = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_same_run(&local_run, &cloud_run);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cloud_run.join("manifest.json")).unwrap()).unwrap();
    let text = manifest.to_string();
    assert!(
        text.contains("s3://extract-bucket/extract/patients.parquet"),
        "{text}"
    );
    assert!(!text.contains(SECRET));
}

#[test]
fn cloud_errors_name_the_url_and_the_setting_and_never_the_secret() {
    let moto = Moto::start(false);
    let dir = scratch("s3-errors");
    let (local_job, files) = dataset(&dir);
    moto.put("extract-bucket", &files);
    let check = |o: &Output, url: &str, setting: &str| {
        assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
        let e = stderr(o);
        assert!(e.contains(url), "names {url}: {e}");
        assert!(e.contains(setting), "names {setting}: {e}");
        assert_no_secret(o);
    };

    // A bucket that does not exist.
    let job = job_over(&dir, &local_job, &s3_inputs("no-such-bucket"));
    check(
        &run(&job, &moto.endpoint()),
        "s3://no-such-bucket/",
        "bucket",
    );

    // An endpoint where nothing listens.
    let job = job_over(&dir, &local_job, &s3_inputs("extract-bucket"));
    check(
        &run(&job, "http://127.0.0.1:9"),
        "s3://extract-bucket/",
        "AWS_ENDPOINT",
    );

    // A missing object.
    let inputs =
        s3_inputs("extract-bucket").replace("extract/services.parquet", "extract/nothing.parquet");
    let job = job_over(&dir, &local_job, &inputs);
    check(
        &run(&job, &moto.endpoint()),
        "s3://extract-bucket/extract/nothing.parquet",
        "no .parquet files",
    );

    // Credentials the store refuses.
    // (moto then refuses unknown access keys before it looks for the bucket.)
    let strict = Moto::start(true);
    let job = job_over(&dir, &local_job, &s3_inputs("extract-bucket"));
    check(
        &run(&job, &strict.endpoint()),
        "s3://extract-bucket/",
        "AWS_ACCESS_KEY_ID",
    );

    // Run folders for a bucket that does not exist.
    let job = job_over(&dir, &local_job, &s3_inputs("extract-bucket"));
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace(
            "output = \"cloud-runs\"",
            "output = \"s3://no-such-bucket/runs\"",
        ),
    )
    .unwrap();
    check(
        &run(&job, &moto.endpoint()),
        "s3://no-such-bucket/runs",
        "bucket",
    );

    // A secret in the job file is refused by name.
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        format!("{text}\n[storage]\nsecret_access_key = \"{SECRET}\"\n"),
    )
    .unwrap();
    let o = run(&job, &moto.endpoint());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("secret_access_key"), "{}", stderr(&o));
    assert_no_secret(&o);
}

/// An Azurite blob service on 127.0.0.1, stopped when dropped.
struct Azurite {
    child: Child,
    port: u16,
}

impl Azurite {
    fn start(dir: &Path) -> Azurite {
        let bin = std::env::var("RISKSTRAT_AZURITE").unwrap_or_else(|_| {
            panic!("RISKSTRAT_AZURITE is not set: run ./scripts/test.sh, which installs azurite from npm into target/node")
        });
        let port = free_port();
        let data = dir.join("azurite");
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&data)
            .args(["--disableTelemetry", "--skipApiVersionCheck", "--loose"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: cannot start it ({e})"));
        let azurite = Azurite { child, port };
        wait_for("azurite", port);
        azurite
    }

    /// Upload with Microsoft's Python client (tests/python/azure_put.py).
    fn put(&self, container: &str, dir: &Path, files: &[(String, Vec<u8>)]) {
        let python = std::env::var("RISKSTRAT_PYTHON").expect("RISKSTRAT_PYTHON");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/azure_put.py");
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .arg(format!("http://127.0.0.1:{}/devstoreaccount1", self.port))
            .arg(container);
        for (k, (name, bytes)) in files.iter().enumerate() {
            let local = dir.join(format!("upload-{k}.parquet"));
            std::fs::write(&local, bytes).unwrap();
            cmd.arg(local).arg(name);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

impl Azurite {
    /// riskstrat pointed at this Azurite, the metadata endpoints at a closed port.
    fn riskstrat(&self, args: &[&str]) -> Output {
        riskstrat()
            .args(args)
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env(
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9")
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_job_over_an_azure_container_makes_the_same_run_as_over_local_copies() {
    let dir = scratch("azure-inputs");
    let azurite = Azurite::start(&dir);
    let (local_job, files) = dataset(&dir);
    azurite.put("extract", &dir, &files);
    let local = run_job(&local_job);
    assert!(local.status.success(), "{}", stderr(&local));
    let local_run = PathBuf::from(String::from_utf8_lossy(&local.stdout).trim());

    let inputs = s3_inputs("extract").replace("s3://", "az://");
    let job = job_over(&dir, &local_job, &inputs);
    let azure = |args: &[&str]| azurite.riskstrat(args);
    let o = azure(&["run", job.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cloud_run = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_same_run(&local_run, &cloud_run);

    // Run folders in a container: complete, and read back by `query`.
    azurite.put("runs", &dir, &[]);
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("output = \"cloud-runs\"", "output = \"az://runs/monthly\""),
    )
    .unwrap();
    let o = azure(&["run", job.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let url = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(url.starts_with("az://runs/monthly/test-job/"), "{url}");
    let (cell_key, _) = cell_key();
    let sql = "SELECT sex, COUNT(*) AS n FROM people GROUP BY sex ORDER BY sex";
    let key = cell_key.to_str().unwrap();
    let log = dir.join("query-audit.jsonl");
    let log = log.to_str().unwrap();
    let from_azure = azure(&[
        "query",
        "--run",
        &url,
        "--format",
        "csv",
        "--requester",
        "commissioner.1",
        "--audit",
        log,
        "--cell-key",
        key,
        sql,
    ]);
    assert!(from_azure.status.success(), "{}", stderr(&from_azure));
    let from_disk = azure(&[
        "query",
        "--run",
        local_run.to_str().unwrap(),
        "--format",
        "csv",
        "--requester",
        "commissioner.1",
        "--audit",
        log,
        "--cell-key",
        key,
        sql,
    ]);
    assert!(from_disk.status.success(), "{}", stderr(&from_disk));
    assert_eq!(from_azure.stdout, from_disk.stdout);
    assert!(String::from_utf8_lossy(&from_disk.stdout).starts_with("sex,n\n"));
}

impl Moto {
    /// The keys under `prefix` in `bucket` (unsigned ListObjectsV2).
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.endpoint());
        let xml = ureq::get(&url)
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// The bytes of one object (a signed GET: moto keeps signed uploads private).
    fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("riskstrat-test")
            .with_secret_access_key(SECRET)
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let got = store.get(&object_store::path::Path::from(key)).await;
            got.unwrap_or_else(|e| panic!("getting {key}: {e}"))
                .bytes()
                .await
                .unwrap()
                .to_vec()
        })
    }
}

/// `synth --identifiable` and `pseudonymise` in `dir`, the service evaluation off:
/// the gate's files and a job file over the pseudonymised extract.
fn gate_flow(dir: &Path) -> PathBuf {
    let o = riskstrat()
        .args([
            "synth",
            "--identifiable",
            "--patients",
            "3000",
            "--seed",
            "5",
        ])
        .args(["--as-of", "2026-04-01", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pseudonymise(dir).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let job = dir.join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(&job, text + "\n[outcomes]\nevaluate = false\n").unwrap();
    job
}

/// The same job file writing its runs to `output`.
fn job_writing_to(job: &Path, output: &str, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(job).unwrap();
    let to = job.with_file_name(name);
    std::fs::write(
        &to,
        text.replace("output = \"runs\"", &format!("output = \"{output}\"")),
    )
    .unwrap();
    to
}

/// riskstrat with the S3 settings for `moto`.
fn s3(moto: &Moto) -> Command {
    let mut cmd = riskstrat();
    with_s3(&mut cmd, &moto.endpoint());
    cmd
}

fn last_line(o: &Output) -> String {
    assert!(o.status.success(), "{}", stderr(o));
    assert_no_secret(o);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The gate's release of the cohort for team T01 from `run` (a folder or a URL).
fn release(moto: &Moto, dir: &Path, run: &str, out: &str) -> Output {
    let (audit, out) = (dir.join("gate/audit.jsonl"), dir.join("lists").join(out));
    release_t01(s3(moto), dir, run, &audit, &out)
        .output()
        .unwrap()
}

/// A run folder written to a bucket is the same run as one written to disk, and
/// `query`, `reidentify`, `history` and `report` read it from the bucket.
#[test]
fn a_run_written_to_s3_is_read_by_query_reidentify_history_and_report() {
    let moto = Moto::start(false);
    moto.put("runs", &[]);
    let dir = scratch("s3-output");
    let job = gate_flow(&dir);
    let local_run = last_line(&run_job(&job));
    let cloud_job = job_writing_to(&job, "s3://runs/monthly", "cloud.toml");
    let o = s3(&moto).args(["run"]).arg(&cloud_job).output().unwrap();
    let cloud_run = last_line(&o);
    let id = cloud_run
        .strip_prefix("s3://runs/monthly/complex-needs/")
        .unwrap_or_else(|| panic!("not a run URL: {cloud_run}"));

    // File for file, the same content.
    let local_run = PathBuf::from(local_run);
    let keys = moto.keys("runs", &format!("monthly/complex-needs/{id}/"));
    assert!(
        keys.iter().any(|k| k.ends_with("/manifest.json")),
        "{keys:?}"
    );
    let fetched = dir.join("fetched");
    let mut compared = 0;
    for f in walk(&local_run) {
        let name = f
            .strip_prefix(&local_run)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let key = format!("monthly/complex-needs/{id}/{name}");
        assert!(keys.contains(&key), "{key} was not uploaded: {keys:?}");
        if name.ends_with(".parquet") {
            let copy = fetched.join(&name);
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::write(&copy, moto.get("runs", &key)).unwrap();
            assert_same_rows(&f, &copy, &name);
            compared += 1;
        }
    }
    assert!(compared >= 5, "{compared} files compared");
    let manifest: serde_json::Value = serde_json::from_slice(
        &moto.get("runs", &format!("monthly/complex-needs/{id}/manifest.json")),
    )
    .unwrap();
    assert_eq!(manifest["run_id"], id);

    // A commissioner's query: the same protected answer from the bucket as from disk.
    let (cell_key, _) = cell_key();
    let log = scratch("s3_query_audit").join("audit.jsonl");
    let query = |run: &str| {
        let o = s3(&moto)
            .args(["query", "--run", run, "--format", "csv", "--cell-key"])
            .arg(&cell_key)
            .args(["--requester", "commissioner.1", "--audit"])
            .arg(&log)
            .arg("SELECT tier, COUNT(*) AS n FROM people GROUP BY tier ORDER BY tier")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let answer = query(&cloud_run);
    assert_eq!(answer, query(local_run.to_str().unwrap()));
    assert!(answer.lines().count() >= 3, "{answer}");

    // The gate releases the same list from the bucket's run as from the local one.
    let o = riskstrat()
        .args(["approve", "--team", "T01", "--cohort", "complex_needs"])
        .args(["--job", "complex-needs"])
        .args(["--purpose", "direct-care", "--expires"])
        .arg((chrono::Utc::now().date_naive() + chrono::Days::new(30)).to_string())
        .args(["--approver", "caldicott.guardian", "--teams"])
        .arg(dir.join("teams.toml"))
        .arg("--audit")
        .arg(dir.join("gate/audit.jsonl"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    last_line(&release(&moto, &dir, local_run.to_str().unwrap(), "local"));
    last_line(&release(&moto, &dir, &cloud_run, "cloud"));
    let local_list = std::fs::read_to_string(dir.join("lists/local.csv")).unwrap();
    let cloud_list = std::fs::read_to_string(dir.join("lists/cloud.csv")).unwrap();
    assert_eq!(local_list, cloud_list);
    assert!(
        local_list.lines().count() > 1,
        "an empty list proves nothing"
    );
    let log = riskstrat::governance::audit::read(&dir.join("gate/audit.jsonl")).unwrap();
    assert_eq!(log.last().unwrap().run.as_deref(), Some(id));

    // History and the report read the bucket too.
    let o = s3(&moto)
        .args(["history", "--json", "s3://runs/monthly/complex-needs"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["run_id"], id);
    let report = dir.join("report.html");
    let o = s3(&moto)
        .args(["report", &cloud_run, "--out"])
        .arg(&report)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&report).unwrap().contains(id));

    // A scheduled job writing to the bucket: each tick run once, with the scheduler's
    // lock and attempts log on local disk beside the job file.
    let text = std::fs::read_to_string(&cloud_job).unwrap();
    std::fs::write(&cloud_job, text + "\n[schedule]\ncron = \"0 2 1 * *\"\n").unwrap();
    let backfill = || {
        s3(&moto)
            .args(["backfill"])
            .arg(&cloud_job)
            .args(["--from", "2026-02-01", "--to", "2026-03-31"])
            .output()
            .unwrap()
    };
    let o = backfill();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("\tran\t")
            .count(),
        2
    );
    let o = backfill();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("already run")
            .count(),
        2
    );
    let log =
        std::fs::read_to_string(dir.join(".riskstrat/complex-needs/.schedule.jsonl")).unwrap();
    assert_eq!(log.matches("\"complete\"").count(), 2, "{log}");
    assert!(!dir.join("s3:").exists());
    let o = s3(&moto)
        .args(["history", "--json", "s3://runs/monthly/complex-needs"])
        .output()
        .unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3, "{rows}");
}

/// A run killed while uploading leaves no run that `history`, `query` or `serve`
/// take as complete; the next run succeeds, and once the dead writer's upload has
/// been idle an hour the next run removes it.
#[test]
fn a_run_killed_while_uploading_to_s3_leaves_no_complete_run() {
    use std::os::unix::process::ExitStatusExt;
    let moto = Moto::start(false);
    moto.put("runs", &[]);
    let dir = scratch("s3-killed");
    let job = gate_flow(&dir);
    let cloud_job = job_writing_to(&job, "s3://runs/monthly", "cloud.toml");
    let job_runs = "s3://runs/monthly/complex-needs";
    let history = || {
        let o = s3(&moto)
            .args(["history", "--json", job_runs])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    for point in ["run.upload", "run.before_rename"] {
        let o = s3(&moto)
            .args(["run"])
            .arg(&cloud_job)
            .env("RISKSTRAT_FAULT", format!("{point}=kill"))
            .output()
            .unwrap();
        assert_eq!(o.status.signal(), Some(9), "{point}: {}", stderr(&o));
        assert_eq!(history().as_array().unwrap().len(), 0, "{point}");
    }
    let dead = moto.keys("runs", "monthly/complex-needs/");
    assert!(
        dead.iter().any(|k| k.ends_with(".parquet")),
        "the killed runs had uploaded files: {dead:?}"
    );
    assert!(!dead.iter().any(|k| k.ends_with("manifest.json")));
    // Readers refuse the dead prefix.
    let half = dead
        .iter()
        .find(|k| !k.contains("/.claims/"))
        .unwrap()
        .rsplitn(2, '/')
        .nth(1)
        .unwrap()
        .to_string();
    let (cell_key, _) = cell_key();
    let o = s3(&moto)
        .args(["query", "--run", &format!("s3://runs/{half}"), "--cell-key"])
        .arg(&cell_key)
        .args(["--requester", "commissioner.1", "--audit"])
        .arg(scratch("s3_half_query_audit").join("audit.jsonl"))
        .arg("SELECT COUNT(*) FROM people")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a complete run"), "{}", stderr(&o));
    let access = dir.join("access.toml");
    std::fs::write(
        &access,
        format!(
            "[[token]]\nsha256 = \"{}\"\nname = \"a\"\nrole = \"commissioner\"\njobs = [\"complex-needs\"]\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    // serve over the bucket's runs, without the audit log it needs.
    let unaudited = || {
        let mut c = s3(&moto);
        c.args(["serve", "--runs", "s3://runs/monthly"])
            .args(["--listen", "127.0.0.1:0"])
            .arg("--access")
            .arg(&access)
            .arg("--cell-key")
            .arg(&cell_key);
        c
    };
    let serve = || {
        let mut c = unaudited();
        c.arg("--audit")
            .arg(dir.join("serve-audit.jsonl"))
            .env("RISKSTRAT_LOG", "warn,riskstrat=info");
        c
    };
    let o = serve().output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no complete run"), "{}", stderr(&o));
    // The query audit log never goes into the bucket: without --audit, refused.
    let o = unaudited().output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--audit"), "{}", stderr(&o));

    // The next run is complete and takes a number of its own.
    let run = last_line(&s3(&moto).args(["run"]).arg(&cloud_job).output().unwrap());
    let rows = history();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert!(run.ends_with(rows[0]["run_id"].as_str().unwrap()));
    assert!(run.ends_with("-000003"), "{run}");
    // `serve` serves it from the bucket.
    let log = dir.join("serve.log");
    let mut child = serve()
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on "), "{line}");
    let served = std::fs::read_to_string(&log).unwrap();
    assert!(served.contains(&format!("from run {run}")), "{served}");

    // Two hours on, the dead uploads are removed by the next run of the job.
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    last_line(
        &s3(&moto)
            .args(["run"])
            .arg(&cloud_job)
            .env("RISKSTRAT_CLOCK", later)
            .output()
            .unwrap(),
    );
    let left = moto.keys("runs", &format!("{half}/"));
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(history().as_array().unwrap().len(), 2);
}

/// gcp-storage-emulator (JSON API) behind tests/python/gcs_front.py (the XML API
/// object_store speaks), both on 127.0.0.1, stopped when dropped.
struct Gcs {
    emulator: Child,
    front: Child,
    port: u16,
    account: PathBuf,
}

impl Gcs {
    fn start(dir: &Path) -> Gcs {
        let python = std::env::var("RISKSTRAT_PYTHON").expect("RISKSTRAT_PYTHON");
        let bin = Path::new(&python).with_file_name("gcp-storage-emulator");
        let (emulator_port, port) = (free_port(), free_port());
        let emulator = Command::new(&bin)
            .args(["start", "--host", "127.0.0.1", "--port"])
            .arg(emulator_port.to_string())
            .args(["--in-memory", "-q"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start it ({e})", bin.display()));
        wait_for("gcp-storage-emulator", emulator_port);
        let front = Command::new(&python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/gcs_front.py"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--emulator")
            .arg(format!("http://127.0.0.1:{emulator_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("gcs_front.py", port);
        // A service account file pointing object_store at the front, without OAuth.
        let account = dir.join("gcs-service-account.json");
        std::fs::write(
            &account,
            format!(
                r#"{{"gcs_base_url": "http://127.0.0.1:{port}", "disable_oauth": true, "client_email": "", "private_key": "", "private_key_id": ""}}"#
            ),
        )
        .unwrap();
        Gcs {
            emulator,
            front,
            port,
            account,
        }
    }

    /// Make a bucket and put files in it, through the front (XML API).
    fn put(&self, bucket: &str, files: &[(String, Vec<u8>)]) {
        let base = format!("http://127.0.0.1:{}/{bucket}", self.port);
        ureq::put(&base).send(&[][..]).unwrap();
        for (key, bytes) in files {
            ureq::put(&format!("{base}/{key}"))
                .send(&bytes[..])
                .unwrap_or_else(|e| panic!("putting {key}: {e}"));
        }
    }

    fn riskstrat(&self, args: &[&str]) -> Output {
        riskstrat()
            .args(args)
            .env("GOOGLE_SERVICE_ACCOUNT", &self.account)
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
            .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9")
            .output()
            .unwrap()
    }
}

impl Drop for Gcs {
    fn drop(&mut self) {
        for c in [&mut self.front, &mut self.emulator] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_job_over_a_gcs_bucket_makes_the_same_run_and_writes_runs_there() {
    let dir = scratch("gcs");
    let gcs = Gcs::start(&dir);
    let (local_job, files) = dataset(&dir);
    gcs.put("extract", &files);
    gcs.put("runs", &[]);
    let local = run_job(&local_job);
    assert!(local.status.success(), "{}", stderr(&local));
    let local_run = PathBuf::from(String::from_utf8_lossy(&local.stdout).trim());

    // Inputs in the bucket: the same run as over local copies.
    let inputs = s3_inputs("extract").replace("s3://", "gs://");
    let job = job_over(&dir, &local_job, &inputs);
    let o = gcs.riskstrat(&["run", job.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cloud_run = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_same_run(&local_run, &cloud_run);

    // Run folders in the bucket, twice: each claims its own number with a
    // create-only put, and `query` and `history` read them there.
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        text.replace("output = \"cloud-runs\"", "output = \"gs://runs/monthly\""),
    )
    .unwrap();
    let mut urls = Vec::new();
    for _ in 0..2 {
        let o = gcs.riskstrat(&["run", job.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        urls.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    assert!(
        urls[0].ends_with("-000001") && urls[1].ends_with("-000002"),
        "{urls:?}"
    );
    let claim = format!(
        "http://127.0.0.1:{}/runs/monthly/test-job/.claims/000001",
        gcs.port
    );
    let taken = ureq::put(&claim)
        .header("x-goog-if-generation-match", "0")
        .send(&b"x"[..]);
    assert!(
        matches!(taken, Err(ureq::Error::StatusCode(412))),
        "{taken:?}"
    );
    let o = gcs.riskstrat(&["history", "--json", "gs://runs/monthly/test-job"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let (cell_key, _) = cell_key();
    let key = cell_key.to_str().unwrap();
    let sql = "SELECT sex, COUNT(*) AS n FROM people GROUP BY sex ORDER BY sex";
    let log = scratch("gcs_query_audit").join("audit.jsonl");
    let log = log.to_str().unwrap();
    let args = |run: &str| {
        [
            "query",
            "--run",
            run,
            "--format",
            "csv",
            "--requester",
            "commissioner.1",
            "--audit",
            log,
            "--cell-key",
            key,
            sql,
        ]
        .map(str::to_string)
    };
    let from_gcs = gcs.riskstrat(&args(&urls[1]).each_ref().map(String::as_str));
    let from_disk = gcs.riskstrat(
        &args(local_run.to_str().unwrap())
            .each_ref()
            .map(String::as_str),
    );
    assert!(from_gcs.status.success(), "{}", stderr(&from_gcs));
    assert!(from_disk.status.success(), "{}", stderr(&from_disk));
    assert_eq!(from_gcs.stdout, from_disk.stdout);
}

//! Inputs in cloud object stores, against real emulators on loopback, installed by the
//! test command: `moto` in server mode for S3 (into target/pyenv) and `azurite` for
//! Azure Blob Storage (from npm, into target/node). A job whose inputs are in a bucket
//! or container makes the same run as over local copies; a missing bucket, a wrong
//! endpoint, refused credentials and a missing object are each exit 2 naming the URL
//! and the setting to fix, and no secret is printed.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

/// The secret the tests give riskstrat: it must never appear in any output.
const SECRET: &str = "moto-test-secret-Zq8vPp3LmT5wR1";

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait up to 10 s for an emulator to accept connections.
fn wait_for(what: &str, port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what} did not start on port {port}");
}

/// A moto S3 server on 127.0.0.1, stopped when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    /// `auth`: make moto check credentials (it accepts any by default).
    fn start(auth: bool) -> Moto {
        let python = std::env::var("RISKSTRAT_PYTHON").unwrap_or_else(|_| {
            panic!("RISKSTRAT_PYTHON is not set: run ./scripts/test.sh, which installs moto into target/pyenv")
        });
        let server = Path::new(&python).with_file_name("moto_server");
        let port = free_port();
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start it ({e})", server.display()));
        let moto = Moto { child, port };
        wait_for("moto", port);
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make a bucket and put files in it (moto takes unsigned requests).
    fn put(&self, bucket: &str, files: &[(String, Vec<u8>)]) {
        let base = format!("{}/{bucket}", self.endpoint());
        let _ = ureq::put(&base).send(&[][..]);
        for (key, bytes) in files {
            ureq::put(&format!("{base}/{key}"))
                .send(&bytes[..])
                .unwrap_or_else(|e| panic!("putting {key}: {e}"));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// riskstrat with the S3 settings of the environment pointed at `endpoint`, and the
/// cloud metadata endpoints at a closed port, so nothing ever leaves the machine.
fn with_s3(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", "riskstrat-test")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9")
        .env("GCE_METADATA_HOST", "127.0.0.1:9");
}

/// The small dataset written locally, and its files as (key under `extract/`, bytes),
/// the appointments split into two files of a folder.
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
    files.push(("extract/appointments/part-0.parquet".into(), appts));
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
        at("prescriptions"),
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

/// Sorted rows of a Parquet file, as text, for comparing runs.
fn content(path: &Path) -> Vec<String> {
    let mut rows: Vec<String> = riskstrat::report::rows(&read_parquet(path))
        .unwrap()
        .into_iter()
        .map(|r| format!("{r:?}"))
        .collect();
    rows.sort();
    rows
}

/// Every Parquet file of one run holds what the other's does.
fn assert_same_run(local_run: &Path, cloud_run: &Path) {
    let mut compared = 0;
    for f in walk(local_run) {
        let name = f.strip_prefix(local_run).unwrap();
        if f.extension().is_some_and(|e| e == "parquet") {
            assert_eq!(
                content(&f),
                content(&cloud_run.join(name)),
                "{}",
                name.display()
            );
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
    let o = riskstrat()
        .args(["run", job.to_str().unwrap()])
        .env("AZURE_STORAGE_USE_EMULATOR", "true")
        .env(
            "AZURITE_BLOB_STORAGE_URL",
            format!("http://127.0.0.1:{}", azurite.port),
        )
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cloud_run = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_same_run(&local_run, &cloud_run);
}

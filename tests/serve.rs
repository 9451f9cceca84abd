//! `riskstrat serve` from outside: the binary on a free port, queried by an
//! independently written Flight SQL client (Python ADBC), by 16 concurrent Rust
//! clients whose every answer must equal the in-process one, and with wrong tokens,
//! refused queries, tight limits and TLS.
//!
//! The load test doubles as the benchmark: `RISKSTRAT_LOAD_SECS=60 cargo test
//! --release -p riskstrat --test e2e serve::load -- --nocapture` prints queries per second
//! and latency percentiles (`RISKSTRAT_LOAD_CLIENTS` sets the client count,
//! `RISKSTRAT_LOAD_PATIENTS` the synthetic population, 4,000 by default).

use crate::common::*;
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{FlightInfo, Ticket};
use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use riskstrat::governance::disclosure_control::Policy;
use riskstrat::serve::Commissioner;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const TOKEN: &str = "commissioner-a-7f3c";
const OTHER_TOKEN: &str = "commissioner-b-91d2";

/// Runs of two jobs in one output folder: complex-needs (TOKEN's) and other-job
/// (OTHER_TOKEN's), and the access file granting them.
struct Fixture {
    runs: PathBuf,
    run: PathBuf,
    access: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let patients = env_number("RISKSTRAT_LOAD_PATIENTS", 4000);
        make_fixture("serve_run", patients, "other-job")
    })
}

/// A larger population, for the limits: queries on it take long enough to time out.
/// One job, complex-needs, which both tokens may see (team-b is the hostile one).
fn heavy() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let patients = env_number("RISKSTRAT_HEAVY_PATIENTS", 40000);
        make_fixture("serve_heavy", patients, "complex-needs")
    })
}

/// Synthesise and run complex-needs; run it again as `other_job` unless that is it.
fn make_fixture(name: &str, patients: u64, other_job: &str) -> Fixture {
    let dir = scratch(name);
    let o = synth(&dir, patients, 23);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_job(&dir.join("job.toml"));
    assert!(o.status.success(), "{}", stderr(&o));
    let run = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    if other_job != "complex-needs" {
        let job = std::fs::read_to_string(dir.join("job.toml")).unwrap();
        let other = job.replace(
            "name = \"complex-needs\"",
            &format!("name = \"{other_job}\""),
        );
        assert_ne!(job, other);
        std::fs::write(dir.join("other.toml"), other).unwrap();
        let o = run_job(&dir.join("other.toml"));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let access = dir.join("access.toml");
    std::fs::write(
        &access,
        format!(
            "[[token]]\nsha256 = \"{}\"\nname = \"team-a\"\nrole = \"commissioner\"\njobs = [\"complex-needs\"]\n\n\
             [[token]]\nsha256 = \"{}\"\nname = \"team-b\"\nrole = \"commissioner\"\njobs = [\"{other_job}\"]\n",
            sha256_hex(TOKEN),
            sha256_hex(OTHER_TOKEN)
        ),
    )
    .unwrap();
    Fixture {
        runs: dir.join("runs"),
        run,
        access,
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A `riskstrat serve` process on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    audit: PathBuf,
    log: PathBuf,
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Self {
        Self::on(fixture(), name, extra)
    }

    fn on(f: &Fixture, name: &str, extra: &[&str]) -> Self {
        Self::spawn(f, name, extra, None)
    }

    /// On the small fixture, every batch of every query computing for `ms` more while
    /// `switch` exists (the `query.batch=spin:` fault of debug builds): slow queries
    /// the grammar allows, which the server cannot tell from expensive ones.
    fn slowed(name: &str, extra: &[&str], ms: u64, switch: &Path) -> Self {
        std::fs::write(switch, "").unwrap();
        let fault = format!("query.batch=spin:{ms}:{}", switch.display());
        Self::spawn(fixture(), name, extra, Some(fault))
    }

    fn spawn(f: &Fixture, name: &str, extra: &[&str], fault: Option<String>) -> Self {
        let dir = scratch(&format!("serve_{name}"));
        let (audit, log) = (dir.join("audit.jsonl"), dir.join("stderr.log"));
        let mut child = riskstrat()
            .arg("serve")
            .arg("--runs")
            .arg(&f.runs)
            .arg("--access")
            .arg(&f.access)
            .arg("--audit")
            .arg(&audit)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            // What the limits log (a cancelled query's stop) is at info.
            .env("RISKSTRAT_LOG", "warn,riskstrat=info")
            .envs(fault.map(|f| ("RISKSTRAT_FAULT", f)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Self {
            child,
            addr,
            audit,
            log,
        }
    }

    async fn client(&self, token: Option<&str>) -> FlightSqlServiceClient<Channel> {
        let channel = Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = FlightSqlServiceClient::new(channel);
        if let Some(t) = token {
            c.set_token(t.to_string());
        }
        c
    }

    /// Audit records with this action.
    fn audited(&self, action: &str) -> Vec<riskstrat::governance::audit::Record> {
        riskstrat::governance::audit::read(&self.audit)
            .unwrap()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Client = FlightSqlServiceClient<Channel>;

async fn fetch(c: &mut Client, info: FlightInfo) -> Result<Vec<RecordBatch>, FlightError> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let ticket: Ticket = ep.ticket.expect("endpoint has a ticket");
        out.extend(c.do_get(ticket).await?.try_collect::<Vec<_>>().await?);
    }
    Ok(out)
}

/// A statement query.
async fn query(c: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, FlightError> {
    let info = c.execute(sql.to_string(), None).await?;
    fetch(c, info).await
}

/// The same through a prepared statement.
async fn prepared(c: &mut Client, sql: &str) -> Result<Vec<RecordBatch>, FlightError> {
    let mut p = c.prepare(sql.to_string(), None).await?;
    let info = p.execute().await?;
    let out = fetch(c, info).await?;
    p.close().await?;
    Ok(out)
}

fn code(r: Result<impl std::fmt::Debug, FlightError>) -> (Code, String) {
    match r {
        Err(FlightError::Tonic(s)) => (s.code(), s.message().to_string()),
        other => panic!("expected a gRPC error, got {other:?}"),
    }
}

fn table(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

/// Allowed queries, ordered so that equal answers print alike.
const LOAD: &[&str] = &[
    "SELECT age_band, sex, count(*) AS n, avg(risk) AS mean_risk FROM people GROUP BY age_band, sex ORDER BY age_band, sex",
    "SELECT tier, count(*) AS n, sum(emergency_admissions_12m) AS admissions FROM people GROUP BY tier ORDER BY tier",
    "SELECT imd_quintile, count(*) AS n, avg(age) AS mean_age FROM riskstrat.complex_needs.people GROUP BY imd_quintile ORDER BY imd_quintile",
    "SELECT cohort, tier, count(*) AS n FROM cohort_people GROUP BY cohort, tier ORDER BY cohort, tier",
    "SELECT count(*) AS n, avg(risk) AS mean_risk FROM people WHERE age_band IN ('65-74', '75-84', '85+')",
    "SELECT lsoa_code, count(*) AS n FROM people GROUP BY lsoa_code ORDER BY lsoa_code",
];

async fn in_process(sql: &str) -> riskstrat::serve::Answer {
    in_process_on(fixture(), sql).await
}

async fn in_process_on(f: &Fixture, sql: &str) -> riskstrat::serve::Answer {
    let c = Commissioner::open(&[f.run.clone()], Policy::default(), &cell_key().1)
        .await
        .unwrap();
    c.query(sql).await.unwrap()
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_concurrent_clients_get_in_process_answers() {
    let secs = env_number("RISKSTRAT_LOAD_SECS", 5);
    let clients = env_number("RISKSTRAT_LOAD_CLIENTS", 16) as usize;
    let server = Server::start("load", &[]);
    let mut expected = Vec::new();
    for sql in LOAD {
        expected.push(table(&in_process(sql).await.batches));
    }
    let expected = std::sync::Arc::new(expected);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for k in 0..clients {
        let mut c = server.client(Some(TOKEN)).await;
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), Vec::new());
            let mut i = k;
            while Instant::now() < deadline {
                let sql = LOAD[i % LOAD.len()];
                let t = Instant::now();
                let got = if i % 2 == 0 {
                    query(&mut c, sql).await
                } else {
                    prepared(&mut c, sql).await
                };
                latencies.push(t.elapsed());
                match got {
                    Ok(b) if table(&b) == expected[i % LOAD.len()] => {}
                    Ok(b) => errors.push(format!("{sql}: wrong answer\n{}", table(&b))),
                    Err(e) => errors.push(format!("{sql}: {e}")),
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies.extend(l);
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} of {} queries failed; first: {}",
        errors.len(),
        latencies.len(),
        errors[0]
    );
    latencies.sort();
    let n = latencies.len();
    let pct = |p: usize| latencies[(n * p / 100).min(n - 1)].as_secs_f64() * 1000.0;
    println!(
        "{clients} clients, {secs} s: {n} queries, {:.0} queries/s; latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        n as f64 / secs as f64,
        pct(50),
        pct(95),
        pct(99)
    );
    assert!(n >= clients, "every client answered at least once");

    // One audit record per answer, chained intact.
    let audited = server.audited("query");
    assert_eq!(audited.len(), n, "one query record per answer");
    assert!(
        audited
            .iter()
            .all(|r| r.actor == "team-a" && r.rows.is_some())
    );
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(&server.audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn python_adbc_client() {
    let python = std::env::var("RISKSTRAT_PYTHON").unwrap_or_else(|_| {
        panic!(
            "RISKSTRAT_PYTHON is not set: run ./scripts/test.sh, which installs the Python Flight SQL client (adbc-driver-flightsql, pyarrow) into target/pyenv and points RISKSTRAT_PYTHON at it"
        )
    });
    let server = Server::start("python", &[]);
    let sql = "SELECT practice_code, age_band, sex, count(*) AS n, avg(risk) AS mean_risk FROM people GROUP BY practice_code, age_band, sex ORDER BY practice_code, age_band, sex";
    let answer = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(in_process(sql));
    let rows: serde_json::Value = serde_json::from_str(
        &riskstrat::serve::render::render(&answer, riskstrat::serve::render::Format::Json).unwrap(),
    )
    .unwrap();
    let config = scratch("serve_python_cfg").join("client.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "uri": format!("grpc://{}", server.addr),
            "token": TOKEN,
            "other_token": OTHER_TOKEN,
            "schema": "complex_needs",
            "aggregate": {"sql": sql, "rows": rows},
        })
        .to_string(),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/flight_client.py");
    let o = std::process::Command::new(&python)
        .arg(script)
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("RISKSTRAT_PYTHON={python}: cannot run it ({e})"));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the Python client failed:\n{out}\n{}\nserver log:\n{}",
        stderr(&o),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
    assert!(out.contains("all checks passed"), "{out}");
    for check in [
        "aggregate answer equals",
        "refused: 'SELECT * FROM people'",
        "wrong token",
        "no token",
        "prepared statement",
    ] {
        assert!(out.contains(check), "no check {check:?} in:\n{out}");
    }
    // The client's queries and refusals were audited under the token's name, never the token.
    let text = std::fs::read_to_string(&server.audit).unwrap();
    assert!(!text.contains(TOKEN) && !text.contains(OTHER_TOKEN));
    assert!(
        server
            .audited("query")
            .iter()
            .any(|r| r.query.as_deref() == Some(sql))
    );
    // Regression: a prepared statement or GetFlightInfo that passed was not audited,
    // though its check on the data told the caller the query passes.
    let plans = server.audited("plan");
    assert!(
        plans.iter().any(|r| r.query.as_deref() == Some(sql)),
        "{plans:?}"
    );
    assert!(
        plans
            .iter()
            .all(|r| r.actor == "team-a" && r.rows.is_none())
    );
    let refusals = server.audited("refuse");
    assert!(refusals.iter().any(|r| {
        r.actor == "team-a"
            && r.query.as_deref() == Some("SELECT * FROM people")
            && r.detail
                .as_deref()
                .is_some_and(|d| d.contains("disclosure control"))
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_refusals_and_metadata() {
    let server = Server::start("tokens", &[]);
    let sql = "SELECT tier, count(*) AS n FROM people GROUP BY tier ORDER BY tier";

    for (token, says) in [(None, "no token"), (Some("wrong"), "unknown token")] {
        let mut c = server.client(token).await;
        let (c1, m) = code(query(&mut c, sql).await);
        assert_eq!(c1, Code::Unauthenticated, "{m}");
        assert!(m.contains(says), "{m}");
        assert_eq!(code(prepared(&mut c, sql).await).0, Code::Unauthenticated);
        assert_eq!(code(c.get_catalogs().await).0, Code::Unauthenticated);
    }
    // Failed authentications are logged by a task of their own: wait for it.
    let t = Instant::now();
    let mut log = std::fs::read_to_string(&server.log).unwrap();
    while !log.contains("unknown token") && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        log = std::fs::read_to_string(&server.log).unwrap();
    }
    assert!(
        log.contains("unknown token") && !log.contains(TOKEN),
        "{log}"
    );

    let mut a = server.client(Some(TOKEN)).await;
    let want = table(&in_process(sql).await.batches);
    assert_eq!(table(&query(&mut a, sql).await.unwrap()), want);
    assert_eq!(table(&prepared(&mut a, sql).await.unwrap()), want);
    let (c1, m) = code(query(&mut a, "SELECT risk FROM people").await);
    assert_eq!(c1, Code::InvalidArgument);
    assert!(
        m.starts_with("refused by disclosure control [aggregate]"),
        "{m}"
    );
    let (c1, m) = code(prepared(&mut a, "DROP VIEW people").await);
    assert_eq!(c1, Code::InvalidArgument);
    assert!(m.contains("disclosure control [select]"), "{m}");
    let (c1, m) = code(a.execute_update("DELETE FROM people".into(), None).await);
    assert_eq!(c1, Code::PermissionDenied, "{m}");

    // Bound parameters are refused, not ignored.
    let mut p = a.prepare(sql.into(), None).await.unwrap();
    let params = RecordBatch::try_from_iter([(
        "x",
        std::sync::Arc::new(StringArray::from(vec!["a"])) as std::sync::Arc<dyn Array>,
    )])
    .unwrap();
    p.set_parameters(params).unwrap();
    let (c1, m) = code(p.execute().await);
    assert_eq!(c1, Code::InvalidArgument);
    assert!(m.contains("no parameters"), "{m}");

    // Metadata: the caller's catalog, schema and views.
    let info = a.get_catalogs().await.unwrap();
    let catalogs = fetch(&mut a, info).await.unwrap();
    assert!(table(&catalogs).contains("riskstrat"));
    let info = a
        .get_db_schemas(CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: None,
        })
        .await
        .unwrap();
    let schemas = table(&fetch(&mut a, info).await.unwrap());
    assert!(
        schemas.contains("complex_needs") && !schemas.contains("other_job"),
        "{schemas}"
    );
    let info = a
        .get_tables(CommandGetTables {
            catalog: Some("riskstrat".into()),
            db_schema_filter_pattern: Some("complex%".into()),
            table_name_filter_pattern: Some("%people".into()),
            table_types: vec!["VIEW".into()],
            include_schema: true,
        })
        .await
        .unwrap();
    let tables = fetch(&mut a, info).await.unwrap();
    let column = |i: usize| -> Vec<String> {
        let c = tables[0]
            .column(i)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        c.iter().map(|v| v.unwrap().to_string()).collect()
    };
    assert_eq!(column(1), ["complex_needs", "complex_needs"]);
    assert_eq!(column(2), ["cohort_people", "people"]);
    assert_eq!(column(3), ["VIEW", "VIEW"]);
    assert_eq!(tables[0].num_columns(), 5, "with each view's schema");
    let info = a
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerReadOnly,
        ])
        .await
        .unwrap();
    assert_eq!(fetch(&mut a, info).await.unwrap()[0].num_rows(), 2);

    // The other token sees its own job and nothing of this one.
    let mut b = server.client(Some(OTHER_TOKEN)).await;
    let (c1, m) = code(
        query(
            &mut b,
            "SELECT count(*) AS n FROM riskstrat.complex_needs.people",
        )
        .await,
    );
    assert_eq!(c1, Code::InvalidArgument, "{m}");
    let n = query(
        &mut b,
        "SELECT count(*) AS n FROM riskstrat.other_job.people",
    )
    .await
    .unwrap();
    assert_eq!(n[0].num_rows(), 1);
    let refused = server.audited("refuse");
    assert!(refused.iter().any(|r| r.actor == "team-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_memory_limits() {
    let sql = "SELECT age_band, count(*) AS n FROM people GROUP BY age_band";
    let slow = Server::start("timeout", &["--query-timeout", "0.000001"]);
    let (c1, m) = code(query(&mut slow.client(Some(TOKEN)).await, sql).await);
    assert_eq!(c1, Code::DeadlineExceeded, "{m}");
    assert!(m.contains("--query-timeout"), "{m}");

    let small = Server::start("memory", &["--query-memory", "1KiB"]);
    let (c1, m) = code(query(&mut small.client(Some(TOKEN)).await, sql).await);
    assert_eq!(c1, Code::ResourceExhausted, "{m}");
    assert!(m.contains("1KiB") && m.contains("--query-memory"), "{m}");
    // Both refusals are audited with their reason.
    for s in [&slow, &small] {
        let r = s.audited("refuse");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].query.as_deref(), Some(sql));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tls");
    let (cert, key) = (tls.join("server.pem"), tls.join("server.key"));
    let server = Server::start(
        "tls",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap();
    let ca = Certificate::from_pem(std::fs::read(tls.join("ca.pem")).unwrap());
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(ca)
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(TOKEN.into());
    let b = query(&mut c, "SELECT count(*) AS n FROM people")
        .await
        .unwrap();
    assert_eq!(b[0].num_rows(), 1);
    // Plain gRPC to a TLS server gets nowhere.
    let mut plain = server.client(Some(TOKEN)).await;
    assert!(
        query(&mut plain, "SELECT count(*) AS n FROM people")
            .await
            .is_err()
    );
}

#[test]
fn bad_start_up_input_exits_2_naming_the_fix() {
    let f = fixture();
    let dir = scratch("serve_bad");
    let access = dir.join("access.toml");
    std::fs::write(
        &access,
        "[[token]]\nsha256 = \"commissioner-a-7f3c\"\nname = \"a\"\nrole = \"commissioner\"\njobs = [\"complex-needs\"]\n",
    )
    .unwrap();
    let serve = |runs: &Path, access: &Path| {
        riskstrat()
            .arg("serve")
            .arg("--runs")
            .arg(runs)
            .arg("--access")
            .arg(access)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap()
    };
    let o = serve(&f.runs, &access);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("access.toml") && stderr(&o).contains("64 hex digits"),
        "{}",
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("commissioner-a-7f3c"),
        "a token in the file is not echoed"
    );
    let o = serve(&dir, &f.access);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no complete run folders"),
        "{}",
        stderr(&o)
    );
}

// --- the limits: one client cannot take the service from the others ---

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's threads running a query now (each query has one, named `query`).
    fn query_threads(&self) -> usize {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "query")
            })
            .count()
    }

    /// How many cancelled queries have stopped, and how late after their limit (ms),
    /// from the server's log.
    fn stopped_late(&self) -> Vec<u64> {
        self.log_text()
            .lines()
            .filter_map(|l| {
                let rest = l.split("(--query-timeout) stopped ").nth(1)?;
                rest.split(" ms after it").next()?.parse().ok()
            })
            .collect()
    }

    /// Wait (up to 10 s) until `n` audit records have the action.
    async fn wait_audited(
        &self,
        action: &str,
        n: usize,
    ) -> Vec<riskstrat::governance::audit::Record> {
        let t = Instant::now();
        loop {
            let r = self.audited(action);
            if r.len() >= n || t.elapsed() > Duration::from_secs(10) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A field of /proc/PID/status in KiB (VmRSS: resident now; VmHWM: the peak).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU seconds (user + system) the process has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let o = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces:
    // utime and stime are the 12th and 13th of them.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / ticks
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort();
    latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]
}

// The heaviest queries the closed grammar allows: no function, cast or arithmetic can
// be written, so the cost a commissioner controls is in filters, groups and the view.

/// Every dimension of people: the cut check and the aggregate hold a group per
/// combination present, about one per person (refused by the cut rule if it ever
/// completes).
const ALL_DIMENSIONS: &str = "practice_code, lsoa_code, imd_decile, imd_quintile, age_band, sex, tier, emergency_admissions_band, polypharmacy_band, ltc_band, gp_appts_band";

fn memory_hog(view: &str) -> String {
    format!(
        "SELECT {ALL_DIMENSIONS}, count(*) AS n, avg(risk) AS r FROM {view} GROUP BY {ALL_DIMENSIONS}"
    )
}

/// Computes for long with little memory: a filter of `terms` alternatives on two
/// dimensions (no factor common to all, so none is taken out), every row tested
/// against each. Its cut (age_band x sex) is allowed.
fn time_hog(terms: usize) -> String {
    let alternatives: Vec<String> = (0..terms)
        .map(|i| format!("(age_band = 'b{i}' AND sex = '{}')", ["F", "M"][i % 2]))
        .collect();
    format!(
        "SELECT age_band, count(*) AS n FROM people WHERE {} OR sex = 'F' GROUP BY age_band",
        alternatives.join(" OR ")
    )
}

/// The longest filter the grammar allows (64 comparisons) under an allowed cut
/// (age_band x sex). At 40,000 people it costs no more than `count(*)` (both about
/// 0.2 s as a whole `riskstrat query` process).
fn widest_filter() -> String {
    let alternatives: Vec<String> = (0..31)
        .map(|i| format!("(age_band = 'b{i}' AND sex = '{}')", ["F", "M"][i % 2]))
        .collect();
    format!(
        "SELECT age_band, count(*) AS n, avg(risk) AS r FROM people WHERE {} OR sex = 'F' GROUP BY age_band",
        alternatives.join(" OR ")
    )
}

/// The memory limit of the hostile test: enough for every LOAD query, not for the
/// memory-hungry ones on the heavy fixture.
const HEAVY_MEMORY: &str = "16MiB";
/// The RSS test's memory limit, and how much the server's peak RSS may grow over its
/// resident size with 4 queries under it at once.
const RSS_LIMIT_MIB: u64 = 16;
const RSS_BOUND_MIB: u64 = 4 * RSS_LIMIT_MIB + 64;

/// The original finding: an expression building a large string per person
/// (823 MiB of RSS under a 64 MiB limit). The closed grammar refuses it now.
const STRING_BUILDER: &str =
    "SELECT count(*) AS n FROM people WHERE length(repeat(lsoa_code, 8000)) > 0";

/// The latencies of every client running `per_client` queries of LOAD (statements and
/// prepared statements in turn), each answer checked against `expected`.
async fn round(
    clients: &mut Vec<Client>,
    per_client: usize,
    expected: &std::sync::Arc<Vec<String>>,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for (k, mut c) in clients.drain(..).enumerate() {
        let expected = expected.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in k..k + per_client {
                let sql = LOAD[i % LOAD.len()];
                let t = Instant::now();
                let got = if i % 2 == 0 {
                    query(&mut c, sql).await
                } else {
                    prepared(&mut c, sql).await
                };
                latencies.push(t.elapsed());
                let got = got.unwrap_or_else(|e| panic!("{sql}: {e}"));
                assert_eq!(table(&got), expected[i % LOAD.len()], "{sql}");
            }
            (c, latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let (c, l) = t.await.unwrap();
        clients.push(c);
        all.extend(l);
    }
    all
}

/// What the hostile client got: the status of each query and how long it took.
type Outcomes = Vec<((Code, String), Duration)>;

/// The hostile client: the heaviest allowed queries (and refused ones) in turn until
/// `stop`; an answer counts as `Code::Ok`.
fn hostile(
    mut h: Client,
    queries: Vec<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Outcomes> {
    tokio::spawn(async move {
        let mut outcomes = Vec::new();
        let mut i = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let got = match query(&mut h, &queries[i % queries.len()]).await {
                Ok(_) => (Code::Ok, String::new()),
                Err(e) => code(Err::<(), _>(e)),
            };
            outcomes.push((got, t.elapsed()));
            i += 1;
        }
        outcomes
    })
}

#[ignore = "benchmark: scripts/bench_serve.sh runs it in release at 200,000 people"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_client_leaves_the_others_their_latency() {
    let f = heavy();
    let limit = Duration::from_millis(500);
    let server = Server::on(
        f,
        "hostile",
        &["--query-memory", HEAVY_MEMORY, "--query-timeout", "0.5"],
    );
    let mut expected = Vec::new();
    for sql in LOAD {
        expected.push(table(&in_process_on(f, sql).await.batches));
    }
    let expected = std::sync::Arc::new(expected);
    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(server.client(Some(TOKEN)).await);
    }
    let per_client = env_number("RISKSTRAT_HOSTILE_QUERIES", 6) as usize;
    // The grammar leaves nothing expensive to ask (issue 10): the hostile client
    // sends the heaviest allowed queries back to back, and refused ones between.
    let heavy_queries = vec![
        widest_filter(),
        memory_hog("people"),
        longest_in_list(),
        time_hog(1500),
    ];
    // Rounds alternate, so that whatever else loads the machine meanwhile weighs on
    // both measures alike.
    let (mut unloaded, mut loaded, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        unloaded.extend(round(&mut clients, per_client, &expected).await);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attacker = hostile(
            server.client(Some(OTHER_TOKEN)).await,
            heavy_queries.clone(),
            stop.clone(),
        );
        // Let the first heavy query start.
        tokio::time::sleep(Duration::from_millis(100)).await;
        loaded.extend(round(&mut clients, per_client, &expected).await);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        outcomes.extend(attacker.await.unwrap());
    }
    let (n_unloaded, n_loaded) = (unloaded.len(), loaded.len());
    let (quiet, busy) = (p99(&mut unloaded), p99(&mut loaded));
    let count = |code: Code| outcomes.iter().filter(|((c, _), _)| *c == code).count();
    let (answered, refused_as_written) = (count(Code::Ok), count(Code::InvalidArgument));
    let memory = count(Code::ResourceExhausted);
    let time: Vec<Duration> = outcomes
        .iter()
        .filter(|((c, _), _)| *c == Code::DeadlineExceeded)
        .map(|(_, t)| *t)
        .collect();
    println!(
        "16 clients, {n_unloaded} queries unloaded: p99 {:.1} ms (p50 {:.1} ms); {n_loaded} beside a hostile client: p99 {:.1} ms (p50 {:.1} ms), ratio {:.2}; hostile: {answered} answered, {refused_as_written} refused as written, {memory} stopped at --query-memory {HEAVY_MEMORY}, {} at --query-timeout 0.5 (answered after {:.0} ms at most)",
        ms(quiet),
        ms(unloaded[n_unloaded / 2]),
        ms(busy),
        ms(loaded[n_loaded / 2]),
        busy.as_secs_f64() / quiet.as_secs_f64(),
        time.len(),
        time.iter().map(|t| ms(*t)).fold(0.0, f64::max),
    );
    for ((c, m), _) in &outcomes {
        match c {
            Code::Ok => {}
            Code::InvalidArgument => {
                assert!(m.contains("refused") || m.contains("bytes long"), "{m}")
            }
            Code::ResourceExhausted => assert!(m.contains("--query-memory"), "{m}"),
            Code::DeadlineExceeded => assert!(m.contains("--query-timeout"), "{m}"),
            _ => panic!("the hostile query failed otherwise: {c:?}: {m}"),
        }
    }
    assert!(answered > 0 && refused_as_written > 0, "{outcomes:?}");
    // Answered at the limit, although it waits for a slot first.
    assert!(time.iter().all(|t| *t >= limit));
    assert!(
        busy <= quiet * 2,
        "p99 beside the hostile client {:.1} ms, more than twice the unloaded {:.1} ms",
        ms(busy),
        ms(quiet)
    );
    // Every query, the hostile ones too, is audited once.
    assert_eq!(
        server.audited("query").len(),
        n_unloaded + n_loaded + answered
    );
    let refused = server.audited("refuse");
    assert_eq!(refused.len(), outcomes.len() - answered);
    assert!(refused.iter().all(|r| r.actor == "team-b"));
}

/// A query every view answers, made slow by the `spin` fault.
const SLOWED: &str = "SELECT age_band, count(*) AS n FROM people GROUP BY age_band";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_fires_on_time_and_stops_the_work() {
    let limit = Duration::from_millis(500);
    let switch = scratch("serve_precision_switch").join("slow");
    // 300 ms a batch: the query computes well past the limit, in steps it cannot be
    // interrupted within (as an expensive expression would).
    let server = Server::slowed("precision", &["--query-timeout", "0.5"], 300, &switch);
    let mut c = server.client(Some(TOKEN)).await;
    let mut late = Vec::new();
    for i in 0..4 {
        let before = cpu_seconds(server.pid());
        let t = Instant::now();
        let (got, m) = code(query(&mut c, SLOWED).await);
        let took = t.elapsed();
        let used = cpu_seconds(server.pid()) - before;
        assert_eq!(got, Code::DeadlineExceeded, "{m}");
        assert!(m.contains("--query-timeout"), "{m}");
        // The figure the issue asks for (within 100 ms) is printed, and measured in
        // release by scripts/bench_serve.sh; the bound here leaves room for a loaded
        // CI host.
        assert!(
            took >= limit && took < limit + Duration::from_millis(400),
            "DEADLINE_EXCEEDED after {:.0} ms, limit {:.0} ms",
            ms(took),
            ms(limit)
        );
        // Computing, not waiting (a loaded host gives it less than the whole 0.5 s).
        assert!(used > 0.1, "the query was computing ({used:.2} CPU s)");
        late.push(ms(took - limit));

        // The work stops: the log says when, and the server goes idle.
        let t = Instant::now();
        while server.stopped_late().len() <= i {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the cancelled query had not stopped 5 s after its limit"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let idle = cpu_seconds(server.pid());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy = cpu_seconds(server.pid()) - idle;
        assert!(
            busy < 0.1,
            "{busy:.2} CPU s in 300 ms after the query stopped"
        );
        assert_eq!(server.query_threads(), 0);
    }
    // Within about one 300 ms step. Before the query's scans read a stop flag, the
    // query thread first ran one step of each of its ready tasks: 1,300 ms.
    let stopped = server.stopped_late();
    assert!(
        stopped.iter().all(|l| *l < 700),
        "stopped {stopped:?} ms late"
    );
    println!(
        "DEADLINE_EXCEEDED after the {:.0} ms limit plus {late:.1?} ms; the cancelled work (300 ms steps) stopped {:?} ms after the limit",
        ms(limit),
        server.stopped_late()
    );
    // Still answering, and at full speed once queries are cheap again.
    std::fs::remove_file(&switch).unwrap();
    let t = Instant::now();
    let n = query(&mut c, SLOWED).await;
    assert!(n.unwrap()[0].num_rows() > 1);
    assert!(t.elapsed() < limit, "{:.0} ms", ms(t.elapsed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_beyond_the_cap_wait_then_are_refused_as_busy() {
    let switch = scratch("serve_cap_switch").join("slow");
    // 1 s a batch: each of the two slow queries holds its slot until its 1.5 s limit.
    let server = Server::slowed(
        "cap",
        &[
            "--max-concurrent-queries",
            "2",
            "--queue-timeout",
            "0.3",
            "--query-timeout",
            "1.5",
        ],
        1000,
        &switch,
    );
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut a = server.client(Some(TOKEN)).await;
        hogs.push(tokio::spawn(
            async move { code(query(&mut a, SLOWED).await) },
        ));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = server.query_threads();
    let mut b = server.client(Some(TOKEN)).await;
    let t = Instant::now();
    let (got, m) = code(query(&mut b, "SELECT count(*) AS n FROM people").await);
    let waited = t.elapsed();
    let still = server.query_threads();
    assert_eq!(
        (running, still),
        (2, 2),
        "query threads while the 2 slots are taken"
    );
    assert_eq!(got, Code::ResourceExhausted, "{m}");
    assert!(
        m.contains("busy") && m.contains("--max-concurrent-queries"),
        "{m}"
    );
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(800),
        "refused after {:.0} ms",
        ms(waited)
    );
    for h in hogs {
        let (got, m) = h.await.unwrap();
        assert_eq!(got, Code::DeadlineExceeded, "{m}");
    }
    // Once a slot is free, the same query is answered.
    std::fs::remove_file(&switch).unwrap();
    let t = Instant::now();
    while server.query_threads() > 0 && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let n = query(&mut b, "SELECT count(*) AS n FROM people").await;
    assert_eq!(n.unwrap()[0].num_rows(), 1);
    println!(
        "2 slots taken ({running} query threads): a third query was refused as busy after {:.0} ms (--queue-timeout 0.3)",
        ms(waited)
    );
    let refused = server.audited("refuse");
    assert!(
        refused
            .iter()
            .any(|r| r.detail.as_deref().is_some_and(|d| d.contains("busy")))
    );
}

/// The longest IN list the query-text limit lets through (64 KiB).
fn longest_in_list() -> String {
    let values: Vec<String> = (0..5400).map(|i| format!("'E{i:08}'")).collect();
    format!(
        "SELECT lsoa_code, count(*) AS n FROM people WHERE lsoa_code IN ({}) GROUP BY lsoa_code",
        values.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heaviest_allowed_queries_keep_the_server_rss_bounded() {
    let (limit_mib, slots) = (RSS_LIMIT_MIB, 4);
    let limit = format!("{limit_mib}MiB");
    let server = Server::on(
        heavy(),
        "rss",
        &["--query-memory", &limit, "--query-timeout", "5"],
    );
    let pid = server.pid();
    let mut c = server.client(Some(TOKEN)).await;
    // The attack is refused by the grammar, as is a query text beyond the limit.
    let (got, m) = code(query(&mut c, STRING_BUILDER).await);
    assert_eq!(got, Code::InvalidArgument, "{m}");
    assert!(m.contains("refused by disclosure control"), "{m}");
    let (got, m) = code(query(&mut c, &time_hog(3000)).await);
    assert_eq!(got, Code::InvalidArgument, "{m}");
    assert!(m.contains("bytes long"), "{m}");
    // Warm up: the caches and buffers every query uses.
    for sql in LOAD {
        query(&mut c, sql).await.unwrap();
    }
    let base = proc_kib(pid, "VmRSS");
    // Reset the peak (VmHWM) to what is resident now.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let heavy_queries = [
        memory_hog("people"),
        memory_hog("cohort_people"),
        widest_filter(),
        longest_in_list(),
    ];
    assert!(heavy_queries.iter().all(|q| q.len() <= 64 * 1024));
    let mut tasks = Vec::new();
    for k in 0..slots {
        let mut h = server.client(Some(OTHER_TOKEN)).await;
        let queries = heavy_queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..8 {
                let sql = &queries[(k + i) % queries.len()];
                out.push((sql.len(), query(&mut h, sql).await.map(|b| b.len())));
            }
            out
        }));
    }
    let (mut exhausted, mut answered) = (0, 0);
    for t in tasks {
        for (len, r) in t.await.unwrap() {
            match r {
                Ok(_) => answered += 1,
                Err(e) => {
                    let (got, m) = code(Err::<(), _>(e));
                    match got {
                        Code::ResourceExhausted => {
                            assert!(m.contains(&limit) && m.contains("--query-memory"), "{m}");
                            exhausted += 1;
                        }
                        Code::DeadlineExceeded | Code::InvalidArgument => answered += 1,
                        _ => panic!("query of {len} bytes: {got:?}: {m}"),
                    }
                }
            }
        }
    }
    let peak = proc_kib(pid, "VmHWM");
    let grew = peak.saturating_sub(base) / 1024;
    println!(
        "server RSS {} MiB before, peak {} MiB while {slots} clients ran the heaviest allowed queries (+{grew} MiB; --query-memory {limit}, {slots} slots; {exhausted} stopped at the memory limit, {answered} otherwise)",
        base / 1024,
        peak / 1024
    );
    // Measured (issue 10): at 40,000 people none of these reaches 16 MiB (0 of 32
    // stopped at the limit; the all-dimension cuts are refused by the cut rule), so the
    // bound holds with room: the closed grammar leaves nothing large to compute.
    assert_eq!(exhausted + answered, 8 * slots);
    assert!(
        grew <= RSS_BOUND_MIB,
        "RSS grew by {grew} MiB with {slots} queries of {limit} each (bound {RSS_BOUND_MIB} MiB)"
    );
    // The server still answers.
    query(&mut c, "SELECT count(*) AS n FROM people")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentications_are_counted_and_audited_without_the_token() {
    let server = Server::start("unauthenticated", &[]);
    let sql = "SELECT count(*) AS n FROM people";
    let wrong = "not-the-token-4c1e";
    let mut basic = server.client(None).await;
    basic.set_header("authorization", "Basic dGVhbS1hOnNlY3JldA==");
    let mut clients = vec![
        server.client(None).await,
        basic,
        server.client(Some(wrong)).await,
        server.client(Some(wrong)).await,
    ];
    for c in clients.iter_mut() {
        assert_eq!(code(query(c, sql).await).0, Code::Unauthenticated);
    }
    let records = server.wait_audited("unauthenticated", 4).await;
    assert_eq!(records.len(), 4, "{records:?}");
    let details: Vec<&str> = records
        .iter()
        .map(|r| r.detail.as_deref().unwrap())
        .collect();
    let prefix = &sha256_hex(wrong)[..8];
    let starts = [
        "no token, from 127.0.0.1:".to_string(),
        "not a bearer token, from 127.0.0.1:".to_string(),
        format!("unknown token (sha256 {prefix}...), from 127.0.0.1:"),
        format!("unknown token (sha256 {prefix}...), from 127.0.0.1:"),
    ];
    for (i, (d, start)) in details.iter().zip(&starts).enumerate() {
        assert!(d.starts_with(start.as_str()), "{d}");
        let count = format!("; failed authentication {} since the server started", i + 1);
        assert!(d.ends_with(&count), "{d}");
    }
    assert!(
        records
            .iter()
            .all(|r| r.actor == "unauthenticated" && r.query.is_none())
    );

    // A flood of bad calls: the server keeps answering, every failure is counted, and
    // those the queue could not take are counted in a later record.
    let flood = 3000;
    let addr = server.addr.clone();
    let flooding = tokio::spawn(async move {
        // Over six connections: HTTP/2 closes a connection after 1,024 streams it had
        // to reset (h2's guard against reset floods), and a refused call's stream can
        // be reset before its request is read; on one connection, that dropped some
        // calls ("transport error") before they reached the check (regression:
        // flaky under load with 3,000 calls on one connection).
        let mut channels = Vec::new();
        for _ in 0..6 {
            let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
            channels.push(endpoint.connect().await.unwrap());
        }
        let mut calls = Vec::new();
        for i in 0..flood {
            let mut c = FlightSqlServiceClient::new(channels[i % channels.len()].clone());
            c.set_token(wrong.to_string());
            calls.push(tokio::spawn(async move { code(c.get_catalogs().await) }));
        }
        for c in calls {
            let (code, message) = c.await.unwrap();
            assert_eq!(code, Code::Unauthenticated, "{message}");
        }
    });
    let mut good = server.client(Some(TOKEN)).await;
    let mut during = Vec::new();
    while !flooding.is_finished() {
        let t = Instant::now();
        query(&mut good, sql).await.unwrap();
        during.push(t.elapsed());
    }
    flooding.await.unwrap();
    // One more, once the queue has room again: it carries the count of any left out.
    let drained = server.wait_audited("unauthenticated", 4 + 1024).await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        code(query(&mut server.client(Some(wrong)).await, sql).await).0,
        Code::Unauthenticated
    );
    let total = 4 + flood + 1;
    let t = Instant::now();
    let (records, left_out) = loop {
        let records = server.audited("unauthenticated");
        let left_out: usize = records
            .iter()
            .filter_map(|r| {
                let d = r.detail.as_deref()?;
                let n = d.split("; ").find(|p| {
                    p.ends_with("were counted but not recorded one by one (too many at once)")
                })?;
                n.split(' ').next()?.parse::<usize>().ok()
            })
            .sum();
        if records.len() + left_out >= total || t.elapsed() > Duration::from_secs(30) {
            break (records, left_out);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "{flood} bad calls at once: {} recorded one by one, {left_out} counted in a later record ({drained} recorded soon after); {} good queries meanwhile, slowest {:.1} ms",
        records.len() - 5,
        during.len(),
        during.iter().map(|d| ms(*d)).fold(0.0, f64::max)
    );
    assert_eq!(records.len() + left_out, total);
    let last = records.last().unwrap().detail.as_deref().unwrap();
    assert!(
        last.contains(&format!("failed authentication {total} since")),
        "{last}"
    );
    assert!(
        !during.is_empty(),
        "a good query was answered during the flood"
    );

    // Never the token, nor its full hash, in the log or the audit.
    let text = std::fs::read_to_string(&server.audit).unwrap();
    assert!(!text.contains(wrong) && !text.contains(&sha256_hex(wrong)));
    let log = server.log_text();
    assert!(
        !log.contains(wrong) && !log.contains(&sha256_hex(wrong)) && log.contains("unknown token")
    );
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(&server.audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

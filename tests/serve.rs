//! `riskstrat serve` from outside: the binary on a free port, queried by an
//! independently written Flight SQL client (Python ADBC), by 16 concurrent Rust
//! clients whose every answer must equal the in-process one, and with wrong tokens,
//! refused queries, tight limits and TLS.
//!
//! The load test doubles as the benchmark: `RISKSTRAT_LOAD_SECS=60 cargo test
//! --release -p riskstrat --test serve load -- --nocapture` prints queries per second
//! and latency percentiles (`RISKSTRAT_LOAD_CLIENTS` sets the client count,
//! `RISKSTRAT_LOAD_PATIENTS` the synthetic population, 4,000 by default).

mod common;

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{FlightInfo, Ticket};
use common::*;
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
        let dir = scratch("serve_run");
        let o = synth(&dir, env_number("RISKSTRAT_LOAD_PATIENTS", 4000), 23);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run_job(&dir.join("job.toml"));
        assert!(o.status.success(), "{}", stderr(&o));
        let run = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
        let job = std::fs::read_to_string(dir.join("job.toml")).unwrap();
        let other = job.replace("name = \"complex-needs\"", "name = \"other-job\"");
        assert_ne!(job, other);
        std::fs::write(dir.join("other.toml"), other).unwrap();
        let o = run_job(&dir.join("other.toml"));
        assert!(o.status.success(), "{}", stderr(&o));
        let access = dir.join("access.toml");
        std::fs::write(
            &access,
            format!(
                "[[token]]\nsha256 = \"{}\"\nname = \"team-a\"\nrole = \"commissioner\"\njobs = [\"complex-needs\"]\n\n\
                 [[token]]\nsha256 = \"{}\"\nname = \"team-b\"\nrole = \"commissioner\"\njobs = [\"other-job\"]\n",
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
    })
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
        let f = fixture();
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
    let c = Commissioner::open(&[fixture().run.clone()], Policy::default(), &cell_key().1)
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
    let log = std::fs::read_to_string(&server.log).unwrap();
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

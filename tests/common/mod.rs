//! Hand-written rows for tests: a small builder over the contract's tables that
//! writes Parquet files and a job file, so tests never depend on `synth`.
#![allow(dead_code)]

pub mod moto;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::parquet::arrow::ArrowWriter;
use riskstrat::ingest::contract;
use riskstrat::sql::date32;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

pub fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A stable, well-formed pseudo_id for a test person's name.
pub fn pid(name: &str) -> String {
    hex::encode(&Sha256::digest(name.as_bytes())[..16])
}

#[derive(Clone)]
pub struct Patient {
    pub id: Option<String>,
    pub yob: i32,
    pub sex: &'static str,
    pub practice: &'static str,
    pub lsoa: Option<&'static str>,
    pub imd: Option<i32>,
    pub start: NaiveDate,
    pub end: Option<NaiveDate>,
    pub death: Option<NaiveDate>,
}

impl Patient {
    pub fn new(name: &str) -> Self {
        Patient {
            id: Some(pid(name)),
            yob: 1960,
            sex: "F",
            practice: "A81001",
            lsoa: Some("E01012345"),
            imd: Some(3),
            start: d("2000-01-01"),
            end: None,
            death: None,
        }
    }
}

#[derive(Clone)]
pub struct Appt {
    pub id: Option<String>,
    pub date: NaiveDate,
    pub hcp: &'static str,
    pub mode: &'static str,
    pub status: &'static str,
}

#[derive(Clone)]
pub struct Rx {
    pub id: Option<String>,
    pub date: NaiveDate,
    pub bnf: &'static str,
    pub items: i32,
    pub nic: f64,
}

#[derive(Clone)]
pub struct Spell {
    pub id: String,
    pub spell: String,
    pub date: NaiveDate,
    pub discharge: Option<NaiveDate>,
    pub method: &'static str,
    pub primary: Option<&'static str>,
    /// None: a NULL list (the contract allows it).
    pub secondary: Option<Vec<&'static str>>,
    pub cost: f64,
}

#[derive(Default, Clone)]
pub struct Dataset {
    pub patients: Vec<Patient>,
    pub appointments: Vec<Appt>,
    pub prescriptions: Vec<Rx>,
    pub admissions: Vec<Spell>,
    pub optouts: Vec<(String, &'static str, NaiveDate)>,
    pub services: Vec<(String, &'static str, NaiveDate, Option<NaiveDate>)>,
}

fn write(path: &Path, t: &contract::Table, cols: Vec<ArrayRef>) {
    let batch = RecordBatch::try_new(t.schema(), cols).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), t.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

impl Dataset {
    /// Write every table as `<dir>/<table>.parquet` and a job file `<dir>/job.toml`.
    pub fn write(&self, dir: &Path, as_of: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let dt = |x: NaiveDate| date32(x);

        let mut c: Vec<ArrayRef> = Vec::new();
        let ps = &self.patients;
        c.push(Arc::new(
            ps.iter()
                .map(|p| p.id.clone())
                .collect::<datafusion::arrow::array::StringArray>(),
        ));
        c.push(Arc::new(
            ps.iter()
                .map(|p| Some(p.yob))
                .collect::<datafusion::arrow::array::Int32Array>(),
        ));
        c.push(Arc::new(
            ps.iter()
                .map(|p| Some(p.sex))
                .collect::<datafusion::arrow::array::StringArray>(),
        ));
        c.push(Arc::new(
            ps.iter()
                .map(|p| Some(p.practice))
                .collect::<datafusion::arrow::array::StringArray>(),
        ));
        c.push(Arc::new(
            ps.iter()
                .map(|p| p.lsoa)
                .collect::<datafusion::arrow::array::StringArray>(),
        ));
        c.push(Arc::new(
            ps.iter()
                .map(|p| p.imd)
                .collect::<datafusion::arrow::array::Int32Array>(),
        ));
        let mut b = Date32Builder::new();
        ps.iter().for_each(|p| b.append_value(dt(p.start)));
        c.push(Arc::new(b.finish()));
        let mut b = Date32Builder::new();
        ps.iter().for_each(|p| b.append_option(p.end.map(dt)));
        c.push(Arc::new(b.finish()));
        let mut b = Date32Builder::new();
        ps.iter().for_each(|p| b.append_option(p.death.map(dt)));
        c.push(Arc::new(b.finish()));
        write(&dir.join("patients.parquet"), &contract::PATIENTS, c);

        let (mut id, mut date, mut hcp, mut mode, mut status) = (
            StringBuilder::new(),
            Date32Builder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        for a in &self.appointments {
            id.append_option(a.id.as_deref());
            date.append_value(dt(a.date));
            hcp.append_value(a.hcp);
            mode.append_value(a.mode);
            status.append_value(a.status);
        }
        write(
            &dir.join("appointments.parquet"),
            &contract::APPOINTMENTS,
            vec![
                Arc::new(id.finish()),
                Arc::new(date.finish()),
                Arc::new(hcp.finish()),
                Arc::new(mode.finish()),
                Arc::new(status.finish()),
            ],
        );

        let (mut id, mut date, mut bnf, mut items, mut qty, mut nic) = (
            StringBuilder::new(),
            Date32Builder::new(),
            StringBuilder::new(),
            Int32Builder::new(),
            Float64Builder::new(),
            Float64Builder::new(),
        );
        for r in &self.prescriptions {
            id.append_option(r.id.as_deref());
            date.append_value(dt(r.date));
            bnf.append_value(r.bnf);
            items.append_value(r.items);
            qty.append_value(28.0);
            nic.append_value(r.nic);
        }
        write(
            &dir.join("prescriptions.parquet"),
            &contract::PRESCRIPTIONS,
            vec![
                Arc::new(id.finish()),
                Arc::new(date.finish()),
                Arc::new(bnf.finish()),
                Arc::new(items.finish()),
                Arc::new(qty.finish()),
                Arc::new(nic.finish()),
            ],
        );

        let (
            mut id,
            mut spell,
            mut prov,
            mut date,
            mut dis,
            mut method,
            mut prim,
            mut sec,
            mut cost,
        ) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            Date32Builder::new(),
            Date32Builder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            ListBuilder::new(StringBuilder::new()),
            Float64Builder::new(),
        );
        for s in &self.admissions {
            id.append_value(&s.id);
            spell.append_value(&s.spell);
            prov.append_value("RA7");
            date.append_value(dt(s.date));
            dis.append_option(s.discharge.map(dt));
            method.append_value(s.method);
            prim.append_option(s.primary);
            for x in s.secondary.iter().flatten() {
                sec.values().append_value(x);
            }
            sec.append(s.secondary.is_some());
            cost.append_value(s.cost);
        }
        write(
            &dir.join("admissions.parquet"),
            &contract::ADMISSIONS,
            vec![
                Arc::new(id.finish()),
                Arc::new(spell.finish()),
                Arc::new(prov.finish()),
                Arc::new(date.finish()),
                Arc::new(dis.finish()),
                Arc::new(method.finish()),
                Arc::new(prim.finish()),
                Arc::new(sec.finish()),
                Arc::new(cost.finish()),
            ],
        );

        let (mut id, mut ty, mut date) = (
            StringBuilder::new(),
            StringBuilder::new(),
            Date32Builder::new(),
        );
        for (i, t, dd) in &self.optouts {
            id.append_value(i);
            ty.append_value(t);
            date.append_value(dt(*dd));
        }
        write(
            &dir.join("optouts.parquet"),
            &contract::OPTOUTS,
            vec![
                Arc::new(id.finish()),
                Arc::new(ty.finish()),
                Arc::new(date.finish()),
            ],
        );

        let (mut id, mut code, mut s, mut e) = (
            StringBuilder::new(),
            StringBuilder::new(),
            Date32Builder::new(),
            Date32Builder::new(),
        );
        for (i, cd, st, en) in &self.services {
            id.append_value(i);
            code.append_value(cd);
            s.append_value(dt(*st));
            e.append_option(en.map(dt));
        }
        write(
            &dir.join("services.parquet"),
            &contract::SERVICES,
            vec![
                Arc::new(id.finish()),
                Arc::new(code.finish()),
                Arc::new(s.finish()),
                Arc::new(e.finish()),
            ],
        );

        std::fs::write(dir.join("model.json"), SAVED_MODEL).unwrap();
        let job = dir.join("job.toml");
        std::fs::write(&job, job_toml(as_of)).unwrap();
        job
    }
}

/// A hand-written model for hand-written data (too small to fit one): risk rises with
/// drugs, long-term conditions and emergency admissions, and falls with IMD decile.
pub const SAVED_MODEL: &str = r#"{
  "features": ["imd_decile", "distinct_drugs_12m", "ltc_groups_12m", "emergency_admissions_12m"],
  "coefficients": {"intercept": -5.0, "imd_decile": -0.5, "distinct_drugs_12m": 0.3,
                   "ltc_groups_12m": 0.8, "emergency_admissions_12m": 1.0}
}"#;

pub fn job_toml(as_of: &str) -> String {
    format!(
        r#"[job]
name = "test-job"
as_of = "{as_of}"
output = "runs"
[inputs]
patients = "patients.parquet"
appointments = "appointments.parquet"
prescriptions = "prescriptions.parquet"
admissions = "admissions.parquet"
optouts = "optouts.parquet"
services = "services.parquet"
[model]
load = "model.json"
[[model.tiers]]
name = "very_high"
up_to = 0.2
[[model.tiers]]
name = "high"
up_to = 0.35
[[model.tiers]]
name = "low"
up_to = 1.0
"#
    )
}

/// A fresh empty folder under the target dir, unique per test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Read a Parquet file into batches.
pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

/// Fails if any of `ids` (lower case) appears in any file under `run`, in any case:
/// text files are searched as text, Parquet files decoded (compression hides bytes)
/// and every string column searched.
pub fn assert_no_ids_in(run: &Path, ids: &std::collections::HashSet<String>) {
    use datafusion::arrow::array::StringArray;
    for file in walk(run) {
        if file.extension().is_some_and(|e| e == "parquet") {
            for b in read_parquet(&file) {
                for c in b.columns() {
                    if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                        for v in s.iter().flatten() {
                            let v = v.to_lowercase();
                            assert!(
                                !ids.iter().any(|id| v.contains(id.as_str())),
                                "{} holds an opted-out id",
                                file.display()
                            );
                        }
                    }
                }
            }
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).to_lowercase();
            assert!(
                !ids.iter().any(|id| text.contains(id.as_str())),
                "{} holds an opted-out id",
                file.display()
            );
        }
    }
}

/// A text column of a Parquet file, in file order (None for nulls).
pub fn texts(path: &Path, name: &str) -> Vec<Option<String>> {
    use datafusion::arrow::array::StringArray;
    read_parquet(path)
        .iter()
        .flat_map(|b| {
            let s = b.column_by_name(name).expect("column");
            let s = s
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("a Utf8 column");
            s.iter().map(|v| v.map(String::from)).collect::<Vec<_>>()
        })
        .collect()
}

/// The `pseudo_id` column of a Parquet file, in file order.
pub fn pseudo_ids(path: &Path) -> Vec<String> {
    use datafusion::arrow::array::StringArray;
    read_parquet(path)
        .iter()
        .flat_map(|b| {
            let s = b.column_by_name("pseudo_id").expect("pseudo_id column");
            let s = s
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("pseudo_id is Utf8");
            s.iter().flatten().map(String::from).collect::<Vec<_>>()
        })
        .collect()
}

// --- the binary ---

/// The `riskstrat` binary, quiet, with the tests' cell key secret for `query` and
/// `serve` in its environment.
pub fn riskstrat() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskstrat"));
    c.env("RISKSTRAT_LOG", "warn");
    c.env("RISKSTRAT_CELL_KEY", cell_key().0);
    c
}

/// `riskstrat synth` of `patients` people with `seed`, as of 2026-04-01, into `out`.
pub fn synth(out: &Path, patients: u64, seed: u64) -> Output {
    riskstrat()
        .args([
            "synth",
            "--patients",
            &patients.to_string(),
            "--seed",
            &seed.to_string(),
            "--as-of",
            "2026-04-01",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap()
}

pub fn run_job(job: &Path) -> Output {
    riskstrat().arg("run").arg(job).output().unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A cell key secret file for commissioner queries (owner-only, outside run folders),
/// made once per test process; the same bytes every time, so answers can be compared.
#[allow(dead_code)]
pub fn cell_key() -> (PathBuf, riskstrat::governance::pseudonym::Key) {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    // Fixed, so runs repeat; irregular, as a key file must be.
    let key = riskstrat::governance::pseudonym::Key::from_bytes(std::array::from_fn(|i| {
        (i as u8).wrapping_mul(37).wrapping_add(11)
    }));
    let path = PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cell_key_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cell.key");
        let _ = std::fs::remove_file(&path);
        key.write_file(&path).unwrap();
        path
    });
    (path.clone(), key)
}

/// Complete run folders of the job `test-job` (what `Dataset::write` names it), oldest first.
pub fn runs(dir: &Path) -> Vec<PathBuf> {
    list_runs(&dir.join("runs"), "test-job")
}

/// Complete run folders of a job under `output`, oldest first, through the run store
/// (an error reading them fails the test).
pub fn list_runs(output: &Path, job: &str) -> Vec<PathBuf> {
    let store = riskstrat::outputs::run_store::RunStore::local(output);
    futures::executor::block_on(store.list(job))
        .unwrap()
        .iter()
        .map(|r| r.location())
        .collect()
}

impl Dataset {
    /// A patient named `n` with one attended GP appointment and one prescription item
    /// on 1 June 2025.
    pub fn add_patient_with_a_visit(&mut self, n: &str) {
        self.patients.push(Patient::new(n));
        self.appointments.push(Appt {
            id: Some(pid(n)),
            date: d("2025-06-01"),
            hcp: "GP",
            mode: "Face-to-Face",
            status: "Attended",
        });
        self.prescriptions.push(Rx {
            id: Some(pid(n)),
            date: d("2025-06-01"),
            bnf: "0601023A0AAABAB",
            items: 1,
            nic: 1.0,
        });
    }
}

/// Twenty people with one event of each kind; p0 has opted out.
pub fn small_dataset() -> Dataset {
    let mut ds = Dataset::default();
    for k in 0..20 {
        let n = format!("p{k}");
        ds.add_patient_with_a_visit(&n);
        ds.admissions.push(Spell {
            id: pid(&n),
            spell: format!("S{k}"),
            date: d("2025-06-01"),
            discharge: Some(d("2025-06-03")),
            method: "21",
            primary: Some("J189"),
            secondary: Some(vec![]),
            cost: 100.0,
        });
    }
    ds.optouts.push((pid("p0"), "type1", d("2020-01-01")));
    ds
}

/// The small dataset with each of its events once more a year earlier (2024-06-01),
/// in the training year of a model fitted at `A` = 2026-04-01 (a run that fits one is
/// refused without events there).
pub fn small_dataset_with_a_training_year() -> Dataset {
    let mut ds = small_dataset();
    let earlier = d("2024-06-01");
    let (appointments, prescriptions) = (ds.appointments.clone(), ds.prescriptions.clone());
    ds.appointments.extend(
        appointments
            .into_iter()
            .map(|a| Appt { date: earlier, ..a }),
    );
    ds.prescriptions
        .extend(prescriptions.into_iter().map(|r| Rx { date: earlier, ..r }));
    let spells = ds.admissions.clone();
    ds.admissions.extend(spells.into_iter().map(|s| Spell {
        spell: format!("{}-earlier", s.spell),
        date: earlier,
        discharge: Some(d("2024-06-03")),
        ..s
    }));
    ds
}

/// `reidentify` of the cohort `complex_needs` from `run` (a folder or a URL) for team
/// T01, asked by its first member in `dir/teams.toml`, with the vault and key that
/// [`pseudonymise`] wrote under `dir`, auditing to `audit` and writing to `out`; the
/// arguments are added to `c` (a `riskstrat()`, with whatever environment it needs).
pub fn release_t01(mut c: Command, dir: &Path, run: &str, audit: &Path, out: &Path) -> Command {
    let registry = std::fs::read_to_string(dir.join("teams.toml")).unwrap();
    let member = registry
        .lines()
        .find_map(|l| l.strip_prefix("members = [\""))
        .and_then(|l| l.split('"').next())
        .unwrap()
        .to_string();
    c.args(["reidentify", "--run", run, "--cohort", "complex_needs"])
        .args(["--team", "T01", "--requester", &member])
        .arg("--vault")
        .arg(dir.join("gate/vault.parquet"))
        .arg("--vault-key")
        .arg(dir.join("keys/vault.key"))
        .arg("--teams")
        .arg(dir.join("teams.toml"))
        .arg("--audit")
        .arg(audit)
        .arg("--out")
        .arg(out);
    c
}

/// `pseudonymise` over what `synth --identifiable` wrote to `dir`: its extracts and
/// keys, the vault under `gate/`, the pseudonymised tables under `pseudonymised/`.
pub fn pseudonymise(dir: &Path) -> Command {
    pseudonymise_to(dir, &dir.join("gate/vault.parquet"))
}

/// [`pseudonymise`] writing the vault to `vault`.
pub fn pseudonymise_to(dir: &Path, vault: &Path) -> Command {
    let mut c = riskstrat();
    c.arg("pseudonymise")
        .arg("--key")
        .arg(dir.join("keys/pseudonym.key"))
        .arg("--in")
        .arg(dir.join("identifiable"))
        .arg("--out")
        .arg(dir.join("pseudonymised"))
        .arg("--vault")
        .arg(vault)
        .arg("--vault-key")
        .arg(dir.join("keys/vault.key"));
    c
}

//! `riskstrat synth`: a synthetic population in exactly the contract's pseudonymised
//! tables, realistic enough for the pipeline and its model to be exercised honestly.
//!
//! Each person has a latent need that rises with age and deprivation and drifts a
//! little from year to year; it drives GP appointments, long-term conditions and
//! their repeat prescribing, emergency and elective admissions (with Charlson-coded
//! diagnoses), service enrolment, and death. A few per cent opt out; registrations
//! start and end; a small number of rows break each of the contract's row rules.
//!
//! Patients are generated in chunks, in parallel (rayon), each chunk from its own
//! ChaCha stream of the seed, and written in chunk order: the output is the same for
//! a seed whatever the number of threads, and memory is bounded by a few chunks.

pub mod codes;
pub mod identity;

use crate::error::{Error, Result};
use crate::governance::pseudonym::{Key, normalise_nhs_number, pseudo_id};
use crate::ingest::contract::{self, Table};
use crate::sql::date32;
use chrono::{Datelike, NaiveDate};
use codes::Codes;
use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int32Builder, ListBuilder, RecordBatch, StringBuilder,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, Normal, Poisson};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CHUNK: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub patients: u64,
    pub seed: u64,
    pub as_of: NaiveDate,
    pub out: PathBuf,
    /// Write identifiable extracts, keys and a care-team registry instead (see
    /// [`identity`]).
    pub identifiable: bool,
    /// The services' true effects (`truth/service_effects.json` records them).
    pub service_effects: ServiceEffects,
}

#[derive(Debug, Clone, Default)]
pub struct SynthSummary {
    pub patients: u64,
    pub appointments: u64,
    pub prescriptions: u64,
    pub admissions: u64,
    pub optouts: u64,
    pub services: u64,
    pub job_file: PathBuf,
}

/// The pseudonymisation key of a synthetic population: derived from the seed, so
/// that `synth` is reproducible. Real keys are random and held by the gate.
pub fn synthetic_key(seed: u64) -> Key {
    let mut h = Sha256::new();
    h.update(b"riskstrat synthetic pseudonymisation key v1");
    h.update(seed.to_le_bytes());
    Key::from_bytes(h.finalize().into())
}

/// A valid (modulus 11) synthetic NHS number, unique per index below 80 million.
pub fn synthetic_nhs_number(i: u64) -> String {
    let base = 100_000_000 + i * 10;
    for body in base..base + 10 {
        for check in 0..10 {
            let n = format!("{body:09}{check}");
            if normalise_nhs_number(&n).is_ok() {
                return n;
            }
        }
    }
    unreachable!("one of ten consecutive bodies has a valid check digit")
}

struct Practice {
    code: String,
    lsoas: Vec<(String, i32)>,
}

struct World {
    as_of: i32,
    as_of_year: i32,
    key: Key,
    practices: Vec<Practice>,
    codes: Codes,
}

impl World {
    fn new(opts: &SynthOptions) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
        rng.set_stream(u64::MAX);
        let n_practices = (opts.patients / 8_000).max(1) as usize;
        let mut practices = Vec::with_capacity(n_practices);
        let mut lsoa_no = rng.random_range(10_000..20_000u32);
        for p in 0..n_practices {
            let letter = (b'A' + (p / 900 % 26) as u8) as char;
            let code = format!("{letter}{:02}{:03}", 81 + (p / 900) % 19, 1 + p % 900);
            let base_imd: f64 = rng.random_range(1.0..10.0);
            let lsoas = (0..5)
                .map(|_| {
                    lsoa_no += rng.random_range(1..40);
                    let imd = (base_imd + rng.random_range(-2.5..2.5))
                        .round()
                        .clamp(1.0, 10.0) as i32;
                    (format!("E01{lsoa_no:06}"), imd)
                })
                .collect();
            practices.push(Practice { code, lsoas });
        }
        Self {
            as_of: date32(opts.as_of),
            as_of_year: opts.as_of.year(),
            key: synthetic_key(opts.seed),
            practices,
            codes: Codes::load(),
        }
    }
}

/// England-like age structure: (lowest age, highest age, share).
const AGE_BANDS: &[(u32, u32, f64)] = &[
    (0, 4, 5.4),
    (5, 9, 5.9),
    (10, 14, 6.0),
    (15, 19, 5.6),
    (20, 24, 5.9),
    (25, 29, 6.7),
    (30, 34, 7.0),
    (35, 39, 6.7),
    (40, 44, 6.3),
    (45, 49, 6.4),
    (50, 54, 6.9),
    (55, 59, 6.7),
    (60, 64, 5.9),
    (65, 69, 5.0),
    (70, 74, 5.1),
    (75, 79, 3.7),
    (80, 84, 2.6),
    (85, 89, 1.6),
    (90, 100, 0.9),
];

/// History generated before `A`: three years of spells (Charlson at T0 looks back
/// 730 days from A-365), two of appointments and prescribing.
const SPELL_HISTORY: i32 = 3 * 365;
const EVENT_HISTORY: i32 = 2 * 365;

pub fn generate(opts: &SynthOptions) -> Result<SynthSummary> {
    if opts.patients == 0 {
        return Err(Error::bad_input("--patients must be at least 1"));
    }
    if opts.patients > 50_000_000 {
        return Err(Error::bad_input("--patients must be at most 50,000,000"));
    }
    let base = if opts.identifiable {
        opts.out.join(IDENTIFIABLE_DIR)
    } else {
        opts.out.clone()
    };
    let out = &base;
    for dir in ["appointments", "prescriptions", "admissions"] {
        let d = out.join(dir);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d).map_err(|e| {
            Error::bad_input(format!("--out {}: cannot create it ({e})", out.display()))
        })?;
    }
    let world = World::new(opts);
    let schema = |t: &Table| {
        if opts.identifiable {
            t.identifiable_schema()
        } else {
            t.schema()
        }
    };
    let n_chunks = opts.patients.div_ceil(CHUNK);
    let mut patients_w = writer(&out.join("patients.parquet"), schema(&contract::PATIENTS))?;
    let mut optouts_w = writer(&out.join("optouts.parquet"), schema(&contract::OPTOUTS))?;
    let mut services_w = writer(&out.join("services.parquet"), schema(&contract::SERVICES))?;
    let mut summary = SynthSummary::default();
    let mut truth = Truth::default();
    let bar = crate::progress::bar(opts.patients, "synth");
    let window = (rayon::current_num_threads() * 2) as u64;
    let mut start = 0;
    while start < n_chunks {
        let end = (start + window).min(n_chunks);
        let results: Vec<Result<ChunkOut>> = (start..end)
            .into_par_iter()
            .map(|c| {
                let first = c * CHUNK;
                let n = CHUNK.min(opts.patients - first);
                let mut chunk =
                    generate_chunk(&world, &opts.service_effects, opts.seed, c, first, n)?;
                if opts.identifiable {
                    chunk = identity::identify(chunk, &world.key, first, n)?;
                }
                for (table, batch) in [
                    ("appointments", &chunk.appointments),
                    ("prescriptions", &chunk.prescriptions),
                    ("admissions", &chunk.admissions),
                ] {
                    let t = contract::table(table).unwrap();
                    let path = out.join(table).join(format!("part-{c:05}.parquet"));
                    let mut w = writer(&path, schema(t))?;
                    w.write(batch)?;
                    w.close()?;
                }
                Ok(chunk)
            })
            .collect();
        for r in results {
            let chunk = r?;
            patients_w.write(&chunk.patients)?;
            optouts_w.write(&chunk.optouts)?;
            services_w.write(&chunk.services)?;
            summary.patients += chunk.patients.num_rows() as u64;
            summary.appointments += chunk.appointments.num_rows() as u64;
            summary.prescriptions += chunk.prescriptions.num_rows() as u64;
            summary.admissions += chunk.admissions.num_rows() as u64;
            summary.optouts += chunk.optouts.num_rows() as u64;
            summary.services += chunk.services.num_rows() as u64;
            truth.merge(&chunk.truth);
            if let Some(b) = &bar {
                b.inc(chunk.people);
            }
        }
        start = end;
    }
    patients_w.close()?;
    optouts_w.close()?;
    services_w.close()?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if opts.identifiable {
        write_gate_files(opts, &world)?;
    }
    let truth_path = opts.out.join(TRUTH_FILE);
    std::fs::create_dir_all(truth_path.parent().expect("a folder"))?;
    std::fs::write(
        &truth_path,
        serde_json::to_vec_pretty(&truth.to_json(opts))?,
    )?;
    let job_file = opts.out.join("job.toml");
    let data = if opts.identifiable {
        format!("{PSEUDONYMISED_DIR}/")
    } else {
        String::new()
    };
    std::fs::write(&job_file, sample_job(opts.as_of, &data))?;
    summary.job_file = job_file;
    Ok(summary)
}

/// Folders of `synth --identifiable`'s output: the extracts, the keys, and where the
/// job it writes expects `pseudonymise` to put the pseudonymised tables.
pub const IDENTIFIABLE_DIR: &str = "identifiable";
pub const KEYS_DIR: &str = "keys";
pub const PSEUDONYMISED_DIR: &str = "pseudonymised";

/// The keys (owner-only, outside every data folder) and the care-team registry.
fn write_gate_files(opts: &SynthOptions, world: &World) -> Result<()> {
    let keys = opts.out.join(KEYS_DIR);
    std::fs::create_dir_all(&keys)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700))?;
    }
    for (name, key) in [
        ("pseudonym.key", synthetic_key(opts.seed)),
        ("vault.key", identity::synthetic_vault_key(opts.seed)),
        ("cell.key", identity::synthetic_cell_key(opts.seed)),
    ] {
        let path = keys.join(name);
        if path.exists() {
            std::fs::remove_file(&path)?;
        }
        key.write_file(&path)?;
    }
    let codes: Vec<String> = world.practices.iter().map(|p| p.code.clone()).collect();
    std::fs::write(opts.out.join("teams.toml"), identity::teams_toml(&codes))?;
    Ok(())
}

pub use crate::ingest::contract::table_path;

/// A job file over tables laid out by [`table_path`] under `data` (relative to the
/// job file).
pub fn sample_job(as_of: NaiveDate, data: &str) -> String {
    sample_job_with(as_of, data, None)
}

/// [`sample_job`], also reading care teams' pseudonymised feedback from `feedback`.
pub fn sample_job_with(as_of: NaiveDate, data: &str, feedback: Option<&str>) -> String {
    let mut inputs: String = contract::EXTRACT_TABLES
        .iter()
        .map(|t| format!("{} = \"{data}{}\"\n", t.name, table_path(t.name)))
        .collect();
    if let Some(f) = feedback {
        inputs.push_str(&format!("feedback = \"{f}\"\n"));
    }
    format!(
        r#"# A riskstrat job over synthetic data. Paths are relative to this file.
[job]
name = "complex-needs"
as_of = "{as_of}"
output = "runs"

[inputs]
{inputs}
[cohorts]
include = ["complex_needs"]
"#
    )
}

fn writer(
    path: &Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
) -> Result<ArrowWriter<File>> {
    let file = File::create(path)
        .map_err(|e| Error::bad_input(format!("cannot write {}: {e}", path.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(props))?)
}

struct ChunkOut {
    people: u64,
    truth: Truth,
    patients: RecordBatch,
    appointments: RecordBatch,
    prescriptions: RecordBatch,
    admissions: RecordBatch,
    optouts: RecordBatch,
    services: RecordBatch,
}

#[derive(Default)]
struct Builders {
    pat_id: StringBuilder,
    pat_yob: Int32Builder,
    pat_sex: StringBuilder,
    pat_practice: StringBuilder,
    pat_lsoa: StringBuilder,
    pat_imd: Int32Builder,
    pat_start: Date32Builder,
    pat_end: Date32Builder,
    pat_death: Date32Builder,
    ap_id: StringBuilder,
    ap_date: Date32Builder,
    ap_hcp: StringBuilder,
    ap_mode: StringBuilder,
    ap_status: StringBuilder,
    rx_id: StringBuilder,
    rx_date: Date32Builder,
    rx_bnf: StringBuilder,
    rx_items: Int32Builder,
    rx_qty: Float64Builder,
    rx_nic: Float64Builder,
    ad_id: StringBuilder,
    ad_spell: StringBuilder,
    ad_provider: StringBuilder,
    ad_date: Date32Builder,
    ad_discharge: Date32Builder,
    ad_method: StringBuilder,
    ad_primary: StringBuilder,
    ad_secondary: ListBuilder<StringBuilder>,
    ad_cost: Float64Builder,
    oo_id: StringBuilder,
    oo_type: StringBuilder,
    oo_date: Date32Builder,
    sv_id: StringBuilder,
    sv_code: StringBuilder,
    sv_start: Date32Builder,
    sv_end: Date32Builder,
}

#[derive(Clone)]
struct Patient {
    id: String,
    yob: i32,
    sex: &'static str,
    practice: String,
    lsoa: Option<String>,
    imd: Option<i32>,
    start: i32,
    end: Option<i32>,
    death: Option<i32>,
}

impl Builders {
    fn patient(&mut self, p: &Patient) {
        self.pat_id.append_value(&p.id);
        self.pat_yob.append_value(p.yob);
        self.pat_sex.append_value(p.sex);
        self.pat_practice.append_value(&p.practice);
        self.pat_lsoa.append_option(p.lsoa.as_deref());
        self.pat_imd.append_option(p.imd);
        self.pat_start.append_value(p.start);
        self.pat_end.append_option(p.end);
        self.pat_death.append_option(p.death);
    }
    fn appointment(&mut self, id: Option<&str>, date: i32, hcp: &str, mode: &str, status: &str) {
        self.ap_id.append_option(id);
        self.ap_date.append_value(date);
        self.ap_hcp.append_value(hcp);
        self.ap_mode.append_value(mode);
        self.ap_status.append_value(status);
    }
    fn prescription(
        &mut self,
        id: Option<&str>,
        date: i32,
        bnf: &str,
        items: i32,
        qty: f64,
        nic: f64,
    ) {
        self.rx_id.append_option(id);
        self.rx_date.append_value(date);
        self.rx_bnf.append_value(bnf);
        self.rx_items.append_value(items);
        self.rx_qty.append_value(qty);
        self.rx_nic.append_value((nic * 100.0).round() / 100.0);
    }
    #[allow(clippy::too_many_arguments)]
    fn admission(
        &mut self,
        id: &str,
        spell: &str,
        provider: &str,
        date: i32,
        discharge: Option<i32>,
        method: &str,
        primary: &str,
        secondary: &[String],
        cost: f64,
    ) {
        self.ad_id.append_value(id);
        self.ad_spell.append_value(spell);
        self.ad_provider.append_value(provider);
        self.ad_date.append_value(date);
        self.ad_discharge.append_option(discharge);
        self.ad_method.append_value(method);
        self.ad_primary.append_value(primary);
        for s in secondary {
            self.ad_secondary.values().append_value(s);
        }
        self.ad_secondary.append(true);
        self.ad_cost.append_value((cost * 100.0).round() / 100.0);
    }

    fn finish(mut self, people: u64) -> Result<ChunkOut> {
        let batch = |t: &Table, cols: Vec<ArrayRef>| RecordBatch::try_new(t.schema(), cols);
        Ok(ChunkOut {
            people,
            truth: Truth::default(),
            patients: batch(
                &contract::PATIENTS,
                vec![
                    Arc::new(self.pat_id.finish()),
                    Arc::new(self.pat_yob.finish()),
                    Arc::new(self.pat_sex.finish()),
                    Arc::new(self.pat_practice.finish()),
                    Arc::new(self.pat_lsoa.finish()),
                    Arc::new(self.pat_imd.finish()),
                    Arc::new(self.pat_start.finish()),
                    Arc::new(self.pat_end.finish()),
                    Arc::new(self.pat_death.finish()),
                ],
            )?,
            appointments: batch(
                &contract::APPOINTMENTS,
                vec![
                    Arc::new(self.ap_id.finish()),
                    Arc::new(self.ap_date.finish()),
                    Arc::new(self.ap_hcp.finish()),
                    Arc::new(self.ap_mode.finish()),
                    Arc::new(self.ap_status.finish()),
                ],
            )?,
            prescriptions: batch(
                &contract::PRESCRIPTIONS,
                vec![
                    Arc::new(self.rx_id.finish()),
                    Arc::new(self.rx_date.finish()),
                    Arc::new(self.rx_bnf.finish()),
                    Arc::new(self.rx_items.finish()),
                    Arc::new(self.rx_qty.finish()),
                    Arc::new(self.rx_nic.finish()),
                ],
            )?,
            admissions: batch(
                &contract::ADMISSIONS,
                vec![
                    Arc::new(self.ad_id.finish()),
                    Arc::new(self.ad_spell.finish()),
                    Arc::new(self.ad_provider.finish()),
                    Arc::new(self.ad_date.finish()),
                    Arc::new(self.ad_discharge.finish()),
                    Arc::new(self.ad_method.finish()),
                    Arc::new(self.ad_primary.finish()),
                    Arc::new(self.ad_secondary.finish()),
                    Arc::new(self.ad_cost.finish()),
                ],
            )?,
            optouts: batch(
                &contract::OPTOUTS,
                vec![
                    Arc::new(self.oo_id.finish()),
                    Arc::new(self.oo_type.finish()),
                    Arc::new(self.oo_date.finish()),
                ],
            )?,
            services: batch(
                &contract::SERVICES,
                vec![
                    Arc::new(self.sv_id.finish()),
                    Arc::new(self.sv_code.finish()),
                    Arc::new(self.sv_start.finish()),
                    Arc::new(self.sv_end.finish()),
                ],
            )?,
        })
    }
}

/// The services `synth` writes, each with its referral rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// Virtual ward: step-down care referred at discharge from an emergency admission.
    Vw01,
    /// Community matron: case management of people with repeated emergency admissions.
    Cm01,
}

impl Service {
    pub const ALL: [Service; 2] = [Service::Vw01, Service::Cm01];

    pub fn code(self) -> &'static str {
        match self {
            Service::Vw01 => "VW01",
            Service::Cm01 => "CM01",
        }
    }
}

/// The true effect of each service: the rate ratio of emergency admissions while
/// enrolled (`synth --service-effect VW01=0.8,CM01=1.0`; 1 = no effect).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceEffects {
    rate_ratios: [f64; 2],
}

impl Default for ServiceEffects {
    fn default() -> Self {
        Self {
            rate_ratios: [1.0; 2],
        }
    }
}

impl ServiceEffects {
    pub fn rate_ratio(&self, s: Service) -> f64 {
        self.rate_ratios[s as usize]
    }

    /// `VW01=0.8,CM01=1.0`: services not named keep no effect.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (code, value) = part.split_once('=').ok_or_else(|| {
                Error::bad_input(format!(
                    "--service-effect: '{part}' is not SERVICE=RATE_RATIO (e.g. VW01=0.8)"
                ))
            })?;
            let service = Service::ALL
                .into_iter()
                .find(|s| s.code() == code.trim())
                .ok_or_else(|| {
                    Error::bad_input(format!(
                        "--service-effect: unknown service '{}'; synth writes VW01 and CM01",
                        code.trim()
                    ))
                })?;
            let rr: f64 = value.trim().parse().ok().filter(|v: &f64| v.is_finite() && *v > 0.0).ok_or_else(|| {
                Error::bad_input(format!(
                    "--service-effect: {code}'s rate ratio '{value}' must be a number above 0 (1 = no effect)"
                ))
            })?;
            out.rate_ratios[service as usize] = rr;
        }
        Ok(out)
    }
}

/// A hospital spell before it is written.
#[derive(Clone)]
struct SynthSpell {
    date: i32,
    los: i32,
    discharge: Option<i32>,
    is_emergency: bool,
    method: &'static str,
    primary: String,
    secondary: Vec<String>,
    provider: &'static str,
    spell_id: String,
    cost: f64,
}

/// What a person's spells are drawn from.
struct SpellContext<'a> {
    world: &'a World,
    a: i32,
    age: i32,
    need: f64,
    frail: f64,
    charlson: &'a [&'static str],
    person: u64,
    spell_no: std::cell::Cell<u32>,
}

impl SpellContext<'_> {
    /// Emergency admissions a year, in year `y` before A (0 = the last).
    fn emergency_rate(&self, need_y: f64) -> f64 {
        (-2.9 + 1.3 * need_y).exp() * self.frail
    }

    /// Year `y`'s spells within `(from, to)`, the person's active days.
    fn year(
        &self,
        rng: &mut ChaCha8Rng,
        y: i32,
        need_y: f64,
        (from, to): (i32, i32),
        out: &mut Vec<SynthSpell>,
    ) {
        let a = self.a;
        let (ys, ye) = ((a - 365 * (y + 1)).max(from), (a - 365 * y).min(to));
        if ye <= ys {
            return;
        }
        let span = (ye - ys) as f64 / 365.0;
        let emergency = poisson(rng, self.emergency_rate(need_y) * span);
        let elective = poisson(
            rng,
            (-2.6 + 0.4 * need_y + 0.01 * self.age as f64).exp() * span,
        );
        for k in 0..emergency + elective {
            let date = rng.random_range(ys..ye);
            out.push(self.spell(rng, y, date, k < emergency));
        }
    }

    fn spell(&self, rng: &mut ChaCha8Rng, y: i32, date: i32, is_emergency: bool) -> SynthSpell {
        let (a, need, charlson, world) = (self.a, self.need, self.charlson, self.world);
        let los = if is_emergency {
            (rng.random_range(0.0..1.0f64).ln() * -(2.0 + 2.5 * need.max(0.0))) as i32
        } else if rng.random_bool(0.6) {
            0
        } else {
            rng.random_range(1..6)
        };
        let discharge = date + los;
        let discharge = (discharge < a).then_some(discharge);
        let method = if is_emergency {
            *[
                "21", "21", "21", "21", "21", "21", "22", "23", "24", "28", "2A", "2B", "25", "2D",
                "2C",
            ]
            .choose(rng)
            .unwrap()
        } else {
            *["11", "12", "12", "13"].choose(rng).unwrap()
        };
        let primary = if is_emergency && !charlson.is_empty() && rng.random_bool(0.4) {
            world.codes.icd10_for(charlson.choose(rng).unwrap(), rng)
        } else if is_emergency {
            codes::ACUTE_ICD10.choose(rng).unwrap().to_string()
        } else {
            codes::ELECTIVE_ICD10.choose(rng).unwrap().to_string()
        };
        let mut secondary: Vec<String> = Vec::new();
        for c in charlson {
            if rng.random_bool(0.7) {
                secondary.push(world.codes.icd10_for(c, rng));
            }
        }
        if rng.random_bool(0.3) {
            secondary.push(codes::ACUTE_ICD10.choose(rng).unwrap().to_string());
        }
        let i = self.person;
        let provider = codes::PROVIDERS[(i as usize + y as usize) % codes::PROVIDERS.len()];
        let spell_no = self.spell_no.get();
        self.spell_no.set(spell_no + 1);
        let spell_id = format!("{provider}{i:09}{spell_no:03}");
        let cost = if is_emergency {
            900.0 + 420.0 * los as f64
        } else {
            1200.0 + 300.0 * los as f64
        } * rng.random_range(0.8..1.25);
        SynthSpell {
            date,
            los,
            discharge,
            is_emergency,
            method,
            primary,
            secondary,
            provider,
            spell_id,
            cost,
        }
    }
}

struct Enrolment {
    service: Service,
    start: i32,
    /// Last day enrolled; `None` while enrolled.
    end: Option<i32>,
}

/// Referral as services make it: at each emergency discharge, a virtual ward takes
/// some (more of the old and of people with long-term conditions); a community matron
/// takes some of those with repeated admissions in the year. Referral depends only on
/// what the data show (age, conditions treated, admissions), the assumption under
/// which a matched evaluation can recover the effect. A person is enrolled at most once,
/// in the first service that takes them, starting in the two years before A while
/// registered and alive (`active_end` is their first inactive day).
fn refer(
    rng: &mut ChaCha8Rng,
    spells: &[SynthSpell],
    a: i32,
    age: i32,
    ltc_groups: usize,
    active_end: i32,
) -> Option<Enrolment> {
    let conditions = 1.0 + 0.25 * ltc_groups.min(4) as f64;
    let old = if age >= 65 { 2.0 } else { 1.0 };
    let emergency: Vec<&SynthSpell> = spells.iter().filter(|s| s.is_emergency).collect();
    for (k, s) in emergency.iter().enumerate() {
        let Some(discharged) = s.discharge else {
            continue;
        };
        let in_year = emergency[..=k]
            .iter()
            .filter(|x| x.date > s.date - 365)
            .count();
        let vw = rng.random_bool((0.05 * old * conditions).min(0.5));
        let cm =
            in_year >= 2 && rng.random_bool((0.06 * (in_year - 1) as f64 * conditions).min(0.5));
        let (service, start, end) = if vw {
            let start = discharged + rng.random_range(0..=2);
            (Service::Vw01, start, Some(start + rng.random_range(7..43)))
        } else if cm {
            let start = discharged + rng.random_range(7..=42);
            let end = rng
                .random_bool(0.3)
                .then(|| (start + rng.random_range(30..300)).min(a - 1));
            (Service::Cm01, start, end)
        } else {
            continue;
        };
        if start >= a - EVENT_HISTORY && start < a.min(active_end) {
            return Some(Enrolment {
                service,
                start,
                end,
            });
        }
    }
    None
}

/// The service's effect on emergency admissions in `[from, until)`: with a rate ratio
/// below 1 each is avoided with probability 1 - ratio; above 1, extra ones arrive at
/// (ratio - 1) times the person's rate.
fn apply_effect(
    rng: &mut ChaCha8Rng,
    spells: &mut Vec<SynthSpell>,
    ctx: &SpellContext,
    rate_ratio: f64,
    from: i32,
    until: i32,
    need_of: &dyn Fn(i32) -> f64,
) {
    if rate_ratio < 1.0 {
        spells.retain(|s| {
            !(s.is_emergency && s.date >= from && s.date < until) || rng.random_bool(rate_ratio)
        });
    } else if rate_ratio > 1.0 && until > from {
        // Piecewise by the year blocks the person's rate is drawn in.
        let mut d = from;
        while d < until {
            let block_end = ctx.a - 365 * ((ctx.a - 1 - d) / 365);
            let e = block_end.min(until);
            let extra = poisson(
                rng,
                (rate_ratio - 1.0) * ctx.emergency_rate(need_of(d)) * (e - d) as f64 / 365.0,
            );
            for _ in 0..extra {
                let date = rng.random_range(d..e);
                let y = (ctx.a - 1 - date) / 365;
                spells.push(ctx.spell(rng, y, date, true));
            }
            d = e;
        }
        spells.sort_by_key(|s| s.date);
    }
}

/// One enrolled person's follow-up year, under both potential outcomes.
#[derive(Debug, Clone, Copy, Default)]
struct TruthSums {
    days: f64,
    admissions: [f64; 2],
    bed_days: [f64; 2],
}

impl TruthSums {
    /// Emergency admissions and their bed days admitted in `[from, to)`, without the
    /// service (`untreated`) and with it (`treated`); bed days as the run counts them
    /// (a spell open at A runs to A).
    fn of(untreated: &[SynthSpell], treated: &[SynthSpell], from: i32, to: i32, a: i32) -> Self {
        let mut t = TruthSums {
            days: (to - from).max(0) as f64,
            ..Default::default()
        };
        for (k, spells) in [untreated, treated].into_iter().enumerate() {
            for s in spells
                .iter()
                .filter(|s| s.is_emergency && s.date >= from && s.date < to)
            {
                t.admissions[k] += 1.0;
                t.bed_days[k] += ((s.date + s.los).min(a) - s.date) as f64;
            }
        }
        t
    }
}

/// The truth about each service over everyone enrolled (summed over chunks).
#[derive(Debug, Clone, Default)]
struct Truth {
    enrolled: [u64; 2],
    sums: [TruthSums; 2],
}

impl Truth {
    fn add(&mut self, s: Service, x: &TruthSums) {
        let k = s as usize;
        self.enrolled[k] += 1;
        self.sums[k].days += x.days;
        for j in 0..2 {
            self.sums[k].admissions[j] += x.admissions[j];
            self.sums[k].bed_days[j] += x.bed_days[j];
        }
    }

    fn merge(&mut self, o: &Truth) {
        for k in 0..2 {
            self.enrolled[k] += o.enrolled[k];
            self.sums[k].days += o.sums[k].days;
            for j in 0..2 {
                self.sums[k].admissions[j] += o.sums[k].admissions[j];
                self.sums[k].bed_days[j] += o.sums[k].bed_days[j];
            }
        }
    }

    fn to_json(&self, opts: &SynthOptions) -> serde_json::Value {
        let per_1000py = |x: f64, days: f64| (days > 0.0).then(|| x / (days / 365.25) * 1000.0);
        let mut services = serde_json::Map::new();
        for s in Service::ALL {
            let t = &self.sums[s as usize];
            let outcome = |v: [f64; 2]| {
                serde_json::json!({
                    "untreated_rate": per_1000py(v[0], t.days),
                    "treated_rate": per_1000py(v[1], t.days),
                    "effect": per_1000py(v[1] - v[0], t.days),
                })
            };
            services.insert(
                s.code().to_string(),
                serde_json::json!({
                    "rate_ratio": opts.service_effects.rate_ratio(s),
                    "enrolled": self.enrolled[s as usize],
                    "person_years": t.days / 365.25,
                    "emergency_admissions": outcome(t.admissions),
                    "bed_days": outcome(t.bed_days),
                }),
            );
        }
        serde_json::json!({
            "about": "Written by riskstrat synth beside the data and never read by run: the true average effect of each service on the people enrolled (their first enrolment, starting in the two years before as_of), per 1,000 person-years of follow-up ([start + 1 day, start + 366 days): from the day after the start, when the service begins to act and the run's follow-up begins; ending at deregistration, death or as_of), from both simulated potential outcomes of each person: effect = treated_rate - untreated_rate. Objectors and duplicated patients, whom a run cannot evaluate, are left out.",
            "seed": opts.seed,
            "patients": opts.patients,
            "as_of": opts.as_of.to_string(),
            "services": services,
        })
    }
}

/// Where `synth` writes the truth about its services, under `--out`.
pub const TRUTH_FILE: &str = "truth/service_effects.json";

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean)
        .map(|d| d.sample(rng) as u64)
        .unwrap_or(0)
}

fn random_hex_id(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    hex::encode(bytes)
}

/// Cost of a chemical substance's item, stable per code.
fn unit_cost(bnf: &str) -> f64 {
    let h = bnf.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    });
    1.5 + (h % 4000) as f64 / 100.0
}

fn generate_chunk(
    world: &World,
    effects: &ServiceEffects,
    seed: u64,
    chunk: u64,
    first: u64,
    n: u64,
) -> Result<ChunkOut> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(chunk);
    let mut b = Builders::default();
    let a = world.as_of;
    let std_normal = Normal::new(0.0, 1.0).unwrap();
    let frailty = Gamma::new(2.0, 0.5).unwrap();
    let total_share: f64 = AGE_BANDS.iter().map(|x| x.2).sum();
    let mut kept_patients: Vec<Patient> = Vec::new();
    // Services (enrolment, effects, the fourth year of spells) draw from their own
    // stream, so that changing them leaves everyone else's data as it was.
    let mut svc = ChaCha8Rng::seed_from_u64(seed);
    svc.set_stream(chunk | 1 << 40);
    let mut truths: Vec<(String, Service, TruthSums)> = Vec::new();

    for i in first..first + n {
        let nhs = synthetic_nhs_number(i);
        let id = pseudo_id(&world.key, &nhs);
        // Age and sex.
        let mut u = rng.random_range(0.0..total_share);
        let mut band = AGE_BANDS[AGE_BANDS.len() - 1];
        for x in AGE_BANDS {
            if u < x.2 {
                band = *x;
                break;
            }
            u -= x.2;
        }
        let age = rng.random_range(band.0..=band.1) as i32;
        let yob = world.as_of_year - age;
        let sex = match rng.random_range(0..1000) {
            0..=1 => "U",
            2..=508 => "F",
            _ => "M",
        };
        let practice = world.practices.choose(&mut rng).unwrap();
        let (lsoa, imd) = practice.lsoas.choose(&mut rng).unwrap().clone();
        let (lsoa, imd) = if rng.random_bool(0.01) {
            (None, None)
        } else {
            (Some(lsoa), Some(imd))
        };
        let imd_v = imd.unwrap_or(5) as f64;

        // Latent need: age, deprivation, and a personal component.
        let z: f64 = std_normal.sample(&mut rng);
        let need = 0.8 * z + 0.035 * (age as f64 - 30.0).max(0.0) + 0.07 * (5.5 - imd_v) - 1.0;
        let frail: f64 = frailty.sample(&mut rng);
        // Year-to-year drift: year 0 is [A-365, A), year 2 is [A-1095, A-730).
        let need_y: [f64; 3] = std::array::from_fn(|_| need + 0.35 * std_normal.sample(&mut rng));

        // Registration and death.
        // Born in year_of_birth, before A (a baby born this year was born before A).
        let birth = (date32(NaiveDate::from_ymd_opt(yob, 1, 1).unwrap())
            + rng.random_range(0..365))
        .min(a - 1);
        let start = if rng.random_bool(0.08) {
            rng.random_range(a - SPELL_HISTORY..a).max(birth)
        } else {
            let lo = birth.max(date32(NaiveDate::from_ymd_opt(1985, 1, 1).unwrap()));
            let hi = (a - SPELL_HISTORY).max(lo + 1);
            rng.random_range(lo..hi).max(birth)
        };
        let end_from = start.max(a - SPELL_HISTORY);
        let end = (end_from < a && rng.random_bool(0.04)).then(|| rng.random_range(end_from..a));
        let mut death = None;
        for y in (0..3).rev() {
            let hazard = (-9.8 + 0.085 * age as f64 + 0.5 * need_y[y]).exp().min(0.6);
            if rng.random_bool(hazard) {
                let d = a - 365 * (y as i32 + 1) + rng.random_range(0..365);
                if d >= start && d >= birth {
                    death = Some(d);
                    break;
                }
            }
        }
        // Events happen while registered and alive.
        let active_end = [Some(a), end.map(|e| e + 1), death.map(|d| d + 1)]
            .into_iter()
            .flatten()
            .min()
            .unwrap();
        let active = |from: i32| (from.max(start).max(birth), active_end);

        // Long-term conditions, their Charlson conditions, and the drugs that treat them.
        let n_ltc =
            poisson(&mut rng, (-0.6 + 0.8 * need).exp()).min(world.codes.ltc.len() as u64) as usize;
        let mut groups: Vec<usize> = Vec::new();
        while groups.len() < n_ltc {
            let weights: Vec<f64> = world
                .codes
                .ltc
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    if groups.contains(&k) {
                        0.0
                    } else {
                        g.weight * (g.age_slope * (age as f64 - 50.0)).exp()
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let mut u = rng.random_range(0.0..total);
            for (k, w) in weights.iter().enumerate() {
                if u < *w {
                    groups.push(k);
                    break;
                }
                u -= w;
            }
        }
        let mut charlson: Vec<&str> = Vec::new();
        for &g in &groups {
            let cands = world.codes.ltc[g].charlson;
            if !cands.is_empty() && rng.random_bool(0.8) {
                let c = if world.codes.ltc[g].name == "diabetes" && need > 0.8 {
                    "diabwc"
                } else {
                    *cands.choose(&mut rng).unwrap()
                };
                if !charlson.contains(&c) {
                    charlson.push(c);
                }
            }
        }
        for (c, p) in [
            ("canc", 0.01 + 0.0006 * age as f64),
            ("rend", 0.004 * (0.6 * need).exp()),
            ("mld", 0.01),
            ("pud", 0.008),
            ("hp", 0.003),
            ("aids", 0.001),
        ] {
            if rng.random_bool(p.min(0.5)) {
                charlson.push(c);
                if c == "canc" && rng.random_bool(0.2) {
                    charlson.push("metacanc");
                }
                if c == "mld" && rng.random_bool(0.2) {
                    charlson.push("msld");
                }
            }
        }

        // Patient row.
        kept_patients.push(Patient {
            id: id.clone(),
            yob,
            sex,
            practice: practice.code.clone(),
            lsoa,
            imd,
            start,
            end,
            death,
        });

        // GP appointments, two years.
        let (from, to) = active(a - EVENT_HISTORY);
        for y in 0..2 {
            let (ys, ye) = ((a - 365 * (y + 1)).max(from), (a - 365 * y).min(to));
            if ye <= ys {
                continue;
            }
            let rate = (1.8 + 0.45 * need_y[y as usize]).exp() * frail * (ye - ys) as f64 / 365.0;
            let home_p =
                (0.002 * (0.9 * need_y[y as usize]).exp() * if age >= 75 { 3.0 } else { 1.0 })
                    .min(0.4);
            for _ in 0..poisson(&mut rng, rate) {
                let date = rng.random_range(ys..ye);
                let hcp = match rng.random_range(0..100) {
                    0..=54 => "GP",
                    55..=95 => "Other Practice staff",
                    _ => "Unknown",
                };
                let mode = if rng.random_bool(home_p) {
                    "Home Visit"
                } else {
                    match rng.random_range(0..100) {
                        0..=64 => "Face-to-Face",
                        65..=93 => "Telephone",
                        94..=97 => "Video/Online",
                        _ => "Unknown",
                    }
                };
                let status = match rng.random_range(0..100) {
                    0..=92 => "Attended",
                    93..=97 => "DNA",
                    _ => "Unknown",
                };
                b.appointment(Some(&id), date, hcp, mode, status);
            }
        }

        // Prescribing: repeat drugs every 28 days, plus acute items.
        let mut repeats: Vec<String> = Vec::new();
        for &g in &groups {
            let group = &world.codes.ltc[g];
            for _ in 0..1 + poisson(&mut rng, 0.5 + 0.25 * need.max(0.0)) {
                let prefix = group.prefixes.choose(&mut rng).unwrap();
                repeats.push(codes::bnf_code(
                    prefix,
                    rng.random_range(0..6),
                    rng.random_range(0..3),
                ));
            }
        }
        for _ in 0..poisson(&mut rng, 0.3 + 0.3 * need.max(0.0)) {
            let prefix = codes::OTHER_BNF_PREFIXES.choose(&mut rng).unwrap();
            repeats.push(codes::bnf_code(
                prefix,
                rng.random_range(0..6),
                rng.random_range(0..3),
            ));
        }
        for code in &repeats {
            let mut d = from + rng.random_range(0..28);
            let cost = unit_cost(code);
            while d < to {
                let items = if rng.random_bool(0.1) { 2 } else { 1 };
                b.prescription(
                    Some(&id),
                    d,
                    code,
                    items,
                    28.0 * items as f64,
                    cost * items as f64,
                );
                d += 28;
            }
        }
        let acute_rate = (0.8 + 0.3 * need).exp() * (to - from).max(0) as f64 / 365.0;
        for _ in 0..poisson(&mut rng, acute_rate) {
            let prefix = codes::OTHER_BNF_PREFIXES.choose(&mut rng).unwrap();
            let code = codes::bnf_code(prefix, rng.random_range(0..6), rng.random_range(0..3));
            let cost = unit_cost(&code);
            b.prescription(
                Some(&id),
                rng.random_range(from..to),
                &code,
                1,
                14.0,
                cost * 0.5,
            );
        }

        // Hospital spells, three years (then a fourth, further back, from the services
        // stream: only the placebo test of the service evaluation looks that far).
        let (from, to) = active(a - SPELL_HISTORY);
        let mut spells: Vec<SynthSpell> = Vec::new();
        let ctx = SpellContext {
            world,
            a,
            age,
            need,
            frail,
            charlson: &charlson,
            person: i,
            spell_no: std::cell::Cell::new(0),
        };
        for y in 0..3 {
            ctx.year(&mut rng, y, need_y[y as usize], (from, to), &mut spells);
        }
        let (from4, to4) = active(a - SPELL_HISTORY - 365);
        let need_y3 = need + 0.35 * std_normal.sample(&mut svc);
        ctx.year(&mut svc, 3, need_y3, (from4, to4), &mut spells);
        spells.sort_by_key(|s| s.date);

        // The draws of the services model these data had before enrolment followed
        // admissions, kept so that everyone else's data is as it was.
        let (from, to) = active(a - EVENT_HISTORY);
        if to > from {
            let span = (to - from) as f64 / 365.0;
            if rng.random_bool((0.003 * (1.2 * need).exp() * span).min(0.6)) {
                let _ = (rng.random_range(from..to), rng.random_range(7..43));
            }
            if rng.random_bool((0.002 * (need).exp() * span).min(0.4)) {
                let _ = rng.random_range(from..to);
                if rng.random_bool(0.3) {
                    let _ = rng.random_range(30..300);
                }
            }
        }

        // Service enrolment: referral after an emergency admission (services stream).
        let need_of = |day: i32| -> f64 {
            let y = ((a - 1 - day) / 365).clamp(0, 3) as usize;
            if y == 3 { need_y3 } else { need_y[y] }
        };
        let enrolment = refer(&mut svc, &spells, a, age, groups.len(), active_end);
        let mut truth_row = None;
        if let Some(e) = &enrolment {
            b.sv_id.append_value(&id);
            b.sv_code.append_value(e.service.code());
            b.sv_start.append_value(e.start);
            b.sv_end.append_option(e.end.filter(|d| *d < a));
            let y0 = spells.clone();
            let rr = effects.rate_ratio(e.service);
            let until = e.end.map_or(a, |d| (d + 1).min(a)).min(active_end);
            // The service acts from the day after its start: on the start day the
            // person is often still in (or just out of) the very admission that led
            // to the referral, which no service can avert. The follow-up year starts
            // then too, as the run's does (its index day).
            let from = e.start + 1;
            apply_effect(&mut svc, &mut spells, &ctx, rr, from, until, &need_of);
            let (f, t) = (from.max(start), (from + 365).min(active_end));
            truth_row = Some((e.service, TruthSums::of(&y0, &spells, f, t, a)));
        }
        for s in &spells {
            b.admission(
                &id,
                &s.spell_id,
                s.provider,
                s.date,
                s.discharge,
                s.method,
                &s.primary,
                &s.secondary,
                s.cost,
            );
        }

        // Opt-outs: a few per cent, some with two types, some recorded after A.
        let opted_out = rng.random_bool(0.03);
        if !opted_out {
            if let Some((service, sums)) = truth_row {
                truths.push((id.clone(), service, sums));
            }
        }
        if opted_out {
            let ndoo_start = date32(NaiveDate::from_ymd_opt(2018, 5, 25).unwrap());
            let types: &[&str] = if rng.random_bool(0.1) {
                &["type1", "ndoo"]
            } else {
                &[["type1", "ndoo", "local"][rng.random_range(0..3)]]
            };
            for t in types {
                b.oo_id.append_value(&id);
                b.oo_type.append_value(*t);
                b.oo_date.append_value(rng.random_range(ndoo_start..a + 60));
            }
        }
    }

    let duplicated = inject_invalid_rows(&mut b, &mut rng, &kept_patients, world, first, n);
    for p in &kept_patients {
        b.patient(p);
    }
    // The truth is over the people a run can evaluate: no objectors, no duplicates.
    let mut truth = Truth::default();
    for (who, service, sums) in truths {
        if !duplicated.contains(&who) {
            truth.add(service, &sums);
        }
    }
    let mut out = b.finish(n)?;
    out.truth = truth;
    Ok(out)
}

/// A few rows breaking each of the contract's row rules, at rates per 10,000 people.
fn inject_invalid_rows(
    b: &mut Builders,
    rng: &mut ChaCha8Rng,
    patients: &[Patient],
    world: &World,
    first: u64,
    n: u64,
) -> Vec<String> {
    let scale = n as f64 / 10_000.0;
    let a = world.as_of;
    let times = |rate: f64, rng: &mut ChaCha8Rng| poisson(rng, rate * scale);
    let some_id = |rng: &mut ChaCha8Rng| {
        patients
            .choose(rng)
            .map(|p| p.id.clone())
            .unwrap_or_default()
    };

    let mut duplicated = Vec::new();
    for _ in 0..times(2.0, rng) {
        // A second patients row for the same person: every copy is quarantined.
        let mut dup = patients.choose(rng).unwrap().clone();
        dup.practice = world.practices.choose(rng).unwrap().code.clone();
        b.patient(&dup);
        duplicated.push(dup.id);
    }
    for _ in 0..times(1.0, rng) {
        let p = patients.choose(rng).unwrap().clone();
        b.pat_id.append_null();
        b.pat_yob.append_value(p.yob);
        b.pat_sex.append_value(p.sex);
        b.pat_practice.append_value(&p.practice);
        b.pat_lsoa.append_option(p.lsoa.as_deref());
        b.pat_imd.append_option(p.imd);
        b.pat_start.append_value(p.start);
        b.pat_end.append_option(p.end);
        b.pat_death.append_option(p.death);
    }
    for _ in 0..times(1.0, rng) {
        let mut p = patients.choose(rng).unwrap().clone();
        p.id = random_hex_id(rng).to_uppercase();
        b.patient(&p);
    }
    for _ in 0..times(3.0, rng) {
        b.appointment(None, a - 30, "GP", "Face-to-Face", "Attended");
    }
    for _ in 0..times(3.0, rng) {
        let bad = format!("{}-x", &some_id(rng)[..20]);
        b.appointment(Some(&bad), a - 30, "GP", "Telephone", "Attended");
    }
    for _ in 0..times(5.0, rng) {
        let orphan = random_hex_id(rng);
        b.appointment(Some(&orphan), a - 100, "GP", "Face-to-Face", "Attended");
    }
    for _ in 0..times(2.0, rng) {
        let id = some_id(rng);
        b.appointment(
            Some(&id),
            date32(NaiveDate::from_ymd_opt(1899, 12, 31).unwrap()),
            "GP",
            "Face-to-Face",
            "Attended",
        );
    }
    for _ in 0..times(3.0, rng) {
        let orphan = random_hex_id(rng);
        b.prescription(Some(&orphan), a - 10, "0212000B0AAABAB", 1, 28.0, 3.2);
    }
    for _ in 0..times(2.0, rng) {
        b.prescription(None, a - 10, "0212000B0AAABAB", 1, 28.0, 3.2);
    }
    for k in 0..times(2.0, rng) {
        // Two spells sharing one id: neither is kept.
        let id = some_id(rng);
        let spell = format!("DUP{first:09}{k:03}");
        b.admission(
            &id,
            &spell,
            "RA7",
            a - 50,
            Some(a - 45),
            "21",
            "J189",
            &[],
            1500.0,
        );
        b.admission(
            &id,
            &spell,
            "RA7",
            a - 20,
            Some(a - 18),
            "21",
            "N390",
            &[],
            1200.0,
        );
    }
    for k in 0..times(2.0, rng) {
        let id = some_id(rng);
        b.admission(
            &id,
            &format!("BADM{first:09}{k:03}"),
            "RA7",
            a - 60,
            Some(a - 58),
            "2Z",
            "J189",
            &[],
            1000.0,
        );
    }
    for k in 0..times(2.0, rng) {
        let id = some_id(rng);
        b.admission(
            &id,
            &format!("BADD{first:09}{k:03}"),
            "RA7",
            a - 60,
            Some(a - 65),
            "21",
            "J189",
            &[],
            1000.0,
        );
    }
    for k in 0..times(1.0, rng) {
        let id = some_id(rng);
        let old = date32(NaiveDate::from_ymd_opt(1888, 1, 1).unwrap());
        b.admission(
            &id,
            &format!("OLD{first:09}{k:03}"),
            "RA7",
            old,
            Some(old + 3),
            "21",
            "J189",
            &[],
            1000.0,
        );
    }
    for _ in 0..times(1.0, rng) {
        b.sv_id.append_value(random_hex_id(rng));
        b.sv_code.append_value("VW01");
        b.sv_start.append_value(a - 40);
        b.sv_end.append_null();
    }
    duplicated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_nhs_numbers_pass_modulus_11() {
        for i in [0u64, 1, 2, 999_999, 10_000_000] {
            let n = synthetic_nhs_number(i);
            assert_eq!(n.len(), 10);
            let d: Vec<u32> = n.chars().map(|c| c.to_digit(10).unwrap()).collect();
            let sum: u32 = (0..9).map(|k| d[k] * (10 - k as u32)).sum();
            assert_eq!((11 - sum % 11) % 11, d[9], "{n}");
        }
        assert_ne!(synthetic_nhs_number(1), synthetic_nhs_number(2));
    }

    #[test]
    fn pseudo_id_is_32_lowercase_hex() {
        let id = pseudo_id(&synthetic_key(1), "9434765919");
        assert!(crate::session::is_pseudo_id(&id), "{id}");
        assert_ne!(id, pseudo_id(&synthetic_key(2), "9434765919"));
    }

    #[test]
    fn bnf_codes_have_fifteen_characters_and_keep_prefix() {
        for p in ["0212", "040702", "0601"] {
            let c = codes::bnf_code(p, 7, 2);
            assert_eq!(c.len(), 15);
            assert!(c.starts_with(p));
        }
    }
}

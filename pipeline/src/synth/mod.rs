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
//!
//! Each table has its own function: `people` (patients, optouts), `events`
//! (appointments, prescriptions), `spells` (admissions), `services` (and their true
//! effects, summed in `truth`), `invalid` (rows breaking the rules). `chunk` calls
//! them person by person in one fixed order, because the order of the draws is the
//! output: changing it changes every seed's data.

/// A table's column builders, in the contract's order, and `finish`, its batch of
/// them: one list of the columns for both.
macro_rules! table_rows {
    ($name:ident, $table:path, { $($column:ident: $builder:ty),+ $(,)? }) => {
        #[derive(Default)]
        pub(super) struct $name {
            $($column: $builder),+
        }

        impl $name {
            pub(super) fn finish(
                &mut self,
            ) -> crate::error::Result<datafusion::arrow::array::RecordBatch> {
                super::batch(&$table, &mut [$(&mut self.$column),+])
            }
        }
    };
}

mod chunk;
pub mod codes;
mod events;
pub mod identity;
mod invalid;
mod people;
mod services;
mod spells;
mod truth;

pub use services::{Service, ServiceEffects};

use crate::error::{Error, Result};
use crate::governance::pseudonym::{Key, normalise_nhs_number};
use crate::ingest::contract::{self, Table};
use crate::sql::date32;
use chrono::{Datelike, NaiveDate};
use chunk::{ChunkOut, TABLES, generate_chunk, in_parts};
use codes::Codes;
use datafusion::arrow::array::{ArrayBuilder, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Poisson};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::{Path, PathBuf};
use truth::Truth;

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
    seed_key(b"riskstrat synthetic pseudonymisation key v1", seed)
}

/// A key derived from the seed for one purpose.
fn seed_key(purpose: &[u8], seed: u64) -> Key {
    let mut h = Sha256::new();
    h.update(purpose);
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
    let out = if opts.identifiable {
        opts.out.join(IDENTIFIABLE_DIR)
    } else {
        opts.out.clone()
    };
    for t in TABLES.iter().filter(|t| in_parts(t)) {
        let d = out.join(t.name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d).map_err(|e| {
            Error::bad_input(format!("--out {}: cannot create it ({e})", out.display()))
        })?;
    }
    let world = World::new(opts);
    let (mut summary, truth) = write_tables(opts, &world, &out)?;
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

/// Every table under `out`, chunks generated a window at a time in parallel and
/// written in chunk order; the counts and the truth, summed in that order.
fn write_tables(opts: &SynthOptions, world: &World, out: &Path) -> Result<(SynthSummary, Truth)> {
    let mut whole: Vec<ArrowWriter<File>> = TABLES
        .iter()
        .filter(|t| !in_parts(t))
        .map(|t| writer(&out.join(table_path(t.name)), schema(opts, t)))
        .collect::<Result<_>>()?;
    let mut summary = SynthSummary::default();
    let mut truth = Truth::default();
    let bar = crate::progress::bar(opts.patients, "synth");
    let window = (rayon::current_num_threads() * 2) as u64;
    let n_chunks = opts.patients.div_ceil(CHUNK);
    let mut start = 0;
    while start < n_chunks {
        let end = (start + window).min(n_chunks);
        let results: Vec<Result<ChunkOut>> = (start..end)
            .into_par_iter()
            .map(|c| chunk(opts, world, out, c))
            .collect();
        for r in results {
            let chunk = r?;
            for (w, (_, batch)) in whole.iter_mut().zip(chunk.whole_tables()) {
                w.write(batch)?;
            }
            summary.add(&chunk);
            truth.merge(&chunk.truth);
            if let Some(b) = &bar {
                b.inc(chunk.people);
            }
        }
        start = end;
    }
    for w in whole {
        w.close()?;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok((summary, truth))
}

/// Chunk `c`, identifiable if asked, with its part of each event table written.
fn chunk(opts: &SynthOptions, world: &World, out: &Path, c: u64) -> Result<ChunkOut> {
    let first = c * CHUNK;
    let n = CHUNK.min(opts.patients - first);
    let mut chunk = generate_chunk(world, &opts.service_effects, opts.seed, c, first, n)?;
    if opts.identifiable {
        chunk = identity::identify(chunk, &world.key, first, n)?;
    }
    for (t, batch) in chunk.part_tables() {
        let path = out.join(t.name).join(format!("part-{c:05}.parquet"));
        let mut w = writer(&path, schema(opts, t))?;
        w.write(batch)?;
        w.close()?;
    }
    Ok(chunk)
}

fn schema(opts: &SynthOptions, t: &Table) -> SchemaRef {
    if opts.identifiable {
        t.identifiable_schema()
    } else {
        t.schema()
    }
}

impl SynthSummary {
    fn add(&mut self, chunk: &ChunkOut) {
        self.patients += chunk.patients.num_rows() as u64;
        self.appointments += chunk.appointments.num_rows() as u64;
        self.prescriptions += chunk.prescriptions.num_rows() as u64;
        self.admissions += chunk.admissions.num_rows() as u64;
        self.optouts += chunk.optouts.num_rows() as u64;
        self.services += chunk.services.num_rows() as u64;
    }
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

fn writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    let file = File::create(path)
        .map_err(|e| Error::bad_input(format!("cannot write {}: {e}", path.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    Ok(ArrowWriter::try_new(file, schema, Some(props))?)
}

/// Where `synth` writes the truth about its services, under `--out`.
pub const TRUTH_FILE: &str = "truth/service_effects.json";

/// A table's batch from its column builders, in the contract's order.
fn batch(t: &Table, columns: &mut [&mut dyn ArrayBuilder]) -> Result<RecordBatch> {
    let columns = columns.iter_mut().map(|c| c.finish()).collect();
    Ok(RecordBatch::try_new(t.schema(), columns)?)
}

fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    Normal::new(0.0, 1.0).unwrap().sample(rng)
}

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    Poisson::new(mean)
        .map(|d| d.sample(rng) as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::pseudonym::pseudo_id;

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

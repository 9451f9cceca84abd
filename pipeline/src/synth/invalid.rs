//! A few rows breaking each of the contract's row rules, at rates per 10,000 people,
//! so that every quarantine rule of a run has something to catch.

use super::chunk::Rows;
use super::events::{AppointmentRows, PrescriptionRows};
use super::people::{Patient, PatientRows};
use super::services::ServiceRows;
use super::spells::AdmissionRows;
use super::{World, poisson};
use crate::sql::date32;
use chrono::NaiveDate;
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// Appends the chunk's invalid rows, table by table (the order of the draws), and
/// returns the ids given a second `patients` row.
pub(super) fn invalid_rows(
    rows: &mut Rows,
    rng: &mut ChaCha8Rng,
    patients: &[Patient],
    world: &World,
    first: u64,
    n: u64,
) -> Vec<String> {
    let bad = Invalid {
        patients,
        world,
        scale: n as f64 / 10_000.0,
        a: world.as_of,
        first,
    };
    let duplicated = bad.patients(&mut rows.patients, rng);
    bad.appointments(&mut rows.appointments, rng);
    bad.prescriptions(&mut rows.prescriptions, rng);
    bad.admissions(&mut rows.admissions, rng);
    bad.services(&mut rows.services, rng);
    duplicated
}

/// What the invalid rows of a chunk are made from.
struct Invalid<'a> {
    patients: &'a [Patient],
    world: &'a World,
    scale: f64,
    a: i32,
    first: u64,
}

impl Invalid<'_> {
    /// How many rows of a kind, at `rate` per 10,000 people.
    fn times(&self, rate: f64, rng: &mut ChaCha8Rng) -> u64 {
        poisson(rng, rate * self.scale)
    }

    fn some_id(&self, rng: &mut ChaCha8Rng) -> String {
        self.patients
            .choose(rng)
            .map(|p| p.id.clone())
            .unwrap_or_default()
    }

    fn patients(&self, rows: &mut PatientRows, rng: &mut ChaCha8Rng) -> Vec<String> {
        let mut duplicated = Vec::new();
        for _ in 0..self.times(2.0, rng) {
            // A second patients row for the same person: every copy is quarantined.
            let mut dup = self.patients.choose(rng).unwrap().clone();
            dup.practice = self.world.practices.choose(rng).unwrap().code.clone();
            rows.append(Some(&dup.id), &dup);
            duplicated.push(dup.id);
        }
        for _ in 0..self.times(1.0, rng) {
            let p = self.patients.choose(rng).unwrap().clone();
            rows.append(None, &p);
        }
        for _ in 0..self.times(1.0, rng) {
            let mut p = self.patients.choose(rng).unwrap().clone();
            p.id = random_hex_id(rng).to_uppercase();
            rows.append(Some(&p.id), &p);
        }
        duplicated
    }

    fn appointments(&self, rows: &mut AppointmentRows, rng: &mut ChaCha8Rng) {
        let a = self.a;
        for _ in 0..self.times(3.0, rng) {
            rows.append(None, a - 30, "GP", "Face-to-Face", "Attended");
        }
        for _ in 0..self.times(3.0, rng) {
            let bad = format!("{}-x", &self.some_id(rng)[..20]);
            rows.append(Some(&bad), a - 30, "GP", "Telephone", "Attended");
        }
        for _ in 0..self.times(5.0, rng) {
            let orphan = random_hex_id(rng);
            rows.append(Some(&orphan), a - 100, "GP", "Face-to-Face", "Attended");
        }
        for _ in 0..self.times(2.0, rng) {
            let id = self.some_id(rng);
            let old = date32(NaiveDate::from_ymd_opt(1899, 12, 31).unwrap());
            rows.append(Some(&id), old, "GP", "Face-to-Face", "Attended");
        }
    }

    fn prescriptions(&self, rows: &mut PrescriptionRows, rng: &mut ChaCha8Rng) {
        let a = self.a;
        for _ in 0..self.times(3.0, rng) {
            let orphan = random_hex_id(rng);
            rows.append(Some(&orphan), a - 10, "0212000B0AAABAB", 1, 28.0, 3.2);
        }
        for _ in 0..self.times(2.0, rng) {
            rows.append(None, a - 10, "0212000B0AAABAB", 1, 28.0, 3.2);
        }
    }

    fn admissions(&self, rows: &mut AdmissionRows, rng: &mut ChaCha8Rng) {
        let (a, first) = (self.a, self.first);
        for k in 0..self.times(2.0, rng) {
            // Two spells sharing one id: neither is kept.
            let id = self.some_id(rng);
            let spell = format!("DUP{first:09}{k:03}");
            spell_at_ra7(rows, &id, &spell, (a - 50, a - 45), "21", "J189", 1500.0);
            spell_at_ra7(rows, &id, &spell, (a - 20, a - 18), "21", "N390", 1200.0);
        }
        for k in 0..self.times(2.0, rng) {
            let id = self.some_id(rng);
            let spell = format!("BADM{first:09}{k:03}");
            spell_at_ra7(rows, &id, &spell, (a - 60, a - 58), "2Z", "J189", 1000.0);
        }
        for k in 0..self.times(2.0, rng) {
            let id = self.some_id(rng);
            let spell = format!("BADD{first:09}{k:03}");
            spell_at_ra7(rows, &id, &spell, (a - 60, a - 65), "21", "J189", 1000.0);
        }
        for k in 0..self.times(1.0, rng) {
            let id = self.some_id(rng);
            let old = date32(NaiveDate::from_ymd_opt(1888, 1, 1).unwrap());
            let spell = format!("OLD{first:09}{k:03}");
            spell_at_ra7(rows, &id, &spell, (old, old + 3), "21", "J189", 1000.0);
        }
    }

    fn services(&self, rows: &mut ServiceRows, rng: &mut ChaCha8Rng) {
        for _ in 0..self.times(1.0, rng) {
            rows.append(&random_hex_id(rng), "VW01", self.a - 40, None);
        }
    }
}

/// A spell at one provider with no secondary diagnoses.
fn spell_at_ra7(
    rows: &mut AdmissionRows,
    id: &str,
    spell: &str,
    (date, discharge): (i32, i32),
    method: &str,
    primary: &str,
    cost: f64,
) {
    rows.append(
        id,
        spell,
        "RA7",
        date,
        Some(discharge),
        method,
        primary,
        &[],
        cost,
    );
}

fn random_hex_id(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    hex::encode(bytes)
}

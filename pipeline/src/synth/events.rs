//! General practice's tables: `appointments` and `prescriptions`, two years of each
//! before A, more of both with need.

use super::people::Person;
use super::{EVENT_HISTORY, World, codes, poisson};
use crate::ingest::contract;
use datafusion::arrow::array::{Date32Builder, Float64Builder, Int32Builder, StringBuilder};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// GP appointments in each of the two years before A, at the year's need; home visits
/// likelier for the old and the needy.
pub(super) fn appointments(rows: &mut AppointmentRows, rng: &mut ChaCha8Rng, p: &Person, a: i32) {
    let (from, to) = p.active(a - EVENT_HISTORY);
    for y in 0..2 {
        let (ys, ye) = ((a - 365 * (y + 1)).max(from), (a - 365 * y).min(to));
        if ye <= ys {
            continue;
        }
        let need_y = p.need_y[y as usize];
        let rate = (1.8 + 0.45 * need_y).exp() * p.frail * (ye - ys) as f64 / 365.0;
        let home_p = (0.002 * (0.9 * need_y).exp() * if p.age >= 75 { 3.0 } else { 1.0 }).min(0.4);
        for _ in 0..poisson(rng, rate) {
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
            rows.append(Some(&p.row.id), date, hcp, mode, status);
        }
    }
}

table_rows!(AppointmentRows, contract::APPOINTMENTS, {
    id: StringBuilder,
    date: Date32Builder,
    hcp: StringBuilder,
    mode: StringBuilder,
    status: StringBuilder,
});

impl AppointmentRows {
    pub(super) fn append(
        &mut self,
        id: Option<&str>,
        date: i32,
        hcp: &str,
        mode: &str,
        status: &str,
    ) {
        self.id.append_option(id);
        self.date.append_value(date);
        self.hcp.append_value(hcp);
        self.mode.append_value(mode);
        self.status.append_value(status);
    }
}

/// Prescribing: repeat drugs every 28 days, plus acute items.
pub(super) fn prescriptions(
    rows: &mut PrescriptionRows,
    rng: &mut ChaCha8Rng,
    p: &Person,
    world: &World,
) {
    let (from, to) = p.active(world.as_of - EVENT_HISTORY);
    let id = Some(p.row.id.as_str());
    for code in &repeat_drugs(world, rng, p) {
        let mut d = from + rng.random_range(0..28);
        let cost = unit_cost(code);
        while d < to {
            let items = if rng.random_bool(0.1) { 2 } else { 1 };
            rows.append(id, d, code, items, 28.0 * items as f64, cost * items as f64);
            d += 28;
        }
    }
    let acute_rate = (0.8 + 0.3 * p.need).exp() * (to - from).max(0) as f64 / 365.0;
    for _ in 0..poisson(rng, acute_rate) {
        let code = drug(rng, codes::OTHER_BNF_PREFIXES);
        let cost = unit_cost(&code);
        rows.append(id, rng.random_range(from..to), &code, 1, 14.0, cost * 0.5);
    }
}

/// The drugs a person has on repeat: some for each long-term condition, a few others.
fn repeat_drugs(world: &World, rng: &mut ChaCha8Rng, p: &Person) -> Vec<String> {
    let need = p.need;
    let mut repeats: Vec<String> = Vec::new();
    for &g in &p.groups {
        let group = &world.codes.ltc[g];
        for _ in 0..1 + poisson(rng, 0.5 + 0.25 * need.max(0.0)) {
            repeats.push(drug(rng, &group.prefixes));
        }
    }
    for _ in 0..poisson(rng, 0.3 + 0.3 * need.max(0.0)) {
        repeats.push(drug(rng, codes::OTHER_BNF_PREFIXES));
    }
    repeats
}

/// A BNF code under one of `prefixes`.
fn drug(rng: &mut ChaCha8Rng, prefixes: &[impl AsRef<str>]) -> String {
    let prefix = prefixes.choose(rng).unwrap();
    codes::bnf_code(
        prefix.as_ref(),
        rng.random_range(0..6),
        rng.random_range(0..3),
    )
}

/// Cost of a chemical substance's item, stable per code.
fn unit_cost(bnf: &str) -> f64 {
    let h = bnf.bytes().fold(1469598103934665603u64, |h, b| {
        (h ^ b as u64).wrapping_mul(1099511628211)
    });
    1.5 + (h % 4000) as f64 / 100.0
}

table_rows!(PrescriptionRows, contract::PRESCRIPTIONS, {
    id: StringBuilder,
    date: Date32Builder,
    bnf: StringBuilder,
    items: Int32Builder,
    qty: Float64Builder,
    nic: Float64Builder,
});

impl PrescriptionRows {
    pub(super) fn append(
        &mut self,
        id: Option<&str>,
        date: i32,
        bnf: &str,
        items: i32,
        qty: f64,
        nic: f64,
    ) {
        self.id.append_option(id);
        self.date.append_value(date);
        self.bnf.append_value(bnf);
        self.items.append_value(items);
        self.qty.append_value(qty);
        self.nic.append_value((nic * 100.0).round() / 100.0);
    }
}

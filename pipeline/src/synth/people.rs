//! The people of a chunk and the two tables that are one row (or a few) a person:
//! `patients` and `optouts`. A person's draws come first in their stream, so their
//! order here is part of every seed's output.

use super::{SPELL_HISTORY, World, poisson, std_normal, synthetic_nhs_number};
use crate::governance::pseudonym::pseudo_id;
use crate::ingest::contract;
use crate::sql::date32;
use chrono::NaiveDate;
use datafusion::arrow::array::{Date32Builder, Int32Builder, StringBuilder};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

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

/// A `patients` row before it is written (invalid rows copy and alter some).
#[derive(Clone)]
pub(super) struct Patient {
    pub(super) id: String,
    pub(super) yob: i32,
    pub(super) sex: &'static str,
    pub(super) practice: String,
    pub(super) lsoa: Option<String>,
    pub(super) imd: Option<i32>,
    pub(super) start: i32,
    pub(super) end: Option<i32>,
    pub(super) death: Option<i32>,
}

/// A person as drawn: their `patients` row and what drives their events.
pub(super) struct Person {
    pub(super) index: u64,
    pub(super) row: Patient,
    pub(super) age: i32,
    pub(super) need: f64,
    pub(super) frail: f64,
    /// Need in each of the three years before A (0 = the last).
    pub(super) need_y: [f64; 3],
    pub(super) birth: i32,
    /// The first day the person is no longer registered and alive (A at the latest).
    pub(super) active_end: i32,
    /// Long-term-condition groups (indexes into `Codes::ltc`).
    pub(super) groups: Vec<usize>,
    pub(super) charlson: Vec<&'static str>,
}

impl Person {
    /// The days from `from` on when events happen: while registered and alive.
    pub(super) fn active(&self, from: i32) -> (i32, i32) {
        (from.max(self.row.start).max(self.birth), self.active_end)
    }
}

/// Person `i`: who they are, their latent need (rising with age and deprivation),
/// registration, death and long-term conditions.
pub(super) fn draw(world: &World, rng: &mut ChaCha8Rng, i: u64) -> Person {
    let a = world.as_of;
    let nhs = synthetic_nhs_number(i);
    let id = pseudo_id(&world.key, &nhs);
    let (age, sex) = age_and_sex(rng);
    let yob = world.as_of_year - age;
    let (practice, lsoa, imd) = address(world, rng);
    let imd_v = imd.unwrap_or(5) as f64;

    let z: f64 = std_normal(rng);
    let need = 0.8 * z + 0.035 * (age as f64 - 30.0).max(0.0) + 0.07 * (5.5 - imd_v) - 1.0;
    let frail: f64 = Gamma::new(2.0, 0.5).unwrap().sample(rng);
    // Year-to-year drift: year 0 is [A-365, A), year 2 is [A-1095, A-730).
    let need_y: [f64; 3] = std::array::from_fn(|_| need + 0.35 * std_normal(rng));

    let (birth, start, end) = registration(rng, a, yob);
    let death = death(rng, a, age, &need_y, start, birth);
    let active_end = [Some(a), end.map(|e| e + 1), death.map(|d| d + 1)]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
    let groups = ltc_groups(world, rng, age, need);
    let charlson = charlson(world, rng, &groups, age, need);
    Person {
        index: i,
        row: Patient {
            id,
            yob,
            sex,
            practice,
            lsoa,
            imd,
            start,
            end,
            death,
        },
        age,
        need,
        frail,
        need_y,
        birth,
        active_end,
        groups,
        charlson,
    }
}

fn age_and_sex(rng: &mut ChaCha8Rng) -> (i32, &'static str) {
    let total_share: f64 = AGE_BANDS.iter().map(|x| x.2).sum();
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
    let sex = match rng.random_range(0..1000) {
        0..=1 => "U",
        2..=508 => "F",
        _ => "M",
    };
    (age, sex)
}

/// Practice code, LSOA and IMD decile (1% without an address).
fn address(world: &World, rng: &mut ChaCha8Rng) -> (String, Option<String>, Option<i32>) {
    let practice = world.practices.choose(rng).unwrap();
    let (lsoa, imd) = practice.lsoas.choose(rng).unwrap().clone();
    let (lsoa, imd) = if rng.random_bool(0.01) {
        (None, None)
    } else {
        (Some(lsoa), Some(imd))
    };
    (practice.code.clone(), lsoa, imd)
}

/// (birth, registration start, registration end). Born in year_of_birth, before A (a
/// baby born this year was born before A).
fn registration(rng: &mut ChaCha8Rng, a: i32, yob: i32) -> (i32, i32, Option<i32>) {
    let birth =
        (date32(NaiveDate::from_ymd_opt(yob, 1, 1).unwrap()) + rng.random_range(0..365)).min(a - 1);
    let start = if rng.random_bool(0.08) {
        rng.random_range(a - SPELL_HISTORY..a).max(birth)
    } else {
        let lo = birth.max(date32(NaiveDate::from_ymd_opt(1985, 1, 1).unwrap()));
        let hi = (a - SPELL_HISTORY).max(lo + 1);
        rng.random_range(lo..hi).max(birth)
    };
    let end_from = start.max(a - SPELL_HISTORY);
    let end = (end_from < a && rng.random_bool(0.04)).then(|| rng.random_range(end_from..a));
    (birth, start, end)
}

/// Death, if any, in the three years before A: the hazard of each year from its need,
/// the earliest year drawn first.
fn death(
    rng: &mut ChaCha8Rng,
    a: i32,
    age: i32,
    need_y: &[f64; 3],
    start: i32,
    birth: i32,
) -> Option<i32> {
    for y in (0..3).rev() {
        let hazard = (-9.8 + 0.085 * age as f64 + 0.5 * need_y[y]).exp().min(0.6);
        if rng.random_bool(hazard) {
            let d = a - 365 * (y as i32 + 1) + rng.random_range(0..365);
            if d >= start && d >= birth {
                return Some(d);
            }
        }
    }
    None
}

/// Long-term-condition groups, more of them with need, each likelier with age by its
/// own slope.
fn ltc_groups(world: &World, rng: &mut ChaCha8Rng, age: i32, need: f64) -> Vec<usize> {
    let n_ltc = poisson(rng, (-0.6 + 0.8 * need).exp()).min(world.codes.ltc.len() as u64) as usize;
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
    groups
}

/// The Charlson conditions hospital records will carry: mostly those of the person's
/// long-term conditions, plus a few that no prescribing shows.
fn charlson(
    world: &World,
    rng: &mut ChaCha8Rng,
    groups: &[usize],
    age: i32,
    need: f64,
) -> Vec<&'static str> {
    let mut charlson: Vec<&'static str> = Vec::new();
    for &g in groups {
        let cands = world.codes.ltc[g].charlson;
        if !cands.is_empty() && rng.random_bool(0.8) {
            let c = if world.codes.ltc[g].name == "diabetes" && need > 0.8 {
                "diabwc"
            } else {
                *cands.choose(rng).unwrap()
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
    charlson
}

table_rows!(PatientRows, contract::PATIENTS, {
    id: StringBuilder,
    yob: Int32Builder,
    sex: StringBuilder,
    practice: StringBuilder,
    lsoa: StringBuilder,
    imd: Int32Builder,
    start: Date32Builder,
    end: Date32Builder,
    death: Date32Builder,
});

impl PatientRows {
    /// `p`'s row under `id` (`None` only for a row that breaks the contract).
    pub(super) fn append(&mut self, id: Option<&str>, p: &Patient) {
        self.id.append_option(id);
        self.yob.append_value(p.yob);
        self.sex.append_value(p.sex);
        self.practice.append_value(&p.practice);
        self.lsoa.append_option(p.lsoa.as_deref());
        self.imd.append_option(p.imd);
        self.start.append_value(p.start);
        self.end.append_option(p.end);
        self.death.append_option(p.death);
    }
}

/// Opt-outs: a few per cent, some with two types, some recorded after A. Whether the
/// person opted out.
pub(super) fn optouts(rows: &mut OptoutRows, rng: &mut ChaCha8Rng, id: &str, a: i32) -> bool {
    if !rng.random_bool(0.03) {
        return false;
    }
    let ndoo_start = date32(NaiveDate::from_ymd_opt(2018, 5, 25).unwrap());
    let types: &[&str] = if rng.random_bool(0.1) {
        &["type1", "ndoo"]
    } else {
        &[["type1", "ndoo", "local"][rng.random_range(0..3)]]
    };
    for t in types {
        rows.id.append_value(id);
        rows.kind.append_value(*t);
        rows.date.append_value(rng.random_range(ndoo_start..a + 60));
    }
    true
}

table_rows!(OptoutRows, contract::OPTOUTS, {
    id: StringBuilder,
    kind: StringBuilder,
    date: Date32Builder,
});

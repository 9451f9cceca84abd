//! Code shapes for synthetic data: BNF presentation codes, ICD-10 codes drawn from the
//! reference lists (so the features really match them), ODS-like practice codes.

use crate::session::{CHARLSON_CSV, LTC_BNF_GROUPS_CSV, parse_csv};
use rand::Rng;
use rand::seq::IndexedRandom;

/// One long-term-condition group of the LTC list with its BNF prefixes.
pub struct LtcGroup {
    pub name: String,
    pub prefixes: Vec<String>,
    /// Relative prevalence weight and how strongly it rises with age.
    pub weight: f64,
    pub age_slope: f64,
    /// Charlson conditions a person in this group may carry on hospital records.
    pub charlson: &'static [&'static str],
}

pub struct Codes {
    pub ltc: Vec<LtcGroup>,
    /// Charlson condition -> its ICD-10 prefixes.
    pub charlson: Vec<(String, Vec<String>)>,
}

impl Codes {
    pub fn load() -> Self {
        let mut ltc: Vec<LtcGroup> = Vec::new();
        for r in parse_csv(LTC_BNF_GROUPS_CSV) {
            if let Some(g) = ltc.iter_mut().find(|g| g.name == r[0]) {
                g.prefixes.push(r[1].clone());
                continue;
            }
            let (weight, age_slope, charlson): (f64, f64, &'static [&'static str]) =
                match r[0].as_str() {
                    "diabetes" => (1.0, 0.03, &["diab", "diabwc"]),
                    "respiratory" => (1.2, 0.01, &["copd"]),
                    "cardiovascular" => (1.6, 0.05, &["chf", "ami", "pvd", "cevd"]),
                    "anticoagulation" => (0.5, 0.07, &["cevd"]),
                    "depression" => (1.3, 0.0, &[]),
                    "severe_mental_illness" => (0.3, 0.0, &[]),
                    "epilepsy" => (0.2, 0.0, &[]),
                    "dementia" => (0.25, 0.12, &["dementia"]),
                    "parkinsons" => (0.1, 0.08, &[]),
                    "chronic_pain" => (0.8, 0.02, &[]),
                    "thyroid" => (0.6, 0.03, &[]),
                    "musculoskeletal" => (0.9, 0.04, &["rheumd"]),
                    _ => (0.3, 0.02, &[]),
                };
            ltc.push(LtcGroup {
                name: r[0].clone(),
                prefixes: vec![r[1].clone()],
                weight,
                age_slope,
                charlson,
            });
        }
        let mut charlson: Vec<(String, Vec<String>)> = Vec::new();
        for r in parse_csv(CHARLSON_CSV) {
            match charlson.iter_mut().find(|(c, _)| *c == r[0]) {
                Some((_, v)) => v.push(r[3].clone()),
                None => charlson.push((r[0].clone(), vec![r[3].clone()])),
            }
        }
        Self { ltc, charlson }
    }

    /// A full ICD-10 code (no dot) for a Charlson condition.
    pub fn icd10_for(&self, condition: &str, rng: &mut impl Rng) -> String {
        let prefixes = &self
            .charlson
            .iter()
            .find(|(c, _)| c == condition)
            .expect("known condition")
            .1;
        let p = prefixes.choose(rng).expect("non-empty");
        if p.len() == 3 {
            format!("{p}{}", rng.random_range(0..10))
        } else {
            p.clone()
        }
    }
}

/// A 15-character BNF presentation code under `prefix` for chemical substance `k`.
/// Layout: chapter+section(4) paragraph(2) subparagraph(1) substance(2) product(2)
/// strength/formulation(2) equivalent(2).
pub fn bnf_code(prefix: &str, substance: u32, product: u32) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNPQRSTUVWXYZ";
    let mut s = String::with_capacity(15);
    s.push_str(prefix);
    while s.len() < 7 {
        s.push('0');
    }
    s.push(ALNUM[(substance / 25 % 25) as usize] as char);
    s.push(ALNUM[(substance % 25) as usize] as char);
    s.push_str("AA");
    s.push('A');
    s.push(ALNUM[(product % 25) as usize] as char);
    s.push_str("AA");
    s.truncate(15);
    debug_assert_eq!(s.len(), 15);
    s
}

/// Acute and other non-LTC prescribing, by BNF prefix (some deliberately near the LTC
/// prefixes: 0304 antihistamines are not 0301/0302, 040701 is not 040702).
pub const OTHER_BNF_PREFIXES: &[&str] = &["0501", "1302", "0103", "040701", "0304", "1103", "0101"];

/// Common acute primary diagnoses for emergency spells that carry no Charlson weight.
pub const ACUTE_ICD10: &[&str] = &[
    "J189", "N390", "R074", "R069", "S720", "R55", "K590", "A099", "R296", "L031",
];
pub const ELECTIVE_ICD10: &[&str] = &["H251", "M171", "K802", "Z511", "N400", "K402"];

pub const PROVIDERS: &[&str] = &["RA7", "RBA", "RD1", "RH8", "RK9", "RTE", "RVJ", "REF"];

//! Hospital spells, emergency and elective, with Charlson-coded diagnoses: the
//! `admissions` table.

use super::people::Person;
use super::{SPELL_HISTORY, World, codes, poisson, std_normal};
use crate::ingest::contract;
use datafusion::arrow::array::{Date32Builder, Float64Builder, ListBuilder, StringBuilder};
use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;

/// A hospital spell before it is written.
#[derive(Clone)]
pub(super) struct SynthSpell {
    pub(super) date: i32,
    pub(super) los: i32,
    pub(super) discharge: Option<i32>,
    pub(super) is_emergency: bool,
    method: &'static str,
    primary: String,
    secondary: Vec<String>,
    provider: &'static str,
    spell_id: String,
    cost: f64,
}

/// What a person's spells are drawn from.
pub(super) struct SpellContext<'a> {
    world: &'a World,
    pub(super) a: i32,
    age: i32,
    need: f64,
    frail: f64,
    charlson: &'a [&'static str],
    person: u64,
    spell_no: std::cell::Cell<u32>,
}

/// A person's spells over three years from the main stream, then a fourth, further
/// back, from the services stream `svc` (only the placebo test of the service
/// evaluation looks that far), by date; and the fourth year's need.
pub(super) fn history(
    ctx: &SpellContext,
    p: &Person,
    rng: &mut ChaCha8Rng,
    svc: &mut ChaCha8Rng,
) -> (Vec<SynthSpell>, f64) {
    let a = ctx.a;
    let (from, to) = p.active(a - SPELL_HISTORY);
    let mut spells: Vec<SynthSpell> = Vec::new();
    for y in 0..3 {
        ctx.year(rng, y, p.need_y[y as usize], (from, to), &mut spells);
    }
    let (from4, to4) = p.active(a - SPELL_HISTORY - 365);
    let need_y3 = p.need + 0.35 * std_normal(svc);
    ctx.year(svc, 3, need_y3, (from4, to4), &mut spells);
    spells.sort_by_key(|s| s.date);
    (spells, need_y3)
}

impl<'a> SpellContext<'a> {
    pub(super) fn new(world: &'a World, p: &'a Person) -> Self {
        SpellContext {
            world,
            a: world.as_of,
            age: p.age,
            need: p.need,
            frail: p.frail,
            charlson: &p.charlson,
            person: p.index,
            spell_no: std::cell::Cell::new(0),
        }
    }

    /// Emergency admissions a year, in year `y` before A (0 = the last).
    pub(super) fn emergency_rate(&self, need_y: f64) -> f64 {
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

    pub(super) fn spell(
        &self,
        rng: &mut ChaCha8Rng,
        y: i32,
        date: i32,
        is_emergency: bool,
    ) -> SynthSpell {
        let (a, need) = (self.a, self.need);
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
        let (primary, secondary) = self.diagnoses(rng, is_emergency);
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

    /// Primary and secondary ICD-10 codes: the person's Charlson conditions often,
    /// else a common acute or elective reason.
    fn diagnoses(&self, rng: &mut ChaCha8Rng, is_emergency: bool) -> (String, Vec<String>) {
        let (charlson, world) = (self.charlson, self.world);
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
        (primary, secondary)
    }
}

/// The person's spells as `admissions` rows.
pub(super) fn admissions(rows: &mut AdmissionRows, id: &str, spells: &[SynthSpell]) {
    for s in spells {
        rows.append(
            id,
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
}

table_rows!(AdmissionRows, contract::ADMISSIONS, {
    id: StringBuilder,
    spell: StringBuilder,
    provider: StringBuilder,
    date: Date32Builder,
    discharge: Date32Builder,
    method: StringBuilder,
    primary: StringBuilder,
    secondary: ListBuilder<StringBuilder>,
    cost: Float64Builder,
});

impl AdmissionRows {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn append(
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
        self.id.append_value(id);
        self.spell.append_value(spell);
        self.provider.append_value(provider);
        self.date.append_value(date);
        self.discharge.append_option(discharge);
        self.method.append_value(method);
        self.primary.append_value(primary);
        for s in secondary {
            self.secondary.values().append_value(s);
        }
        self.secondary.append(true);
        self.cost.append_value((cost * 100.0).round() / 100.0);
    }
}

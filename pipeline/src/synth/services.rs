//! The services `synth` enrols people in, their referral rules and true effects: the
//! `services` table. Their draws are from the services stream (all but the retired
//! ones), so that changing them leaves everyone else's data as it was.

use super::people::Person;
use super::spells::{SpellContext, SynthSpell};
use super::truth::TruthSums;
use super::{EVENT_HISTORY, poisson};
use crate::error::{Error, Result};
use crate::ingest::contract;
use datafusion::arrow::array::{Date32Builder, StringBuilder};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

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

/// The person's enrolment, if any, as a `services` row; its effect on their
/// emergency admissions from the day after it starts; and the truth about it, over
/// the follow-up year a run would see.
pub(super) fn services(
    rows: &mut ServiceRows,
    svc: &mut ChaCha8Rng,
    ctx: &SpellContext,
    effects: &ServiceEffects,
    p: &Person,
    need_y3: f64,
    spells: &mut Vec<SynthSpell>,
) -> Option<(Service, TruthSums)> {
    let a = ctx.a;
    let need_of = |day: i32| -> f64 {
        let y = ((a - 1 - day) / 365).clamp(0, 3) as usize;
        if y == 3 { need_y3 } else { p.need_y[y] }
    };
    let e = refer(svc, spells, a, p.age, p.groups.len(), p.active_end)?;
    rows.append(
        &p.row.id,
        e.service.code(),
        e.start,
        e.end.filter(|d| *d < a),
    );
    let y0 = spells.clone();
    let rr = effects.rate_ratio(e.service);
    let until = e.end.map_or(a, |d| (d + 1).min(a)).min(p.active_end);
    // The service acts from the day after its start: on the start day the person is
    // often still in (or just out of) the very admission that led to the referral,
    // which no service can avert. The follow-up year starts then too, as the run's
    // does (its index day).
    let from = e.start + 1;
    apply_effect(svc, spells, ctx, rr, from, until, &need_of);
    let (f, t) = (from.max(p.row.start), (from + 365).min(p.active_end));
    Some((e.service, TruthSums::of(&y0, spells, f, t, a)))
}

/// The draws of the services model these data had before enrolment followed
/// admissions (from the main stream), kept so that everyone else's data is as it was.
pub(super) fn retired_draws(rng: &mut ChaCha8Rng, p: &Person, a: i32) {
    let (from, to) = p.active(a - EVENT_HISTORY);
    if to > from {
        let span = (to - from) as f64 / 365.0;
        if rng.random_bool((0.003 * (1.2 * p.need).exp() * span).min(0.6)) {
            let _ = (rng.random_range(from..to), rng.random_range(7..43));
        }
        if rng.random_bool((0.002 * (p.need).exp() * span).min(0.4)) {
            let _ = rng.random_range(from..to);
            if rng.random_bool(0.3) {
                let _ = rng.random_range(30..300);
            }
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

table_rows!(ServiceRows, contract::SERVICES, {
    id: StringBuilder,
    code: StringBuilder,
    start: Date32Builder,
    end: Date32Builder,
});

impl ServiceRows {
    pub(super) fn append(&mut self, id: &str, code: &str, start: i32, end: Option<i32>) {
        self.id.append_value(id);
        self.code.append_value(code);
        self.start.append_value(start);
        self.end.append_option(end);
    }
}

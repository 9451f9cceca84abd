//! The truth about the services: what each did to the emergency admissions and bed
//! days of the people enrolled, from both potential outcomes of each. Written beside
//! the data for checking the service evaluation; never read by `run`.

use super::SynthOptions;
use super::services::Service;
use super::spells::SynthSpell;

/// One enrolled person's follow-up year, under both potential outcomes.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TruthSums {
    days: f64,
    admissions: [f64; 2],
    bed_days: [f64; 2],
}

impl TruthSums {
    /// Emergency admissions and their bed days admitted in `[from, to)`, without the
    /// service (`untreated`) and with it (`treated`); bed days as the run counts them
    /// (a spell open at A runs to A).
    pub(super) fn of(
        untreated: &[SynthSpell],
        treated: &[SynthSpell],
        from: i32,
        to: i32,
        a: i32,
    ) -> Self {
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
pub(super) struct Truth {
    enrolled: [u64; 2],
    sums: [TruthSums; 2],
}

impl Truth {
    pub(super) fn add(&mut self, s: Service, x: &TruthSums) {
        let k = s as usize;
        self.enrolled[k] += 1;
        self.sums[k].days += x.days;
        for j in 0..2 {
            self.sums[k].admissions[j] += x.admissions[j];
            self.sums[k].bed_days[j] += x.bed_days[j];
        }
    }

    pub(super) fn merge(&mut self, o: &Truth) {
        for k in 0..2 {
            self.enrolled[k] += o.enrolled[k];
            self.sums[k].days += o.sums[k].days;
            for j in 0..2 {
                self.sums[k].admissions[j] += o.sums[k].admissions[j];
                self.sums[k].bed_days[j] += o.sums[k].bed_days[j];
            }
        }
    }

    pub(super) fn to_json(&self, opts: &SynthOptions) -> serde_json::Value {
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

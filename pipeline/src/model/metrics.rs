//! `metrics.json`: the fitted model's metrics on the validation split (overall and by
//! subgroup, `riskstrat_models::metrics::Evaluation` each), or, for a run that scored
//! with a saved model, a note saying so and the saved model's temporal validation on
//! the newest complete outcome year, with the drift rule that says when to refit.

use crate::error::Result;
use riskstrat_models::metrics::Evaluation;
use serde::Serialize;
use std::collections::BTreeMap;

/// What a run says about its model's performance.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Metrics {
    Fitted(Box<FitMetrics>),
    ScoreOnly(ScoreOnly),
}

#[derive(Debug, Clone, Serialize)]
pub struct FitMetrics {
    /// T0 = A - 365, as a date.
    pub t0: String,
    pub outcome: String,
    pub training: Counts,
    pub validation: Validation,
    /// By kind (`sex`, `age_band`, `imd_quintile`), then by group.
    pub subgroups: BTreeMap<String, BTreeMap<String, Validation>>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Counts {
    pub n: usize,
    pub events: usize,
}

/// Every metric of one set of rows, or why they could not be computed (say, a
/// subgroup with no event).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Validation {
    Evaluated(Evaluation),
    Failed {
        n: usize,
        events: usize,
        error: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct ScoreOnly {
    pub score_only: bool,
    pub model: String,
    pub note: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_validation: Option<TemporalValidation>,
}

/// The calibration slopes a model may drift to before it should be refitted.
pub const SLOPE_RANGE: std::ops::RangeInclusive<f64> = 0.8..=1.2;
/// How far the AUC may fall below the fitted model's before it should be refitted.
pub const AUC_DROP: f64 = 0.03;

/// A saved model on the newest complete outcome year (`[T0, A)`).
#[derive(Debug, Clone, Serialize)]
pub struct TemporalValidation {
    /// T0 = A - 365, as a date.
    pub t0: String,
    pub outcome: String,
    /// On the contract's validation split: people no fit trains on.
    pub validation: Validation,
    /// The validation AUC of the run that fitted the model, if known.
    pub fitted_auc: Option<f64>,
    /// Whether the model should be refitted, and why (empty when not).
    pub refit: bool,
    pub refit_reasons: Vec<String>,
}

impl TemporalValidation {
    /// With the drift rule applied: refit when the calibration slope leaves
    /// [`SLOPE_RANGE`] or the AUC falls more than [`AUC_DROP`] below the fitted
    /// model's. Metrics that could not be computed (no events) flag nothing.
    pub fn new(t0: chrono::NaiveDate, validation: Validation, fitted_auc: Option<f64>) -> Self {
        let mut reasons = Vec::new();
        if let Validation::Evaluated(e) = &validation {
            let slope = e.calibration_slope;
            if slope.is_finite() && !SLOPE_RANGE.contains(&slope) {
                reasons.push(format!(
                    "calibration slope {slope:.2} is outside {:.1}-{:.1}",
                    SLOPE_RANGE.start(),
                    SLOPE_RANGE.end()
                ));
            }
            if let Some(fitted) = fitted_auc.filter(|_| e.auc.is_finite()) {
                // With a hair of tolerance: 0.80 - 0.77 is 0.030000000000000027.
                if fitted - e.auc > AUC_DROP + 1e-12 {
                    reasons.push(format!(
                        "AUC {:.3} is {:.3} below the fitted model's {fitted:.3}",
                        e.auc,
                        fitted - e.auc
                    ));
                }
            }
        }
        Self {
            t0: t0.to_string(),
            outcome: "emergency_admission_next_12m over [T0, A)".into(),
            validation,
            fitted_auc,
            refit: !reasons.is_empty(),
            refit_reasons: reasons,
        }
    }
}

impl Validation {
    /// Every metric of outcomes `y` against risks `p`, or why not.
    pub fn of(y: &[f64], p: &[f64]) -> Self {
        Self::at(y, p, &riskstrat_models::metrics::TOP_SHARES)
    }

    /// The same, with sensitivity, specificity, PPV and NPV when the highest `shares`
    /// are flagged (the job's tiers' cut points).
    pub fn at(y: &[f64], p: &[f64], shares: &[f64]) -> Self {
        match riskstrat_models::metrics::evaluate_at(y, p, shares) {
            Ok(e) => Validation::Evaluated(e),
            Err(e) => Validation::Failed {
                n: y.len(),
                events: y.iter().sum::<f64>() as usize,
                error: e.to_string(),
            },
        }
    }
}

impl Metrics {
    /// The note of a run that scored with the saved model at `path`, with its
    /// temporal validation.
    pub fn score_only(path: &std::path::Path, temporal: Option<TemporalValidation>) -> Self {
        Metrics::ScoreOnly(ScoreOnly {
            score_only: true,
            model: path.display().to_string(),
            note: "scored with a saved model; its validation metrics are in the run that fitted it"
                .into(),
            temporal_validation: temporal,
        })
    }

    /// A score-only run's temporal validation.
    pub fn temporal(&self) -> Option<&TemporalValidation> {
        match self {
            Metrics::ScoreOnly(s) => s.temporal_validation.as_ref(),
            Metrics::Fitted(_) => None,
        }
    }

    /// The metrics on the whole validation split, if the model was fitted and they
    /// could be computed.
    pub fn validation(&self) -> Option<&Evaluation> {
        match self {
            Metrics::Fitted(f) => match &f.validation {
                Validation::Evaluated(e) => Some(e),
                Validation::Failed { .. } => None,
            },
            Metrics::ScoreOnly(_) => None,
        }
    }

    /// The validation AUC for the manifest (a JSON number: none if not finite).
    pub fn validation_auc(&self) -> Option<f64> {
        self.validation().map(|e| e.auc).filter(|a| a.is_finite())
    }

    /// `metrics.json`: pretty JSON with every object's keys in sorted order (through
    /// `serde_json::Value`, whose maps sort), non-finite numbers as null.
    pub fn to_json(&self) -> Result<Vec<u8>> {
        Ok(serde_json::to_vec_pretty(&serde_json::to_value(self)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskstrat_models::metrics::evaluate;

    /// The drift rule, case by case: the slope's bounds are inside, the AUC may fall
    /// by 0.03 exactly, and what could not be computed flags nothing.
    #[test]
    fn drift_rule_flags_a_slope_outside_0_8_to_1_2_or_an_auc_drop_over_0_03() {
        let y: Vec<f64> = (0..200).map(|i| f64::from(i % 4 == 0)).collect();
        let p: Vec<f64> = (0..200)
            .map(|i| 0.1 + 0.1 * f64::from(i % 4 == 0) + (i % 11) as f64 / 20.0)
            .collect();
        let Validation::Evaluated(base) = Validation::of(&y, &p) else {
            panic!("evaluates")
        };
        let t0 = chrono::NaiveDate::from_ymd_opt(2025, 4, 1).unwrap();
        let with = |slope: f64, auc: f64| {
            let mut e = base.clone();
            e.calibration_slope = slope;
            e.auc = auc;
            Validation::Evaluated(e)
        };
        for (slope, auc, fitted, reasons) in [
            (1.0, 0.80, Some(0.80), vec![]),
            (0.8, 0.80, Some(0.83), vec![]),
            (1.2, 0.77, Some(0.80), vec![]),
            (0.79, 0.80, Some(0.80), vec!["calibration slope"]),
            (1.21, 0.80, None, vec!["calibration slope"]),
            (1.0, 0.769, Some(0.80), vec!["AUC"]),
            (0.5, 0.70, Some(0.80), vec!["calibration slope", "AUC"]),
            (f64::NAN, f64::NAN, Some(0.80), vec![]),
        ] {
            let t = TemporalValidation::new(t0, with(slope, auc), fitted);
            let got: Vec<&str> = t
                .refit_reasons
                .iter()
                .map(|r| {
                    if r.starts_with("AUC") {
                        "AUC"
                    } else {
                        "calibration slope"
                    }
                })
                .collect();
            assert_eq!(got, reasons, "slope {slope}, auc {auc}, fitted {fitted:?}");
            assert_eq!(t.refit, !reasons.is_empty());
        }
        let failed = Validation::of(&[0.0, 0.0], &[0.1, 0.2]);
        assert!(matches!(failed, Validation::Failed { .. }));
        assert!(!TemporalValidation::new(t0, failed, Some(0.9)).refit);
    }

    /// metrics.json is byte for byte what the untyped `json!` of earlier versions wrote.
    #[test]
    fn metrics_json_is_unchanged() {
        let y: Vec<f64> = (0..40).map(|i| f64::from(i % 3 == 0)).collect();
        let p: Vec<f64> = (0..40).map(|i| (i % 7) as f64 / 10.0 + 0.05).collect();
        let e = evaluate(&y, &p).unwrap();
        let failed = riskstrat_models::metrics::auc_delong(&[0.0], &[0.5]).unwrap_err();
        let typed = Metrics::Fitted(Box::new(FitMetrics {
            t0: "2025-04-01".into(),
            outcome: "emergency_admission_next_12m over [T0, A)".into(),
            training: Counts { n: 90, events: 9 },
            validation: Validation::Evaluated(e.clone()),
            subgroups: [
                ("sex", vec![("F", Validation::Evaluated(e.clone()))]),
                (
                    "age_band",
                    vec![(
                        "0-17",
                        Validation::Failed {
                            n: 1,
                            events: 0,
                            error: failed.to_string(),
                        },
                    )],
                ),
            ]
            .into_iter()
            .map(|(k, g)| {
                let g = g.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
                (k.to_string(), g)
            })
            .collect(),
        }));
        let mut sex = serde_json::Map::new();
        sex.insert("F".into(), serde_json::to_value(&e).unwrap());
        let mut subgroups = serde_json::Map::new();
        subgroups.insert("sex".into(), serde_json::Value::Object(sex));
        subgroups.insert(
            "age_band".into(),
            serde_json::json!({"0-17": {"n": 1, "events": 0, "error": failed.to_string()}}),
        );
        let untyped = serde_json::json!({
            "t0": "2025-04-01",
            "outcome": "emergency_admission_next_12m over [T0, A)",
            "training": {"n": 90, "events": 9},
            "validation": serde_json::to_value(&e).unwrap(),
            "subgroups": subgroups,
        });
        assert_eq!(
            String::from_utf8(typed.to_json().unwrap()).unwrap(),
            String::from_utf8(serde_json::to_vec_pretty(&untyped).unwrap()).unwrap()
        );
        assert_eq!(typed.validation_auc(), Some(e.auc));

        let path = std::path::Path::new("runs/a/model.json");
        let note = serde_json::json!({
            "score_only": true,
            "model": "runs/a/model.json",
            "note": "scored with a saved model; its validation metrics are in the run that fitted it",
        });
        let score_only = Metrics::score_only(path, None);
        assert_eq!(
            score_only.to_json().unwrap(),
            serde_json::to_vec_pretty(&note).unwrap()
        );
        assert_eq!(score_only.validation_auc(), None);
    }
}

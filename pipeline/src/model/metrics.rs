//! `metrics.json`: the fitted model's metrics on the validation split (overall and by
//! subgroup, `riskstrat_models::metrics::Evaluation` each), or, for a run that scored
//! with a saved model, a note saying so.

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
}

impl Metrics {
    /// The note of a run that scored with the saved model at `path`.
    pub fn score_only(path: &std::path::Path) -> Self {
        Metrics::ScoreOnly(ScoreOnly {
            score_only: true,
            model: path.display().to_string(),
            note: "scored with a saved model; its validation metrics are in the run that fitted it"
                .into(),
        })
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
        let score_only = Metrics::score_only(path);
        assert_eq!(
            score_only.to_json().unwrap(),
            serde_json::to_vec_pretty(&note).unwrap()
        );
        assert_eq!(score_only.validation_auc(), None);
    }
}

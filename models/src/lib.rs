//! riskstrat-models: statistics on plain columns and matrices, with no DataFusion.
//! Logistic regression and its inference, evaluation metrics, risk tiers, outcome
//! evaluation (matching, difference in differences). Checked against independent
//! references (statsmodels, scikit-learn): see `tests/`.

pub mod balancing;
pub mod index_matching;
pub mod linalg;
pub mod logistic;
pub mod metrics;
pub mod service_evaluation;
pub mod tiers;

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum ModelError {
    EmptyTrainingSet,
    ConstantFeature(String),
    PerfectSeparation(String),
    Singular(String),
    Invalid(String),
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelError::EmptyTrainingSet => f.write_str(
                "the training set is empty: no one in the population at T0 has a known outcome",
            ),
            ModelError::ConstantFeature(n) => write!(
                f,
                "feature {n} takes one value for everyone in the training set, so its coefficient cannot be estimated; remove it from the model's features"
            ),
            ModelError::PerfectSeparation(s) => write!(f, "perfect separation: {s}"),
            ModelError::Singular(s) => f.write_str(s),
            ModelError::Invalid(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ModelError {}

pub type Result<T> = std::result::Result<T, ModelError>;

//! The model's design terms, named after the features they read. Most are a feature
//! as a number; two recode one (`sex_female`, `imd_decile` with nulls as 5). The
//! contract's default model is `DEFAULT_TERMS`.

use crate::features::registry::{FEATURES, Kind};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{Expr, cast, coalesce, ident, lit, when};

/// The contract's default terms, defined with the job's settings.
pub use crate::job::DEFAULT_TERMS;

/// The Float64 expression for a term over the features table, or None if the name
/// is neither a recoded term nor a numeric feature column in `columns`.
pub fn expr(name: &str, columns: &[(String, DataType)]) -> Option<Expr> {
    match name {
        "sex_female" => Some(
            when(ident("sex").eq(lit("F")), lit(1.0))
                .otherwise(lit(0.0))
                .ok()?,
        ),
        "imd_decile" => Some(coalesce(vec![
            cast(ident("imd_decile"), DataType::Float64),
            lit(5.0),
        ])),
        _ => {
            let numeric = FEATURES
                .iter()
                .any(|f| f.name == name && f.kind != Kind::Attribute)
                || columns.iter().any(|(c, t)| c == name && t.is_numeric());
            numeric.then(|| cast(ident(name), DataType::Float64))
        }
    }
}

/// What each recoded term means, for model.json and the docs.
pub fn describe(name: &str) -> String {
    match name {
        "sex_female" => "1 when sex is F, else 0".into(),
        "imd_decile" => "IMD decile, 5 where unknown".into(),
        other => format!("{other} as a number"),
    }
}

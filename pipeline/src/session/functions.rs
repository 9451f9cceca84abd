//! The session's functions (UDFs): pseudonym shape, age bands, code-list lookups, and
//! the cell keys of commissioner views.

use super::reference::{PrefixLookup, age_band};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use std::sync::Arc;

/// A UDF of one Utf8 argument returning `returns`: `f` maps the argument's values to
/// the result's array.
pub fn udf_over_strings(
    name: &str,
    returns: DataType,
    f: impl Fn(&StringArray) -> ArrayRef + Send + Sync + 'static,
) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        returns,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let s = arrays[0]
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("declared over Utf8");
            Ok(ColumnarValue::Array(f(s)))
        }),
    )
}

/// `name(code)` as a UDF: the category of the code in `lookup`, or NULL.
pub fn prefix_lookup_udf(lookup: PrefixLookup, name: &str) -> ScalarUDF {
    udf_over_strings(name, DataType::Utf8, move |s| {
        let out: StringArray = s
            .iter()
            .map(|v| v.and_then(|c| lookup.category(c)))
            .collect();
        Arc::new(out) as ArrayRef
    })
}

/// `is_pseudo_id(s)`: 32 lowercase hex characters, as the contract defines a pseudonym.
/// A UDF rather than a regex: it runs on every event row.
pub(super) fn is_pseudo_id_udf() -> ScalarUDF {
    udf_over_strings("is_pseudo_id", DataType::Boolean, |s| {
        let out: BooleanArray = s.iter().map(|v| v.map(is_pseudo_id)).collect();
        Arc::new(out) as ArrayRef
    })
}

/// `cell_record_key(pseudo_id)` and `cell_magnitude_key(pseudo_id)`: each person's
/// record keys for the cell key method, keyed by the deployment's secret. Registered
/// only in the private session that builds commissioner views, never in a run's.
pub fn cell_key_udfs(secret: &crate::governance::pseudonym::Key) -> Vec<ScalarUDF> {
    let make = |name: &str, second: bool| {
        let secret = secret.clone();
        create_udf(
            name,
            vec![DataType::Utf8],
            DataType::Int64,
            Volatility::Immutable,
            Arc::new(move |args: &[ColumnarValue]| {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let ids = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
                let ids = ids
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .expect("cast to Utf8");
                let out: datafusion::arrow::array::Int64Array = ids
                    .iter()
                    .map(|id| {
                        id.map(|id| {
                            let (k, m) = crate::governance::cell_key::record_keys(&secret, id);
                            if second { m } else { k }
                        })
                    })
                    .collect();
                Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
            }),
        )
    };
    vec![
        make("cell_record_key", false),
        make("cell_magnitude_key", true),
    ]
}

/// `age_band(age)`: [`age_band`] as a UDF, for views.
pub(super) fn age_band_udf() -> ScalarUDF {
    create_udf(
        "age_band",
        vec![DataType::Int64],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let a = datafusion::arrow::compute::cast(&arrays[0], &DataType::Int64)?;
            let a = a
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .expect("cast to Int64");
            let out: StringArray = a.iter().map(|v| v.map(age_band)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

pub fn is_pseudo_id(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_id_shape() {
        assert!(is_pseudo_id("0123456789abcdef0123456789abcdef"));
        assert!(!is_pseudo_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!is_pseudo_id("0123456789abcdef0123456789abcde"));
        assert!(!is_pseudo_id("0123456789abcdef0123456789abcdeg"));
    }
}

//! The session's functions (UDFs): pseudonym shape, age bands, code-list lookups, and
//! the cell keys of commissioner views.

use super::reference::{PrefixLookup, age_band};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, StringArray, StringViewArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use std::sync::Arc;

/// A UDF of one string argument returning `returns`: `f` maps the argument's values
/// to the result's array. Declared over Utf8View, the type tables are read as, so
/// that the strings are not copied to be tested (a Utf8 argument is cast to views).
pub fn udf_over_strings(
    name: &str,
    returns: DataType,
    f: impl Fn(&StringViewArray) -> ArrayRef + Send + Sync + 'static,
) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8View],
        returns,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            // A no-op for the views the planner passes; a direct call may pass Utf8.
            let views = datafusion::arrow::compute::cast(&arrays[0], &DataType::Utf8View)?;
            let s = views
                .as_any()
                .downcast_ref::<StringViewArray>()
                .expect("cast to Utf8View");
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

/// `name(s)`: whether `s` is one of `set`. A filter on a set of people that
/// DataFusion can push below joins to a table's scan (an IN list of hundreds of
/// thousands of literals is planned and evaluated far more slowly).
pub fn member_of_udf(name: &str, set: std::collections::HashSet<String>) -> ScalarUDF {
    udf_over_strings(name, DataType::Boolean, move |s| {
        let out: BooleanArray = s.iter().map(|v| v.map(|v| set.contains(v))).collect();
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

    /// Over a Utf8 column (cast to Utf8View by DataFusion) and a Utf8View one, with a
    /// null: NULL in, NULL out, as `IN` would give.
    #[tokio::test]
    async fn member_of_tests_each_value_against_the_set() {
        use datafusion::prelude::{SessionContext, col};
        let set = ["b", "c"].map(String::from).into_iter().collect();
        let udf = member_of_udf("in_set", set);
        let ctx = SessionContext::new();
        let values = StringArray::from(vec![Some("a"), Some("b"), None, Some("c")]);
        let views = StringViewArray::from_iter(values.iter());
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![
            ("text", Arc::new(values) as ArrayRef),
            ("view", Arc::new(views) as ArrayRef),
        ])
        .unwrap();
        let df = ctx.read_batch(batch).unwrap().select(vec![
            udf.call(vec![col("text")]).alias("text"),
            udf.call(vec![col("view")]).alias("view"),
        ]);
        let out = df.unwrap().collect().await.unwrap();
        for c in 0..2 {
            let got = out[0]
                .column(c)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .iter()
                .collect::<Vec<_>>();
            assert_eq!(got, vec![Some(false), Some(true), None, Some(true)]);
        }
    }
}

//! The session's functions (UDFs): pseudonym shape, age bands, code-list lookups, and
//! the cell keys of commissioner views.

use super::reference::{PrefixLookup, age_band};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, StringArray, StringViewArray, StringViewBuilder,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::Date32Type;
use datafusion::common::{DataFusionError, HashSet, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionImplementation, ScalarUDF, Signature, SimpleScalarUDF, Volatility,
    create_udf,
};
use std::sync::Arc;

/// The argument of a [`udf_over_strings`]: a Utf8 column (how tables are read) or a
/// Utf8View one (how some plans pass strings), taken as it comes so that no string is
/// copied or cast to be tested.
#[derive(Clone, Copy)]
pub enum Strings<'a> {
    Utf8(&'a StringArray),
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    pub fn len(self) -> usize {
        match self {
            Strings::Utf8(a) => a.len(),
            Strings::View(a) => a.len(),
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The `i`th value, or None where it is null.
    pub fn get(self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }

    pub fn iter(self) -> impl Iterator<Item = Option<&'a str>> {
        (0..self.len()).map(move |i| self.get(i))
    }
}

/// A UDF of one string argument (Utf8 or Utf8View) returning `returns`: `f` maps the
/// argument's values to the result's array.
pub fn udf_over_strings(
    name: &str,
    returns: DataType,
    f: impl Fn(Strings<'_>) -> ArrayRef + Send + Sync + 'static,
) -> ScalarUDF {
    let signature = Signature::uniform(
        1,
        vec![DataType::Utf8, DataType::Utf8View],
        Volatility::Immutable,
    );
    let fun: ScalarFunctionImplementation = Arc::new(move |args: &[ColumnarValue]| {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let a = arrays[0].as_any();
        let s = match (a.downcast_ref(), a.downcast_ref()) {
            (Some(utf8), _) => Strings::Utf8(utf8),
            (None, Some(views)) => Strings::View(views),
            (None, None) => {
                return Err(DataFusionError::Internal(format!(
                    "a string function was given {}",
                    arrays[0].data_type()
                )));
            }
        };
        Ok(ColumnarValue::Array(f(s)))
    });
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        name, signature, returns, fun,
    ))
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

/// `name(code)`: the bit `1 << i` of the code's category, the `i`th of
/// [`PrefixLookup::categories`], or 0 when it has none (or is NULL). OR-ed over a
/// person's codes (`bit_or`) and counted (`bit_count`), it gives the number of distinct
/// categories in the aggregate that already groups per person, instead of a GROUP BY
/// per person and category (two more hash aggregates over every substance of every
/// person; 1.1 GB spilled at 10,000,000 people under a 7 GiB limit).
pub fn prefix_bit_udf(lookup: PrefixLookup, name: &str) -> crate::error::Result<ScalarUDF> {
    let categories = lookup.categories();
    if categories.len() > 63 {
        return Err(crate::error::Error::failed(format!(
            "{name}: {} categories do not fit the 63 bits of a BIGINT",
            categories.len()
        )));
    }
    let bits: std::collections::HashMap<String, i64> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), 1i64 << i))
        .collect();
    Ok(udf_over_strings(name, DataType::Int64, move |s| {
        let out: datafusion::arrow::array::Int64Array = s
            .iter()
            .map(|v| Some(v.and_then(|c| lookup.category(c)).map_or(0, |c| bits[c])))
            .collect();
        Arc::new(out) as ArrayRef
    }))
}

/// `bit_count(n)`: the number of bits set in a BIGINT (with `prefix_bit_udf`'s bits,
/// the number of distinct categories).
pub(super) fn bit_count_udf() -> ScalarUDF {
    create_udf(
        "bit_count",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let a = arrays[0].as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            let out: datafusion::arrow::array::Int64Array =
                a.unary(|n: i64| i64::from(n.count_ones()));
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

/// `name(s)`: whether `s` is one of `set`. A filter on a set of people that
/// DataFusion can push below joins to a table's scan (an IN list of hundreds of
/// thousands of literals is planned and evaluated far more slowly).
pub fn member_of_udf(name: &str, set: HashSet<String>) -> ScalarUDF {
    // Pseudonyms are 32 bytes: kept inline, so a lookup reads the table's slot rather
    // than following a pointer to each candidate string (measured: a third of the
    // filter's time at 1,000,000 people).
    let (fixed, other): (HashSet<[u8; 32]>, HashSet<String>) = {
        let (mut fixed, mut other) = (HashSet::new(), HashSet::new());
        for v in set {
            match <[u8; 32]>::try_from(v.as_bytes()) {
                Ok(k) => fixed.insert(k),
                Err(_) => other.insert(v),
            };
        }
        (fixed, other)
    };
    udf_over_strings(name, DataType::Boolean, move |s| {
        let contains = |v: &str| match <&[u8; 32]>::try_from(v.as_bytes()) {
            Ok(k) => fixed.contains(k),
            Err(_) => other.contains(v),
        };
        let out: BooleanArray = s.iter().map(|v| v.map(contains)).collect();
        Arc::new(out) as ArrayRef
    })
}

/// `chemical_substance(bnf_code)`: a BNF code's chemical substance, its first nine
/// characters, as `substr(bnf_code, 1, 9)` gives them, but as Utf8View: a value of at
/// most 12 bytes lives in its view, so the prescriptions' aggregate by substance gets
/// its keys without a copy of every row's string into a new buffer (issue 16).
pub(super) fn chemical_substance_udf() -> ScalarUDF {
    udf_over_strings("chemical_substance", DataType::Utf8View, |s| {
        let mut out = StringViewBuilder::with_capacity(s.len());
        for v in s.iter() {
            match v {
                Some(v) => out.append_value(first_chars(v, 9)),
                None => out.append_null(),
            }
        }
        Arc::new(out.finish()) as ArrayRef
    })
}

/// The first `n` characters of `s` (all of it when shorter).
fn first_chars(s: &str, n: usize) -> &str {
    if s.len() <= n {
        s
    } else if s.as_bytes()[..n].is_ascii() {
        &s[..n]
    } else {
        s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
    }
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

/// `feature_date(day, dates, days)`: the date `d` of `dates` whose window
/// `[d - days, d)` holds `day`, or NULL when none does. A feature file gives each event
/// row its date with it (`feature_date(issue_date, $feature_dates, 365)`) instead of a
/// range join to `feature_dates`, which DataFusion runs as a nested loop join copying
/// every event row: 3.0 s of the prescriptions' 10.6 s of compute at 1,000,000 people.
/// A day has at most one date, so the windows of `dates` must not overlap (refused:
/// a 24-month window at dates a year apart needs the join).
pub(super) fn feature_date_udf() -> ScalarUDF {
    let fun: ScalarFunctionImplementation = Arc::new(|args: &[ColumnarValue]| {
        let [
            day,
            ColumnarValue::Scalar(dates),
            ColumnarValue::Scalar(days),
        ] = args
        else {
            return Err(DataFusionError::Execution(
                "feature_date(day, dates, days): the dates and the window's days must be constants, as in feature_date(issue_date, $feature_dates, 365)".into(),
            ));
        };
        let windows = feature_windows(dates, days)?;
        let date_of = |x: i32| {
            windows
                .iter()
                .find(|&&(start, end)| x >= start && x < end)
                .map(|&(_, end)| end)
        };
        Ok(match day {
            ColumnarValue::Scalar(v) => {
                let v = v.cast_to(&DataType::Date32)?;
                let ScalarValue::Date32(v) = v else {
                    unreachable!("cast to Date32")
                };
                ColumnarValue::Scalar(ScalarValue::Date32(v.and_then(date_of)))
            }
            ColumnarValue::Array(a) => {
                let a = datafusion::arrow::compute::cast(a, &DataType::Date32)?;
                let a = a.as_primitive::<Date32Type>();
                ColumnarValue::Array(Arc::new(a.unary_opt::<_, Date32Type>(date_of)) as ArrayRef)
            }
        })
    });
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "feature_date",
        Signature::any(3, Volatility::Immutable),
        DataType::Date32,
        fun,
    ))
}

/// The windows `[d - days, d)` of `feature_date`'s dates, as Date32 days, checked not
/// to overlap.
fn feature_windows(
    dates: &ScalarValue,
    days: &ScalarValue,
) -> datafusion::common::Result<Vec<(i32, i32)>> {
    let wrong = |what: String| {
        DataFusionError::Execution(format!(
            "feature_date(day, dates, days): {what}, as in feature_date(issue_date, $feature_dates, 365)"
        ))
    };
    let days = match days.cast_to(&DataType::Int32) {
        Ok(ScalarValue::Int32(Some(n))) if n > 0 => n,
        _ => {
            return Err(wrong(format!(
                "the window must be a positive number of days, not {days}"
            )));
        }
    };
    let ScalarValue::List(list) = dates else {
        return Err(wrong(format!(
            "the dates must be a list of dates, not {}",
            dates.data_type()
        )));
    };
    let values =
        datafusion::arrow::compute::cast(list.values(), &DataType::Date32).map_err(|_| {
            wrong(format!(
                "the dates must be a list of dates, not {}",
                dates.data_type()
            ))
        })?;
    let mut ends: Vec<i32> = values
        .as_primitive::<Date32Type>()
        .iter()
        .flatten()
        .collect();
    ends.sort_unstable();
    let day = |d: i32| chrono::DateTime::UNIX_EPOCH.date_naive() + chrono::Days::new(d as u64);
    ends.dedup();
    if let Some(w) = ends.windows(2).find(|w| w[1] - w[0] < days) {
        return Err(wrong(format!(
            "the {days}-day windows of {} and {} overlap, so a day can fall in both; join the table feature_dates instead",
            day(w[0]),
            day(w[1])
        )));
    }
    Ok(ends.into_iter().map(|end| (end - days, end)).collect())
}

/// How many reasons a score gives.
pub const REASONS: usize = 3;

/// The score's reason columns, in order: `reason_1` (a term's name),
/// `reason_1_contribution`, ...
pub fn reason_fields() -> Vec<datafusion::arrow::datatypes::Field> {
    use datafusion::arrow::datatypes::Field;
    (1..=REASONS)
        .flat_map(|r| {
            [
                Field::new(format!("reason_{r}"), DataType::Utf8, true),
                Field::new(format!("reason_{r}_contribution"), DataType::Float64, true),
            ]
        })
        .collect()
}

/// `score_reasons(t0, t1, ..., c0, c1, ...)`: of a person's contributions `c` to their
/// risk (the terms' names `t`, constant strings), the [`REASONS`] largest (ties to the
/// earlier term) that are positive, as a struct of [`reason_fields`]: each the
/// term's name and its contribution, NULL where there is no such reason; all NULL
/// wherever a contribution is. One pass over each row's terms for all the reasons: the
/// six UDF calls it replaced (a name and an amount per reason, each ranking the terms
/// again) took 3.8 s of compute at 10,000,000 people, and `CASE` expressions comparing
/// every pair of terms before them 1.5 s at 1,000,000.
pub fn reasons_udf() -> ScalarUDF {
    let fields = reason_fields();
    let returns = DataType::Struct(fields.clone().into());
    let fun: ScalarFunctionImplementation = Arc::new(move |args: &[ColumnarValue]| {
        let (names, args) = term_names(args)?;
        let terms: Vec<ArrayRef> = ColumnarValue::values_to_arrays(args)?
            .iter()
            .map(|a| datafusion::arrow::compute::cast(a, &DataType::Float64))
            .collect::<std::result::Result<_, _>>()?;
        let rows = terms.first().map_or(1, |a| a.len());
        let terms: Vec<&datafusion::arrow::array::Float64Array> =
            terms.iter().map(|a| a.as_primitive()).collect();
        let mut term: Vec<datafusion::arrow::array::StringBuilder> =
            (0..REASONS).map(|_| Default::default()).collect();
        let mut amount: Vec<datafusion::arrow::array::Float64Builder> =
            (0..REASONS).map(|_| Default::default()).collect();
        let mut values = vec![0.0; terms.len()];
        // `ranked` marks taken terms in a u64: more terms than that give no reasons.
        let rankable = terms.len() <= 64;
        for row in 0..rows {
            let complete = terms.iter().zip(values.iter_mut()).all(|(t, v)| {
                *v = t.value(row);
                t.is_valid(row)
            });
            let top = if complete && rankable {
                ranked(&values)
            } else {
                [None; REASONS]
            };
            for (r, chosen) in top.into_iter().enumerate() {
                term[r].append_option(chosen.map(|(k, _)| names[k]));
                amount[r].append_option(chosen.map(|(_, c)| c));
            }
        }
        let columns: Vec<ArrayRef> = term
            .iter_mut()
            .zip(amount.iter_mut())
            .flat_map(|(t, a)| [Arc::new(t.finish()) as ArrayRef, Arc::new(a.finish())])
            .collect();
        let out =
            datafusion::arrow::array::StructArray::try_new(fields.clone().into(), columns, None)?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    ScalarUDF::from(SimpleScalarUDF::new_with_signature(
        "score_reasons",
        Signature::variadic_any(Volatility::Immutable),
        returns,
        fun,
    ))
}

/// `score_reasons`' arguments: the terms' names (constant strings), then as many
/// contributions.
fn term_names(args: &[ColumnarValue]) -> datafusion::common::Result<(Vec<&str>, &[ColumnarValue])> {
    let wrong = || {
        DataFusionError::Execution(
            "score_reasons: give each term's name (a constant string) and then as many contributions"
                .into(),
        )
    };
    if args.len() % 2 != 0 {
        return Err(wrong());
    }
    let (names, contributions) = args.split_at(args.len() / 2);
    let names = names
        .iter()
        .map(|n| match n {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(t))
                | ScalarValue::Utf8View(Some(t))
                | ScalarValue::LargeUtf8(Some(t)),
            ) => Ok(t.as_str()),
            _ => Err(wrong()),
        })
        .collect::<datafusion::common::Result<_>>()?;
    Ok((names, contributions))
}

/// The [`REASONS`] largest of `values` in IEEE total order (as Arrow compares floats;
/// NaN above every number), ties to the earlier term, each with its index where it is
/// positive (a NaN or non-positive value ranks, but is no reason).
fn ranked(values: &[f64]) -> [Option<(usize, f64)>; REASONS] {
    let mut taken = 0u64;
    let mut out = [None; REASONS];
    for slot in out.iter_mut() {
        let Some(k) = (0..values.len())
            .filter(|j| taken & (1 << j) == 0)
            .reduce(|a, b| {
                if values[b].total_cmp(&values[a]).is_gt() {
                    b
                } else {
                    a
                }
            })
        else {
            break;
        };
        taken |= 1 << k;
        let c = values[k];
        *slot = (c > 0.0 && !c.is_nan()).then_some((k, c));
    }
    out
}

pub use crate::governance::pseudonym::is_pseudo_id;

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

    /// `chemical_substance(code)` is `substr(code, 1, 9)` as Utf8View, counting
    /// characters, not bytes: over ASCII codes, short ones, NULL, codes whose first
    /// nine characters take more bytes than a view holds inline, and random ones.
    #[tokio::test]
    async fn chemical_substance_is_substr_of_nine_characters_as_a_view() {
        use datafusion::prelude::{SessionContext, col, lit};
        let mut codes = vec![
            Some("0601023A0AAAAAA".to_string()),
            Some("0601023A0".to_string()),
            Some("06010".to_string()),
            Some("".to_string()),
            None,
            Some("é601023A0AAAAAA".to_string()),
            Some("ééééééééééé".to_string()),
            Some("0601023Aé".to_string()),
        ];
        // And 2,000 codes of 0 to 19 characters of one to four bytes each.
        let alphabet = ['0', '9', 'A', 'Z', 'é', '中', '😀', ' '];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..2000 {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state
            };
            let len = next() % 20;
            let code = (0..len).map(|_| alphabet[(next() % 8) as usize]).collect();
            codes.push(Some(code));
        }
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
            "code",
            Arc::new(StringArray::from(codes)) as ArrayRef,
        )])
        .unwrap();
        let ctx = SessionContext::new();
        let substr = datafusion::functions::unicode::substr();
        let out = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![
                chemical_substance_udf()
                    .call(vec![col("code")])
                    .alias("ours"),
                substr
                    .call(vec![col("code"), lit(1), lit(9)])
                    .alias("substr"),
            ])
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(out[0].column(0).data_type(), &DataType::Utf8View);
        let ours: Vec<Option<&str>> = out[0].column(0).as_string_view().iter().collect();
        let theirs: Vec<Option<&str>> = out[0].column(1).as_string::<i32>().iter().collect();
        assert_eq!(ours, theirs);
        assert_eq!(ours[0], Some("0601023A0"));
        assert_eq!(ours[6], Some("ééééééééé"));
        assert_eq!(ours[4], None);
    }

    /// `ltc_group_bit` gives codes of one group one bit and codes of another group
    /// another, 0 outside every group and for NULL; `bit_count` of their OR counts the
    /// distinct groups, as `count(DISTINCT ltc_group(code))` does.
    #[tokio::test]
    async fn ltc_group_bits_count_the_distinct_groups() {
        use datafusion::prelude::{SessionContext, col};
        let lookup = PrefixLookup::ltc_groups().unwrap();
        let codes = vec![
            Some("0601023A0AAAAAA"), // diabetes
            Some("0601012V0BBAEAD"), // diabetes again
            Some("0301011R0AAAPAP"), // respiratory
            Some("0205051R0AAAJAJ"), // cardiovascular
            Some("9999999X0AAAAAA"), // no group
            None,
        ];
        let groups: Vec<Option<&str>> = codes
            .iter()
            .map(|c| c.and_then(|c| lookup.category(c)))
            .collect();
        assert_eq!(
            groups,
            vec![
                Some("diabetes"),
                Some("diabetes"),
                Some("respiratory"),
                Some("cardiovascular"),
                None,
                None
            ]
        );
        let udf = prefix_bit_udf(lookup, "ltc_group_bit").unwrap();
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
            "code",
            Arc::new(StringArray::from(codes)) as ArrayRef,
        )])
        .unwrap();
        let ctx = SessionContext::new();
        let bits = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![udf.call(vec![col("code")]).alias("bit")])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let bits: Vec<i64> = bits[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(bits[0], bits[1]);
        assert_eq!(bits[4..], [0, 0]);
        for b in &bits[..4] {
            assert_eq!(b.count_ones(), 1);
        }
        let or = bits.iter().fold(0, |a, b| a | b);
        let count = bit_count_udf()
            .invoke_with_args(datafusion::logical_expr::ScalarFunctionArgs {
                args: vec![ColumnarValue::Scalar(ScalarValue::Int64(Some(or)))],
                arg_fields: vec![Arc::new(datafusion::arrow::datatypes::Field::new(
                    "n",
                    DataType::Int64,
                    true,
                ))],
                number_rows: 1,
                return_field: Arc::new(datafusion::arrow::datatypes::Field::new(
                    "c",
                    DataType::Int64,
                    true,
                )),
                config_options: Arc::new(Default::default()),
            })
            .unwrap();
        let ColumnarValue::Array(count) = count else {
            panic!("an array")
        };
        assert_eq!(
            count
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .value(0),
            3
        );
    }

    /// The reasons' ranking: largest first, ties to the earlier term, only positive
    /// contributions (not NaN, which sorts above every number), NULL where any is.
    #[tokio::test]
    async fn reasons_rank_the_positive_contributions_ties_to_the_earlier_term() {
        use datafusion::arrow::array::Float64Array;
        use datafusion::prelude::{SessionContext, col, lit};
        let rows = |v: [Option<f64>; 4]| v;
        let table = [
            rows([Some(0.5), Some(2.0), Some(0.5), Some(-1.0)]),
            rows([Some(f64::NAN), Some(0.1), Some(0.0), Some(0.3)]),
            rows([Some(1.0), None, Some(2.0), Some(3.0)]),
        ];
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter((0..4).map(|k| {
            let column: Float64Array = table.iter().map(|r| r[k]).collect();
            (format!("c{k}"), Arc::new(column) as ArrayRef)
        }))
        .unwrap();
        let udf = reasons_udf();
        let mut args: Vec<_> = ["t0", "t1", "t2", "t3"].map(lit).into();
        args.extend((0..4).map(|k| col(format!("c{k}"))));
        let all = udf.call(args);
        let select: Vec<_> = reason_fields()
            .iter()
            .map(|f| {
                datafusion::functions::core::expr_fn::get_field(all.clone(), f.name().as_str())
                    .alias(f.name())
            })
            .collect();
        let out = SessionContext::new()
            .read_batch(batch)
            .unwrap()
            .select(select)
            .unwrap()
            .collect()
            .await
            .unwrap();
        let b = &out[0];
        let idx = |r: usize| -> Vec<Option<i64>> {
            b.column(2 * r)
                .as_string::<i32>()
                .iter()
                .map(|t| t.map(|t| t[1..].parse().unwrap()))
                .collect()
        };
        let amt = |r: usize| -> Vec<Option<f64>> {
            b.column(2 * r + 1)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>()
                .iter()
                .collect()
        };
        // Row 1: 2.0 (term 1), then the tie 0.5 and 0.5 in term order, then -1.0 (not
        // a reason). Row 2: NaN ranks first but is no reason; 0.3, 0.1, then 0.0 (not
        // positive). Row 3: a NULL contribution: no reasons.
        assert_eq!(idx(0), vec![Some(1), None, None]);
        assert_eq!(idx(1), vec![Some(0), Some(3), None]);
        assert_eq!(idx(2), vec![Some(2), Some(1), None]);
        assert_eq!(amt(0), vec![Some(2.0), None, None]);
        assert_eq!(amt(1), vec![Some(0.5), Some(0.3), None]);
        assert_eq!(amt(2), vec![Some(0.5), Some(0.1), None]);
    }

    /// `feature_date(day, dates, days)` over two dates a year apart: each day gets the
    /// date whose window `[d - days, d)` holds it (both ends checked), else NULL; a
    /// NULL day stays NULL; windows that overlap and a non-constant list are refused.
    #[tokio::test]
    async fn feature_date_gives_each_day_the_date_whose_window_holds_it() {
        use datafusion::arrow::array::Date32Array;
        use datafusion::prelude::{SessionContext, col, lit};
        let d = |s: &str| crate::sql::date32(s.parse().unwrap());
        let dates = ScalarValue::List(ScalarValue::new_list_nullable(
            &[
                ScalarValue::Date32(Some(d("2026-04-01"))),
                ScalarValue::Date32(Some(d("2025-04-01"))),
            ],
            &DataType::Date32,
        ));
        let days = [
            "2026-04-01", // A itself: outside [A - 365, A)
            "2026-03-31", // A's window, last day
            "2025-04-01", // A's window, first day (and T0 itself)
            "2025-03-31", // T0's window, last day
            "2024-04-01", // T0's window, first day
            "2024-03-31", // before both
        ];
        let mut values: Vec<Option<i32>> = days.iter().map(|s| Some(d(s))).collect();
        values.push(None);
        let batch = datafusion::arrow::array::RecordBatch::try_from_iter(vec![(
            "day",
            Arc::new(Date32Array::from(values)) as ArrayRef,
        )])
        .unwrap();
        let ctx = SessionContext::new();
        let udf = feature_date_udf();
        let out = ctx
            .read_batch(batch.clone())
            .unwrap()
            .select(vec![udf.call(vec![
                col("day"),
                lit(dates.clone()),
                lit(365i64),
            ])])
            .unwrap()
            .collect()
            .await
            .unwrap();
        let got: Vec<Option<i32>> = out[0]
            .column(0)
            .as_primitive::<Date32Type>()
            .iter()
            .collect();
        let (a, t0) = (Some(d("2026-04-01")), Some(d("2025-04-01")));
        assert_eq!(got, vec![None, a, a, t0, t0, None, None]);

        // 730-day windows of dates a year apart overlap: refused, naming both.
        let overlap = ctx
            .read_batch(batch.clone())
            .unwrap()
            .select(vec![udf.call(vec![col("day"), lit(dates), lit(730i64)])])
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            overlap.contains("2025-04-01 and 2026-04-01 overlap"),
            "{overlap}"
        );
        // The dates given per row rather than once: refused, saying how to call it.
        let per_row = ctx
            .read_batch(batch)
            .unwrap()
            .select(vec![udf.call(vec![col("day"), col("day"), lit(365i64)])])
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(per_row.contains("must be constants"), "{per_row}");
    }

    /// Over a Utf8 column and a Utf8View one, with short values and pseudonym-length
    /// ones (kept apart in the set), and a null: NULL in, NULL out, as `IN` would give.
    #[tokio::test]
    async fn member_of_tests_each_value_against_the_set() {
        use datafusion::prelude::{SessionContext, col};
        let (p, q) = ("0123456789abcdef".repeat(2), "fedcba9876543210".repeat(2));
        let set = ["b".to_string(), "c".to_string(), p.clone()]
            .into_iter()
            .collect();
        let udf = member_of_udf("in_set", set);
        let ctx = SessionContext::new();
        let values = StringArray::from(vec![
            Some("a"),
            Some("b"),
            None,
            Some("c"),
            Some(p.as_str()),
            Some(q.as_str()),
            Some(&p[..31]),
        ]);
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
            let expected = [false, true, false, true, true, false, false].map(Some);
            let mut expected = expected.to_vec();
            expected[2] = None;
            assert_eq!(got, expected);
        }
    }
}

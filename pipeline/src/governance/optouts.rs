//! THE opt-out rule. Read this file to know how objections are honoured.
//!
//! A patient with any row in `optouts`, of any type, recorded on any date, is removed
//! from every person-level table before anything else sees it: row validation,
//! quarantine, features, models, cohorts and aggregates all read only what `apply`
//! returns. Raw person tables exist only as `RawPersonTable`, whose data nothing but
//! `apply` can reach, and `ingest::register_inputs` (the only code that creates
//! them) registers no table it has not passed through here. The opt-out list itself
//! is never registered in a session.
//!
//! Identifiers are matched after trimming (any white space, as a line ending or tab
//! left by a CSV step) and lower-casing, and a value whose hexadecimal digits number
//! exactly 32 by those digits alone (a byte-order mark, a zero-width space, quotes or
//! hyphens around or inside a pseudo_id), so that a malformed copy of an opted-out
//! pseudo_id cannot slip through into quarantine. An opt-out row that is not then a
//! pseudo_id could match no one: `OptOuts::check` refuses the list (an objection
//! riskstrat cannot read is not silently dropped).

use super::pseudonym::is_pseudo_id;
use crate::error::Result;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{DataFrame, Expr, col, ident};
use std::sync::Arc;

/// The name of [`normalise_udf`].
pub const NORMALISED: &str = "normalised_pseudo_id";

/// `normalised_pseudo_id(s)`: `s` without leading or trailing white space (Unicode's,
/// as Rust's `trim`: spaces, tabs, line endings, no-break spaces), lower-cased; or,
/// when `s` holds exactly 32 hexadecimal digits among other characters, those digits
/// lower-cased (regression: an objector's id with a byte-order mark, a zero-width
/// space, quotes or a hyphen matched no opt-out and went to quarantine with its
/// data): the form in which pseudo_ids are matched against opt-outs. A column whose values are
/// all lower-case ASCII letters and digits (as every well-formed pseudo_id is) is that
/// form already and is returned as it is, not copied (issue 16).
pub fn normalise_udf() -> ScalarUDF {
    create_udf(
        NORMALISED,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            Ok(ColumnarValue::Array(normalise(&arrays[0])?))
        }),
    )
}

fn normalise(a: &ArrayRef) -> datafusion::common::Result<ArrayRef> {
    // The signature has DataFusion cast other text types to Utf8; never panic if not.
    let a = &match a.data_type() {
        DataType::Utf8 => a.clone(),
        _ => datafusion::arrow::compute::cast(a, &DataType::Utf8)?,
    };
    // Every byte of the column's values at once (a null's bytes too, which can only
    // send it the slow way), in blocks the compiler vectorises.
    let s = a.as_string::<i32>();
    let offsets = s.value_offsets();
    let bytes = &s.value_data()[offsets[0] as usize..offsets[s.len()] as usize];
    let plain = bytes.chunks(4096).all(|block| {
        block.iter().fold(true, |ok, b| {
            ok & (b.is_ascii_lowercase() | b.is_ascii_digit())
        })
    });
    if plain {
        return Ok(a.clone());
    }
    // DataFusion's btrim trims only spaces unless told which characters: a pseudo_id
    // ending in "\r" missed its opt-out (regression, review of 2026-12-07).
    // A string is made only for a value that needs lower-casing: a batch with one
    // odd row is otherwise copied as it is (a `String` a row cost 2% of the 1M job).
    // Each value is looked at once more only when it is odd itself (most rows of a
    // batch with one odd row are plain).
    let mut out = StringBuilder::with_capacity(s.len(), bytes.len());
    for v in s.iter() {
        match v {
            None => out.append_null(),
            Some(v)
                if v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) =>
            {
                out.append_value(v)
            }
            Some(v) => odd(v, &mut out),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// A value that is not all lower-case letters and digits, normalised into `out`: its
/// hexadecimal digits when they are exactly 32 and it holds anything else; otherwise
/// trimmed, and lower-cased when it needs it.
fn odd(v: &str, out: &mut StringBuilder) {
    let hex = v.bytes().filter(u8::is_ascii_hexdigit).count();
    let t = v.trim();
    if hex == 32 && !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        let digits = t.chars().filter(char::is_ascii_hexdigit);
        out.append_value(digits.map(|c| c.to_ascii_lowercase()).collect::<String>());
    } else if t.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
        out.append_value(t.to_lowercase());
    } else {
        out.append_value(t);
    }
}

/// `usable_optout(s)`: whether a normalised opt-out pseudo_id can match anyone.
pub fn usable_udf() -> ScalarUDF {
    create_udf(
        "usable_optout",
        vec![DataType::Utf8],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let ids = arrays[0].as_string::<i32>();
            let out: BooleanArray = ids
                .iter()
                .map(|v| Some(v.is_some_and(is_pseudo_id)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// `normalised_pseudo_id(e)`.
fn normalised(e: Expr) -> Expr {
    normalise_udf().call(vec![e])
}

/// A person-level input table exactly as read, before opt-outs are applied.
pub struct RawPersonTable(DataFrame);

impl RawPersonTable {
    pub(crate) fn new(df: DataFrame) -> Self {
        Self(df)
    }
}

/// The opt-out list as read, never registered anywhere.
pub struct OptOuts(DataFrame);

impl OptOuts {
    pub(crate) fn new(df: DataFrame) -> Self {
        Self(df)
    }

    /// Refuse a list with a row that can match no one (no pseudo_id, or not one even
    /// when trimmed and lower-cased): that objection would silently not be honoured.
    /// `what` names the input; the message names no identifier.
    pub async fn check(&self, what: &str) -> Result<()> {
        let id = normalised(ident("pseudo_id"));
        let unusable = self
            .0
            .clone()
            .filter(!usable_udf().call(vec![id]))?
            .count()
            .await?;
        if unusable > 0 {
            return Err(crate::bad_input!(
                "{what}: {unusable} opt-out rows have a pseudo_id that is missing or not 32 hexadecimal characters (after trimming white space and lower-casing), so they match no patient and would not be honoured; fix the extract and run again"
            ));
        }
        Ok(())
    }

    /// Distinct normalised pseudo_ids with an opt-out.
    fn keys(&self) -> Result<DataFrame> {
        Ok(self
            .0
            .clone()
            .select(vec![normalised(ident("pseudo_id")).alias("__opted_out")])?
            .filter(col("__opted_out").is_not_null())?
            .distinct()?)
    }
}

/// Remove every row whose pseudo_id has an opt-out. Rows with a null pseudo_id
/// cannot be matched to anyone, so they stay (validation quarantines them).
pub fn apply(table: RawPersonTable, optouts: &OptOuts) -> Result<DataFrame> {
    let key = normalised(ident("pseudo_id"));
    Ok(table.0.join_on(
        optouts.keys()?,
        JoinType::LeftAnti,
        [key.eq(col("__opted_out"))],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    /// The same values as `lower(btrim(s))` for every kind of input, and the input
    /// itself (not a copy) when it is all lower-case letters and digits.
    #[test]
    fn normalised_is_lower_btrim_and_keeps_a_plain_column() {
        let plain: ArrayRef = Arc::new(StringArray::from(vec![
            Some("0123456789abcdef0123456789abcdef"),
            None,
            Some("abc"),
            Some(""),
        ]));
        let same = normalise(&plain).unwrap();
        assert_eq!(
            same.to_data().buffers()[1].as_ptr(),
            plain.to_data().buffers()[1].as_ptr()
        );
        assert_eq!(&same, &plain);
        let mixed: ArrayRef = Arc::new(StringArray::from(vec![
            Some("0123456789ABCDEF0123456789abcdef"),
            Some("  0123456789abcdef0123456789abcdef  "),
            Some("\t0123456789abcdef\n"),
            Some("0123456789ABCDEF0123456789abcdef\r"),
            Some("\u{a0}0123456789abcdef0123456789abcdef"),
            Some("ÄBC"),
            Some("abc"),
            None,
        ]));
        let want: Vec<Option<String>> = (0..mixed.len())
            .map(|i| {
                let m = mixed.as_string::<i32>();
                let v = m.value(i);
                let hex: String = v.chars().filter(char::is_ascii_hexdigit).collect();
                m.is_valid(i).then(|| match hex.len() {
                    32 => hex.to_lowercase(),
                    _ => v.trim().to_lowercase(),
                })
            })
            .collect();
        let got = normalise(&mixed).unwrap();
        let got: Vec<Option<String>> = got
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[0].as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(got[1].as_deref(), Some("0123456789abcdef0123456789abcdef"));
        // Regression: a Windows line ending or a no-break space kept it from matching.
        assert_eq!(got[3].as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert_eq!(got[4].as_deref(), Some("0123456789abcdef0123456789abcdef"));
        // Regression: a byte-order mark, a zero-width space, quotes or a hyphen.
        let id = "0123456789abcdef0123456789abcdef";
        let odd: ArrayRef = Arc::new(StringArray::from(vec![
            format!("\u{feff}{id}"),
            format!("{id}\u{200b}"),
            format!("\"{id}\""),
            format!("{}-{}", &id[..8], &id[8..]),
            format!("{id}0"),
        ]));
        let got = normalise(&odd).unwrap();
        let got = got.as_string::<i32>();
        for i in 0..4 {
            assert_eq!(got.value(i), id, "{i}");
        }
        assert_eq!(got.value(4), format!("{id}0"), "33 digits are no pseudo_id");
        // Another text type is read as Utf8, not a panic.
        let view: ArrayRef = Arc::new(datafusion::arrow::array::StringViewArray::from(vec![Some(
            " ABC ",
        )]));
        assert_eq!(normalise(&view).unwrap().as_string::<i32>().value(0), "abc");
    }
}

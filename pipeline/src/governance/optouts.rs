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
//! Identifiers are matched after trimming and lower-casing, so that a malformed copy
//! of an opted-out pseudo_id (upper case, padded) cannot slip through into quarantine.

use crate::error::Result;
use datafusion::common::JoinType;
use datafusion::functions::expr_fn::{btrim, lower};
use datafusion::prelude::{DataFrame, col, ident};

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

    /// Distinct normalised pseudo_ids with an opt-out.
    fn keys(&self) -> Result<DataFrame> {
        Ok(self
            .0
            .clone()
            .select(vec![
                lower(btrim(vec![ident("pseudo_id")])).alias("__opted_out"),
            ])?
            .filter(col("__opted_out").is_not_null())?
            .distinct()?)
    }
}

/// Remove every row whose pseudo_id has an opt-out. Rows with a null pseudo_id
/// cannot be matched to anyone, so they stay (validation quarantines them).
pub fn apply(table: RawPersonTable, optouts: &OptOuts) -> Result<DataFrame> {
    let key = lower(btrim(vec![ident("pseudo_id")]));
    Ok(table.0.join_on(
        optouts.keys()?,
        JoinType::LeftAnti,
        [key.eq(col("__opted_out"))],
    )?)
}

//! `riskstrat validate`: the data-quality report alone. Schema as found, row rules,
//! linkage of each event table to patients, date ranges and null rates, all after
//! opt-outs (an opted-out person is not counted anywhere, here included).

use crate::error::Result;
use crate::ingest::contract::{self, ColType};
use crate::ingest::{Inputs, validate::TableCounts};
use datafusion::arrow::array::{Array, Date32Array, Int64Array};
use datafusion::functions_aggregate::count::count_all;
use datafusion::functions_aggregate::expr_fn::{count, max, min};
use datafusion::prelude::{Expr, SessionContext, ident};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct QualityReport {
    pub as_of: String,
    pub tables: Vec<TableQuality>,
}

#[derive(Debug, Serialize)]
pub struct TableQuality {
    pub table: String,
    pub location: String,
    pub files: usize,
    pub rows_read: u64,
    pub rows_excluded_optout: u64,
    pub rows_valid: u64,
    pub quarantined_by_reason: BTreeMap<String, u64>,
    /// Share of rows whose pseudo_id is a valid patient (event tables only).
    pub linkage_rate: Option<f64>,
    pub found_types: BTreeMap<String, String>,
    pub null_rates: BTreeMap<String, f64>,
    pub date_ranges: BTreeMap<String, (Option<String>, Option<String>)>,
}

/// The report over a session in which `inputs` are registered (checked, opted-out,
/// validated), with the validation's `counts` per table.
pub async fn report(
    ctx: &SessionContext,
    inputs: &Inputs,
    counts: &BTreeMap<String, TableCounts>,
    as_of: chrono::NaiveDate,
) -> Result<QualityReport> {
    let mut tables = Vec::new();
    for table in contract::PERSON_TABLES.iter() {
        let (Some(input), Some(counts)) = (inputs.get(table.name), counts.get(table.name)) else {
            continue;
        };
        // One pass: count(*), count(col) per column, min/max per date column.
        let mut aggs: Vec<Expr> = vec![count_all().alias("__rows")];
        for c in table.columns {
            aggs.push(count(ident(c.name)).alias(format!("n_{}", c.name)));
            if c.ty == ColType::Date32 {
                aggs.push(min(ident(c.name)).alias(format!("min_{}", c.name)));
                aggs.push(max(ident(c.name)).alias(format!("max_{}", c.name)));
            }
        }
        let batches = ctx
            .table(crate::ingest::tables::input(table.name))
            .await?
            .aggregate(vec![], aggs)?
            .collect()
            .await?;
        let batch = &batches[0];
        let int = |name: &str| -> i64 {
            batch
                .column_by_name(name)
                .and_then(|a| a.as_any().downcast_ref::<Int64Array>())
                .map(|a| a.value(0))
                .unwrap_or(0)
        };
        let date = |name: &str| -> Option<String> {
            let a = batch
                .column_by_name(name)?
                .as_any()
                .downcast_ref::<Date32Array>()?;
            (!a.is_null(0)).then(|| crate::sql::from_date32(a.value(0)).to_string())
        };
        let rows = int("__rows");
        let mut null_rates = BTreeMap::new();
        let mut date_ranges = BTreeMap::new();
        for c in table.columns {
            let rate = if rows > 0 {
                1.0 - int(&format!("n_{}", c.name)) as f64 / rows as f64
            } else {
                0.0
            };
            null_rates.insert(c.name.to_string(), rate);
            if c.ty == ColType::Date32 {
                date_ranges.insert(
                    c.name.to_string(),
                    (
                        date(&format!("min_{}", c.name)),
                        date(&format!("max_{}", c.name)),
                    ),
                );
            }
        }
        let linkage_rate = (table.name != crate::ingest::contract::PATIENTS.name
            && counts.rows_after_optouts > 0)
            .then(|| {
                let unlinked: u64 = ["null_pseudo_id", "malformed_pseudo_id", "unknown_pseudo_id"]
                    .iter()
                    .map(|r| counts.quarantined.get(*r).copied().unwrap_or(0))
                    .sum();
                1.0 - unlinked as f64 / counts.rows_after_optouts as f64
            });
        tables.push(TableQuality {
            table: table.name.to_string(),
            location: input.location.clone(),
            files: input.files.len(),
            rows_read: input.rows,
            rows_excluded_optout: input.rows.saturating_sub(counts.rows_after_optouts),
            rows_valid: counts.valid,
            quarantined_by_reason: counts.quarantined.clone(),
            linkage_rate,
            found_types: input.found_types.clone(),
            null_rates,
            date_ranges,
        });
    }
    Ok(QualityReport {
        as_of: as_of.to_string(),
        tables,
    })
}

impl QualityReport {
    pub fn to_text(&self) -> String {
        let mut s = format!("Data-quality report (population date {})\n", self.as_of);
        for t in &self.tables {
            s.push_str(&format!(
                "\n== {} ({}, {} file{})\n",
                t.table,
                t.location,
                t.files,
                if t.files == 1 { "" } else { "s" }
            ));
            s.push_str(&format!(
                "  rows read {}, excluded for opt-outs {}, valid {}, quarantined {}\n",
                t.rows_read,
                t.rows_excluded_optout,
                t.rows_valid,
                t.quarantined_by_reason.values().sum::<u64>()
            ));
            for (reason, n) in &t.quarantined_by_reason {
                s.push_str(&format!("    {reason}: {n}\n"));
            }
            if let Some(l) = t.linkage_rate {
                s.push_str(&format!("  linkage to patients: {:.2}%\n", 100.0 * l));
            }
            s.push_str("  columns (type found, null rate):\n");
            for (c, ty) in &t.found_types {
                s.push_str(&format!(
                    "    {c:<22} {ty:<28} {:>6.2}%\n",
                    100.0 * t.null_rates.get(c).copied().unwrap_or(0.0)
                ));
            }
            for (c, (lo, hi)) in &t.date_ranges {
                s.push_str(&format!(
                    "  {c}: {} .. {}\n",
                    lo.as_deref().unwrap_or("-"),
                    hi.as_deref().unwrap_or("-")
                ));
            }
        }
        s
    }
}

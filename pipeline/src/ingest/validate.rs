//! Row validation. Each table's rules are a SQL file (`sql/validate/<table>.sql`) that
//! gives every row the first rule it breaks as `reason`, or NULL. Valid rows are
//! registered under the contract's table name; the rest as `quarantine_<table>`.
//! Opt-outs were applied before this runs, so quarantine never holds opted-out rows.

use crate::bad_input;
use crate::error::Result;
use crate::ingest::contract::{PERSON_TABLES, Table};
use crate::sql::{Params, SqlSource};
use datafusion::prelude::{DataFrame, SessionContext, col, ident};
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows of one table after opt-outs, split into valid and quarantined by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableCounts {
    pub rows_after_optouts: u64,
    pub valid: u64,
    pub quarantined: BTreeMap<String, u64>,
}

impl TableCounts {
    pub fn quarantined_total(&self) -> u64 {
        self.quarantined.values().sum()
    }
}

/// Register `<table>`, `quarantine_<table>` for every person table the job has.
pub async fn register_valid(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
) -> Result<Vec<&'static Table>> {
    let mut done = Vec::new();
    for table in PERSON_TABLES {
        if !ctx.table_exist(format!("input_{}", table.name))? {
            continue;
        }
        let text = sql.get(&format!("validate/{}.sql", table.name))?;
        let checked = crate::sql::query(ctx, &text, params).await?;
        let schema = checked.schema().clone();
        for c in table.columns.iter().map(|c| c.name).chain(["reason"]) {
            if schema.field_with_unqualified_name(c).is_err() {
                return Err(bad_input!("{}: must return column '{c}'", text.origin));
            }
        }
        let columns = || {
            table
                .columns
                .iter()
                .map(|c| ident(c.name))
                .collect::<Vec<_>>()
        };
        let mut valid = checked
            .clone()
            .filter(col("reason").is_null())?
            .select(columns())?;
        if table.name == "patients" {
            // Small (one row per person) and read by every other rule and stage.
            valid = valid.cache().await?;
        }
        ctx.register_table(table.name, valid.into_view())?;
        let quarantine = checked.clone().filter(col("reason").is_not_null())?;
        ctx.register_table(format!("quarantine_{}", table.name), quarantine.into_view())?;
        ctx.register_table(format!("checked_{}", table.name), checked.into_view())?;
        done.push(table);
    }
    Ok(done)
}

/// One pass over a table: how many rows survived opt-outs, and why any were quarantined.
pub async fn count(ctx: &SessionContext, table: &str) -> Result<TableCounts> {
    let df: DataFrame = ctx.table(format!("checked_{table}")).await?.aggregate(
        vec![col("reason")],
        vec![datafusion::functions_aggregate::count::count_all().alias("n")],
    )?;
    let mut counts = TableCounts::default();
    for batch in df.collect().await? {
        let reasons = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>();
        let n = batch
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>();
        let (Some(reasons), Some(n)) = (reasons, n) else {
            return Err(crate::error::Error::failed(format!(
                "validation counts for {table} have unexpected types"
            )));
        };
        for i in 0..batch.num_rows() {
            let k = n.value(i) as u64;
            counts.rows_after_optouts += k;
            if reasons.is_null(i) {
                counts.valid += k;
            } else {
                *counts
                    .quarantined
                    .entry(reasons.value(i).to_string())
                    .or_default() += k;
            }
        }
    }
    Ok(counts)
}

use datafusion::arrow::array::Array;

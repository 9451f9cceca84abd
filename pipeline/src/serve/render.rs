//! Answers as text: a table, CSV or JSON. In text, a suppressed value is shown as
//! `[REDACTED]` (the contract's word); in JSON it is null.

use crate::error::Result;
use crate::serve::Answer;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

pub const REDACTED: &str = "[REDACTED]";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Cells as strings, None for null; `redact` says which columns' nulls are suppressions.
fn cells(answer: &Answer) -> Result<Vec<Vec<Option<String>>>> {
    let options = FormatOptions::default();
    let mut rows = Vec::with_capacity(answer.rows);
    for b in &answer.batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| (!c.is_null(r)).then(|| f.value(r).to_string()))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn text(cell: &Option<String>, statistic: bool) -> String {
    match cell {
        Some(v) => v.clone(),
        None if statistic => REDACTED.to_string(),
        None => String::new(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn render(answer: &Answer, format: Format) -> Result<String> {
    let names: Vec<String> = answer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let statistic: Vec<bool> = answer.outputs.iter().map(|o| !o.is_key()).collect();
    let rows = cells(answer)?;
    Ok(match format {
        Format::Json => {
            let values: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| json_row(&names, row, answer))
                .collect();
            serde_json::to_string_pretty(&values)?
        }
        Format::Csv => {
            let mut s = names
                .iter()
                .map(|n| csv_field(n))
                .collect::<Vec<_>>()
                .join(",");
            s.push('\n');
            for row in &rows {
                let line: Vec<String> = row
                    .iter()
                    .zip(&statistic)
                    .map(|(c, st)| csv_field(&text(c, *st)))
                    .collect();
                s.push_str(&line.join(","));
                s.push('\n');
            }
            s
        }
        Format::Table => {
            let texts: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .zip(&statistic)
                        .map(|(c, st)| text(c, *st))
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = (0..names.len())
                .map(|i| {
                    texts
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([names[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("| {} |\n", padded.join(" | "))
            };
            let mut s = line(&names);
            s.push_str(&format!(
                "|{}|\n",
                widths
                    .iter()
                    .map(|w| "-".repeat(w + 2))
                    .collect::<Vec<_>>()
                    .join("|")
            ));
            for r in &texts {
                s.push_str(&line(r));
            }
            s.push_str(&format!("({} rows)\n", answer.rows));
            s
        }
    })
}

/// One row as a JSON object: numbers as numbers, suppressed values as null.
fn json_row(names: &[String], row: &[Option<String>], answer: &Answer) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (i, (name, cell)) in names.iter().zip(row).enumerate() {
        let ty = answer.schema.field(i).data_type();
        let v = match cell {
            None => serde_json::Value::Null,
            Some(s) if ty.is_numeric() => s
                .parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .unwrap_or_else(|_| serde_json::Value::String(s.clone())),
            Some(s) if matches!(ty, datafusion::arrow::datatypes::DataType::Boolean) => {
                serde_json::Value::Bool(s == "true")
            }
            Some(s) => serde_json::Value::String(s.clone()),
        };
        m.insert(name.clone(), v);
    }
    serde_json::Value::Object(m)
}

/// For tests and clients: every batch of an answer, as is.
pub fn batches(answer: &Answer) -> &[RecordBatch] {
    &answer.batches
}

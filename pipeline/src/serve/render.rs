//! Answers as text: a table, CSV or JSON. In text, a value disclosure control
//! withheld is shown as `[REDACTED]` (the contract's word), a statistic that does not
//! exist (an estimate that could not be made) as `n/a`; in JSON both are null.

use crate::error::Result;
use crate::serve::Answer;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

pub const REDACTED: &str = "[REDACTED]";
pub const NOT_AVAILABLE: &str = "n/a";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A cell as text: its value, or why it has none.
enum Cell {
    Value(String),
    Withheld,
    /// Null in a statistic column without disclosure control's doing.
    NotAvailable,
    /// A null key.
    Empty,
}

/// Cells as text, row by row.
fn cells(answer: &Answer) -> Result<Vec<Vec<Cell>>> {
    let statistic: Vec<bool> = answer.outputs.iter().map(|o| !o.is_key()).collect();
    let options = FormatOptions::default();
    let mut rows = Vec::with_capacity(answer.rows);
    for b in &answer.batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            let at = rows.len();
            rows.push(
                b.columns()
                    .iter()
                    .zip(&formatters)
                    .enumerate()
                    .map(|(i, (c, f))| {
                        if !c.is_null(r) {
                            Cell::Value(f.value(r).to_string())
                        } else if answer.withheld.get(i).is_some_and(|w| w.value(at)) {
                            Cell::Withheld
                        } else if statistic[i] {
                            Cell::NotAvailable
                        } else {
                            Cell::Empty
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

fn text(cell: &Cell) -> String {
    match cell {
        Cell::Value(v) => v.clone(),
        Cell::Withheld => REDACTED.to_string(),
        Cell::NotAvailable => NOT_AVAILABLE.to_string(),
        Cell::Empty => String::new(),
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
    let rows = cells(answer)?;
    Ok(match format {
        Format::Json => {
            let values: Vec<JsonRow> = rows
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
                let line: Vec<String> = row.iter().map(|c| csv_field(&text(c))).collect();
                s.push_str(&line.join(","));
                s.push('\n');
            }
            s
        }
        Format::Table => {
            let texts: Vec<Vec<String>> = rows
                .iter()
                .map(|row| row.iter().map(text).collect())
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

/// One row as a JSON object whose keys keep the SELECT's order (serde_json's own map
/// would sort them).
struct JsonRow(Vec<(String, serde_json::Value)>);

impl serde::Serialize for JsonRow {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One row as a JSON object: numbers as numbers, suppressed values as null.
fn json_row(names: &[String], row: &[Cell], answer: &Answer) -> JsonRow {
    let mut m = Vec::with_capacity(names.len());
    for (i, (name, cell)) in names.iter().zip(row).enumerate() {
        let ty = answer.schema.field(i).data_type();
        let v = match cell {
            Cell::Withheld | Cell::NotAvailable | Cell::Empty => serde_json::Value::Null,
            Cell::Value(s) if ty.is_numeric() => s
                .parse::<serde_json::Number>()
                .map(serde_json::Value::Number)
                .unwrap_or_else(|_| serde_json::Value::String(s.clone())),
            Cell::Value(s) if matches!(ty, datafusion::arrow::datatypes::DataType::Boolean) => {
                serde_json::Value::Bool(s == "true")
            }
            Cell::Value(s) => serde_json::Value::String(s.clone()),
        };
        m.push((name.clone(), v));
    }
    JsonRow(m)
}

/// For tests and clients: every batch of an answer, as is.
pub fn batches(answer: &Answer) -> &[RecordBatch] {
    &answer.batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::governance::disclosure_control::Output;
    use datafusion::arrow::array::{BooleanArray, Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Regression: an estimate that could not be made was shown as `[REDACTED]`, as
    /// if disclosure control had hidden it.
    #[test]
    fn only_withheld_cells_are_redacted() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("service_code", DataType::Utf8, true),
            Field::new("did", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("A"), Some("B"), None])),
                Arc::new(Float64Array::from(vec![None, None, Some(1.5)])),
            ],
        )
        .unwrap();
        let answer = Answer {
            schema,
            batches: vec![batch],
            rows: 3,
            outputs: vec![Output::Key { col: 0 }, Output::Statistic { col: 1 }],
            withheld: vec![
                BooleanArray::from(vec![false, false, false]),
                BooleanArray::from(vec![true, false, false]),
            ],
        };
        let csv = render(&answer, Format::Csv).unwrap();
        assert_eq!(csv, "service_code,did\nA,[REDACTED]\nB,n/a\n,1.5\n");
        let table = render(&answer, Format::Table).unwrap();
        assert!(table.contains("| A            | [REDACTED] |"), "{table}");
        assert!(table.contains("| B            | n/a        |"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&render(&answer, Format::Json).unwrap()).unwrap();
        assert_eq!(json[0]["did"], serde_json::Value::Null);
        assert_eq!(json[1]["did"], serde_json::Value::Null);
        assert_eq!(json[2]["did"], 1.5);
    }
}

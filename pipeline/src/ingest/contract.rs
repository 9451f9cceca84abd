//! The pseudonymised input tables of DATA_CONTRACT.md, as data: `contract.txt`,
//! compiled in and read once at first use. This one registry drives schema checks and safe casts, the data-quality report, the synthetic
//! generator's writers and the docs.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::{Arc, LazyLock};

/// A column's contract type. Kept small: each maps to one Arrow type and a set of
/// found types that are cast to it silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    Utf8,
    Int32,
    Float64,
    Date32,
    Utf8List,
}

impl ColType {
    pub fn arrow(self) -> DataType {
        match self {
            ColType::Utf8 => DataType::Utf8,
            ColType::Int32 => DataType::Int32,
            ColType::Float64 => DataType::Float64,
            ColType::Date32 => DataType::Date32,
            ColType::Utf8List => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        }
    }

    /// Whether a column found as `found` may be cast to this type without loss
    /// (the contract's "safe casts").
    pub fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        match self {
            ColType::Utf8 => matches!(found, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            ColType::Int32 => matches!(found, D::Int32 | D::Int64),
            ColType::Float64 => matches!(found, D::Float64),
            ColType::Date32 => matches!(found, D::Date32 | D::Timestamp(_, _)),
            ColType::Utf8List => match found {
                D::List(f) | D::LargeList(f) => ColType::Utf8.accepts(f.data_type()),
                _ => false,
            },
        }
    }

    const ALL: [ColType; 5] = [Utf8, Int32, Float64, Date32, Utf8List];

    /// The contract type whose Arrow type is `ty`, if any.
    pub fn of(ty: &DataType) -> Option<ColType> {
        Self::ALL.into_iter().find(|c| &c.arrow() == ty)
    }

    /// The contract type of this [`name`](Self::name), if any.
    pub fn named(name: &str) -> Option<ColType> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ColType::Utf8 => "Utf8",
            ColType::Int32 => "Int32",
            ColType::Float64 => "Float64",
            ColType::Date32 => "Date32",
            ColType::Utf8List => "List(Utf8)",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColType,
    pub nullable: bool,
    pub doc: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Optional tables may be absent from a job; required ones may not.
    pub required: bool,
    /// The event date that row rules check (dated before 1900 is invalid).
    pub event_date: Option<&'static str>,
}

impl Table {
    pub fn schema(&self) -> SchemaRef {
        schema_of(self.columns)
    }
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

fn col(name: &'static str, ty: ColType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

use ColType::*;

/// The tables as text: their format is explained at the top of the file.
const CONTRACT_FILE: &str = include_str!("contract.txt");

/// `contract.txt` read: each table (its `columns` left empty) with its columns.
static PARSED: LazyLock<Vec<(Table, Vec<Column>)>> = LazyLock::new(|| {
    parse(CONTRACT_FILE)
        .unwrap_or_else(|e| panic!("pipeline/src/ingest/contract.txt cannot be read: {e}"))
});

/// Every input table, patients first.
pub static TABLES: LazyLock<Vec<Table>> = LazyLock::new(|| {
    PARSED
        .iter()
        .map(|(t, columns)| Table { columns, ..*t })
        .collect()
});

/// Person-level tables other than opt-outs, in the order they are validated.
pub static PERSON_TABLES: LazyLock<Vec<Table>> = LazyLock::new(|| tables_but(OPTOUTS.name));

/// The tables an identifiable extract holds (the input of `pseudonymise`). Feedback
/// is not among them: it arrives through `feedback import`.
pub static EXTRACT_TABLES: LazyLock<Vec<Table>> = LazyLock::new(|| tables_but(FEEDBACK.name));

/// The event tables: many rows per person, read by the features over their windows.
/// The run's integer person key: `patients.person`, numbered once per run when the
/// valid patients are cached, and carried by each valid event row (the validation
/// join to `patients` finds it). Feature SQL groups and joins on it instead of the
/// 32-character pseudo_id. It numbers rows of one run only, is never written out, and
/// means nothing outside the run.
pub const PERSON: &str = "person";

pub fn is_event_table(t: &Table) -> bool {
    [APPOINTMENTS.name, PRESCRIPTIONS.name, ADMISSIONS.name].contains(&t.name)
}

pub static PATIENTS: LazyLock<Table> = LazyLock::new(|| named("patients"));
pub static APPOINTMENTS: LazyLock<Table> = LazyLock::new(|| named("appointments"));
pub static PRESCRIPTIONS: LazyLock<Table> = LazyLock::new(|| named("prescriptions"));
pub static ADMISSIONS: LazyLock<Table> = LazyLock::new(|| named("admissions"));
pub static OPTOUTS: LazyLock<Table> = LazyLock::new(|| named("optouts"));
pub static SERVICES: LazyLock<Table> = LazyLock::new(|| named("services"));
/// Care teams' feedback, pseudonymised by `riskstrat feedback import`.
pub static FEEDBACK: LazyLock<Table> = LazyLock::new(|| named("feedback"));

pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

fn named(name: &str) -> Table {
    *table(name).unwrap_or_else(|| panic!("pipeline/src/ingest/contract.txt has no table {name}"))
}

/// Every table but one, in order.
fn tables_but(name: &str) -> Vec<Table> {
    TABLES.iter().filter(|t| t.name != name).copied().collect()
}

/// Read the text of `contract.txt` (format at its top). An error names the line.
fn parse(text: &'static str) -> Result<Vec<(Table, Vec<Column>)>, String> {
    let mut tables: Vec<(Table, Vec<Column>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", i + 1);
        let body = line.trim();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            let table = parse_table(body).map_err(at)?;
            if tables.iter().any(|(t, _)| t.name == table.name) {
                return Err(at(format!("table {} again", table.name)));
            }
            tables.push((table, Vec::new()));
            continue;
        }
        let Some((table, columns)) = tables.last_mut() else {
            return Err(at("a column before the first table line".to_string()));
        };
        let column = parse_column(body).map_err(at)?;
        if columns.iter().any(|c| c.name == column.name) {
            return Err(at(format!(
                "column {} of {} again",
                column.name, table.name
            )));
        }
        columns.push(column);
    }
    for (table, columns) in &tables {
        if columns.is_empty() {
            return Err(format!("table {} has no columns", table.name));
        }
        if let Some(date) = table.event_date {
            match columns.iter().find(|c| c.name == date) {
                Some(c) if c.ty == Date32 => {}
                _ => {
                    return Err(format!(
                        "event_date {date} of {} is not a Date32 column of it",
                        table.name
                    ));
                }
            }
        }
    }
    Ok(tables)
}

/// `table NAME required|optional [event_date COLUMN]`, with no columns yet.
fn parse_table(line: &'static str) -> Result<Table, String> {
    let words: Vec<&'static str> = line.split_whitespace().collect();
    let (name, required, event_date) = match words[..] {
        ["table", name, required] => (name, required, None),
        ["table", name, required, "event_date", date] => (name, required, Some(date)),
        _ => {
            return Err(format!(
                "expected `table NAME required|optional [event_date COLUMN]` or an indented column, found `{line}`"
            ));
        }
    };
    let required = match required {
        "required" => true,
        "optional" => false,
        other => {
            return Err(format!(
                "table {name} is `{other}`: expected required or optional"
            ));
        }
    };
    Ok(Table {
        name,
        columns: &[],
        required,
        event_date,
    })
}

/// `NAME TYPE NULLABLE DOC`, the doc being the rest of the line.
fn parse_column(line: &'static str) -> Result<Column, String> {
    let mut rest = line;
    let mut word = || {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        rest = &r[end..];
        &r[..end]
    };
    let (name, ty, nullable) = (word(), word(), word());
    let ty = ColType::named(ty).ok_or_else(|| {
        format!(
            "column {name} has type `{ty}`: expected Utf8, Int32, Float64, Date32 or List(Utf8)"
        )
    })?;
    let nullable = match nullable {
        "yes" => true,
        "no" => false,
        other => {
            return Err(format!(
                "column {name} has nullable `{other}`: expected yes or no"
            ));
        }
    };
    Ok(col(name, ty, nullable, rest.trim()))
}

/// Identity columns of the identifiable `patients` extract: the identity vault's
/// (`governance::vault`), which they go into and nowhere else.
pub fn identity_columns() -> Vec<Column> {
    crate::governance::vault::IDENTITY_COLUMNS
        .iter()
        .map(|(name, ty, doc)| {
            let ty = ColType::of(ty).expect("identity columns have contract types");
            col(name, ty, true, doc)
        })
        .collect()
}

impl Table {
    /// The columns of this table's identifiable extract: `nhs_number` (Utf8, as the
    /// source system writes it) in place of `pseudo_id`; patients also carry
    /// the [`identity_columns`].
    pub fn identifiable_columns(&self) -> Vec<Column> {
        let mut cols: Vec<Column> = self
            .columns
            .iter()
            .map(|c| match c.name {
                "pseudo_id" => col("nhs_number", Utf8, false, "as written in the source system"),
                _ => *c,
            })
            .collect();
        if self.name == PATIENTS.name {
            cols.extend(identity_columns());
        }
        cols
    }

    pub fn identifiable_schema(&self) -> SchemaRef {
        schema_of(&self.identifiable_columns())
    }
}

fn schema_of(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name, c.ty.arrow(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Where `synth` and `pseudonymise` put each table under their output folder: the
/// big event tables as folders of files, the others as one file.
pub fn table_path(table: &str) -> String {
    match table {
        "appointments" | "prescriptions" | "admissions" => format!("{table}/"),
        _ => format!("{table}.parquet"),
    }
}

/// Admission methods by the NHS Data Dictionary, as the contract groups them.
pub const EMERGENCY_METHODS: &[&str] =
    &["21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28"];
pub const ELECTIVE_METHODS: &[&str] = &["11", "12", "13"];
pub const OTHER_VALID_METHODS: &[&str] = &["31", "32", "81", "82", "83", "98", "99"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_file_reads_as_the_tables_of_data_contract_md() {
        let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            names,
            [
                "patients",
                "appointments",
                "prescriptions",
                "admissions",
                "optouts",
                "services",
                "feedback"
            ]
        );
        let widths: Vec<usize> = TABLES.iter().map(|t| t.columns.len()).collect();
        assert_eq!(widths, [9, 5, 6, 9, 3, 4, 5]);
        let optional: Vec<&str> = TABLES
            .iter()
            .filter(|t| !t.required)
            .map(|t| t.name)
            .collect();
        assert_eq!(optional, ["services", "feedback"]);
        let dates: Vec<Option<&str>> = TABLES.iter().map(|t| t.event_date).collect();
        assert_eq!(
            dates,
            [
                None,
                Some("appointment_date"),
                Some("issue_date"),
                Some("admission_date"),
                None,
                Some("start_date"),
                Some("recorded_date")
            ]
        );
        let person: Vec<&str> = PERSON_TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            person,
            [
                "patients",
                "appointments",
                "prescriptions",
                "admissions",
                "services",
                "feedback"
            ]
        );
        let extract: Vec<&str> = EXTRACT_TABLES.iter().map(|t| t.name).collect();
        assert_eq!(
            extract,
            [
                "patients",
                "appointments",
                "prescriptions",
                "admissions",
                "optouts",
                "services"
            ]
        );
        let secondary = ADMISSIONS.column("secondary_diagnoses").unwrap();
        assert_eq!(
            (secondary.ty, secondary.nullable, secondary.doc),
            (Utf8List, true, "ICD-10, may be empty")
        );
        assert_eq!(
            secondary.ty.arrow(),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let key = PATIENTS.column("pseudo_id").unwrap();
        assert_eq!(
            (key.ty, key.nullable, key.doc),
            (Utf8, false, "unique person key")
        );
        let born = PATIENTS.column("year_of_birth").unwrap();
        assert_eq!((born.ty, born.nullable, born.doc), (Int32, false, ""));
        assert_eq!(
            APPOINTMENTS.column("appt_mode").unwrap().doc,
            "Face-to-Face, Home Visit, Telephone, Video/Online, Unknown"
        );
        let nic = PRESCRIPTIONS.column("nic").unwrap();
        assert_eq!((nic.ty, nic.nullable), (Float64, true));
        assert_eq!(table("feedback").map(|t| t.name), Some(FEEDBACK.name));
        assert!(table("vault").is_none());
    }

    #[test]
    fn a_line_the_parser_cannot_read_is_named() {
        let cases = [
            (
                "    a Utf8 no\n",
                "line 1: a column before the first table line",
            ),
            (
                "tabel t required\n",
                "line 1: expected `table NAME required|optional [event_date COLUMN]` or an indented column, found `tabel t required`",
            ),
            (
                "table t maybe\n",
                "line 1: table t is `maybe`: expected required or optional",
            ),
            (
                "table t required\n    a Text no\n",
                "line 2: column a has type `Text`: expected Utf8, Int32, Float64, Date32 or List(Utf8)",
            ),
            (
                "table t required\n    a Utf8\n",
                "line 2: column a has nullable ``: expected yes or no",
            ),
            (
                "table t required\n    a Utf8 no\n    a Int32 no\n",
                "line 3: column a of t again",
            ),
            (
                "table t required\n    a Utf8 no\ntable t optional\n",
                "line 3: table t again",
            ),
            ("# t\ntable t required\n", "table t has no columns"),
            (
                "table t required event_date a\n    a Utf8 no\n",
                "event_date a of t is not a Date32 column of it",
            ),
            (
                "table t required event_date b\n    a Date32 no\n",
                "event_date b of t is not a Date32 column of it",
            ),
        ];
        for (text, error) in cases {
            assert_eq!(parse(text).unwrap_err(), error, "{text:?}");
        }
        let ok =
            parse("# x\n\ntable t optional event_date d\n    d  Date32  yes  the  day \n").unwrap();
        let (t, columns) = &ok[0];
        assert_eq!((t.name, t.required, t.event_date), ("t", false, Some("d")));
        assert_eq!(
            (
                columns[0].name,
                columns[0].ty,
                columns[0].nullable,
                columns[0].doc
            ),
            ("d", Date32, true, "the  day")
        );
    }
}

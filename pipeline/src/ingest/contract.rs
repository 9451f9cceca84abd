//! The pseudonymised input tables of DATA_CONTRACT.md, as data. This one registry
//! drives schema checks and safe casts, the data-quality report, the synthetic
//! generator's writers and the docs.

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

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

    /// The contract type whose Arrow type is `ty`, if any.
    pub fn of(ty: &DataType) -> Option<ColType> {
        [Utf8, Int32, Float64, Date32, Utf8List]
            .into_iter()
            .find(|c| &c.arrow() == ty)
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

const fn col(name: &'static str, ty: ColType, nullable: bool, doc: &'static str) -> Column {
    Column {
        name,
        ty,
        nullable,
        doc,
    }
}

use ColType::*;

#[rustfmt::skip]
pub const PATIENTS: Table = Table {
    name: "patients", required: true, event_date: None,
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    "unique person key"),
        col("year_of_birth",       Int32,    false,    ""),
        col("sex",                 Utf8,     false,    "F, M or U"),
        col("practice_code",       Utf8,     false,    "ODS code of the registered practice"),
        col("lsoa_code",           Utf8,     true,     "LSOA 2021 code"),
        col("imd_decile",          Int32,    true,     "1 = most deprived .. 10"),
        col("registration_start",  Date32,   false,    ""),
        col("registration_end",    Date32,   true,     "null while registered"),
        col("date_of_death",       Date32,   true,     "null if alive"),
    ],
};

#[rustfmt::skip]
pub const APPOINTMENTS: Table = Table {
    name: "appointments", required: true, event_date: Some("appointment_date"),
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("appointment_date",    Date32,   false,    ""),
        col("hcp_type",            Utf8,     false,    "GP, Other Practice staff, Unknown"),
        col("appt_mode",           Utf8,     false,
            "Face-to-Face, Home Visit, Telephone, Video/Online, Unknown"),
        col("appt_status",         Utf8,     false,    "Attended, DNA, Unknown"),
    ],
};

#[rustfmt::skip]
pub const PRESCRIPTIONS: Table = Table {
    name: "prescriptions", required: true, event_date: Some("issue_date"),
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("issue_date",          Date32,   false,    ""),
        col("bnf_code",            Utf8,     false,    "15-character BNF presentation code"),
        col("items",               Int32,    false,    ""),
        col("quantity",            Float64,  true,     ""),
        col("nic",                 Float64,  true,     "net ingredient cost, pounds"),
    ],
};

#[rustfmt::skip]
pub const ADMISSIONS: Table = Table {
    name: "admissions", required: true, event_date: Some("admission_date"),
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("spell_id",            Utf8,     false,    "unique"),
        col("provider_code",       Utf8,     true,     ""),
        col("admission_date",      Date32,   false,    ""),
        col("discharge_date",      Date32,   true,     "null while in hospital"),
        col("admission_method",    Utf8,     false,    "NHS Data Dictionary code"),
        col("primary_diagnosis",   Utf8,     true,     "ICD-10"),
        col("secondary_diagnoses", Utf8List, true,     "ICD-10, may be empty"),
        col("spell_cost",          Float64,  true,     "tariff cost, pounds"),
    ],
};

#[rustfmt::skip]
pub const OPTOUTS: Table = Table {
    name: "optouts", required: true, event_date: None,
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("optout_type",         Utf8,     true,     "type1, ndoo, local"),
        col("recorded_date",       Date32,   true,     ""),
    ],
};

#[rustfmt::skip]
pub const SERVICES: Table = Table {
    name: "services", required: false, event_date: Some("start_date"),
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("service_code",        Utf8,     false,    "e.g. VW01 virtual ward"),
        col("start_date",          Date32,   false,    ""),
        col("end_date",            Date32,   true,     "may be null"),
    ],
};

/// Care teams' feedback, pseudonymised by `riskstrat feedback import`.
#[rustfmt::skip]
pub const FEEDBACK: Table = Table {
    name: "feedback", required: false, event_date: Some("recorded_date"),
    columns: &[
        //  name                   type      nullable  doc
        col("pseudo_id",           Utf8,     false,    ""),
        col("team",                Utf8,     false,    "care-team id"),
        col("outcome",             Utf8,     false,
            "reviewed, enrolled, declined, not_appropriate, deceased, moved_away"),
        col("service_code",        Utf8,     true,     "for enrolled: the service"),
        col("recorded_date",       Date32,   false,    "the day it was imported"),
    ],
};

/// Every input table, patients first.
pub const TABLES: &[Table] = &[
    PATIENTS,
    APPOINTMENTS,
    PRESCRIPTIONS,
    ADMISSIONS,
    OPTOUTS,
    SERVICES,
    FEEDBACK,
];

/// Person-level tables other than opt-outs, in the order they are validated.
pub const PERSON_TABLES: &[Table] = &[
    PATIENTS,
    APPOINTMENTS,
    PRESCRIPTIONS,
    ADMISSIONS,
    SERVICES,
    FEEDBACK,
];

pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
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

/// The tables an identifiable extract holds (the input of `pseudonymise`). Feedback
/// is not among them: it arrives through `feedback import`.
pub const EXTRACT_TABLES: &[Table] = &[
    PATIENTS,
    APPOINTMENTS,
    PRESCRIPTIONS,
    ADMISSIONS,
    OPTOUTS,
    SERVICES,
];

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

//! The default features of DATA_CONTRACT.md, as one list. It drives the feature
//! table's columns and types, the checks on feature SQL, the `riskstrat features`
//! docs, and (through their names) the model's design matrix.

use datafusion::arrow::datatypes::DataType;
use datafusion::functions::expr_fn::date_part;
use datafusion::prelude::{Expr, cast, coalesce, ident, lit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Copied from the population (patients).
    Population,
    /// Computed by `sql/features/<name>.sql`.
    Sql(&'static str),
    /// Computed from other features here.
    Derived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A count or a sum of counts: Int64, 0 when there are no events.
    Count,
    /// Pounds: Float64, 0.0 when there are no events.
    Money,
    /// Copied as is (may be null).
    Attribute,
}

#[derive(Debug, Clone, Copy)]
pub struct Feature {
    pub name: &'static str,
    pub source: Source,
    pub kind: Kind,
    pub doc: &'static str,
}

impl Feature {
    /// The event tables the feature counts events of (`charlson.sql` reads the
    /// admissions' diagnoses; `total_cost_12m` adds prescriptions' and admissions'
    /// costs).
    pub fn event_tables(&self) -> Vec<&'static str> {
        match (self.name, self.source) {
            (_, Source::Sql("charlson")) => vec!["admissions"],
            (_, Source::Sql(table)) => vec![table],
            ("total_cost_12m", Source::Derived) => vec!["prescriptions", "admissions"],
            (_, Source::Population | Source::Derived) => vec![],
        }
    }
}

const fn f(name: &'static str, source: Source, kind: Kind, doc: &'static str) -> Feature {
    Feature {
        name,
        source,
        kind,
        doc,
    }
}

use Kind::*;
use Source::*;

pub const FEATURES: &[Feature] = &[
    f("age", Derived, Count, "`year(A) - year_of_birth`"),
    f(
        "sex",
        Population,
        Attribute,
        "copied from patients (`F`, `M`, `U`)",
    ),
    f(
        "imd_decile",
        Population,
        Attribute,
        "copied from patients (1 = most deprived; may be null)",
    ),
    f(
        "practice_code",
        Population,
        Attribute,
        "copied from patients",
    ),
    f(
        "lsoa_code",
        Population,
        Attribute,
        "copied from patients (may be null)",
    ),
    f(
        "gp_appts_12m",
        Sql("appointments"),
        Count,
        "appointments in W12, `Attended`, `hcp_type = 'GP'`",
    ),
    f(
        "other_appts_12m",
        Sql("appointments"),
        Count,
        "appointments in W12, `Attended`, `hcp_type = 'Other Practice staff'`",
    ),
    f(
        "home_visits_12m",
        Sql("appointments"),
        Count,
        "appointments in W12, `Attended`, `appt_mode = 'Home Visit'`",
    ),
    f(
        "dna_12m",
        Sql("appointments"),
        Count,
        "appointments in W12 with `appt_status = 'DNA'`",
    ),
    f(
        "rx_items_12m",
        Sql("prescriptions"),
        Count,
        "sum of `items` of prescriptions in W12",
    ),
    f(
        "rx_cost_12m",
        Sql("prescriptions"),
        Money,
        "sum of `nic` of prescriptions in W12 (exact: in whole micropounds)",
    ),
    f(
        "distinct_drugs_12m",
        Sql("prescriptions"),
        Count,
        "distinct `substr(bnf_code, 1, 9)` in W12",
    ),
    f(
        "ltc_groups_12m",
        Sql("prescriptions"),
        Count,
        "distinct groups of `ltc_bnf_groups.csv` matched by BNF prefix in W12",
    ),
    f(
        "emergency_admissions_12m",
        Sql("admissions"),
        Count,
        "spells with an emergency method admitted in W12",
    ),
    f(
        "emergency_bed_days_12m",
        Sql("admissions"),
        Count,
        "over those spells, sum of `coalesce(discharge_date, A) - admission_date`",
    ),
    f(
        "elective_admissions_12m",
        Sql("admissions"),
        Count,
        "spells with an elective method admitted in W12",
    ),
    f(
        "admission_cost_12m",
        Sql("admissions"),
        Money,
        "sum of `spell_cost` of valid spells admitted in W12 (exact: in whole micropounds)",
    ),
    f(
        "total_cost_12m",
        Derived,
        Money,
        "`rx_cost_12m + admission_cost_12m`",
    ),
    f(
        "charlson_score",
        Sql("charlson"),
        Count,
        "Charlson index (Quan 2005 ICD-10, original weights, hierarchy applied) over spells admitted in W24",
    ),
];

impl Feature {
    pub fn data_type(&self) -> Option<DataType> {
        match self.kind {
            Count => Some(DataType::Int64),
            Money => Some(DataType::Float64),
            Attribute => None,
        }
    }

    /// The column expression over the joined population and feature sources, at the
    /// date in their column `as_of`.
    pub fn expr(&self) -> Expr {
        match (self.name, self.source) {
            ("age", _) => cast(
                cast(date_part(lit("year"), ident("as_of")), DataType::Int64)
                    - cast(ident("year_of_birth"), DataType::Int64),
                DataType::Int64,
            ),
            ("total_cost_12m", _) => {
                by_name("rx_cost_12m").expr() + by_name("admission_cost_12m").expr()
            }
            (_, Population) => ident(self.name),
            (_, _) => match self.kind {
                Count => coalesce(vec![cast(ident(self.name), DataType::Int64), lit(0i64)]),
                Money => coalesce(vec![cast(ident(self.name), DataType::Float64), lit(0.0f64)]),
                Attribute => ident(self.name),
            },
        }
    }
}

pub fn by_name(name: &str) -> &'static Feature {
    FEATURES
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no feature {name}"))
}

/// The registry as a Markdown table, for `riskstrat features` and the README.
pub fn markdown() -> String {
    let mut s = String::from("| feature | type | definition |\n|---|---|---|\n");
    for f in FEATURES {
        let ty = match f.kind {
            Count => "Int64",
            Money => "Float64",
            Attribute => "as in patients",
        };
        s.push_str(&format!("| {} | {} | {} |\n", f.name, ty, f.doc));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which extracts a model's terms need in its training year (a run that trains on
    /// a table with no event there is refused, naming it).
    #[test]
    fn each_feature_names_the_event_tables_it_counts() {
        let tables = |name: &str| by_name(name).event_tables();
        assert_eq!(tables("gp_appts_12m"), ["appointments"]);
        assert_eq!(tables("distinct_drugs_12m"), ["prescriptions"]);
        assert_eq!(tables("emergency_admissions_12m"), ["admissions"]);
        assert_eq!(tables("charlson_score"), ["admissions"]);
        assert_eq!(tables("total_cost_12m"), ["prescriptions", "admissions"]);
        assert!(tables("age").is_empty() && tables("imd_decile").is_empty());
        // Every feature of an event table's SQL names a table of the contract.
        for f in FEATURES {
            for t in f.event_tables() {
                assert!(
                    crate::ingest::contract::table(t).is_some(),
                    "{}: {t}",
                    f.name
                );
            }
        }
    }
}

//! The commissioner views: one registry that drives their registration, what
//! disclosure control knows of each column, the catalog metadata clients browse, and
//! the README's table.

use crate::governance::disclosure_control::{Refusal, Role, ViewRoles};
use datafusion::arrow::datatypes::SchemaRef;

#[derive(Debug, Clone, Copy)]
pub struct View {
    pub name: &'static str,
    /// Under `sql/views/`.
    pub file: &'static str,
    /// One row per person (read only through aggregates), or pre-aggregated.
    pub person_level: bool,
    /// Columns people may be grouped and filtered by.
    pub dimensions: &'static [&'static str],
    /// Person-level views: further dimensions, always part of a query's cut (a person
    /// has a row per cohort in `cohort_people`, so its cut is always by cohort too).
    pub always_cut_by: &'static [&'static str],
    /// Pre-aggregated views: the count of the people behind each row.
    pub people: Option<&'static str>,
    /// Pre-aggregated views: what each other column is (hidden ones are never shown).
    pub columns: &'static [(&'static str, Role)],
    /// A run-folder file the view needs; without it the view is absent.
    pub needs: &'static [&'static str],
    /// Pre-aggregated views over the people of the person-level views: withheld in a
    /// run where a cell of their grain holds 1 to 7 people
    /// (`disclosure_control::grain_refusal`).
    pub cut_at_grain: bool,
    pub doc: &'static str,
}

/// The dimensions of a person: categories, and the measures people filter on, banded.
const PERSON_DIMENSIONS: &[&str] = &[
    "practice_code",
    "lsoa_code",
    "imd_decile",
    "imd_quintile",
    "age_band",
    "sex",
    "tier",
    "emergency_admissions_band",
    "polypharmacy_band",
    "ltc_band",
    "gp_appts_band",
];

const fn count(key: &'static str) -> Role {
    Role::Count { key }
}

/// What person-level views share: one row per person, read only through aggregates,
/// by the dimensions of a person. Each view in `VIEWS` sets its own name, file and doc.
const PERSON_LEVEL: View = View {
    name: "",
    file: "",
    person_level: true,
    dimensions: PERSON_DIMENSIONS,
    always_cut_by: &[],
    people: None,
    columns: &[],
    needs: &[],
    cut_at_grain: false,
    doc: "",
};

/// What pre-aggregated views share: nothing but that they are not person-level; each
/// in `VIEWS` sets its dimensions, people count, columns and what it needs.
const PRE_AGGREGATED: View = View {
    name: "",
    file: "",
    person_level: false,
    dimensions: &[],
    always_cut_by: &[],
    people: None,
    columns: &[],
    needs: &[],
    cut_at_grain: false,
    doc: "",
};

pub const VIEWS: &[View] = &[
    View {
        name: "people",
        file: "views/people.sql",
        doc: "one row per person in the population at A, read only through count(*), sum and avg: dimensions practice_code, lsoa_code, imd_decile, imd_quintile, age_band, sex, tier, emergency_admissions_band (0, 1, 2, 3+), polypharmacy_band (0-4, 5-9, 10+ drugs), ltc_band (0, 1, 2, 3+ groups), gp_appts_band (0, 1-4, 5-9, 10+); measures risk, age and every numeric feature",
        ..PERSON_LEVEL
    },
    View {
        name: "cohort_people",
        file: "views/cohort_people.sql",
        always_cut_by: &["cohort"],
        doc: "one row per person and cohort they are in: the dimensions and measures of people plus cohort",
        ..PERSON_LEVEL
    },
    View {
        name: "cohort_summary",
        file: "views/cohort_summary.sql",
        dimensions: &["cohort", "practice_code", "tier"],
        people: Some("people"),
        columns: &[
            ("people", count("__people_key")),
            (
                "mean_risk",
                Role::Mean {
                    sum: "__risk_sum",
                    top: "__risk_top",
                    key: "__risk_key",
                    count: "people",
                },
            ),
            ("__people_key", Role::Hidden),
            ("__risk_sum", Role::Hidden),
            ("__risk_top", Role::Hidden),
            ("__risk_key", Role::Hidden),
        ],
        cut_at_grain: true,
        doc: "people and mean risk by cohort, practice and tier (withheld in a run where any of its cells holds 1 to 7 people)",
        ..PRE_AGGREGATED
    },
    View {
        name: "cohort_changes",
        file: "views/cohort_changes.sql",
        dimensions: &[
            "cohort",
            "change",
            "practice_code",
            "previous_tier",
            "current_tier",
        ],
        people: Some("people"),
        columns: &[
            ("people", count("__people_key")),
            ("__people_key", Role::Hidden),
        ],
        doc: "people who entered, left or stayed in each cohort since the job's previous run, by cohort, change, practice and previous and current tier (rows of fewer than 8 people are left out; empty for a job's first run)",
        ..PRE_AGGREGATED
    },
    View {
        name: "service_outcomes",
        file: "views/service_outcomes.sql",
        dimensions: &["service_code", "outcome"],
        people: Some("treated"),
        columns: &[
            ("enrolled", count("__enrolled_key")),
            ("treated", count("__treated_key")),
            ("controls", count("__controls_key")),
            (
                "match_rate",
                Role::Ratio {
                    num: "treated",
                    den: "enrolled",
                },
            ),
            ("treated_before", Role::Statistic),
            ("treated_after", Role::Statistic),
            ("control_before", Role::Statistic),
            ("control_after", Role::Statistic),
            ("did", Role::Statistic),
            ("did_ci_low", Role::Statistic),
            ("did_ci_high", Role::Statistic),
            ("placebo_did", Role::Statistic),
            ("placebo_ci_low", Role::Statistic),
            ("placebo_ci_high", Role::Statistic),
            ("max_smd_before", Role::Statistic),
            ("max_smd_after", Role::Statistic),
            ("warning_low_match_rate", Role::Statistic),
            ("warning_imbalance", Role::Statistic),
            ("warning_pre_trend", Role::Statistic),
            ("warning_imprecise", Role::Statistic),
            ("__enrolled_key", Role::Hidden),
            ("__treated_key", Role::Hidden),
            ("__controls_key", Role::Hidden),
        ],
        needs: &["service_outcomes.parquet", "service_people.parquet"],
        doc: "per service and outcome (emergency admissions, bed days): rates per 1,000 person-years before and after the start, for the enrolled and matched comparison patients, the match rate, the difference in differences with its 95% interval, the placebo difference in differences on the year before, the largest standardised mean difference of the matching variables before and after matching, and warning flags (low match rate, imbalance, pre-trend, imprecise)",
        ..PRE_AGGREGATED
    },
    View {
        name: "feedback_outcomes",
        file: "views/feedback_outcomes.sql",
        dimensions: &["team", "outcome", "service_code"],
        people: Some("people"),
        columns: &[
            ("people", count("__people_key")),
            ("__people_key", Role::Hidden),
        ],
        needs: &["feedback_people.parquet"],
        doc: "care teams' recorded outcomes up to A: people by team, outcome and service",
        ..PRE_AGGREGATED
    },
];

pub fn view(name: &str) -> Option<&'static View> {
    VIEWS.iter().find(|v| v.name == name)
}

/// The views of one session with their schemas: what disclosure control consults.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub views: Vec<(&'static View, SchemaRef)>,
    /// Views withheld in this run, and why.
    pub withheld: Vec<(&'static str, Refusal)>,
}

impl Catalog {
    /// A catalog of one view.
    pub fn one(view: &'static View, schema: SchemaRef) -> Self {
        Catalog {
            views: vec![(view, schema)],
            withheld: Vec::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&(&'static View, SchemaRef)> {
        self.views.iter().find(|(v, _)| v.name == name)
    }
}

impl View {
    /// What `column` (of a schema holding it) is to disclosure control.
    pub fn role(
        &self,
        column: &str,
        data_type: &datafusion::arrow::datatypes::DataType,
    ) -> Option<Role> {
        if self.dimensions.contains(&column) || self.always_cut_by.contains(&column) {
            return Some(Role::Dimension);
        }
        if column.starts_with("__") {
            return Some(Role::Hidden);
        }
        if self.person_level {
            return data_type.is_numeric().then_some(Role::Measure);
        }
        self.columns
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, r)| *r)
    }
}

impl ViewRoles for Catalog {
    fn person_level(&self, view: &str) -> Option<bool> {
        self.get(view).map(|(v, _)| v.person_level)
    }

    fn role(&self, view: &str, column: &str) -> Option<Role> {
        let (v, schema) = self.get(view)?;
        let field = schema.field_with_name(column).ok()?;
        v.role(column, field.data_type())
    }

    fn people(&self, view: &str) -> Option<&'static str> {
        self.get(view).and_then(|(v, _)| v.people)
    }

    fn always_cut_by(&self, view: &str) -> &'static [&'static str] {
        self.get(view).map(|(v, _)| v.always_cut_by).unwrap_or(&[])
    }

    fn withheld(&self, view: &str) -> Option<Refusal> {
        let found = self.withheld.iter().find(|(v, _)| *v == view);
        found.map(|(_, r)| r.clone())
    }
}

/// The views as a Markdown table, for the README.
pub fn markdown() -> String {
    let mut s = String::from("| view | kind | what |\n|---|---|---|\n");
    for v in VIEWS {
        let kind = if v.person_level {
            "person-level: aggregates only"
        } else {
            "pre-aggregated"
        };
        s.push_str(&format!("| `{}` | {kind} | {} |\n", v.name, v.doc));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_view_table_is_current() {
        assert_eq!(
            crate::readme_section("views")
                .strip_prefix('\n')
                .expect("a new line after the marker"),
            markdown(),
            "regenerate with `riskstrat views`"
        );
    }

    #[test]
    fn every_view_has_its_sql_and_dimensions() {
        for v in VIEWS {
            let sql = crate::sql::builtin(v.file).unwrap_or_else(|| panic!("{}", v.file));
            for d in v.dimensions {
                assert!(
                    sql.contains(d) || v.person_level,
                    "{}: dimension {d} not in its SQL",
                    v.name
                );
            }
            assert_eq!(v.person_level, v.people.is_none(), "{}", v.name);
            for (c, _) in v.columns {
                assert!(sql.contains(c), "{}: column {c} not in its SQL", v.name);
            }
        }
    }
}

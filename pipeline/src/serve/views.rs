//! The commissioner views: one registry that drives their registration, what
//! disclosure control knows of each column, the catalog metadata clients browse, and
//! the README's table.

use crate::governance::disclosure_control::{Role, ViewRoles};
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
    /// Pre-aggregated views: the column holding the number of people in a row.
    pub people: Option<&'static str>,
    /// Pre-aggregated views: other columns that are counts.
    pub counts: &'static [&'static str],
    /// A run-folder file the view needs; without it the view is absent.
    pub needs: Option<&'static str>,
    pub doc: &'static str,
}

const PERSON_DIMENSIONS: &[&str] = &[
    "practice_code",
    "lsoa_code",
    "imd_decile",
    "imd_quintile",
    "age_band",
    "sex",
    "tier",
];

pub const VIEWS: &[View] = &[
    View {
        name: "people",
        file: "views/people.sql",
        person_level: true,
        dimensions: PERSON_DIMENSIONS,
        people: None,
        counts: &[],
        needs: None,
        doc: "one row per person in the population at A: dimensions practice_code, lsoa_code, imd_decile, imd_quintile, age_band, sex, tier; measures risk, age and every numeric feature",
    },
    View {
        name: "cohort_people",
        file: "views/cohort_people.sql",
        person_level: true,
        dimensions: &[
            "cohort",
            "practice_code",
            "lsoa_code",
            "imd_decile",
            "imd_quintile",
            "age_band",
            "sex",
            "tier",
        ],
        people: None,
        counts: &[],
        needs: None,
        doc: "one row per person and cohort they are in: the dimensions of people plus cohort",
    },
    View {
        name: "cohort_summary",
        file: "views/cohort_summary.sql",
        person_level: false,
        dimensions: &[
            "cohort",
            "practice_code",
            "lsoa_code",
            "imd_decile",
            "age_band",
            "sex",
            "tier",
        ],
        people: Some("people"),
        counts: &[],
        needs: None,
        doc: "people and mean_risk by cohort, practice, LSOA, IMD decile, age band, sex and tier",
    },
    View {
        name: "service_outcomes",
        file: "views/service_outcomes.sql",
        person_level: false,
        dimensions: &["service_code", "outcome"],
        people: Some("treated"),
        counts: &["enrolled", "controls"],
        needs: Some("service_outcomes.parquet"),
        doc: "per service and outcome (emergency admissions, bed days): rates per 1,000 person-years before and after the start, for the enrolled and matched comparison patients, the match rate and the difference in differences with its 95% interval",
    },
    View {
        name: "feedback_outcomes",
        file: "views/feedback_outcomes.sql",
        person_level: false,
        dimensions: &["team", "outcome", "service_code"],
        people: Some("people"),
        counts: &[],
        needs: Some("feedback_outcomes.parquet"),
        doc: "care teams' recorded outcomes up to A: people by team, outcome and service",
    },
];

pub fn view(name: &str) -> Option<&'static View> {
    VIEWS.iter().find(|v| v.name == name)
}

/// The views of one session with their schemas: what disclosure control consults.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub views: Vec<(&'static View, SchemaRef)>,
}

impl Catalog {
    fn get(&self, name: &str) -> Option<&(&'static View, SchemaRef)> {
        self.views.iter().find(|(v, _)| v.name == name)
    }
}

impl ViewRoles for Catalog {
    fn person_level(&self, view: &str) -> Option<bool> {
        self.get(view).map(|(v, _)| v.person_level)
    }

    fn role(&self, view: &str, column: &str) -> Option<Role> {
        let (v, schema) = self.get(view)?;
        let field = schema.field_with_name(column).ok()?;
        if v.dimensions.contains(&column) {
            return Some(Role::Dimension);
        }
        if v.people == Some(column) {
            return Some(Role::People);
        }
        if v.counts.contains(&column) {
            return Some(Role::Count);
        }
        let numeric = field.data_type().is_numeric();
        match (v.person_level, numeric) {
            (true, true) => Some(Role::Measure),
            (false, true) => Some(Role::Statistic),
            _ => None,
        }
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
        let readme = include_str!("../../../README.md");
        let (start, end) = ("<!-- views:start -->\n", "<!-- views:end -->");
        let a = readme.find(start).expect("README has the views markers") + start.len();
        let b = readme.find(end).expect("README has the views markers");
        assert_eq!(
            &readme[a..b],
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
        }
    }
}

//! The names of the tables in a run's session, in one place. SQL files refer to them
//! by name (`FROM features`, `JOIN scores`), so the Rust that registers or reads them
//! uses these constants rather than string literals. The contract's input tables are
//! named by their [`Table`](super::contract::Table)s (`PATIENTS.name`, ...); after
//! ingest, each is registered under three names: `input_<table>` (opted-out people
//! removed), `checked_<table>` (every row, with its validation `reason`) and
//! `<table>` (the valid rows).

/// The contract table `table` as read, opted-out people removed.
pub fn input(table: &str) -> String {
    format!("input_{table}")
}

/// The contract table `table` with every row's validation `reason` (NULL: valid).
pub fn checked(table: &str) -> String {
    format!("checked_{table}")
}

/// The dates features are computed at, one row each (`as_of`, `w12_start`,
/// `w24_start`): `A` and `T0` in a run, so that one pass over each event table serves
/// both (`sql/features/*.sql`, `sql/population.sql`).
pub const FEATURE_DATES: &str = "feature_dates";
/// One row per person in the population at `A`, every feature (`features.parquet`).
pub const FEATURES: &str = "features";
/// Risk, tier and reasons per person (`scores.parquet`).
pub const SCORES: &str = "scores";

/// The service evaluation's: every emergency spell with its bed days
/// (`sql/outcomes/emergency_spells.sql`, a view while the stage runs).
pub const EMERGENCY_SPELLS: &str = "emergency_spells";
/// The service evaluation's: the people whose risk is scored at an index date.
pub const INDEX_EPISODES: &str = "index_episodes";
/// The service evaluation's: matched episodes, whose windows are counted.
pub const EPISODES: &str = "episodes";

/// `sql/changes.sql`'s: the previous run's file of the cohort compared (the current
/// one is [`COHORT`]) and its scores.
pub const PREVIOUS_COHORT: &str = "previous_cohort";
pub const PREVIOUS_SCORES: &str = "previous_scores";

/// The gate's (`sql/gate/release.sql`) and `sql/changes.sql`'s: the cohort asked
/// for, or this run's cohort compared.
pub const COHORT: &str = "cohort";
/// The gate's: the identity vault's rows.
pub const VAULT: &str = "vault";
/// The gate's: the practices the requesting team serves.
pub const TEAM_PRACTICES: &str = "team_practices";

#[cfg(test)]
mod tests {
    use super::*;

    /// Every constant is a table name the built-in SQL really uses.
    #[test]
    fn the_sql_uses_these_names() {
        let input_patients = input(super::super::contract::PATIENTS.name);
        for (file, name) in [
            ("validate/patients.sql", input_patients.as_str()),
            ("population.sql", FEATURE_DATES),
            ("features/appointments.sql", FEATURE_DATES),
            ("cohorts/complex_needs.sql", FEATURES),
            ("cohorts/complex_needs.sql", SCORES),
            ("changes.sql", COHORT),
            ("changes.sql", PREVIOUS_COHORT),
            ("changes.sql", PREVIOUS_SCORES),
            ("outcomes/histories.sql", EMERGENCY_SPELLS),
            ("outcomes/shifted_patients.sql", INDEX_EPISODES),
            ("outcomes/windows.sql", EPISODES),
            ("gate/release.sql", COHORT),
            ("gate/release.sql", VAULT),
            ("gate/release.sql", TEAM_PRACTICES),
            ("gate/changes.sql", COHORT),
            ("gate/changes.sql", PREVIOUS_COHORT),
            ("gate/changes.sql", PREVIOUS_SCORES),
            ("gate/changes.sql", VAULT),
            ("gate/changes.sql", TEAM_PRACTICES),
        ] {
            let text = crate::sql::builtin(file).unwrap();
            assert!(
                text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == name),
                "{file} does not use {name}"
            );
        }
    }
}

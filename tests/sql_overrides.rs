//! SQL a job may override (`[job] sql_dir`) that returns a key column of the wrong
//! type, or none: each is bad input (exit 2) naming the file, never a panic, and
//! leaves no run folder.

mod common;

use common::*;
use riskstrat::features::registry::{FEATURES, Kind, Source};
use std::path::Path;

/// A built-in SQL file with some of its columns replaced (`SELECT * REPLACE`).
fn replacing(file: &str, replace: &str) -> String {
    let builtin = riskstrat::sql::builtin(file).expect("a built-in file");
    format!(
        "SELECT * REPLACE ({replace}) FROM (\n{}\n) AS t\n",
        builtin.trim_end().trim_end_matches(';')
    )
}

/// A built-in SQL file with one column left out (`SELECT * EXCLUDE`).
fn without(file: &str, column: &str) -> String {
    let builtin = riskstrat::sql::builtin(file).expect("a built-in file");
    format!(
        "SELECT * EXCLUDE ({column}) FROM (\n{}\n) AS t\n",
        builtin.trim_end().trim_end_matches(';')
    )
}

/// The first numeric feature that `features/<source>.sql` computes.
fn feature_of(source: &'static str) -> &'static str {
    FEATURES
        .iter()
        .find(|f| f.source == Source::Sql(source) && f.kind != Kind::Attribute)
        .expect("a feature")
        .name
}

struct Case {
    /// The overriding file, under the job's `sql_dir`.
    file: &'static str,
    sql: String,
    /// What the message must name besides the file.
    column: &'static str,
    /// Fit a model (the outcome SQL is read only then) instead of loading one.
    train: bool,
}

fn case(file: &'static str, sql: String, column: &'static str) -> Case {
    Case {
        file,
        sql,
        column,
        train: false,
    }
}

fn cases() -> Vec<Case> {
    let rx = feature_of("prescriptions");
    vec![
        case(
            "validate/patients.sql",
            replacing("validate/patients.sql", "CAST(1 AS BIGINT) AS pseudo_id"),
            "pseudo_id",
        ),
        case(
            "validate/admissions.sql",
            replacing("validate/admissions.sql", "CAST(0 AS INT) AS reason"),
            "reason",
        ),
        case(
            "population.sql",
            replacing("population.sql", "CAST(7 AS BIGINT) AS pseudo_id"),
            "pseudo_id",
        ),
        case(
            "features/admissions.sql",
            replacing("features/admissions.sql", "CAST(7 AS BIGINT) AS pseudo_id"),
            "pseudo_id",
        ),
        case(
            "features/prescriptions.sql",
            replacing(
                "features/prescriptions.sql",
                &format!("CAST({rx} AS VARCHAR) AS {rx}"),
            ),
            rx,
        ),
        Case {
            train: true,
            ..case(
                "outcome.sql",
                replacing("outcome.sql", "'yes' AS emergency_admission_next_12m"),
                "emergency_admission_next_12m",
            )
        },
        case(
            "cohorts/complex_needs.sql",
            without("cohorts/complex_needs.sql", "pseudo_id"),
            "pseudo_id",
        ),
        case(
            "cohorts/complex_needs.sql",
            replacing(
                "cohorts/complex_needs.sql",
                "CAST(7 AS BIGINT) AS pseudo_id",
            ),
            "pseudo_id",
        ),
        case(
            "outcomes/enrolments.sql",
            replacing("outcomes/enrolments.sql", "'2025-01-01' AS start_date"),
            "start_date",
        ),
        case(
            "outcomes/emergency_spells.sql",
            replacing("outcomes/emergency_spells.sql", "'long' AS bed_days"),
            "bed_days",
        ),
        case(
            "outcomes/histories.sql",
            replacing("outcomes/histories.sql", "CAST(NULL AS DATE) AS admitted"),
            "admitted",
        ),
        case(
            "outcomes/shifted_patients.sql",
            replacing(
                "outcomes/shifted_patients.sql",
                "CAST(1 AS BIGINT) AS pseudo_id",
            ),
            "pseudo_id",
        ),
        case(
            "outcomes/windows.sql",
            replacing("outcomes/windows.sql", "'first' AS episode"),
            "episode",
        ),
        case(
            "outcomes/in_service.sql",
            replacing("outcomes/in_service.sql", "'none' AS bed_days_in_service"),
            "bed_days_in_service",
        ),
        case(
            "feedback_exclusions.sql",
            replacing("feedback_exclusions.sql", "CAST(1 AS BIGINT) AS pseudo_id"),
            "pseudo_id",
        ),
        case(
            "feedback_outcomes.sql",
            replacing("feedback_outcomes.sql", "CAST(2 AS INT) AS outcome"),
            "outcome",
        ),
    ]
}

/// Two people's feedback from one team (one declined), so the feedback SQL runs.
fn write_feedback(dir: &Path) {
    use datafusion::arrow::array::{ArrayRef, Date32Array, RecordBatch, StringArray};
    use riskstrat::ingest::contract::FEEDBACK;
    use std::sync::Arc;
    let day = riskstrat::sql::date32(chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap());
    let batch = RecordBatch::try_new(
        FEEDBACK.schema(),
        vec![
            Arc::new(StringArray::from(vec![pid("p1"), pid("p2")])) as ArrayRef,
            Arc::new(StringArray::from(vec!["T01", "T01"])),
            Arc::new(StringArray::from(vec!["declined", "enrolled"])),
            Arc::new(StringArray::from(vec![None, Some("VW01")])),
            Arc::new(Date32Array::from(vec![day, day])),
        ],
    )
    .unwrap();
    riskstrat::outputs::write_batch(&dir.join("feedback.parquet"), &batch).unwrap();
}

/// The small data set's job with `sql_dir = "sql"` holding `c`'s file.
fn job_with(dir: &Path, c: &Case) -> std::path::PathBuf {
    let job = small_dataset().write(dir, "2026-04-01");
    write_feedback(dir);
    let mut text = std::fs::read_to_string(&job)
        .unwrap()
        .replacen(
            "output = \"runs\"",
            "output = \"runs\"\nsql_dir = \"sql\"",
            1,
        )
        .replacen(
            "services = \"services.parquet\"",
            "services = \"services.parquet\"\nfeedback = \"feedback.parquet\"",
            1,
        );
    if c.train {
        text = text.replacen("load = \"model.json\"\n", "", 1);
    }
    std::fs::write(&job, text).unwrap();
    let file = dir.join("sql").join(c.file);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &c.sql).unwrap();
    job
}

#[test]
fn overridden_sql_with_a_column_of_the_wrong_type_is_bad_input_naming_the_file() {
    let mut failures = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let dir = scratch(&format!("sql_override_{i}"));
        let o = run_job(&job_with(&dir, c));
        let err = stderr(&o);
        let path = dir.join("sql").join(c.file);
        let named = err.contains(&path.display().to_string()) && err.contains(c.column);
        let left = runs(&dir).len()
            + std::fs::read_dir(dir.join("runs/test-job")).map_or(0, |d| d.count());
        if o.status.code() != Some(2) || !named || err.contains("panicked") || left > 0 {
            failures.push(format!(
                "{}: exit {:?}, {left} run files left: {err}",
                c.file,
                o.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The built-in files return what the checks ask for: a run with every overridable
/// file copied unchanged into `sql_dir` succeeds.
#[test]
fn unchanged_copies_of_the_builtin_files_pass_the_checks() {
    let dir = scratch("sql_override_unchanged");
    let c = case("population.sql", String::new(), "");
    let job = job_with(&dir, &c);
    for c in cases() {
        let file = dir.join("sql").join(c.file);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, riskstrat::sql::builtin(c.file).unwrap()).unwrap();
    }
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(runs(&dir).len(), 1);
    // The feedback SQL ran: p1 declined, so the manifest counts its feedback.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs(&dir)[0].join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["feedback"]["declined"], 1, "{m}");
}

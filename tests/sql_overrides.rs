//! SQL a job may override (`[job] sql_dir`) that returns a key column of the wrong
//! type, or none: each is bad input (exit 2) naming the file, never a panic, and
//! leaves no run folder.

use crate::common::*;
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
            "validate/appointments.sql",
            without("validate/appointments.sql", "person"),
            "person",
        ),
        case(
            "population.sql",
            without("population.sql", "person"),
            "person",
        ),
        case(
            "features/admissions.sql",
            replacing("features/admissions.sql", "CAST('7' AS VARCHAR) AS person"),
            "person",
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

/// The small data set's job (with a training year when `c` trains a model) with
/// `sql_dir = "sql"` holding `c`'s file.
fn job_with(dir: &Path, c: &Case) -> std::path::PathBuf {
    let ds = match c.train {
        true => small_dataset_with_a_training_year(),
        false => small_dataset(),
    };
    let job = ds.write(dir, "2026-04-01");
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

/// Every column of a per-person Parquet file, by pseudo_id: numbers as f64 (within
/// 1e-9 relative of each other across runs: parallel float sums may differ in the
/// last bit), anything else as text.
fn by_person(path: &Path) -> std::collections::BTreeMap<String, Vec<(String, f64)>> {
    use datafusion::arrow::array::{Array, Float64Array};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::util::display::array_value_to_string;
    let mut out = std::collections::BTreeMap::new();
    for b in read_parquet(path) {
        let ids = b.column_by_name("pseudo_id").unwrap();
        for row in 0..b.num_rows() {
            let mut values = Vec::new();
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                let number = datafusion::arrow::compute::cast(c, &DataType::Float64)
                    .ok()
                    .filter(|_| f.data_type().is_numeric());
                values.push(match number {
                    Some(n) => {
                        let n = n.as_any().downcast_ref::<Float64Array>().unwrap();
                        (
                            f.name().clone(),
                            if n.is_null(row) {
                                f64::NAN
                            } else {
                                n.value(row)
                            },
                        )
                    }
                    None => (
                        format!("{}={}", f.name(), array_value_to_string(c, row).unwrap()),
                        0.0,
                    ),
                });
            }
            out.insert(array_value_to_string(ids, row).unwrap(), values);
        }
    }
    out
}

/// Regression: the built-in feature SQL became one pass over both of a run's dates
/// (`feature_dates`); files written for one date (`$as_of`, no `as_of` column) are run
/// at each date instead and must give the same features at A, the same model (fitted
/// on the features at T0) and the same scores. The per-date files are the built-in
/// SQL as it was before.
#[test]
fn per_date_sql_gives_the_same_features_model_and_scores_as_the_one_pass_builtin() {
    let dir = scratch("sql_override_per_date");
    let o = synth(&dir, 3000, 11);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = dir.join("job.toml");
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let per_date = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/per_date_sql");
    let text = std::fs::read_to_string(&job).unwrap();
    let text = text.replacen(
        "output = \"runs\"",
        &format!(
            "output = \"runs\"\nsql_dir = {:?}",
            per_date.display().to_string()
        ),
        1,
    );
    assert!(text.contains("sql_dir"), "{text}");
    std::fs::write(&job, text).unwrap();
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let all = list_runs(&dir.join("runs"), "complex-needs");
    assert_eq!(all.len(), 2);
    for file in ["features.parquet", "scores.parquet"] {
        let (one_pass, per_date) = (by_person(&all[0].join(file)), by_person(&all[1].join(file)));
        assert!(one_pass.len() > 2000, "{file}: {} people", one_pass.len());
        assert_eq!(
            one_pass.keys().collect::<Vec<_>>(),
            per_date.keys().collect::<Vec<_>>(),
            "{file}: the same people"
        );
        for (id, row) in &one_pass {
            for ((name, a), (other, b)) in row.iter().zip(&per_date[id]) {
                assert_eq!(name, other, "{file}");
                let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(1.0);
                assert!(same, "{file}: {name} differs ({a} and {b})");
            }
        }
    }
    let model = |run: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap()
    };
    let (a, b) = (model(&all[0]), model(&all[1]));
    assert_eq!(a["n_train"], b["n_train"]);
    assert_eq!(a["events_train"], b["events_train"]);
    assert!(a["n_train"].as_u64().unwrap() > 1500, "{a}");
    for (term, value) in a["coefficients"].as_object().unwrap() {
        let (x, y) = (
            value.as_f64().unwrap(),
            b["coefficients"][term].as_f64().unwrap(),
        );
        assert!(
            (x - y).abs() <= 1e-6 * x.abs().max(1.0),
            "{term}: {x} and {y}"
        );
    }
}

//! Integrity under bad input (issue #10): values that are wrong but not errors go to
//! quarantine with a reason; analysts' SQL output is checked; and every error names
//! the file, column or setting at fault (exit code 2, no run folder).

use crate::common::*;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

const A: &str = "2026-04-01";

/// Exit code 2, every needle in the message, no pseudo_id in it, and no run folder.
fn assert_bad_input(dir: &Path, o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "message should name '{n}': {err}");
    }
    for k in 0..20 {
        assert!(
            !err.contains(&pid(&format!("p{k}"))),
            "an error message holds a pseudo_id: {err}"
        );
    }
    assert!(runs(dir).is_empty(), "a failed run left a run folder");
}

fn write_with(path: &Path, cols: Vec<(&str, ArrayRef)>, props: Option<WriterProperties>) {
    let batch = RecordBatch::try_from_iter(cols).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), props).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn add_job_lines(job: &Path, section: &str, lines: &str) {
    let text = std::fs::read_to_string(job)
        .unwrap()
        .replace(section, &format!("{section}\n{lines}"));
    std::fs::write(job, text).unwrap();
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap()
}

/// (pseudo_id, reason) -> rows, from a quarantine file.
fn quarantined(path: &Path) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for b in read_parquet(path) {
        let ids = b.column_by_name("pseudo_id").unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let r = b.column_by_name("reason").unwrap();
        let r = r.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            *out.entry((ids.value(i).to_string(), r.value(i).to_string()))
                .or_default() += 1;
        }
    }
    out
}

// --- 1. silently wrong results ---

#[test]
fn extra_feature_sql_with_two_rows_per_person_is_refused() {
    let dir = scratch("integrity_extra_dup");
    let job = small_dataset().write(&dir, A);
    std::fs::write(
        dir.join("twice.sql"),
        "SELECT pseudo_id, 1 AS flag FROM appointments \
         UNION ALL SELECT pseudo_id, 2 AS flag FROM appointments",
    )
    .unwrap();
    add_job_lines(
        &job,
        "services = \"services.parquet\"",
        "[features]\nextra = [\"twice.sql\"]",
    );
    let o = run_job(&job);
    // 19 people (p0 opted out) have two rows each: a count, never a pseudo_id.
    assert_bad_input(&dir, &o, &["twice.sql", "19 people", "one row per"]);
}

#[test]
fn impossible_money_quantities_and_birth_years_go_to_quarantine_with_a_reason() {
    let dir = scratch("integrity_row_rules");
    let mut ds = small_dataset();
    ds.patients[1].yob = 2027; // after A
    ds.patients[2].yob = 1899; // age 127 at A
    ds.patients[3].imd = Some(11); // deciles are 1..10
    ds.patients[4].imd = Some(0);
    ds.patients[14].yob = 2010; // registered in 2000
    ds.patients[15].death = Some(d("1955-06-01")); // born 1960
    for (k, cost) in [
        (5, f64::NAN),
        (6, -100.0),
        (7, f64::INFINITY),
        (0, f64::NAN),
    ] {
        ds.admissions.push(Spell {
            spell: format!("BAD-COST-{k}"),
            cost,
            ..ds.admissions[k].clone()
        });
    }
    let job = ds.write(&dir, A);

    // Prescriptions with every quantity and nic: one valid row per person (nic 1.0),
    // then impossible ones; p0's impossible row must vanish with the opt-out.
    let mut rows: Vec<(String, i32, f64, f64)> = (0..20)
        .map(|k| (pid(&format!("p{k}")), 1, 28.0, 1.0))
        .collect();
    for (k, items, qty, nic) in [
        (8, 1, 28.0, f64::NAN),
        (9, 1, 28.0, f64::NEG_INFINITY),
        (10, 1, 28.0, -5.0),
        (11, 1, -28.0, 1.0),
        (12, 1, f64::NAN, 1.0),
        (13, -2, 28.0, 1.0),
        (0, 1, 28.0, -5.0),
    ] {
        rows.push((pid(&format!("p{k}")), items, qty, nic));
    }
    let n = rows.len();
    write_with(
        &dir.join("prescriptions.parquet"),
        vec![
            (
                "pseudo_id",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))) as ArrayRef,
            ),
            (
                "issue_date",
                Arc::new(Date32Array::from(vec![
                    riskstrat::sql::date32(d(
                        "2025-06-01"
                    ));
                    n
                ])),
            ),
            (
                "bnf_code",
                Arc::new(StringArray::from(vec!["0601023A0AAABAB"; n])),
            ),
            (
                "items",
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            ),
            (
                "quantity",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ),
            (
                "nic",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ),
        ],
        None,
    );
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = runs(&dir).pop().unwrap();
    let p = |k: usize| pid(&format!("p{k}"));
    let q = |k: usize, r: &str| ((p(k), r.to_string()), 1usize);

    let pats = quarantined(&run.join("quarantine/patients.parquet"));
    let want: BTreeMap<_, _> = [
        q(1, "year_of_birth_after_as_of"),
        q(2, "year_of_birth_before_1900"),
        q(3, "invalid_imd_decile"),
        q(4, "invalid_imd_decile"),
        q(14, "registration_before_birth"),
        q(15, "death_before_birth"),
    ]
    .into_iter()
    .collect();
    assert_eq!(pats, want);

    let rx = quarantined(&run.join("quarantine/prescriptions.parquet"));
    for k in [1, 2, 3, 4, 14, 15] {
        // Events of a quarantined patient have no valid patient.
        assert_eq!(rx.get(&(p(k), "unknown_pseudo_id".into())), Some(&1));
    }
    let rx: BTreeMap<_, _> = rx
        .into_iter()
        .filter(|((_, r), _)| r != "unknown_pseudo_id")
        .collect();
    let want: BTreeMap<_, _> = [
        q(8, "invalid_nic"),
        q(9, "invalid_nic"),
        q(10, "invalid_nic"),
        q(11, "invalid_quantity"),
        q(12, "invalid_quantity"),
        q(13, "invalid_items"),
    ]
    .into_iter()
    .collect();
    assert_eq!(rx, want);

    let adm = quarantined(&run.join("quarantine/admissions.parquet"));
    let adm: BTreeMap<_, _> = adm
        .into_iter()
        .filter(|((_, r), _)| r != "unknown_pseudo_id")
        .collect();
    let want: BTreeMap<_, _> = [
        q(5, "invalid_spell_cost"),
        q(6, "invalid_spell_cost"),
        q(7, "invalid_spell_cost"),
    ]
    .into_iter()
    .collect();
    assert_eq!(adm, want);

    let m = manifest(&run);
    let by = |t: &str, r: &str| m["rows"][t]["quarantined_by_reason"][r].as_u64();
    assert_eq!(by("patients", "year_of_birth_after_as_of"), Some(1));
    assert_eq!(by("patients", "year_of_birth_before_1900"), Some(1));
    assert_eq!(by("patients", "invalid_imd_decile"), Some(2));
    assert_eq!(by("patients", "registration_before_birth"), Some(1));
    assert_eq!(by("patients", "death_before_birth"), Some(1));
    assert_eq!(by("prescriptions", "invalid_nic"), Some(3));
    assert_eq!(by("prescriptions", "invalid_quantity"), Some(2));
    assert_eq!(by("admissions", "invalid_spell_cost"), Some(3));
    // The opted-out person's bad rows are excluded, not quarantined.
    assert_eq!(m["rows"]["prescriptions"]["excluded_optout"], 2);
    assert_eq!(m["rows"]["admissions"]["excluded_optout"], 2);
    assert_eq!(m["population"], 13);

    // Costs are only ever sums of valid, finite, non-negative money.
    for b in read_parquet(&run.join("features.parquet")) {
        for c in ["rx_cost_12m", "admission_cost_12m", "total_cost_12m"] {
            let a = b.column_by_name(c).unwrap();
            let a = a.as_any().downcast_ref::<Float64Array>().unwrap();
            for v in a.iter() {
                let v = v.unwrap();
                assert!(v.is_finite() && v >= 0.0, "{c} = {v}");
            }
        }
        let rx = b.column_by_name("rx_cost_12m").unwrap();
        let rx = rx.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(rx.iter().all(|v| v == Some(1.0)), "{rx:?}");
    }
}

#[test]
fn int64_values_that_do_not_fit_int32_name_file_and_column() {
    let dir = scratch("integrity_int64_range");
    let ds = small_dataset();
    let job = ds.write(&dir, A);
    let ids: Vec<String> = (0..20).map(|k| pid(&format!("p{k}"))).collect();
    // year_of_birth as Int64 (a safe cast) with one value beyond Int32, statistics on.
    let mut yob = vec![1960i64; 20];
    yob[7] = 5_000_000_000;
    let pats = read_parquet(&dir.join("patients.parquet"));
    let b = &pats[0];
    let schema = b.schema();
    let mut cols: Vec<(&str, ArrayRef)> = Vec::new();
    for f in schema.fields() {
        let c = if f.name() == "year_of_birth" {
            Arc::new(Int64Array::from(yob.clone())) as ArrayRef
        } else {
            b.column_by_name(f.name()).unwrap().clone()
        };
        cols.push((f.name().as_str(), c));
    }
    write_with(&dir.join("patients.parquet"), cols, None);
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["patients.parquet", "year_of_birth", "Int32"]);
    let o = riskstrat().arg("validate").arg(&job).output().unwrap();
    assert_bad_input(&dir, &o, &["patients.parquet", "year_of_birth", "Int32"]);

    // items as Int64 below Int32's range, in a file written without statistics.
    ds.write(&dir, A);
    let mut items = vec![1i64; 20];
    items[3] = -3_000_000_000;
    let n = 20;
    write_with(
        &dir.join("prescriptions.parquet"),
        vec![
            (
                "pseudo_id",
                Arc::new(StringArray::from(ids.clone())) as ArrayRef,
            ),
            (
                "issue_date",
                Arc::new(Date32Array::from(vec![
                    riskstrat::sql::date32(d(
                        "2025-06-01"
                    ));
                    n
                ])),
            ),
            (
                "bnf_code",
                Arc::new(StringArray::from(vec!["0601023A0AAABAB"; n])),
            ),
            ("items", Arc::new(Int64Array::from(items))),
            ("quantity", Arc::new(Float64Array::from(vec![28.0; n]))),
            ("nic", Arc::new(Float64Array::from(vec![1.0; n]))),
        ],
        Some(
            WriterProperties::builder()
                .set_statistics_enabled(EnabledStatistics::None)
                .build(),
        ),
    );
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["prescriptions.parquet", "items", "Int32"]);

    // Int64 values that fit are cast silently, as before.
    let mut items = vec![1i64; 20];
    items[3] = 2_147_483_647;
    let b = read_parquet(&dir.join("prescriptions.parquet"));
    let b = &b[0];
    let schema = b.schema();
    let cols: Vec<(&str, ArrayRef)> = schema
        .fields()
        .iter()
        .map(|f| {
            let c = if f.name() == "items" {
                Arc::new(Int64Array::from(items.clone())) as ArrayRef
            } else {
                b.column_by_name(f.name()).unwrap().clone()
            };
            (f.name().as_str(), c)
        })
        .collect();
    write_with(&dir.join("prescriptions.parquet"), cols, None);
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
}

// --- 2. errors that say where ---

/// Overwrite the data pages of `column` in a Parquet file (written Snappy-compressed
/// without a dictionary, so the page bodies are compressed bytes) with garbage,
/// leaving the footer and the page headers intact.
fn corrupt_column_pages(path: &Path, column: &str) {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let r = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let rg = r.metadata().row_group(0);
    let c = (0..rg.num_columns())
        .map(|i| rg.column(i))
        .find(|c| c.column_path().string() == column)
        .unwrap();
    let (start, len) = (c.data_page_offset() as usize, c.compressed_size() as usize);
    assert!(
        len > 200,
        "{column}: chunk of {len} bytes is too small to damage"
    );
    let mut bytes = std::fs::read(path).unwrap();
    // Page headers are a few dozen bytes; the rest of the chunk is page data.
    for b in &mut bytes[start + 48..start + len] {
        *b = 0xA5;
    }
    std::fs::write(path, bytes).unwrap();
}

fn snappy_no_dictionary() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build()
}

/// Rewrite a Parquet file with the same rows, Snappy-compressed, then damage a column.
fn rewrite_and_corrupt(path: &Path, column: &str) {
    let batches = read_parquet(path);
    let schema = batches[0].schema();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        schema,
        Some(snappy_no_dictionary()),
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    corrupt_column_pages(path, column);
}

#[test]
fn parquet_input_with_a_corrupt_data_page_names_the_file() {
    let dir = scratch("integrity_corrupt_page");
    let mut ds = small_dataset();
    for k in 0..400 {
        let mut r = ds.prescriptions[k % 20].clone();
        r.bnf = if k % 2 == 0 {
            "0601023A0AAABAB"
        } else {
            "0212000B0AAABAB"
        };
        ds.prescriptions.push(r);
    }
    let job = ds.write(&dir, A);
    rewrite_and_corrupt(&dir.join("prescriptions.parquet"), "pseudo_id");
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["prescriptions.parquet", "cannot be decoded", "replace"],
    );
    let o = riskstrat().arg("validate").arg(&job).output().unwrap();
    assert_bad_input(
        &dir,
        &o,
        &["prescriptions.parquet", "cannot be decoded", "replace"],
    );
}

#[test]
fn query_on_a_run_with_a_damaged_file_names_the_file() {
    let dir = scratch("integrity_damaged_run");
    let job = small_dataset().write(&dir, A);
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = runs(&dir).pop().unwrap();
    let query = |run: &Path| {
        riskstrat()
            .arg("query")
            .arg("--run")
            .arg(run)
            .args(["--requester", "commissioner.1", "--audit"])
            .arg(run.parent().unwrap().join("query-audit.jsonl"))
            // No dimension: the cut rule allows it on the small dataset.
            .arg("SELECT count(*) AS people FROM people")
            .output()
            .unwrap()
    };
    let o = query(&run);
    assert!(o.status.success(), "{}", stderr(&o));

    // A data page of features.parquet damaged: the footer reads, the data does not.
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in walk(&run) {
        if f.parent() == Some(run.as_path()) {
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
    }
    rewrite_and_corrupt(&copy.join("features.parquet"), "pseudo_id");
    let o = query(&copy);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("features.parquet"), "{err}");

    // scores.parquet truncated: its footer cannot be read.
    let p = run.join("scores.parquet");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let o = query(&run);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("scores.parquet"), "{err}");
}

/// An analyst's SQL file that plans but fails on the data, added to the job by
/// `setting`: exit 2 naming the file.
fn sql_failing_at_run_time_names_the_file(name: &str, file: &str, sql: &str, setting: &str) {
    let dir = scratch(name);
    let job = small_dataset().write(&dir, A);
    std::fs::write(dir.join(file), sql).unwrap();
    add_job_lines(&job, "services = \"services.parquet\"", setting);
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &[file]);
}

#[test]
fn cohort_sql_failing_at_run_time_names_the_file() {
    // Plans fine; fails on the first row: 'F' is not an integer.
    sql_failing_at_run_time_names_the_file(
        "integrity_cohort_runtime",
        "bad_cast.sql",
        "SELECT pseudo_id, CAST(sex AS INT) AS sex_number FROM features",
        "[cohorts]\ninclude = [\"complex_needs\", \"bad_cast.sql\"]",
    );
}

#[test]
fn extra_feature_sql_failing_at_run_time_names_the_file() {
    sql_failing_at_run_time_names_the_file(
        "integrity_extra_runtime",
        "bad_extra.sql",
        "SELECT pseudo_id, CAST(max(hcp_type) AS INT) AS hcp_number FROM appointments GROUP BY pseudo_id",
        "[features]\nextra = [\"bad_extra.sql\"]",
    );
}

// --- found by the review of 2026-12-07 ---

/// Regression: opt-out rows whose pseudo_id ended in a Windows line ending matched no
/// one (only spaces were trimmed), so the objectors were processed with no word said.
/// Now any white space is trimmed, and an opt-out row that can match no one (no
/// pseudo_id, or an NHS number in its place) refuses the run.
#[test]
fn an_opt_out_with_a_line_ending_was_ignored_and_unreadable_ones_passed() {
    let dir = scratch("optout_line_ending");
    let mut ds = small_dataset();
    ds.optouts[0].0.push('\r');
    let job = ds.write(&dir, A);
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = runs(&dir).pop().unwrap();
    assert_eq!(manifest(&run)["optouts"]["patients_excluded"], 1);
    let features = pseudo_ids(&run.join("features.parquet"));
    assert!(!features.contains(&pid("p0")) && features.contains(&pid("p1")));

    for (name, id) in [("nhs_number", "9434765919"), ("blank", " \t")] {
        let dir = scratch(&format!("optout_unreadable_{name}"));
        let mut ds = small_dataset();
        ds.optouts.push((id.to_string(), "type1", d("2020-01-01")));
        let job = ds.write(&dir, A);
        assert_bad_input(
            &dir,
            &run_job(&job),
            &["input optouts", "1 opt-out rows", "would not be honoured"],
        );
    }
}

/// Regression: appointments whose pseudo_ids were all upper-cased were all
/// quarantined, and the run went on with no appointments (or failed naming a model
/// feature). A table with no valid row is refused, naming it and why.
#[test]
fn an_input_whose_every_row_was_quarantined_passed_silently() {
    let dir = scratch("wholly_quarantined");
    let mut ds = small_dataset();
    for a in &mut ds.appointments {
        a.id = a.id.as_ref().map(|i| i.to_uppercase());
    }
    let job = ds.write(&dir, A);
    assert_bad_input(
        &dir,
        &run_job(&job),
        &[
            "input appointments",
            "none of its 19 rows is valid",
            "malformed_pseudo_id",
        ],
    );
    // Regression (fault review of 2026-12-07): with no valid patient, the error named
    // the first event table in name order, its rows "unknown_pseudo_id".
    let dir = scratch("wholly_quarantined_patients");
    let mut ds = small_dataset();
    for p in &mut ds.patients {
        p.sex = "f";
    }
    let job = ds.write(&dir, A);
    assert_bad_input(
        &dir,
        &run_job(&job),
        &[
            "input patients",
            "none of its 19 rows is valid",
            "invalid_sex",
        ],
    );
}

/// Regression: the engine's message quoted the value that failed, here a pseudo_id,
/// and it reached stderr (`assert_bad_input` checks that no pseudo_id is there).
#[test]
fn sql_failing_on_a_pseudo_id_printed_it() {
    sql_failing_at_run_time_names_the_file(
        "integrity_cast_pseudo_id",
        "cast_id.sql",
        "SELECT pseudo_id, CAST(pseudo_id AS INT) AS n FROM features",
        "[cohorts]\ninclude = [\"complex_needs\", \"cast_id.sql\"]",
    );
}

/// Regression: a run long after its extract ended (the events stop in June, the run
/// is in April) went ahead with no word; it now warns, naming each table and its last
/// day, and says nothing when the events reach close to A.
#[test]
fn a_run_long_after_its_extract_ends_said_nothing() {
    let dir = scratch("stale_extract");
    let job = small_dataset().write(&dir, A);
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    for table in ["appointments", "prescriptions", "admissions"] {
        let said = format!("input {table}: its latest event is on 2025-06-01, 304 days before");
        assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    }
    let o = riskstrat()
        .args(["run", job.to_str().unwrap(), "--as-of", "2025-07-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("latest event"), "{}", stderr(&o));
}

/// Regression (fault review of 2026-12-07): a run whose two years began long before
/// the extracts did trained on part of a year counted as a whole one (coefficients
/// four times too large) with no word, and one with no event in the training year
/// failed on a constant feature, advising to remove it from the model.
#[test]
fn a_run_before_its_extract_begins_trained_on_part_of_a_year() {
    let dir = scratch("early_extract");
    let o = synth(&dir, 2000, 5);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = dir.join("job.toml");
    let at = |as_of: &str| {
        riskstrat()
            .args(["run", job.to_str().unwrap(), "--as-of", as_of])
            .output()
            .unwrap()
    };
    // The synthetic events begin on 2024-04-01: two years before its own date.
    let o = at("2026-04-01");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("first event"), "{}", stderr(&o));
    let o = at("2025-06-01");
    assert!(o.status.success(), "{}", stderr(&o));
    for table in ["appointments", "prescriptions"] {
        let said = format!(
            "input {table}: its first event is on 2024-04-01, 304 days after 2023-06-02, where the two years this run reads begin; the model is trained on features at 2024-06-01 counted over part of a year"
        );
        assert!(stderr(&o).contains(&said), "{}", stderr(&o));
    }
    let o = at("2025-02-28");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("input appointments: its events run from 2024-04-01 to 2026-03-31, none in the model's training year [2023-03-01, 2024-02-29)"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("run with --as-of 2026-04-01 or later"),
        "{}",
        stderr(&o)
    );
    let made = list_runs(&dir.join("runs"), "complex-needs");
    assert_eq!(made.len(), 2, "no third run folder");
}

/// Regression (IG review of 2026-12-07): an objector's rows whose pseudo_id carried a
/// byte-order mark, a zero-width space, quotes or a hyphen matched no opt-out and went
/// to quarantine, with their data, for analysts to read. Now a value whose hexadecimal
/// digits are exactly 32 is matched by those digits.
#[test]
fn an_objectors_rows_with_odd_ids_reached_quarantine() {
    let dir = scratch("optout_odd_ids");
    let mut ds = small_dataset();
    let objector = pid("p0");
    let odd = [
        format!("\u{feff}{objector}"),
        format!("{objector}\u{200b}"),
        format!("\"{objector}\""),
        format!("{}-{}", &objector[..8], &objector[8..]),
    ];
    let visit = ds.appointments[0].clone();
    for id in &odd {
        let mut a = visit.clone();
        a.id = Some(id.clone());
        ds.appointments.push(a);
    }
    // A non-objector's malformed id still goes to quarantine.
    let mut other = visit.clone();
    other.id = Some(format!("\"{}\"", pid("p1")));
    ds.appointments.push(other);
    let job = ds.write(&dir, A);
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = runs(&dir).pop().unwrap();
    let quarantined = pseudo_ids(&run.join("quarantine/appointments.parquet"));
    assert_eq!(
        quarantined,
        [format!("\"{}\"", pid("p1"))],
        "{quarantined:?}"
    );
}

//! End-to-end tests of the `riskstrat` binary: bad input (exit 2, a message naming
//! what is wrong, no run folder), synth + run + validate, a run killed part way.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Expect exit code 2, every `needles` in the message, and no run folder.
fn assert_bad_input(dir: &Path, o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "message should name '{n}': {err}");
    }
    assert!(runs(dir).is_empty(), "a failed run left a run folder");
    if let Ok(entries) = std::fs::read_dir(dir.join("runs/test-job")) {
        assert_eq!(entries.count(), 0, "a failed run left files behind");
    }
}

#[test]
fn missing_input_path() {
    let dir = scratch("cli_missing_input");
    let job = small_dataset().write(&dir, "2026-04-01");
    std::fs::remove_file(dir.join("appointments.parquet")).unwrap();
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["appointments", "appointments.parquet", "no such file"],
    );
}

#[test]
fn missing_required_column() {
    let dir = scratch("cli_missing_column");
    let job = small_dataset().write(&dir, "2026-04-01");
    write_table(
        &dir.join("appointments.parquet"),
        &[
            ("pseudo_id", utf8(&["a"])),
            ("appointment_date", date(&[20000])),
        ],
    );
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["appointments.parquet", "hcp_type"]);
}

#[test]
fn column_of_the_wrong_type() {
    let dir = scratch("cli_wrong_type");
    let job = small_dataset().write(&dir, "2026-04-01");
    write_table(
        &dir.join("optouts.parquet"),
        &[
            ("pseudo_id", utf8(&[&pid("p0")])),
            ("optout_type", utf8(&["type1"])),
            ("recorded_date", utf8(&["2020-01-01"])),
        ],
    );
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["optouts.parquet", "recorded_date", "Utf8", "Date32"],
    );
}

#[test]
fn safe_casts_are_silent() {
    use datafusion::arrow::array::{Int64Array, LargeStringArray, TimestampMillisecondArray};
    let dir = scratch("cli_safe_casts");
    let job = small_dataset().write(&dir, "2026-04-01");
    // optouts with LargeUtf8 ids and Timestamp dates: accepted and cast.
    let ts = TimestampMillisecondArray::from(vec![1_577_836_800_000i64]);
    write_table(
        &dir.join("optouts.parquet"),
        &[
            (
                "pseudo_id",
                std::sync::Arc::new(LargeStringArray::from(vec![pid("p0")])),
            ),
            ("optout_type", utf8(&["type1"])),
            ("recorded_date", std::sync::Arc::new(ts)),
            (
                "extra_column",
                std::sync::Arc::new(Int64Array::from(vec![1i64])),
            ),
        ],
    );
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs(&dir)[0].join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["population"], 19);
    assert_eq!(m["optouts"]["patients_excluded"], 1);
}

/// A folder of files (hive-partitioned, in subfolders), a glob and a file:// URL all
/// read the same rows as single files.
#[test]
fn folder_glob_hive_and_file_url_inputs() {
    let dir = scratch("cli_input_forms");
    let job = small_dataset().write(&dir, "2026-04-01");
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let single: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs(&dir)[0].join("manifest.json")).unwrap())
            .unwrap();

    let hive = dir.join("appointments/year=2025");
    std::fs::create_dir_all(&hive).unwrap();
    std::fs::rename(
        dir.join("appointments.parquet"),
        hive.join("part-0.parquet"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("rx")).unwrap();
    std::fs::rename(dir.join("prescriptions.parquet"), dir.join("rx/a.parquet")).unwrap();
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace(
            "appointments = \"appointments.parquet\"",
            "appointments = \"appointments/\"",
        )
        .replace(
            "prescriptions = \"prescriptions.parquet\"",
            "prescriptions = \"rx/*.parquet\"",
        )
        .replace(
            "admissions = \"admissions.parquet\"",
            &format!(
                "admissions = \"file://{}\"",
                dir.join("admissions.parquet").display()
            ),
        );
    std::fs::write(&job, text).unwrap();
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = runs(&dir);
    let forms: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs.last().unwrap().join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(single["rows"], forms["rows"]);
    assert_eq!(single["population"], forms["population"]);
}

#[test]
fn truncated_parquet_file() {
    let dir = scratch("cli_truncated");
    let job = small_dataset().write(&dir, "2026-04-01");
    let p = dir.join("prescriptions.parquet");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["prescriptions.parquet", "not a readable Parquet file"],
    );
}

#[test]
fn non_parquet_file() {
    let dir = scratch("cli_not_parquet");
    let job = small_dataset().write(&dir, "2026-04-01");
    std::fs::write(
        dir.join("admissions.parquet"),
        "pseudo_id,spell_id\nabc,1\n",
    )
    .unwrap();
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["admissions.parquet", "not a readable Parquet file"],
    );
}

#[test]
fn empty_table() {
    let dir = scratch("cli_empty_table");
    let mut ds = small_dataset();
    ds.appointments.clear();
    let job = ds.write(&dir, "2026-04-01");
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &["appointments", "appointments.parquet", "no rows"],
    );
}

#[test]
fn empty_optouts_needs_saying_so() {
    let dir = scratch("cli_empty_optouts");
    let mut ds = small_dataset();
    ds.optouts.clear();
    let job = ds.write(&dir, "2026-04-01");
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["optouts", "allow_empty_optouts"]);
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "output = \"runs\"",
        "output = \"runs\"\nallow_empty_optouts = true",
    );
    std::fs::write(&job, text).unwrap();
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn unknown_job_key() {
    let dir = scratch("cli_unknown_key");
    let job = small_dataset().write(&dir, "2026-04-01");
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[inputs]",
        "[inputs]\nappointmets = \"appointments.parquet\"",
    );
    std::fs::write(&job, text).unwrap();
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["job.toml", "appointmets"]);

    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("appointmets = \"appointments.parquet\"\n", "")
        .replace("[job]", "[job]\nas_off = \"2026-01-01\"");
    std::fs::write(&job, text).unwrap();
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["job.toml", "as_off"]);
}

#[test]
fn unparseable_date() {
    let dir = scratch("cli_bad_date");
    let job = small_dataset().write(&dir, "2026-13-45");
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["as_of", "2026-13-45", "YYYY-MM-DD"]);
    let job = small_dataset().write(&dir, "2026-04-01");
    let o = riskstrat()
        .arg("run")
        .arg(&job)
        .args(["--as-of", "yesterday"])
        .output()
        .unwrap();
    assert_bad_input(&dir, &o, &["--as-of", "yesterday"]);
}

#[test]
fn bad_usage_exits_2() {
    let o = riskstrat().arg("frobnicate").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let o = riskstrat()
        .args(["synth", "--patients", "0", "--as-of", "2026-04-01", "--out"])
        .arg(scratch("cli_usage"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--patients"));
}

#[test]
fn failed_run_leaves_earlier_runs_untouched() {
    let dir = scratch("cli_earlier_runs");
    let job = small_dataset().write(&dir, "2026-04-01");
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = runs(&dir);
    assert_eq!(first.len(), 1);
    let before = snapshot(&first[0]);
    std::fs::write(dir.join("patients.parquet"), b"garbage").unwrap();
    let o = run_job(&job);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(runs(&dir), first);
    assert_eq!(snapshot(&first[0]), before);
}

/// Regression: a run over `[resources] memory_limit` printed DataFusion's "Resources
/// exhausted" and exited 1, naming neither the setting nor what would fix it.
#[test]
fn run_over_its_memory_limit_names_the_setting() {
    let dir = scratch("cli_memory_limit");
    let o = synth(&dir, 3000, 1);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = dir.join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        format!("{text}\n[resources]\nmemory_limit = \"1MiB\"\n"),
    )
    .unwrap();
    let o = run_job(&job);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Resources exhausted"), "{err}");
    assert!(
        err.contains("[resources] memory_limit = \"1MiB\"` allows: raise it"),
        "{err}"
    );
    assert!(list_runs(&dir.join("runs"), "complex-needs").is_empty());
    // With room, the same job runs.
    std::fs::write(
        &job,
        format!("{text}\n[resources]\nmemory_limit = \"1GiB\"\n"),
    )
    .unwrap();
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<_> = walk(dir)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Synthesise, validate and run through the binary; then check the run folder.
#[test]
fn synth_run_and_validate_end_to_end() {
    let dir = scratch("cli_synth_e2e");
    let data = dir.join("data");
    let o = synth(&data, 3000, 7);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = data.join("job.toml");
    assert!(job.is_file());

    // Deterministic for a seed.
    let again = dir.join("again");
    let o = synth(&again, 3000, 7);
    assert!(o.status.success());
    for f in [
        "patients.parquet",
        "optouts.parquet",
        "appointments/part-00000.parquet",
        "admissions/part-00000.parquet",
    ] {
        assert_eq!(
            std::fs::read(data.join(f)).unwrap(),
            std::fs::read(again.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }

    let o = riskstrat()
        .arg("validate")
        .arg(&job)
        .arg("--json")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let tables = report["tables"].as_array().unwrap();
    let appts = tables
        .iter()
        .find(|t| t["table"] == "appointments")
        .unwrap();
    let link = appts["linkage_rate"].as_f64().unwrap();
    assert!(link > 0.95 && link < 1.0, "linkage {link}");
    assert!(
        appts["quarantined_by_reason"]["unknown_pseudo_id"]
            .as_u64()
            .unwrap()
            > 0
    );

    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let run = PathBuf::from(stdout.lines().last().unwrap());
    assert!(
        run.join("manifest.json").is_file(),
        "last line of stdout is the run folder: {stdout}"
    );
    for f in [
        "features.parquet",
        "cohort_complex_needs.parquet",
        "report.html",
        "quarantine/admissions.parquet",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("manifest.json")).unwrap()).unwrap();
    let pop = m["population"].as_u64().unwrap();
    assert!(pop > 2500 && pop < 3000, "population {pop}");
    assert!(m["optouts"]["patients_excluded"].as_u64().unwrap() > 30);
    let cohort = m["cohorts"]["complex_needs"].as_u64().unwrap();
    assert!(cohort > 0 && cohort < pop / 4, "cohort {cohort} of {pop}");

    // No opted-out person appears anywhere in the run folder.
    let opted = opted_out_ids(&data.join("optouts.parquet"));
    assert!(!opted.is_empty());
    assert_no_ids_in(&run, &opted);
}

/// Regression (issue 16, twelfth round): two runs of one job on the same data differed
/// in their last bits (money summed as floating point in the order rows arrived, the
/// model fitted on rows in the order the partitions delivered them), so scores differed
/// and a near tie in the service evaluation's matching could go either way. With four
/// partitions delivering rows in a varying order, two runs give the same model and
/// metrics byte for byte and the same values in every per-person and evaluation file;
/// so does a third that computes the risk at the index dates in several plans, as a
/// memory limit makes a run at scale do.
#[test]
fn a_job_run_twice_gives_the_same_results_to_the_last_bit() {
    let dir = scratch("cli_run_twice");
    let data = dir.join("data");
    let o = synth(&data, 12000, 11);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = data.join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap();
    std::fs::write(
        &job,
        format!("{text}\n[resources]\ntarget_partitions = 4\n"),
    )
    .unwrap();
    let run = |plan: Option<&str>| {
        let mut c = riskstrat();
        if let Some(n) = plan {
            c.env("RISKSTRAT_EPISODES_PER_PLAN", n);
            c.env("RISKSTRAT_LOG", "riskstrat=debug,warn");
        }
        let o = c.arg("run").arg(&job).output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let folder = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
        (folder, stderr(&o))
    };
    let (first, _) = run(None);
    let (second, _) = run(None);
    let (split, log) = run(Some("400"));
    let plans = log
        .lines()
        .find_map(|l| l.split(" index episodes in ").nth(1))
        .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok());
    assert!(plans.is_some_and(|n| n >= 3), "{plans:?} plans:\n{log}");
    for other in [&second, &split] {
        same_results(&first, other);
    }
}

/// Two run folders' model and metrics are the same bytes, and their per-person and
/// service evaluation files the same values.
fn same_results(a: &Path, b: &Path) {
    for f in ["model.json", "metrics.json"] {
        let same = std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap();
        assert!(same, "{f} differs");
    }
    let sorted_rows = |path: &Path| {
        let mut rows: Vec<String> = riskstrat::report::rows(&read_parquet(path))
            .unwrap()
            .iter()
            .map(|r| format!("{r:?}"))
            .collect();
        rows.sort();
        rows
    };
    for f in [
        "features.parquet",
        "scores.parquet",
        "cohort_complex_needs.parquet",
        "service_people.parquet",
        "service_outcomes.parquet",
        "service_balance.parquet",
    ] {
        let (x, y) = (sorted_rows(&a.join(f)), sorted_rows(&b.join(f)));
        assert!(x.len() > 3, "{f}: {} rows", x.len());
        let differ = x.iter().zip(&y).filter(|(p, q)| p != q).count();
        assert!(
            x.len() == y.len() && differ == 0,
            "{f}: {differ} rows differ"
        );
    }
}

fn opted_out_ids(path: &Path) -> std::collections::HashSet<String> {
    pseudo_ids(path)
        .into_iter()
        .map(|v| v.to_lowercase())
        .collect()
}

/// A run killed with SIGKILL part way leaves no run folder and harms no earlier run;
/// the next run succeeds.
#[test]
fn run_killed_part_way_leaves_no_run_folder() {
    let dir = scratch("cli_sigkill");
    let data = dir.join("data");
    let o = synth(&data, 60000, 3);
    assert!(o.status.success(), "{}", stderr(&o));
    let job = data.join("job.toml");
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let job_dir = data.join("runs/complex-needs");
    let earlier = list_runs(&data.join("runs"), "complex-needs");
    assert_eq!(earlier.len(), 1);
    let before = snapshot(&earlier[0]);

    // Start a run and kill it once its staging folder exists (it is writing outputs).
    let mut child = riskstrat().arg("run").arg(&job).spawn().unwrap();
    let start = std::time::Instant::now();
    loop {
        let staging = std::fs::read_dir(&job_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".staging-"));
        if staging || start.elapsed().as_secs() > 120 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be killed"
    );
    assert_eq!(list_runs(&data.join("runs"), "complex-needs"), earlier);
    assert_eq!(snapshot(&earlier[0]), before);

    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let after = list_runs(&data.join("runs"), "complex-needs");
    assert_eq!(after.len(), 2);
    let leftovers: Vec<_> = std::fs::read_dir(&job_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "stale staging folders remain");
}

/// Fitting needs enough data: a feature nobody varies on, or no one at T0, is a
/// clear error (exit 2), not NaN output.
#[test]
fn model_that_cannot_be_fitted_is_a_clear_error() {
    let with_training_year = small_dataset_with_a_training_year;
    let dir = scratch("cli_model_errors");
    let job = with_training_year().write(&dir, "2026-04-01");
    let fit_job = std::fs::read_to_string(&job).unwrap();
    let fit_job = &fit_job[..fit_job.find("[model]").unwrap()];
    // Everyone was born in 1960: age's coefficient cannot be estimated.
    std::fs::write(&job, fit_job).unwrap();
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["feature age", "one value", "T0 = 2025-04-01"]);
    // Nobody is registered at T0 = A - 365.
    let mut ds = with_training_year();
    for p in &mut ds.patients {
        p.start = d("2025-05-01");
    }
    let job = ds.write(&dir, "2026-04-01");
    std::fs::write(&job, fit_job).unwrap();
    let o = run_job(&job);
    assert_bad_input(&dir, &o, &["training set is empty"]);
    // No event in the training year at all (regression, fault review of 2026-12-07:
    // the fit failed on a constant feature, advising to remove it from the model).
    std::fs::write(
        &job,
        fit_job.replace("as_of = \"2026-04-01\"", "as_of = \"2000-06-01\""),
    )
    .unwrap();
    let o = run_job(&job);
    assert_bad_input(
        &dir,
        &o,
        &[
            "input appointments: its events run from 2024-06-01 to 2025-06-01, none in the model's training year [1998-06-02, 1999-06-02)",
            "run with --as-of 2026-06-01 or later",
        ],
    );
}

#[test]
fn demo_runs_and_reports_model_and_tiers() {
    // The demo as a newcomer runs it: 50,000 people, seed 42.
    let dir = scratch("cli_demo");
    let o = riskstrat()
        .args(["demo", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "population at 2026-04-01",
        "opt-outs applied",
        "validation AUC",
        "risk tiers: very_high",
        "cohort complex_needs",
        "gate: pseudonymised the extracts",
        "released",
        "feedback from T01: 5 outcomes imported",
        "3 left out after declining",
        "audit log: 4 records, chain intact",
        "service VW01:",
    ] {
        assert!(out.contains(needle), "demo output lacks '{needle}':\n{out}");
    }
    let run = PathBuf::from(out.lines().last().unwrap());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap();
    // Published tools reach c-statistics of 0.73-0.80; the synthetic need is built so
    // that a model learns as they do, and calibrates on unseen people.
    let auc = metrics["validation"]["auc"].as_f64().unwrap();
    assert!((0.75..=0.85).contains(&auc), "validation AUC {auc}");
    let slope = metrics["validation"]["calibration_slope"].as_f64().unwrap();
    assert!((0.9..=1.1).contains(&slope), "calibration slope {slope}");
    for key in ["auc_ci", "brier", "calibration_slope", "hosmer_lemeshow"] {
        assert!(
            !metrics["validation"][key].is_null(),
            "metrics.json lacks validation.{key}"
        );
    }
    for group in ["sex", "age_band", "imd_quintile"] {
        assert!(
            metrics["subgroups"][group].is_object(),
            "metrics.json lacks subgroups.{group}"
        );
    }
    let model: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["features"].as_array().unwrap().len(), 12);
    assert!(
        model["coefficients"]["intercept"].is_f64()
            && model["std_errors"]["charlson_score"].is_f64()
    );
    assert_eq!(model["t0"], "2025-04-01");
    assert!(model["converged"].as_bool().unwrap());
}

/// Monthly scoring with a yearly refit: a later run scores with the model.json of an
/// earlier one, and does not fit.
#[test]
fn score_only_run_uses_a_saved_model() {
    let dir = scratch("cli_score_only");
    let data = dir.join("data");
    let o = synth(&data, 4000, 5);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run_job(&data.join("job.toml"));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    let job = std::fs::read_to_string(data.join("job.toml")).unwrap();
    let saved = first.join("model.json");
    std::fs::write(
        data.join("monthly.toml"),
        format!("{job}\n[model]\nload = \"{}\"\n", saved.display()),
    )
    .unwrap();
    let o = riskstrat()
        .arg("run")
        .arg(data.join("monthly.toml"))
        .args(["--as-of", "2026-05-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let second = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    let m1: serde_json::Value =
        serde_json::from_slice(&std::fs::read(first.join("model.json")).unwrap()).unwrap();
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("model.json")).unwrap()).unwrap();
    assert_eq!(m1["coefficients"], m2["coefficients"]);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["score_only"], true);
}

/// `audit verify` passes an untouched log (exit 0) and names the first broken link of
/// an edited one (exit 1).
#[test]
fn audit_verify_exit_codes() {
    use riskstrat::governance::audit::{Record, append};
    let dir = scratch("cli_audit");
    let log = dir.join("audit.jsonl");
    for k in 0..3 {
        let r = Record {
            actor: format!("ig.lead.{k}"),
            action: riskstrat::governance::audit::Action::Approve,
            team: Some("T01".into()),
            ..Default::default()
        };
        append(&log, r).unwrap();
    }
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("3 records, chain intact"));
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replacen("T01", "T02", 1);
    std::fs::write(&log, text).unwrap();
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 1"), "{}", stderr(&o));
}

/// The gate operator's approval lands in the audit log and verifies; a bad one exits 2
/// and writes nothing.
#[test]
fn approve_records_in_the_audit_log() {
    let dir = scratch("cli_approve");
    let teams = dir.join("teams.toml");
    std::fs::write(
        &teams,
        "[[team]]\nid = \"T01\"\nname = \"North\"\npractices = [\"A81001\"]\nmembers = [\"gp.north.1\"]\n",
    )
    .unwrap();
    let log = dir.join("audit.jsonl");
    let approve = |team: &str, expires: &str| {
        riskstrat()
            .args([
                "approve",
                "--team",
                team,
                "--cohort",
                "complex_needs",
                "--purpose",
                "direct-care",
                "--expires",
                expires,
            ])
            .args(["--job", "complex-needs"])
            .args(["--approver", "caldicott.guardian", "--teams"])
            .arg(&teams)
            .arg("--audit")
            .arg(&log)
            .output()
            .unwrap()
    };
    let today = chrono::Utc::now().date_naive();
    let in_days = |n: u64| (today + chrono::Days::new(n)).to_string();
    let o = approve("T01", &in_days(366));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = approve("T02", &in_days(30));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("T02"));
    let o = approve("T01", "2000-01-01");
    assert_eq!(o.status.code(), Some(2));
    // Regression: an approval could run for ever.
    let o = approve("T01", "9999-12-31");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at most 366 days"), "{}", stderr(&o));
    // Regression: a team member could approve their own team.
    let o = riskstrat()
        .args(["approve", "--team", "T01", "--cohort", "complex_needs"])
        .args(["--job", "complex-needs"])
        .args(["--purpose", "direct-care", "--expires", &in_days(30)])
        .args(["--approver", "gp.north.1", "--teams"])
        .arg(&teams)
        .arg("--audit")
        .arg(&log)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot approve its own releases"),
        "{}",
        stderr(&o)
    );
    let approvals = riskstrat::governance::teams::approvals(&log).unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].team, "T01");
    let o = riskstrat()
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(o.status.success());
}

/// A team's returned list is pseudonymised (no NHS number is written anywhere), the
/// import is audited, and the next run leaves people marked declined out of cohorts.
#[test]
fn feedback_import_then_next_run_excludes_declined() {
    use riskstrat::governance::pseudonym::pseudo_id;
    use riskstrat::synth::{synthetic_key, synthetic_nhs_number};
    let dir = scratch("cli_feedback");
    let data = dir.join("data");
    let o = synth(&data, 4000, 9);
    assert!(o.status.success(), "{}", stderr(&o));
    let today = chrono::Utc::now().date_naive().to_string();
    let run_at_today = |job: &Path| {
        let o = riskstrat()
            .arg("run")
            .arg(job)
            .args(["--as-of", &today])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
    };
    let first = run_at_today(&data.join("job.toml"));
    let cohort: Vec<String> = pseudo_ids(&first.join("cohort_complex_needs.parquet"))
        .into_iter()
        .collect();
    assert!(cohort.len() >= 5, "cohort too small: {}", cohort.len());

    // The gate side knows NHS numbers: find those of five cohort members.
    let key = synthetic_key(9);
    let nhs_of: std::collections::HashMap<String, String> = (0..4000)
        .map(synthetic_nhs_number)
        .map(|n| (pseudo_id(&key, &n), n))
        .collect();
    assert!(cohort.len() >= 6, "cohort too small: {}", cohort.len());
    let nhs: Vec<&String> = cohort[..6].iter().map(|id| &nhs_of[id]).collect();
    // Lines 9-11: a person at a practice the team does not serve, a valid number the
    // vault does not hold (an objector, say), a "service code" carrying a name.
    let stranger = synthetic_nhs_number(999_999);
    let csv = format!(
        "nhs_number,outcome,comment\n{},declined,\n\"{} \",not_appropriate,x\n{},declined,\n{},reviewed,\n{},enrolled:VW01,\n1234567890,declined,\n{},maybe,\n{},declined,\n{stranger},declined,\n{},enrolled:ISLADAVIS19451203,\n",
        nhs[0], nhs[1], nhs[2], nhs[3], nhs[4], nhs[4], nhs[5], nhs[3]
    );
    let returned = dir.join("returned.csv");
    std::fs::write(&returned, &csv).unwrap();
    let key_file = dir.join("pseudonym.key");
    key.write_file(&key_file).unwrap();
    // The gate's vault: the first five at the team's practice, the sixth elsewhere.
    let vault = dir.join("vault.parquet");
    let vault_key = dir.join("vault.key");
    let vk = riskstrat::governance::pseudonym::Key::random();
    vk.write_file(&vault_key).unwrap();
    {
        use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
        let schema = riskstrat::governance::vault::schema();
        let ids: Vec<&str> = cohort[..6].iter().map(String::as_str).collect();
        let practices = ["A81001", "A81001", "A81001", "A81001", "A81001", "B82001"];
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "pseudo_id" => std::sync::Arc::new(StringArray::from(ids.clone())) as ArrayRef,
                "practice_code" => std::sync::Arc::new(StringArray::from(practices.to_vec())),
                _ => new_null_array(f.data_type(), 6),
            })
            .collect();
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        riskstrat::governance::vault::write(&vault, &vk, &[batch]).unwrap();
    }
    let teams = dir.join("teams.toml");
    std::fs::write(&teams, "[[team]]\nid = \"T01\"\nname = \"North\"\npractices = [\"A81001\"]\nmembers = [\"nurse.north.2\"]\n").unwrap();
    let audit = dir.join("audit.jsonl");
    let import = |importer: &str| {
        riskstrat()
            .args([
                "feedback",
                "import",
                "--team",
                "T01",
                "--importer",
                importer,
                "--in",
            ])
            .arg(&returned)
            .arg("--key")
            .arg(&key_file)
            .arg("--vault")
            .arg(&vault)
            .arg("--vault-key")
            .arg(&vault_key)
            .arg("--teams")
            .arg(&teams)
            .arg("--audit")
            .arg(&audit)
            .arg("--out")
            .arg(data.join("feedback"))
            .output()
            .unwrap()
    };
    let o = import("someone.else");
    assert_eq!(o.status.code(), Some(2), "a non-member's import is refused");
    let o = import("nurse.north.2");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("imported 5 of 10 rows"), "{out}");
    assert!(
        out.contains("line 7 not imported: invalid_nhs_number_check_digit")
            && out.contains("line 8 not imported: invalid_outcome"),
        "{out}"
    );
    // Regression: any team could mark anyone declined (taking them off every team's
    // list), objectors' feedback was written, and a service code could carry text.
    assert!(
        out.contains("line 9 not imported: not_registered_with_the_team")
            && out.contains("line 10 not imported: not_in_the_vault")
            && out.contains("line 11 not imported: invalid_outcome"),
        "{out}"
    );
    assert!(!out.contains(stranger.as_str()));
    for n in &nhs {
        assert!(!out.contains(n.as_str()));
    }
    let records = riskstrat::governance::audit::read(&audit).unwrap();
    assert_eq!(
        records
            .iter()
            .map(|r| r.action.as_str())
            .collect::<Vec<_>>(),
        vec!["refuse", "feedback_import"]
    );
    assert_eq!(records[1].patients, Some(5));

    // No NHS number in anything written on the analysts' side or in the audit log.
    let mut written = walk(&data.join("feedback"));
    written.push(audit.clone());
    for f in written {
        let text = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
        for n in &nhs {
            assert!(
                !text.contains(n.as_str()),
                "{} holds an NHS number",
                f.display()
            );
        }
    }

    let job = std::fs::read_to_string(data.join("job.toml"))
        .unwrap()
        .replace("[inputs]", "[inputs]\nfeedback = \"feedback/\"");
    std::fs::write(data.join("with_feedback.toml"), job).unwrap();
    let second = run_at_today(&data.join("with_feedback.toml"));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(second.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["feedback"]["declined"], 2);
    assert_eq!(m["feedback"]["not_appropriate"], 1);
    assert_eq!(m["feedback"]["reviewed"], 1);
    assert_eq!(m["feedback"]["enrolled"], 1);
    assert_eq!(m["feedback_excluded"]["complex_needs"], 3);
    let after: std::collections::HashSet<String> =
        pseudo_ids(&second.join("cohort_complex_needs.parquet"))
            .into_iter()
            .collect();
    assert_eq!(after.len(), cohort.len() - 3);
    for (k, id) in cohort[..5].iter().enumerate() {
        assert_eq!(after.contains(id), k >= 3, "member {k}");
    }

    // A feedback file not written by `feedback import`: a service code that carries
    // text, or sits on the wrong outcome, is quarantined, never counted for
    // commissioners.
    let written = walk(&data.join("feedback"));
    let imported = read_parquet(&written[0]);
    let schema = imported[0].schema();
    let id = cohort[3].as_str();
    let rows = datafusion::arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            utf8(&[id, id, id]),
            utf8(&["T01", "T01", "T01"]),
            utf8(&["enrolled", "declined", "enrolled"]),
            std::sync::Arc::new(datafusion::arrow::array::StringArray::from(vec![
                Some("ISLADAVIS19451203"),
                Some("VW01"),
                None,
            ])),
            date(&[riskstrat::sql::date32(chrono::Utc::now().date_naive()); 3]),
        ],
    )
    .unwrap();
    let extra = data.join("feedback/feedback-T01-extra.parquet");
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&extra).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.write(&rows).unwrap();
    w.close().unwrap();
    let third = run_at_today(&data.join("with_feedback.toml"));
    let q = read_parquet(&third.join("quarantine/feedback.parquet"));
    let reasons: Vec<String> = q
        .iter()
        .flat_map(|b| {
            let r = b.column_by_name("reason").unwrap();
            let r = r
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .unwrap();
            r.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(reasons, ["invalid_service_code"; 3]);
}

// --- small Parquet writer for malformed tables ---

fn utf8(v: &[&str]) -> datafusion::arrow::array::ArrayRef {
    std::sync::Arc::new(datafusion::arrow::array::StringArray::from(v.to_vec()))
}

fn date(v: &[i32]) -> datafusion::arrow::array::ArrayRef {
    std::sync::Arc::new(datafusion::arrow::array::Date32Array::from(v.to_vec()))
}

fn write_table(path: &Path, cols: &[(&str, datafusion::arrow::array::ArrayRef)]) {
    let batch = datafusion::arrow::array::RecordBatch::try_from_iter(
        cols.iter().map(|(n, a)| (*n, a.clone())),
    )
    .unwrap();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

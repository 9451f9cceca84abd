//! The outcomes stage on hand-written people: who is evaluated, who is matched to
//! whom (exact cells of emergency use at the start date, then risk), person-time
//! (registration, death, end of data) and events before and after the start date and
//! in the placebo year, the rates, difference in differences and balance, each checked
//! against arithmetic done here by hand. (The statistics themselves are checked against
//! numpy and statsmodels in `models/tests/outcomes_reference.rs`.) Then a reduced
//! version of the check against synthetic data with known effects
//! (`pipeline/examples/service_eval_check.rs` runs the full one).

use crate::common::*;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, StringArray};

/// Risk from IMD decile alone, so that matches are plain to see.
const MODEL: &str = r#"{
  "features": ["imd_decile"],
  "coefficients": {"intercept": -2.0, "imd_decile": -0.3}
}"#;

fn spell(who: &str, n: usize, date: &str, days: u64) -> Spell {
    let date = d(date);
    Spell {
        id: pid(who),
        spell: format!("{who}-{n}"),
        date,
        discharge: Some(date + chrono::Days::new(days)),
        method: "21",
        primary: Some("J189"),
        secondary: Some(vec![]),
        cost: 1000.0,
    }
}

#[test]
fn service_outcomes_match_a_hand_computation() {
    let mut ds = Dataset::default();
    let person = |name: &str, imd: i32| {
        let mut p = Patient::new(name);
        p.imd = Some(imd);
        p
    };
    // Everyone is a woman born in 1960: one sex and age band.
    ds.patients.push(person("t1", 3));
    let mut t2 = person("t2", 5);
    t2.start = d("2025-02-01");
    t2.death = Some(d("2026-01-31"));
    ds.patients.push(t2);
    ds.patients.push(person("c1", 3));
    // In t1's cell at its start, but far on risk: not chosen.
    ds.patients.push(person("c1_far", 9));
    ds.patients.push(person("c1_old", 3));
    ds.patients.push(person("c2", 5));
    for k in 0..5 {
        ds.patients.push(person(&format!("d{k}"), 9));
    }
    ds.patients.push(person("objector", 3));
    // Enrolled before t2's start: no longer a possible comparison patient.
    ds.patients.push(person("old_enrolment", 5));
    ds.optouts.push((pid("objector"), "ndoo", d("2020-01-01")));

    ds.services
        .push((pid("t1"), "VW01", d("2025-06-15"), Some(d("2025-07-01"))));
    ds.services.push((pid("t2"), "VW01", d("2025-10-20"), None));
    ds.services
        .push((pid("objector"), "VW01", d("2025-06-20"), None));
    // Started before the two-year window: not evaluated.
    ds.services
        .push((pid("old_enrolment"), "VW01", d("2024-01-10"), None));

    ds.admissions = vec![
        // t1: one admission in the year before its start, and the crisis that led to
        // referral: cell (1 in the 90 days before, 2 in the 365).
        spell("t1", 1, "2024-08-01", 3),
        spell("t1", 2, "2025-06-10", 3),
        spell("t2", 1, "2025-11-05", 5),
        // c1 and c1_far: the same cell as t1 at its index day 2025-06-16 (1 in 90
        // days, 2 in 365, the last discharge within 28 days).
        spell("c1", 1, "2024-12-01", 2),
        spell("c1", 2, "2025-06-01", 4),
        spell("c1", 3, "2025-09-01", 4),
        spell("c1_far", 1, "2024-12-01", 2),
        spell("c1_far", 2, "2025-06-01", 4),
        // In t1's cell but for the recency of the last discharge (2025-05-05, 42
        // days before): not a candidate, though nearer on risk than c1_far.
        spell("c1_old", 1, "2024-12-01", 2),
        spell("c1_old", 2, "2025-05-01", 4),
        // c2: nothing in the year before t2's start (like t2), one in the placebo year.
        spell("c2", 1, "2024-03-01", 2),
        spell("c2", 2, "2025-11-20", 1),
        // Elective: not an emergency admission.
        Spell {
            method: "11",
            ..spell("c2", 3, "2025-12-01", 2)
        },
        spell("objector", 1, "2025-06-01", 2),
    ];
    ds.appointments.push(Appt {
        id: Some(pid("d0")),
        date: d("2025-06-01"),
        hcp: "GP",
        mode: "Face-to-Face",
        status: "Attended",
    });
    ds.prescriptions.push(Rx {
        id: Some(pid("d0")),
        date: d("2025-06-01"),
        bnf: "0212000B0AAABAB",
        items: 1,
        nic: 3.0,
    });

    let dir = scratch("outcomes_hand");
    let job = ds.write(&dir, "2026-04-01");
    std::fs::write(dir.join("model.json"), MODEL).unwrap();
    let o = run_job(&job);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap());
    let b = &read_parquet(&run.join("service_outcomes.parquet"))[0];
    let s = |c: &str| {
        b.column_by_name(c)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .clone()
    };
    let i = |c: &str| {
        b.column_by_name(c)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    };
    let f = |c: &str| {
        b.column_by_name(c)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone()
    };
    assert_eq!(b.num_rows(), 2);
    assert_eq!(s("service_code").value(0), "VW01");
    assert_eq!(s("outcome").value(0), "emergency_admissions");
    assert_eq!(s("outcome").value(1), "bed_days");
    // t1 and t2; not the objector, not the enrolment before the window.
    assert_eq!(i("enrolled").value(0), 2);
    assert_eq!(i("treated").value(0), 2);
    assert_eq!(i("controls").value(0), 2);
    assert_eq!(f("match_rate").value(0), 1.0);

    // By hand, from each index day (the day after the start: t1 2025-06-16, t2
    // 2025-10-21). t1 (matched to c1: same cell, same risk): before [2024-06-16,
    // 2025-06-16) 365 days, 2 admissions (6 bed days); after [2025-06-16, 2026-04-01)
    // 289 days, none. t2 (matched to c2): registered 2025-02-01, so before is 262
    // days, none; died 2026-01-31, so after is 103 days, 1 admission (5 bed days).
    // c1: 365 days, 2 admissions (6 bed days); 289 days, 1 (4). c2: 365 days, none;
    // after [2025-10-21, 2026-04-01) 162 days, 1 (1 bed day; its December spell is
    // elective). Placebo year [index - 730, index - 365): t1 365 days, none; t2 none
    // (not registered); c1 365 days, none; c2 365 days, 1 (2 bed days).
    let rate = |events: f64, days: f64| events / (days / 365.25) * 1000.0;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let checks = [
        (
            0,
            [rate(0.0, 365.0), rate(1.0, 730.0)],
            [rate(2.0, 627.0), rate(1.0, 392.0)],
            [rate(2.0, 730.0), rate(2.0, 451.0)],
        ),
        (
            1,
            [rate(0.0, 365.0), rate(2.0, 730.0)],
            [rate(6.0, 627.0), rate(5.0, 392.0)],
            [rate(6.0, 730.0), rate(5.0, 451.0)],
        ),
    ];
    for (row, [tp, cp], [tb, ta], [cb, ca]) in checks {
        assert!(
            close(f("treated_before").value(row), tb),
            "row {row} treated_before"
        );
        assert!(
            close(f("treated_after").value(row), ta),
            "row {row} treated_after"
        );
        assert!(
            close(f("control_before").value(row), cb),
            "row {row} control_before"
        );
        assert!(
            close(f("control_after").value(row), ca),
            "row {row} control_after"
        );
        let did = (ta - tb) - (ca - cb);
        assert!(close(f("did").value(row), did), "row {row} did");
        assert!(f("did_ci_low").value(row) < did && did < f("did_ci_high").value(row));
        let placebo = (tb - tp) - (cb - cp);
        assert!(
            close(f("placebo_did").value(row), placebo),
            "row {row} placebo_did {} vs {placebo}",
            f("placebo_did").value(row)
        );
        // Same cell, same risk, same age; bed days in the 90 days before differ (t1 3,
        // c1 4; t2 and c2 none): means 1.5 and 2, variances 4.5 and 8, so the SMD is
        // -0.5 / sqrt(6.25) = -0.2, the largest, and 0.1 or more is a warning.
        assert!(close(f("max_smd_after").value(row), 0.2), "row {row}");
        assert_eq!(i("warning_low_match_rate").value(row), 0);
        assert_eq!(i("warning_imbalance").value(row), 1);
        // Two pairs cannot detect a halving of the comparison rate: 2.8 standard
        // errors of the DiD (its interval's width over 2 x 1.96) exceed half of it.
        let se = (f("did_ci_high").value(row) - f("did_ci_low").value(row)) / (2.0 * 1.959964);
        assert!(
            2.801585 * se >= 0.5 * ca,
            "row {row}: se {se}, control_after {ca}"
        );
        assert_eq!(i("warning_imprecise").value(row), 1, "row {row}");
    }

    // The balance table: one row per matching variable.
    let bal = &read_parquet(&run.join("service_balance.parquet"))[0];
    assert_eq!(bal.num_rows(), 11);
    let var = bal
        .column_by_name("variable")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap();
    let bf = |c: &str| {
        bal.column_by_name(c)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone()
    };
    let row = |name: &str| (0..bal.num_rows()).find(|&r| var.value(r) == name).unwrap();
    let a365 = row("emergency_admissions_365d");
    assert_eq!(bf("treated_mean").value(a365), 1.0); // t1 2, t2 0
    assert_eq!(bf("control_mean").value(a365), 1.0); // c1 2, c2 0
    let a90 = row("emergency_admissions_90d");
    assert_eq!(bf("treated_mean").value(a90), 0.5);
    assert_eq!(bf("smd_after").value(a90), 0.0);
    assert_eq!(bf("smd_after").value(a365), 0.0);
    assert!(close(bf("smd_after").value(row("bed_days_90d")), -0.2));
    assert_eq!(bf("smd_after").value(row("bed_days_365d")), 0.0);
    assert_eq!(bf("treated_mean").value(row("age")), 65.0);

    // The commissioner view leaves the row out, as if there were none: 2 people is
    // fewer than 8 (a small cell looks exactly like an empty one).
    let o = riskstrat()
        .args(["query", "--run"])
        .arg(&run)
        .args(["--requester", "commissioner.1", "--audit"])
        .arg(run.parent().unwrap().join("query-audit.jsonl"))
        .args([
            "--format",
            "json",
            "SELECT service_code, outcome, treated, did FROM service_outcomes",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v, serde_json::json!([]), "{v}");
}

/// `synth --service-effect`: the truth file beside the data, with no effect where none
/// was asked for, and a fall in admissions where one was.
#[test]
fn synth_writes_the_truth_of_its_services() {
    let dir = scratch("outcomes_truth");
    let o = riskstrat()
        .args([
            "synth",
            "--patients",
            "20000",
            "--seed",
            "3",
            "--as-of",
            "2026-04-01",
        ])
        .args(["--service-effect", "VW01=1.0,CM01=0.5", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("truth/service_effects.json")).unwrap())
            .unwrap();
    let vw = &t["services"]["VW01"];
    let cm = &t["services"]["CM01"];
    assert_eq!(vw["rate_ratio"], 1.0);
    assert_eq!(cm["rate_ratio"], 0.5);
    assert!(vw["enrolled"].as_u64().unwrap() > 50, "{t}");
    assert!(cm["enrolled"].as_u64().unwrap() > 10, "{t}");
    assert_eq!(vw["emergency_admissions"]["effect"], 0.0);
    assert_eq!(vw["bed_days"]["effect"], 0.0);
    let e = &cm["emergency_admissions"];
    let (u, tr) = (
        e["untreated_rate"].as_f64().unwrap(),
        e["treated_rate"].as_f64().unwrap(),
    );
    // Most community matron enrolments stay open, so most of the follow-up year is
    // enrolled: the treated rate is between half the untreated and the untreated.
    assert!(tr < 0.9 * u && tr > 0.45 * u, "{e}");
    assert!((e["effect"].as_f64().unwrap() - (tr - u)).abs() < 1e-9);
    // An unknown service or a bad ratio is bad input.
    for bad in ["XX01=0.8", "VW01=0", "VW01", "VW01=abc"] {
        let o = riskstrat()
            .args(["synth", "--patients", "10", "--as-of", "2026-04-01"])
            .args(["--service-effect", bad, "--out"])
            .arg(dir.join("bad"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("--service-effect"),
            "{bad}: {}",
            stderr(&o)
        );
    }
}

/// Regression: with a true effect, synth's virtual ward averted the very admission
/// that led to the referral (discharged the day the service started), so the truth
/// counted an admission the service could not have prevented, and the data lost the
/// admission that explains the enrolment (19 of 280 with a ratio of 0.001). With a
/// ratio near 0, every enrolment of a known patient must still follow an emergency
/// discharge within the two days before its start.
#[test]
fn a_service_never_averts_the_admission_that_led_to_the_referral() {
    let dir = scratch("outcomes_referral_kept");
    let o = riskstrat()
        .args(["synth", "--patients", "20000", "--seed", "5"])
        .args(["--as-of", "2026-04-01", "--service-effect", "VW01=0.001"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (enrolled, explained) = rt.block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let opts = datafusion::prelude::ParquetReadOptions::default();
        let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
        ctx.register_parquet("services", &p("services.parquet"), opts.clone())
            .await
            .unwrap();
        ctx.register_parquet("admissions", &p("admissions"), opts.clone())
            .await
            .unwrap();
        ctx.register_parquet("patients", &p("patients.parquet"), opts)
            .await
            .unwrap();
        let batches = ctx
            .sql(
                "SELECT count(*) AS enrolled, count(hit) AS explained FROM (
                   SELECT s.pseudo_id, max(a.spell_id) AS hit
                   FROM services s
                   -- synth's orphan rows (no such patient) are quarantined by a run
                   JOIN (SELECT DISTINCT pseudo_id FROM patients) p ON p.pseudo_id = s.pseudo_id
                   LEFT JOIN admissions a
                     ON a.pseudo_id = s.pseudo_id
                    AND a.admission_method LIKE '2%'
                    AND a.discharge_date >= s.start_date - INTERVAL '2 days'
                    AND a.discharge_date <= s.start_date
                   WHERE s.service_code = 'VW01'
                   GROUP BY s.pseudo_id
                 )",
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let col = |k: usize| {
            batches[0]
                .column(k)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0)
        };
        (col(0), col(1))
    });
    assert!(enrolled > 100, "{enrolled}");
    assert_eq!(
        explained, enrolled,
        "enrolments whose referral admission was averted"
    );
}

/// Regression: services with no effect were reported as harmful (+140 to +202 per
/// 1,000 person-years for a virtual ward that does nothing), because the start day's
/// own admission counted as an outcome and comparison patients' admissions were
/// older than the enrolled patients' discharge. 4 seeds of 25,000 people.
#[test]
fn a_service_with_no_effect_is_not_reported_as_harm() {
    use riskstrat::service_evaluation_check::{run_seed, summarise};
    let effects = riskstrat::synth::ServiceEffects::parse("VW01=1.0,CM01=1.0").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all = Vec::new();
    for seed in 1..=4 {
        let dir = scratch(&format!("outcomes_null_{seed}"));
        all.extend(
            rt.block_on(run_seed(
                &dir,
                25_000,
                seed,
                d("2026-04-01"),
                &effects,
                None,
            ))
            .unwrap(),
        );
    }
    let summaries = summarise(&all);
    eprintln!("{}", riskstrat::service_evaluation_check::table(&summaries));
    for s in summaries
        .iter()
        .filter(|s| s.outcome == "emergency_admissions")
    {
        assert_eq!(s.runs, 4, "{s:?}");
        assert_eq!(s.mean_truth, 0.0, "{s:?}");
        assert!(
            s.mean_error.abs() <= 3.0 * s.mc_se && s.mean_error.abs() < s.baseline / 6.0,
            "{s:?}"
        );
        assert!(s.coverage >= 0.75, "{s:?}");
    }
}

/// The full check in small: a few seeds of a small population, the virtual ward with a
/// true rate ratio of 0.8 (its bigger service: about 130 pairs a seed at 25,000 people)
/// and the community matrons with none. The estimate must be near the truth (within
/// sampling error: 4 Monte Carlo standard errors, and a sixth of the baseline rate),
/// the intervals must cover it in most runs, and every matching variable must be
/// balanced after matching and weighting. (Match rates are not checked: thin cells
/// leave enrolled patients unmatched, and the run warns of it.)
#[test]
fn service_evaluation_recovers_known_effects() {
    use riskstrat::service_evaluation_check::{run_seed, summarise};
    let effects = riskstrat::synth::ServiceEffects::parse("VW01=0.8,CM01=1.0").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut all = Vec::new();
    for seed in 1..=4 {
        let dir = scratch(&format!("outcomes_check_{seed}"));
        let rs = rt
            .block_on(run_seed(
                &dir,
                50_000,
                seed,
                d("2026-04-01"),
                &effects,
                None,
            ))
            .unwrap();
        all.extend(rs);
    }
    let summaries = summarise(&all);
    eprintln!("{}", riskstrat::service_evaluation_check::table(&summaries));
    let of = |svc: &str| {
        summaries
            .iter()
            .find(|s| s.service == svc && s.outcome == "emergency_admissions")
            .unwrap()
    };
    let s = of("VW01");
    assert_eq!(s.runs, 4, "{s:?}");
    assert!(s.mean_treated > 100.0, "{s:?}");
    assert!(
        s.mean_error.abs() <= 4.0 * s.mc_se && s.mean_error.abs() < s.baseline / 6.0,
        "{s:?}"
    );
    assert!(s.coverage >= 0.75, "{s:?}");
    assert!(
        s.worst_smd_after < riskstrat::service_evaluation::MAX_SMD,
        "{s:?}"
    );
    // The injected effect is there in the truth, and none where none was injected.
    assert!(s.mean_truth < 0.0, "{s:?}");
    assert_eq!(of("CM01").mean_truth, 0.0);
}

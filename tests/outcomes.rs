//! The outcomes stage on hand-written people: who is evaluated, who is matched to
//! whom, person-time (registration, death, end of data) and events before and after
//! the start date, and the rates and difference in differences, each checked against
//! arithmetic done here by hand. (The statistics themselves are checked against numpy
//! and statsmodels in `models/tests/outcomes_reference.rs`.)

mod common;

use common::*;
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
        secondary: vec![],
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
    ds.patients.push(person("t1", 3));
    let mut t2 = person("t2", 5);
    t2.start = d("2025-02-01");
    t2.death = Some(d("2026-01-31"));
    ds.patients.push(t2);
    ds.patients.push(person("c1", 3));
    ds.patients.push(person("c2", 5));
    for k in 0..5 {
        ds.patients.push(person(&format!("d{k}"), 9));
    }
    ds.patients.push(person("objector", 3));
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
        spell("t1", 1, "2024-08-01", 3),
        spell("t1", 2, "2025-01-10", 3),
        spell("t2", 1, "2025-11-05", 5),
        spell("c1", 1, "2024-12-01", 2),
        spell("c1", 2, "2025-09-01", 4),
        spell("c2", 1, "2025-03-01", 1),
        spell("c2", 2, "2025-05-01", 0),
        // Elective: not an emergency admission.
        Spell {
            method: "11",
            ..spell("c2", 3, "2025-12-01", 2)
        },
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

    // By hand. t1: before [2024-06-15, 2025-06-15) 365 days, 2 admissions (6 bed
    // days); after [2025-06-15, 2026-04-01) 290 days, none. t2: registered
    // 2025-02-01, so before is 261 days, none; died 2026-01-31, so after is 104
    // days, 1 admission (5 bed days). c1 (matched to t1, same IMD): 365 days, 1
    // admission (2 bed days); 290 days, 1 (4). c2 (matched to t2): 365 days, 2
    // admissions (1 bed day); after [2025-10-20, 2026-04-01) 163 days, none (its
    // December spell is elective).
    let rate = |events: f64, days: f64| events / (days / 365.25) * 1000.0;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let checks = [
        (
            0,
            rate(2.0, 626.0),
            rate(1.0, 394.0),
            rate(3.0, 730.0),
            rate(1.0, 453.0),
        ),
        (
            1,
            rate(6.0, 626.0),
            rate(5.0, 394.0),
            rate(3.0, 730.0),
            rate(4.0, 453.0),
        ),
    ];
    for (row, tb, ta, cb, ca) in checks {
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
    }

    // The commissioner view leaves the row out, as if there were none: 2 people is
    // fewer than 8 (a small cell looks exactly like an empty one).
    let o = riskstrat()
        .args(["query", "--run"])
        .arg(&run)
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

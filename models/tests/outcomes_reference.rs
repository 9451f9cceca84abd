//! riskstrat-models' outcome evaluation against independent references: a plain
//! O(n m) greedy matching loop in Python, and the difference in differences both from
//! numpy formulas and from a statsmodels Poisson GLM (identity link, cluster-robust by
//! person). The fixture and the script that made it are in `tests/fixtures/`
//! (`make_outcomes.py` says how to rerun it).

use riskstrat_models::outcomes::{
    Candidate, Windows, caliper, difference_in_differences, match_nearest,
};
use serde_json::Value;

struct Person {
    candidate: Candidate,
    treated: bool,
    windows: Windows,
}

fn load() -> (Vec<Person>, Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("outcomes_people.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "stratum,score,treated,events_before,days_before,events_after,days_after"
    );
    let people = lines
        .map(|line| {
            let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
            Person {
                candidate: Candidate {
                    stratum: v[0] as i64,
                    score: v[1],
                },
                treated: v[2] == 1.0,
                windows: Windows {
                    events_before: v[3],
                    days_before: v[4],
                    events_after: v[5],
                    days_after: v[6],
                },
            }
        })
        .collect();
    let expected =
        serde_json::from_str(&std::fs::read_to_string(dir.join("outcomes_expected.json")).unwrap())
            .unwrap();
    (people, expected)
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= rel,
        "{what}: got {got}, reference {want} (relative error {err:e})"
    );
}

#[test]
fn matching_and_did_match_python_references() {
    let (people, r) = load();
    assert_eq!(people.len() as u64, r["n"].as_u64().unwrap());

    let scores: Vec<f64> = people.iter().map(|p| p.candidate.score).collect();
    let cal = caliper(&scores);
    close("caliper", cal, r["caliper"].as_f64().unwrap(), 1e-12);

    let treated_rows: Vec<usize> = (0..people.len()).filter(|&i| people[i].treated).collect();
    let control_rows: Vec<usize> = (0..people.len()).filter(|&i| !people[i].treated).collect();
    let want_treated: Vec<usize> = r["treated_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(treated_rows, want_treated);

    let treated: Vec<Candidate> = treated_rows.iter().map(|&i| people[i].candidate).collect();
    let controls: Vec<Candidate> = control_rows.iter().map(|&i| people[i].candidate).collect();
    // Our own caliper, end to end as the pipeline would use it.
    let got: Vec<Option<usize>> = match_nearest(&treated, &controls, cal)
        .into_iter()
        .map(|m| m.map(|j| control_rows[j]))
        .collect();
    let want: Vec<Option<usize>> = r["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().map(|j| j as usize))
        .collect();
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "treated row {}: control row", treated_rows[k]);
    }
    assert_eq!(got.len(), want.len());

    let pairs: Vec<(usize, usize)> = treated_rows
        .iter()
        .zip(&got)
        .filter_map(|(&i, m)| m.map(|j| (i, j)))
        .collect();
    let t: Vec<Windows> = pairs.iter().map(|&(i, _)| people[i].windows).collect();
    let c: Vec<Windows> = pairs.iter().map(|&(_, j)| people[j].windows).collect();
    let d = difference_in_differences(&t, &c).unwrap();

    for source in ["numpy", "statsmodels"] {
        let e = &r["did"][source];
        assert_eq!(d.n_treated as u64, e["n_treated"].as_u64().unwrap());
        assert_eq!(d.n_control as u64, e["n_control"].as_u64().unwrap());
        for (name, got) in [
            ("treated_before", d.treated_before),
            ("treated_after", d.treated_after),
            ("control_before", d.control_before),
            ("control_after", d.control_after),
            ("did", d.did),
            ("se", d.se),
            ("ci_low", d.ci_low),
            ("ci_high", d.ci_high),
        ] {
            close(
                &format!("{source} {name}"),
                got,
                e[name].as_f64().unwrap(),
                1e-9,
            );
        }
    }
}

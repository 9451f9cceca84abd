//! riskstrat-models' outcome evaluation against independent references: a plain
//! O(n m) greedy matching loop in Python, and the difference in differences both from
//! numpy formulas and from a statsmodels Poisson GLM (identity link, cluster-robust by
//! person), and the switching adjustment (delta method) the same two ways. The fixture and the script that made it are in `tests/fixtures/`
//! (`make_outcomes.py` says how to rerun it). Two services evaluated together
//! (`outcomes_services.csv`): entropy-balancing weights against scipy, the weighted
//! SMDs and DiD against numpy and statsmodels, and the joint switching adjustment
//! (controls' time in either service) against numpy and statsmodels delta methods.

use riskstrat_models::balancing::{entropy_balance, entropy_balance_penalised};
use riskstrat_models::index_matching::{Choice, match_in_lists, smd, smd_weighted};
use riskstrat_models::service_evaluation::{
    Arm, Candidate, Windows, caliper, difference_in_differences,
    difference_in_differences_clustered, difference_in_differences_weighted, match_nearest,
    switch_adjusted, switch_adjusted_services,
};
use serde_json::Value;

struct Person {
    candidate: Candidate,
    treated: bool,
    windows: Windows,
    cluster: u64,
    /// Admissions while enrolled in the service during the follow-up.
    events_in: f64,
}

fn load() -> (Vec<Person>, Value) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("outcomes_people.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "stratum,score,treated,events_before,days_before,events_after,days_after,cluster,events_in"
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
                cluster: v[7] as u64,
                events_in: v[8],
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

/// An estimate (`did`, `se`, `ci_low`, `ci_high`) against each reference
/// implementation's values (`expected(source)`).
fn check_sources<'a>(label: &str, got: [f64; 4], expected: impl Fn(&str) -> &'a Value, rel: f64) {
    for source in ["numpy", "statsmodels"] {
        let e = expected(source);
        for (name, got) in ["did", "se", "ci_low", "ci_high"].into_iter().zip(got) {
            let want = e[name].as_f64().unwrap();
            close(&format!("{label} {source} {name}"), got, want, rel);
        }
    }
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

    let tk: Vec<u64> = pairs.iter().map(|&(i, _)| people[i].cluster).collect();
    let ck: Vec<u64> = pairs.iter().map(|&(_, j)| people[j].cluster).collect();
    let dc = difference_in_differences_clustered(&t, &tk, &c, &ck).unwrap();
    for (key, d) in [("did", &d), ("did_clustered", &dc)] {
        check_did(&r[key], d);
    }
    assert!(
        (dc.se - d.se).abs() > 1e-6 * d.se,
        "the fixture's clusters change the variance"
    );

    // The switching adjustment: its estimate and delta-method variance against numpy
    // and against statsmodels' joint cluster-robust covariance.
    let t_in: Vec<f64> = pairs.iter().map(|&(i, _)| people[i].events_in).collect();
    let c_in: Vec<f64> = pairs.iter().map(|&(_, j)| people[j].events_in).collect();
    let sw = switch_adjusted(&t, &t_in, &tk, &c, &c_in, &ck).unwrap();
    let got = [sw.did, sw.se, sw.ci_low, sw.ci_high];
    check_sources(
        "switch_adjusted",
        got,
        |source| &r["switch_adjusted"][source],
        1e-9,
    );
    assert!(
        (sw.did - dc.did).abs() > 0.05 * dc.did.abs(),
        "the fixture's enrolled controls change the estimate"
    );

    // Standardised mean differences of the matched pairs.
    let col = |rows: &[usize], f: &dyn Fn(&Person) -> f64| -> Vec<f64> {
        rows.iter().map(|&i| f(&people[i])).collect()
    };
    let (ti, ci): (Vec<usize>, Vec<usize>) = pairs.iter().copied().unzip();
    for (name, f) in [
        (
            "score",
            &(|p: &Person| p.candidate.score) as &dyn Fn(&Person) -> f64,
        ),
        ("days_before", &|p: &Person| p.windows.days_before),
        ("events_before", &|p: &Person| p.windows.events_before),
    ] {
        let got = smd(&col(&ti, f), &col(&ci, f)).unwrap();
        close(
            &format!("smd {name}"),
            got,
            r["smd"][name].as_f64().unwrap(),
            1e-9,
        );
    }
}

#[test]
fn list_matching_matches_a_plain_loop() {
    let (people, r) = load();
    let lm = &r["list_matching"];
    let cal = caliper(&people.iter().map(|p| p.candidate.score).collect::<Vec<_>>());
    let rows: Vec<usize> = lm["treated_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let lists: Vec<Vec<Choice>> = lm["lists"]
        .as_array()
        .unwrap()
        .iter()
        .zip(lm["ties"].as_array().unwrap())
        .map(|(l, t)| {
            l.as_array()
                .unwrap()
                .iter()
                .zip(t.as_array().unwrap())
                .map(|(j, tie)| {
                    let j = j.as_u64().unwrap() as usize;
                    Choice {
                        key: j,
                        score: people[j].candidate.score,
                        tie: tie.as_f64().unwrap(),
                    }
                })
                .collect()
        })
        .collect();
    let scores: Vec<f64> = rows.iter().map(|&i| people[i].candidate.score).collect();
    let got = match_in_lists(&scores, &lists, cal);
    let want: Vec<Option<usize>> = lm["chosen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().map(|x| x as usize))
        .collect();
    assert_eq!(got.len(), want.len());
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "treated row {}", rows[k]);
    }
}

fn check_did(r: &Value, d: &riskstrat_models::service_evaluation::Did) {
    for source in ["numpy", "statsmodels"] {
        let e = &r[source];
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

/// One arm of one service in `outcomes_services.csv`.
#[derive(Default)]
struct ServiceArm {
    windows: Vec<Windows>,
    cluster: Vec<u64>,
    x: Vec<[f64; 3]>,
    in_service: Vec<Vec<f64>>,
}

fn load_services() -> Vec<[ServiceArm; 2]> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let text = std::fs::read_to_string(dir.join("outcomes_services.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "service,treated,events_before,days_before,events_after,days_after,x1,x2,x3,in_0,in_1,cluster"
    );
    let mut out: Vec<[ServiceArm; 2]> = vec![Default::default(), Default::default()];
    for line in lines {
        let v: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let arm = &mut out[v[0] as usize][usize::from(v[1] == 0.0)];
        arm.windows.push(Windows {
            events_before: v[2],
            days_before: v[3],
            events_after: v[4],
            days_after: v[5],
        });
        arm.x.push([v[6], v[7], v[8]]);
        arm.in_service.push(vec![v[9], v[10]]);
        arm.cluster.push(v[11] as u64);
    }
    out
}

#[test]
fn balancing_weights_and_joint_switching_match_python_references() {
    let (_, r) = load();
    let r = &r["services"];
    let services = load_services();
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let weights: Vec<Vec<f64>> = (0..2).map(|s| floats(&r["eb_weights"][s])).collect();
    for (s, [t, c]) in services.iter().enumerate() {
        // Entropy balancing: the same weights as scipy's BFGS on the dual.
        let means: Vec<f64> = (0..3)
            .map(|j| t.x.iter().map(|x| x[j]).sum::<f64>() / t.x.len() as f64)
            .collect();
        let b = entropy_balance(&means, &c.x, None).unwrap();
        assert!(b.converged);
        for (k, (got, want)) in b.weights.iter().zip(&weights[s]).enumerate() {
            close(&format!("service {s} weight {k}"), *got, *want, 1e-6);
        }
        // Approximate balancing: the ridge-penalised dual, as scipy minimises it.
        for case in r["eb_ridge"][s].as_array().unwrap() {
            let penalty = case["penalty"].as_f64().unwrap();
            let b = entropy_balance_penalised(&means, &c.x, None, penalty).unwrap();
            assert!(b.converged);
            for (k, (got, want)) in b.weights.iter().zip(floats(&case["weights"])).enumerate() {
                close(
                    &format!("service {s} penalty {penalty} weight {k}"),
                    *got,
                    want,
                    1e-6,
                );
            }
        }
        for (j, name) in ["x1", "x2", "x3"].iter().enumerate() {
            let (tx, cx): (Vec<f64>, Vec<f64>) = (
                t.x.iter().map(|x| x[j]).collect(),
                c.x.iter().map(|x| x[j]).collect(),
            );
            let e = &r["smd_weighted"][s][name];
            let before = smd_weighted(&tx, &cx, &vec![1.0; cx.len()]).unwrap();
            close(
                &format!("smd {s} {name} before"),
                before,
                e["before"].as_f64().unwrap(),
                1e-9,
            );
            close(
                &format!("smd {s} {name} unweighted"),
                before,
                smd(&tx, &cx).unwrap(),
                1e-12,
            );
            let after = smd_weighted(&tx, &cx, &weights[s]).unwrap();
            assert!(after.abs() < 1e-9 && e["after"].as_f64().unwrap().abs() < 1e-9);
        }
    }
    // The DiD with the reference weights, and the joint switching adjustment.
    let arms: Vec<(Arm, Arm)> = services
        .iter()
        .zip(&weights)
        .map(|([t, c], w)| {
            (
                Arm {
                    in_service: &t.in_service,
                    ..Arm::new(&t.windows, &t.cluster)
                },
                Arm {
                    weight: Some(w),
                    in_service: &c.in_service,
                    ..Arm::new(&c.windows, &c.cluster)
                },
            )
        })
        .collect();
    let joint = switch_adjusted_services(&arms);
    for (s, (t, c)) in arms.iter().enumerate() {
        let d = difference_in_differences_weighted(t, c).unwrap();
        check_did(&json_pair(&r["did_weighted"], s), &d);
        let sw = joint[s].as_ref().unwrap();
        // 1e-7: the references' gradient is by finite differences.
        let got = [sw.did, sw.se, sw.ci_low, sw.ci_high];
        let label = format!("switch_joint {s}");
        check_sources(&label, got, |source| &r["switch_joint"][source][s], 1e-7);
        assert!((sw.did - d.did).abs() > 0.05 * d.did.abs());
    }
}

/// `{numpy: [..], statsmodels: [..]}` -> `{numpy: ..[s], statsmodels: ..[s]}`.
fn json_pair(v: &Value, s: usize) -> Value {
    serde_json::json!({"numpy": v["numpy"][s], "statsmodels": v["statsmodels"][s]})
}

//! riskstrat-models against independent references: statsmodels, scikit-learn, a
//! pairwise DeLong and a numpy/scipy Hosmer-Lemeshow. The fixtures and the script that
//! made them are in `tests/fixtures/` (`make_fixtures.py` says how to rerun it).

use riskstrat_models::logistic::{Design, FitOptions, fit};
use riskstrat_models::metrics::{auc_delong, brier, calibration, hosmer_lemeshow};
use std::io::Read;

struct Fixture {
    names: Vec<String>,
    columns: Vec<Vec<f64>>,
    y: Vec<f64>,
    score: Vec<f64>,
    p: Vec<f64>,
    reference: serde_json::Value,
}

fn load(name: &str) -> Fixture {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join(format!("{name}.csv.gz"))).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let mut cols: Vec<Vec<f64>> = vec![Vec::new(); header.len()];
    for line in lines {
        for (k, v) in line.split(',').enumerate() {
            cols[k].push(v.parse().unwrap());
        }
    }
    let k = header.len();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    Fixture {
        names: header[1..k - 2].to_vec(),
        y: cols[0].clone(),
        score: cols[k - 2].clone(),
        p: cols[k - 1].clone(),
        columns: cols[1..k - 2].to_vec(),
        reference,
    }
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    let err = (got - want).abs() / want.abs().max(1e-300);
    assert!(
        err <= rel,
        "{what}: got {got}, statsmodels/sklearn {want} (relative error {err:e})"
    );
}

fn check(name: &str) {
    let f = load(name);
    let design = Design {
        names: f.names.clone(),
        columns: f.columns.iter().map(|c| c.as_slice()).collect(),
    };
    let fit = fit(&design, &f.y, None, &FitOptions::default()).unwrap();
    assert!(fit.converged);
    let r = &f.reference;
    for (k, n) in fit.names.iter().enumerate() {
        close(
            &format!("{name} coef {n}"),
            fit.coefficients[k],
            r["coefficients"][n].as_f64().unwrap(),
            1e-6,
        );
        close(
            &format!("{name} se {n}"),
            fit.std_errors[k],
            r["std_errors"][n].as_f64().unwrap(),
            1e-6,
        );
    }
    close(
        &format!("{name} log-likelihood"),
        fit.log_likelihood,
        r["log_likelihood"].as_f64().unwrap(),
        1e-9,
    );

    // AUC of a fixed score (with ties) and of the fitted risks, against roc_auc_score.
    let auc = auc_delong(&f.y, &f.score).unwrap();
    assert!(
        (auc.auc - r["auc_score"].as_f64().unwrap()).abs() < 1e-9,
        "{name} auc {}",
        auc.auc
    );
    let rows: Vec<Vec<f64>> = (0..f.y.len())
        .map(|i| f.columns.iter().map(|c| c[i]).collect())
        .collect();
    let p_hat: Vec<f64> = rows.iter().map(|x| fit.predict(x)).collect();
    let auc_fit = auc_delong(&f.y, &p_hat).unwrap();
    assert!(
        (auc_fit.auc - r["auc_fitted"].as_f64().unwrap()).abs() < 1e-9,
        "{name} fitted auc {}",
        auc_fit.auc
    );
    if let Some(d) = r.get("delong_score") {
        close(
            &format!("{name} DeLong variance"),
            auc.variance,
            d["variance"].as_f64().unwrap(),
            1e-9,
        );
    }

    close(
        &format!("{name} brier"),
        brier(&f.y, &f.p),
        r["brier_p"].as_f64().unwrap(),
        1e-12,
    );
    let hl = hosmer_lemeshow(&f.y, &f.p, 10).unwrap();
    close(
        &format!("{name} HL statistic"),
        hl.statistic,
        r["hosmer_lemeshow_p"]["statistic"].as_f64().unwrap(),
        1e-9,
    );
    close(
        &format!("{name} HL p"),
        hl.p_value,
        r["hosmer_lemeshow_p"]["p_value"].as_f64().unwrap(),
        1e-6,
    );
    let cal = calibration(&f.y, &f.p).unwrap();
    close(
        &format!("{name} calibration slope"),
        cal.slope,
        r["calibration_p"]["slope"].as_f64().unwrap(),
        1e-6,
    );
    assert!(
        (cal.intercept - r["calibration_p"]["intercept"].as_f64().unwrap()).abs() < 1e-7,
        "{name} calibration intercept {}",
        cal.intercept
    );
}

#[test]
fn small_matches_statsmodels_and_sklearn() {
    check("small");
}

#[test]
fn medium_matches_statsmodels_and_sklearn() {
    check("medium");
}

#[test]
fn large_100k_rows_matches_statsmodels_and_sklearn() {
    check("large");
}

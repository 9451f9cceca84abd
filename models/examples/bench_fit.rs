//! Benchmark: fit a logistic regression on 1,000,000 rows x 12 features and evaluate
//! it. `cargo run --release -p riskstrat-models --example bench_fit [ROWS]`.

use riskstrat_models::logistic::{Design, FitOptions, fit, sigmoid};
use riskstrat_models::metrics::evaluate;
use std::time::Instant;

/// SplitMix64: a small deterministic generator, so the benchmark needs no crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn poisson(&mut self, mean: f64) -> f64 {
        let (l, mut k, mut p) = ((-mean).exp(), 0.0, 1.0);
        loop {
            p *= self.next();
            if p <= l {
                return k;
            }
            k += 1.0;
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let names = [
        "age",
        "sex_female",
        "imd_decile",
        "gp_appts_12m",
        "other_appts_12m",
        "home_visits_12m",
        "dna_12m",
        "distinct_drugs_12m",
        "ltc_groups_12m",
        "emergency_admissions_12m",
        "emergency_bed_days_12m",
        "charlson_score",
    ];
    let means = [0.0, 0.0, 0.0, 4.0, 3.0, 0.1, 0.3, 2.0, 0.8, 0.15, 0.8, 0.4];
    let beta = [
        0.015, -0.05, -0.04, 0.05, 0.03, 0.2, 0.1, 0.04, 0.2, 0.45, 0.01, 0.15,
    ];
    let mut rng = Rng(42);
    let mut cols: Vec<Vec<f64>> = vec![Vec::with_capacity(n); 12];
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let mut lp = -3.5;
        for k in 0..12 {
            let v = match k {
                0 => (rng.next() * 100.0).floor(),
                1 => (rng.next() < 0.5) as u8 as f64,
                2 => 1.0 + (rng.next() * 10.0).floor(),
                _ => rng.poisson(means[k]),
            };
            lp += beta[k] * v;
            cols[k].push(v);
        }
        y.push((rng.next() < sigmoid(lp)) as u8 as f64);
    }
    let design = Design {
        names: names.iter().map(|s| s.to_string()).collect(),
        columns: cols.iter().map(Vec::as_slice).collect(),
    };
    let start = Instant::now();
    let f = fit(&design, &y, None, &FitOptions::default()).expect("fit");
    let fit_s = start.elapsed().as_secs_f64();
    let p: Vec<f64> = (0..n)
        .map(|i| f.predict(&cols.iter().map(|c| c[i]).collect::<Vec<_>>()))
        .collect();
    let start = Instant::now();
    let e = evaluate(&y, &p).expect("evaluate");
    let eval_s = start.elapsed().as_secs_f64();
    println!(
        "rows {n}, features 12, events {}: fit {fit_s:.3} s ({} Newton iterations, converged {}), evaluate {eval_s:.3} s (AUC {:.4})",
        f.events, f.iterations, f.converged, e.auc
    );
}

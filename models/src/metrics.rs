//! How well risks predict outcomes: discrimination (AUC with DeLong's interval),
//! accuracy (Brier), calibration (intercept, slope, Hosmer-Lemeshow, observed vs
//! expected by decile) and what a top-k% list catches (sensitivity, PPV).

use crate::logistic::{Design, FitOptions, fit};
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// Midranks (1-based, ties share the mean of their ranks) of `v`.
pub fn midranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for k in i..=j {
            ranks[idx[k]] = r;
        }
        i = j + 1;
    }
    ranks
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Auc {
    pub auc: f64,
    pub variance: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// AUC (the Mann-Whitney statistic, ties counting one half) with DeLong's variance,
/// computed by the midrank algorithm of Sun & Xu (2014), and a 95% Wald interval
/// clipped to [0, 1].
pub fn auc_delong(y: &[f64], score: &[f64]) -> Result<Auc> {
    let pos: Vec<f64> = score
        .iter()
        .zip(y)
        .filter(|(_, y)| **y == 1.0)
        .map(|(s, _)| *s)
        .collect();
    let neg: Vec<f64> = score
        .iter()
        .zip(y)
        .filter(|(_, y)| **y == 0.0)
        .map(|(s, _)| *s)
        .collect();
    let (m, n) = (pos.len(), neg.len());
    if m == 0 || n == 0 {
        return Err(ModelError::Invalid(
            "AUC needs at least one event and one non-event".into(),
        ));
    }
    let mut all = pos.clone();
    all.extend_from_slice(&neg);
    let tz = midranks(&all);
    let tx = midranks(&pos);
    let ty = midranks(&neg);
    let (mf, nf) = (m as f64, n as f64);
    let auc = (tz[..m].iter().sum::<f64>() - mf * (mf + 1.0) / 2.0) / (mf * nf);
    let v10: Vec<f64> = (0..m).map(|i| (tz[i] - tx[i]) / nf).collect();
    let v01: Vec<f64> = (0..n).map(|j| 1.0 - (tz[m + j] - ty[j]) / mf).collect();
    let var = |v: &[f64]| {
        if v.len() < 2 {
            return 0.0;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    };
    let variance = var(&v10) / mf + var(&v01) / nf;
    let q = Normal::standard().inverse_cdf(0.975);
    let se = variance.sqrt();
    Ok(Auc {
        auc,
        variance,
        ci_low: (auc - q * se).max(0.0),
        ci_high: (auc + q * se).min(1.0),
    })
}

pub fn brier(y: &[f64], p: &[f64]) -> f64 {
    y.iter().zip(p).map(|(y, p)| (p - y).powi(2)).sum::<f64>() / y.len().max(1) as f64
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Calibration-in-the-large: `a` in logit P(y) = a + logit(p) (slope fixed at 1).
    pub intercept: f64,
    /// `b` in logit P(y) = a + b logit(p).
    pub slope: f64,
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    (p / (1.0 - p)).ln()
}

pub fn calibration(y: &[f64], p: &[f64]) -> Result<Calibration> {
    let lp: Vec<f64> = p.iter().map(|p| logit(*p)).collect();
    let slope = fit(
        &Design {
            names: vec!["logit_p".into()],
            columns: vec![&lp],
        },
        y,
        None,
        &FitOptions::default(),
    )?;
    let citl = fit(
        &Design {
            names: vec![],
            columns: vec![],
        },
        y,
        Some(&lp),
        &FitOptions::default(),
    )?;
    Ok(Calibration {
        intercept: citl.coefficients[0],
        slope: slope.coefficients[1],
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskGroup {
    pub n: usize,
    pub observed: f64,
    pub expected: f64,
    pub mean_risk: f64,
    pub observed_rate: f64,
}

/// Split rows, sorted by ascending risk (ties in input order), into `g` groups whose
/// sizes differ by at most one, the larger first (numpy's `array_split`).
pub fn risk_groups(y: &[f64], p: &[f64], g: usize) -> Vec<RiskGroup> {
    let n = y.len();
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut out = Vec::with_capacity(g);
    let mut start = 0;
    for k in 0..g {
        let size = n / g + usize::from(k < n % g);
        let rows = &idx[start..start + size];
        start += size;
        let observed: f64 = rows.iter().map(|&i| y[i]).sum();
        let expected: f64 = rows.iter().map(|&i| p[i]).sum();
        let nf = size.max(1) as f64;
        out.push(RiskGroup {
            n: size,
            observed,
            expected,
            mean_risk: expected / nf,
            observed_rate: observed / nf,
        });
    }
    out
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct HosmerLemeshow {
    pub statistic: f64,
    pub df: f64,
    pub p_value: f64,
    pub groups: usize,
}

/// Hosmer-Lemeshow over `g` risk groups (see `risk_groups`), on g - 2 degrees of freedom.
pub fn hosmer_lemeshow(y: &[f64], p: &[f64], g: usize) -> Result<HosmerLemeshow> {
    if g < 3 || y.len() < g {
        return Err(ModelError::Invalid(format!(
            "Hosmer-Lemeshow needs at least {g} rows and 3 groups"
        )));
    }
    let groups = risk_groups(y, p, g);
    let statistic: f64 = groups
        .iter()
        .filter(|r| r.n > 0 && r.expected > 0.0 && r.expected < r.n as f64)
        .map(|r| (r.observed - r.expected).powi(2) / (r.expected * (1.0 - r.expected / r.n as f64)))
        .sum();
    let df = (g - 2) as f64;
    let chi = ChiSquared::new(df).map_err(|e| ModelError::Invalid(e.to_string()))?;
    Ok(HosmerLemeshow {
        statistic,
        df,
        p_value: chi.sf(statistic),
        groups: g,
    })
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TopK {
    pub share: f64,
    pub flagged: usize,
    pub sensitivity: f64,
    pub ppv: f64,
}

/// Flag the `ceil(share * n)` highest risks (ties by input order): what share of all
/// events they catch (sensitivity) and what share of them have the event (PPV).
pub fn top_k(y: &[f64], p: &[f64], share: f64) -> TopK {
    let n = y.len();
    let k = crate::tiers::ceil_share(share, n);
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    let tp: f64 = idx[..k].iter().map(|&i| y[i]).sum();
    let events: f64 = y.iter().sum();
    TopK {
        share,
        flagged: k,
        sensitivity: if events > 0.0 { tp / events } else { f64::NAN },
        ppv: if k > 0 { tp / k as f64 } else { f64::NAN },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evaluation {
    pub n: usize,
    pub events: usize,
    pub auc: f64,
    pub auc_ci: [f64; 2],
    pub brier: f64,
    pub calibration_intercept: f64,
    pub calibration_slope: f64,
    pub hosmer_lemeshow: HosmerLemeshow,
    pub deciles: Vec<RiskGroup>,
    pub top: Vec<TopK>,
}

/// Every metric for one set of predictions.
pub fn evaluate(y: &[f64], p: &[f64]) -> Result<Evaluation> {
    let auc = auc_delong(y, p)?;
    let cal = calibration(y, p)?;
    Ok(Evaluation {
        n: y.len(),
        events: y.iter().filter(|v| **v == 1.0).count(),
        auc: auc.auc,
        auc_ci: [auc.ci_low, auc.ci_high],
        brier: brier(y, p),
        calibration_intercept: cal.intercept,
        calibration_slope: cal.slope,
        hosmer_lemeshow: hosmer_lemeshow(y, p, 10)?,
        deciles: risk_groups(y, p, 10),
        top: [0.005, 0.05, 0.2].iter().map(|s| top_k(y, p, *s)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half() {
        // Pairs (pos, neg): (0.8,0.2) win, (0.8,0.5) win, (0.5,0.2) win, (0.5,0.5) tie.
        let y = [1.0, 1.0, 0.0, 0.0];
        let s = [0.8, 0.5, 0.2, 0.5];
        let a = auc_delong(&y, &s).unwrap();
        assert!((a.auc - 3.5 / 4.0).abs() < 1e-15);
    }

    #[test]
    fn delong_matches_pairwise_structural_components() {
        // The O(mn) definition of DeLong et al. (1988), computed directly.
        let y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let s = [0.9, 0.3, 0.6, 0.4, 0.4, 0.1, 0.8, 0.7, 0.2, 0.6];
        let pos: Vec<f64> = (0..10).filter(|&i| y[i] == 1.0).map(|i| s[i]).collect();
        let neg: Vec<f64> = (0..10).filter(|&i| y[i] == 0.0).map(|i| s[i]).collect();
        let psi = |x: f64, y: f64| {
            if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            }
        };
        let v10: Vec<f64> = pos
            .iter()
            .map(|x| neg.iter().map(|y| psi(*x, *y)).sum::<f64>() / neg.len() as f64)
            .collect();
        let v01: Vec<f64> = neg
            .iter()
            .map(|y| pos.iter().map(|x| psi(*x, *y)).sum::<f64>() / pos.len() as f64)
            .collect();
        let auc = v10.iter().sum::<f64>() / pos.len() as f64;
        let var = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
        };
        let variance = var(&v10) / pos.len() as f64 + var(&v01) / neg.len() as f64;
        let a = auc_delong(&y, &s).unwrap();
        assert!((a.auc - auc).abs() < 1e-15);
        assert!((a.variance - variance).abs() < 1e-15);
    }

    #[test]
    fn groups_split_like_numpy_array_split() {
        let p: Vec<f64> = (0..23).map(|i| i as f64 / 23.0).collect();
        let y = vec![0.0; 23];
        let sizes: Vec<usize> = risk_groups(&y, &p, 10).iter().map(|g| g.n).collect();
        assert_eq!(sizes, vec![3, 3, 3, 2, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn top_k_sensitivity_and_ppv() {
        let p: Vec<f64> = (0..200).map(|i| i as f64 / 200.0).collect();
        let y: Vec<f64> = (0..200)
            .map(|i| if i >= 190 || i == 5 { 1.0 } else { 0.0 })
            .collect();
        let t = top_k(&y, &p, 0.05); // top 10 rows: all events
        assert_eq!(t.flagged, 10);
        assert!((t.ppv - 1.0).abs() < 1e-15);
        assert!((t.sensitivity - 10.0 / 11.0).abs() < 1e-15);
    }
}

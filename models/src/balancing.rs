//! Entropy balancing (Hainmueller 2012) of matched comparison patients: weights as
//! close as possible to equal (least Kullback-Leibler divergence from the base
//! weights) under which the controls' weighted means of the matching variables equal
//! the enrolled patients' means. Used after matching ("matching then calibration"),
//! when matching alone cannot reach balance because the candidate pool is thin.
//!
//! The weights are `w_c ∝ q_c exp(λ'z_c)` with `z_c` the control's variables minus
//! the targets, each over its SD among the controls, and `λ` the minimiser of the
//! convex dual `log Σ_c q_c exp(λ'z_c)`, found by Newton's method with backtracking
//! (its gradient is the weighted mean of `z`, its Hessian the weighted covariance).
//! Checked against scipy's BFGS on the same dual in `tests/outcomes_reference.rs`.

use crate::linalg::Matrix;
use crate::{ModelError, Result};

/// The result of [`entropy_balance`].
#[derive(Debug, Clone, PartialEq)]
pub struct Balanced {
    /// One weight per control, summing to the number of controls (mean 1).
    pub weights: Vec<f64>,
    /// Whether every balanced variable's weighted mean is within `1e-8` SD of its
    /// target. False when a target is outside the range the controls can reach: the
    /// weights are then the last iterate, and the SMDs show what is left.
    pub converged: bool,
    pub iterations: usize,
}

const TOLERANCE: f64 = 1e-8;
const MAX_ITERATIONS: usize = 100;

/// Weights for `controls` (rows of variables) whose weighted means equal `targets`
/// (usually the enrolled patients' means), starting from `base` (`None`: equal).
/// Variables constant among the controls are left out (nothing can move them).
pub fn entropy_balance<R: AsRef<[f64]>>(
    targets: &[f64],
    controls: &[R],
    base: Option<&[f64]>,
) -> Result<Balanced> {
    let (q, z) = prepared(targets, controls, base)?;
    let s = solve(&q, &z, 0.0);
    Ok(s.balanced(TOLERANCE))
}

/// The minimiser of the ridge-penalised dual `log Σ q exp(λ'z) + (δ/2)|λ|²` with
/// `δ = penalty`: weights nearer to `base` than exact balance, leaving each variable
/// an imbalance of `-δλ` (in the controls' SDs). `converged`: Newton converged.
pub fn entropy_balance_penalised<R: AsRef<[f64]>>(
    targets: &[f64],
    controls: &[R],
    base: Option<&[f64]>,
    penalty: f64,
) -> Result<Balanced> {
    let (q, z) = prepared(targets, controls, base)?;
    Ok(solve(&q, &z, penalty).balanced(f64::INFINITY))
}

/// Approximate balancing: weights under which every balanced variable's weighted mean
/// is within `tolerance` SDs (the controls' SD) of its target, as near to `base` as
/// the ridge-penalised dual ([`entropy_balance_penalised`]) gets: the largest penalty
/// (a bisection on its logarithm) that keeps every imbalance within the tolerance.
/// Exact balance on few controls fits their noise (each constraint met by leaning on
/// a handful of people); a tolerance of a fraction of the SMD threshold keeps the
/// weights even. `converged` is false when even exact balance is out of reach.
pub fn entropy_balance_within<R: AsRef<[f64]>>(
    targets: &[f64],
    controls: &[R],
    base: Option<&[f64]>,
    tolerance: f64,
) -> Result<Balanced> {
    let (q, z) = prepared(targets, controls, base)?;
    let within = |s: &Solution| s.converged && s.worst() <= tolerance;
    let unweighted = solve(&q, &z, f64::INFINITY);
    if within(&unweighted) {
        return Ok(unweighted.balanced(tolerance));
    }
    let exact = solve(&q, &z, 0.0);
    if !within(&exact) {
        return Ok(exact.balanced(TOLERANCE));
    }
    let (mut lo, mut hi) = (-8.0_f64, 4.0_f64);
    let mut best = exact;
    let mut iterations = best.iterations;
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        let s = solve(&q, &z, 10f64.powf(mid));
        iterations += s.iterations;
        if within(&s) {
            lo = mid;
            best = s;
        } else {
            hi = mid;
        }
        if hi - lo < 1e-3 {
            break;
        }
    }
    best.iterations = iterations;
    Ok(best.balanced(tolerance))
}

fn prepared<R: AsRef<[f64]>>(
    targets: &[f64],
    controls: &[R],
    base: Option<&[f64]>,
) -> Result<(Vec<f64>, Vec<Vec<f64>>)> {
    let n = controls.len();
    let p = targets.len();
    if n == 0 || controls.iter().any(|r| r.as_ref().len() != p) {
        return Err(ModelError::Invalid(
            "entropy balancing: controls are needed, each with one value per target".into(),
        ));
    }
    let q: Vec<f64> = base.map_or_else(|| vec![1.0; n], <[f64]>::to_vec);
    if q.len() != n || q.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(ModelError::Invalid(
            "entropy balancing: one positive base weight per control is needed".into(),
        ));
    }
    Ok((q, standardised(targets, controls)?))
}

/// The minimiser of the dual with ridge `penalty` (infinite: the base weights).
struct Solution {
    /// Normalised to sum to 1.
    weights: Vec<f64>,
    /// Weighted mean of each standardised variable minus its target.
    imbalance: Vec<f64>,
    converged: bool,
    iterations: usize,
}

impl Solution {
    fn worst(&self) -> f64 {
        self.imbalance.iter().fold(0.0, |m, v| m.max(v.abs()))
    }

    /// `converged` as [`Balanced`] means it: every imbalance within `tolerance`.
    fn balanced(self, tolerance: f64) -> Balanced {
        let n = self.weights.len() as f64;
        Balanced {
            converged: self.converged && self.worst() <= tolerance.max(TOLERANCE),
            weights: self.weights.iter().map(|v| v * n).collect(),
            iterations: self.iterations,
        }
    }
}

fn solve(q: &[f64], z: &[Vec<f64>], penalty: f64) -> Solution {
    let k = z.first().map_or(0, Vec::len);
    let mut lambda = vec![0.0; k];
    let (mut w, mut f) = weights_at(q, z, &lambda);
    if penalty.is_infinite() {
        let (g, _) = moments(&w, z, k);
        return Solution {
            weights: w,
            imbalance: g,
            converged: true,
            iterations: 0,
        };
    }
    let ridge = |l: &[f64]| 0.5 * penalty * l.iter().map(|v| v * v).sum::<f64>();
    f += ridge(&lambda);
    let mut iterations = 0;
    let mut converged = false;
    let mut imbalance;
    loop {
        let (g, mut h) = moments(&w, z, k);
        imbalance = g.clone();
        let grad: Vec<f64> = g
            .iter()
            .zip(&lambda)
            .map(|(g, l)| g + penalty * l)
            .collect();
        if grad.iter().all(|v| v.abs() < TOLERANCE) {
            converged = true;
            break;
        }
        if iterations == MAX_ITERATIONS {
            break;
        }
        iterations += 1;
        for a in 0..k {
            h[(a, a)] += penalty;
        }
        let Some(step) = newton_step(&grad, h) else {
            break;
        };
        // Backtracking (Armijo) on the dual; no acceptable step means no progress.
        let slope: f64 = grad.iter().zip(&step).map(|(a, b)| a * b).sum();
        let mut t = 1.0;
        let mut moved = false;
        while t >= 1e-10 {
            let trial: Vec<f64> = lambda.iter().zip(&step).map(|(l, s)| l + t * s).collect();
            let (tw, tf) = weights_at(q, z, &trial);
            let tf = tf + ridge(&trial);
            if tf.is_finite() && tw.iter().all(|v| v.is_finite()) && tf <= f + 1e-4 * t * slope {
                (lambda, w, f) = (trial, tw, tf);
                moved = true;
                break;
            }
            t /= 2.0;
        }
        if !moved {
            break;
        }
    }
    Solution {
        weights: w,
        imbalance,
        converged,
        iterations,
    }
}

/// The controls' variables minus the targets over their SD among the controls, the
/// constant ones left out.
fn standardised<R: AsRef<[f64]>>(targets: &[f64], controls: &[R]) -> Result<Vec<Vec<f64>>> {
    let n = controls.len() as f64;
    let mut keep = Vec::new();
    for (j, t) in targets.iter().enumerate() {
        let x = controls.iter().map(|r| r.as_ref()[j]);
        if !t.is_finite() || x.clone().any(|v| !v.is_finite()) {
            return Err(ModelError::Invalid(format!(
                "entropy balancing: variable {j} has a missing or infinite value"
            )));
        }
        let m = x.clone().sum::<f64>() / n;
        let sd = (x.map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
        if sd > 1e-12 * m.abs().max(1.0) {
            keep.push((j, *t, sd));
        }
    }
    Ok(controls
        .iter()
        .map(|r| {
            keep.iter()
                .map(|&(j, t, sd)| (r.as_ref()[j] - t) / sd)
                .collect()
        })
        .collect())
}

/// The normalised weights at `lambda` and the dual `log Σ q exp(λ'z)`.
fn weights_at(q: &[f64], z: &[Vec<f64>], lambda: &[f64]) -> (Vec<f64>, f64) {
    let eta: Vec<f64> = z
        .iter()
        .zip(q)
        .map(|(z, q)| q.ln() + z.iter().zip(lambda).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let top = eta.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = eta.iter().map(|v| (v - top).exp()).collect();
    let total: f64 = e.iter().sum();
    (e.iter().map(|v| v / total).collect(), top + total.ln())
}

/// The dual's gradient (weighted mean of z) and Hessian (weighted covariance).
fn moments(w: &[f64], z: &[Vec<f64>], k: usize) -> (Vec<f64>, Matrix) {
    let mut g = vec![0.0; k];
    for (w, z) in w.iter().zip(z) {
        g.iter_mut().zip(z).for_each(|(g, z)| *g += w * z);
    }
    let mut h = Matrix::zeros(k);
    for (w, z) in w.iter().zip(z) {
        for a in 0..k {
            for b in 0..=a {
                h[(a, b)] += w * (z[a] - g[a]) * (z[b] - g[b]);
            }
        }
    }
    for a in 0..k {
        for b in 0..a {
            h[(b, a)] = h[(a, b)];
        }
    }
    (g, h)
}

/// `-H^-1 g`, with a small ridge when variables are (nearly) collinear.
fn newton_step(g: &[f64], mut h: Matrix) -> Option<Vec<f64>> {
    let k = g.len();
    let trace = (0..k).map(|a| h[(a, a)]).sum::<f64>().max(1e-300);
    for ridge in [0.0, 1e-10, 1e-8, 1e-6, 1e-4] {
        let mut m = h.clone();
        for a in 0..k {
            m[(a, a)] += ridge * trace / k as f64;
        }
        if let Some(l) = m.cholesky() {
            return Some(Matrix::cholesky_solve(&l, g).iter().map(|v| -v).collect());
        }
    }
    for a in 0..k {
        h[(a, a)] += 1e-2 * trace / k as f64;
    }
    h.cholesky()
        .map(|l| Matrix::cholesky_solve(&l, g).iter().map(|v| -v).collect())
}

/// Weighted means of each variable over `rows`.
pub fn weighted_means<R: AsRef<[f64]>>(rows: &[R], weights: &[f64]) -> Vec<f64> {
    let p = rows.first().map_or(0, |r| r.as_ref().len());
    let total: f64 = weights.iter().sum();
    (0..p)
        .map(|j| {
            rows.iter()
                .zip(weights)
                .map(|(r, w)| w * r.as_ref()[j])
                .sum::<f64>()
                / total
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two variables over 40 controls, neither in balance with the targets used.
    fn forty_controls() -> Vec<[f64; 2]> {
        (0..40)
            .map(|i| {
                [
                    f64::from(i % 8),
                    f64::from((i * 7) % 5) + 0.5 * f64::from(i % 3),
                ]
            })
            .collect()
    }

    #[test]
    fn weighted_means_hit_the_targets() {
        // Controls on a grid; targets inside their range.
        let controls = forty_controls();
        let targets = [4.2, 2.9];
        let b = entropy_balance(&targets, &controls, None).unwrap();
        assert!(b.converged, "{b:?}");
        let m = weighted_means(&controls, &b.weights);
        assert!(
            (m[0] - 4.2).abs() < 1e-7 && (m[1] - 2.9).abs() < 1e-7,
            "{m:?}"
        );
        assert!((b.weights.iter().sum::<f64>() - 40.0).abs() < 1e-9);
        // Already balanced: equal weights, no iteration.
        let m0 = weighted_means(&controls, &[1.0; 40]);
        let b = entropy_balance(&m0, &controls, None).unwrap();
        assert!(b.converged && b.iterations == 0);
        assert!(b.weights.iter().all(|w| (w - 1.0).abs() < 1e-12));
    }

    #[test]
    fn approximate_balance_stops_at_the_tolerance() {
        let controls = forty_controls();
        let sd = |j: usize| {
            let m = controls.iter().map(|r| r[j]).sum::<f64>() / 40.0;
            (controls.iter().map(|r| (r[j] - m).powi(2)).sum::<f64>() / 40.0).sqrt()
        };
        let targets = [4.2, 2.9];
        let worst = |w: &[f64]| {
            let m = weighted_means(&controls, w);
            (0..2)
                .map(|j| ((m[j] - targets[j]) / sd(j)).abs())
                .fold(0.0, f64::max)
        };
        let exact = entropy_balance(&targets, &controls, None).unwrap();
        let spread = |w: &[f64]| w.iter().map(|v| (v - 1.0).powi(2)).sum::<f64>();
        for tolerance in [0.02, 0.1] {
            let b = entropy_balance_within(&targets, &controls, None, tolerance).unwrap();
            assert!(b.converged, "{b:?}");
            let w = worst(&b.weights);
            // Within the tolerance, and at it: no more weighting than it takes.
            assert!(w <= tolerance && w > 0.99 * tolerance, "{tolerance}: {w}");
            assert!(spread(&b.weights) < spread(&exact.weights));
        }
        // Already within the tolerance: equal weights.
        let m0 = weighted_means(&controls, &[1.0; 40]);
        let b = entropy_balance_within(&m0, &controls, None, 0.05).unwrap();
        assert!(b.converged && b.weights.iter().all(|w| (w - 1.0).abs() < 1e-12));
        // Out of reach: not converged, as exact balancing says.
        let b = entropy_balance_within(&[40.0, 2.9], &controls, None, 0.05).unwrap();
        assert!(!b.converged);
    }

    #[test]
    fn constant_and_unreachable_variables() {
        let controls: Vec<[f64; 2]> = (0..10).map(|i| [1.0, f64::from(i)]).collect();
        // The constant variable is left out; the other balanced.
        let b = entropy_balance(&[1.0, 3.0], &controls, None).unwrap();
        assert!(b.converged);
        assert!((weighted_means(&controls, &b.weights)[1] - 3.0).abs() < 1e-7);
        // A target outside the controls' range cannot be reached.
        let b = entropy_balance(&[1.0, 12.0], &controls, None).unwrap();
        assert!(!b.converged);
        let m = weighted_means(&controls, &b.weights)[1];
        assert!(m > 8.5 && m <= 9.0, "{m}");
        assert!(entropy_balance(&[1.0, f64::NAN], &controls, None).is_err());
        assert!(entropy_balance::<[f64; 2]>(&[1.0, 1.0], &[], None).is_err());
    }
}

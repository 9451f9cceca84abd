//! Logistic regression by maximum likelihood (Newton-Raphson, which for the logit
//! link is IRLS), with standard errors from the inverse information, Wald 95%
//! intervals and two-sided p-values; optional L2 penalty (intercept unpenalised) and
//! an optional offset (for calibration-in-the-large).

use crate::linalg::Matrix;
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// A design: named columns of equal length. The intercept is added by `fit`.
#[derive(Debug, Clone)]
pub struct Design<'a> {
    pub names: Vec<String>,
    pub columns: Vec<&'a [f64]>,
}

impl Design<'_> {
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.len())
    }
}

#[derive(Debug, Clone)]
pub struct FitOptions {
    pub l2: f64,
    pub max_iter: usize,
    /// Converged when the largest Newton step is below this.
    pub tol: f64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            l2: 0.0,
            max_iter: 100,
            tol: 1e-10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fit {
    /// "intercept" first, then the design's names.
    pub names: Vec<String>,
    pub coefficients: Vec<f64>,
    pub std_errors: Vec<f64>,
    pub z: Vec<f64>,
    pub p_values: Vec<f64>,
    pub ci_low: Vec<f64>,
    pub ci_high: Vec<f64>,
    pub log_likelihood: f64,
    pub null_log_likelihood: f64,
    pub iterations: usize,
    pub converged: bool,
    pub n: usize,
    pub events: usize,
}

impl Fit {
    /// Linear predictor for one row of feature values (in design order, no intercept).
    pub fn linear_predictor(&self, x: &[f64]) -> f64 {
        self.coefficients[0]
            + self.coefficients[1..]
                .iter()
                .zip(x)
                .map(|(b, v)| b * v)
                .sum::<f64>()
    }
    pub fn predict(&self, x: &[f64]) -> f64 {
        sigmoid(self.linear_predictor(x))
    }
}

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `(sigmoid(x), log(1 + exp(x)))` without overflow, from one `exp(-|x|)`: the same
/// values, to the bit, as computing each on its own, for half the exponentials (each
/// Newton step takes both at every row).
fn sigmoid_and_log1p_exp(x: f64) -> (f64, f64) {
    let e = (-x.abs()).exp();
    if x >= 0.0 {
        (1.0 / (1.0 + e), x + e.ln_1p())
    } else {
        (e / (1.0 + e), e.ln_1p())
    }
}

/// Sufficient statistics of one Newton step, accumulated over rows in parallel.
struct Step {
    grad: Vec<f64>,
    info: Matrix,
    ll: f64,
    max_residual: f64,
}

/// Rows of a block taken together through each pass of [`block_step`]: the columns'
/// slices of one chunk (13 of 4 KiB for the contract's model) stay in the core's cache
/// across the passes over them.
const CHUNK: usize = 512;

/// The gradient, information matrix (lower triangle), log-likelihood and largest
/// residual of rows `start..end`.
///
/// Column by column, a chunk of rows at a time: each sum still takes its rows in
/// order, so the bits are those of the row-by-row loop it replaced (kept in the tests
/// as the reference), but sums of different columns are independent chains the core
/// runs side by side, where the row loop read and wrote the 91 sums of the
/// information matrix in memory at every row (twice the compute at 1,000,000 rows, issue 16).
fn block_step(
    design: &Design,
    y: &[f64],
    offset: Option<&[f64]>,
    beta: &[f64],
    start: usize,
    end: usize,
) -> Step {
    let p = beta.len();
    let mut grad = vec![0.0; p];
    let mut info = Matrix::zeros(p);
    let mut ll = 0.0;
    let mut max_residual: f64 = 0.0;
    // The neutral element of `f64`'s `Sum`, with which a row's dot product began.
    let zero: f64 = std::iter::empty::<f64>().sum();
    let (ones, no_offset) = ([1.0; CHUNK], [0.0; CHUNK]);
    let (mut eta, mut r, mut w, mut wa) = ([0.0; CHUNK], [0.0; CHUNK], [0.0; CHUNK], [0.0; CHUNK]);
    let mut row = start;
    while row < end {
        let n = CHUNK.min(end - row);
        let (eta, r, w, wa) = (&mut eta[..n], &mut r[..n], &mut w[..n], &mut wa[..n]);
        // x[0] = 1 (the intercept), then the design's columns.
        let x: Vec<&[f64]> = std::iter::once(&ones[..n])
            .chain(design.columns.iter().map(|c| &c[row..row + n]))
            .collect();
        eta.fill(zero);
        for (c, b) in x.iter().zip(beta) {
            for (e, v) in eta.iter_mut().zip(c.iter()) {
                *e += v * b;
            }
        }
        let o = offset.map_or(&no_offset[..n], |o| &o[row..row + n]);
        for (e, o) in eta.iter_mut().zip(o) {
            *e += o;
        }
        for (i, &e) in eta.iter().enumerate() {
            let yi = y[row + i];
            let (mu, log1p_exp) = sigmoid_and_log1p_exp(e);
            ll += yi * e - log1p_exp;
            r[i] = yi - mu;
            max_residual = max_residual.max(r[i].abs());
            w[i] = mu * (1.0 - mu);
        }
        add_products(&mut grad, r, &x);
        for a in 0..p {
            for ((wa, w), xa) in wa.iter_mut().zip(w.iter()).zip(x[a]) {
                *wa = w * xa;
            }
            add_products(&mut info.data[a * p..a * p + a + 1], wa, &x[..=a]);
        }
        row += n;
    }
    Step {
        grad,
        info,
        ll,
        max_residual,
    }
}

/// `sums[j] += v[i] * x[j][i]` for every row `i` in order, four columns at a time: four
/// independent chains of additions.
fn add_products(sums: &mut [f64], v: &[f64], x: &[&[f64]]) {
    let n = v.len();
    let mut j = 0;
    while j + 4 <= x.len() {
        let (x0, x1, x2, x3) = (&x[j][..n], &x[j + 1][..n], &x[j + 2][..n], &x[j + 3][..n]);
        let mut s = [sums[j], sums[j + 1], sums[j + 2], sums[j + 3]];
        for i in 0..n {
            s[0] += v[i] * x0[i];
            s[1] += v[i] * x1[i];
            s[2] += v[i] * x2[i];
            s[3] += v[i] * x3[i];
        }
        sums[j..j + 4].copy_from_slice(&s);
        j += 4;
    }
    for (s, xj) in sums[j..].iter_mut().zip(&x[j..]) {
        for (vi, xi) in v.iter().zip(&xj[..n]) {
            *s += vi * xi;
        }
    }
}

/// Rows whose sums are taken together before being added to the others' in block
/// order: a fixed number, so that the fit is the same to the last bit whatever the
/// number of threads (blocks sized by the machine's cores gave other last bits on a
/// machine with more of them).
const BLOCK: usize = 16_384;

fn accumulate(design: &Design, y: &[f64], offset: Option<&[f64]>, beta: &[f64]) -> Step {
    let p = beta.len();
    let n = y.len();
    let blocks = n.div_ceil(BLOCK);
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .clamp(1, 16);
    let per_thread = blocks.div_ceil(threads).max(1);
    let parts: Vec<Step> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..blocks)
            .step_by(per_thread)
            .map(|first| {
                let last = (first + per_thread).min(blocks);
                s.spawn(move || {
                    (first..last)
                        .map(|b| {
                            block_step(design, y, offset, beta, b * BLOCK, ((b + 1) * BLOCK).min(n))
                        })
                        .collect::<Vec<Step>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker panicked"))
            .collect()
    });
    let mut total = Step {
        grad: vec![0.0; p],
        info: Matrix::zeros(p),
        ll: 0.0,
        max_residual: 0.0,
    };
    for part in parts {
        total.ll += part.ll;
        total.max_residual = total.max_residual.max(part.max_residual);
        for a in 0..p {
            total.grad[a] += part.grad[a];
            for b in 0..=a {
                total.info.data[a * p + b] += part.info.data[a * p + b];
            }
        }
    }
    for a in 0..p {
        for b in 0..a {
            total.info.data[b * p + a] = total.info.data[a * p + b];
        }
    }
    total
}

/// Fit `y ~ 1 + design` (+ offset). `y` must be 0/1.
pub fn fit(design: &Design, y: &[f64], offset: Option<&[f64]>, opts: &FitOptions) -> Result<Fit> {
    let n = y.len();
    if n == 0 {
        return Err(ModelError::EmptyTrainingSet);
    }
    for (name, c) in design.names.iter().zip(&design.columns) {
        if c.len() != n {
            return Err(ModelError::Invalid(format!(
                "column {name} has {} rows, the outcome {n}",
                c.len()
            )));
        }
        if c.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Invalid(format!(
                "column {name} has a missing or infinite value"
            )));
        }
        let first = c[0];
        if opts.l2 == 0.0 && c.iter().all(|v| *v == first) {
            return Err(ModelError::ConstantFeature(name.clone()));
        }
    }
    if y.iter().any(|v| *v != 0.0 && *v != 1.0) {
        return Err(ModelError::Invalid("the outcome must be 0 or 1".into()));
    }
    let events = y.iter().filter(|v| **v == 1.0).count();
    if events == 0 || events == n {
        return Err(ModelError::Invalid(format!(
            "the outcome is {} for all {n} training rows: nothing to learn",
            if events == 0 { 0 } else { 1 }
        )));
    }

    let p = design.columns.len() + 1;
    let mut beta = vec![0.0; p];
    // Start at the marginal log-odds: fewer iterations, same optimum.
    beta[0] = (events as f64 / (n - events) as f64).ln();
    let penalty = |beta: &[f64]| 0.5 * opts.l2 * beta[1..].iter().map(|b| b * b).sum::<f64>();
    let mut step = accumulate(design, y, offset, &beta);
    let mut iterations = 0;
    let mut converged = false;
    while iterations < opts.max_iter {
        iterations += 1;
        let mut info = step.info.clone();
        let mut grad = step.grad.clone();
        for a in 1..p {
            info[(a, a)] += opts.l2;
            grad[a] -= opts.l2 * beta[a];
        }
        let l = info
            .cholesky()
            .ok_or_else(|| ModelError::Singular(singular_hint(design)))?;
        let delta = Matrix::cholesky_solve(&l, &grad);
        // Step-halving keeps every step an ascent of the (penalised) likelihood.
        let objective = step.ll - penalty(&beta);
        let mut scale = 1.0;
        let (new_beta, new_step) = loop {
            let cand: Vec<f64> = beta
                .iter()
                .zip(&delta)
                .map(|(b, d)| b + scale * d)
                .collect();
            let s = accumulate(design, y, offset, &cand);
            if s.ll - penalty(&cand) >= objective - 1e-12 * objective.abs() || scale < 1e-6 {
                break (cand, s);
            }
            scale /= 2.0;
        };
        let max_step = delta.iter().map(|d| (d * scale).abs()).fold(0.0, f64::max);
        beta = new_beta;
        step = new_step;
        // Every row predicted (almost) exactly: the data are separated and the
        // maximum likelihood estimate does not exist.
        if step.max_residual < 1e-6 {
            return Err(ModelError::PerfectSeparation(separating_hint(
                design, &beta,
            )));
        }
        if max_step < opts.tol {
            converged = true;
            break;
        }
    }
    let mut info = step.info.clone();
    for a in 1..p {
        info[(a, a)] += opts.l2;
    }
    let l = info
        .cholesky()
        .ok_or_else(|| ModelError::Singular(singular_hint(design)))?;
    let cov = Matrix::cholesky_inverse(&l);
    let std_errors: Vec<f64> = (0..p).map(|a| cov[(a, a)].sqrt()).collect();
    let normal = Normal::standard();
    let z: Vec<f64> = beta.iter().zip(&std_errors).map(|(b, s)| b / s).collect();
    let p_values = z.iter().map(|z| 2.0 * normal.sf(z.abs())).collect();
    let q = normal.inverse_cdf(0.975);
    let ci_low = beta
        .iter()
        .zip(&std_errors)
        .map(|(b, s)| b - q * s)
        .collect();
    let ci_high = beta
        .iter()
        .zip(&std_errors)
        .map(|(b, s)| b + q * s)
        .collect();
    let rate = events as f64 / n as f64;
    let null_ll = match offset {
        None => events as f64 * rate.ln() + (n - events) as f64 * (1.0 - rate).ln(),
        Some(_) => f64::NAN,
    };
    let mut names = vec!["intercept".to_string()];
    names.extend(design.names.iter().cloned());
    Ok(Fit {
        names,
        coefficients: beta,
        std_errors,
        z,
        p_values,
        ci_low,
        ci_high,
        log_likelihood: step.ll,
        null_log_likelihood: null_ll,
        iterations,
        converged,
        n,
        events,
    })
}

fn singular_hint(design: &Design) -> String {
    format!(
        "the design matrix is singular: some of the features ({}) are linear combinations of others; drop one",
        design.names.join(", ")
    )
}

fn separating_hint(design: &Design, beta: &[f64]) -> String {
    let worst = beta[1..]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map(|(i, _)| design.names[i].clone())
        .unwrap_or_default();
    format!(
        "the outcome is perfectly predicted (coefficients diverge; largest: {worst}); remove that feature or add an L2 penalty"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One exponential gives both values exactly as two did: the fit is unchanged to
    /// the last bit.
    #[test]
    fn sigmoid_and_log1p_exp_share_one_exponential_and_change_no_bit() {
        let apart = |x: f64| {
            let log1p_exp = if x > 0.0 {
                x + (-x).exp().ln_1p()
            } else {
                x.exp().ln_1p()
            };
            (sigmoid(x), log1p_exp)
        };
        let mut xs = vec![
            0.0, -0.0, 1e-300, -1e-300, 36.0, -36.0, 710.0, -745.0, 1e308,
        ];
        xs.extend((-4000..=4000).map(|k| k as f64 * 0.01 + 0.003));
        for x in xs {
            let (a, b) = sigmoid_and_log1p_exp(x);
            let (c, d) = apart(x);
            assert_eq!(
                (a.to_bits(), b.to_bits()),
                (c.to_bits(), d.to_bits()),
                "at {x}"
            );
        }
        assert!(sigmoid_and_log1p_exp(f64::NAN).0.is_nan());
    }

    /// The row-by-row loop `block_step` replaced, kept as its reference.
    fn block_step_row_by_row(
        design: &Design,
        y: &[f64],
        offset: Option<&[f64]>,
        beta: &[f64],
        start: usize,
        end: usize,
    ) -> Step {
        let p = beta.len();
        let mut grad = vec![0.0; p];
        let mut info = Matrix::zeros(p);
        let mut ll = 0.0;
        let mut max_residual: f64 = 0.0;
        let mut x = vec![0.0; p];
        for i in start..end {
            x[0] = 1.0;
            for (k, c) in design.columns.iter().enumerate() {
                x[k + 1] = c[i];
            }
            let eta: f64 =
                x.iter().zip(beta).map(|(a, b)| a * b).sum::<f64>() + offset.map_or(0.0, |o| o[i]);
            let (mu, log1p_exp) = sigmoid_and_log1p_exp(eta);
            ll += y[i] * eta - log1p_exp;
            let r = y[i] - mu;
            max_residual = max_residual.max(r.abs());
            for a in 0..p {
                grad[a] += x[a] * r;
            }
            let w = mu * (1.0 - mu);
            for a in 0..p {
                let wa = w * x[a];
                for b in 0..=a {
                    info.data[a * p + b] += wa * x[b];
                }
            }
        }
        Step {
            grad,
            info,
            ll,
            max_residual,
        }
    }

    /// Regression (issue 16): the fit's sums taken column by column, a chunk of rows at
    /// a time, are the row loop's to the last bit, for the contract's twelve terms and
    /// for designs narrower than one chain of four, with and without an offset, over
    /// blocks that end inside a chunk.
    #[test]
    fn block_step_by_columns_has_the_row_loops_bits() {
        let n = 2 * CHUNK + 77;
        let value = |i: usize, k: usize| match k % 3 {
            0 => ((i * (7919 + k)) % 1000) as f64 / 97.0 - 3.0,
            1 => f64::from((i + k) % 5 == 0),
            _ => {
                if i % 11 == 0 {
                    -0.0
                } else {
                    (i % (k + 2)) as f64
                }
            }
        };
        let y: Vec<f64> = (0..n).map(|i| f64::from((i * 31) % 7 < 2)).collect();
        let offset: Vec<f64> = (0..n).map(|i| (i % 13) as f64 * 0.1 - 0.6).collect();
        for p in [1, 2, 4, 5, 12, 13] {
            let cols: Vec<Vec<f64>> = (0..p)
                .map(|k| (0..n).map(|i| value(i, k)).collect())
                .collect();
            let design = Design {
                names: (0..p).map(|k| format!("x{k}")).collect(),
                columns: cols.iter().map(Vec::as_slice).collect(),
            };
            let beta: Vec<f64> = (0..=p).map(|k| 0.3 - 0.07 * k as f64).collect();
            for off in [None, Some(&offset[..])] {
                for (start, end) in [(0, n), (5, CHUNK), (CHUNK - 3, n - 1), (0, 0)] {
                    let got = block_step(&design, &y, off, &beta, start, end);
                    let want = block_step_row_by_row(&design, &y, off, &beta, start, end);
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    let what =
                        format!("{p} columns, offset {}, rows {start}..{end}", off.is_some());
                    assert_eq!(bits(&got.grad), bits(&want.grad), "{what}");
                    assert_eq!(bits(&got.info.data), bits(&want.info.data), "{what}");
                    assert_eq!(got.ll.to_bits(), want.ll.to_bits(), "{what}");
                    assert_eq!(
                        got.max_residual.to_bits(),
                        want.max_residual.to_bits(),
                        "{what}"
                    );
                }
            }
        }
    }

    /// The sums are taken per block of `BLOCK` rows and added in block order, whatever
    /// the threads: the same bits as one thread going through the blocks in turn.
    #[test]
    fn sums_are_added_in_block_order_whatever_the_threads() {
        let n = 3 * BLOCK + 1234;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1000) as f64 / 97.0).collect();
        let y: Vec<f64> = (0..n).map(|i| f64::from((i * 31) % 7 == 0)).collect();
        let design = Design {
            names: vec!["x".into()],
            columns: vec![&x],
        };
        let beta = [-1.3, 0.21];
        let got = accumulate(&design, &y, None, &beta);
        let mut want = (vec![0.0; 2], vec![0.0; 4], 0.0);
        for b in 0..n.div_ceil(BLOCK) {
            let part = block_step(
                &design,
                &y,
                None,
                &beta,
                b * BLOCK,
                ((b + 1) * BLOCK).min(n),
            );
            want.2 += part.ll;
            for a in 0..2 {
                want.0[a] += part.grad[a];
                for c in 0..=a {
                    want.1[a * 2 + c] += part.info.data[a * 2 + c];
                }
            }
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got.grad), bits(&want.0));
        assert_eq!(got.ll.to_bits(), want.2.to_bits());
        for a in 0..2 {
            for c in 0..=a {
                assert_eq!(
                    got.info.data[a * 2 + c].to_bits(),
                    want.1[a * 2 + c].to_bits()
                );
            }
        }
    }

    #[test]
    fn two_by_two_table_has_closed_form() {
        // x binary: log-odds ratio = ln((a*d)/(b*c)), SE = sqrt(1/a+1/b+1/c+1/d).
        let (a, b, c, d) = (30usize, 70usize, 10usize, 90usize); // x=1: 30 events of 100; x=0: 10 of 100
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (xv, ev, non) in [(1.0, a, b), (0.0, c, d)] {
            for _ in 0..ev {
                x.push(xv);
                y.push(1.0);
            }
            for _ in 0..non {
                x.push(xv);
                y.push(0.0);
            }
        }
        let design = Design {
            names: vec!["x".into()],
            columns: vec![&x],
        };
        let f = fit(&design, &y, None, &FitOptions::default()).unwrap();
        let lor = ((a * d) as f64 / (b * c) as f64).ln();
        let se = (1.0 / a as f64 + 1.0 / b as f64 + 1.0 / c as f64 + 1.0 / d as f64).sqrt();
        assert!(
            (f.coefficients[1] - lor).abs() < 1e-10,
            "{}",
            f.coefficients[1]
        );
        assert!((f.std_errors[1] - se).abs() < 1e-10);
        assert!((f.coefficients[0] - (10.0f64 / 90.0).ln()).abs() < 1e-10);
        assert!(f.converged);
    }

    #[test]
    fn separation_constant_and_empty_are_errors() {
        let x = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let d = Design {
            names: vec!["x".into()],
            columns: vec![&x],
        };
        assert!(matches!(
            fit(&d, &y, None, &FitOptions::default()),
            Err(ModelError::PerfectSeparation(_))
        ));
        let c = [1.0; 6];
        let d = Design {
            names: vec!["c".into()],
            columns: vec![&c],
        };
        assert!(
            matches!(fit(&d, &[0.0, 1.0, 0.0, 1.0, 0.0, 1.0], None, &FitOptions::default()), Err(ModelError::ConstantFeature(n)) if n == "c")
        );
        let e: [f64; 0] = [];
        let d = Design {
            names: vec!["x".into()],
            columns: vec![&e],
        };
        assert!(matches!(
            fit(&d, &e, None, &FitOptions::default()),
            Err(ModelError::EmptyTrainingSet)
        ));
    }

    #[test]
    fn collinear_design_is_singular() {
        let x = [0.0, 1.0, 2.0, 3.0, 1.0, 2.0];
        let x2: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
        let y = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
        let d = Design {
            names: vec!["x".into(), "x2".into()],
            columns: vec![&x, &x2],
        };
        assert!(matches!(
            fit(&d, &y, None, &FitOptions::default()),
            Err(ModelError::Singular(_))
        ));
    }
}

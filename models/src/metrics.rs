//! How well risks predict outcomes: discrimination (AUC with DeLong's interval),
//! accuracy (Brier), calibration (intercept, slope, Hosmer-Lemeshow, observed vs
//! expected by decile) and what a top-k% list catches (sensitivity, PPV).

use crate::logistic::{Design, FitOptions, fit};
use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

/// The rows of `v` in ascending order, ties in input order. An unstable sort with the
/// index as the last key gives the order a stable sort would, faster; `evaluate_at`
/// sorts once and hands the order to every metric that needs it.
fn ascending(v: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_unstable_by(|&a, &b| v[a].total_cmp(&v[b]).then(a.cmp(&b)));
    idx
}

/// The rows in descending order, ties in input order, from [`ascending`]'s order:
/// reversed, then each run of ties turned back.
fn descending(v: &[f64], ascending: &[usize]) -> Vec<usize> {
    let mut idx: Vec<usize> = ascending.iter().rev().copied().collect();
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && v[idx[j]].total_cmp(&v[idx[i]]).is_eq() {
            j += 1;
        }
        idx[i..j].reverse();
        i = j;
    }
    idx
}

/// Midranks (1-based, ties share the mean of their ranks) of `v`.
pub fn midranks(v: &[f64]) -> Vec<f64> {
    let order = ascending(v);
    let mut ranks = vec![0.0; v.len()];
    midranks_in(v, order.iter().copied(), &mut ranks);
    ranks
}

/// The midranks of the rows `order` gives, in ascending order of `v`, into `ranks`
/// (indexed as `v`).
fn midranks_in(v: &[f64], order: impl Iterator<Item = usize>, ranks: &mut [f64]) {
    let idx: Vec<usize> = order.collect();
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
    auc_delong_in(y, score, &ascending(score))
}

/// [`auc_delong`] with the rows in [`ascending`] order of `score`: the midranks of
/// everyone, of the events and of the others all follow from that one order.
fn auc_delong_in(y: &[f64], score: &[f64], ascending: &[usize]) -> Result<Auc> {
    let events: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 1.0).collect();
    let others: Vec<usize> = (0..y.len()).filter(|&i| y[i] == 0.0).collect();
    let (m, n) = (events.len(), others.len());
    if m == 0 || n == 0 {
        return Err(ModelError::Invalid(
            "AUC needs at least one event and one non-event".into(),
        ));
    }
    let (mut all, mut own) = (vec![0.0; y.len()], vec![0.0; y.len()]);
    let sorted = || ascending.iter().copied();
    midranks_in(
        score,
        sorted().filter(|&i| y[i] == 1.0 || y[i] == 0.0),
        &mut all,
    );
    midranks_in(score, sorted().filter(|&i| y[i] == 1.0), &mut own);
    midranks_in(score, sorted().filter(|&i| y[i] == 0.0), &mut own);
    // Events first, then the others, each in input order.
    let tz: Vec<f64> = events.iter().chain(&others).map(|&i| all[i]).collect();
    let tx: Vec<f64> = events.iter().map(|&i| own[i]).collect();
    let ty: Vec<f64> = others.iter().map(|&i| own[i]).collect();
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
    /// `a` in that same fit (with the slope free): with `slope`, the logistic
    /// recalibration curve the report draws as the smoothed calibration curve.
    pub slope_intercept: f64,
}

impl Calibration {
    /// The observed risk the logistic recalibration fit gives for predicted risk `p`.
    pub fn curve(&self, p: f64) -> f64 {
        crate::logistic::sigmoid(self.slope_intercept + self.slope * logit(p))
    }
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
        slope_intercept: slope.coefficients[0],
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
    risk_groups_in(y, p, g, &ascending(p))
}

fn risk_groups_in(y: &[f64], p: &[f64], g: usize, idx: &[usize]) -> Vec<RiskGroup> {
    let n = y.len();
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
    enough_for_hosmer_lemeshow(y.len(), g)?;
    hosmer_lemeshow_of(&risk_groups(y, p, g), y.len())
}

fn enough_for_hosmer_lemeshow(n: usize, g: usize) -> Result<()> {
    if g < 3 || n < g {
        return Err(ModelError::Invalid(format!(
            "Hosmer-Lemeshow needs at least {g} rows and 3 groups"
        )));
    }
    Ok(())
}

/// Hosmer-Lemeshow from the `groups` of `risk_groups` over `n` rows.
fn hosmer_lemeshow_of(groups: &[RiskGroup], n: usize) -> Result<HosmerLemeshow> {
    let g = groups.len();
    enough_for_hosmer_lemeshow(n, g)?;
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
    /// Of those without the event, the share not flagged.
    #[serde(default)]
    pub specificity: f64,
    /// Of those not flagged, the share without the event.
    #[serde(default)]
    pub npv: f64,
}

/// Flag the `ceil(share * n)` highest risks (ties by input order): what share of all
/// events they catch (sensitivity) and what share of them have the event (PPV).
pub fn top_k(y: &[f64], p: &[f64], share: f64) -> TopK {
    top_k_in(y, share, &descending(p, &ascending(p)))
}

/// [`top_k`] with the rows in [`descending`] order of risk.
fn top_k_in(y: &[f64], share: f64, idx: &[usize]) -> TopK {
    let n = y.len();
    let k = crate::tiers::ceil_share(share, n);
    let tp: f64 = idx[..k].iter().map(|&i| y[i]).sum();
    let events: f64 = y.iter().sum();
    let non_events = n as f64 - events;
    let (fp, fn_) = (k as f64 - tp, events - tp);
    let tn = non_events - fp;
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    TopK {
        share,
        flagged: k,
        sensitivity: ratio(tp, events),
        ppv: ratio(tp, k as f64),
        specificity: ratio(tn, non_events),
        npv: ratio(tn, tn + fn_),
    }
}

/// The ROC curve as (false positive rate, true positive rate) points, from (0, 0) to
/// (1, 1), one point per distinct risk (tied risks move together), thinned to at most
/// `max_points` by keeping every k-th (always the last). The AUC of the full curve by
/// the trapezoid rule equals the Mann-Whitney AUC.
pub fn roc_points(y: &[f64], p: &[f64], max_points: usize) -> Vec<[f64; 2]> {
    roc_points_in(y, p, max_points, &descending(p, &ascending(p)))
}

/// [`roc_points`] with the rows in [`descending`] order of risk.
fn roc_points_in(y: &[f64], p: &[f64], max_points: usize, idx: &[usize]) -> Vec<[f64; 2]> {
    let events: f64 = y.iter().sum();
    let non_events = y.len() as f64 - events;
    if events == 0.0 || non_events == 0.0 {
        return Vec::new();
    }
    let mut points = vec![[0.0, 0.0]];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        tp += y[i];
        fp += 1.0 - y[i];
        if idx.get(k + 1).is_none_or(|&next| p[next] != p[i]) {
            points.push([fp / non_events, tp / events]);
        }
    }
    let step = points.len().div_ceil(max_points.max(2));
    let last = points.len() - 1;
    points
        .into_iter()
        .enumerate()
        .filter(|(k, _)| k % step == 0 || *k == last)
        .map(|(_, pt)| pt)
        .collect()
}

/// Predicted risks in `bins` equal-width bins over [0, max risk], counted separately
/// for people with and without the event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskHistogram {
    /// `bins + 1` edges.
    pub edges: Vec<f64>,
    pub events: Vec<usize>,
    pub non_events: Vec<usize>,
}

pub fn risk_histogram(y: &[f64], p: &[f64], bins: usize) -> RiskHistogram {
    let top = p.iter().copied().fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let width = top / bins as f64;
    let mut h = RiskHistogram {
        edges: (0..=bins).map(|k| width * k as f64).collect(),
        events: vec![0; bins],
        non_events: vec![0; bins],
    };
    for (yi, pi) in y.iter().zip(p) {
        let b = ((pi / width) as usize).min(bins - 1);
        if *yi == 1.0 {
            h.events[b] += 1;
        } else {
            h.non_events[b] += 1;
        }
    }
    h
}

/// Decision-curve analysis (Vickers & Elkin 2006) at one threshold probability `pt`:
/// the net benefit of flagging people whose risk is at least `pt`, and of flagging
/// everyone, as `TP/n - FP/n * pt / (1 - pt)`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct NetBenefit {
    pub threshold: f64,
    pub model: f64,
    pub treat_all: f64,
}

pub fn net_benefit(y: &[f64], p: &[f64], thresholds: &[f64]) -> Vec<NetBenefit> {
    let n = y.len() as f64;
    let events: f64 = y.iter().sum();
    thresholds
        .iter()
        .map(|&pt| {
            let w = pt / (1.0 - pt);
            let (mut tp, mut fp) = (0.0, 0.0);
            for (yi, pi) in y.iter().zip(p) {
                if *pi >= pt {
                    tp += yi;
                    fp += 1.0 - yi;
                }
            }
            NetBenefit {
                threshold: pt,
                model: tp / n - fp / n * w,
                treat_all: events / n - (n - events) / n * w,
            }
        })
        .collect()
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
    /// For the report's charts (absent in runs made before they were recorded).
    #[serde(default)]
    pub roc: Vec<[f64; 2]>,
    #[serde(default)]
    pub risk_histogram: Option<RiskHistogram>,
    #[serde(default)]
    pub net_benefit: Vec<NetBenefit>,
    /// The logistic recalibration curve, (predicted, observed) at 40 risks from the
    /// lowest to the highest prediction.
    #[serde(default)]
    pub calibration_curve: Vec<[f64; 2]>,
}

/// The thresholds of the decision curve: 1% to 50%.
pub const NET_BENEFIT_THRESHOLDS: [f64; 12] = [
    0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
];

/// Every metric for one set of predictions.
/// The shares of the highest risks `evaluate` flags: the contract's default tiers' cut
/// points.
pub const TOP_SHARES: [f64; 3] = [0.005, 0.05, 0.2];

/// Every metric for one set of predictions, with `top` at [`TOP_SHARES`].
pub fn evaluate(y: &[f64], p: &[f64]) -> Result<Evaluation> {
    evaluate_at(y, p, &TOP_SHARES)
}

/// Every metric for one set of predictions, with `top` at the given shares (a job's
/// own tiers' cut points).
/// The rows are sorted by risk once, for every metric that ranks them (the model
/// stage evaluates every validation row four times, by subgroup; each metric's own
/// sort took a third of the stage at 1,000,000 people).
pub fn evaluate_at(y: &[f64], p: &[f64], top_shares: &[f64]) -> Result<Evaluation> {
    let ascending = ascending(p);
    let descending = descending(p, &ascending);
    let auc = auc_delong_in(y, p, &ascending)?;
    let cal = calibration(y, p)?;
    let deciles = risk_groups_in(y, p, 10, &ascending);
    Ok(Evaluation {
        n: y.len(),
        events: y.iter().filter(|v| **v == 1.0).count(),
        auc: auc.auc,
        auc_ci: [auc.ci_low, auc.ci_high],
        brier: brier(y, p),
        calibration_intercept: cal.intercept,
        calibration_slope: cal.slope,
        hosmer_lemeshow: hosmer_lemeshow_of(&deciles, y.len())?,
        deciles,
        top: top_shares
            .iter()
            .map(|s| top_k_in(y, *s, &descending))
            .collect(),
        roc: roc_points_in(y, p, 200, &descending),
        risk_histogram: Some(risk_histogram(y, p, 20)),
        net_benefit: net_benefit(y, p, &NET_BENEFIT_THRESHOLDS),
        calibration_curve: {
            let lo = p.iter().copied().fold(1.0, f64::min);
            let hi = p.iter().copied().fold(0.0, f64::max);
            (0..40)
                .map(|k| {
                    let x = lo + (hi - lo) * k as f64 / 39.0;
                    [x, cal.curve(x)]
                })
                .collect()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Risks with many ties, -0.0 beside 0.0, and 0/1 outcomes, from a fixed LCG.
    fn tied_risks(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            state >> 33
        };
        let p: Vec<f64> = (0..n)
            .map(|i| match i % 50 {
                0 => 0.0,
                1 => -0.0,
                _ => (next() % 40) as f64 / 40.0,
            })
            .collect();
        let y = (0..n).map(|_| (next() % 3 == 0) as u8 as f64).collect();
        (y, p)
    }

    /// The descending order from the ascending one is the order a sort by descending
    /// risk, ties by row, gives.
    #[test]
    fn descending_order_from_the_ascending_one_is_a_sort_by_descending_risk() {
        let (_, p) = tied_risks(5_000);
        let mut want: Vec<usize> = (0..p.len()).collect();
        want.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        assert_eq!(descending(&p, &ascending(&p)), want);
    }

    /// DeLong's AUC from one sort equals, to the bit, the midranks of events, others
    /// and everyone each sorted on their own.
    #[test]
    fn auc_from_one_sort_equals_three_sorts_to_the_bit() {
        let (y, p) = tied_risks(5_000);
        let pos: Vec<f64> = (0..y.len())
            .filter(|&i| y[i] == 1.0)
            .map(|i| p[i])
            .collect();
        let neg: Vec<f64> = (0..y.len())
            .filter(|&i| y[i] == 0.0)
            .map(|i| p[i])
            .collect();
        let all: Vec<f64> = pos.iter().chain(&neg).copied().collect();
        let (tz, tx, ty) = (midranks(&all), midranks(&pos), midranks(&neg));
        let (mf, nf) = (pos.len() as f64, neg.len() as f64);
        let auc = (tz[..pos.len()].iter().sum::<f64>() - mf * (mf + 1.0) / 2.0) / (mf * nf);
        let v10: Vec<f64> = (0..pos.len()).map(|i| (tz[i] - tx[i]) / nf).collect();
        let v01: Vec<f64> = (0..neg.len())
            .map(|j| 1.0 - (tz[pos.len() + j] - ty[j]) / mf)
            .collect();
        let var = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64
        };
        let got = auc_delong(&y, &p).unwrap();
        assert_eq!(got.auc.to_bits(), auc.to_bits());
        let variance = var(&v10) / mf + var(&v01) / nf;
        assert_eq!(got.variance.to_bits(), variance.to_bits());
    }

    /// Every metric `evaluate_at` takes from its one sort is the metric computed on its
    /// own.
    #[test]
    fn evaluation_from_one_sort_equals_each_metric_on_its_own() {
        let (y, p) = tied_risks(5_000);
        let p: Vec<f64> = p.iter().map(|v| v.abs() * 0.9 + 0.05).collect();
        let e = evaluate_at(&y, &p, &[0.01, 0.2]).unwrap();
        assert_eq!(e.auc, auc_delong(&y, &p).unwrap().auc);
        assert_eq!(e.deciles, risk_groups(&y, &p, 10));
        assert_eq!(e.hosmer_lemeshow, hosmer_lemeshow(&y, &p, 10).unwrap());
        assert_eq!(e.top, vec![top_k(&y, &p, 0.01), top_k(&y, &p, 0.2)]);
        assert_eq!(e.roc, roc_points(&y, &p, 200));
        assert!(hosmer_lemeshow(&y[..2], &p[..2], 10).is_err());
        assert!(hosmer_lemeshow(&y, &p, 0).is_err());
    }

    /// The ROC curve's area by the trapezoid rule is the Mann-Whitney AUC (ties moved
    /// together), and its points are the counts at each distinct risk.
    #[test]
    fn roc_points_trace_the_auc() {
        let y = [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let s = [0.9, 0.3, 0.6, 0.4, 0.4, 0.1, 0.8, 0.7, 0.2, 0.6];
        let pts = roc_points(&y, &s, 100);
        // Distinct risks 0.9 0.8 0.7 0.6(x2) 0.4(x2) 0.3 0.2 0.1, plus the origin.
        assert_eq!(pts.len(), 9);
        assert_eq!(pts[0], [0.0, 0.0]);
        // Five events, five non-events: after 0.9 and 0.8 (events) and 0.7 (not).
        assert_eq!(pts[3], [0.2, 0.4]);
        // The two at 0.6 are both events; at 0.4 one of each.
        assert_eq!(pts[4], [0.2, 0.8]);
        assert_eq!(pts[5], [0.4, 1.0]);
        assert_eq!(*pts.last().unwrap(), [1.0, 1.0]);
        let area: f64 = pts
            .windows(2)
            .map(|w| (w[1][0] - w[0][0]) * (w[1][1] + w[0][1]) / 2.0)
            .sum();
        assert!((area - auc_delong(&y, &s).unwrap().auc).abs() < 1e-12);
        assert!(roc_points(&y, &s, 3).len() <= 4);
    }

    /// Net benefit, sensitivity, specificity, PPV and NPV from hand counts.
    #[test]
    fn decision_curve_and_top_k_from_hand_counts() {
        // 10 people, 4 events; risks descending with events at ranks 1, 2, 4, 7.
        let y = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let p = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05];
        let nb = net_benefit(&y, &p, &[0.5]);
        // Flagged at >= 0.5: 5 people, TP 3, FP 2; weight 1.
        assert!((nb[0].model - (3.0 / 10.0 - 2.0 / 10.0)).abs() < 1e-15);
        assert!((nb[0].treat_all - (0.4 - 0.6)).abs() < 1e-15);
        let t = top_k(&y, &p, 0.3); // the top 3: TP 2, FP 1, FN 2, TN 5
        assert_eq!(t.flagged, 3);
        assert!((t.sensitivity - 0.5).abs() < 1e-15);
        assert!((t.ppv - 2.0 / 3.0).abs() < 1e-15);
        assert!((t.specificity - 5.0 / 6.0).abs() < 1e-15);
        assert!((t.npv - 5.0 / 7.0).abs() < 1e-15);
        let h = risk_histogram(&y, &p, 3);
        assert_eq!(h.events, vec![0, 1, 3]);
        assert_eq!(h.non_events, vec![3, 2, 1]);
    }

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

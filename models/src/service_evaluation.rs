//! Statistics of a service outcome evaluation ("does a virtual ward reduce emergency
//! admissions?"): event rates per 1,000 person-years, greedy 1:1 propensity-score
//! matching within strata, and a difference in differences of rates whose variance
//! treats each person as a cluster (their before and after are correlated).

use crate::{ModelError, Result};
use serde::{Deserialize, Serialize};

const DAYS_PER_YEAR: f64 = 365.25;
const PER_1000_PY: f64 = DAYS_PER_YEAR * 1000.0;
/// Φ⁻¹(0.975), fixed so that intervals are reproducible to the last digit.
const Z_975: f64 = 1.959963984540054;

/// One person's events (emergency admissions, or bed days) and person-time in days in
/// the 365 days before and after their index date. Person-time is shorter than 365
/// for people registered late, or who died or left; it may be zero.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Windows {
    pub events_before: f64,
    pub days_before: f64,
    pub events_after: f64,
    pub days_after: f64,
}

/// Events per 1,000 person-years; `None` without person-time (NaN days included).
pub fn rate_per_1000py(events: f64, days: f64) -> Option<f64> {
    if days > 0.0 {
        Some(events / (days / DAYS_PER_YEAR) * 1000.0)
    } else {
        None
    }
}

/// Clamped so that risks of exactly 0 or 1 still have a finite distance.
pub fn logit_of(p: f64) -> f64 {
    logit(p)
}

fn logit(p: f64) -> f64 {
    let p = p.clamp(1e-9, 1.0 - 1e-9);
    (p / (1.0 - p)).ln()
}

/// A person who could be matched: their stratum (matching is exact on it) and their
/// score, a risk in (0, 1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Candidate {
    pub stratum: i64,
    pub score: f64,
}

/// 0.2 standard deviations (n - 1 denominator) of logit(score), the caliper Austin
/// (2011) found to remove most bias at little cost in variance. NaN for fewer than two
/// scores, which `match_nearest` treats as "match no one".
pub fn caliper(scores: &[f64]) -> f64 {
    if scores.len() < 2 {
        return f64::NAN;
    }
    let l: Vec<f64> = scores.iter().map(|s| logit(*s)).collect();
    let n = l.len() as f64;
    let mean = l.iter().sum::<f64>() / n;
    let ss: f64 = l.iter().map(|x| (x - mean).powi(2)).sum();
    0.2 * (ss / (n - 1.0)).sqrt()
}

/// Sorted positions still available, found in amortised near-constant time by path
/// halving: `next` roots are available positions (or the sentinel `m`); `prev` is the
/// same leftwards, shifted by one so that root 0 means "none".
struct Available {
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Available {
    fn new(m: usize) -> Self {
        Self {
            next: (0..=m).collect(),
            prev: (0..=m).collect(),
        }
    }

    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }

    /// The first available position >= `i` (`m` if none).
    fn at_or_after(&mut self, i: usize) -> usize {
        Self::root(&mut self.next, i)
    }

    /// The last available position < `i`.
    fn before(&mut self, i: usize) -> Option<usize> {
        Self::root(&mut self.prev, i).checked_sub(1)
    }

    fn take(&mut self, pos: usize) {
        self.next[pos] = pos + 1;
        self.prev[pos + 1] = pos;
    }
}

/// Greedy 1:1 nearest-neighbour matching without replacement on logit(score), exact on
/// stratum. Treated are matched in order of descending score (ties: lower index
/// first), each to the still-available control of its stratum at the smallest
/// distance (ties: lower control index), if that distance is within `caliper`.
/// Returns, for each treated in input order, the index of its control in `controls`.
///
/// Controls are sorted by (stratum, logit, index) and the nearest available on each
/// side found by union-find, so the cost is O((n + m) log m), not O(n m). People with
/// a NaN score are never matched.
pub fn match_nearest(
    treated: &[Candidate],
    controls: &[Candidate],
    caliper: f64,
) -> Vec<Option<usize>> {
    let lc: Vec<f64> = controls.iter().map(|c| logit(c.score)).collect();
    let mut order: Vec<usize> = (0..controls.len()).filter(|&j| !lc[j].is_nan()).collect();
    // partial_cmp (no NaNs left) so that runs of equal logits below agree with `==`.
    order.sort_unstable_by(|&a, &b| {
        controls[a]
            .stratum
            .cmp(&controls[b].stratum)
            .then(lc[a].partial_cmp(&lc[b]).unwrap())
            .then(a.cmp(&b))
    });
    let m = order.len();
    let stratum: Vec<i64> = order.iter().map(|&j| controls[j].stratum).collect();
    let key: Vec<f64> = order.iter().map(|&j| lc[j]).collect();
    // Runs of equal (stratum, logit): within one, the first available is the lowest
    // index, so only it need be considered.
    let same = |a: usize, b: usize| stratum[a] == stratum[b] && key[a] == key[b];
    let mut run_start = vec![0; m];
    for k in 1..m {
        run_start[k] = if same(k, k - 1) { run_start[k - 1] } else { k };
    }
    let mut run_end = vec![m; m];
    for k in (0..m.saturating_sub(1)).rev() {
        run_end[k] = if same(k, k + 1) {
            run_end[k + 1]
        } else {
            k + 1
        };
    }

    let mut by_score: Vec<usize> = (0..treated.len()).collect();
    by_score.sort_by(|&a, &b| {
        treated[b]
            .score
            .total_cmp(&treated[a].score)
            .then(a.cmp(&b))
    });

    let mut avail = Available::new(m);
    let mut out = vec![None; treated.len()];
    for t in by_score {
        let x = logit(treated[t].score);
        if x.is_nan() {
            continue;
        }
        let s = treated[t].stratum;
        let lo = stratum.partition_point(|v| *v < s);
        let hi = stratum.partition_point(|v| *v <= s);
        let p = lo + key[lo..hi].partition_point(|v| *v < x);
        // (distance, control index, position). Distances are compared as computed, so
        // distinct logits whose distances round equal are ties too: keep walking
        // outwards while the distance stays the same.
        let mut best: Option<(f64, usize, usize)> = None;
        let mut consider = |pos: usize| -> f64 {
            let d = (x - key[pos]).abs();
            let j = order[pos];
            if best.is_none_or(|(bd, bj, _)| d < bd || (d == bd && j < bj)) {
                best = Some((d, j, pos));
            }
            d
        };
        let mut q = avail.at_or_after(p);
        let mut first = None;
        while q < hi {
            let d = consider(q);
            if *first.get_or_insert(d) < d {
                break;
            }
            q = avail.at_or_after(run_end[q]);
        }
        let mut first = None;
        let mut r = avail.before(p);
        while let Some(pos) = r.filter(|&r| r >= lo) {
            let q = avail.at_or_after(run_start[pos]);
            let d = consider(q);
            if *first.get_or_insert(d) < d {
                break;
            }
            r = avail.before(run_start[pos]);
        }
        if let Some((d, j, pos)) = best
            && d <= caliper
        {
            avail.take(pos);
            out[t] = Some(j);
        }
    }
    out
}

/// A difference in differences of rates per 1,000 person-years, with a 95% interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Did {
    pub n_treated: usize,
    pub n_control: usize,
    pub treated_before: f64,
    pub treated_after: f64,
    pub control_before: f64,
    pub control_after: f64,
    /// (treated_after - treated_before) - (control_after - control_before).
    pub did: f64,
    pub se: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

/// A group's per-day rates and total days in each period, each person weighted by
/// an analysis weight (1 unless the controls are reweighted, see
/// [`crate::balancing`]): rates are weighted ratio estimators.
struct Group {
    rate_before: f64,
    days_before: f64,
    rate_after: f64,
    days_after: f64,
    weights: Vec<f64>,
}

impl Group {
    fn weighted(people: &[Windows], weights: Option<&[f64]>, name: &str) -> Result<Self> {
        if people.is_empty() {
            return Err(ModelError::Invalid(format!(
                "difference in differences: the {name} group is empty"
            )));
        }
        let weights = match weights {
            None => vec![1.0; people.len()],
            Some(w) if w.len() == people.len() && w.iter().all(|v| v.is_finite() && *v >= 0.0) => {
                w.to_vec()
            }
            Some(_) => {
                return Err(ModelError::Invalid(format!(
                    "difference in differences: the {name} group needs one finite, non-negative weight per row"
                )));
            }
        };
        let (mut eb, mut db, mut ea, mut da) = (0.0, 0.0, 0.0, 0.0);
        for (i, (w, k)) in people.iter().zip(&weights).enumerate() {
            let v = [w.events_before, w.days_before, w.events_after, w.days_after];
            if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(ModelError::Invalid(format!(
                    "difference in differences: {name} person {i} has a negative or non-finite count or person-time: {w:?}"
                )));
            }
            // Events without person-time would enter the variance but not the rate.
            if (w.events_before > 0.0 && w.days_before == 0.0)
                || (w.events_after > 0.0 && w.days_after == 0.0)
            {
                return Err(ModelError::Invalid(format!(
                    "difference in differences: {name} person {i} has events in a period with no person-time: {w:?}"
                )));
            }
            eb += k * w.events_before;
            db += k * w.days_before;
            ea += k * w.events_after;
            da += k * w.days_after;
        }
        for (days, period) in [(db, "before"), (da, "after")] {
            if days <= 0.0 {
                return Err(ModelError::Invalid(format!(
                    "difference in differences: the {name} group has no person-time {period} the index date, so its rate is undefined"
                )));
            }
        }
        Ok(Self {
            rate_before: eb / db,
            days_before: db,
            rate_after: ea / da,
            days_after: da,
            weights,
        })
    }

    /// Each person's influence on (rate after - rate before), per day.
    fn influences<'a>(&'a self, people: &'a [Windows]) -> impl Iterator<Item = f64> + 'a {
        people.iter().zip(&self.weights).map(|(w, k)| {
            k * ((w.events_after - self.rate_after * w.days_after) / self.days_after
                - (w.events_before - self.rate_before * w.days_before) / self.days_before)
        })
    }

    /// Events per follow-up day of `x` (one count per person), and each person's
    /// influence on it.
    fn follow_up_rate(&self, people: &[Windows], x: &[f64]) -> (f64, Vec<f64>) {
        let rate = x.iter().zip(&self.weights).map(|(x, k)| k * x).sum::<f64>() / self.days_after;
        let z = people
            .iter()
            .zip(x)
            .zip(&self.weights)
            .map(|((w, x), k)| k * (x - rate * w.days_after) / self.days_after)
            .collect();
        (rate, z)
    }
}

/// Difference in differences of event rates between `treated` and `controls`. Each
/// group-period rate is a ratio estimator (total events / total person-time), so that
/// people with little follow-up count for little. The variance is by linearisation with
/// each person a cluster, without small-sample correction: it equals the cluster-robust
/// sandwich of a Poisson GLM with identity link on person-time (see
/// `tests/fixtures/make_outcomes.py`). People with no person-time in a period
/// contribute through the other period only.
pub fn difference_in_differences(treated: &[Windows], controls: &[Windows]) -> Result<Did> {
    let t: Vec<u64> = (0..treated.len() as u64).collect();
    let c: Vec<u64> = (treated.len() as u64..(treated.len() + controls.len()) as u64).collect();
    difference_in_differences_clustered(treated, &t, controls, &c)
}

/// [`difference_in_differences`] where rows are episodes and several may belong to one
/// person (a comparison patient matched at two index dates, or a patient who was a
/// comparison before their own enrolment): `*_cluster` names each row's person, and
/// the variance sums each person's influences (signed: a control's enters the DiD
/// negatively) before squaring.
pub fn difference_in_differences_clustered(
    treated: &[Windows],
    treated_cluster: &[u64],
    controls: &[Windows],
    control_cluster: &[u64],
) -> Result<Did> {
    difference_in_differences_weighted(
        &Arm::new(treated, treated_cluster),
        &Arm::new(controls, control_cluster),
    )
}

/// One arm (the enrolled, or their comparison patients) of one service's matched
/// comparison: a row per episode.
#[derive(Debug, Clone, Copy)]
pub struct Arm<'a> {
    pub windows: &'a [Windows],
    /// The person of each row (the variance's cluster).
    pub cluster: &'a [u64],
    /// Each row's analysis weight (`None`: 1 each), e.g. the entropy-balancing weights
    /// of the controls. The variance takes the weights as fixed.
    pub weight: Option<&'a [f64]>,
    /// Per row, its follow-up events while enrolled in each of the services evaluated
    /// together (`in_service[r][k]`: service `k`); empty when not needed.
    pub in_service: &'a [Vec<f64>],
}

impl<'a> Arm<'a> {
    /// Unweighted, with no in-service counts.
    pub fn new(windows: &'a [Windows], cluster: &'a [u64]) -> Self {
        Self {
            windows,
            cluster,
            weight: None,
            in_service: &[],
        }
    }

    fn group(&self, name: &str) -> Result<Group> {
        if self.windows.len() != self.cluster.len() {
            return Err(ModelError::Invalid(
                "difference in differences: one cluster id per row is needed".into(),
            ));
        }
        Group::weighted(self.windows, self.weight, name)
    }
}

/// Person-clustered sums of influences, squared and summed in cluster order (so that
/// the result does not depend on hashing): the linearisation variance.
fn clustered_variance(rows: impl Iterator<Item = (u64, f64)>) -> f64 {
    let mut sums: std::collections::BTreeMap<u64, f64> = std::collections::BTreeMap::new();
    for (k, z) in rows {
        *sums.entry(k).or_default() += z;
    }
    sums.values().map(|v| v * v).sum()
}

/// [`difference_in_differences_clustered`] with analysis weights: each rate is the
/// weighted ratio estimator, and each row's influence is its weight times its
/// unweighted one over the weighted person-time (the weights taken as fixed).
pub fn difference_in_differences_weighted(treated: &Arm, controls: &Arm) -> Result<Did> {
    let t = treated.group("treated")?;
    let c = controls.group("control")?;
    let treated_before = t.rate_before * PER_1000_PY;
    let treated_after = t.rate_after * PER_1000_PY;
    let control_before = c.rate_before * PER_1000_PY;
    let control_after = c.rate_after * PER_1000_PY;
    let did = (treated_after - treated_before) - (control_after - control_before);
    let rows = (t.influences(treated.windows).zip(treated.cluster))
        .map(|(z, k)| (*k, z))
        .chain(
            c.influences(controls.windows)
                .zip(controls.cluster)
                .map(|(z, k)| (*k, -z)),
        );
    let se = clustered_variance(rows).sqrt() * PER_1000_PY;
    Ok(Did {
        n_treated: treated.windows.len(),
        n_control: controls.windows.len(),
        treated_before,
        treated_after,
        control_before,
        control_after,
        did,
        se,
        ci_low: did - Z_975 * se,
        ci_high: did + Z_975 * se,
    })
}

/// [`difference_in_differences_clustered`] adjusted for comparison patients who are
/// enrolled themselves during their follow-up year (risk-set matching keeps them, as
/// it must: dropping or censoring them selects on the admissions that lead to
/// referral), for one service: [`switch_adjusted_services`] with this service alone,
/// `D x T / (T - C)` where `D` is the plain DiD and `T`, `C` are the treated's and the
/// controls' admissions while enrolled in the service per follow-up day (`*_in`:
/// each row's count).
pub fn switch_adjusted(
    treated: &[Windows],
    treated_in: &[f64],
    treated_cluster: &[u64],
    controls: &[Windows],
    controls_in: &[f64],
    control_cluster: &[u64],
) -> Result<Did> {
    if treated.len() != treated_in.len() || controls.len() != controls_in.len() {
        return Err(ModelError::Invalid(
            "switching adjustment: one in-service count per row is needed".into(),
        ));
    }
    let one = |x: &[f64]| -> Vec<Vec<f64>> { x.iter().map(|v| vec![*v]).collect() };
    let (t_in, c_in) = (one(treated_in), one(controls_in));
    let arms = [(
        Arm {
            in_service: &t_in,
            ..Arm::new(treated, treated_cluster)
        },
        Arm {
            in_service: &c_in,
            ..Arm::new(controls, control_cluster)
        },
    )];
    switch_adjusted_services(&arms).pop().expect("one service")
}

/// One service's pieces of the switching adjustment.
struct SwitchFit {
    plain: Did,
    groups: [Group; 2],
    /// Per arm, its in-service events per follow-up day in each service.
    rates: [Vec<f64>; 2],
}

fn switch_fit(s: usize, n: usize, (t, c): &(Arm, Arm)) -> Result<SwitchFit> {
    let plain = difference_in_differences_weighted(t, c)?;
    let groups = [t.group("treated")?, c.group("control")?];
    let mut rates = [vec![0.0; n], vec![0.0; n]];
    for (a, arm) in [t, c].into_iter().enumerate() {
        if arm.in_service.len() != arm.windows.len() || arm.in_service.iter().any(|r| r.len() != n)
        {
            return Err(ModelError::Invalid(format!(
                "switching adjustment: each row needs its in-service counts in each of the {n} services"
            )));
        }
        for (k, rate) in rates[a].iter_mut().enumerate() {
            let x: Vec<f64> = arm.in_service.iter().map(|r| r[k]).collect();
            *rate = groups[a].follow_up_rate(arm.windows, &x).0;
        }
    }
    if rates[0][s] <= rates[1][s] {
        return Err(ModelError::Invalid(
            "switching adjustment: the enrolled had no more admissions while enrolled than their controls, so the effect cannot be separated".into(),
        ));
    }
    Ok(SwitchFit {
        plain,
        groups,
        rates,
    })
}

/// The inverse of a small square matrix (rows), by Gauss-Jordan with partial
/// pivoting; `None` when singular.
fn invert(m: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let n = m.len();
    let mut a: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut row = r.clone();
            row.extend((0..n).map(|j| f64::from(u8::from(i == j))));
            row
        })
        .collect();
    let scale = m.iter().flatten().fold(0.0f64, |x, v| x.max(v.abs()));
    for col in 0..n {
        let p = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if !(a[p][col].abs() > 1e-12 * scale) {
            return None;
        }
        a.swap(col, p);
        let d = a[col][col];
        a[col].iter_mut().for_each(|v| *v /= d);
        for i in (0..n).filter(|&i| i != col) {
            let f = a[i][col];
            let pivot = a[col].clone();
            a[i].iter_mut().zip(&pivot).for_each(|(v, p)| *v -= f * p);
        }
    }
    Some(a.into_iter().map(|r| r[n..].to_vec()).collect())
}

/// The difference in differences of every service evaluated together, each adjusted
/// for comparison patients who spend part of their follow-up in any service (the
/// evaluated one or another), each service with its own effect.
///
/// As in the rank-preserving structural models used for treatment switching (Robins &
/// Tsiatis 1991; NICE DSU TSD 16), service `k` multiplies the admission rate of
/// whoever is enrolled in it by an unknown ratio `psi_k`, so that a share
/// `theta_k = 1 - 1/psi_k` of the admissions while enrolled in `k` is its effect, and
/// the DiD of the untreated outcomes is zero. For service `s` with plain DiD `D_s` and
/// `T_sk`, `C_sk` its treated's and controls' admissions while enrolled in service `k`
/// per follow-up day, that gives `D_s = sum_k theta_k (T_sk - C_sk)`: one linear
/// equation per service, solved jointly (`theta = M^-1 D`, `M_sk = T_sk - C_sk`; the
/// fixed point of estimating each service's effect with the others' subtracted from
/// its arms). The effect on the enrolled of `s` over their follow-up is
/// `theta_s T_ss`; with one service it is `D x T / (T - C)`, and with no control
/// enrolled anywhere the plain DiD. Time in two services at once counts for both
/// (the product of the ratios is taken as the sum of the shares: exact to first
/// order).
///
/// Variance by the delta method on the person-clustered linearisation of every rate
/// involved (a person may be a row of several services' arms; their influences are
/// summed before squaring), weights taken as fixed. A service whose arms cannot be
/// estimated (empty, no person-time, or `T_ss <= C_ss`) gets its error and is left
/// out of the system (its share taken as 0); a singular system fails every service.
pub fn switch_adjusted_services(services: &[(Arm, Arm)]) -> Vec<Result<Did>> {
    let n = services.len();
    let fits: Vec<Result<SwitchFit>> = services
        .iter()
        .enumerate()
        .map(|(s, arms)| switch_fit(s, n, arms))
        .collect();
    let ok: Vec<usize> = (0..n).filter(|&s| fits[s].is_ok()).collect();
    let fit = |s: usize| fits[s].as_ref().expect("estimable");
    let m: Vec<Vec<f64>> = ok
        .iter()
        .map(|&s| {
            ok.iter()
                .map(|&k| fit(s).rates[0][k] - fit(s).rates[1][k])
                .collect()
        })
        .collect();
    let minv = invert(&m);
    let mut out: Vec<Result<Did>> = fits
        .iter()
        .map(|f| match f {
            Err(e) => Err(e.clone()),
            Ok(_) => Err(ModelError::Singular(
                "switching adjustment: the services' contrasts in time enrolled are linearly dependent".into(),
            )),
        })
        .collect();
    let Some(minv) = minv else { return out };
    let d: Vec<f64> = ok.iter().map(|&s| fit(s).plain.did / PER_1000_PY).collect();
    let theta: Vec<f64> = minv
        .iter()
        .map(|r| r.iter().zip(&d).map(|(a, b)| a * b).sum())
        .collect();
    for (a, &s) in ok.iter().enumerate() {
        let t_ss = fit(s).rates[0][s];
        let mut rows = Vec::new();
        for (b, &q) in ok.iter().enumerate() {
            let f = fit(q);
            for (arm, (sign, x)) in [(1.0, &services[q].0), (-1.0, &services[q].1)]
                .into_iter()
                .enumerate()
            {
                let g = &f.groups[arm];
                let z: Vec<f64> = g.influences(x.windows).collect();
                let mut infl: Vec<f64> = z.iter().map(|z| t_ss * minv[a][b] * sign * z).collect();
                for (j, &k) in ok.iter().enumerate() {
                    let counts: Vec<f64> = x.in_service.iter().map(|r| r[k]).collect();
                    let (_, z_in) = g.follow_up_rate(x.windows, &counts);
                    let own = if arm == 0 && q == s { theta[a] } else { 0.0 };
                    let coef =
                        -t_ss * minv[a][b] * sign * theta[j] + if k == s { own } else { 0.0 };
                    infl.iter_mut().zip(&z_in).for_each(|(v, z)| *v += coef * z);
                }
                rows.extend(x.cluster.iter().copied().zip(infl));
            }
        }
        let se = clustered_variance(rows.into_iter()).sqrt() * PER_1000_PY;
        let did = theta[a] * t_ss * PER_1000_PY;
        out[s] = Ok(Did {
            did,
            se,
            ci_low: did - Z_975 * se,
            ci_high: did + Z_975 * se,
            ..fit(s).plain.clone()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stratum: i64, score: f64) -> Candidate {
        Candidate { stratum, score }
    }

    fn w(eb: f64, db: f64, ea: f64, da: f64) -> Windows {
        Windows {
            events_before: eb,
            days_before: db,
            events_after: ea,
            days_after: da,
        }
    }

    /// The rules written as plainly as possible, O(n m).
    fn brute_force(treated: &[Candidate], controls: &[Candidate], cal: f64) -> Vec<Option<usize>> {
        let mut order: Vec<usize> = (0..treated.len()).collect();
        order.sort_by(|&a, &b| {
            treated[b]
                .score
                .total_cmp(&treated[a].score)
                .then(a.cmp(&b))
        });
        let mut used = vec![false; controls.len()];
        let mut out = vec![None; treated.len()];
        for t in order {
            let mut best: Option<(f64, usize)> = None;
            for (j, ctl) in controls.iter().enumerate() {
                if used[j] || ctl.stratum != treated[t].stratum {
                    continue;
                }
                let d = (logit(treated[t].score) - logit(ctl.score)).abs();
                if best.is_none_or(|(bd, _)| d < bd) {
                    best = Some((d, j));
                }
            }
            if let Some((d, j)) = best
                && d <= cal
            {
                used[j] = true;
                out[t] = Some(j);
            }
        }
        out
    }

    /// SplitMix64, so the tests need no crates.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn rates_per_1000_person_years() {
        assert_eq!(rate_per_1000py(2.0, 365.25), Some(2000.0));
        assert_eq!(rate_per_1000py(0.0, 730.5), Some(0.0));
        assert_eq!(rate_per_1000py(3.0, 0.0), None);
        assert_eq!(rate_per_1000py(3.0, -1.0), None);
        assert_eq!(rate_per_1000py(3.0, f64::NAN), None);
    }

    #[test]
    fn caliper_is_a_fifth_of_the_sd_of_the_logit() {
        // logits -ln 3, 0, ln 3: mean 0, sample variance ln(3)^2.
        let cal = caliper(&[0.25, 0.5, 0.75]);
        assert!((cal - 0.2 * 3f64.ln()).abs() < 1e-15, "{cal}");
        // Risks of 0 and 1 are clamped, not infinite.
        assert!(caliper(&[0.0, 1.0]).is_finite());
        assert!(caliper(&[0.3]).is_nan());
        assert_eq!(
            match_nearest(&[c(1, 0.3)], &[c(1, 0.3)], f64::NAN),
            vec![None]
        );
    }

    #[test]
    fn matches_only_within_stratum() {
        let treated = [c(1, 0.40), c(2, 0.40)];
        let controls = [c(2, 0.40), c(1, 0.45), c(3, 0.40)];
        assert_eq!(
            match_nearest(&treated, &controls, 10.0),
            vec![Some(1), Some(0)]
        );
        // A stratum without controls matches no one.
        assert_eq!(match_nearest(&[c(4, 0.4)], &controls, 10.0), vec![None]);
    }

    #[test]
    fn caliper_excludes_distant_controls_and_is_inclusive() {
        let treated = [c(1, 0.40)];
        let controls = [c(1, 0.60)];
        let d = (logit(0.40) - logit(0.60)).abs();
        assert_eq!(match_nearest(&treated, &controls, d), vec![Some(0)]);
        assert_eq!(
            match_nearest(&treated, &controls, d.next_down()),
            vec![None]
        );
    }

    #[test]
    fn without_replacement() {
        // Both want control 0; the higher score gets it, the other takes the next one.
        let treated = [c(1, 0.30), c(1, 0.31)];
        let controls = [c(1, 0.305), c(1, 0.5)];
        assert_eq!(
            match_nearest(&treated, &controls, 10.0),
            vec![Some(1), Some(0)]
        );
        // Once controls run out, no one else is matched.
        let controls = [c(1, 0.305)];
        assert_eq!(
            match_nearest(&treated, &controls, 10.0),
            vec![None, Some(0)]
        );
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        // Equally distant controls with the same score: the lower index.
        let controls = [c(1, 0.2), c(1, 0.5), c(1, 0.5), c(1, 0.5)];
        assert_eq!(match_nearest(&[c(1, 0.45)], &controls, 10.0), vec![Some(1)]);
        // Equally distant on opposite sides (logit 0.25 = -logit 0.75): the lower index,
        // whichever side it is on.
        assert_eq!(
            (logit(0.5) - logit(0.25)).abs(),
            (logit(0.5) - logit(0.75)).abs()
        );
        let t = [c(1, 0.5)];
        assert_eq!(
            match_nearest(&t, &[c(1, 0.75), c(1, 0.25)], 10.0),
            vec![Some(0)]
        );
        assert_eq!(
            match_nearest(&t, &[c(1, 0.25), c(1, 0.75)], 10.0),
            vec![Some(0)]
        );
        // Treated with equal scores: the lower treated index chooses first.
        let treated = [c(1, 0.4), c(1, 0.4)];
        let controls = [c(1, 0.1), c(1, 0.41)];
        assert_eq!(
            match_nearest(&treated, &controls, 10.0),
            vec![Some(1), Some(0)]
        );
    }

    #[test]
    fn greedy_order_is_by_descending_score_not_input_order() {
        // In input order, 0.50 would take 0.55 and leave 0.60 with 0.30. By descending
        // score, 0.60 takes 0.55 first.
        let treated = [c(1, 0.50), c(1, 0.60)];
        let controls = [c(1, 0.55), c(1, 0.30)];
        assert_eq!(
            match_nearest(&treated, &controls, 10.0),
            vec![Some(1), Some(0)]
        );
        // With a tight caliper the 0.50 is left unmatched rather than given 0.30.
        let cal = (logit(0.60) - logit(0.55)).abs();
        assert_eq!(match_nearest(&treated, &controls, cal), vec![None, Some(0)]);
    }

    #[test]
    fn agrees_with_brute_force_on_random_data_with_ties() {
        let mut rng = Rng(7);
        for round in 0..20 {
            let n_t = 5 + round * 3;
            let n_c = 20 + round * 15;
            // Scores on a coarse grid, so ties of every kind are common; some 0 and 1.
            let mut draw = |hi: f64| {
                let stratum = (rng.next() * 3.0) as i64 - 1;
                let score = ((rng.next() * hi * 40.0).round() / 40.0).min(1.0);
                c(stratum, score)
            };
            let treated: Vec<Candidate> = (0..n_t).map(|_| draw(1.0)).collect();
            let controls: Vec<Candidate> = (0..n_c).map(|_| draw(0.8)).collect();
            for cal in [0.0, 0.05, 0.3, f64::INFINITY] {
                assert_eq!(
                    match_nearest(&treated, &controls, cal),
                    brute_force(&treated, &controls, cal),
                    "round {round}, caliper {cal}"
                );
            }
        }
    }

    #[test]
    fn did_on_a_hand_computed_example() {
        // Treated: before 2 events in 2 years (1000/1000 PY), after 2 in 2 (1000).
        // Controls: before 2 in 2 (1000), after 2 in 1 (2000): one has no time after.
        // DiD = (1000 - 1000) - (2000 - 1000) = -1000.
        let y = DAYS_PER_YEAR;
        let treated = [w(2.0, y, 1.0, y), w(0.0, y, 1.0, y)];
        let controls = [w(0.0, y, 2.0, y), w(2.0, y, 0.0, 0.0)];
        // Per-day influences, with T = 2y the totals before and the treated after:
        // treated (0 - 1)/T and (0 + 1)/T; controls: after (2 - 2)/y and (0 - 0)/y,
        // before (0 - 1)/T and (2 - 1)/T, so z = 1/T and -1/T. Var = 4/T^2 and
        // se = 2/(2y) x 365.25 x 1000 = 1000.
        let d = difference_in_differences(&treated, &controls).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(d.treated_before, 1000.0) && close(d.treated_after, 1000.0));
        assert!(close(d.control_before, 1000.0) && close(d.control_after, 2000.0));
        assert!(close(d.did, -1000.0), "{d:?}");
        assert!(close(d.se, 1000.0), "{d:?}");
        assert!(close(d.ci_low, -1000.0 - Z_975 * 1000.0));
        assert!(close(d.ci_high, -1000.0 + Z_975 * 1000.0));
        assert_eq!((d.n_treated, d.n_control), (2, 2));
    }

    #[test]
    fn did_refuses_what_it_cannot_estimate() {
        let y = DAYS_PER_YEAR;
        let ok = [w(1.0, y, 1.0, y)];
        let err = |t: &[Windows], c: &[Windows]| match difference_in_differences(t, c) {
            Err(ModelError::Invalid(m)) => m,
            other => panic!("expected an error, got {other:?}"),
        };
        assert!(err(&[], &ok).contains("treated group is empty"));
        assert!(err(&ok, &[]).contains("control group is empty"));
        assert!(err(&ok, &[w(0.0, y, 0.0, 0.0)]).contains("no person-time after"));
        assert!(err(&[w(0.0, 0.0, 1.0, y)], &ok).contains("no person-time before"));
        assert!(
            err(&[w(1.0, 0.0, 1.0, y)], &ok).contains("events in a period with no person-time")
        );
        assert!(err(&[w(-1.0, y, 1.0, y)], &ok).contains("negative or non-finite"));
        assert!(err(&ok, &[w(1.0, f64::NAN, 1.0, y)]).contains("negative or non-finite"));
    }

    #[test]
    fn switch_adjustment_is_the_plain_did_without_switching_and_undoes_a_known_switch() {
        let t = vec![w(2.0, 365.0, 1.0, 365.0), w(1.0, 365.0, 2.0, 365.0)];
        let c = vec![w(2.0, 365.0, 3.0, 365.0), w(1.0, 365.0, 2.0, 365.0)];
        let (tk, ck) = ([0u64, 1], [2u64, 3]);
        let plain = difference_in_differences_clustered(&t, &tk, &c, &ck).unwrap();
        let none = switch_adjusted(&t, &[1.0, 2.0], &tk, &c, &[0.0, 0.0], &ck).unwrap();
        assert!((none.did - plain.did).abs() < 1e-9 && (none.se - plain.se).abs() < 1e-9);
        // Half the controls' in-service time: D x T / (T - C) with T = 3, C = 1.5.
        let half = switch_adjusted(&t, &[1.0, 2.0], &tk, &c, &[1.5, 0.0], &ck).unwrap();
        assert!((half.did - plain.did * 2.0).abs() < 1e-9, "{half:?}");
        assert!(switch_adjusted(&t, &[1.0, 0.0], &tk, &c, &[1.0, 0.0], &ck).is_err());
    }

    #[test]
    fn joint_adjustment_subtracts_each_services_own_effect_from_the_controls() {
        // Two services: A's controls spend time in B, B's in A. Built so that the
        // untreated outcomes have no DiD and theta_A = 0.5, theta_B = 0.25.
        // Service A: T_AA = 2, C_AB = 1 per row-year; B: T_BB = 4, C_BA = 1.
        // D_A = 0.5 x 2 - 0.25 x 1 = 0.75; D_B = 0.25 x 4 - 0.5 x 1 = 0.5 (per row-year).
        let y = DAYS_PER_YEAR;
        let rows = |after: f64| vec![w(1.0, y, after, y), w(1.0, y, after, y)];
        let (ta, ca) = (rows(1.75), rows(1.0));
        let (tb, cb) = (rows(1.5), rows(1.0));
        let (ka, kb) = ([0u64, 1], [2u64, 3]);
        let (kc, kd) = ([4u64, 5], [6u64, 7]);
        let ia_t = vec![vec![2.0, 0.0]; 2];
        let ia_c = vec![vec![0.0, 1.0]; 2];
        let ib_t = vec![vec![0.0, 4.0]; 2];
        let ib_c = vec![vec![1.0, 0.0]; 2];
        let arm = |x: &'static [Windows], k: &'static [u64], i: &'static [Vec<f64>]| Arm {
            in_service: i,
            ..Arm::new(x, k)
        };
        let leak = |v: Vec<Windows>| -> &'static [Windows] { Box::leak(v.into_boxed_slice()) };
        let leak_in = |v: Vec<Vec<f64>>| -> &'static [Vec<f64>] { Box::leak(v.into_boxed_slice()) };
        let leak_k = |v: [u64; 2]| -> &'static [u64] { Box::leak(Box::new(v)) };
        let services = [
            (
                arm(leak(ta), leak_k(ka), leak_in(ia_t)),
                arm(leak(ca), leak_k(kb), leak_in(ia_c)),
            ),
            (
                arm(leak(tb), leak_k(kc), leak_in(ib_t)),
                arm(leak(cb), leak_k(kd), leak_in(ib_c)),
            ),
        ];
        let out = switch_adjusted_services(&services);
        let (a, b) = (out[0].as_ref().unwrap(), out[1].as_ref().unwrap());
        // Effects on the enrolled: theta_A T_AA = 1, theta_B T_BB = 1 per person-year.
        assert!((a.did - 1000.0).abs() < 1e-9, "{a:?}");
        assert!((b.did - 1000.0).abs() < 1e-9, "{b:?}");
        // Each service alone (the other's time in its controls ignored) is biased.
        let alone = switch_adjusted_services(
            &services[..1]
                .iter()
                .map(|(t, c)| {
                    let one = |i: &[Vec<f64>]| -> &'static [Vec<f64>] {
                        Box::leak(
                            i.iter()
                                .map(|r| vec![r[0]])
                                .collect::<Vec<_>>()
                                .into_boxed_slice(),
                        )
                    };
                    (
                        Arm {
                            in_service: one(t.in_service),
                            ..*t
                        },
                        Arm {
                            in_service: one(c.in_service),
                            ..*c
                        },
                    )
                })
                .collect::<Vec<_>>(),
        );
        assert!((alone[0].as_ref().unwrap().did - 750.0).abs() < 1e-9);
        // A service that cannot be estimated is left out, the other still is.
        let broken = [services[0], (services[1].1, services[1].0)];
        let out = switch_adjusted_services(&broken);
        assert!(out[1].is_err());
        assert!((out[0].as_ref().unwrap().did - 750.0).abs() < 1e-9);
    }
}

//! The cell key method: perturbation that depends on exactly which people are in a
//! cell, so the same people always get the same answer and cells that differ by
//! anyone get unrelated noise (as the ABS TableBuilder and ONS Census 2021 do; see
//! `shared/reference/cell_key_method.md`).
//!
//! - Each person has two permanent record keys in `0..TABLE_SIZE`, from
//!   HMAC-SHA256(deployment secret, pseudo_id): one for counts, one for magnitudes.
//!   The secret is a key file held by whoever runs `query` or `serve`; it is never in a
//!   run folder, so analysts' files say nothing of the noise, and pseudo_ids are
//!   stable across runs, so successive runs cannot be differenced against each other.
//! - A cell's key is the sum of its people's record keys modulo `TABLE_SIZE`.
//! - Counts: the published perturbation table (`PTable`) maps (count, cell key) to an
//!   adjustment in `-D..=D`; 0 stays 0 (an empty cell has no people and no key).
//! - Sums: `x + M * top * w`, with `top` the largest contribution in the cell and `w`
//!   in `[-1, 1]` from the magnitude cell key (the top-contributor method).
//!
//! Nothing here reads data: it is arithmetic on keys and counts, tested beside it.

use super::pseudonym::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Record and cell keys live in `0..TABLE_SIZE` (the ONS administrative-data range).
pub const TABLE_SIZE: i64 = 4096;

/// The largest adjustment of a count.
pub const MAX_ADJUSTMENT: i64 = 4;
/// The variance of the adjustment of a count.
pub const VARIANCE: f64 = 2.0;
/// Magnitude noise as a share of the largest contribution to a sum.
pub const MAGNITUDE_SHARE: f64 = 0.2;

/// The record keys of one person: for counts and for magnitudes.
pub fn record_keys(secret: &Key, pseudo_id: &str) -> (i64, i64) {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("any key length");
    mac.update(b"riskstrat cell key v1\0");
    mac.update(pseudo_id.as_bytes());
    let d = mac.finalize().into_bytes();
    let k = |a: u8, b: u8| (u16::from_be_bytes([a, b]) as i64) % TABLE_SIZE;
    (k(d[0], d[1]), k(d[2], d[3]))
}

/// The key of a cell from the sum of its people's record keys.
pub fn cell_key(sum_of_record_keys: i64) -> i64 {
    sum_of_record_keys.rem_euclid(TABLE_SIZE)
}

/// The perturbation table for counts: for every count of at least `MAX_ADJUSTMENT`
/// (smaller counts are suppressed before they are perturbed, and 0 stays 0) the
/// adjustment is drawn, by the cell key, from the maximum-entropy distribution on
/// `-D..=D` with mean 0 and variance `VARIANCE`: a discrete Gaussian `p(v) ∝
/// exp(-λv²)`. Cumulative bounds are in units of `1 / TABLE_SIZE`.
#[derive(Debug, Clone, PartialEq)]
pub struct PTable {
    /// `(adjustment, probability, upper bound of its cell-key interval)`.
    pub rows: Vec<(i64, f64, i64)>,
}

impl PTable {
    pub fn new(d: i64, variance: f64) -> PTable {
        let probs = |lambda: f64| -> Vec<f64> {
            let w: Vec<f64> = (-d..=d).map(|v| (-lambda * (v * v) as f64).exp()).collect();
            let total: f64 = w.iter().sum();
            w.into_iter().map(|x| x / total).collect()
        };
        let var = |p: &[f64]| -> f64 {
            (-d..=d)
                .zip(p)
                .map(|(v, p)| p * (v * v) as f64)
                .sum::<f64>()
        };
        // Variance falls as λ grows: bisect for the one that gives `variance`.
        let (mut lo, mut hi) = (0.0f64, 50.0f64);
        for _ in 0..200 {
            let mid = (lo + hi) / 2.0;
            if var(&probs(mid)) > variance {
                lo = mid
            } else {
                hi = mid
            }
        }
        let p = probs((lo + hi) / 2.0);
        // Whole numbers of keys per adjustment, the same for v and -v (so the mean is
        // exactly 0), the rest on 0.
        let keys: Vec<i64> = (-d..=d)
            .zip(&p)
            .map(|(v, p)| {
                if v == 0 {
                    0
                } else {
                    (p * TABLE_SIZE as f64).round() as i64
                }
            })
            .collect();
        let zero = TABLE_SIZE - keys.iter().sum::<i64>();
        let mut rows = Vec::new();
        let mut ub = 0;
        for ((v, p), k) in (-d..=d).zip(p).zip(keys) {
            ub += if v == 0 { zero } else { k };
            rows.push((v, p, ub));
        }
        PTable { rows }
    }

    /// The table in use.
    pub fn standard() -> PTable {
        PTable::new(MAX_ADJUSTMENT, VARIANCE)
    }

    /// The adjustment for a cell key.
    pub fn adjustment(&self, cell_key: i64) -> i64 {
        let ck = cell_key.rem_euclid(TABLE_SIZE);
        self.rows
            .iter()
            .find(|(_, _, ub)| ck < *ub)
            .map(|(v, _, _)| *v)
            .expect("the last bound is TABLE_SIZE")
    }

    /// The perturbed count: 0 stays 0.
    pub fn perturb(&self, count: i64, cell_key: i64) -> i64 {
        if count == 0 {
            0
        } else {
            (count + self.adjustment(cell_key)).max(0)
        }
    }

    /// How many of the `TABLE_SIZE` cell keys give each adjustment, as a Markdown row
    /// of cells (for the README).
    pub fn markdown_cells(&self) -> String {
        let mut from = 0;
        let mut cells = Vec::new();
        for (_, _, ub) in &self.rows {
            cells.push((ub - from).to_string());
            from = *ub;
        }
        cells.join(" | ")
    }

    /// The published table, one line per (adjustment, probability, cell-key range).
    pub fn to_csv(&self) -> String {
        let mut s = String::from("count,adjustment,probability,cell_key_from,cell_key_to\n");
        let mut from = 0;
        for (v, p, ub) in &self.rows {
            if *ub > from {
                s.push_str(&format!(
                    "{}+,{v},{p:.6},{from},{}\n",
                    MAX_ADJUSTMENT,
                    ub - 1
                ));
            }
            from = *ub;
        }
        s
    }
}

/// `w` in `[-1, 1]` for a magnitude cell key: a symmetric triangular draw (mean 0,
/// variance 1/6), from the middle of the key's interval.
pub fn magnitude_noise(cell_key: i64) -> f64 {
    let u = (cell_key.rem_euclid(TABLE_SIZE) as f64 + 0.5) / TABLE_SIZE as f64;
    if u < 0.5 {
        -1.0 + (2.0 * u).sqrt()
    } else {
        1.0 - (2.0 * (1.0 - u)).sqrt()
    }
}

/// The least magnitude noise of a sum of whole numbers with any non-zero contribution,
/// in the measure's units: as wide as a count's adjustment. Without it a measure of
/// 0, 1 or 2 per person got noise under 0.4, so its sum (and its mean times the
/// released count) gave the exact number of people behind it.
pub const WHOLE_SUM_NOISE: f64 = MAX_ADJUSTMENT as f64;

/// A perturbed sum: `sum + max(MAGNITUDE_SHARE * top, floor) * w`, with the floor
/// `WHOLE_SUM_NOISE` for sums of whole numbers (`whole`) and 0 otherwise; a sum with
/// no non-zero contribution stays as it is, and no sum crosses zero (a sum of
/// non-negative values stays non-negative).
pub fn perturb_sum(sum: f64, top: f64, cell_key: i64, whole: bool) -> f64 {
    let scale = MAGNITUDE_SHARE * top.abs();
    let scale = if whole && top != 0.0 {
        scale.max(WHOLE_SUM_NOISE)
    } else {
        scale
    };
    let out = sum + scale * magnitude_noise(cell_key);
    if sum >= 0.0 {
        out.max(0.0)
    } else {
        out.min(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_unbiased_bounded_and_has_the_variance_it_says() {
        let t = PTable::standard();
        let total: f64 = t.rows.iter().map(|r| r.1).sum();
        let mean: f64 = t.rows.iter().map(|r| r.0 as f64 * r.1).sum();
        let var: f64 = t.rows.iter().map(|r| (r.0 * r.0) as f64 * r.1).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert!(mean.abs() < 1e-12);
        assert!((var - VARIANCE).abs() < 1e-9, "{var}");
        // The integer intervals: exact counts of keys per adjustment, symmetric.
        let mut counts = vec![0i64; t.rows.len()];
        for ck in 0..TABLE_SIZE {
            let v = t.adjustment(ck);
            assert!(v.abs() <= MAX_ADJUSTMENT);
            counts[(v + MAX_ADJUSTMENT) as usize] += 1;
        }
        let n = counts.len();
        for i in 0..n {
            assert_eq!(
                counts[i],
                counts[n - 1 - i],
                "asymmetric at {i}: {counts:?}"
            );
        }
        // Mostly unchanged, sometimes by a lot: probability of 0 near 0.28.
        assert!((counts[MAX_ADJUSTMENT as usize] as f64 / TABLE_SIZE as f64 - 0.28).abs() < 0.03);
    }

    #[test]
    fn zero_stays_zero_and_counts_never_go_negative() {
        let t = PTable::standard();
        for ck in 0..TABLE_SIZE {
            assert_eq!(t.perturb(0, ck), 0);
            assert!(t.perturb(8, ck) >= 8 - MAX_ADJUSTMENT);
        }
    }

    #[test]
    fn record_keys_are_stable_uniform_and_depend_on_the_secret() {
        let a = Key::from_bytes([7; 32]);
        let b = Key::from_bytes([8; 32]);
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(record_keys(&a, id), record_keys(&a, id));
        assert_ne!(record_keys(&a, id), record_keys(&b, id));
        // Uniform enough over 16 bins.
        let mut bins = [0usize; 16];
        for i in 0..16_000 {
            let (k, m) = record_keys(&a, &format!("{i:032x}"));
            assert!((0..TABLE_SIZE).contains(&k) && (0..TABLE_SIZE).contains(&m));
            bins[(k * 16 / TABLE_SIZE) as usize] += 1;
        }
        assert!(bins.iter().all(|&c| (850..1150).contains(&c)), "{bins:?}");
    }

    #[test]
    fn magnitude_noise_is_symmetric_and_bounded() {
        let mut sum = 0.0;
        for ck in 0..TABLE_SIZE {
            let w = magnitude_noise(ck);
            assert!((-1.0..=1.0).contains(&w));
            assert!((w + magnitude_noise(TABLE_SIZE - 1 - ck)).abs() < 1e-12);
            sum += w * w;
        }
        assert!((sum / TABLE_SIZE as f64 - 1.0 / 6.0).abs() < 1e-3);
        assert_eq!(perturb_sum(1.0, 100.0, 0, false), 0.0, "never below zero");
    }

    #[test]
    fn a_sum_of_small_whole_numbers_gets_noise_as_wide_as_a_count() {
        // Regression: 380 people with 1 admission each had noise under 0.2, so
        // avg() times the released count gave the exact 380.
        let spread = |whole: bool| {
            let d: Vec<f64> = (0..TABLE_SIZE)
                .map(|ck| perturb_sum(380.0, 1.0, ck, whole) - 380.0)
                .collect();
            let off = d.iter().filter(|v| v.abs() >= 1.0).count() as f64 / d.len() as f64;
            (d.iter().cloned().fold(0.0, f64::max), off)
        };
        let (widest, off) = spread(true);
        assert!((3.9..=WHOLE_SUM_NOISE).contains(&widest), "{widest}");
        assert!(off > 0.5, "{off}");
        assert!(spread(false).0 <= MAGNITUDE_SHARE);
        // Above the floor the share of the largest contribution rules.
        assert_eq!(
            perturb_sum(500.0, 100.0, 4095, true),
            perturb_sum(500.0, 100.0, 4095, false)
        );
        // All zeros stay zero.
        assert!((0..TABLE_SIZE).all(|ck| perturb_sum(0.0, 0.0, ck, true) == 0.0));
    }

    #[test]
    fn readme_shows_the_table_in_use() {
        assert_eq!(
            crate::readme_section("ptable"),
            PTable::standard().markdown_cells()
        );
    }

    #[test]
    fn csv_lists_every_key_once() {
        let csv = PTable::standard().to_csv();
        let mut next = 0;
        for line in csv.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f[3].parse::<i64>().unwrap(), next);
            next = f[4].parse::<i64>().unwrap() + 1;
        }
        assert_eq!(next, TABLE_SIZE);
    }
}

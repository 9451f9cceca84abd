//! Risk tiers as the contract defines them: by descending risk over the population,
//! ties broken by `pseudo_id`; each tier's size is `ceil(share x N)` minus the tiers
//! above it, the shares being cumulative cut points (0.5%, 5%, 20% by default).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Tier {
    pub name: String,
    /// Cumulative share of the population up to and including this tier; the last
    /// tier takes everyone left.
    pub up_to: f64,
}

pub fn default_tiers() -> Vec<Tier> {
    [
        ("very_high", 0.005),
        ("high", 0.05),
        ("moderate", 0.2),
        ("low", 1.0),
    ]
    .into_iter()
    .map(|(n, s)| Tier {
        name: n.into(),
        up_to: s,
    })
    .collect()
}

/// `ceil(share * n)`, exact where `share * n` is an integer that floating point
/// would put a hair above (0.05 * 1000 = 50.000000000000004).
pub fn ceil_share(share: f64, n: usize) -> usize {
    let x = share * n as f64;
    let r = x.round();
    let k = if (x - r).abs() <= 1e-9 * r.abs().max(1.0) {
        r
    } else {
        x.ceil()
    };
    (k.max(0.0) as usize).min(n)
}

/// Tier index for each row (0 = the first tier), given its risk and its id.
pub fn assign(risk: &[f64], ids: &[&str], tiers: &[Tier]) -> Vec<usize> {
    let n = risk.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| risk[b].total_cmp(&risk[a]).then_with(|| ids[a].cmp(ids[b])));
    let mut out = vec![tiers.len().saturating_sub(1); n];
    let mut start = 0;
    for (t, tier) in tiers.iter().enumerate() {
        let end = if t + 1 == tiers.len() {
            n
        } else {
            ceil_share(tier.up_to, n).max(start)
        };
        for &i in &order[start..end] {
            out[i] = t;
        }
        start = end;
    }
    out
}

/// Check cut points: strictly increasing shares in (0, 1], the last one 1.
pub fn validate(tiers: &[Tier]) -> Result<(), String> {
    if tiers.is_empty() {
        return Err("at least one tier is needed".into());
    }
    let mut prev = 0.0;
    for (i, t) in tiers.iter().enumerate() {
        // Tiers are told apart by name (scores, cohorts, views): a repeat would merge two.
        if t.name.trim().is_empty() {
            return Err(format!("tier {}: give it a name", i + 1));
        }
        if tiers[..i].iter().any(|u| u.name == t.name) {
            return Err(format!(
                "tier '{}' is named twice; give each tier its own name",
                t.name
            ));
        }
        if !(t.up_to > prev && t.up_to <= 1.0) {
            return Err(format!(
                "tier {}: up_to {} must be above {prev} and at most 1",
                t.name, t.up_to
            ));
        }
        prev = t.up_to;
    }
    if (prev - 1.0).abs() > 1e-12 {
        return Err("the last tier must reach 1 (everyone left)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(n: usize) -> Vec<usize> {
        let risk: Vec<f64> = (0..n).map(|i| 1.0 - i as f64 / n as f64).collect();
        let ids: Vec<String> = (0..n).map(|i| format!("{i:08}")).collect();
        let ids: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
        let t = assign(&risk, &ids, &default_tiers());
        (0..4)
            .map(|k| t.iter().filter(|x| **x == k).count())
            .collect()
    }

    #[test]
    fn sizes_follow_ceil_of_cumulative_shares() {
        // N = 1000: ceil(5) = 5, ceil(50) = 50, ceil(200) = 200.
        assert_eq!(sizes(1000), vec![5, 45, 150, 800]);
        // N = 1001: ceil(5.005) = 6, ceil(50.05) = 51, ceil(200.2) = 201.
        assert_eq!(sizes(1001), vec![6, 45, 150, 800]);
        // N = 199: ceil(0.995) = 1, ceil(9.95) = 10, ceil(39.8) = 40.
        assert_eq!(sizes(199), vec![1, 9, 30, 159]);
        // N = 1: the one person is very high.
        assert_eq!(sizes(1), vec![1, 0, 0, 0]);
        assert_eq!(sizes(0), vec![0, 0, 0, 0]);
    }

    #[test]
    fn ties_break_by_pseudo_id() {
        let risk = vec![0.5; 200];
        let ids: Vec<String> = (0..200).rev().map(|i| format!("{i:03}")).collect();
        let refs: Vec<&str> = ids.iter().map(|s| s.as_str()).collect();
        let t = assign(&risk, &refs, &default_tiers());
        // The smallest id ("000", the last row) is first: very high.
        assert_eq!(t[199], 0);
        assert_eq!(t.iter().filter(|x| **x == 0).count(), 1);
    }

    #[test]
    fn cut_points_are_checked() {
        assert!(validate(&default_tiers()).is_ok());
        let bad = vec![
            Tier {
                name: "a".into(),
                up_to: 0.5,
            },
            Tier {
                name: "b".into(),
                up_to: 0.4,
            },
        ];
        assert!(validate(&bad).is_err());
    }
}

//! The model section: how well the risk model discriminates and is calibrated, how it
//! behaves at the tiers' cut points and for subgroups, and its coefficients. Every
//! chart is drawn from `metrics.json` and `model.json` as the run wrote them.

use super::svg::{Chart, PALETTE, YAxis};
use super::{Inputs, fmt, section};
use crate::outputs::report::esc;
use serde_json::Value;

fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn pairs(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The evaluation the section shows: the validation split of a fitted run, or a
/// score-only run's temporal validation.
fn evaluation(inputs: &Inputs) -> (&Value, &'static str) {
    let m = &inputs.metrics;
    if m.get("temporal_validation").is_some() {
        (
            &m["temporal_validation"]["validation"],
            "the saved model on the newest complete outcome year (temporal validation)",
        )
    } else {
        (
            &m["validation"],
            "the validation split (people the model was not fitted on)",
        )
    }
}

/// Wilson's 95% interval for `k` events in `n`.
pub fn wilson(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let p = k / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / (1.0 + z * z / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

pub fn render(inputs: &Inputs) -> String {
    let (e, what) = evaluation(inputs);
    if e.get("auc").is_none() {
        let why = e["error"].as_str().unwrap_or("no metrics were recorded");
        return section(
            "model",
            "The risk model",
            &format!(
                "<p>No performance figures for this run: {}.</p>\n",
                esc(why)
            ),
        );
    }
    let auc = f(&e["auc"]);
    let ci = (f(&e["auc_ci"][0]), f(&e["auc_ci"][1]));
    let mut out = format!(
        "<p>Measured on {what}: <b>{}</b> people, <b>{}</b> with an emergency admission in the year. AUC <span id=\"m-auc\" data-value=\"{}\">{}</span> (95% CI {} to {}); calibration slope <span id=\"m-slope\" data-value=\"{}\">{}</span>, calibration-in-the-large <span id=\"m-intercept\" data-value=\"{}\">{}</span>; Brier score {}.</p>\n",
        e["n"],
        e["events"],
        super::svg::attr(auc.unwrap_or(f64::NAN)),
        fmt(auc, 3),
        fmt(ci.0, 3),
        fmt(ci.1, 3),
        super::svg::attr(f(&e["calibration_slope"]).unwrap_or(f64::NAN)),
        fmt(f(&e["calibration_slope"]), 2),
        super::svg::attr(f(&e["calibration_intercept"]).unwrap_or(f64::NAN)),
        fmt(f(&e["calibration_intercept"]), 3),
        fmt(f(&e["brier"]), 4),
    );
    out.push_str(&roc(e, auc, ci));
    out.push_str(&calibration(e));
    out.push_str(&distribution(e));
    out.push_str(&observed_expected(inputs));
    out.push_str(&thresholds(inputs, e));
    out.push_str(&decision_curve(e));
    out.push_str(&coefficients(inputs));
    out.push_str(&subgroups(inputs, auc));
    section("model", "The risk model", &out)
}

fn roc(e: &Value, auc: Option<f64>, ci: (Option<f64>, Option<f64>)) -> String {
    let pts = pairs(&e["roc"]);
    if pts.is_empty() {
        return String::new();
    }
    let mut c = Chart::new(
        "chart-roc",
        "ROC curve",
        &format!(
            "Receiver operating characteristic curve of the risk model: sensitivity against 1 - specificity as the risk threshold falls; area under the curve {} (95% CI {} to {}). The diagonal is a model no better than chance.",
            fmt(auc, 3),
            fmt(ci.0, 3),
            fmt(ci.1, 3)
        ),
        ("1 - specificity", 0.0, 1.0),
        YAxis::Numbers {
            label: "sensitivity".into(),
            lo: 0.0,
            hi: 1.0,
        },
    );
    c.line("chance", PALETTE[6], true, &[(0.0, 0.0), (1.0, 1.0)]);
    c.line("model", PALETTE[0], false, &pts);
    c.finish()
}

fn calibration(e: &Value) -> String {
    let deciles = e["deciles"].as_array().cloned().unwrap_or_default();
    if deciles.is_empty() {
        return String::new();
    }
    let points: Vec<(f64, f64, Option<(f64, f64)>)> = deciles
        .iter()
        .filter_map(|d| {
            let n = d["n"].as_f64()?;
            let obs = d["observed"].as_f64()?;
            Some((
                d["mean_risk"].as_f64()?,
                d["observed_rate"].as_f64()?,
                Some(wilson(obs, n)),
            ))
        })
        .collect();
    let curve = pairs(&e["calibration_curve"]);
    let top = points
        .iter()
        .map(|p| p.0.max(p.2.map_or(0.0, |c| c.1)))
        .chain(curve.iter().map(|c| c.0.max(c.1)))
        .fold(0.0, f64::max)
        .clamp(0.05, 1.0);
    let mut c = Chart::new(
        "chart-calibration",
        "Calibration",
        &format!(
            "Observed share with an emergency admission against mean predicted risk in ten groups of equal size by predicted risk, with 95% Wilson intervals, the logistic recalibration curve (slope {}, calibration-in-the-large {}) and the diagonal of perfect calibration.",
            fmt(f(&e["calibration_slope"]), 2),
            fmt(f(&e["calibration_intercept"]), 3)
        ),
        ("mean predicted risk", 0.0, top),
        YAxis::Numbers {
            label: "observed share".into(),
            lo: 0.0,
            hi: top,
        },
    );
    c.line(
        "perfect calibration",
        PALETTE[6],
        true,
        &[(0.0, 0.0), (top, top)],
    );
    if !curve.is_empty() {
        c.line("logistic recalibration curve", PALETTE[1], false, &curve);
    }
    c.points("risk decile", PALETTE[0], &points);
    c.finish()
}

fn distribution(e: &Value) -> String {
    let h = &e["risk_histogram"];
    let edges: Vec<f64> = h["edges"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    if edges.len() < 2 {
        return String::new();
    }
    let counts = |k: &str| -> Vec<f64> {
        h[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (ev, non) = (counts("events"), counts("non_events"));
    let share = |v: &[f64]| -> Vec<(f64, f64)> {
        let total: f64 = v.iter().sum::<f64>().max(1.0);
        v.iter()
            .enumerate()
            .map(|(k, c)| ((edges[k] + edges[k + 1]) / 2.0, c / total))
            .collect()
    };
    let (ev, non) = (share(&ev), share(&non));
    let top = ev
        .iter()
        .chain(&non)
        .map(|p| p.1)
        .fold(0.0, f64::max)
        .max(0.01);
    let mut c = Chart::new(
        "chart-distribution",
        "Predicted risk by outcome",
        "The share of people in each band of predicted risk, separately for those who had an emergency admission in the year and those who did not: the further apart, the better the model separates them.",
        ("predicted risk", 0.0, *edges.last().unwrap_or(&1.0)),
        YAxis::Numbers {
            label: "share of the group".into(),
            lo: 0.0,
            hi: top,
        },
    );
    c.line("no emergency admission", PALETTE[5], false, &non);
    c.line("emergency admission", PALETTE[3], false, &ev);
    c.finish()
}

/// Observed events against the sum of predicted risks, by age band and by sex.
fn observed_expected(inputs: &Inputs) -> String {
    let sub = &inputs.metrics["subgroups"];
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for kind in ["age_band", "sex"] {
        let Some(groups) = sub[kind].as_object() else {
            continue;
        };
        for (g, v) in groups {
            let observed = v["events"].as_f64();
            let expected: Option<f64> = v["deciles"]
                .as_array()
                .map(|d| d.iter().filter_map(|r| r["expected"].as_f64()).sum());
            if let (Some(o), Some(x)) = (observed, expected) {
                labels.push(format!("{} {g}", kind.replace('_', " ")));
                values.push((o, x));
            }
        }
    }
    if labels.is_empty() {
        return String::new();
    }
    let top = values.iter().map(|(o, x)| o.max(*x)).fold(1.0, f64::max);
    let mut c = Chart::new(
        "chart-observed-expected",
        "Observed against expected by age band and sex",
        "For each age band and sex in the validation split: the number of people with an emergency admission (observed) beside the sum of their predicted risks (expected). Bars of equal length mean the model is calibrated for that group.",
        ("people with an emergency admission", 0.0, top * 1.05),
        YAxis::Rows(labels),
    );
    for (k, (o, x)) in values.iter().enumerate() {
        c.bar("observed", PALETTE[0], k, (0.0, *o), (0, 2), *o);
        c.bar("expected", PALETTE[1], k, (0.0, *x), (1, 2), *x);
    }
    c.finish()
}

/// Sensitivity, specificity, PPV and NPV when the top shares (the tiers' cut points)
/// are flagged.
fn thresholds(inputs: &Inputs, e: &Value) -> String {
    let tiers: Vec<(String, f64)> = inputs.model["tiers"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| Some((t["name"].as_str()?.to_string(), t["up_to"].as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let Some(top) = e["top"].as_array() else {
        return String::new();
    };
    let mut s = String::from(
        "<h3>At the tiers' cut points</h3>\n<table id=\"thresholds\"><tr><th>flagged</th><th>people</th><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th></tr>\n",
    );
    for t in top {
        let share = t["share"].as_f64().unwrap_or(f64::NAN);
        let tier = tiers
            .iter()
            .find(|(_, up)| (up - share).abs() < 1e-12)
            .map(|(n, _)| format!(" (tiers to {})", esc(n)))
            .unwrap_or_default();
        s.push_str(&format!(
            "<tr><td>highest {}%{tier}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            fmt(Some(share * 100.0), 1),
            t["flagged"],
            fmt(f(&t["sensitivity"]), 3),
            fmt(f(&t["specificity"]), 3),
            fmt(f(&t["ppv"]), 3),
            fmt(f(&t["npv"]), 3),
        ));
    }
    s.push_str("</table>\n");
    s
}

fn decision_curve(e: &Value) -> String {
    let Some(rows) = e["net_benefit"].as_array().filter(|r| !r.is_empty()) else {
        return String::new();
    };
    let get = |k: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r["threshold"].as_f64()?, r[k].as_f64()?)))
            .collect()
    };
    let (model, all) = (get("model"), get("treat_all"));
    let hi = model.iter().chain(&all).map(|p| p.1).fold(0.01, f64::max);
    let lo = -hi / 4.0;
    let all: Vec<(f64, f64)> = all.into_iter().filter(|p| p.1 >= lo).collect();
    let x_hi = model.last().map_or(0.5, |p| p.0);
    let mut c = Chart::new(
        "chart-decision",
        "Decision curve",
        "Net benefit of offering joined-up care to everyone whose predicted risk is at least the threshold, against offering it to everyone and to no one, for thresholds from 1% to 50%. Net benefit is true positives minus false positives weighted by the odds at the threshold, per person.",
        ("threshold risk", 0.0, x_hi),
        YAxis::Numbers {
            label: "net benefit".into(),
            lo,
            hi,
        },
    );
    c.line("no one", PALETTE[6], true, &[(0.0, 0.0), (x_hi, 0.0)]);
    c.line("everyone", PALETTE[1], false, &all);
    c.line("the model", PALETTE[0], false, &model);
    c.finish()
}

fn coefficients(inputs: &Inputs) -> String {
    let m = &inputs.model;
    let Some(names) = m["features"].as_array() else {
        return String::new();
    };
    let rows: Vec<(String, f64, Option<(f64, f64)>)> = names
        .iter()
        .filter_map(|n| {
            let n = n.as_str()?;
            let b = m["coefficients"][n].as_f64()?;
            let ci = m["ci_low"][n].as_f64().zip(m["ci_high"][n].as_f64());
            Some((n.to_string(), b, ci))
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let lo = rows
        .iter()
        .map(|r| r.2.map_or(r.1, |c| c.0))
        .fold(0.0, f64::min);
    let hi = rows
        .iter()
        .map(|r| r.2.map_or(r.1, |c| c.1))
        .fold(0.0, f64::max);
    let pad = (hi - lo).max(0.1) * 0.05;
    let mut c = Chart::new(
        "chart-coefficients",
        "Coefficients",
        "Each design term's log-odds coefficient per unit with its 95% Wald interval; to the right of zero the term raises risk.",
        ("log-odds per unit", lo - pad, hi + pad),
        YAxis::Rows(rows.iter().map(|r| r.0.clone()).collect()),
    );
    c.reference_x(0.0, "no effect");
    for (k, (_, b, ci)) in rows.iter().enumerate() {
        c.estimate(
            "coefficient",
            PALETTE[0],
            k,
            *b,
            ci.unwrap_or((*b, *b)),
            false,
        );
    }
    c.finish()
}

/// AUC by subgroup as a forest plot; a subgroup is flagged as served worse when its
/// whole interval lies below the overall AUC or its calibration slope leaves 0.8-1.2.
fn subgroups(inputs: &Inputs, overall: Option<f64>) -> String {
    let sub = &inputs.metrics["subgroups"];
    let mut rows = Vec::new();
    for kind in ["sex", "age_band", "imd_quintile"] {
        let Some(groups) = sub[kind].as_object() else {
            continue;
        };
        for (g, v) in groups {
            let (Some(auc), Some(lo), Some(hi)) =
                (f(&v["auc"]), f(&v["auc_ci"][0]), f(&v["auc_ci"][1]))
            else {
                continue;
            };
            let slope = f(&v["calibration_slope"]);
            let worse =
                overall.is_some_and(|o| hi < o) || slope.is_some_and(|s| !(0.8..=1.2).contains(&s));
            rows.push((
                format!("{} {g}", kind.replace('_', " ")),
                auc,
                (lo, hi),
                slope,
                worse,
            ));
        }
    }
    if rows.is_empty() {
        return String::new();
    }
    let lo = rows.iter().map(|r| r.2.0).fold(1.0, f64::min).min(0.5);
    let mut c = Chart::new(
        "chart-subgroups",
        "Performance by subgroup",
        "AUC with its 95% interval for each sex, age band and deprivation quintile; hollow marks are subgroups the model serves worse (the interval lies wholly below the overall AUC, or the calibration slope is outside 0.8 to 1.2). The dashed line is the overall AUC.",
        ("AUC", lo, 1.0),
        YAxis::Rows(rows.iter().map(|r| r.0.clone()).collect()),
    );
    if let Some(o) = overall {
        c.reference_x(o, "overall AUC");
    }
    for (k, r) in rows.iter().enumerate() {
        c.estimate("AUC", PALETTE[2], k, r.1, r.2, r.4);
    }
    let mut s = String::from("<h3>Subgroups</h3>\n");
    s.push_str(&c.finish());
    let flagged: Vec<String> = rows
        .iter()
        .filter(|r| r.4)
        .map(|r| format!("{} (AUC {:.3}, slope {})", esc(&r.0), r.1, fmt(r.3, 2)))
        .collect();
    if flagged.is_empty() {
        s.push_str("<p>No subgroup is served worse by these rules.</p>\n");
    } else {
        s.push_str(&format!(
            "<p class=\"flag\" id=\"served-worse\">Served worse: {}.</p>\n",
            flagged.join("; ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wilson's interval against a published worked example (Newcombe 1998, Table I:
    /// 81 of 263 gives 0.2553 to 0.3662).
    #[test]
    fn wilson_interval_matches_newcombe() {
        let (lo, hi) = wilson(81.0, 263.0);
        assert!(
            (lo - 0.2553).abs() < 5e-5 && (hi - 0.3662).abs() < 5e-5,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0.0, 0.0), (0.0, 1.0));
    }
}

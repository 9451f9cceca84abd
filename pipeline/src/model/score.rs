//! Scoring in DataFusion, the one path for everyone the model scores: the model as an
//! expression (`risk_of`, used by the score stage and by the service evaluation
//! through `risk_expr`), each term's contribution `coefficient x (value - mean)` as an
//! expression over the population's means (one aggregate), the three largest positive
//! contributions chosen by comparisons, and tiers by rank.

use super::{ModelFile, terms};
use crate::bad_input;
use crate::error::{Error, Result};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringBuilder,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::functions::math::expr_fn::exp;
use datafusion::functions_aggregate::expr_fn::{avg, count};
use datafusion::prelude::{DataFrame, Expr, cast, coalesce, ident, lit, when};
use riskstrat_models::tiers::{Tier, ceil_share};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The model's terms as Float64 expressions over `df`, in the order of `names`; a
/// name that is no term of `df` is the error `missing` makes of it.
fn lookup(df: &DataFrame, names: &[String], missing: impl Fn(&str) -> Error) -> Result<Vec<Expr>> {
    let fields: Vec<(String, DataType)> = df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    names
        .iter()
        .map(|t| terms::expr(t, &fields).ok_or_else(|| missing(t)))
        .collect()
}

/// The job's model terms over a features table (an unknown one is bad input that
/// lists the numeric features).
pub(super) fn term_exprs(df: &DataFrame, names: &[String]) -> Result<Vec<Expr>> {
    lookup(df, names, |t| {
        bad_input!(
            "[model] features: '{t}' is not a numeric feature or a model term (sex_female, imd_decile, or one of: {})",
            crate::features::registry::FEATURES
                .iter()
                .filter(|f| f.kind != crate::features::registry::Kind::Attribute)
                .map(|f| f.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// `sigmoid(beta[0] + sum beta[k + 1] x terms[k])`, summed in term order and with the
/// branches of `riskstrat_models::logistic::sigmoid`, so that it gives the same
/// numbers as the fitted model's `predict`.
pub fn risk_of(beta: &[f64], terms: &[Expr]) -> Expr {
    let lp = terms
        .iter()
        .zip(&beta[1..])
        .fold(lit(beta[0]), |lp, (x, b)| lp + lit(*b) * x.clone());
    let e = exp(lp.clone());
    when(lp.clone().gt_eq(lit(0.0)), lit(1.0) / (lit(1.0) + exp(-lp)))
        .otherwise(e.clone() / (lit(1.0) + e))
        .expect("a CASE with one branch and an ELSE")
}

/// The model's risk as an expression over a features table (the service evaluation
/// scores whole populations at many dates with it).
pub fn risk_expr(model: &ModelFile, features: &DataFrame) -> Result<Expr> {
    let beta = model.coefficient_vector()?;
    let terms = lookup(features, &model.features, |t| {
        bad_input!("model.json: '{t}' is not a term of this feature table")
    })?;
    Ok(risk_of(&beta, &terms))
}

fn term(k: usize) -> String {
    format!("__t{k}")
}

fn contribution(k: usize) -> String {
    format!("__c{k}")
}

/// Each term's mean over the population, in one aggregate; a term that is null for
/// anyone is an error naming it (the model cannot score without it). Averaged as
/// decimals (to 6 places), whose sums are exact in any order: a floating-point mean of
/// a term with fractions (a cost) would differ in its last bits with the order in which
/// rows arrive, and with it the reasons' contributions.
async fn means(df: &DataFrame, names: &[String]) -> Result<(usize, Vec<f64>)> {
    let mut aggregates = vec![count(lit(1)).alias("__n")];
    for k in 0..names.len() {
        let exact = avg(cast(ident(term(k)), DataType::Decimal128(38, 6)));
        aggregates.push(cast(exact, DataType::Float64).alias(format!("__m{k}")));
        aggregates.push(count(ident(term(k))).alias(format!("__k{k}")));
    }
    let batches = df.clone().aggregate(vec![], aggregates)?.collect().await?;
    let row = batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::failed("the population's means: no row"))?;
    let int = |name: &str| {
        row.column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .map(|a| a.value(0) as usize)
            .ok_or_else(|| Error::failed(format!("{name} is not Int64")))
    };
    let n = int("__n")?;
    let mut means = Vec::with_capacity(names.len());
    for (k, t) in names.iter().enumerate() {
        let nulls = n - int(&format!("__k{k}"))?;
        if nulls > 0 {
            return Err(bad_input!(
                "[model] features: '{t}' is null for {nulls} people; give it a default in its SQL"
            ));
        }
        let mean = row
            .column_by_name(&format!("__m{k}"))
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .filter(|a| a.is_valid(0))
            .map_or(0.0, |a| a.value(0));
        means.push(mean);
    }
    Ok((n, means))
}

/// Each tier's last rank (1-based, inclusive) among `n` people: `ceil(share x n)`
/// minus the tiers above, the last tier taking everyone left (as `tiers::assign`).
fn tier_ends(tiers: &[Tier], n: usize) -> Vec<usize> {
    let mut start = 0;
    tiers
        .iter()
        .enumerate()
        .map(|(t, tier)| {
            start = if t + 1 == tiers.len() {
                n
            } else {
                ceil_share(tier.up_to, n).max(start)
            };
            start
        })
        .collect()
}

/// The tier of each rank in turn (descending risk, ties by pseudo_id): the tiers'
/// runs of ranks, one after the other.
fn tier_column(tiers: &[Tier], ends: &[usize], n: usize) -> ArrayRef {
    let mut column = StringBuilder::with_capacity(n, n * 8);
    let mut start = 0;
    for (tier, &end) in tiers.iter().zip(ends) {
        for _ in start..end {
            column.append_value(&tier.name);
        }
        start = end;
    }
    for _ in start..n {
        column.append_value("");
    }
    Arc::new(column.finish())
}

/// The column of `score_reasons`' structs, until [`into_scores`].
const REASONS: &str = "__reasons";

/// The collected scores, in rank order, as one batch of [`scores_schema`]: each row
/// gets its rank's tier, and the struct of reasons (the last column) becomes its
/// fields.
fn into_scores(batches: &[RecordBatch], tier: ArrayRef) -> Result<RecordBatch> {
    let schema = scores_schema();
    let Some(first) = batches.first() else {
        return Ok(RecordBatch::new_empty(schema));
    };
    let all = concat_batches(&first.schema(), batches)?;
    let mut columns = all.columns().to_vec();
    let reasons = columns
        .pop()
        .ok_or_else(|| Error::failed("the scores: no column of reasons"))?;
    let reasons = reasons
        .as_any()
        .downcast_ref::<datafusion::arrow::array::StructArray>()
        .ok_or_else(|| Error::failed("the scores: the reasons are not a struct"))?;
    columns.push(tier);
    columns.extend(reasons.columns().iter().cloned());
    Ok(RecordBatch::try_new(schema, columns)?)
}

fn scores_schema() -> Arc<Schema> {
    let mut fields = vec![
        Field::new("pseudo_id", DataType::Utf8, false),
        Field::new("risk", DataType::Float64, false),
        Field::new("tier", DataType::Utf8, false),
    ];
    fields.extend(crate::session::reason_fields());
    Arc::new(Schema::new(fields))
}

/// Risk, tier and the three largest contributions `coefficient x (value - mean)` for
/// everyone in `features` (the population at A), in rank order; and each tier's size.
pub async fn score(
    features: DataFrame,
    model: &ModelFile,
    tiers: &[Tier],
) -> Result<(RecordBatch, BTreeMap<String, u64>)> {
    let beta = model.coefficient_vector()?;
    let names = &model.features;
    let p = names.len();
    let mut columns =
        vec![coalesce(vec![cast(ident("pseudo_id"), DataType::Utf8), lit("")]).alias("pseudo_id")];
    for (k, e) in term_exprs(&features, names)?.into_iter().enumerate() {
        columns.push(e.alias(term(k)));
    }
    let df = features.select(columns)?;
    let (n, means) = means(&df, names).await?;

    let terms: Vec<Expr> = (0..p).map(|k| ident(term(k))).collect();
    let mut columns = vec![ident("pseudo_id"), risk_of(&beta, &terms).alias("risk")];
    for k in 0..p {
        let c = lit(beta[k + 1]) * (ident(term(k)) - lit(means[k]));
        columns.push(c.alias(contribution(k)));
    }
    // The reasons over every partition in parallel, then one sort; each row's tier
    // follows from its place in that order, without a window over the whole
    // population (a second, single-threaded pass over its rows, measured at 0.4 s of
    // the stage's 1.4 s at 1,000,000 people). `score_reasons` takes the terms' names,
    // then their contributions; its struct of reasons is unpacked once collected
    // (`get_field` for each reason evaluated the function once for each).
    let mut args: Vec<Expr> = names.iter().map(|t| lit(t.as_str())).collect();
    args.extend((0..p).map(|k| ident(contribution(k))));
    let reasons = crate::session::reasons_udf().call(args).alias(REASONS);
    let ends = tier_ends(tiers, n);
    let batches = df
        .select(columns)?
        .select(vec![ident("pseudo_id"), ident("risk"), reasons])?
        // Descending risk, ties by pseudo_id: the tiers' order and the file's.
        .sort(vec![
            ident("risk").sort(false, true),
            ident("pseudo_id").sort(true, true),
        ])?
        .collect()
        .await?;
    let batch = into_scores(&batches, tier_column(tiers, &ends, n))?;
    let mut sizes = BTreeMap::new();
    let mut start = 0;
    for (tier, end) in tiers.iter().zip(ends) {
        sizes.insert(tier.name.clone(), (end - start) as u64);
        start = end;
    }
    Ok((batch, sizes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::common::cast::{as_float64_array, as_string_array};
    use datafusion::prelude::SessionContext;

    /// The row loop this module replaced, kept as the reference: risk, the three
    /// largest positive contributions (ties by term order), tiers by `assign`.
    type Reasons = [Option<(String, f64)>; 3];
    fn direct(
        ids: &[&str],
        x: &[Vec<f64>],
        model: &ModelFile,
        tiers: &[Tier],
    ) -> Vec<(f64, String, Reasons)> {
        let beta = model.coefficient_vector().unwrap();
        let n = ids.len();
        let means: Vec<f64> = x.iter().map(|c| c.iter().sum::<f64>() / n as f64).collect();
        let mut rows = Vec::new();
        for i in 0..n {
            let mut lp = beta[0];
            let mut contrib: Vec<(usize, f64)> = Vec::new();
            for k in 0..x.len() {
                lp += beta[k + 1] * x[k][i];
                contrib.push((k, beta[k + 1] * (x[k][i] - means[k])));
            }
            contrib.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let reason = |r: usize| {
                let c = contrib.get(r).filter(|c| c.1 > 0.0);
                c.map(|c| (model.features[c.0].clone(), c.1))
            };
            let risk = riskstrat_models::logistic::sigmoid(lp);
            rows.push((risk, String::new(), [reason(0), reason(1), reason(2)]));
        }
        let risk: Vec<f64> = rows.iter().map(|r| r.0).collect();
        for (row, t) in rows
            .iter_mut()
            .zip(riskstrat_models::tiers::assign(&risk, ids, tiers))
        {
            row.1 = tiers[t].name.clone();
        }
        rows
    }

    /// Tiers from (name, share up to) pairs.
    fn tiers(pairs: &[(&str, f64)]) -> Vec<Tier> {
        pairs
            .iter()
            .map(|&(n, s)| Tier {
                name: n.into(),
                up_to: s,
            })
            .collect()
    }

    #[tokio::test]
    async fn scores_in_datafusion_equal_the_direct_computation() {
        let names = ["x1", "x2", "x3", "x4"];
        // Coefficients: x1 and x2 equal (so equal deviations tie), x3 lowers risk.
        let model = ModelFile {
            features: names.iter().map(|s| s.to_string()).collect(),
            coefficients: [
                ("intercept", -2.0),
                ("x1", 0.5),
                ("x2", 0.5),
                ("x3", -0.7),
                ("x4", 0.25),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
            ..Default::default()
        };
        let ids = [
            "p07", "p03", "p09", "p01", "p05", "p02", "p08", "p04", "p06", "p10",
        ];
        let x = vec![
            // p03 and p05 tie on x1 and x2 (both 2 above the mean): x1 comes first.
            // p01 is below the mean wherever raising risk, above where lowering: no reason.
            // p09 and p02 have the same values (equal risk): the tier cut falls between them.
            vec![3.0, 4.0, 2.0, 0.0, 4.0, 2.0, 1.0, 2.0, 2.0, 0.0],
            vec![1.0, 3.0, 2.0, 0.0, 3.0, 2.0, 1.0, 0.0, 0.0, -2.0],
            vec![0.0, 1.0, 1.0, 3.0, 0.0, 1.0, 0.0, 2.0, 1.0, 1.0],
            vec![5.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0, 2.0, 2.0, 2.0],
        ];
        let tiers = tiers(&[("top", 0.4), ("middle", 0.6), ("rest", 1.0)]);
        let mut columns: Vec<(&str, ArrayRef)> =
            vec![("pseudo_id", Arc::new(StringArray::from(ids.to_vec())))];
        for (k, name) in names.iter().enumerate() {
            columns.push((name, Arc::new(Float64Array::from(x[k].clone()))));
        }
        let ctx = SessionContext::new();
        let df = ctx
            .read_batch(RecordBatch::try_from_iter(columns).unwrap())
            .unwrap();
        let (batch, sizes) = score(df, &model, &tiers).await.unwrap();
        let want = direct(&ids, &x, &model, &tiers);

        assert_eq!(batch.num_rows(), ids.len());
        let column = |c: &str| batch.column_by_name(c).unwrap().clone();
        let strings = |c: &str| as_string_array(&column(c)).unwrap().clone();
        let floats = |c: &str| as_float64_array(&column(c)).unwrap().clone();
        let (got_ids, risk, tier) = (strings("pseudo_id"), floats("risk"), strings("tier"));
        let mut with_no_reason = 0;
        for row in 0..batch.num_rows() {
            let i = ids.iter().position(|id| *id == got_ids.value(row)).unwrap();
            let (r, t, reasons) = &want[i];
            assert_eq!(risk.value(row), *r, "{}", ids[i]);
            assert_eq!(tier.value(row), t, "{}", ids[i]);
            for (k, want) in reasons.iter().enumerate() {
                let name = strings(&format!("reason_{}", k + 1));
                let amount = floats(&format!("reason_{}_contribution", k + 1));
                let got = name
                    .is_valid(row)
                    .then(|| (name.value(row).to_string(), amount.value(row)));
                assert_eq!(amount.is_valid(row), name.is_valid(row));
                assert_eq!(&got, want, "{} reason {}", ids[i], k + 1);
            }
            with_no_reason += usize::from(reasons[0].is_none());
        }
        // The cases the table was built for are there.
        assert!(with_no_reason >= 1);
        let p03 = &want[1].2;
        assert_eq!(p03[0].as_ref().map(|r| r.0.as_str()), Some("x1"));
        assert_eq!(
            p03[1].as_ref().map(|r| (r.0.as_str(), r.1)),
            Some(("x2", p03[0].as_ref().unwrap().1))
        );
        assert_eq!(want[2].0, want[5].0);
        assert_ne!(
            want[2].1, want[5].1,
            "the tier cut falls between p09 and p02"
        );
        // In rank order; tier sizes ceil(0.4 x 10) = 4, then 2, then the rest.
        assert!((1..batch.num_rows()).all(|r| risk.value(r - 1) >= risk.value(r)));
        let sizes: Vec<(String, u64)> = sizes.into_iter().collect();
        assert_eq!(
            sizes,
            [("middle".into(), 2), ("rest".into(), 4), ("top".into(), 4)]
        );
    }

    /// Each row's tier follows from its place in the collected, sorted rows: true
    /// however many partitions and batches the rows come in, with many ties.
    #[tokio::test]
    async fn tiers_follow_the_rank_over_many_batches_and_partitions() {
        let model = ModelFile {
            features: vec!["x".into()],
            coefficients: [("intercept", -1.0), ("x", 0.3)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            ..Default::default()
        };
        let n = 5_000;
        let ids: Vec<String> = (0..n).map(|i| format!("p{:05}", (i * 7919) % n)).collect();
        let x: Vec<f64> = (0..n).map(|i| ((i * 31) % 17) as f64).collect();
        let tiers = tiers(&[("a", 0.013), ("b", 0.25), ("c", 1.0)]);
        let ctx = SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new()
                .with_target_partitions(4)
                .with_batch_size(64),
        );
        let partitions: Vec<Vec<RecordBatch>> = (0..4)
            .map(|part| {
                (part * n / 4..(part + 1) * n / 4)
                    .step_by(50)
                    .map(|start| {
                        let rows = start..start + 50;
                        RecordBatch::try_from_iter([
                            (
                                "pseudo_id",
                                Arc::new(StringArray::from_iter_values(ids[rows.clone()].iter()))
                                    as ArrayRef,
                            ),
                            (
                                "x",
                                Arc::new(Float64Array::from(x[rows].to_vec())) as ArrayRef,
                            ),
                        ])
                        .unwrap()
                    })
                    .collect()
            })
            .collect();
        let table =
            datafusion::datasource::MemTable::try_new(partitions[0][0].schema(), partitions)
                .unwrap();
        let df = ctx.read_table(Arc::new(table)).unwrap();
        let (batch, sizes) = score(df, &model, &tiers).await.unwrap();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let want = direct(&id_refs, &[x], &model, &tiers);
        let got_ids = as_string_array(batch.column_by_name("pseudo_id").unwrap()).unwrap();
        let tier = as_string_array(batch.column_by_name("tier").unwrap()).unwrap();
        assert_eq!(batch.num_rows(), n);
        for row in 0..n {
            let i = ids.iter().position(|id| id == got_ids.value(row)).unwrap();
            assert_eq!(tier.value(row), want[i].1, "{}", ids[i]);
        }
        // ceil(0.013 x 5000) = 65, ceil(0.25 x 5000) - 65 = 1185, the rest.
        let sizes: Vec<(String, u64)> = sizes.into_iter().collect();
        assert_eq!(
            sizes,
            [("a".into(), 65), ("b".into(), 1185), ("c".into(), 3750)]
        );
    }

    #[tokio::test]
    async fn a_null_term_is_bad_input_naming_it() {
        let model = ModelFile {
            features: vec!["x1".into()],
            coefficients: [("intercept".to_string(), 0.0), ("x1".to_string(), 1.0)].into(),
            ..Default::default()
        };
        let batch = RecordBatch::try_from_iter(vec![
            (
                "pseudo_id",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("x1", Arc::new(Float64Array::from(vec![Some(1.0), None]))),
        ])
        .unwrap();
        let df = SessionContext::new().read_batch(batch).unwrap();
        let err = score(df, &model, &riskstrat_models::tiers::default_tiers())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("'x1' is null for 1 people"),
            "{err}"
        );
    }
}

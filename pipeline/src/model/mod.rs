//! The model stage: features and population at `T0 = A - 365`, the outcome over
//! `[T0, A)`, the contract's training/validation split, a logistic regression fitted
//! on training and evaluated on validation (overall and by sex, age band and IMD
//! quintile), then risks, tiers and reasons for everyone in the population at `A`.
//! The statistics are `riskstrat_models`; this module only moves columns.

pub mod terms;

use crate::bad_input;
use crate::error::{Error, Result};
use crate::sql::{Params, SqlSource};
use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::JoinType;
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, coalesce, ident, lit};
use riskstrat_models::logistic::{Design, Fit, FitOptions, fit};
use riskstrat_models::metrics::{Evaluation, evaluate};
use riskstrat_models::tiers::{Tier, assign};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What the job says about the model (parsed with the job file).
pub use crate::job::ModelConfig;

/// `model.json`: enough to score again (coefficients in `features` order) and to
/// read the fit. Only `features` and `coefficients` are needed to score.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelFile {
    pub features: Vec<String>,
    pub definitions: BTreeMap<String, String>,
    pub coefficients: BTreeMap<String, f64>,
    pub std_errors: BTreeMap<String, f64>,
    pub ci_low: BTreeMap<String, f64>,
    pub ci_high: BTreeMap<String, f64>,
    pub p_values: BTreeMap<String, f64>,
    pub log_likelihood: f64,
    pub null_log_likelihood: f64,
    pub t0: String,
    pub fitted_for_as_of: String,
    pub n_train: usize,
    pub events_train: usize,
    pub converged: bool,
    pub iterations: usize,
    pub l2: f64,
    pub tiers: Vec<Tier>,
}

impl ModelFile {
    fn from_fit(f: &Fit, t0: NaiveDate, as_of: NaiveDate, l2: f64, tiers: &[Tier]) -> Self {
        let by_name = |v: &[f64]| {
            f.names
                .iter()
                .cloned()
                .zip(v.iter().copied())
                .collect::<BTreeMap<_, _>>()
        };
        Self {
            features: f.names[1..].to_vec(),
            definitions: f.names[1..]
                .iter()
                .map(|n| (n.clone(), terms::describe(n)))
                .collect(),
            coefficients: by_name(&f.coefficients),
            std_errors: by_name(&f.std_errors),
            ci_low: by_name(&f.ci_low),
            ci_high: by_name(&f.ci_high),
            p_values: by_name(&f.p_values),
            log_likelihood: f.log_likelihood,
            null_log_likelihood: f.null_log_likelihood,
            t0: t0.to_string(),
            fitted_for_as_of: as_of.to_string(),
            n_train: f.n,
            events_train: f.events,
            converged: f.converged,
            iterations: f.iterations,
            l2,
            tiers: tiers.to_vec(),
        }
    }

    /// Intercept first, then coefficients in `features` order.
    pub fn coefficient_vector(&self) -> Result<Vec<f64>> {
        std::iter::once("intercept")
            .chain(self.features.iter().map(String::as_str))
            .map(|n| {
                self.coefficients
                    .get(n)
                    .copied()
                    .ok_or_else(|| bad_input!("model.json: no coefficient for '{n}'"))
            })
            .collect()
    }
}

/// The model's risk as an expression over a features table, for scoring inside
/// DataFusion (the outcomes stage scores whole populations at many dates).
pub fn risk_expr(model: &ModelFile, features: &DataFrame) -> Result<Expr> {
    let fields: Vec<(String, DataType)> = features
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let beta = model.coefficient_vector()?;
    let mut lp = lit(beta[0]);
    for (k, t) in model.features.iter().enumerate() {
        let e = terms::expr(t, &fields)
            .ok_or_else(|| bad_input!("model.json: '{t}' is not a term of this feature table"))?;
        lp = lp + lit(beta[k + 1]) * e;
    }
    Ok(lit(1.0) / (lit(1.0) + datafusion::functions::math::expr_fn::exp(lit(0.0) - lp)))
}

/// Columns collected for the model: ids, design terms, and what subgroups need.
struct Columns {
    ids: Vec<String>,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    sex: Vec<Option<String>>,
    age: Vec<i64>,
    imd: Vec<Option<i32>>,
}

async fn collect_columns(
    df: DataFrame,
    term_names: &[String],
    outcome: Option<&str>,
) -> Result<Columns> {
    let fields: Vec<(String, DataType)> = df
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let mut select: Vec<Expr> = vec![
        ident("pseudo_id"),
        ident("sex"),
        cast(ident("age"), DataType::Int64).alias("age"),
        cast(ident("imd_decile"), DataType::Int32).alias("imd_decile"),
    ];
    for (k, t) in term_names.iter().enumerate() {
        let e = terms::expr(t, &fields).ok_or_else(|| {
            bad_input!(
                "[model] features: '{t}' is not a numeric feature or a model term (sex_female, imd_decile, or one of: {})",
                crate::features::registry::FEATURES
                    .iter()
                    .filter(|f| f.kind != crate::features::registry::Kind::Attribute)
                    .map(|f| f.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        select.push(e.alias(format!("__t{k}")));
    }
    if let Some(o) = outcome {
        select.push(cast(ident(o), DataType::Float64).alias("__y"));
    }
    let batches = df.select(select)?.collect().await?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(|| Arc::new(Schema::empty()));
    let batch = if batches.is_empty() {
        RecordBatch::new_empty(schema)
    } else {
        concat_batches(&schema, &batches)?
    };
    let n = batch.num_rows();
    let mut cols = Columns {
        ids: Vec::with_capacity(n),
        x: Vec::new(),
        y: Vec::new(),
        sex: Vec::new(),
        age: Vec::new(),
        imd: Vec::new(),
    };
    if n == 0 {
        cols.x = vec![Vec::new(); term_names.len()];
        return Ok(cols);
    }
    let strings = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
    };
    let ids = strings("pseudo_id").ok_or_else(|| Error::failed("pseudo_id is not Utf8"))?;
    cols.ids = ids
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect();
    cols.sex = strings("sex")
        .map(|s| s.iter().map(|v| v.map(String::from)).collect())
        .unwrap_or_default();
    cols.age = batch
        .column_by_name("age")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.iter().map(|v| v.unwrap_or(-1)).collect())
        })
        .unwrap_or_default();
    cols.imd = batch
        .column_by_name("imd_decile")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<Int32Array>()
                .map(|a| a.iter().collect())
        })
        .unwrap_or_default();
    let floats = |name: &str, what: &str| -> Result<Vec<f64>> {
        let a = batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            .ok_or_else(|| Error::failed(format!("{what} is not Float64")))?;
        if a.null_count() > 0 {
            return Err(bad_input!(
                "[model] features: '{what}' is null for {} people; give it a default in its SQL",
                a.null_count()
            ));
        }
        Ok(a.values().to_vec())
    };
    for (k, t) in term_names.iter().enumerate() {
        cols.x.push(floats(&format!("__t{k}"), t)?);
    }
    if outcome.is_some() {
        cols.y = floats("__y", "outcome")?;
    }
    Ok(cols)
}

/// The contract's split: validation when the first 8 hex digits of pseudo_id, as an
/// unsigned integer, modulo 10, are 0, 1 or 2.
pub fn is_validation(pseudo_id: &str) -> bool {
    pseudo_id
        .get(..8)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .is_some_and(|v| v % 10 <= 2)
}

pub struct Trained {
    pub model: ModelFile,
    pub metrics: serde_json::Value,
}

/// Fit at T0 on the training split; metrics on the validation split.
pub async fn train(
    ctx: &SessionContext,
    sql: &SqlSource,
    as_of: NaiveDate,
    extra: &[PathBuf],
    config: &ModelConfig,
) -> Result<Trained> {
    let t0 = as_of - Days::new(365);
    let params = Params::at(t0);
    let features = crate::features::plan(ctx, sql, &params, extra).await?;
    let outcome = crate::sql::query(ctx, &sql.get("outcome.sql")?, &params).await?;
    let outcome = outcome.select(vec![
        ident("pseudo_id").alias("__o_id"),
        ident("emergency_admission_next_12m"),
    ])?;
    let df = features.join(outcome, JoinType::Left, &["pseudo_id"], &["__o_id"], None)?;
    let df = df.with_column(
        "__outcome",
        coalesce(vec![ident("emergency_admission_next_12m"), lit(0i64)]),
    )?;
    let cols = collect_columns(df, &config.terms, Some("__outcome")).await?;

    let (train_rows, valid_rows): (Vec<usize>, Vec<usize>) =
        (0..cols.ids.len()).partition(|&i| !is_validation(&cols.ids[i]));
    let pick = |v: &[f64], rows: &[usize]| rows.iter().map(|&i| v[i]).collect::<Vec<f64>>();
    let x_train: Vec<Vec<f64>> = cols.x.iter().map(|c| pick(c, &train_rows)).collect();
    let y_train = pick(&cols.y, &train_rows);
    let design = Design {
        names: config.terms.clone(),
        columns: x_train.iter().map(Vec::as_slice).collect(),
    };
    let fitted = fit(
        &design,
        &y_train,
        None,
        &FitOptions {
            l2: config.l2,
            ..FitOptions::default()
        },
    )
    .map_err(|e| Error::bad_input(format!("fitting the model at T0 = {t0}: {e}")))?;
    if !fitted.converged {
        tracing::warn!(
            "the model did not converge in {} iterations",
            fitted.iterations
        );
    }

    let risk_of = |rows: &[usize]| -> Vec<f64> {
        rows.iter()
            .map(|&i| fitted.predict(&cols.x.iter().map(|c| c[i]).collect::<Vec<_>>()))
            .collect()
    };
    let eval = |rows: &[usize]| -> serde_json::Value {
        let y = pick(&cols.y, rows);
        let p = risk_of(rows);
        match evaluate(&y, &p) {
            Ok(e) => serde_json::to_value::<Evaluation>(e).unwrap_or_default(),
            Err(e) => {
                serde_json::json!({"n": rows.len(), "events": y.iter().sum::<f64>() as usize, "error": e.to_string()})
            }
        }
    };
    let validation = eval(&valid_rows);
    let mut subgroups = serde_json::Map::new();
    for (kind, key) in [("sex", 0usize), ("age_band", 1), ("imd_quintile", 2)] {
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in &valid_rows {
            let g = match key {
                0 => cols.sex[i].clone().unwrap_or_else(|| "unknown".into()),
                1 => age_band(cols.age[i]).to_string(),
                _ => cols.imd[i].map_or("unknown".to_string(), |d| ((d + 1) / 2).to_string()),
            };
            groups.entry(g).or_default().push(i);
        }
        let obj: serde_json::Map<String, serde_json::Value> = groups
            .iter()
            .map(|(g, rows)| (g.clone(), eval(rows)))
            .collect();
        subgroups.insert(kind.to_string(), serde_json::Value::Object(obj));
    }
    let metrics = serde_json::json!({
        "t0": t0.to_string(),
        "outcome": "emergency_admission_next_12m over [T0, A)",
        "training": {"n": train_rows.len(), "events": y_train.iter().sum::<f64>() as usize},
        "validation": validation,
        "subgroups": subgroups,
    });
    Ok(Trained {
        model: ModelFile::from_fit(&fitted, t0, as_of, config.l2, &config.tiers),
        metrics,
    })
}

/// The age-band labels of the subgroups: one set, labelled in the data layer.
pub use crate::session::age_band;

/// Risk, tier and the three largest contributions `coefficient x (value - mean)` for
/// everyone in `features` (the population at A).
pub async fn score(
    features: DataFrame,
    model: &ModelFile,
    tiers: &[Tier],
) -> Result<(RecordBatch, BTreeMap<String, u64>)> {
    let beta = model.coefficient_vector()?;
    let cols = collect_columns(features, &model.features, None).await?;
    let n = cols.ids.len();
    let p = model.features.len();
    let means: Vec<f64> = cols
        .x
        .iter()
        .map(|c| c.iter().sum::<f64>() / n.max(1) as f64)
        .collect();
    let mut risk = Vec::with_capacity(n);
    let mut reasons: [Vec<Option<String>>; 3] = Default::default();
    let mut amounts: [Vec<Option<f64>>; 3] = Default::default();
    let mut contrib = vec![(0usize, 0.0f64); p];
    for i in 0..n {
        let mut lp = beta[0];
        for k in 0..p {
            let v = cols.x[k][i];
            lp += beta[k + 1] * v;
            contrib[k] = (k, beta[k + 1] * (v - means[k]));
        }
        risk.push(riskstrat_models::logistic::sigmoid(lp));
        contrib.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for r in 0..3 {
            // Only features that raise this person's risk are reasons.
            let c = contrib.get(r).filter(|c| c.1 > 0.0);
            reasons[r].push(c.map(|c| model.features[c.0].clone()));
            amounts[r].push(c.map(|c| c.1));
        }
    }
    let ids: Vec<&str> = cols.ids.iter().map(String::as_str).collect();
    let tier_of = assign(&risk, &ids, tiers);
    let mut sizes: BTreeMap<String, u64> = tiers.iter().map(|t| (t.name.clone(), 0)).collect();
    let tiers: Vec<&str> = tier_of.iter().map(|&t| tiers[t].name.as_str()).collect();
    for t in &tiers {
        *sizes.get_mut(*t).expect("tier") += 1;
    }
    let mut fields = vec![
        Field::new("pseudo_id", DataType::Utf8, false),
        Field::new("risk", DataType::Float64, false),
        Field::new("tier", DataType::Utf8, false),
    ];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids)),
        Arc::new(Float64Array::from(risk)),
        Arc::new(StringArray::from(tiers)),
    ];
    for r in 0..3 {
        fields.push(Field::new(
            format!("reason_{}", r + 1),
            DataType::Utf8,
            true,
        ));
        fields.push(Field::new(
            format!("reason_{}_contribution", r + 1),
            DataType::Float64,
            true,
        ));
        arrays.push(Arc::new(StringArray::from(std::mem::take(&mut reasons[r]))));
        arrays.push(Arc::new(Float64Array::from(std::mem::take(
            &mut amounts[r],
        ))));
    }
    Ok((
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?,
        sizes,
    ))
}

pub fn load_model(path: &std::path::Path) -> Result<ModelFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad_input!("[model] load: cannot read {} ({e})", path.display()))?;
    let m: ModelFile = serde_json::from_str(&text).map_err(|e| {
        bad_input!(
            "[model] load: {} is not a riskstrat model.json ({e})",
            path.display()
        )
    })?;
    m.coefficient_vector()
        .map_err(|e| e.context(path.display()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_reads_first_eight_hex_digits() {
        // 0x0000000a = 10 -> 0: validation; 0x0000000d = 13 -> 3: training.
        assert!(is_validation("0000000a0000000000000000000000ff"));
        assert!(!is_validation("0000000d0000000000000000000000ff"));
        // 0xffffffff = 4294967295 -> 5: training.
        assert!(!is_validation("ffffffff000000000000000000000000"));
        // 0x00000002 -> 2: validation.
        assert!(is_validation("00000002000000000000000000000000"));
    }

    #[test]
    fn age_bands() {
        assert_eq!(age_band(17), "0-17");
        assert_eq!(age_band(18), "18-44");
        assert_eq!(age_band(64), "45-64");
        assert_eq!(age_band(65), "65-74");
        assert_eq!(age_band(85), "85+");
    }
}

//! The model: its columns beside the features at `T0 = A - 365` (computed in the same
//! pass as those at `A`, [`with_t0_columns`]) with the outcome over `[T0, A)`, the contract's training/validation split, a logistic regression fitted
//! on training and evaluated on validation (overall and by sex, age band and IMD
//! quintile), then risks, tiers and reasons for everyone in the population at `A`.
//! The statistics are `riskstrat_models`; this module only moves columns.

pub mod metrics;
mod score;
pub mod terms;

pub use score::{risk_expr, risk_of, score};

use crate::bad_input;
use crate::error::{Error, Result};
use crate::sql::{Params, SqlSource};
use chrono::{Days, NaiveDate};
use datafusion::arrow::array::{
    Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, coalesce, ident, lit};
use metrics::{Counts, FitMetrics, Metrics, TemporalValidation, Validation};
use riskstrat_models::logistic::{Design, Fit, FitOptions, fit};
use riskstrat_models::tiers::Tier;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
    /// The AUC on the validation split of the run that fitted it: what a score-only
    /// run's temporal validation is compared with. None in model files written before
    /// it existed (then the `metrics.json` beside the file is read).
    pub validation_auc: Option<f64>,
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
            validation_auc: None,
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

/// Columns collected for fitting and evaluating the model: which split each person is
/// in, design terms, the outcome, and what subgroups need. Compact (a flag, not the
/// pseudo_id; an index into `sexes`, not a string): at 10 million people every byte
/// per person is 10 MB. Rows arrive in whatever order the plan's partitions deliver
/// them; [`Columns::in_pseudo_id_order`] fixes it, so that the fit's sums, and so the
/// model, are the same run after run.
pub struct Columns {
    /// Each row's pseudo_id as a number (32 hex digits), until the rows are put in order.
    keys: Vec<u128>,
    validation: Vec<bool>,
    x: Vec<Vec<f64>>,
    y: Vec<f64>,
    sex: Vec<Option<u32>>,
    sexes: Vec<String>,
    age: Vec<i64>,
    imd: Vec<Option<i32>>,
}

/// A Float64 column's values; `what` names it in errors (a null is bad input).
fn floats(batch: &RecordBatch, name: &str, what: &str) -> Result<Vec<f64>> {
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
}

/// The model's columns over a feature table with the outcome column `outcome`, named
/// apart from the features (`__id`, `__sex`, `__age`, `__imd`, `__t<k>`, `__y`), for
/// [`Columns::from_batches`].
fn model_columns(df: &DataFrame, term_names: &[String], outcome: &str) -> Result<Vec<Expr>> {
    let mut select: Vec<Expr> = vec![
        ident("pseudo_id").alias("__id"),
        ident("sex").alias("__sex"),
        cast(ident("age"), DataType::Int64).alias("__age"),
        cast(ident("imd_decile"), DataType::Int32).alias("__imd"),
    ];
    for (k, e) in score::term_exprs(df, term_names)?.into_iter().enumerate() {
        select.push(e.alias(format!("__t{k}")));
    }
    select.push(cast(ident(outcome), DataType::Float64).alias("__y"));
    Ok(select)
}

impl Columns {
    /// No one yet, with `terms` design terms.
    pub fn new(terms: usize) -> Columns {
        Columns {
            keys: Vec::new(),
            validation: Vec::new(),
            x: vec![Vec::new(); terms],
            y: Vec::new(),
            sex: Vec::new(),
            sexes: Vec::new(),
            age: Vec::new(),
            imd: Vec::new(),
        }
    }

    /// The people of a batch with [`model_columns`] (other columns are ignored).
    pub fn push(&mut self, batch: &RecordBatch, term_names: &[String]) -> Result<()> {
        let strings = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
        };
        let ids = strings("__id").ok_or_else(|| Error::failed("pseudo_id is not Utf8"))?;
        self.validation
            .extend(ids.iter().map(|v| is_validation(v.unwrap_or_default())));
        // Valid patients' pseudo_ids are 32 hex digits and unique (validate/patients.sql),
        // so the keys are too and the order is total.
        self.keys.extend(ids.iter().map(|v| {
            v.and_then(|v| u128::from_str_radix(v, 16).ok())
                .unwrap_or(0)
        }));
        for (k, x) in self.x.iter_mut().enumerate() {
            x.extend(floats(batch, &format!("__t{k}"), &term_names[k])?);
        }
        self.y.extend(floats(batch, "__y", "outcome")?);
        if let Some(s) = strings("__sex") {
            for v in s.iter() {
                let index = v.map(|v| match self.sexes.iter().position(|k| k == v) {
                    Some(k) => k as u32,
                    None => {
                        self.sexes.push(v.to_string());
                        (self.sexes.len() - 1) as u32
                    }
                });
                self.sex.push(index);
            }
        }
        if let Some(a) = batch
            .column_by_name("__age")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        {
            self.age.extend(a.iter().map(|v| v.unwrap_or(-1)));
        }
        if let Some(a) = batch
            .column_by_name("__imd")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        {
            self.imd.extend(a.iter());
        }
        Ok(())
    }
}

impl Columns {
    /// The rows sorted by pseudo_id. Floating-point sums depend on their order, and the
    /// partitions deliver rows in an order that varies from run to run: fitted in
    /// arrival order, the coefficients differed in their last bits between two runs
    /// on the same data, enough to swap near-tied matches in the service evaluation.
    /// The keys are sorted beside their indices (sorting indices by a key looked up in
    /// another array took 11 s at 10 million people, a cache miss per comparison), and
    /// the columns then reordered once, so the fit and the metrics read them in order.
    pub fn in_pseudo_id_order(mut self) -> Columns {
        use rayon::prelude::*;
        let mut keyed: Vec<(u128, u32)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (k, u32::try_from(i).expect("at most 2^32 people")))
            .collect();
        self.keys = Vec::new();
        keyed.par_sort_unstable();
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i as usize).collect();
        // Columns a batch did not have (sex, age, IMD in some tests) stay empty.
        fn permute<T: Copy>(v: &mut Vec<T>, order: &[usize]) {
            if !v.is_empty() {
                *v = pick(v, order);
            }
        }
        self.x.par_iter_mut().for_each(|x| permute(x, &order));
        permute(&mut self.validation, &order);
        permute(&mut self.y, &order);
        permute(&mut self.sex, &order);
        permute(&mut self.age, &order);
        permute(&mut self.imd, &order);
        self
    }
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
    pub metrics: Metrics,
}

/// What `outcome.sql` returns: the people with the outcome, and its value.
const OUTCOME_COLUMNS: &[(&str, crate::sql::Kind)] = &[
    ("pseudo_id", crate::sql::Kind::Text),
    ("emergency_admission_next_12m", crate::sql::Kind::Number),
];

/// The feature table `features` (at several dates, [`crate::features::plan_at`]) with,
/// beside each row, the model's columns ([`Columns::from_batches`]) and the outcome
/// over `[T0, A)` for the rows at `T0 = A - 365`, the newest complete outcome year.
/// The run reads the rows at `A` and at `T0` from one pass (stage `features`).
pub async fn with_t0_columns(
    ctx: &SessionContext,
    sql: &SqlSource,
    features: DataFrame,
    as_of: NaiveDate,
    terms: &[String],
) -> Result<DataFrame> {
    let t0 = as_of - Days::new(365);
    let params = Params::at(t0);
    let text = sql.get("outcome.sql")?;
    let outcome = crate::sql::query(ctx, &text, &params).await?;
    crate::sql::check_columns(&outcome, &text.origin, OUTCOME_COLUMNS)?;
    let outcome = outcome.select(vec![
        ident("pseudo_id").alias("__o_id"),
        lit(ScalarValue::Date32(Some(crate::sql::date32(t0)))).alias("__o_date"),
        ident("emergency_admission_next_12m").alias("__outcome_raw"),
    ])?;
    let date = crate::features::AS_OF;
    // The outcome (the people admitted) is the build side; the features stream.
    let df = outcome.join(
        features,
        JoinType::Right,
        &["__o_date", "__o_id"],
        &[date, "pseudo_id"],
        None,
    )?;
    let df = df.with_column(
        "__outcome",
        coalesce(vec![ident("__outcome_raw"), lit(0i64)]),
    )?;
    let mut select: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| !n.starts_with("__"))
        .map(ident)
        .collect();
    select.extend(model_columns(&df, terms, "__outcome")?);
    Ok(df.select(select)?)
}

/// Fit at T0 on the training split of `cols` ([`at_t0`] with `config.terms`);
/// metrics on the validation split.
pub fn train(cols: &Columns, as_of: NaiveDate, config: &ModelConfig) -> Result<Trained> {
    let t0 = as_of - Days::new(365);

    let (train_rows, valid_rows): (Vec<usize>, Vec<usize>) =
        (0..cols.validation.len()).partition(|&i| !cols.validation[i]);
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

    let (validation, subgroups) =
        validation_metrics(cols, &fitted, &valid_rows, &cut_points(&config.tiers));
    let metrics = FitMetrics {
        t0: t0.to_string(),
        outcome: "emergency_admission_next_12m over [T0, A)".into(),
        training: Counts {
            n: train_rows.len(),
            events: y_train.iter().sum::<f64>() as usize,
        },
        validation,
        subgroups,
    };
    let mut model = ModelFile::from_fit(&fitted, t0, as_of, config.l2, &config.tiers);
    let metrics = Metrics::Fitted(Box::new(metrics));
    model.validation_auc = metrics.validation_auc();
    Ok(Trained { model, metrics })
}

/// A saved model on the newest complete outcome year: its risks at `T0 = A - 365`
/// against the outcome over `[T0, A)`, on the contract's validation split (people no
/// fit ever trains on), compared with the AUC of the run that fitted it.
/// `cols` is [`at_t0`] with the model's features.
pub fn temporal_validation(
    cols: &Columns,
    as_of: NaiveDate,
    model: &ModelFile,
    fitted_auc: Option<f64>,
) -> Result<TemporalValidation> {
    let t0 = as_of - Days::new(365);
    let beta = model.coefficient_vector()?;
    let rows: Vec<usize> = (0..cols.validation.len())
        .filter(|&i| cols.validation[i])
        .collect();
    let p: Vec<f64> = rows
        .iter()
        .map(|&i| {
            let lp = beta[0]
                + cols
                    .x
                    .iter()
                    .zip(&beta[1..])
                    .map(|(c, b)| b * c[i])
                    .sum::<f64>();
            riskstrat_models::logistic::sigmoid(lp)
        })
        .collect();
    let y: Vec<f64> = rows.iter().map(|&i| cols.y[i]).collect();
    Ok(TemporalValidation::new(
        t0,
        Validation::at(&y, &p, &cut_points(&model.tiers)),
        fitted_auc,
    ))
}

/// The tiers' cut points (cumulative shares below everyone), where the report shows
/// sensitivity, specificity, PPV and NPV; the default tiers' when none are known.
fn cut_points(tiers: &[Tier]) -> Vec<f64> {
    let cuts: Vec<f64> = tiers.iter().map(|t| t.up_to).filter(|s| *s < 1.0).collect();
    if cuts.is_empty() {
        riskstrat_models::metrics::TOP_SHARES.to_vec()
    } else {
        cuts
    }
}

/// The metrics on the validation split (`valid_rows`) and on each of its subgroups.
/// Each row's risk is computed once, and the evaluations (each sorts its rows several
/// times) run in parallel: they were two thirds of the model stage.
fn validation_metrics(
    cols: &Columns,
    fitted: &Fit,
    valid_rows: &[usize],
    shares: &[f64],
) -> (Validation, BTreeMap<String, BTreeMap<String, Validation>>) {
    let mut risk = vec![f64::NAN; cols.y.len()];
    let mut x = vec![0.0; cols.x.len()];
    for &i in valid_rows {
        for (v, c) in x.iter_mut().zip(&cols.x) {
            *v = c[i];
        }
        risk[i] = fitted.predict(&x);
    }
    let validation =
        |rows: &[usize]| Validation::at(&pick(&cols.y, rows), &pick(&risk, rows), shares);
    let groups = subgroups(cols, valid_rows);
    std::thread::scope(|s| {
        let whole = s.spawn(|| validation(valid_rows));
        let kinds: Vec<_> = groups
            .iter()
            .map(|(kind, groups)| {
                s.spawn(move || {
                    let by_group = groups.iter().map(|(g, rows)| (g.clone(), validation(rows)));
                    (kind.to_string(), by_group.collect())
                })
            })
            .collect();
        (
            whole
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            kinds
                .into_iter()
                .map(|k| k.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect(),
        )
    })
}

/// `v` at `rows`, in their order.
fn pick<T: Copy>(v: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|&i| v[i]).collect()
}

/// The validation rows of each subgroup: by sex, age band and IMD quintile.
fn subgroups(
    cols: &Columns,
    valid_rows: &[usize],
) -> Vec<(&'static str, BTreeMap<String, Vec<usize>>)> {
    let group_of = |key: usize, i: usize| match key {
        0 => cols.sex[i].map_or("unknown".to_string(), |k| cols.sexes[k as usize].clone()),
        1 => age_band(cols.age[i]).to_string(),
        _ => cols.imd[i].map_or("unknown".to_string(), |d| ((d + 1) / 2).to_string()),
    };
    [("sex", 0usize), ("age_band", 1), ("imd_quintile", 2)]
        .into_iter()
        .map(|(kind, key)| {
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for &i in valid_rows {
                groups.entry(group_of(key, i)).or_default().push(i);
            }
            (kind, groups)
        })
        .collect()
}

/// The age-band labels of the subgroups: one set, labelled in the data layer.
pub use crate::session::age_band;

/// The validation AUC of the run that fitted a saved model: from the model file, or
/// for model files written before it held it, from the `metrics.json` beside it.
pub fn fitted_auc(model: &ModelFile, path: &std::path::Path) -> Option<f64> {
    model.validation_auc.or_else(|| {
        let text = std::fs::read_to_string(path.with_file_name("metrics.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v.pointer("/validation/auc")?.as_f64()
    })
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
    fn thresholds_are_the_tiers_cut_points() {
        let tier = |name: &str, up_to: f64| Tier {
            name: name.into(),
            up_to,
        };
        let tiers = [tier("top", 0.01), tier("next", 0.1), tier("rest", 1.0)];
        assert_eq!(cut_points(&tiers), vec![0.01, 0.1]);
        assert_eq!(
            cut_points(&[]),
            riskstrat_models::metrics::TOP_SHARES.to_vec()
        );
    }

    /// Regression: rows fitted in arrival order gave coefficients that differed in their
    /// last bits from run to run. The same rows in two orders must fit the same model.
    #[test]
    fn the_fit_is_the_same_whatever_order_the_rows_arrive_in() {
        use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray};
        use datafusion::arrow::datatypes::{Field, Schema};
        use std::sync::Arc;
        let mut state = 42u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        type Row = (String, f64, f64, f64, i64);
        let rows: Vec<Row> = (0..3000i64)
            .map(|i| {
                let (a, b) = (next() * 10.0, next() * 0.37);
                let y = f64::from(next() < 1.0 / (1.0 + (2.0 - 0.3 * a - b).exp()));
                let key = (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
                (format!("{key:032x}"), a, b, y, i)
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("__id", DataType::Utf8, false),
            Field::new("__sex", DataType::Utf8, false),
            Field::new("__age", DataType::Int64, false),
            Field::new("__imd", DataType::Int32, false),
            Field::new("__t0", DataType::Float64, false),
            Field::new("__t1", DataType::Float64, false),
            Field::new("__y", DataType::Float64, false),
        ]));
        let terms = vec!["a".to_string(), "b".to_string()];
        let columns = |rows: &[Row]| {
            let mut cols = Columns::new(2);
            for chunk in rows.chunks(700) {
                let column = |f: fn(&Row) -> f64| {
                    Arc::new(Float64Array::from_iter_values(chunk.iter().map(f))) as ArrayRef
                };
                let ids = StringArray::from_iter_values(chunk.iter().map(|r| r.0.as_str()));
                let sex = StringArray::from_iter_values(
                    chunk.iter().map(|r| if r.4 % 2 == 0 { "F" } else { "M" }),
                );
                let age = Int64Array::from_iter_values(chunk.iter().map(|r| r.4 % 90));
                let imd = Int32Array::from_iter_values(chunk.iter().map(|r| (r.4 % 10) as i32 + 1));
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(ids),
                        Arc::new(sex),
                        Arc::new(age),
                        Arc::new(imd),
                        column(|r| r.1),
                        column(|r| r.2),
                        column(|r| r.3),
                    ],
                )
                .unwrap();
                cols.push(&batch, &terms).unwrap();
            }
            cols.in_pseudo_id_order()
        };
        let config = ModelConfig {
            terms: terms.clone(),
            ..ModelConfig::default()
        };
        let as_of = NaiveDate::from_ymd_opt(2026, 4, 1).unwrap();
        let fit = |cols: &Columns| {
            let t = train(cols, as_of, &config).unwrap();
            let bits: Vec<u64> = t
                .model
                .coefficient_vector()
                .unwrap()
                .iter()
                .map(|c| c.to_bits())
                .collect();
            (bits, serde_json::to_string(&t.metrics).unwrap())
        };
        let (coefficients, metrics) = fit(&columns(&rows));
        let mut shuffled = rows.clone();
        for turn in [
            |r: &mut Vec<Row>| r.reverse(),
            |r: &mut Vec<Row>| r.rotate_left(1234),
        ] {
            turn(&mut shuffled);
            let (c, m) = fit(&columns(&shuffled));
            assert_eq!(coefficients, c, "coefficients' bits");
            assert!(metrics == m, "the metrics differ");
        }
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

//! The outcomes stage: is each service in `services` (a virtual ward, a community
//! matron scheme) followed by fewer emergency admissions and bed days than in similar
//! patients who were not enrolled?
//!
//! 1. `sql/outcomes/enrolments.sql`: each patient's first enrolment per service in
//!    the two years before `A`; its index date is the first day of its month (or
//!    quarter, `[outcomes] index = "quarter"`).
//! 2. At each index date, the whole population is scored with the run's model (the
//!    feature SQL at that date, the model as a DataFusion expression); each enrolled
//!    patient is matched to the nearest not-enrolled patient on logit risk at the
//!    same index date, within a caliper of 0.2 SD of logit risk at `A`, without
//!    replacement (`riskstrat_models::outcomes::match_nearest`).
//! 3. `sql/outcomes/windows.sql`: person-time, emergency admissions and bed days in
//!    the 365 days before and after the enrolled patient's start date, for both.
//! 4. Rates per 1,000 person-years and the difference in differences with a 95%
//!    interval (`riskstrat_models::outcomes::difference_in_differences`).
//!
//! Opted-out patients are in neither group: no table here holds them. The result has
//! one row per service and outcome and is pre-aggregated: commissioners read it
//! through disclosure control (`service_outcomes` view).

use crate::error::Result;
use crate::model::{ModelFile, risk_expr};
use crate::sql::{Params, SqlSource, date32, from_date32};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::{SessionContext, ident};
use riskstrat_models::outcomes::{
    Candidate, Windows, caliper, difference_in_differences, match_nearest,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

/// The outcomes evaluated, as named in `service_outcomes`.
pub const OUTCOMES: &[&str] = &["emergency_admissions", "bed_days"];

pub fn schema() -> SchemaRef {
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    Arc::new(Schema::new(vec![
        f("service_code", DataType::Utf8),
        f("outcome", DataType::Utf8),
        f("enrolled", DataType::Int64),
        f("treated", DataType::Int64),
        f("controls", DataType::Int64),
        f("match_rate", DataType::Float64),
        f("treated_before", DataType::Float64),
        f("treated_after", DataType::Float64),
        f("control_before", DataType::Float64),
        f("control_after", DataType::Float64),
        f("did", DataType::Float64),
        f("did_ci_low", DataType::Float64),
        f("did_ci_high", DataType::Float64),
    ]))
}

/// How finely index dates are drawn: each costs one scoring of the population.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexEvery {
    /// The first day of the start date's month (up to 24 scorings).
    #[default]
    Month,
    /// The first day of its quarter (up to 8): a third of the cost, risk up to three
    /// months before the start.
    Quarter,
}

fn index_date(start: i32, every: IndexEvery) -> i32 {
    use chrono::Datelike;
    let d = from_date32(start);
    let month = match every {
        IndexEvery::Month => d.month(),
        IndexEvery::Quarter => (d.month() - 1) / 3 * 3 + 1,
    };
    date32(chrono::NaiveDate::from_ymd_opt(d.year(), month, 1).expect("a first of the month"))
}

struct Enrolment {
    service: String,
    pseudo_id: String,
    start: i32,
    index: i32,
}

/// A matched episode: the enrolled patient, or their comparison patient, around the
/// enrolled patient's start date.
struct Episode {
    service: usize,
    treated: bool,
    pseudo_id: String,
    start: i32,
}

fn strings(b: &RecordBatch, i: usize) -> &StringArray {
    b.column(i).as_any().downcast_ref().expect("Utf8")
}

/// Evaluate every service. `population_risk` holds the risks at `A` (the caliper's
/// scale).
pub async fn evaluate(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
    model: &ModelFile,
    population_risk: &[f64],
    index: IndexEvery,
) -> Result<(RecordBatch, RecordBatch)> {
    let mut enrolments = Vec::new();
    for b in crate::sql::query(ctx, &sql.get("outcomes/enrolments.sql")?, params)
        .await?
        .select(vec![
            ident("service_code"),
            ident("pseudo_id"),
            ident("start_date"),
        ])?
        .sort_by(vec![ident("service_code"), ident("pseudo_id")])?
        .collect()
        .await?
    {
        let dates =
            |i: usize| -> &Date32Array { b.column(i).as_any().downcast_ref().expect("Date32") };
        for r in 0..b.num_rows() {
            let start = dates(2).value(r);
            enrolments.push(Enrolment {
                service: strings(&b, 0).value(r).to_string(),
                pseudo_id: strings(&b, 1).value(r).to_string(),
                start,
                index: index_date(start, index),
            });
        }
    }
    let services: Vec<String> = enrolments
        .iter()
        .map(|e| e.service.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let service_no: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let enrolled_in: Vec<HashSet<&str>> = services
        .iter()
        .map(|s| {
            enrolments
                .iter()
                .filter(|e| &e.service == s)
                .map(|e| e.pseudo_id.as_str())
                .collect()
        })
        .collect();
    let width = caliper(population_risk);

    // Score the population at each index date and match there.
    let mut by_month: BTreeMap<i32, Vec<&Enrolment>> = BTreeMap::new();
    for e in &enrolments {
        by_month.entry(e.index).or_default().push(e);
    }
    let mut episodes: Vec<Episode> = Vec::new();
    let mut scored = vec![0u64; services.len()];
    for (month, treated_here) in &by_month {
        let at = Params {
            as_of: from_date32(*month),
            ..params.clone()
        };
        let features = crate::features::plan(ctx, sql, &at, extra).await?;
        let risk = risk_expr(model, &features)?;
        let batches = features
            .select(vec![ident("pseudo_id"), risk.alias("risk")])?
            .sort_by(vec![ident("pseudo_id")])?
            .collect()
            .await?;
        let mut ids: Vec<String> = Vec::new();
        let mut risks: Vec<f64> = Vec::new();
        for b in &batches {
            let r: &Float64Array = b.column(1).as_any().downcast_ref().expect("Float64");
            ids.extend(
                strings(b, 0)
                    .iter()
                    .map(|v| v.unwrap_or_default().to_string()),
            );
            risks.extend(r.values().iter());
        }
        let row_of: HashMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        for (s, name) in services.iter().enumerate() {
            let mine: Vec<(&Enrolment, usize)> = treated_here
                .iter()
                .filter(|e| &e.service == name)
                .filter_map(|e| row_of.get(e.pseudo_id.as_str()).map(|&r| (*e, r)))
                .collect();
            if mine.is_empty() {
                continue;
            }
            scored[s] += mine.len() as u64;
            let treated: Vec<Candidate> = mine
                .iter()
                .map(|(_, r)| Candidate {
                    stratum: *month as i64,
                    score: risks[*r],
                })
                .collect();
            let pool: Vec<usize> = (0..ids.len())
                .filter(|&i| !enrolled_in[s].contains(ids[i].as_str()))
                .collect();
            let controls: Vec<Candidate> = pool
                .iter()
                .map(|&i| Candidate {
                    stratum: *month as i64,
                    score: risks[i],
                })
                .collect();
            for ((e, _), m) in mine.iter().zip(match_nearest(&treated, &controls, width)) {
                let Some(c) = m else { continue };
                episodes.push(Episode {
                    service: s,
                    treated: true,
                    pseudo_id: e.pseudo_id.clone(),
                    start: e.start,
                });
                episodes.push(Episode {
                    service: s,
                    treated: false,
                    pseudo_id: ids[pool[c]].clone(),
                    start: e.start,
                });
            }
        }
    }

    // Person-time and events of every episode, in SQL.
    let end = date32(params.as_of);
    let n = episodes.len();
    let episodes_batch = RecordBatch::try_from_iter(vec![
        (
            "episode",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "pseudo_id",
            Arc::new(StringArray::from_iter_values(
                episodes.iter().map(|e| e.pseudo_id.as_str()),
            )),
        ),
        (
            "before_start",
            Arc::new(Date32Array::from_iter_values(
                episodes.iter().map(|e| e.start - 365),
            )),
        ),
        (
            "start_date",
            Arc::new(Date32Array::from_iter_values(
                episodes.iter().map(|e| e.start),
            )),
        ),
        (
            "after_end",
            Arc::new(Date32Array::from_iter_values(
                episodes.iter().map(|e| (e.start + 365).min(end)),
            )),
        ),
    ])?;
    let _ = ctx.deregister_table("episodes")?;
    ctx.register_batch("episodes", episodes_batch)?;
    let zero = Windows {
        events_before: 0.0,
        days_before: 0.0,
        events_after: 0.0,
        days_after: 0.0,
    };
    let mut windows: Vec<[Windows; 2]> = vec![[zero; 2]; n];
    for b in crate::sql::query(ctx, &sql.get("outcomes/windows.sql")?, params)
        .await?
        .collect()
        .await?
    {
        let col = |name: &str| -> &Float64Array {
            b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref())
                .expect("windows.sql returns Float64 columns")
        };
        let ep: &Int64Array = b.column(0).as_any().downcast_ref().expect("Int64 episode");
        let (db, da) = (col("days_before"), col("days_after"));
        let (ab, aa) = (col("admissions_before"), col("admissions_after"));
        let (bb, ba) = (col("bed_days_before"), col("bed_days_after"));
        for r in 0..b.num_rows() {
            let w = |before: f64, after: f64| Windows {
                events_before: before,
                days_before: db.value(r),
                events_after: after,
                days_after: da.value(r),
            };
            windows[ep.value(r) as usize] =
                [w(ab.value(r), aa.value(r)), w(bb.value(r), ba.value(r))];
        }
    }
    ctx.deregister_table("episodes")?;

    // One row per service and outcome.
    let mut rows: Vec<Row> = Vec::new();
    for (s, name) in services.iter().enumerate() {
        let enrolled = enrolments
            .iter()
            .filter(|e| service_no[e.service.as_str()] == s)
            .count();
        for (k, outcome) in OUTCOMES.iter().enumerate() {
            let pick = |treated: bool| -> Vec<Windows> {
                episodes
                    .iter()
                    .zip(&windows)
                    .filter(|(e, _)| e.service == s && e.treated == treated)
                    .map(|(_, w)| w[k])
                    .collect()
            };
            let (t, c) = (pick(true), pick(false));
            let did = difference_in_differences(&t, &c).ok();
            rows.push(Row {
                service: name.clone(),
                outcome,
                enrolled: enrolled as i64,
                treated: t.len() as i64,
                controls: c.len() as i64,
                match_rate: (scored[s] > 0).then(|| t.len() as f64 / enrolled as f64),
                did,
            });
        }
    }
    // The people behind each count, so that disclosure control can perturb each count
    // by the cell key of exactly its people (never shown to commissioners).
    let mut service = Vec::new();
    let mut id = Vec::new();
    let mut group = Vec::new();
    for e in &enrolments {
        service.push(e.service.as_str());
        id.push(e.pseudo_id.as_str());
        group.push("enrolled");
    }
    for e in &episodes {
        service.push(services[e.service].as_str());
        id.push(e.pseudo_id.as_str());
        group.push(if e.treated { "treated" } else { "control" });
    }
    let people = RecordBatch::try_from_iter(vec![
        (
            "service_code",
            Arc::new(StringArray::from(service)) as ArrayRef,
        ),
        ("pseudo_id", Arc::new(StringArray::from(id)) as ArrayRef),
        ("group", Arc::new(StringArray::from(group)) as ArrayRef),
    ])?;
    Ok((to_batch(&rows)?, people))
}

struct Row {
    service: String,
    outcome: &'static str,
    enrolled: i64,
    treated: i64,
    controls: i64,
    match_rate: Option<f64>,
    did: Option<riskstrat_models::outcomes::Did>,
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch> {
    let f = |g: &dyn Fn(&riskstrat_models::outcomes::Did) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from(
            rows.iter()
                .map(|r| r.did.as_ref().map(g))
                .collect::<Vec<_>>(),
        ))
    };
    let i = |g: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(g)))
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.service.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.outcome),
            )),
            i(&|r| r.enrolled),
            i(&|r| r.treated),
            i(&|r| r.controls),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.match_rate).collect::<Vec<_>>(),
            )),
            f(&|d| d.treated_before),
            f(&|d| d.treated_after),
            f(&|d| d.control_before),
            f(&|d| d.control_after),
            f(&|d| d.did),
            f(&|d| d.ci_low),
            f(&|d| d.ci_high),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_dates() {
        let d = |s: &str| date32(chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap());
        assert_eq!(
            index_date(d("2025-06-15"), IndexEvery::Month),
            d("2025-06-01")
        );
        assert_eq!(
            index_date(d("2025-06-15"), IndexEvery::Quarter),
            d("2025-04-01")
        );
        assert_eq!(
            index_date(d("2025-12-31"), IndexEvery::Quarter),
            d("2025-10-01")
        );
        assert_eq!(
            index_date(d("2025-01-01"), IndexEvery::Quarter),
            d("2025-01-01")
        );
    }
}

//! The outcomes stage: is each service in `services` (a virtual ward, a community
//! matron scheme) followed by fewer emergency admissions and bed days than in similar
//! patients who were not enrolled?
//!
//! The design is the matched-control difference in differences of the Nuffield Trust
//! evaluations of NHS telehealth, virtual wards and case management (Steventon et al.
//! 2011, 2012; Roland et al. 2005 on why matching on the crisis that triggers referral
//! matters), with risk-set matching at each patient's own start date:
//!
//! 1. `sql/outcomes/enrolments.sql`: each patient's first enrolment per service in
//!    the two years before `A`; its index day is the day after its start date, so that
//!    the start day (often the day of the admission that led to the referral) is
//!    history and never an outcome.
//! 2. `sql/outcomes/histories.sql`: every patient's emergency spells and dates; at each
//!    index day, candidate comparison patients are people registered, alive and not
//!    yet enrolled in any service, in the same cell of sex, age band (0, 18, 45, 65,
//!    75, 85), emergency admissions in the 90 and 365 days before (capped) and days
//!    since the last emergency discharge (in hospital, 28, 90, more), the nearest on
//!    bed days (`riskstrat_models::index_matching`).
//! 3. `sql/outcomes/shifted_*.sql`: the risk score of every enrolled patient and
//!    candidate at its own index date, in one pass of the run's feature SQL over their
//!    events moved to `A` (the model as a DataFusion expression).
//! 4. Greedy 1:1 matching without replacement within each enrolled patient's
//!    candidates, nearest on logit risk plus conditions, comorbidity, medicines and GP
//!    contact, within a caliper of 0.2 SD of logit risk at `A`.
//! 5. `sql/outcomes/windows.sql`: person-time, emergency admissions and bed days in the
//!    365 days before and after the start date (and the year before, for the placebo
//!    test), for both.
//! 6. Rates per 1,000 person-years, the difference in differences with a 95% interval
//!    clustered by person, the same on the two years before (placebo: no effect can be
//!    there), standardised mean differences before and after matching, and warnings.
//!
//! Opted-out patients are in neither group: no table here holds them. The results are
//! pre-aggregated: commissioners read them through disclosure control.

use crate::error::Result;
use crate::ingest::contract::{ADMISSIONS, APPOINTMENTS, PATIENTS, PERSON, PRESCRIPTIONS};
use crate::ingest::tables::{EMERGENCY_SPELLS, EPISODES, INDEX_EPISODES};
use crate::model::{ModelFile, risk_expr};
use crate::sql::{Kind, Params, SqlSource, date32};
use datafusion::arrow::array::{
    Array, ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::HashSet;
use datafusion::prelude::{SessionContext, col, ident};
use futures::StreamExt;
use riskstrat_models::balancing::entropy_balance_within;
use riskstrat_models::index_matching::{
    Choice, Enrolled, History, Person, Population, Spell, bed_day_distance,
    match_in_lists_weighted, smd, smd_weighted,
};
use riskstrat_models::service_evaluation::{
    Arm, Did, Windows, caliper, difference_in_differences_weighted, switch_adjusted_services,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The outcomes evaluated, as named in `service_outcomes`.
pub const OUTCOMES: &[&str] = &["emergency_admissions", "bed_days"];

/// Candidate comparison patients kept per enrolled patient: the default of
/// `[outcomes] candidates`, defined with the job's settings.
pub use crate::job::CANDIDATES;
/// The view of `sql/outcomes/emergency_spells.sql` that the stage's queries read.
/// Random eligible people per enrolled patient, for balance before matching.
pub const REFERENCE: usize = 3;
/// Below this share of enrolled patients matched, the result carries a warning.
pub const MIN_MATCH_RATE: f64 = 0.8;
/// At or above this |SMD| after matching, a variable is out of balance (Austin 2009).
pub const MAX_SMD: f64 = 0.1;
/// The smallest effect an evaluation could detect (two-sided 5% level, 80% power:
/// 2.8 standard errors of its DiD), as a share of the comparison patients' rate after
/// the start, above which the estimate is flagged imprecise: it could not tell a
/// service that halves the rate from one that does nothing. (At the demo's 50,000
/// people every service is; at 1,000,000 none is.)
pub const MAX_DETECTABLE_SHARE: f64 = 0.5;
/// z for a two-sided 5% test plus z for 80% power.
const Z_DETECTABLE: f64 = 1.959_964 + 0.841_621;
/// How far (in SDs) approximate balancing may leave each matching variable's weighted
/// mean from the enrolled patients' mean: half of [`MAX_SMD`], so that what is left
/// is well under the threshold that warns (see [`balance_controls`]).
pub const BALANCE_TOLERANCE: f64 = 0.05;
/// Matched controls needed per matching variable before they are weighted (the
/// lower end of the events-per-variable rules of thumb; a precaution: on synthetic
/// data every service under it had about 10 pairs, and the estimates were the same
/// with or without it). See [`balance_controls`].
pub const MIN_CONTROLS_PER_VARIABLE: usize = 5;

/// Fixes the random order of candidates, so that a run can be repeated exactly.
const SEED: u64 = 0x5e41_ce5e;

/// Features at the index date that the nearest-neighbour distance uses besides risk
/// (conditions, comorbidity, medicines, GP contact: the persistent need that a
/// referral on long-term conditions selects on, and that a risk score of any
/// admission in a year captures only in part).
pub const COVARIATES: [&str; 4] = [
    "ltc_groups_12m",
    "charlson_score",
    "distinct_drugs_12m",
    "gp_appts_12m",
];

/// The matching variables, as named in `service_balance`.
pub const BALANCE_VARIABLES: [&str; VARIABLES] = [
    "age",
    "female",
    "emergency_admissions_90d",
    "emergency_admissions_365d",
    "bed_days_90d",
    "bed_days_365d",
    "risk",
    "ltc_groups_12m",
    "charlson_score",
    "distinct_drugs_12m",
    "gp_appts_12m",
];
const VARIABLES: usize = 11;

pub fn schema() -> SchemaRef {
    nullable_fields(&[
        (DataType::Utf8, &["service_code", "outcome"]),
        (DataType::Int64, &["enrolled", "treated", "controls"]),
        (
            DataType::Float64,
            &[
                "match_rate",
                "treated_before",
                "treated_after",
                "control_before",
                "control_after",
                "did",
                "did_ci_low",
                "did_ci_high",
                "placebo_did",
                "placebo_ci_low",
                "placebo_ci_high",
                "max_smd_before",
                "max_smd_after",
            ],
        ),
        (
            DataType::Int64,
            &[
                "warning_low_match_rate",
                "warning_imbalance",
                "warning_pre_trend",
                "warning_imprecise",
            ],
        ),
        (DataType::Utf8, &["warnings"]),
    ])
}

pub fn balance_schema() -> SchemaRef {
    nullable_fields(&[
        (DataType::Utf8, &["service_code", "variable"]),
        (
            DataType::Float64,
            &[
                "treated_mean",
                "reference_mean",
                "control_mean",
                "smd_before",
                "smd_after",
            ],
        ),
    ])
}

/// A schema of nullable fields, given as runs of names of one type.
fn nullable_fields(runs: &[(DataType, &[&str])]) -> SchemaRef {
    let fields: Vec<Field> = runs
        .iter()
        .flat_map(|(t, names)| names.iter().map(move |n| Field::new(*n, t.clone(), true)))
        .collect();
    Arc::new(Schema::new(fields))
}

/// `service_outcomes`, `service_balance` and `service_people`.
pub struct Evaluation {
    pub outcomes: RecordBatch,
    pub balance: RecordBatch,
    /// The people behind each count (see [`people_batch`]).
    pub people: RecordBatch,
}

struct Enrolment {
    service: String,
    pseudo_id: String,
    start: i32,
}

fn utf8(b: &RecordBatch, name: &str) -> Result<StringArray> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::failed(format!("outcomes: no column {name}")))?;
    Ok(cast(c, &DataType::Utf8)?
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("Utf8")
        .clone())
}

fn int(b: &RecordBatch, name: &str, t: DataType) -> Result<ArrayRef> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| crate::error::Error::failed(format!("outcomes: no column {name}")))?;
    Ok(cast(c, &t)?)
}

fn dates(b: &RecordBatch, name: &str) -> Result<Date32Array> {
    Ok(int(b, name, DataType::Date32)?
        .as_any()
        .downcast_ref::<Date32Array>()
        .expect("Date32")
        .clone())
}

fn floats(b: &RecordBatch, name: &str) -> Result<Float64Array> {
    Ok(int(b, name, DataType::Float64)?
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("Float64")
        .clone())
}

/// The episode a row of `origin` is about, as an index into `n` episodes.
fn episode_of(ep: &Int64Array, r: usize, n: usize, origin: &str) -> Result<usize> {
    let v = ep.value(r);
    usize::try_from(v)
        .ok()
        .filter(|i| !ep.is_null(r) && *i < n)
        .ok_or_else(|| {
            crate::bad_input!("{origin}: episode {v} is not one of the episodes (0 to {n} - 1)")
        })
}

/// What `outcomes/histories.sql` returns, per person.
const HISTORY_COLUMNS: &[(&str, Kind)] = &[
    ("pseudo_id", Kind::Text),
    (PERSON, Kind::Integer),
    ("sex", Kind::Text),
    ("year_of_birth", Kind::Integer),
    ("registration_start", Kind::Date),
    ("registration_end", Kind::Date),
    ("date_of_death", Kind::Date),
    ("first_enrolment", Kind::Date),
    ("admitted", Kind::DateList),
    ("bed_days", Kind::NumberList),
];

/// Who the people of a [`Person`] list are, in the same order, which is by pseudo_id:
/// their pseudo_ids (one Arrow array: at 10 million people a `String` each, and a map
/// from each to its row, took about 1 GB more), and their integer keys in this run
/// (`person`), on which the event tables join.
struct Ids {
    pseudo_id: StringArray,
    person: Vec<u64>,
}

impl Ids {
    fn id(&self, row: usize) -> &str {
        self.pseudo_id.value(row)
    }

    /// The row of `id`: a binary search, the ids being in order.
    fn row_of(&self, id: &str) -> Option<usize> {
        let (mut low, mut high) = (0, self.pseudo_id.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.id(middle).cmp(id) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return Some(middle),
            }
        }
        None
    }

    /// `pseudo_id` (arrays in the order of `people`) and `person`, with `people`,
    /// put in pseudo_id order if an override of `outcomes/histories.sql` did not:
    /// the order decides which candidate a random draw picks, so it must not vary.
    fn in_order(
        pseudo_id: &[ArrayRef],
        person: Vec<u64>,
        people: Vec<Person>,
    ) -> Result<(Ids, Vec<Person>)> {
        use datafusion::arrow::compute::{concat, sort_to_indices, take};
        let parts: Vec<&dyn Array> = pseudo_id.iter().map(|a| a.as_ref()).collect();
        let all = if parts.is_empty() {
            Arc::new(StringArray::from(Vec::<&str>::new())) as ArrayRef
        } else {
            concat(&parts)?
        };
        let ids = Ids {
            pseudo_id: all
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("Utf8")
                .clone(),
            person,
        };
        let n = ids.pseudo_id.len();
        if (1..n).all(|i| ids.id(i - 1) < ids.id(i)) {
            return Ok((ids, people));
        }
        let order = sort_to_indices(&all, None, None)?;
        let sorted = take(&all, &order, None)?;
        let sorted = sorted.as_any().downcast_ref::<StringArray>().expect("Utf8");
        // Which copy of a repeated person a search finds would depend on the order.
        let repeated = (1..n)
            .filter(|&i| sorted.value(i - 1) == sorted.value(i))
            .count();
        if repeated > 0 {
            return Err(crate::bad_input!(
                "outcomes/histories.sql: {repeated} rows repeat another row's pseudo_id; \
                 return one row per patient"
            ));
        }
        let mut people: Vec<Option<Person>> = people.into_iter().map(Some).collect();
        let order: Vec<usize> = order.values().iter().map(|&i| i as usize).collect();
        Ok((
            Ids {
                pseudo_id: sorted.clone(),
                person: order.iter().map(|&i| ids.person[i]).collect(),
            },
            order
                .iter()
                .map(|&i| people[i].take().expect("a permutation"))
                .collect(),
        ))
    }
}

/// Everyone who could be in the evaluation, in pseudo_id order.
async fn histories(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
) -> Result<(Ids, Vec<Person>)> {
    let (mut pseudo_ids, mut keys, mut people) = (Vec::new(), Vec::new(), Vec::new());
    let (df, origin) =
        crate::sql::planned(ctx, sql, params, "outcomes/histories.sql", HISTORY_COLUMNS).await?;
    // Streamed: each batch is dropped once read, rather than all held until the end.
    let mut batches = df.execute_stream().await?;
    while let Some(b) = batches.next().await {
        let b = b?;
        pseudo_ids.push(Arc::new(utf8(&b, "pseudo_id")?) as ArrayRef);
        let key = int(&b, PERSON, DataType::UInt64)?;
        let key = key.as_any().downcast_ref::<UInt64Array>().expect("UInt64");
        let sex = utf8(&b, "sex")?;
        let yob = int(&b, "year_of_birth", DataType::Int32)?;
        let yob = yob.as_any().downcast_ref::<Int32Array>().expect("Int32");
        let (reg, until, died, first) = (
            dates(&b, "registration_start")?,
            dates(&b, "registration_end")?,
            dates(&b, "date_of_death")?,
            dates(&b, "first_enrolment")?,
        );
        let list = |name: &str| -> Result<ListArray> {
            Ok(b.column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<ListArray>())
                .ok_or_else(|| {
                    crate::error::Error::failed(format!(
                        "outcomes/histories.sql: {name} must be a list"
                    ))
                })?
                .clone())
        };
        let (admitted, bed_days) = (list("admitted")?, list("bed_days")?);
        // Each list's values cast once for the whole batch, not once per person.
        let d = cast(admitted.values(), &DataType::Date32)?;
        let d = d.as_any().downcast_ref::<Date32Array>().expect("Date32");
        let n = cast(bed_days.values(), &DataType::Float64)?;
        let n = n.as_any().downcast_ref::<Float64Array>().expect("Float64");
        let opt = |a: &Date32Array, r: usize| (!a.is_null(r)).then(|| a.value(r));
        for r in 0..b.num_rows() {
            let mut spells = Vec::new();
            if !admitted.is_null(r) {
                let (from, to) = (admitted.value_offsets()[r], admitted.value_offsets()[r + 1]);
                if bed_days.is_null(r) || bed_days.value_length(r) != to - from {
                    return Err(crate::bad_input!(
                        "{origin}: admitted and bed_days must be lists of the same length"
                    ));
                }
                let at = bed_days.value_offsets()[r] - from;
                spells = (from..to)
                    .map(|k| Spell {
                        admitted: d.value(k as usize),
                        bed_days: n.value((k + at) as usize),
                    })
                    .collect();
                spells.sort_by(|a: &Spell, b: &Spell| {
                    a.admitted
                        .cmp(&b.admitted)
                        .then(a.bed_days.total_cmp(&b.bed_days))
                });
            }
            keys.push(key.value(r));
            people.push(Person {
                sex: match sex.value(r) {
                    "F" => 0,
                    "M" => 1,
                    _ => 2,
                },
                year_of_birth: yob.value(r),
                registered_from: reg.value(r),
                registered_until: opt(&until, r),
                died: opt(&died, r),
                first_enrolment: opt(&first, r),
                spells,
            });
        }
    }
    Ids::in_order(&pseudo_ids, keys, people)
}

/// A session over `people`'s rows only: each input table behind a filter on pseudo_id
/// that DataFusion pushes below validation to the scans wherever that gives the same
/// rows, so that the joins and rules of validation run on their rows rather than on
/// every event (a 72,000-literal `IN` list instead took minutes to plan).
async fn restricted_to(ctx: &SessionContext, people: HashSet<String>) -> Result<SessionContext> {
    let theirs = crate::session::functions::member_of_udf("in_episodes", people)
        .call(vec![col("pseudo_id")]);
    let restricted = session_like(ctx)?;
    for table in [&PATIENTS, &APPOINTMENTS, &PRESCRIPTIONS, &ADMISSIONS] {
        let df = ctx.table(table.name).await?.filter(theirs.clone())?;
        restricted.register_table(table.name, df.into_view())?;
    }
    Ok(restricted)
}

/// An empty session with `ctx`'s configuration, memory pool and functions.
fn session_like(ctx: &SessionContext) -> Result<SessionContext> {
    let s = SessionContext::new_with_config_rt(ctx.copied_config(), ctx.runtime_env().clone());
    crate::session::register_functions(&s)?;
    Ok(s)
}

/// Risk at each episode's own index date: the run's feature SQL, in a session of its
/// own whose person tables are the episodes' rows with dates moved to `A`.
/// `restricted` is [`restricted_to`] the episodes' people.
async fn risk_at_index(
    restricted: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
    model: &ModelFile,
    episodes: &[(usize, i32)],
    ids: &Ids,
) -> Result<(Vec<f64>, Vec<[f64; 4]>)> {
    use chrono::Datelike;
    let a = date32(params.as_of);
    let batch = RecordBatch::try_from_iter(vec![
        (
            "episode",
            Arc::new(Int64Array::from_iter_values(0..episodes.len() as i64)) as ArrayRef,
        ),
        (
            "pseudo_id",
            Arc::new(StringArray::from_iter_values(
                episodes.iter().map(|(p, _)| ids.id(*p)),
            )),
        ),
        (
            PERSON,
            Arc::new(UInt64Array::from_iter_values(
                episodes.iter().map(|(p, _)| ids.person[*p]),
            )),
        ),
        (
            "index_date",
            Arc::new(Date32Array::from_iter_values(episodes.iter().map(|e| e.1))),
        ),
        (
            "year_start",
            Arc::new(Date32Array::from_iter_values(
                episodes.iter().map(|e| e.1 - 365),
            )),
        ),
        (
            "two_years_start",
            Arc::new(Date32Array::from_iter_values(
                episodes.iter().map(|e| e.1 - 730),
            )),
        ),
        (
            "shift_days",
            Arc::new(Int32Array::from_iter_values(
                episodes.iter().map(|e| a - e.1),
            )),
        ),
        (
            "year_shift",
            Arc::new(Int32Array::from_iter_values(episodes.iter().map(|e| {
                params.as_of.year() - crate::sql::from_date32(e.1).year()
            }))),
        ),
    ])?;
    restricted.register_batch(INDEX_EPISODES, batch)?;
    let shifted = session_like(restricted)?;
    for table in [&PATIENTS, &APPOINTMENTS, &PRESCRIPTIONS, &ADMISSIONS] {
        let path = format!("outcomes/shifted_{}.sql", table.name);
        let mut columns: Vec<(&str, Kind)> = table
            .columns
            .iter()
            .map(|c| (c.name, Kind::Contract(c.ty)))
            .collect();
        // The feature SQL groups on the person key: here, the episode.
        columns.push((PERSON, Kind::Integer));
        let (df, _) = crate::sql::planned(restricted, sql, params, &path, &columns).await?;
        shifted.register_table(table.name, df.into_view())?;
    }
    let features = crate::features::plan(&shifted, sql, params, extra).await?;
    let risk = risk_expr(model, &features)?;
    let mut columns = vec![ident("pseudo_id"), risk.alias("risk")];
    columns.extend(COVARIATES.iter().map(|c| ident(*c)));
    let df = features.select(columns)?;
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
    crate::progress::log_plan_metrics("risk at the index dates", plan.as_ref());
    restricted.deregister_table(INDEX_EPISODES)?;
    by_episode(&batches, episodes.len())
}

/// Each of `n` episodes' risk and covariates from the rows of [`risk_at_index`]'s
/// plan, whose `pseudo_id` is the episode's number; NaN for an episode with no row.
fn by_episode(batches: &[RecordBatch], n: usize) -> Result<(Vec<f64>, Vec<[f64; 4]>)> {
    let mut out = vec![f64::NAN; n];
    let mut covariates = vec![[f64::NAN; 4]; n];
    for b in batches {
        let e = utf8(b, "pseudo_id")?;
        let r = floats(b, "risk")?;
        let x = COVARIATES
            .iter()
            .map(|c| floats(b, c))
            .collect::<Result<Vec<_>>>()?;
        for k in 0..b.num_rows() {
            if let Ok(i) = e.value(k).parse::<usize>()
                && i < out.len()
                && !r.is_null(k)
            {
                out[i] = r.value(k);
                for (j, col) in x.iter().enumerate() {
                    covariates[i][j] = if col.is_null(k) { 0.0 } else { col.value(k) };
                }
            }
        }
    }
    Ok((out, covariates))
}

/// A matched episode: the enrolled patient, or their comparison patient, around the
/// enrolled patient's start date.
struct Episode {
    service: usize,
    treated: bool,
    person: usize,
    start: i32,
    /// The analysis weight: 1 for the enrolled, the entropy-balancing weight for a
    /// comparison patient (see [`balance_controls`]).
    weight: f64,
}

/// What `outcomes/windows.sql` returns, per episode besides its number: person-time
/// and counts of each period, all numbers.
const WINDOW_NUMBERS: [&str; 9] = [
    "days_placebo",
    "days_before",
    "days_after",
    "admissions_placebo",
    "admissions_before",
    "admissions_after",
    "bed_days_placebo",
    "bed_days_before",
    "bed_days_after",
];

fn window_columns() -> Vec<(&'static str, Kind)> {
    std::iter::once(("episode", Kind::Integer))
        .chain(WINDOW_NUMBERS.map(|n| (n, Kind::Number)))
        .collect()
}

/// Per episode: [placebo as "before" and before as "after", before and after], for
/// emergency admissions and bed days.
struct EpisodeWindows {
    main: [Windows; 2],
    placebo: [Windows; 2],
    /// Of `main`'s events after the start, those while enrolled in each service
    /// (in the order of `services`).
    in_service: [Vec<f64>; 2],
}

async fn windows(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    episodes: &[Episode],
    ids: &Ids,
    services: &[String],
) -> Result<Vec<EpisodeWindows>> {
    let end = date32(params.as_of);
    let n = episodes.len();
    let d = |f: &dyn Fn(&Episode) -> i32| -> ArrayRef {
        Arc::new(Date32Array::from_iter_values(episodes.iter().map(f)))
    };
    let batch = RecordBatch::try_from_iter(vec![
        (
            "episode",
            Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
        ),
        (
            "pseudo_id",
            Arc::new(StringArray::from_iter_values(
                episodes.iter().map(|e| ids.id(e.person)),
            )),
        ),
        (
            "service_code",
            Arc::new(StringArray::from_iter_values(
                episodes.iter().map(|e| services[e.service].as_str()),
            )),
        ),
        ("placebo_start", d(&|e| e.start - 730)),
        ("before_start", d(&|e| e.start - 365)),
        ("start_date", d(&|e| e.start)),
        ("after_end", d(&|e| (e.start + 365).min(end))),
    ])?;
    crate::session::cluster::register_batch(ctx, EPISODES, batch).await?;
    let zero = Windows {
        events_before: 0.0,
        days_before: 0.0,
        events_after: 0.0,
        days_after: 0.0,
    };
    let mut out: Vec<EpisodeWindows> = (0..n)
        .map(|_| EpisodeWindows {
            main: [zero; 2],
            placebo: [zero; 2],
            in_service: [vec![0.0; services.len()], vec![0.0; services.len()]],
        })
        .collect();
    let (df, origin) =
        crate::sql::planned(ctx, sql, params, "outcomes/windows.sql", &window_columns()).await?;
    for b in df.collect().await? {
        let ep = int(&b, "episode", DataType::Int64)?;
        let ep = ep.as_any().downcast_ref::<Int64Array>().expect("Int64");
        let c = |name: &str| floats(&b, name);
        let (dp, db, da) = (c("days_placebo")?, c("days_before")?, c("days_after")?);
        for (k, what) in ["admissions", "bed_days"].iter().enumerate() {
            let (p, bf, af) = (
                c(&format!("{what}_placebo"))?,
                c(&format!("{what}_before"))?,
                c(&format!("{what}_after"))?,
            );
            for r in 0..b.num_rows() {
                let w = &mut out[episode_of(ep, r, n, &origin)?];
                w.main[k] = Windows {
                    events_before: bf.value(r),
                    days_before: db.value(r),
                    events_after: af.value(r),
                    days_after: da.value(r),
                };
                w.placebo[k] = Windows {
                    events_before: p.value(r),
                    days_before: dp.value(r),
                    events_after: bf.value(r),
                    days_after: db.value(r),
                };
            }
        }
    }
    in_service(ctx, sql, params, services, &mut out).await?;
    ctx.deregister_table(EPISODES)?;
    Ok(out)
}

/// Each episode's follow-up events while enrolled in each service
/// (`outcomes/in_service.sql`, over the `episodes` table [`windows`] registers).
async fn in_service(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    services: &[String],
    out: &mut [EpisodeWindows],
) -> Result<()> {
    let n = out.len();
    let in_service = [
        ("episode", Kind::Integer),
        ("service_code", Kind::Text),
        ("admissions_in_service", Kind::Number),
        ("bed_days_in_service", Kind::Number),
    ];
    let (df, origin) =
        crate::sql::planned(ctx, sql, params, "outcomes/in_service.sql", &in_service).await?;
    for b in df.collect().await? {
        let ep = int(&b, "episode", DataType::Int64)?;
        let ep = ep.as_any().downcast_ref::<Int64Array>().expect("Int64");
        let (a, d) = (
            floats(&b, "admissions_in_service")?,
            floats(&b, "bed_days_in_service")?,
        );
        let code = utf8(&b, "service_code")?;
        for r in 0..b.num_rows() {
            // Services not evaluated (no enrolment in the window) have no effect to
            // subtract: their time counts as untreated.
            if let Some(k) = services.iter().position(|s| s == code.value(r)) {
                let w = &mut out[episode_of(ep, r, n, &origin)?];
                w.in_service[0][k] += a.value(r);
                w.in_service[1][k] += d.value(r);
            }
        }
    }
    Ok(())
}

/// The matching variables of one episode.
fn variables(p: &Person, h: &History, day: i32, risk: f64, x: &[f64; 4]) -> [f64; VARIABLES] {
    [
        p.age_at(day) as f64,
        f64::from(p.sex == 0),
        h.admissions_90d as f64,
        h.admissions_365d as f64,
        h.bed_days_90d,
        h.bed_days_365d,
        risk,
        x[0],
        x[1],
        x[2],
        x[3],
    ]
}

/// Each patient's first enrolment per service in the two years before `A`, sorted by
/// service and pseudo_id.
async fn enrolments(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
) -> Result<Vec<Enrolment>> {
    let mut out = Vec::new();
    let columns = [
        ("service_code", Kind::Text),
        ("pseudo_id", Kind::Text),
        ("start_date", Kind::Date),
    ];
    let (df, _) =
        crate::sql::planned(ctx, sql, params, "outcomes/enrolments.sql", &columns).await?;
    for b in df
        .sort_by(vec![ident("service_code"), ident("pseudo_id")])?
        .collect()
        .await?
    {
        let (s, p, d) = (
            utf8(&b, "service_code")?,
            utf8(&b, "pseudo_id")?,
            dates(&b, "start_date")?,
        );
        for r in 0..b.num_rows() {
            out.push(Enrolment {
                service: s.value(r).to_string(),
                pseudo_id: p.value(r).to_string(),
                start: d.value(r),
            });
        }
    }
    Ok(out)
}

/// The index day of an enrolment starting on `start`: the day after, so that what
/// happened on the start day (often the very admission, discharged the same day, that
/// led to the referral) is history, in the matching and the "before" window alike,
/// and never counted as an outcome of the service.
pub fn index_day(start: i32) -> i32 {
    start + 1
}

/// One service's enrolled episodes (those in the population at their start), their
/// candidate comparison patients and their random reference people.
struct Plan {
    enrolled: usize,
    treated: Vec<Enrolled>,
    candidates: Vec<Vec<usize>>,
    reference: Vec<Vec<usize>>,
}

fn plan(
    enrolments: &[Enrolment],
    name: &str,
    s: usize,
    ids: &Ids,
    population: &Population,
    people: &[Person],
    candidates: usize,
) -> Plan {
    let mine: Vec<&Enrolment> = enrolments.iter().filter(|e| e.service == name).collect();
    let treated: Vec<Enrolled> = mine
        .iter()
        .filter_map(|e| {
            let person = ids.row_of(&e.pseudo_id)?;
            people[person].in_population(e.start).then_some(Enrolled {
                person,
                day: index_day(e.start),
            })
        })
        .collect();
    let seed = SEED ^ ((s as u64) << 32);
    Plan {
        enrolled: mine.len(),
        candidates: population.candidates(&treated, candidates.max(1), seed),
        reference: population.reference(&treated, REFERENCE, seed),
        treated,
    }
}

/// The DataFusion memory the plan of the risk at the index dates takes per episode,
/// about (measured at 10 million people: 3-4 GiB for 4.9 million episodes).
const PLAN_BYTES_PER_EPISODE: usize = 800;

/// The most episodes one plan of the risk at the index dates takes: as many as a third
/// of `[resources] memory_limit` holds (all of them without a limit). More plans mean
/// more reads of the event tables (each reads them whole, about 10 s at 10 million
/// people), but each holds only its part of the episodes' aggregates.
fn episodes_per_plan(ctx: &SessionContext) -> usize {
    use datafusion::execution::memory_pool::MemoryLimit;
    if let Some(n) = crate::faults::episodes_per_plan() {
        return n;
    }
    match ctx.runtime_env().memory_pool.memory_limit() {
        MemoryLimit::Finite(limit) => (limit / 3 / PLAN_BYTES_PER_EPISODE).max(1),
        MemoryLimit::Infinite | MemoryLimit::Unknown => usize::MAX,
    }
}

/// The risk of every (person, day) the plans need, computed once each.
struct Risks {
    of: HashMap<(usize, i32), usize>,
    risk: Vec<f64>,
    covariates: Vec<[f64; 4]>,
    /// The SD of each covariate over everyone scored (the distance's scale).
    sd: [f64; 4],
}

impl Risks {
    fn key(&self, person: usize, day: i32) -> usize {
        self.of[&(person, day)]
    }

    fn at(&self, person: usize, day: i32) -> f64 {
        self.risk[self.key(person, day)]
    }

    fn covariates(&self, person: usize, day: i32) -> &[f64; 4] {
        &self.covariates[self.key(person, day)]
    }

    /// Distance on the covariates, each over its SD (0 for a constant one).
    fn distance(&self, a: (usize, i32), b: (usize, i32)) -> f64 {
        let (x, y) = (self.covariates(a.0, a.1), self.covariates(b.0, b.1));
        (0..4)
            .filter(|&j| self.sd[j] > 0.0)
            .map(|j| (x[j] - y[j]).abs() / self.sd[j])
            .sum()
    }
}

async fn risks(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
    model: &ModelFile,
    plans: &[Plan],
    ids: &Ids,
) -> Result<Risks> {
    let mut of: HashMap<(usize, i32), usize> = HashMap::new();
    let mut index_episodes: Vec<(usize, i32)> = Vec::new();
    let mut key = |person: usize, day: i32| {
        of.entry((person, day)).or_insert_with(|| {
            index_episodes.push((person, day));
            index_episodes.len() - 1
        });
    };
    for p in plans {
        for (k, t) in p.treated.iter().enumerate() {
            key(t.person, t.day);
            for &q in p.candidates[k].iter().chain(&p.reference[k]) {
                key(q, t.day);
            }
        }
    }
    let n = index_episodes.len();
    let parts = n.div_ceil(episodes_per_plan(ctx)).max(1);
    tracing::debug!("outcomes: {n} index episodes in {parts} plans");
    let (mut risk, mut covariates) = (vec![f64::NAN; n], vec![[f64::NAN; 4]; n]);
    // Split by person, so that each person's events are read by one plan only.
    for part in 0..parts {
        let mine: Vec<usize> = (0..n)
            .filter(|&e| index_episodes[e].0 % parts == part)
            .collect();
        let episodes: Vec<(usize, i32)> = mine.iter().map(|&e| index_episodes[e]).collect();
        let people: HashSet<String> = episodes
            .iter()
            .map(|(p, _)| ids.id(*p).to_string())
            .collect();
        let theirs = restricted_to(ctx, people).await?;
        let (r, x) = risk_at_index(&theirs, sql, params, extra, model, &episodes, ids).await?;
        for (k, e) in mine.into_iter().enumerate() {
            (risk[e], covariates[e]) = (r[k], x[k]);
        }
    }
    let mut sd = [0.0; 4];
    for (j, v) in sd.iter_mut().enumerate() {
        let x: Vec<f64> = covariates
            .iter()
            .map(|c| c[j])
            .filter(|v| !v.is_nan())
            .collect();
        let n = x.len() as f64;
        if n > 1.0 {
            let m = x.iter().sum::<f64>() / n;
            *v = (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        }
    }
    Ok(Risks {
        of,
        risk,
        covariates,
        sd,
    })
}

/// The matching variables of `person` at `day`.
fn variables_at(people: &[Person], risks: &Risks, person: usize, day: i32) -> [f64; VARIABLES] {
    let q = &people[person];
    let x = risks.covariates(person, day);
    variables(q, &q.history(day), day, risks.at(person, day), x)
}

/// One service's matching: the matched pairs as episodes (treated, then its control)
/// and its matching variables ([`Groups`]).
fn match_service(
    s: usize,
    p: &Plan,
    people: &[Person],
    risks: &Risks,
    width: f64,
    episodes: &mut Vec<Episode>,
) -> Groups {
    let scores: Vec<f64> = p
        .treated
        .iter()
        .map(|t| risks.at(t.person, t.day))
        .collect();
    let lists: Vec<Vec<Choice>> = p
        .treated
        .iter()
        .zip(&p.candidates)
        .map(|(t, cands)| {
            let th = people[t.person].history(t.day);
            cands
                .iter()
                .map(|&q| Choice {
                    key: risks.key(q, t.day),
                    score: risks.at(q, t.day),
                    tie: bed_day_distance(&th, &people[q].history(t.day))
                        + risks.distance((t.person, t.day), (q, t.day)),
                })
                .collect()
        })
        .collect();
    // Nearest on |logit risk difference| / 0.2 + the covariate distance (in SDs),
    // within the caliper on risk: `width` is 0.2 SD of logit risk.
    let chosen = match_in_lists_weighted(&scores, &lists, width, width);
    let first = episodes.len();
    let vars = |person: usize, day: i32| variables_at(people, risks, person, day);
    let mut groups: Groups = Default::default();
    for (k, t) in p.treated.iter().enumerate() {
        if !scores[k].is_nan() {
            groups[0].push(vars(t.person, t.day));
        }
        for &q in &p.reference[k] {
            if !risks.at(q, t.day).is_nan() {
                groups[1].push(vars(q, t.day));
            }
        }
        if let Some(c) = chosen[k] {
            let q = p.candidates[k][c];
            groups[2].push(vars(t.person, t.day));
            groups[3].push(vars(q, t.day));
            for (treated, person) in [(true, t.person), (false, q)] {
                episodes.push(Episode {
                    service: s,
                    treated,
                    person,
                    start: t.day,
                    weight: 1.0,
                });
            }
        }
    }
    balance_controls(&groups, &mut episodes[first..]);
    groups
}

/// Approximate entropy balancing of one service's matched controls (Hainmueller
/// 2012, with a tolerance rather than exact constraints, as Zubizarreta's 2015 stable
/// balancing weights have): weights on `episodes`' comparison patients (in the order
/// of `groups[3]`) under which their weighted mean of every matching variable is
/// within [`BALANCE_TOLERANCE`] SDs of the matched enrolled patients' mean. Matching alone cannot reach balance where the candidate
/// pool is thin (the crisis that triggers referral is rare); the weights are used in
/// the DiD, its placebo and the SMDs after matching. When no weights can reach the
/// tolerance (an enrolled mean outside the controls') they stay unweighted.
///
/// Exact balance (no tolerance) fits the noise of a small sample: with about 130
/// pairs it made a service with no effect look like a reduction of a quarter of the
/// baseline rate (-149.8 per 1,000 person-years at 25,000 people; -76.1, within its
/// sampling error, with the tolerance). Below [`MIN_CONTROLS_PER_VARIABLE`] even
/// approximate weights would lean on a few people, so a very small service is
/// evaluated on matching alone, and its SMDs and warning say what is left.
fn balance_controls(groups: &Groups, episodes: &mut [Episode]) {
    let [_, _, matched, controls] = groups;
    if matched.is_empty() || controls.len() < MIN_CONTROLS_PER_VARIABLE * VARIABLES {
        return;
    }
    let targets: Vec<f64> = (0..VARIABLES)
        .map(|v| matched.iter().map(|r| r[v]).sum::<f64>() / matched.len() as f64)
        .collect();
    let Ok(b) = entropy_balance_within(&targets, controls, None, BALANCE_TOLERANCE) else {
        return;
    };
    // Weights that miss a target are no solution: keep the matched controls
    // unweighted, and let the SMDs and the imbalance warning say so.
    if !b.converged {
        tracing::debug!("outcomes: entropy balancing could not reach every target");
        return;
    }
    for (e, w) in episodes.iter_mut().filter(|e| !e.treated).zip(b.weights) {
        e.weight = w;
    }
}

/// Evaluate every service. `population_risk` holds the risks at `A` (the caliper's
/// scale); `candidates` is `[outcomes] candidates`.
pub async fn evaluate(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
    model: &ModelFile,
    population_risk: &[f64],
    candidates: usize,
) -> Result<Evaluation> {
    let clock = std::time::Instant::now();
    let step = |what: &str| {
        tracing::debug!(
            "outcomes: {what} after {:.2} s",
            clock.elapsed().as_secs_f64()
        )
    };
    let enrolments = enrolments(ctx, sql, params).await?;
    let spell_columns = [
        ("pseudo_id", Kind::Text),
        ("admission_date", Kind::Date),
        ("bed_days", Kind::Number),
    ];
    let path = "outcomes/emergency_spells.sql";
    let (spells, _) = crate::sql::planned(ctx, sql, params, path, &spell_columns).await?;
    ctx.register_table(EMERGENCY_SPELLS, spells.into_view())?;
    let services: Vec<String> = enrolments
        .iter()
        .map(|e| e.service.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (ids, people) = histories(ctx, sql, params).await?;
    let population = Population::new(&people);
    // Held until the evaluation ends, beside the DataFusion plans it runs: at 10
    // million people about 1.7 GiB, which the plans' aggregates must leave room for.
    // (Not counted: the enrolments, candidate lists and the set of index people, which
    // are smaller, and the hash maps' control bytes.)
    let spells: usize = people.iter().map(|p| p.spells.capacity()).sum();
    let held = ids.pseudo_id.get_array_memory_size()
        + ids.person.capacity() * size_of::<u64>()
        + people.capacity() * size_of::<Person>()
        + spells * size_of::<Spell>()
        + population.heap_bytes();
    let _held = crate::session::reserve(ctx, "service evaluation: histories", held)?;
    tracing::debug!("outcomes: the histories hold {} MiB", held >> 20);
    step("histories");
    let plans: Vec<Plan> = services
        .iter()
        .enumerate()
        .map(|(s, name)| plan(&enrolments, name, s, &ids, &population, &people, candidates))
        .collect();
    step("candidates");
    let risks = risks(ctx, sql, params, extra, model, &plans, &ids).await?;
    step("risk at the index dates");
    let width = caliper(population_risk);
    let mut episodes: Vec<Episode> = Vec::new();
    let groups: Vec<Groups> = plans
        .iter()
        .enumerate()
        .map(|(s, p)| match_service(s, p, &people, &risks, width, &mut episodes))
        .collect();
    let windows = windows(ctx, sql, params, &episodes, &ids, &services).await?;
    step("windows");
    ctx.deregister_table(EMERGENCY_SPELLS)?;
    let (balance_rows, max_smd) = balance(&services, &groups, &episodes);
    let rows = outcome_rows(&services, &plans, &episodes, &windows, &max_smd);
    Ok(Evaluation {
        outcomes: to_batch(&rows)?,
        balance: balance_batch(&balance_rows)?,
        people: people_batch(&enrolments, &services, &episodes, &ids)?,
    })
}

/// Per service, one row per matching variable: treated (all scored) against the
/// reference people before matching, matched treated against their controls after
/// (the controls weighted by entropy balancing); and the largest |SMD| before and
/// after.
fn balance(
    services: &[String],
    groups: &[Groups],
    episodes: &[Episode],
) -> (Vec<BalanceRow>, Vec<MaxSmd>) {
    let mut rows = Vec::new();
    let mut max_smd = Vec::new();
    let col =
        |rows: &[[f64; VARIABLES]], v: usize| -> Vec<f64> { rows.iter().map(|r| r[v]).collect() };
    let mean = |x: &[f64], w: &[f64]| {
        (!x.is_empty())
            .then(|| x.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() / w.iter().sum::<f64>())
    };
    for (s, [treated_all, reference, matched, controls]) in groups.iter().enumerate() {
        let weights: Vec<f64> = episodes
            .iter()
            .filter(|e| e.service == s && !e.treated)
            .map(|e| e.weight)
            .collect();
        let ones = |x: &[f64]| vec![1.0; x.len()];
        let (mut before, mut after): MaxSmd = (None, None);
        for (v, name) in BALANCE_VARIABLES.into_iter().enumerate() {
            let (t, r, m, c) = (
                col(treated_all, v),
                col(reference, v),
                col(matched, v),
                col(controls, v),
            );
            let (b, a) = (smd(&t, &r), smd_weighted(&m, &c, &weights));
            before = max_abs(before, b);
            after = max_abs(after, a);
            rows.push(BalanceRow {
                service: services[s].clone(),
                variable: name,
                treated_mean: mean(&t, &ones(&t)),
                reference_mean: mean(&r, &ones(&r)),
                control_mean: mean(&c, &weights),
                smd_before: b,
                smd_after: a,
            });
        }
        max_smd.push((before, after));
    }
    (rows, max_smd)
}

/// The largest |SMD| of a service's matching variables, before and after matching.
type MaxSmd = (Option<f64>, Option<f64>);

/// A service's matching variables: [all scored enrolled, reference people, matched
/// enrolled, their controls].
type Groups = [Vec<[f64; VARIABLES]>; 4];

/// One arm of one service's episodes, for outcome `k` (`placebo`: the year before
/// against the year before that).
struct ArmRows {
    windows: Vec<Windows>,
    cluster: Vec<u64>,
    weight: Vec<f64>,
    in_service: Vec<Vec<f64>>,
}

impl ArmRows {
    fn new(
        episodes: &[Episode],
        windows: &[EpisodeWindows],
        s: usize,
        treated: bool,
        k: usize,
        placebo: bool,
    ) -> Self {
        let mut out = ArmRows {
            windows: Vec::new(),
            cluster: Vec::new(),
            weight: Vec::new(),
            in_service: Vec::new(),
        };
        for (e, w) in episodes
            .iter()
            .zip(windows)
            .filter(|(e, _)| e.service == s && e.treated == treated)
        {
            out.windows
                .push(if placebo { w.placebo[k] } else { w.main[k] });
            out.cluster.push(e.person as u64);
            out.weight.push(e.weight);
            out.in_service.push(w.in_service[k].clone());
        }
        out
    }

    fn arm(&self) -> Arm<'_> {
        Arm {
            weight: Some(&self.weight),
            in_service: &self.in_service,
            ..Arm::new(&self.windows, &self.cluster)
        }
    }
}

/// Per service and outcome, the DiD adjusted for comparison patients' time in every
/// service ([`switch_adjusted_services`], all services jointly) and the placebo DiD,
/// both with the controls' entropy-balancing weights.
fn estimates(
    n_services: usize,
    episodes: &[Episode],
    windows: &[EpisodeWindows],
) -> Vec<[(Option<Did>, Option<Did>); 2]> {
    let mut out = vec![[(None, None), (None, None)]; n_services];
    for k in 0..OUTCOMES.len() {
        let rows = |placebo: bool| -> Vec<[ArmRows; 2]> {
            (0..n_services)
                .map(|s| [true, false].map(|t| ArmRows::new(episodes, windows, s, t, k, placebo)))
                .collect()
        };
        let (main, placebo) = (rows(false), rows(true));
        let arms: Vec<(Arm, Arm)> = main.iter().map(|[t, c]| (t.arm(), c.arm())).collect();
        for (s, d) in switch_adjusted_services(&arms).into_iter().enumerate() {
            let [t, c] = &placebo[s];
            out[s][k] = (
                d.ok(),
                difference_in_differences_weighted(&t.arm(), &c.arm()).ok(),
            );
        }
    }
    out
}

/// One row per service and outcome.
fn outcome_rows(
    services: &[String],
    plans: &[Plan],
    episodes: &[Episode],
    windows: &[EpisodeWindows],
    max_smd: &[MaxSmd],
) -> Vec<Row> {
    let estimates = estimates(services.len(), episodes, windows);
    let mut rows: Vec<Row> = Vec::new();
    for (s, name) in services.iter().enumerate() {
        let p = &plans[s];
        let matched = episodes
            .iter()
            .filter(|e| e.service == s && e.treated)
            .count();
        let match_rate = (p.enrolled > 0).then(|| matched as f64 / p.enrolled as f64);
        let (smd_before, smd_after) = max_smd[s];
        for (k, outcome) in OUTCOMES.iter().enumerate() {
            let (main, placebo) = estimates[s][k].clone();
            let mut warnings = Vec::new();
            if match_rate.is_none_or(|r| r < MIN_MATCH_RATE) {
                warnings.push(Warning::LowMatchRate);
            }
            if smd_after.is_none_or(|v| v >= MAX_SMD) {
                warnings.push(Warning::Imbalance);
            }
            if placebo
                .as_ref()
                .is_some_and(|d| d.ci_low > 0.0 || d.ci_high < 0.0)
            {
                warnings.push(Warning::PreTrend);
            }
            if main.as_ref().is_some_and(imprecise) {
                warnings.push(Warning::Imprecise);
            }
            rows.push(Row {
                service: name.clone(),
                outcome,
                enrolled: p.enrolled as i64,
                treated: matched as i64,
                controls: matched as i64,
                match_rate,
                did: main,
                placebo,
                smd_before,
                smd_after,
                warnings,
            });
        }
    }
    rows
}

/// The people behind each count of `service_outcomes` (service_code, pseudo_id,
/// group: enrolled, treated or control), so that disclosure control can perturb each
/// count by the cell key of exactly its people. Never shown to commissioners.
fn people_batch(
    enrolments: &[Enrolment],
    services: &[String],
    episodes: &[Episode],
    ids: &Ids,
) -> Result<RecordBatch> {
    let mut service = Vec::new();
    let mut id = Vec::new();
    let mut group = Vec::new();
    for e in enrolments {
        service.push(e.service.as_str());
        id.push(e.pseudo_id.as_str());
        group.push("enrolled");
    }
    for e in episodes {
        service.push(services[e.service].as_str());
        id.push(ids.id(e.person));
        group.push(if e.treated { "treated" } else { "control" });
    }
    Ok(RecordBatch::try_from_iter(vec![
        (
            "service_code",
            Arc::new(StringArray::from(service)) as ArrayRef,
        ),
        ("pseudo_id", Arc::new(StringArray::from(id)) as ArrayRef),
        ("group", Arc::new(StringArray::from(group)) as ArrayRef),
    ])?)
}

fn max_abs(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b.abs())),
        (None, Some(b)) => Some(b.abs()),
        (a, None) => a,
    }
}

/// Why a service's result should be read with care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// Fewer than [`MIN_MATCH_RATE`] of the enrolled have a comparison patient: the
    /// result speaks for those matched only.
    LowMatchRate,
    /// A matching variable's |SMD| after matching is [`MAX_SMD`] or more.
    Imbalance,
    /// The placebo difference in differences (the year before the start against the
    /// year before that) excludes 0: the groups were already diverging.
    PreTrend,
    /// The DiD's interval is too wide to detect a halving of the rate (see
    /// [`MAX_DETECTABLE_SHARE`]): its value says little either way.
    Imprecise,
}

impl Warning {
    /// Every warning, in the order of `service_outcomes`' flag columns.
    pub const ALL: [Warning; 4] = [
        Warning::LowMatchRate,
        Warning::Imbalance,
        Warning::PreTrend,
        Warning::Imprecise,
    ];

    /// What the warning means, for a reader of the report.
    pub fn meaning(self) -> &'static str {
        match self {
            Warning::LowMatchRate => {
                "fewer than 80% of the enrolled have a comparison patient: the result speaks for those matched only"
            }
            Warning::Imbalance => {
                "the matched groups still differ (a standardised mean difference of 0.1 or more): the difference may be theirs, not the service's"
            }
            Warning::PreTrend => {
                "the groups were already diverging in the two years before the start: the difference in differences is not to be trusted"
            }
            Warning::Imprecise => {
                "the interval is too wide to detect even a halving of the rate: the estimate says nothing either way"
            }
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Warning::LowMatchRate => "low_match_rate",
            Warning::Imbalance => "imbalance",
            Warning::PreTrend => "pre_trend",
            Warning::Imprecise => "imprecise",
        }
    }
}

/// Whether a DiD could not detect an effect of [`MAX_DETECTABLE_SHARE`] of the
/// comparison patients' rate after the start (also when that rate is 0, or the
/// figures are not finite).
pub fn imprecise(d: &Did) -> bool {
    let detectable = Z_DETECTABLE * d.se;
    !(detectable < MAX_DETECTABLE_SHARE * d.control_after.abs())
}

struct Row {
    service: String,
    outcome: &'static str,
    enrolled: i64,
    treated: i64,
    controls: i64,
    match_rate: Option<f64>,
    did: Option<Did>,
    placebo: Option<Did>,
    smd_before: Option<f64>,
    smd_after: Option<f64>,
    warnings: Vec<Warning>,
}

struct BalanceRow {
    service: String,
    variable: &'static str,
    treated_mean: Option<f64>,
    reference_mean: Option<f64>,
    control_mean: Option<f64>,
    smd_before: Option<f64>,
    smd_after: Option<f64>,
}

/// A nullable Float64 column, one value per row.
fn float_column<R>(rows: &[R], g: impl Fn(&R) -> Option<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(rows.iter().map(g).collect::<Vec<_>>()))
}

/// A Utf8 column, one value per row.
fn text_column<'a, R>(rows: &'a [R], g: impl Fn(&'a R) -> &'a str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows.iter().map(g)))
}

fn to_batch(rows: &[Row]) -> Result<RecordBatch> {
    let f = |g: &dyn Fn(&Row) -> Option<f64>| float_column(rows, g);
    let i = |g: &dyn Fn(&Row) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(g)))
    };
    let flag = |w: Warning| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| i64::from(r.warnings.contains(&w))),
        ))
    };
    let did = |g: fn(&Did) -> f64| f(&move |r: &Row| r.did.as_ref().map(g));
    let placebo = |g: fn(&Did) -> f64| f(&move |r: &Row| r.placebo.as_ref().map(g));
    let warnings: Vec<String> = rows
        .iter()
        .map(|r| {
            let w: Vec<&str> = r.warnings.iter().map(|w| w.text()).collect();
            w.join(",")
        })
        .collect();
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            text_column(rows, |r| r.service.as_str()),
            text_column(rows, |r| r.outcome),
            i(&|r| r.enrolled),
            i(&|r| r.treated),
            i(&|r| r.controls),
            f(&|r| r.match_rate),
            did(|d| d.treated_before),
            did(|d| d.treated_after),
            did(|d| d.control_before),
            did(|d| d.control_after),
            did(|d| d.did),
            did(|d| d.ci_low),
            did(|d| d.ci_high),
            placebo(|d| d.did),
            placebo(|d| d.ci_low),
            placebo(|d| d.ci_high),
            f(&|r| r.smd_before),
            f(&|r| r.smd_after),
            flag(Warning::LowMatchRate),
            flag(Warning::Imbalance),
            flag(Warning::PreTrend),
            flag(Warning::Imprecise),
            text_column(&warnings, String::as_str),
        ],
    )?)
}

fn balance_batch(rows: &[BalanceRow]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        balance_schema(),
        vec![
            text_column(rows, |r| r.service.as_str()),
            text_column(rows, |r| r.variable),
            float_column(rows, |r| r.treated_mean),
            float_column(rows, |r| r.reference_mean),
            float_column(rows, |r| r.control_mean),
            float_column(rows, |r| r.smd_before),
            float_column(rows, |r| r.smd_after),
        ],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.8 standard errors of the DiD against half the comparison patients' rate
    /// after the start.
    #[test]
    fn an_interval_too_wide_to_detect_a_halving_is_imprecise() {
        let did = |se: f64, control_after: f64| Did {
            n_treated: 100,
            n_control: 100,
            treated_before: 1000.0,
            treated_after: 500.0,
            control_before: 1000.0,
            control_after,
            did: -10.0,
            se,
            ci_low: -10.0 - 1.96 * se,
            ci_high: -10.0 + 1.96 * se,
        };
        assert!(!imprecise(&did(100.0, 600.0))); // 280 < 300
        assert!(imprecise(&did(110.0, 600.0))); // 308 >= 300
        assert!(imprecise(&did(1.0, 0.0)));
        assert!(imprecise(&did(f64::NAN, 600.0)));
        // The UAT's run at 50,000 people: a DiD of -493 (-5572 to 4586).
        let wide = Did {
            se: (4586.0 + 5572.0) / 3.92,
            ..did(0.0, 1500.0)
        };
        assert!(imprecise(&wide));
    }

    fn person(year_of_birth: i32) -> Person {
        Person {
            sex: 0,
            year_of_birth,
            registered_from: 0,
            registered_until: None,
            died: None,
            first_enrolment: None,
            spells: Vec::new(),
        }
    }

    /// An override of `outcomes/histories.sql` without its `ORDER BY` gives the people
    /// in another order: they are put in pseudo_id order with their keys and histories,
    /// and found by binary search.
    #[test]
    fn ids_are_put_in_order_with_their_people() {
        let batch = |ids: &[&str]| Arc::new(StringArray::from(ids.to_vec())) as ArrayRef;
        let parts = [batch(&["c", "a"]), batch(&["d", "b"])];
        let people = vec![person(3), person(1), person(4), person(2)];
        let (ids, people) = Ids::in_order(&parts, vec![30, 10, 40, 20], people).unwrap();
        let order: Vec<&str> = (0..4).map(|i| ids.id(i)).collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert_eq!(ids.person, [10, 20, 30, 40]);
        let born: Vec<i32> = people.iter().map(|p| p.year_of_birth).collect();
        assert_eq!(born, [1, 2, 3, 4]);
        for (i, id) in order.iter().enumerate() {
            assert_eq!(ids.row_of(id), Some(i));
        }
        assert_eq!(ids.row_of("bb"), None);
        assert_eq!(ids.row_of(""), None);
        assert_eq!(ids.row_of("e"), None);
        let (none, _) = Ids::in_order(&[], Vec::new(), Vec::new()).unwrap();
        assert_eq!(none.row_of("a"), None);
        // A person twice: which copy a search finds would depend on the order.
        let twice = [batch(&["b", "a"]), batch(&["a"])];
        let people = vec![person(2), person(1), person(1)];
        let Err(e) = Ids::in_order(&twice, vec![2, 1, 1], people) else {
            panic!("a repeated pseudo_id was accepted")
        };
        assert!(e.message.contains("1 rows repeat"), "{}", e.message);
        assert!(!e.message.contains("\"a\""), "{}", e.message);
    }
}

//! Features: the population at a date, and one row per person in it with every
//! feature of the registry. The SQL files compute the per-person aggregates; the
//! registry decides the columns, their order, types and defaults, and the docs.

pub mod registry;

use crate::bad_input;
use crate::error::Result;
use crate::ingest::contract::PERSON;
use crate::ingest::tables;
use crate::sql::{Kind, Params, SqlSource, check_columns};
use chrono::NaiveDate;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::JoinType;
use datafusion::common::ScalarValue;
use datafusion::prelude::{DataFrame, Expr, SessionContext, cast, ident, lit, when};
use registry::{FEATURES, Source};
use std::path::PathBuf;

/// Plan the feature table at `params.as_of`: population left-joined to every source.
pub async fn plan(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    extra: &[PathBuf],
) -> Result<DataFrame> {
    let df = plan_at(ctx, sql, params, &[params.as_of], extra).await?;
    let mut keep = vec![ident("pseudo_id")];
    keep.extend(non_key_columns(&df).iter().map(ident));
    Ok(df.select(keep)?)
}

/// Plan the feature table at every date of `dates` at once (`AS_OF`, then `pseudo_id`
/// and the features): one row per person of the population at each date. The built-in
/// SQL reads the dates from the table `feature_dates`, so each event table is scanned
/// (and validated) once for all of them; a file that returns no `as_of` column (an
/// analyst's, written for `$as_of`) is run at each date in turn instead.
pub async fn plan_at(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    dates: &[NaiveDate],
    extra: &[PathBuf],
) -> Result<DataFrame> {
    register_dates(ctx, dates).await?;
    let population = sql.get("population.sql")?;
    let mut df = at_dates(ctx, &population, params, dates).await?;
    check_columns(
        &df,
        &population.origin,
        &[("pseudo_id", Kind::Text), ("year_of_birth", Kind::Integer)],
    )?;
    if !population.builtin {
        one_row_per_person(&df, "pseudo_id", &population.origin).await?;
    }

    let texts = sources(sql, extra)?;
    let mut extra_columns = Vec::new();
    let packed = df.schema().has_column_with_unqualified_name(PERSON);
    if packed {
        df = df.with_column(PACKED, pack(PERSON, dates)?)?;
    }

    for (i, (text, wanted)) in texts.into_iter().enumerate() {
        let part = at_dates(ctx, &text, params, dates).await?;
        let names = non_key_columns(&part);
        let on = person_key(&part, &df, &text.origin, &population.origin)?;
        for w in &wanted {
            if !names.iter().any(|n| n == w) {
                return Err(bad_input!(
                    "{}: must return the feature column '{w}'",
                    text.origin
                ));
            }
        }
        check_columns(&part, &text.origin, &feature_types(on, &wanted))?;
        if !text.builtin {
            one_row_per_person(&part, on, &text.origin).await?;
        }
        let is_extra = wanted.is_empty();
        let mut keep = Vec::new();
        for n in &names {
            if is_extra {
                if FEATURES.iter().any(|f| f.name == n)
                    || extra_columns.contains(n)
                    || df.schema().has_column_with_unqualified_name(n)
                {
                    return Err(bad_input!(
                        "{}: column '{n}' already exists; give it another name",
                        text.origin
                    ));
                }
                extra_columns.push(n.clone());
            }
            keep.push(ident(n));
        }
        let (key, date) = (format!("__key{i}"), format!("__date{i}"));
        // The part is the join's build side and the population streams past it: a
        // table per part (people with events), not the ever wider population
        // collected again at each join, which under a memory limit ran out at
        // 10,000,000 people (a hash join cannot spill). On the person key the two
        // sides meet on one dense integer ([`pack`]); an analyst's file keyed on
        // pseudo_id joins on (as_of, pseudo_id).
        df = if packed && on == PERSON {
            keep.push(pack(PERSON, dates)?.alias(&key));
            part.select(keep)?
                .join(df, JoinType::Right, &[key.as_str()], &[PACKED], None)?
        } else {
            keep.push(ident(on).alias(&key));
            keep.push(ident(AS_OF).alias(&date));
            part.select(keep)?.join(
                df,
                JoinType::Right,
                &[date.as_str(), key.as_str()],
                &[AS_OF, on],
                None,
            )?
        };
    }

    let mut select: Vec<Expr> = vec![ident(AS_OF), ident("pseudo_id")];
    select.extend(FEATURES.iter().map(|f| f.expr().alias(f.name)));
    select.extend(extra_columns.iter().map(ident));
    Ok(df.select(select)?)
}

/// Each feature SQL file with the registry's features it must return: the built-in
/// (or overridden) files, then the job's extra files (which must return none of them).
fn sources(
    sql: &SqlSource,
    extra: &[PathBuf],
) -> Result<Vec<(crate::sql::SqlText, Vec<&'static str>)>> {
    let mut sources: Vec<&str> = Vec::new();
    for f in FEATURES {
        if let Source::Sql(s) = f.source
            && !sources.contains(&s)
        {
            sources.push(s);
        }
    }
    let mut texts = Vec::new();
    for s in &sources {
        let text = sql.get(&format!("features/{s}.sql"))?;
        let wanted: Vec<&str> = FEATURES
            .iter()
            .filter(|f| f.source == Source::Sql(s))
            .map(|f| f.name)
            .collect();
        texts.push((text, wanted));
    }
    for p in extra {
        texts.push((crate::sql::read_file(p)?, Vec::new()));
    }
    Ok(texts)
}

/// The population's and the parts' `(as_of, person)` as one integer, for the joins.
const PACKED: &str = "__packed";

/// `person x dates + i`, `i` the index of the row's `as_of` in `dates`: one dense
/// Int64 per row, so that a join on it is a lookup in an array (DataFusion's
/// "perfect hash join") rather than two columns hashed into a hash table.
fn pack(person: &str, dates: &[NaiveDate]) -> Result<Expr> {
    let person = cast(ident(person), DataType::Int64) * lit(dates.len() as i64);
    let date =
        |d: &NaiveDate| ident(AS_OF).eq(lit(ScalarValue::Date32(Some(crate::sql::date32(*d)))));
    let Some((first, rest)) = dates.split_first() else {
        return Ok(person);
    };
    let mut index = when(date(first), lit(0i64));
    for (i, d) in rest.iter().enumerate() {
        index = index.when(date(d), lit(i as i64 + 1));
    }
    Ok(person + index.end()?)
}

/// The date column of [`plan_at`]'s table and of the SQL it runs.
pub const AS_OF: &str = "as_of";

/// `feature_dates`: each date with the starts of its 12- and 24-month windows.
pub async fn register_dates(ctx: &SessionContext, dates: &[NaiveDate]) -> Result<()> {
    use datafusion::arrow::array::{ArrayRef, Date32Array, RecordBatch};
    use std::sync::Arc;
    let column = |back: u64| -> ArrayRef {
        Arc::new(Date32Array::from_iter_values(
            dates
                .iter()
                .map(|d| crate::sql::date32(*d - chrono::Days::new(back))),
        ))
    };
    let batch = RecordBatch::try_from_iter([
        (AS_OF, column(0)),
        ("w12_start", column(365)),
        ("w24_start", column(730)),
    ])?;
    crate::session::cluster::register_batch(ctx, tables::FEATURE_DATES, batch).await
}

/// `$feature_dates`: the dates of `feature_dates` as a list, for the UDF
/// `feature_date(day, $feature_dates, days)` (a row's date without a join).
pub fn dates_param(dates: &[NaiveDate]) -> (&'static str, ScalarValue) {
    let values: Vec<ScalarValue> = dates
        .iter()
        .map(|d| ScalarValue::Date32(Some(crate::sql::date32(*d))))
        .collect();
    let list = ScalarValue::new_list_nullable(&values, &DataType::Date32);
    ("feature_dates", ScalarValue::List(list))
}

/// A population or feature file's rows at every date, with `as_of` as a Date32: as it
/// returns them when it reads `feature_dates` (it returns `as_of`), or else run at
/// each date with that date's `$as_of` and windows, one after another.
async fn at_dates(
    ctx: &SessionContext,
    text: &crate::sql::SqlText,
    params: &Params,
    dates: &[NaiveDate],
) -> Result<DataFrame> {
    let first = crate::sql::query_with(ctx, text, params, vec![dates_param(dates)]).await?;
    if first.schema().has_column_with_unqualified_name(AS_OF) {
        check_columns(&first, &text.origin, &[(AS_OF, Kind::Date)])?;
        return Ok(first.with_column(AS_OF, cast(ident(AS_OF), DataType::Date32))?);
    }
    let mut all: Option<DataFrame> = None;
    for d in dates {
        let at = Params {
            as_of: *d,
            ..*params
        };
        let part = crate::sql::query_with(ctx, text, &at, vec![dates_param(dates)]).await?;
        let mut columns = vec![lit(ScalarValue::Date32(Some(crate::sql::date32(*d)))).alias(AS_OF)];
        columns.extend(part.schema().fields().iter().map(|f| ident(f.name())));
        let part = part.select(columns)?;
        all = Some(match all {
            None => part,
            Some(all) => all.union(part)?,
        });
    }
    all.ok_or_else(|| crate::error::Error::failed("features at no date"))
}

/// The columns of a per-person table but its keys, `pseudo_id`, `person` and `as_of`,
/// in order.
pub fn non_key_columns(df: &DataFrame) -> Vec<String> {
    df.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != "pseudo_id" && n != PERSON && n != AS_OF)
        .collect()
}

/// The column a feature file's rows join the population on: the run's integer
/// `person` key when the file returns it (the built-in files do), else `pseudo_id`
/// (an analyst's file may use either).
fn person_key(
    part: &DataFrame,
    population: &DataFrame,
    origin: &str,
    population_origin: &str,
) -> Result<&'static str> {
    let has = |df: &DataFrame, c: &str| df.schema().has_column_with_unqualified_name(c);
    if has(part, PERSON) {
        if !has(population, PERSON) {
            return Err(bad_input!(
                "{origin} returns person, the run's person key: {population_origin} must return it too (patients.person)"
            ));
        }
        return Ok(PERSON);
    }
    if !has(part, "pseudo_id") {
        return Err(bad_input!("{origin}: must return a pseudo_id column"));
    }
    Ok("pseudo_id")
}

/// What a feature SQL file computing `wanted` must return: its key (`pseudo_id` as
/// text or `person` as an integer), and each of its counts and sums as a number.
fn feature_types(on: &'static str, wanted: &[&'static str]) -> Vec<(&'static str, Kind)> {
    let key = if on == PERSON {
        Kind::Integer
    } else {
        Kind::Text
    };
    let mut types = vec![(on, key)];
    types.extend(
        FEATURES
            .iter()
            .filter(|f| wanted.contains(&f.name) && f.kind != registry::Kind::Attribute)
            .map(|f| (f.name, Kind::Number)),
    );
    types
}

/// Refuse analysts' feature SQL (extra files, overrides) that returns more than one row
/// for anyone: joined as it is, it would multiply people in the features, the model
/// fit and every cohort. Runs the SQL once, evaluating every column it returns, so
/// that a failure at run time (a cast the data does not fit) names the file too. The
/// error gives a count of people, never who.
async fn one_row_per_person(part: &DataFrame, on: &str, origin: &str) -> Result<()> {
    use datafusion::arrow::array::Array;
    use datafusion::functions_aggregate::count::count_all;
    use datafusion::functions_aggregate::expr_fn::{count, max, sum};
    use datafusion::prelude::{col, lit, when};
    let others = non_key_columns(part);
    // Rows per person at each date; a person counts once however many dates.
    let mut keys = vec![ident(on)];
    if part.schema().has_column_with_unqualified_name(AS_OF) {
        keys.push(ident(AS_OF));
    }
    let mut per_person = vec![count_all().alias("__rows")];
    per_person.extend(
        others
            .iter()
            .enumerate()
            .map(|(i, n)| count(ident(n)).alias(format!("__n{i}"))),
    );
    // Every per-column count is kept in the output, so no column is optimised away.
    let mut most: Vec<Expr> = vec![max(col("__rows")).alias("__most")];
    most.extend((0..others.len()).map(|i| max(col(format!("__n{i}"))).alias(format!("__m{i}"))));
    let mut totals = vec![
        sum(when(col("__most").gt(lit(1i64)), lit(1i64)).otherwise(lit(0i64))?).alias("__people"),
    ];
    totals.extend((0..others.len()).map(|i| max(col(format!("__m{i}"))).alias(format!("__t{i}"))));
    let batches = part
        .clone()
        .filter(ident(on).is_not_null())?
        .aggregate(keys, per_person)?
        .aggregate(vec![ident(on)], most)?
        .aggregate(vec![], totals)?
        .collect()
        .await
        .map_err(|e| crate::sql::run_time_error(origin, e.into()))?;
    let people = batches
        .first()
        .and_then(|b| b.column_by_name("__people"))
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
        })
        .and_then(|a| (!a.is_empty() && !a.is_null(0)).then(|| a.value(0)))
        .unwrap_or(0);
    if people > 0 {
        return Err(bad_input!(
            "{origin}: returns more than one row for {people} people; feature SQL must return one row per person (GROUP BY pseudo_id)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::registry::*;
    use super::*;

    /// Each (person, date) its own integer, dense over the people, so that the
    /// population's joins to the parts can be array lookups.
    #[tokio::test]
    async fn pack_numbers_each_person_and_date_densely() {
        use datafusion::arrow::array::{Date32Array, Int64Array, RecordBatch, UInt64Array};
        use std::sync::Arc;
        let (a, t0) = (
            NaiveDate::from_ymd_opt(2026, 4, 1).unwrap(),
            NaiveDate::from_ymd_opt(2025, 4, 1).unwrap(),
        );
        let d = |d| crate::sql::date32(d);
        let batch = RecordBatch::try_from_iter([
            (
                PERSON,
                Arc::new(UInt64Array::from(vec![1, 1, 2, 2, 3])) as _,
            ),
            (
                AS_OF,
                Arc::new(Date32Array::from(vec![d(a), d(t0), d(a), d(t0), d(t0) + 1])) as _,
            ),
        ])
        .unwrap();
        let ctx = SessionContext::new();
        for (dates, want) in [
            (vec![a, t0], vec![Some(2), Some(3), Some(4), Some(5), None]),
            (vec![a], vec![Some(1), None, Some(2), None, None]),
        ] {
            let out = ctx
                .read_batch(batch.clone())
                .unwrap()
                .select(vec![pack(PERSON, &dates).unwrap().alias("k")])
                .unwrap()
                .collect()
                .await
                .unwrap();
            let k = out[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            assert_eq!(k.iter().collect::<Vec<_>>(), want, "dates {dates:?}");
        }
    }

    #[test]
    fn every_sql_feature_source_is_builtin() {
        for f in FEATURES {
            if let Source::Sql(s) = f.source {
                let text = crate::sql::builtin(&format!("features/{s}.sql")).expect("built-in");
                assert!(text.contains(f.name), "{} not in features/{s}.sql", f.name);
            }
        }
    }

    #[test]
    fn readme_feature_table_is_current() {
        assert_eq!(
            crate::readme_section("features")
                .strip_prefix('\n')
                .expect("a new line after the marker"),
            markdown(),
            "regenerate with `riskstrat features`"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = FEATURES.iter().map(|f| f.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FEATURES.len());
    }
}

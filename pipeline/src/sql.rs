//! The SQL in `sql/`: built-in copies embedded in the binary, overridable by a job's
//! `sql_dir`, and run with named parameters (`$as_of`, `$w12_start`, ...) bound by
//! DataFusion rather than pasted into the text.

use crate::bad_input;
use crate::error::Result;
use chrono::{Days, NaiveDate};
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::scalar::ScalarValue;
use std::path::{Path, PathBuf};

macro_rules! builtin_files {
    ($($path:literal),* $(,)?) => {
        const BUILTIN: &[(&str, &str)] = &[
            $(($path, include_str!(concat!("../../sql/", $path)))),*
        ];
    };
}

builtin_files!(
    "validate/patients.sql",
    "validate/appointments.sql",
    "validate/prescriptions.sql",
    "validate/admissions.sql",
    "validate/services.sql",
    "validate/feedback.sql",
    "population.sql",
    "features/appointments.sql",
    "features/prescriptions.sql",
    "features/admissions.sql",
    "features/charlson.sql",
    "outcome.sql",
    "feedback_exclusions.sql",
    "cohorts/complex_needs.sql",
    "cohorts/high_cost.sql",
    "gate/release.sql",
    "gate/changes.sql",
    "views/person.sql",
    "views/people.sql",
    "views/cohort_people.sql",
    "views/cohort_summary.sql",
    "views/cohort_changes.sql",
    "views/service_outcomes.sql",
    "views/feedback_outcomes.sql",
    "feedback_outcomes.sql",
    "outcomes/enrolments.sql",
    "outcomes/emergency_spells.sql",
    "outcomes/histories.sql",
    "outcomes/shifted_patients.sql",
    "outcomes/shifted_appointments.sql",
    "outcomes/shifted_prescriptions.sql",
    "outcomes/shifted_admissions.sql",
    "outcomes/windows.sql",
    "outcomes/in_service.sql",
    "changes.sql",
);

pub fn builtin(path: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(p, _)| *p == path).map(|(_, s)| *s)
}

/// A built-in SQL file that no job may override (the gate's).
pub fn fixed(path: &str) -> Result<SqlText> {
    builtin(path)
        .map(|s| SqlText {
            origin: format!("built-in sql/{path}"),
            text: s.to_string(),
            builtin: true,
        })
        .ok_or_else(|| bad_input!("no SQL file sql/{path}"))
}

pub fn builtin_cohorts() -> Vec<&'static str> {
    BUILTIN
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("cohorts/")?.strip_suffix(".sql"))
        .collect()
}

/// Where SQL comes from for one run: a job's override folder first, then built-ins.
#[derive(Debug, Clone, Default)]
pub struct SqlSource {
    pub override_dir: Option<PathBuf>,
}

/// One SQL text with where it came from, for error messages.
#[derive(Debug, Clone)]
pub struct SqlText {
    pub origin: String,
    pub text: String,
    /// Shipped with riskstrat (and tested), not an analyst's file.
    pub builtin: bool,
}

impl SqlSource {
    pub fn get(&self, path: &str) -> Result<SqlText> {
        if let Some(dir) = &self.override_dir {
            let p = dir.join(path);
            if p.is_file() {
                return read_file(&p);
            }
        }
        fixed(path)
    }
}

pub fn read_file(p: &Path) -> Result<SqlText> {
    let text = std::fs::read_to_string(p)
        .map_err(|e| bad_input!("SQL file {}: cannot read it ({e})", p.display()).with_source(e))?;
    // Regression: a key file named as SQL was printed whole by the parser's error.
    let t = text.trim();
    if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_input!(
            "SQL file {}: looks like a key file: jobs never take keys (they belong to the gate); name a .sql file and keep keys outside the analysts' folders",
            p.display()
        ));
    }
    Ok(SqlText {
        origin: p.display().to_string(),
        text,
        builtin: false,
    })
}

/// An error met while running the SQL of `origin`, named after it. Failures of the
/// SQL itself (a cast or arithmetic that fails on the data) are the SQL's author's to
/// fix: bad input. Anything else (I/O, memory, a damaged input) keeps its kind.
/// No message shows a value of the data: the SQL's faults lose what they quote, and
/// every other error any run of hexadecimal digits (regression: a regular expression
/// built from pseudo_ids printed one, and went to a schedule's state file, exit 1).
pub fn run_time_error(origin: &str, e: crate::error::Error) -> crate::error::Error {
    if !e.source.as_deref().is_some_and(is_sql_fault) {
        let message = without_hex_runs(&e.message);
        return crate::error::Error { message, ..e }.context(format!("while running {origin}"));
    }
    // A pattern that does not compile is shown whole, and may be made of data.
    // `regexp_replace` wraps regex's error; `regexp_like`, `~`, `regexp_match`,
    // `regexp_count` and `regexp_instr` say it in their own words (code review of
    // 2026-12-07: a pseudo_id's first 12 digits shown through `regexp_like`).
    let regex = ["Regular expression did not compile", "regex parse error"];
    let what = if e.source.as_deref().is_some_and(in_chain::<regex::Error>)
        || regex.iter().any(|r| e.message.contains(r))
    {
        "a regular expression does not compile; its pattern is not shown, as it may hold values"
            .to_string()
    } else {
        without_values(e.message.trim())
    };
    let mut bad = crate::bad_input!(
        "{origin}: failed while running ({what}); fix the SQL (e.g. a cast that some values do not fit: try_cast gives NULL instead)"
    );
    bad.source = e.source;
    bad
}

/// Whether an error of type `T` is in `e`'s chain of sources.
fn in_chain<T: std::error::Error + 'static>(
    e: &(dyn std::error::Error + Send + Sync + 'static),
) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if x.downcast_ref::<T>().is_some() {
            return true;
        }
        cur = x.source();
    }
    false
}

/// `message` with each word that holds a run of 16 or more hexadecimal digits (a
/// pseudo_id, a key) as `…`; the rest kept, for the SQL's author to act on.
fn without_hex_runs(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    for c in message.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        out.push_str(if hex_run(&word) >= 16 { "…" } else { &word });
        word.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The longest run of hexadecimal digits in `word`.
fn hex_run(word: &str) -> usize {
    word.chars()
        .fold((0, 0), |(run, best), c| {
            let run = if c.is_ascii_hexdigit() { run + 1 } else { 0 };
            (run, best.max(run))
        })
        .1
}

/// `message` with what it quotes left out, and any word holding a run of 16 or more
/// hexadecimal digits: the engine quotes the value that failed, which can be a
/// pseudo_id, and the message reaches stderr and a schedule's state file (regression,
/// review of 2026-12-07). Fails closed: after a lone quote (an apostrophe, "can't"),
/// the rest of the message is left out.
fn without_values(message: &str) -> String {
    // An odd number of either quote: pairs cannot be trusted from the first one on.
    let odd = |q: char| message.matches(q).count() % 2 == 1;
    let message = match message.find(['\'', '"']) {
        Some(i) if odd('\'') || odd('"') => &message[..=i],
        _ => message,
    };
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(if hex_run(word) >= 16 { "…" } else { word });
        word.clear();
    };
    for c in message.chars() {
        match quote {
            Some(q) if c == q => {
                out.push_str("…");
                out.push(c);
                quote = None;
            }
            Some(_) => {}
            None if c == '\'' || c == '"' => {
                flush(&mut word, &mut out);
                out.push(c);
                quote = Some(c);
            }
            None if c.is_alphanumeric() || c == '_' => word.push(c),
            None => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    match quote {
        Some(_) => out.push('…'),
        None => flush(&mut word, &mut out),
    }
    out
}

/// Whether an execution error comes from evaluating the SQL's expressions on the data
/// (not from reading or resources), by the error types in its chain.
fn is_sql_fault(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    use datafusion::arrow::error::ArrowError as A;
    use datafusion::error::DataFusionError as D;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut fault = false;
    while let Some(x) = cur {
        if crate::damage::is_decode_error(x) {
            return false;
        }
        if let Some(a) = x.downcast_ref::<A>() {
            fault |= matches!(
                a,
                A::CastError(_)
                    | A::ComputeError(_)
                    | A::ArithmeticOverflow(_)
                    | A::DivideByZero
                    | A::InvalidArgumentError(_)
                    | A::ParseError(_)
            );
        }
        fault |= x.downcast_ref::<regex::Error>().is_some();
        if let Some(d) = x.downcast_ref::<D>() {
            match d {
                D::IoError(_) | D::ResourcesExhausted(_) => return false,
                D::Execution(_) | D::Plan(_) | D::NotImplemented(_) => fault = true,
                _ => {}
            }
        }
        cur = x.source();
    }
    fault
}

/// The dates a run's SQL may refer to, bound as named parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// `$as_of`: the date `A` (or `T0` when computing training features).
    pub as_of: NaiveDate,
    /// Feedback of declined or not appropriate keeps people out of cohorts this long.
    pub feedback_months: u32,
}

impl Params {
    pub fn at(as_of: NaiveDate) -> Self {
        Self {
            as_of,
            feedback_months: 12,
        }
    }

    pub fn values(&self) -> Vec<(&'static str, ScalarValue)> {
        let d = |n: NaiveDate| ScalarValue::Date32(Some(date32(n)));
        let a = self.as_of;
        vec![
            ("as_of", d(a)),
            ("w12_start", d(a - Days::new(365))),
            ("w24_start", d(a - Days::new(730))),
            ("next12_end", d(a + Days::new(365))),
            (
                "feedback_since",
                d(
                    // Further back than any date: every outcome counts (not none).
                    a.checked_sub_months(chrono::Months::new(self.feedback_months))
                        .unwrap_or(NaiveDate::MIN),
                ),
            ),
            (
                "as_of_year",
                ScalarValue::Int32(Some(chrono::Datelike::year(&a))),
            ),
        ]
    }
}

pub fn date32(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
}

pub fn from_date32(days: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days as i64)
}

/// Plan one SQL query with the run's parameters bound. Only parameters the text uses
/// are bound, so a file may use any subset.
pub async fn query(ctx: &SessionContext, sql: &SqlText, params: &Params) -> Result<DataFrame> {
    query_with(ctx, sql, params, Vec::new()).await
}

/// [`query`] with more named parameters than [`Params`] gives (`$feature_dates`).
pub async fn query_with(
    ctx: &SessionContext,
    sql: &SqlText,
    params: &Params,
    more: Vec<(&'static str, ScalarValue)>,
) -> Result<DataFrame> {
    let df = ctx.sql(&sql.text).await.map_err(|e| {
        bad_input!("{}: {}", sql.origin, without_hex_runs(&e.to_string())).with_source(e)
    })?;
    let used: Vec<_> = params
        .values()
        .into_iter()
        .chain(more)
        .filter(|(name, _)| uses_param(&sql.text, name))
        .collect();
    if used.is_empty() {
        return Ok(df);
    }
    df.with_param_values(used).map_err(|e| {
        bad_input!("{}: {}", sql.origin, without_hex_runs(&e.to_string())).with_source(e)
    })
}

/// The type a column of a query's result must have, for [`check_columns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Utf8, LargeUtf8 or Utf8View.
    Text,
    /// Any integer type.
    Integer,
    /// Any numeric type.
    Number,
    /// Date32, Date64 or a timestamp.
    Date,
    /// A list of dates.
    DateList,
    /// A list of numbers.
    NumberList,
    /// A contract column's type, or one of its safe casts.
    Contract(crate::ingest::contract::ColType),
}

impl Kind {
    pub fn accepts(self, t: &DataType) -> bool {
        let item = || match t {
            DataType::List(f) => Some(f.data_type().clone()),
            _ => None,
        };
        match self {
            Kind::Text => matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View),
            Kind::Integer => t.is_integer(),
            Kind::Number => t.is_numeric(),
            Kind::Date => matches!(
                t,
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
            ),
            Kind::DateList => item().is_some_and(|i| Kind::Date.accepts(&i)),
            Kind::NumberList => item().is_some_and(|i| Kind::Number.accepts(&i)),
            Kind::Contract(c) => c.accepts(t),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text (Utf8)",
            Kind::Integer => "an integer",
            Kind::Number => "a number",
            Kind::Date => "a date",
            Kind::DateList => "a list of dates",
            Kind::NumberList => "a list of numbers",
            Kind::Contract(c) => c.name(),
        }
    }
}

/// Refuse a query whose result lacks one of `columns` or has one of another type, as
/// bad input naming its SQL file (`origin`): read as it is, such a column would fail
/// far from its cause, or be misread. Checks the plan's schema only: nothing runs.
/// A built-in (or overridden) SQL file planned with `params` and checked against the
/// columns it must return, with its origin for errors.
pub async fn planned(
    ctx: &SessionContext,
    sql: &SqlSource,
    params: &Params,
    path: &str,
    columns: &[(&str, Kind)],
) -> Result<(DataFrame, String)> {
    let text = sql.get(path)?;
    let df = query(ctx, &text, params).await?;
    check_columns(&df, &text.origin, columns)?;
    Ok((df, text.origin))
}

pub fn check_columns(df: &DataFrame, origin: &str, columns: &[(&str, Kind)]) -> Result<()> {
    let schema = df.schema();
    for (name, kind) in columns {
        let Ok(field) = schema.field_with_unqualified_name(name) else {
            return Err(bad_input!("{origin}: must return column '{name}'"));
        };
        if !kind.accepts(field.data_type()) {
            return Err(bad_input!(
                "{origin}: column '{name}' must be {}, not {}",
                kind.name(),
                field.data_type()
            ));
        }
    }
    Ok(())
}

fn uses_param(text: &str, name: &str) -> bool {
    let needle = format!("${name}");
    text.match_indices(&needle).any(|(i, _)| {
        !text[i + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_embedded() {
        assert!(builtin("outcome.sql").unwrap().contains("$as_of"));
        assert_eq!(builtin_cohorts(), vec!["complex_needs", "high_cost"]);
    }

    #[test]
    fn columns_of_the_wrong_type_or_missing_are_bad_input_naming_the_file() {
        use crate::ingest::contract::ColType;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        let df = rt
            .block_on(ctx.sql(
                "SELECT CAST(1 AS BIGINT) AS pseudo_id, 'x' AS sex, DATE '2026-01-01' AS d, \
                 make_array(1.5) AS l",
            ))
            .unwrap();
        let check = |cols: &[(&str, Kind)]| check_columns(&df, "my.sql", cols);
        assert!(
            check(&[
                ("sex", Kind::Text),
                ("d", Kind::Date),
                ("l", Kind::NumberList)
            ])
            .is_ok()
        );
        assert!(check(&[("pseudo_id", Kind::Integer), ("pseudo_id", Kind::Number)]).is_ok());
        assert!(check(&[("sex", Kind::Contract(ColType::Utf8))]).is_ok());
        for (col, kind, says) in [
            (
                "pseudo_id",
                Kind::Text,
                "column 'pseudo_id' must be text (Utf8), not Int64",
            ),
            (
                "pseudo_id",
                Kind::Contract(ColType::Utf8),
                "must be Utf8, not Int64",
            ),
            ("sex", Kind::Number, "column 'sex' must be a number"),
            ("d", Kind::Integer, "column 'd' must be an integer"),
            ("l", Kind::DateList, "column 'l' must be a list of dates"),
            ("sex", Kind::Date, "column 'sex' must be a date"),
            ("gone", Kind::Text, "must return column 'gone'"),
        ] {
            let e = check(&[(col, kind)]).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.message.starts_with("my.sql: ") && e.message.contains(says),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn a_query_that_does_not_plan_keeps_the_datafusion_error_as_its_source() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let text = SqlText {
            origin: "my.sql".into(),
            text: "SELECT nope FROM nowhere".into(),
            builtin: false,
        };
        let e = rt
            .block_on(query(
                &SessionContext::new(),
                &text,
                &Params::at(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()),
            ))
            .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.starts_with("my.sql: "), "{}", e.message);
        assert!(e.datafusion().is_some(), "the source is kept");
    }

    #[test]
    fn param_names_match_whole_words() {
        assert!(uses_param("x >= $w12_start AND y", "w12_start"));
        assert!(!uses_param("x >= $as_of_year", "as_of"));
        assert!(uses_param("x < $as_of)", "as_of"));
    }

    #[test]
    fn run_time_errors_of_the_sql_are_bad_input_naming_the_file() {
        use datafusion::arrow::error::ArrowError;
        use datafusion::error::DataFusionError;
        let cast = DataFusionError::ArrowError(
            Box::new(ArrowError::CastError("Cannot cast string 'F'".into())),
            None,
        )
        .context("while writing");
        let e = run_time_error("my_cohort.sql", cast.into());
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.starts_with("my_cohort.sql: "), "{}", e.message);
        assert!(
            e.message.contains("Cannot cast string '…'"),
            "{}",
            e.message
        );
        assert_eq!(without_values("a 'x' b \"y\" c"), "a '…' b \"…\" c");
        // A lone quote hides the rest; a pseudo_id outside quotes is hidden too.
        assert_eq!(without_values("can't cast 'x' to Int32"), "can'…");
        let id = "99944570d50846cdc0f2d3a8b10ffd00";
        assert_eq!(
            without_values(&format!("bad value {id} here")),
            "bad value … here"
        );
        assert_eq!(without_values("Int32 overflow"), "Int32 overflow");
        // Planning errors keep their quotes (field names), not secrets.
        let key = "d84d7920".repeat(8);
        assert_eq!(
            without_hex_runs(&format!(
                "Expected: an SQL statement, found: {key} at Line: 1"
            )),
            "Expected: an SQL statement, found: … at Line: 1"
        );
        assert_eq!(
            without_hex_runs("No field named \"gp_appts\"."),
            "No field named \"gp_appts\"."
        );
        assert!(e.datafusion().is_some(), "the source is kept");
        // Not the SQL's fault: the kind is kept, the file still named.
        let io = DataFusionError::IoError(std::io::Error::other("disk full"));
        let e = run_time_error("my_cohort.sql", io.into());
        assert_eq!(e.exit_code(), 1);
        assert!(e.message.contains("my_cohort.sql"), "{}", e.message);
        let decode = DataFusionError::ParquetError(Box::new(
            datafusion::parquet::errors::ParquetError::General("bad page".into()),
        ));
        assert_eq!(run_time_error("x.sql", decode.into()).exit_code(), 1);
        // Regression: a pattern made of a pseudo_id was printed whole, exit 1.
        let pattern = format!("({}", &id[..12]);
        let regex = regex::Regex::new(&pattern).unwrap_err();
        let e = run_time_error("f.sql", DataFusionError::External(Box::new(regex)).into());
        assert_eq!(e.exit_code(), 2, "{}", e.message);
        assert!(!e.message.contains(&id[..12]), "{}", e.message);
        assert!(
            e.message
                .contains("f.sql: failed while running (a regular expression does not compile"),
            "{}",
            e.message
        );
        // The other functions' words for it.
        for message in [
            format!(
                "Regular expression did not compile: Syntax(\nregex parse error:\n    ({}\n",
                &id[..12]
            ),
            format!("Regular expression did not compile: ({}", &id[..12]),
        ] {
            let arrow = datafusion::arrow::error::ArrowError::ComputeError(message);
            let e = run_time_error(
                "f.sql",
                DataFusionError::ArrowError(Box::new(arrow), None).into(),
            );
            assert_eq!(e.exit_code(), 2, "{}", e.message);
            assert!(!e.message.contains(&id[..12]), "{}", e.message);
        }
        // Other errors lose their runs of hexadecimal digits.
        let other = DataFusionError::IoError(std::io::Error::other(format!("at {id}")));
        let e = run_time_error("f.sql", other.into());
        assert!(
            !e.message.contains(id) && e.message.contains("at …"),
            "{}",
            e.message
        );
    }

    #[test]
    fn window_dates() {
        let p = Params::at(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap());
        let v = p.values();
        let get = |n: &str| v.iter().find(|(k, _)| *k == n).unwrap().1.clone();
        assert_eq!(
            get("w12_start"),
            ScalarValue::Date32(Some(date32(NaiveDate::from_ymd_opt(2025, 4, 1).unwrap())))
        );
        assert_eq!(
            get("w24_start"),
            ScalarValue::Date32(Some(date32(NaiveDate::from_ymd_opt(2024, 4, 1).unwrap())))
        );
        // Regression: months further back than any date gave an empty window (no
        // outcome excluded anyone); now every outcome counts.
        let forever = Params {
            feedback_months: 4_000_000_000,
            ..p
        };
        let since = forever
            .values()
            .into_iter()
            .find(|(k, _)| *k == "feedback_since");
        assert_eq!(
            since.unwrap().1,
            ScalarValue::Date32(Some(date32(NaiveDate::MIN)))
        );
    }
}

//! Disclosure control under attack: a table of queries that try to get at people or
//! small numbers (each must be refused, naming the rule, or come back suppressed and
//! rounded), a property test over random data and random allowed queries, and the
//! `query` command's formats.

mod common;

use common::*;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use riskstrat::governance::disclosure_control::{Output, Policy};
use riskstrat::serve::{Answer, Commissioner};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One synthetic run shared by the tests of this file.
fn run_dir() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = scratch("disclosure_run");
        let o = synth(&dir, 6000, 17);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = run_job(&dir.join("job.toml"));
        assert!(o.status.success(), "{}", stderr(&o));
        PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap())
    })
}

enum Expect {
    /// Refused; the message names this rule (or, for `""`, any refusal).
    Refused(&'static str),
    /// Answered, and every value passes `assert_protected`.
    Protected,
}
use Expect::*;

/// Every count is 0, null or a multiple of 5 of at least the threshold; statistics
/// are null in rows whose counts are suppressed.
fn assert_protected(name: &str, a: &Answer) {
    for b in &a.batches {
        for (i, o) in a.outputs.iter().enumerate() {
            if *o == Output::Count {
                let c = b.column(i).as_any().downcast_ref::<Int64Array>().unwrap();
                for v in c.iter().flatten() {
                    assert!(
                        v == 0 || (v >= 10 && v % 5 == 0),
                        "{name}: count {v} released"
                    );
                }
            }
        }
    }
}

const CASES: &[(&str, &str, Expect)] = &[
    // Rows of people.
    ("select_star", "SELECT * FROM people", Refused("aggregate")),
    (
        "one_column",
        "SELECT risk FROM people",
        Refused("aggregate"),
    ),
    (
        "top_1",
        "SELECT risk FROM people ORDER BY risk DESC LIMIT 1",
        Refused("aggregate"),
    ),
    (
        "distinct_rows",
        "SELECT DISTINCT lsoa_code, age_band FROM people",
        Refused(""),
    ),
    (
        "cte_rows",
        "WITH x AS (SELECT risk, age FROM people) SELECT * FROM x",
        Refused("aggregate"),
    ),
    (
        "cohort_rows",
        "SELECT * FROM cohort_people WHERE cohort = 'complex_needs'",
        Refused("aggregate"),
    ),
    // Aggregates that show individuals.
    ("min", "SELECT min(risk) FROM people", Refused("aggregate")),
    (
        "max",
        "SELECT practice_code, max(age) FROM people GROUP BY practice_code",
        Refused("aggregate"),
    ),
    (
        "median",
        "SELECT median(risk) FROM people",
        Refused("aggregate"),
    ),
    (
        "percentile",
        "SELECT approx_percentile_cont(risk, 0.99) FROM people",
        Refused(""),
    ),
    (
        "array_agg",
        "SELECT array_agg(lsoa_code) FROM people",
        Refused("aggregate"),
    ),
    (
        "string_agg",
        "SELECT string_agg(lsoa_code, ',') FROM people",
        Refused("aggregate"),
    ),
    (
        "first_value",
        "SELECT first_value(risk ORDER BY risk) FROM people",
        Refused("aggregate"),
    ),
    (
        "count_distinct",
        "SELECT count(DISTINCT lsoa_code) FROM people",
        Refused("aggregate"),
    ),
    (
        "filter_clause",
        "SELECT count(*) FILTER (WHERE age > 100) FROM people",
        Refused("aggregate"),
    ),
    (
        "stddev",
        "SELECT stddev(risk) FROM people",
        Refused("aggregate"),
    ),
    // Identifiers and near-unique keys.
    (
        "where_pseudo_id",
        "SELECT count(*) FROM people WHERE pseudo_id = '0123456789abcdef0123456789abcdef'",
        Refused(""),
    ),
    (
        "group_pseudo_id",
        "SELECT pseudo_id, count(*) FROM people GROUP BY pseudo_id",
        Refused(""),
    ),
    (
        "group_by_risk",
        "SELECT risk, count(*) FROM people GROUP BY risk",
        Refused("group"),
    ),
    (
        "group_by_exact_age",
        "SELECT age, count(*) FROM people GROUP BY age",
        Refused("group"),
    ),
    (
        "group_by_expression",
        "SELECT round(risk, 6), count(*) FROM people GROUP BY round(risk, 6)",
        Refused("group"),
    ),
    (
        "group_by_cast",
        "SELECT CAST(risk AS VARCHAR), count(*) FROM people GROUP BY CAST(risk AS VARCHAR)",
        Refused("group"),
    ),
    (
        "group_by_date",
        "SELECT to_date('2026-01-01'), count(*) FROM people GROUP BY to_date('2026-01-01')",
        Refused("group"),
    ),
    (
        "rollup",
        "SELECT practice_code, sex, count(*) FROM people GROUP BY ROLLUP(practice_code, sex)",
        Refused("group"),
    ),
    // Singling out groups.
    (
        "having_1",
        "SELECT lsoa_code, count(*) FROM people GROUP BY lsoa_code HAVING count(*) = 1",
        Refused("having"),
    ),
    (
        "having_small",
        "SELECT lsoa_code, avg(risk) FROM people GROUP BY lsoa_code HAVING count(*) < 3",
        Refused("having"),
    ),
    (
        "limit_then_avg",
        "SELECT avg(risk) FROM (SELECT risk FROM people ORDER BY risk DESC LIMIT 1)",
        Refused("limit"),
    ),
    (
        "cte_limit_then_sum",
        "WITH top AS (SELECT risk FROM people ORDER BY risk DESC LIMIT 3) SELECT sum(risk) FROM top",
        Refused("limit"),
    ),
    (
        "case_else_zero",
        "SELECT sum(x) FROM (SELECT CASE WHEN age > 99 THEN risk ELSE 0 END AS x FROM people)",
        Refused("derived"),
    ),
    (
        "renamed_column",
        "SELECT sum(x) FROM (SELECT risk AS x FROM people)",
        Refused("derived"),
    ),
    (
        "sum_of_expression",
        "SELECT sum(risk * 1000) FROM people",
        Refused("aggregate"),
    ),
    (
        "avg_of_case",
        "SELECT avg(CASE WHEN age > 99 THEN risk END) FROM people",
        Refused("aggregate"),
    ),
    ("sum_of_string", "SELECT sum(tier) FROM people", Refused("")),
    // Arithmetic and casts on released numbers.
    (
        "cast_count_text",
        "SELECT CAST(count(*) AS VARCHAR) FROM people",
        Refused("output"),
    ),
    (
        "count_plus_fraction",
        "SELECT count(*) + 0.4 FROM people",
        Refused("output"),
    ),
    (
        "count_times_one",
        "SELECT sex, count(*) * 1 AS n FROM people GROUP BY sex",
        Refused("output"),
    ),
    (
        "ratio_of_aggregates",
        "SELECT sum(risk) / count(*) FROM people",
        Refused("output"),
    ),
    (
        "order_by_expression",
        "SELECT sex, count(*) FROM people GROUP BY sex ORDER BY count(*) % 5",
        Refused(""),
    ),
    // Combining and joining.
    (
        "union",
        "SELECT count(*) FROM people UNION ALL SELECT count(*) FROM people WHERE age > 100",
        Refused("union"),
    ),
    (
        "self_join",
        "SELECT count(*) FROM people a JOIN people b ON a.lsoa_code = b.lsoa_code",
        Refused("join"),
    ),
    (
        "join_person_table",
        "SELECT count(*) FROM people p JOIN features f ON p.lsoa_code = f.lsoa_code",
        Refused(""),
    ),
    (
        "cross_join_views",
        "SELECT count(*) FROM people, cohort_summary",
        Refused("join"),
    ),
    (
        "scalar_subquery",
        "SELECT count(*) FROM people WHERE risk = (SELECT avg(risk) FROM people)",
        Refused("subquery"),
    ),
    (
        "in_subquery",
        "SELECT count(*) FROM people WHERE lsoa_code IN (SELECT lsoa_code FROM cohort_people)",
        Refused("subquery"),
    ),
    (
        "exists",
        "SELECT count(*) FROM people p WHERE EXISTS (SELECT 1 FROM cohort_people c WHERE c.lsoa_code = p.lsoa_code)",
        Refused("subquery"),
    ),
    (
        "window_count",
        "SELECT practice_code, count(*) OVER () FROM people",
        Refused("window"),
    ),
    (
        "row_number",
        "SELECT row_number() OVER (ORDER BY risk) FROM people",
        Refused("window"),
    ),
    (
        "nested_aggregate",
        "SELECT avg(n) FROM (SELECT practice_code, count(*) AS n FROM people GROUP BY practice_code)",
        Refused(""),
    ),
    // Pre-aggregated views.
    (
        "summary_where_people_1",
        "SELECT * FROM cohort_summary WHERE people = 1",
        Refused("filter"),
    ),
    (
        "summary_where_mean_risk",
        "SELECT * FROM cohort_summary WHERE mean_risk > 0.5",
        Refused("filter"),
    ),
    (
        "summary_reaggregated",
        "SELECT practice_code, sum(people) FROM cohort_summary GROUP BY practice_code",
        Refused("aggregate"),
    ),
    (
        "summary_arithmetic",
        "SELECT people * 2 FROM cohort_summary",
        Refused("output"),
    ),
    // Statements, files and other sources.
    (
        "create_table",
        "CREATE TABLE x AS SELECT * FROM people",
        Refused("select"),
    ),
    (
        "create_view",
        "CREATE VIEW v AS SELECT risk FROM people",
        Refused("select"),
    ),
    (
        "copy_out",
        "COPY (SELECT * FROM people) TO '/tmp/riskstrat-leak.csv'",
        Refused(""),
    ),
    ("insert", "INSERT INTO people VALUES (1)", Refused("")),
    (
        "set",
        "SET datafusion.execution.batch_size = 1",
        Refused("select"),
    ),
    ("explain", "EXPLAIN SELECT risk FROM people", Refused("")),
    (
        "two_statements",
        "SELECT count(*) FROM people; SELECT risk FROM people",
        Refused(""),
    ),
    (
        "values",
        "SELECT count(*) FROM (VALUES (1), (2)) AS t(x)",
        Refused(""),
    ),
    (
        "information_schema",
        "SELECT * FROM information_schema.tables",
        Refused(""),
    ),
    (
        "url_table",
        "SELECT count(*) FROM '/etc/passwd'",
        Refused(""),
    ),
    (
        "generate_series",
        "SELECT count(*) FROM generate_series(1, 10)",
        Refused(""),
    ),
    // Allowed, but only ever suppressed and rounded.
    (
        "narrow_count",
        "SELECT count(*) FROM people WHERE age_band = '85+' AND sex = 'U'",
        Protected,
    ),
    (
        "narrow_avg",
        "SELECT count(*), avg(risk), sum(total_cost_12m) FROM people WHERE age > 100",
        Protected,
    ),
    (
        "fine_groups",
        "SELECT lsoa_code, sex, age_band, count(*), avg(risk), sum(emergency_admissions_12m) FROM people GROUP BY lsoa_code, sex, age_band",
        Protected,
    ),
    (
        "count_column",
        "SELECT practice_code, count(imd_decile) FROM people GROUP BY practice_code",
        Protected,
    ),
    (
        "differencing_a",
        "SELECT count(*), sum(risk), avg(age) FROM people",
        Protected,
    ),
    (
        "differencing_b",
        "SELECT count(*), sum(risk), avg(age) FROM people WHERE NOT (age_band = '85+' AND sex = 'U')",
        Protected,
    ),
    (
        "narrow_filter_on_measures",
        "SELECT tier, count(*) FROM people WHERE risk > 0.6 AND age > 90 GROUP BY tier",
        Protected,
    ),
    (
        "order_limit_groups",
        "SELECT lsoa_code, count(*) AS n FROM people GROUP BY lsoa_code ORDER BY n LIMIT 1",
        Protected,
    ),
    ("summary_rows", "SELECT * FROM cohort_summary", Protected),
    (
        "summary_filtered",
        "SELECT practice_code, people, mean_risk FROM cohort_summary WHERE sex = 'F' ORDER BY people LIMIT 3",
        Protected,
    ),
    (
        "cohort_counts",
        "SELECT cohort, imd_quintile, count(*), avg(risk) FROM cohort_people GROUP BY cohort, imd_quintile",
        Protected,
    ),
];

#[test]
fn adversarial_queries_are_refused_or_protected() {
    assert!(CASES.len() >= 40);
    let rt = rt();
    let c = rt
        .block_on(Commissioner::open(
            &[run_dir().to_path_buf()],
            Policy::default(),
        ))
        .unwrap();
    let mut failures = Vec::new();
    for (name, sql, expect) in CASES {
        let got = rt.block_on(c.query(sql));
        match (expect, got) {
            (Refused(rule), Err(e)) => {
                if e.exit_code() != 2
                    || !e.message.contains(&format!("[{rule}")) && !rule.is_empty()
                {
                    failures.push(format!(
                        "{name}: refused, but not by rule {rule}: {}",
                        e.message
                    ));
                }
            }
            (Refused(_), Ok(a)) => failures.push(format!("{name}: answered {} rows", a.rows)),
            (Protected, Ok(a)) => assert_protected(name, &a),
            (Protected, Err(e)) => failures.push(format!("{name}: refused: {}", e.message)),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Differencing two large groups that differ by a few people gives nothing exact:
/// counts differ by a multiple of 5 and sums are to 3 significant figures.
#[test]
fn differencing_two_groups_reveals_no_individual() {
    let rt = rt();
    let c = rt
        .block_on(Commissioner::open(
            &[run_dir().to_path_buf()],
            Policy::default(),
        ))
        .unwrap();
    let one = |sql: &str| {
        let a = rt.block_on(c.query(sql)).unwrap();
        let b = &a.batches[0];
        let n = b
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        let s = b
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0);
        (n, s)
    };
    let (n1, s1) = one("SELECT count(*), sum(risk) FROM people");
    let (n2, s2) = one(
        "SELECT count(*), sum(risk) FROM people WHERE NOT (age_band = '85+' AND tier = 'very_high')",
    );
    assert_eq!((n1 - n2) % 5, 0);
    for s in [s1, s2] {
        let digits = format!("{:e}", s);
        let mantissa = digits.split('e').next().unwrap().replace(['.', '-'], "");
        assert!(
            mantissa.len() <= 3,
            "{s} has more than 3 significant figures"
        );
    }
}

// --- property test ---

/// A small random run folder: people with random dimensions, risks and counts.
fn random_run(dir: &Path, seed: u64, template: &Path) -> usize {
    use datafusion::arrow::array::{ArrayRef, Int32Array, StringArray};
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(0..400usize);
    let pick = |rng: &mut rand_chacha::ChaCha8Rng, xs: &[&str]| {
        xs[rng.random_range(0..xs.len())].to_string()
    };
    let ids: Vec<String> = (0..n)
        .map(|i| format!("{:032x}", seed as u128 * 1_000_000 + i as u128))
        .collect();
    let col = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let practices: Vec<String> = (0..n)
        .map(|_| pick(&mut rng, &["A1", "A2", "A3"]))
        .collect();
    let lsoas: Vec<String> = (0..n)
        .map(|_| format!("E0{}", rng.random_range(0..12)))
        .collect();
    let sexes: Vec<String> = (0..n).map(|_| pick(&mut rng, &["F", "M", "U"])).collect();
    let imd: Vec<Option<i32>> = (0..n)
        .map(|_| (rng.random_range(0..10) > 0).then(|| rng.random_range(1..=10)))
        .collect();
    let age: Vec<i64> = (0..n).map(|_| rng.random_range(0..100)).collect();
    let adm: Vec<i64> = (0..n).map(|_| rng.random_range(0..4)).collect();
    let cost: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..5000.0)).collect();
    let risk: Vec<f64> = (0..n).map(|_| rng.random_range(0.0..1.0)).collect();
    let tiers: Vec<String> = risk
        .iter()
        .map(|r| if *r > 0.9 { "high" } else { "low" }.to_string())
        .collect();
    let features = RecordBatch::try_from_iter(vec![
        ("pseudo_id", col(ids.clone())),
        ("age", Arc::new(Int64Array::from(age)) as ArrayRef),
        ("sex", col(sexes)),
        ("imd_decile", Arc::new(Int32Array::from(imd)) as ArrayRef),
        ("practice_code", col(practices)),
        ("lsoa_code", col(lsoas)),
        (
            "emergency_admissions_12m",
            Arc::new(Int64Array::from(adm)) as ArrayRef,
        ),
        (
            "total_cost_12m",
            Arc::new(Float64Array::from(cost)) as ArrayRef,
        ),
    ])
    .unwrap();
    let scores = RecordBatch::try_from_iter(vec![
        ("pseudo_id", col(ids.clone())),
        ("risk", Arc::new(Float64Array::from(risk)) as ArrayRef),
        ("tier", col(tiers)),
    ])
    .unwrap();
    let members: Vec<String> = ids
        .iter()
        .filter(|_| rng.random_bool(0.3))
        .cloned()
        .collect();
    let cohort = RecordBatch::try_from_iter(vec![("pseudo_id", col(members))]).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for (file, b) in [
        ("features.parquet", &features),
        ("scores.parquet", &scores),
        ("cohort_complex_needs.parquet", &cohort),
    ] {
        riskstrat::outputs::write_batch(&dir.join(file), b).unwrap();
    }
    std::fs::copy(template.join("manifest.json"), dir.join("manifest.json")).unwrap();
    n
}

/// A random allowed query: a few dimensions, filters and aggregates.
fn random_query(rng: &mut rand_chacha::ChaCha8Rng) -> String {
    use rand::Rng;
    use rand::seq::IndexedRandom;
    let view = *["people", "cohort_people"].choose(rng).unwrap();
    let dims = [
        "practice_code",
        "lsoa_code",
        "sex",
        "imd_decile",
        "imd_quintile",
        "age_band",
        "tier",
    ];
    let k = rng.random_range(0..=3);
    let group: Vec<&str> = dims.choose_multiple(rng, k).cloned().collect();
    let mut aggs = vec!["count(*)".to_string()];
    let na = rng.random_range(1..=3);
    aggs.extend(
        [
            "count(imd_decile)",
            "sum(emergency_admissions_12m)",
            "avg(risk)",
            "sum(total_cost_12m)",
            "avg(age)",
        ]
        .choose_multiple(rng, na)
        .map(|a| a.to_string()),
    );
    let filters = [
        "age > 80",
        "age < 30",
        "sex = 'U'",
        "risk > 0.95",
        "practice_code = 'A2'",
        "imd_decile = 3",
        "lsoa_code = 'E07'",
    ];
    let nf = rng.random_range(0..=2);
    let wheres: Vec<&str> = filters.choose_multiple(rng, nf).cloned().collect();
    let mut sql = format!(
        "SELECT {} FROM {view}",
        group
            .iter()
            .map(|g| g.to_string())
            .chain(aggs)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !wheres.is_empty() {
        sql.push_str(&format!(" WHERE {}", wheres.join(" AND ")));
    }
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    sql
}

/// For random data and random allowed queries: no count lies in 1-7, every count is
/// a multiple of 5 and is the true count rounded, and a group of 1-7 people releases
/// nothing but its keys.
#[test]
fn property_no_small_numbers_for_random_queries_on_random_data() {
    use rand::SeedableRng;
    let rt = rt();
    let policy = Policy::default();
    let mut checked_rows = 0;
    let mut small_groups = 0;
    for seed in 0..12u64 {
        let dir = scratch(&format!("disclosure_random_{seed}"));
        random_run(&dir, seed, run_dir());
        let c = rt
            .block_on(Commissioner::open(&[dir.clone()], policy))
            .unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + seed);
        for _ in 0..25 {
            let sql = random_query(&mut rng);
            let guarded = rt
                .block_on(c.plan(&sql))
                .unwrap_or_else(|e| panic!("{sql}: {}", e.message));
            let raw = rt
                .block_on(
                    datafusion::dataframe::DataFrame::new(
                        c.context().state(),
                        guarded.plan.clone(),
                    )
                    .collect(),
                )
                .unwrap();
            let answer = c.protect(&guarded, raw.clone()).unwrap();
            for (rb, pb) in raw.iter().zip(&answer.batches) {
                let people = datafusion::arrow::compute::cast(
                    rb.column(guarded.people),
                    &datafusion::arrow::datatypes::DataType::Int64,
                )
                .unwrap();
                let people = people.as_any().downcast_ref::<Int64Array>().unwrap();
                for r in 0..rb.num_rows() {
                    checked_rows += 1;
                    let n = people.value(r);
                    let small = (1..8).contains(&n);
                    small_groups += small as usize;
                    for (i, o) in guarded.outputs.iter().enumerate() {
                        let out = pb.column(i);
                        match o {
                            Output::Key => {}
                            _ if small => {
                                assert!(out.is_null(r), "{sql}: group of {n} released column {i}")
                            }
                            Output::Count => {
                                let v = out.as_any().downcast_ref::<Int64Array>().unwrap();
                                if v.is_valid(r) {
                                    let v = v.value(r);
                                    assert!(v == 0 || (v >= 10 && v % 5 == 0), "{sql}: count {v}");
                                    let truth = datafusion::arrow::compute::cast(
                                        rb.column(i),
                                        &datafusion::arrow::datatypes::DataType::Int64,
                                    )
                                    .unwrap();
                                    let t = truth
                                        .as_any()
                                        .downcast_ref::<Int64Array>()
                                        .unwrap()
                                        .value(r);
                                    assert!((v - t).abs() <= 2, "{sql}: {v} is not {t} rounded");
                                }
                            }
                            Output::Statistic { .. } => {}
                        }
                    }
                }
            }
        }
    }
    assert!(checked_rows > 500, "only {checked_rows} rows checked");
    assert!(small_groups > 50, "only {small_groups} small groups met");
}

// --- the command ---

#[test]
fn query_command_formats_and_refusals() {
    let run = run_dir();
    let q = |format: &str, sql: &str| {
        riskstrat()
            .args(["query", "--run"])
            .arg(run)
            .args(["--format", format, sql])
            .output()
            .unwrap()
    };
    let o = q(
        "json",
        "SELECT sex, lsoa_code, count(*) AS people, avg(risk) AS mean_risk FROM people GROUP BY sex, lsoa_code",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert!(rows.len() > 10);
    let mut suppressed = 0;
    for r in rows {
        assert!(r["sex"].is_string());
        match r["people"].as_i64() {
            Some(n) => {
                assert!(n >= 10 && n % 5 == 0, "{r}");
                assert!(r["mean_risk"].is_f64(), "{r}");
            }
            None => {
                // A small group: its row is there, its numbers are not.
                assert!(r["mean_risk"].is_null(), "{r}");
                suppressed += 1;
            }
        }
    }
    assert!(suppressed > 0, "no small group met");

    let o = q(
        "csv",
        "SELECT sex, lsoa_code, count(*) AS people FROM people WHERE sex = 'U' GROUP BY sex, lsoa_code",
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("sex,lsoa_code,people\nU,"), "{text}");
    assert!(text.contains("[REDACTED]"), "{text}");

    let o = q("table", "SELECT min(risk) FROM people");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("refused by disclosure control [aggregate]"),
        "{}",
        stderr(&o)
    );

    let o = riskstrat()
        .args(["query", "--run"])
        .arg(run)
        .args(["--key", "k", "SELECT count(*) FROM people"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("query never takes --key"));
}

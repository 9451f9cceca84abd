"""The features at A computed by DuckDB on the same Parquet files as riskstrat, for
scripts/bench.sh: the yardstick of issue 16 ("the feature work of both dates in at most
half the time DuckDB takes for the features at A alone").

    python bench_duckdb.py DATA_DIR AS_OF THREADS OUT.parquet [RISKSTRAT_FEATURES.parquet]

DATA_DIR is `riskstrat synth`'s output. The SQL below is sql/features/*.sql and
sql/population.sql written for DuckDB: the same windows, filters and reference lists
(data/reference/), with opted-out people removed as riskstrat's ingest does. Row rules
(quarantine) are not applied: synth's data keeps to them. Prints the seconds taken and,
given riskstrat's features.parquet of the same job, how many people's values agree.
"""
import datetime
import os
import sys
import time

import duckdb

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, "..", "data", "reference")
EMERGENCY = ["21", "22", "23", "24", "25", "2A", "2B", "2C", "2D", "28"]
ELECTIVE = ["11", "12", "13"]
COMPARED = [
    "gp_appts_12m", "other_appts_12m", "home_visits_12m", "dna_12m",
    "rx_items_12m", "distinct_drugs_12m", "ltc_groups_12m",
    "emergency_admissions_12m", "emergency_bed_days_12m", "elective_admissions_12m",
    "charlson_score",
]


def reader(data):
    """`table(name)`: DuckDB's reader of synth's table `name` (a file or a folder)."""
    def table(name):
        return f"read_parquet('{path(data, name)}')"

    return table


def path(data, name):
    """Synth's table `name`: a folder of files or one file."""
    folder = os.path.join(data, name)
    return f"{folder}/*.parquet" if os.path.isdir(folder) else f"{folder}.parquet"


def register_duckdb(con, data):
    """The tables `features_sql` reads, as DuckDB views over the files."""
    table = reader(data)
    for name in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {table(name)}")
    for name, (file, _) in REFERENCE_TABLES.items():
        con.execute(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM "
            f"read_csv('{REFERENCE}/{file}', all_varchar = true)"
        )


TABLES = ["patients", "optouts", "appointments", "prescriptions", "admissions"]
# The reference lists, read as text (a BNF prefix such as 0601 is not a number).
REFERENCE_TABLES = {
    "ltc": ("ltc_bnf_groups.csv", ["group", "bnf_prefix"]),
    "charlson_codes": (
        "charlson_quan2005_icd10.csv", ["condition", "description", "weight", "icd10_prefix"]
    ),
}


def features_sql(as_of):
    """The features at `as_of` over the tables of `register_duckdb`, in SQL that DuckDB
    and DataFusion both run (bench_datafusion.py): dates computed here, no `GROUP BY
    ALL`, no `::` casts, `unnest` in a subquery of its own."""
    emergency = ", ".join(f"'{c}'" for c in EMERGENCY)
    elective = ", ".join(f"'{c}'" for c in ELECTIVE)
    day = datetime.date.fromisoformat(str(as_of))
    a = f"DATE '{day}'"
    w12 = f"DATE '{day - datetime.timedelta(days=365)}'"
    w24 = f"DATE '{day - datetime.timedelta(days=730)}'"
    return f"""
WITH opted_out AS (SELECT DISTINCT pseudo_id FROM optouts),
kept AS (
  SELECT * FROM patients p WHERE p.pseudo_id NOT IN (SELECT pseudo_id FROM opted_out)
),
population AS (
  SELECT pseudo_id, year_of_birth, sex FROM kept
  WHERE registration_start <= {a}
    AND (registration_end IS NULL OR registration_end >= {a})
    AND (date_of_death IS NULL OR date_of_death >= {a})
),
appts AS (
  SELECT pseudo_id,
    count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'GP') AS gp_appts_12m,
    count(*) FILTER (WHERE appt_status = 'Attended' AND hcp_type = 'Other Practice staff') AS other_appts_12m,
    count(*) FILTER (WHERE appt_status = 'Attended' AND appt_mode = 'Home Visit') AS home_visits_12m,
    count(*) FILTER (WHERE appt_status = 'DNA') AS dna_12m
  FROM appointments
  WHERE appointment_date >= {w12} AND appointment_date < {a}
  GROUP BY pseudo_id
),
substances AS (
  SELECT pseudo_id, substr(bnf_code, 1, 9) AS substance, sum(items) AS items, sum(nic) AS nic
  FROM prescriptions
  WHERE issue_date >= {w12} AND issue_date < {a}
  GROUP BY pseudo_id, substr(bnf_code, 1, 9)
),
substance_groups AS (
  SELECT s.substance, l."group" AS ltc_group
  FROM (SELECT DISTINCT substance FROM substances) s
  LEFT JOIN ltc l ON starts_with(s.substance, l.bnf_prefix)
),
rx_groups AS (
  SELECT s.pseudo_id, g.ltc_group, sum(items) AS items, sum(nic) AS nic, count(*) AS substances
  FROM substances s JOIN substance_groups g ON g.substance = s.substance
  GROUP BY s.pseudo_id, g.ltc_group
),
rx AS (
  SELECT pseudo_id, sum(items) AS rx_items_12m, sum(nic) AS rx_cost_12m,
         sum(substances) AS distinct_drugs_12m, count(ltc_group) AS ltc_groups_12m
  FROM rx_groups GROUP BY pseudo_id
),
adm AS (
  SELECT pseudo_id,
    count(*) FILTER (WHERE admission_method IN ({emergency})) AS emergency_admissions_12m,
    sum(coalesce(discharge_date, {a}) - admission_date) FILTER (WHERE admission_method IN ({emergency})) AS emergency_bed_days_12m,
    count(*) FILTER (WHERE admission_method IN ({elective})) AS elective_admissions_12m,
    sum(spell_cost) AS admission_cost_12m
  FROM admissions
  WHERE admission_date >= {w12} AND admission_date < {a}
  GROUP BY pseudo_id
),
spells AS (
  SELECT pseudo_id, primary_diagnosis, secondary_diagnoses FROM admissions
  WHERE admission_date >= {w24} AND admission_date < {a}
),
codes AS (
  SELECT pseudo_id, upper(replace(primary_diagnosis, '.', '')) AS code FROM spells
  UNION ALL
  SELECT pseudo_id, upper(replace(secondary, '.', '')) AS code
  FROM (SELECT pseudo_id, unnest(secondary_diagnoses) AS secondary FROM spells) u
),
code_conditions AS (
  SELECT c.code, w.condition, CAST(w.weight AS INT) AS weight
  FROM (SELECT DISTINCT code FROM codes) c
  JOIN charlson_codes w ON starts_with(c.code, w.icd10_prefix)
),
conditions AS (
  SELECT DISTINCT c.pseudo_id, k.condition, k.weight
  FROM codes c JOIN code_conditions k ON k.code = c.code
),
hierarchy AS (
  SELECT 'msld' AS severe, 'mld' AS mild
  UNION ALL SELECT 'diabwc', 'diab'
  UNION ALL SELECT 'metacanc', 'canc'
),
charlson AS (
  SELECT c.pseudo_id, sum(CASE WHEN s.pseudo_id IS NULL THEN c.weight ELSE 0 END) AS charlson_score
  FROM conditions c
  LEFT JOIN hierarchy h ON h.mild = c.condition
  LEFT JOIN conditions s ON s.pseudo_id = c.pseudo_id AND s.condition = h.severe
  GROUP BY c.pseudo_id
)
SELECT p.pseudo_id, {day.year} - p.year_of_birth AS age, CAST(p.sex = 'F' AS INT) AS sex_female,
  coalesce(gp_appts_12m, 0) AS gp_appts_12m, coalesce(other_appts_12m, 0) AS other_appts_12m,
  coalesce(home_visits_12m, 0) AS home_visits_12m, coalesce(dna_12m, 0) AS dna_12m,
  coalesce(rx_items_12m, 0) AS rx_items_12m, coalesce(rx_cost_12m, 0) AS rx_cost_12m,
  coalesce(distinct_drugs_12m, 0) AS distinct_drugs_12m, coalesce(ltc_groups_12m, 0) AS ltc_groups_12m,
  coalesce(emergency_admissions_12m, 0) AS emergency_admissions_12m,
  coalesce(emergency_bed_days_12m, 0) AS emergency_bed_days_12m,
  coalesce(elective_admissions_12m, 0) AS elective_admissions_12m,
  coalesce(admission_cost_12m, 0) AS admission_cost_12m,
  coalesce(charlson_score, 0) AS charlson_score
FROM population p
LEFT JOIN appts ON appts.pseudo_id = p.pseudo_id
LEFT JOIN rx ON rx.pseudo_id = p.pseudo_id
LEFT JOIN adm ON adm.pseudo_id = p.pseudo_id
LEFT JOIN charlson ON charlson.pseudo_id = p.pseudo_id
"""


def scan_sql(data):
    """Every column the features read, decoded once, with as little else as possible:
    the floor under any engine's feature work on these files."""
    table = reader(data)
    return f"""
SELECT (SELECT sum(length(pseudo_id)) + sum(length(appt_status)) + sum(length(hcp_type))
               + sum(length(appt_mode)) + (max(appointment_date) - DATE '2000-01-01')
        FROM {table('appointments')}),
       (SELECT sum(length(pseudo_id)) + sum(length(bnf_code)) + sum(items) + sum(nic)
               + (max(issue_date) - DATE '2000-01-01')
        FROM {table('prescriptions')}),
       (SELECT sum(length(pseudo_id)) + sum(length(admission_method)) + sum(spell_cost)
               + sum(length(primary_diagnosis)) + sum(len(secondary_diagnoses))
               + (max(admission_date) - DATE '2000-01-01') + (max(discharge_date) - DATE '2000-01-01')
        FROM {table('admissions')})
"""


def timed(con, sql):
    start = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - start


def main(data, as_of, threads, out, riskstrat_features=None):
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    register_duckdb(con, data)
    start = time.perf_counter()
    con.execute(f"COPY ({features_sql(as_of)}) TO '{out}' (FORMAT parquet)")
    seconds = time.perf_counter() - start
    people = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    print(f"duckdb features at A: {seconds:.2f} s, {people} people, {threads} threads")
    # The same work as riskstrat's feature stage but for the row rules: both dates
    # (T0 = A - 365 days), written out, and the scan floor of the same files.
    t0 = datetime.date.fromisoformat(as_of) - datetime.timedelta(days=365)
    both_out = out.replace(".parquet", "-both.parquet")
    start = time.perf_counter()
    con.execute(
        f"COPY (SELECT DATE '{as_of}' AS as_of, * FROM ({features_sql(as_of)}) "
        f"UNION ALL SELECT DATE '{t0}', * FROM ({features_sql(t0)})) "
        f"TO '{both_out}' (FORMAT parquet)"
    )
    print(f"duckdb features at both dates: {time.perf_counter() - start:.2f} s")
    print(f"duckdb scan floor: {timed(con, scan_sql(data)):.2f} s (every column the features read, decoded once)")
    if riskstrat_features:
        checks = " AND ".join(f"d.{c} = r.{c}" for c in COMPARED)
        same, both = con.execute(
            f"""SELECT count(*) FILTER (WHERE {checks}), count(*)
                FROM read_parquet('{out}') d JOIN read_parquet('{riskstrat_features}') r USING (pseudo_id)"""
        ).fetchone()
        print(f"  agree with riskstrat on {same} of {both} people ({', '.join(COMPARED)})")


if __name__ == "__main__":
    main(*sys.argv[1:])

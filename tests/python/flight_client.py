"""A commissioner's client for `riskstrat serve`, written against the Flight SQL
standard with Apache Arrow's own ADBC driver (adbc-driver-flightsql), not riskstrat's
code. tests/serve.rs starts the server and runs this with a JSON file:

  {"uri": "grpc://127.0.0.1:PORT", "token": "...", "other_token": "...",
   "schema": "complex_needs", "aggregate": {"sql": "...", "rows": [{...}, ...]}}

where `aggregate.rows` is the answer the server's own in-process session gives.
Prints one `ok:` line per check; exits 1 at the first failure, saying what failed.
"""

import json
import sys
import warnings

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql

# The documented name of the option that sets the authorization header.
AUTH = adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
assert AUTH == "adbc.flight.sql.authorization_header", AUTH


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check(ok, message):
    if not ok:
        fail(message)
    print(f"ok: {message}")


def connect(uri, token):
    kwargs = {AUTH: f"Bearer {token}"} if token is not None else {}
    # autocommit: the service is read-only and has no transactions.
    return flightsql.connect(uri, db_kwargs=kwargs, autocommit=True)


def rows(cursor, sql):
    cursor.execute(sql)
    return cursor.fetch_arrow_table().to_pylist()


def refused(conn, sql):
    """The error message of running `sql`, or fail if it was answered."""
    try:
        rows(conn.cursor(), sql)
    except Exception as e:  # the driver's DB-API errors
        return str(e)
    fail(f"answered, though it should have been refused: {sql}")


def main():
    with open(sys.argv[1]) as f:
        cfg = json.load(f)
    uri, schema = cfg["uri"], cfg["schema"]
    warnings.simplefilter("error")  # a driver warning is a failure too

    conn = connect(uri, cfg["token"])
    cur = conn.cursor()

    info = conn.adbc_get_info()
    check(info.get("vendor_name") == "riskstrat", f"SQL info names the server ({info.get('vendor_name')})")

    # An aggregate: the same answer as in-process, counts perturbed and rounded.
    agg = cfg["aggregate"]
    got = rows(cur, agg["sql"])
    check(got == agg["rows"], f"aggregate answer equals the in-process one ({len(got)} rows)")
    counts = [r["n"] for r in got]
    check(
        all(n is None or (n >= 10 and n % 5 == 0) for n in counts),
        "every count is suppressed or a multiple of 5 of at least 10",
    )
    check(all(n is not None for n in counts), f"small groups are left out, not shown ({len(got)} rows)")
    msg = refused(conn, "SELECT lsoa_code, sex, age_band, tier, count(*) AS n FROM people GROUP BY lsoa_code, sex, age_band, tier")
    check("[cut]" in msg, f"a cut into cells of fewer than 8 is refused: {msg.splitlines()[0][:120]}")

    # Fully qualified names, as generic tools write them.
    total = rows(cur, f"SELECT count(*) AS n FROM riskstrat.{schema}.people")[0]["n"]
    check(total is not None and total % 5 == 0 and total > 1000, f"riskstrat.{schema}.people counts {total}")

    # Disclosure control refuses person-level rows and says so.
    for sql in ["SELECT * FROM people", "SELECT max(risk) AS m FROM people"]:
        msg = refused(conn, sql)
        check("disclosure control" in msg, f"refused: {sql!r}: {msg.splitlines()[0][:120]}")

    # Browsing: catalog, schema, the views with their columns.
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    check("riskstrat" in catalogs, f"get_objects lists catalog riskstrat ({list(catalogs)})")
    schemas = {s["db_schema_name"]: s for s in catalogs["riskstrat"]["catalog_db_schemas"]}
    check(schema in schemas, f"get_objects lists schema {schema} ({list(schemas)})")
    tables = {t["table_name"]: t for t in schemas[schema]["db_schema_tables"]}
    check({"people", "cohort_summary"} <= set(tables), f"get_objects lists the views ({sorted(tables)})")
    check(all(t["table_type"] == "VIEW" for t in tables.values()), "every table is a VIEW")
    columns = {c["column_name"] for c in tables["people"]["table_columns"] or []}
    check({"risk", "age_band", "practice_code"} <= columns, f"people's columns are listed ({len(columns)})")
    check("pseudo_id" not in columns, "no identifier column is listed")
    check(not any(c.startswith("__") for c in columns), "no hidden column is listed")
    check(conn.adbc_get_table_types() == ["VIEW"], "table types: VIEW")

    # A prepared statement, executed twice.
    sql = "SELECT tier, count(*) AS n FROM people GROUP BY tier ORDER BY tier"
    cur2 = conn.cursor()
    cur2.adbc_prepare(sql)
    first = rows(cur2, sql)
    second = rows(cur2, sql)
    check(first == second and len(first) > 0, f"prepared statement answers twice alike ({len(first)} rows)")
    cur2.close()

    # The other token sees none of this job.
    other = connect(uri, cfg["other_token"])
    msg = refused(other, f"SELECT count(*) AS n FROM riskstrat.{schema}.people")
    check(schema in msg or "not found" in msg.lower() or "no run" in msg, f"other token cannot read {schema}: {msg.splitlines()[0][:120]}")
    other_objects = other.adbc_get_objects(depth="all").read_all().to_pylist()
    other_schemas = [s["db_schema_name"] for c in other_objects for s in c["catalog_db_schemas"]]
    check(schema not in other_schemas, f"other token's get_objects hides {schema} ({other_schemas})")
    other.close()

    # Wrong token and no token: refused, whatever is asked.
    for label, token in [("wrong token", "not-a-token"), ("no token", None)]:
        bad = connect(uri, token)
        msg = refused(bad, "SELECT count(*) AS n FROM people")
        check("UNAUTHENTICATED" in msg.upper(), f"{label}: query refused ({msg.splitlines()[0][:90]})")
        try:
            bad.adbc_get_objects(depth="catalogs").read_all()
            fail(f"{label}: get_objects answered")
        except Exception as e:
            check("UNAUTHENTICATED" in str(e).upper(), f"{label}: browsing refused")
        bad.close()

    cur.close()
    conn.close()
    print("all checks passed")


if __name__ == "__main__":
    main()

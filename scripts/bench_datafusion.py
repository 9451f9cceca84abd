"""The features at A computed by DataFusion itself (its Python package, from PyPI)
running the same SQL as DuckDB in bench_duckdb.py, on the same files with the same
number of threads, for scripts/bench.sh: what the engine riskstrat is built on takes
for DuckDB's query, without riskstrat's validation or its second date.

    python bench_datafusion.py DATA_DIR AS_OF THREADS OUT.parquet [DUCKDB_FEATURES.parquet]

Prints the seconds taken and, given DuckDB's output of the same query, how many
people's values agree.
"""
import os
import sys
import time

import datafusion
import pyarrow as pa

from bench_duckdb import COMPARED, REFERENCE, REFERENCE_TABLES, TABLES, features_sql


def register(ctx, data):
    """The tables `features_sql` reads, registered in DataFusion's session."""
    for name in TABLES:
        folder = os.path.join(data, name)
        ctx.register_parquet(name, folder if os.path.isdir(folder) else f"{folder}.parquet")
    for name, (file, columns) in REFERENCE_TABLES.items():
        schema = pa.schema([(c, pa.string()) for c in columns])
        ctx.register_csv(name, os.path.join(REFERENCE, file), schema=schema)


def main(data, as_of, threads, out, duckdb_features=None):
    config = datafusion.SessionConfig().with_target_partitions(int(threads))
    ctx = datafusion.SessionContext(config)
    register(ctx, data)
    start = time.perf_counter()
    ctx.sql(features_sql(as_of)).write_parquet(out)
    seconds = time.perf_counter() - start
    people = ctx.read_parquet(out).count()
    print(
        f"datafusion features at A: {seconds:.2f} s, {people} people, {threads} threads "
        f"(DataFusion {datafusion.__version__}, DuckDB's SQL)"
    )
    if duckdb_features:
        import duckdb

        checks = " AND ".join(f"d.{c} = r.{c}" for c in COMPARED)
        same, both = duckdb.connect().execute(
            f"""SELECT count(*) FILTER (WHERE {checks}), count(*)
                FROM read_parquet('{duckdb_features}') d
                JOIN read_parquet('{out}') r USING (pseudo_id)"""
        ).fetchone()
        print(f"  agree with duckdb on {same} of {both} rows")


if __name__ == "__main__":
    main(*sys.argv[1:])

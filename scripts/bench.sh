#!/usr/bin/env bash
# Speed and scale on one machine (issue 16). For each size in SIZES (default
# "1000000"; e.g. SIZES="1000000 3000000 10000000"): synth the population once (cached
# under DATA, default target/bench-data), run the default job with the service
# evaluation off and on (EVAL="off on"), under [resources] memory_limit = MEMORY_LIMIT
# when set, and print wall time, peak RSS and each stage's time from the manifest;
# then DuckDB (from PyPI, into target/bench-env) computing the features at A on the
# same files with the same number of threads, in the same run, and the ratio of
# riskstrat's feature stages to it; DataFusion's Python package (the engine riskstrat
# is built on, from PyPI) running DuckDB's SQL, and the ratio to it; and, from the
# run's log, the compute (CPU seconds)
# of each plan's operators: the validation passes and the features at both dates. The
# inputs are read once first, so that both engines find them in the page cache. BIN
# defaults to the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/riskstrat}
SIZES=${SIZES:-1000000}
EVAL=${EVAL:-off on}
DATA=${DATA:-target/bench-data}
THREADS=${THREADS:-$(nproc)}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release (or set BIN)" >&2; exit 2; }
ENV=target/bench-env
if [ ! -x "$ENV/bin/python" ] || ! "$ENV/bin/python" -c "import duckdb, datafusion" 2>/dev/null; then
    [ -x "$ENV/bin/python" ] || python3 -m venv "$ENV"
    "$ENV/bin/pip" install --quiet duckdb 'datafusion==55.*'
fi
echo "riskstrat: $("$BIN" --version 2>/dev/null || echo "$BIN"); duckdb $("$ENV/bin/python" -c 'import duckdb; print(duckdb.__version__)'); datafusion (Python) $("$ENV/bin/python" -c 'import datafusion; print(datafusion.__version__)'); $THREADS threads; $(nproc) cores"
for N in $SIZES; do
    DIR="$DATA/$N"
    if [ ! -f "$DIR/job.toml" ]; then
        /usr/bin/time -f "synth $N: %e s, %M KiB peak" "$BIN" synth --patients "$N" --seed 1 --as-of 2026-04-01 --out "$DIR" >/dev/null
    fi
    # Both engines read the inputs from the page cache (DuckDB runs after riskstrat).
    find "$DIR" -maxdepth 2 -name '*.parquet' -not -path '*/runs/*' -exec cat {} + > /dev/null
    for evaluate in $EVAL; do
        JOB="$DIR/job-$evaluate.toml"
        sed -e '/^\[outcomes\]/,$d' -e '/^\[resources\]/,$d' "$DIR/job.toml" > "$JOB"
        printf '\n[outcomes]\nevaluate = %s\n' "$([ "$evaluate" = on ] && echo true || echo false)" >> "$JOB"
        printf '\n[resources]\ntarget_partitions = %s\n' "$THREADS" >> "$JOB"
        [ -n "${MEMORY_LIMIT:-}" ] && printf 'memory_limit = "%s"\n' "$MEMORY_LIMIT" >> "$JOB"
        OUT="$DIR/run-$evaluate"
        RISKSTRAT_LOG="riskstrat=info,riskstrat::plans=debug,warn" \
            /usr/bin/time -f "%e %M" -o "$OUT.time" "$BIN" run "$JOB" > "$OUT.out" 2> "$OUT.err" \
            || { tail -20 "$OUT.err"; exit 1; }
        RUN=$(tail -1 "$OUT.out")
        read -r WALL PEAK < "$OUT.time"
        "$ENV/bin/python" - "$RUN/manifest.json" "$N" "$evaluate" "$WALL" "$PEAK" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
n, evaluate, wall, peak = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
t = m["timings_ms"]
mem = m.get("peak_memory_mib", {})
# Each stage resets the kernel's high-water mark (to measure its own peak), which the
# rusage figure of /usr/bin/time then reflects only since the last reset: the run's
# peak is the larger of it and every stage's.
peak = max([peak] + [v * 1024 for v in mem.values()])
print(f"{int(n):>11,} people, evaluation {evaluate}: {wall:.1f} s wall, {peak / 1048576:.2f} GiB peak RSS")
for k, v in t.items():
    extra = f", {mem[k]} MiB peak" if k in mem else ""
    print(f"    {k:<22} {v / 1000:7.2f} s{extra}")
features = sum(v for k, v in t.items() if "features" in k)
print(f"    {'(stages named *features*)':<22} {features / 1000:7.2f} s")
open(sys.argv[1] + ".features_ms", "w").write(str(features))
EOF
        # Where the compute went: each logged plan's operators' compute summed
        # (riskstrat::plans at debug level; CPU seconds over all threads, not wall).
        python3 - "$OUT.err" <<'EOF'
import re, sys
plans, name = {}, None
for line in open(sys.argv[1]):
    head = re.search(r"DEBUG (.+):$", line.rstrip())
    if head:
        name = head.group(1)
        continue
    m = re.search(r" compute=([0-9.]+)s$", line.rstrip())
    if name and m:
        plans[name] = plans.get(name, 0.0) + float(m.group(1))
    elif not m:
        name = None
for k, v in sorted(plans.items(), key=lambda kv: -kv[1]):
    if v >= 0.05:
        print(f"    compute in {k:<34} {v:7.2f} s")
EOF
    done
    # DuckDB: the features at A alone, on the same files, in the same run of this script.
    "$ENV/bin/python" scripts/bench_duckdb.py "$DIR" 2026-04-01 "$THREADS" "$DIR/duckdb-features.parquet" "$RUN/features.parquet" | tee "$DIR/duckdb.out"
    DUCK=$(awk '/duckdb features at A/ {print $5}' "$DIR/duckdb.out")
    OURS=$(cat "$RUN/manifest.json.features_ms")
    BOTH=$(awk '/duckdb features at both dates/ {print $6}' "$DIR/duckdb.out")
    FLOOR=$(awk '/duckdb scan floor/ {print $4}' "$DIR/duckdb.out")
    # DataFusion itself (the engine riskstrat is built on) running DuckDB's SQL: by
    # default up to 3M people (it took 68 s at 3M; DATAFUSION=on or off to choose).
    ENGINE=0
    if [ "${DATAFUSION:-auto}" = on ] || { [ "${DATAFUSION:-auto}" = auto ] && [ "$N" -le 3000000 ]; }; then
        (cd scripts && "$ROOT/$ENV/bin/python" bench_datafusion.py "$ROOT/$DIR" 2026-04-01 "$THREADS" "$ROOT/$DIR/datafusion-features.parquet" "$ROOT/$DIR/duckdb-features.parquet") | tee "$DIR/datafusion.out"
        ENGINE=$(awk '/datafusion features at A/ {print $5}' "$DIR/datafusion.out")
    fi
    python3 -c "
import sys
o, d, b, f, e = float(sys.argv[1]) / 1000, *map(float, sys.argv[2:])
print(f'    riskstrat feature stages {o:.2f} s / duckdb features at A {d:.2f} s = {o/d:.2f} (target at most 0.5)')
print(f'    riskstrat feature stages {o:.2f} s / duckdb features at both dates {b:.2f} s = {o/b:.2f} (riskstrat also validates every row)')
print(f'    the target, {d / 2:.2f} s, is {d / 2 / f:.2f} times duckdb scan floor {f:.2f} s')
if e > 0:
    print(f'    riskstrat feature stages {o:.2f} s / datafusion on duckdb\'s SQL, features at A {e:.2f} s = {o/e:.2f}; the target is {d / 2 / e:.2f} times datafusion\'s time')
" "$OURS" "$DUCK" "$BOTH" "$FLOOR" "$ENGINE"
done

#!/usr/bin/env bash
# The same job in-process and on a local Apache Ballista cluster (issue 17). For each
# size in SIZES (default "1000000"): synth the population once (cached under DATA, as
# scripts/bench.sh does), then run the default job with the service evaluation off
# in-process, and on a cluster of one scheduler and EXECUTORS (default 2) executors
# started here on 127.0.0.1, each running TASKS (default 1) tasks at once with
# EXECUTOR_MEMORY (default 3GiB) of memory pool. Prints wall time, peak RSS of the
# client and of every cluster process, and each stage's time from the manifests.
# MEMORY_LIMIT sets the in-process run's [resources] memory_limit. BIN defaults to the
# release binary. INPROCESS=off skips the in-process run. BROADCAST_LIMIT sets the
# cluster job's [cluster] broadcast_limit ("0": every join shuffles both sides).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/riskstrat}
BIN=$(realpath "$BIN")
SIZES=${SIZES:-1000000}
DATA=${DATA:-target/bench-data}
EXECUTORS=${EXECUTORS:-2}
TASKS=${TASKS:-1}
EXECUTOR_MEMORY=${EXECUTOR_MEMORY:-3GiB}
THREADS=${THREADS:-$(nproc)}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release (or set BIN)" >&2; exit 2; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
echo "riskstrat: $("$BIN" --version 2>/dev/null || echo "$BIN"); $(nproc) cores; cluster: 1 scheduler, $EXECUTORS executors x $TASKS tasks, $EXECUTOR_MEMORY each"

summary() { # manifest wall peak_kib label
    python3 - "$@" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
wall, peak, label = float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
mem = m.get("peak_memory_mib", {})
peak = max([peak] + [v * 1024 for v in mem.values()])
print(f"  {label}: {wall:.1f} s wall, client peak RSS {peak / 1048576:.2f} GiB (ran_on {m['ran_on']})")
for k, v in m["timings_ms"].items():
    print(f"      {k:<22} {v / 1000:7.2f} s")
EOF
}

for N in $SIZES; do
    DIR="$ROOT/$DATA/$N"
    if [ ! -f "$DIR/job.toml" ]; then
        "$BIN" synth --patients "$N" --seed 1 --as-of 2026-04-01 --out "$DIR" >/dev/null
    fi
    echo "$N people"
    # Absolute inputs (a cluster refuses relative ones), the evaluation off.
    BASE="$DIR/job-cluster-base.toml"
    sed -e '/^\[outcomes\]/,$d' -e '/^\[resources\]/,$d' \
        -e "s#^\(patients\|appointments\|prescriptions\|admissions\|optouts\|services\) = \"\([^/][^\"]*\)\"#\1 = \"$DIR/\2\"#" \
        -e 's#^output = "runs"#output = "runs-cluster-bench"#' \
        "$DIR/job.toml" > "$BASE"
    printf '\n[outcomes]\nevaluate = false\n\n[resources]\ntarget_partitions = %s\n' "$THREADS" >> "$BASE"

    if [ "${INPROCESS:-on}" = on ]; then
    JOB="$DIR/job-inprocess.toml"
    cp "$BASE" "$JOB"
    [ -n "${MEMORY_LIMIT:-}" ] && printf 'memory_limit = "%s"\n' "$MEMORY_LIMIT" >> "$JOB"
    /usr/bin/time -f "%e %M" -o "$DIR/inprocess.time" "$BIN" run "$JOB" > "$DIR/inprocess.out" 2> "$DIR/inprocess.err" \
        || { tail -20 "$DIR/inprocess.err"; exit 1; }
    read -r WALL PEAK < "$DIR/inprocess.time"
    summary "$(tail -1 "$DIR/inprocess.out")/manifest.json" "$WALL" "$PEAK" "in-process"
    fi

    # The cluster, each process under /usr/bin/time for its peak RSS.
    C="$DIR/cluster"
    rm -rf "$C"; mkdir -p "$C/scratch"
    SP=$(port)
    PIDS=()
    /usr/bin/time -f "%M" -o "$C/scheduler.time" "$BIN" cluster scheduler --bind "127.0.0.1:$SP" \
        --min-executors "$EXECUTORS" > "$C/scheduler.log" 2>&1 &
    PIDS+=($!)
    for i in $(seq 1 "$EXECUTORS"); do
        /usr/bin/time -f "%M" -o "$C/executor-$i.time" "$BIN" cluster executor --scheduler "127.0.0.1:$SP" \
            --bind "127.0.0.1:$(port)" --grpc-port "$(port)" --work-dir "$C/executor-$i" \
            --concurrent-tasks "$TASKS" --memory-limit "$EXECUTOR_MEMORY" > "$C/executor-$i.log" 2>&1 &
        PIDS+=($!)
    done
    stop() { pkill -TERM -f "^$BIN cluster .*127.0.0.1:$SP" || true; wait "${PIDS[@]}" 2>/dev/null || true; }
    trap stop EXIT
    until curl -fsS "http://127.0.0.1:$SP/readyz" >/dev/null 2>&1; do sleep 0.5; done
    JOB="$DIR/job-on-cluster.toml"
    cp "$BASE" "$JOB"
    printf '\n[cluster]\nscheduler = "df://127.0.0.1:%s"\nscratch = "%s"\n' "$SP" "$C/scratch" >> "$JOB"
    [ -n "${BROADCAST_LIMIT:-}" ] && printf 'broadcast_limit = "%s"\n' "$BROADCAST_LIMIT" >> "$JOB"
    /usr/bin/time -f "%e %M" -o "$C/client.time" "$BIN" run "$JOB" > "$C/client.out" 2> "$C/client.err" \
        || { tail -20 "$C/client.err"; du -sh "$C"/executor-*; exit 1; }
    # Shuffle files and results the executors hold (kept an hour after each job).
    SHUFFLE=$(du -sc "$C"/executor-* | tail -1 | cut -f1)
    stop
    trap - EXIT
    read -r WALL PEAK < "$C/client.time"
    summary "$(tail -1 "$C/client.out")/manifest.json" "$WALL" "$PEAK" "on the cluster"
    echo "      executors' work folders after the run: $(( SHUFFLE / 1024 )) MiB (shuffle files and results)"
    echo "      peak RSS: scheduler $(( $(tail -1 "$C/scheduler.time") / 1024 )) MiB$(for i in $(seq 1 "$EXECUTORS"); do printf ', executor %s %s MiB' "$i" "$(( $(tail -1 "$C/executor-$i.time") / 1024 ))"; done)"
    [ "${INPROCESS:-on}" = on ] && python3 - "$(tail -1 "$DIR/inprocess.out")/features.parquet" "$(tail -1 "$C/client.out")/features.parquet" <<'EOF' || true
import os, sys
print(f"      features.parquet: {os.path.getsize(sys.argv[1]):,} bytes in-process, {os.path.getsize(sys.argv[2]):,} on the cluster")
EOF
    rm -rf "$DIR/runs-cluster-bench" "$C/executor-"*/
done

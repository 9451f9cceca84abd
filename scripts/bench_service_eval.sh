#!/usr/bin/env bash
# The service evaluation at scale: synth N people (default 1,000,000), then the whole
# default job with the evaluation on and off, printing wall time, peak memory and the
# service evaluation stage's time from the manifest. BIN defaults to the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/riskstrat}
DIR=${DIR:-/tmp/riskstrat-bench-eval-$N}
"$BIN" synth --patients "$N" --seed 1 --as-of 2026-04-01 --out "$DIR" >/dev/null
for evaluate in true false; do
    sed -e '/^\[outcomes\]/,$d' "$DIR/job.toml" > "$DIR/job-$evaluate.toml"
    printf '\n[outcomes]\nevaluate = %s\n' "$evaluate" >> "$DIR/job-$evaluate.toml"
    /usr/bin/time -f "evaluate=$evaluate: %e s wall, %M KiB peak" \
        "$BIN" run "$DIR/job-$evaluate.toml" > "$DIR/run-$evaluate.out" 2> "$DIR/run-$evaluate.err" \
        || { cat "$DIR/run-$evaluate.err"; exit 1; }
    tail -1 "$DIR/run-$evaluate.err"
    RUN=$(tail -1 "$DIR/run-$evaluate.out")
    python3 -c "import json,sys; t=json.load(open(sys.argv[1]))['timings_ms']; print('  stages (ms):', ', '.join(f'{k} {v}' for k,v in t.items())); m=json.load(open(sys.argv[1])).get('peak_memory_mib', {}); print('  peak RSS over the stages (what the run peaked at; time(1) sees only the last stage, as each stage resets the high-water mark):', max(m.values(), default=0), 'MiB')" "$RUN/manifest.json"
done

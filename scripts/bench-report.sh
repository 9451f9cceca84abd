#!/usr/bin/env bash
# The report's size and render time for a run folder (say one of 1,000,000 people):
#   scripts/bench-report.sh RUN_DIR
# Rebuilds the report with `riskstrat report` (timed), then loads it three times in
# headless Chromium through tests/python/report_browser.py (needs ./scripts/test.sh to
# have installed Chromium and Playwright into target/pyenv) and prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="$1"
OUT="$(mktemp -d)"
cargo build --quiet --workspace
start=$(date +%s.%N)
target/debug/riskstrat report "$RUN" --out "$OUT/report.html" >/dev/null
end=$(date +%s.%N)
echo "population: $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['population'])" "$RUN/manifest.json")"
echo "report size: $(stat -c %s "$OUT/report.html") bytes"
echo "riskstrat report: $(python3 -c "print(round($end - $start, 3))") s"
for i in 1 2 3; do
    target/pyenv/bin/python tests/python/report_browser.py "$OUT/report.html" "$OUT" |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(f\"chromium load: {d['load_seconds']:.3f} s, console errors {len(d['console_errors'])}, requests {len(d['requests'])}\")"
done

#!/usr/bin/env bash
# Benchmark of the commissioner service (figures in the README, "The commissioner
# service"): 16 clients' p99 latency unloaded and beside one hostile client sending the
# heaviest allowed queries back to back, in release, at RISKSTRAT_HEAVY_PATIENTS people
# (default 200,000). Not part of the test command: it takes minutes and its figures
# depend on the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export RISKSTRAT_HEAVY_PATIENTS="${RISKSTRAT_HEAVY_PATIENTS:-200000}"
export RISKSTRAT_HOSTILE_QUERIES="${RISKSTRAT_HOSTILE_QUERIES:-20}"
cargo test --release --locked -p riskstrat --test e2e -- --ignored --nocapture \
    serve::a_hostile_client_leaves_the_others_their_latency

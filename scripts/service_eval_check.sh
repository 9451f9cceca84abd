#!/usr/bin/env bash
# The service evaluation against synthetic data with known effects (issue 12): 20
# seeds of 100,000 people, VW01 with no effect and CM01 with a rate ratio of 0.8, and
# the table the README quotes. Any arguments go to the example, e.g.
#   scripts/service_eval_check.sh --seeds 40 --effects VW01=0.8,CM01=1.0
# Builds the release binaries of the workspace (examples included) first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked --bins --examples
"${CARGO_TARGET_DIR:-target}/release/examples/service_eval_check" "$@"

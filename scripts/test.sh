#!/usr/bin/env bash
# The test command: everything the tests need, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --locked "$@"

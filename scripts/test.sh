#!/usr/bin/env bash
# The test command: everything the tests need, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/serve.rs queries `riskstrat serve` with an independently written Flight SQL
# client, Apache Arrow's Python ADBC driver, installed here from PyPI into a venv
# (once; later runs reuse it).
PYENV=target/pyenv
if ! "$PYENV/bin/python" -c "import adbc_driver_flightsql, pyarrow" 2>/dev/null; then
    python3 -m venv "$PYENV"
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check adbc-driver-flightsql pyarrow
fi
RISKSTRAT_PYTHON="$(pwd)/$PYENV/bin/python"
export RISKSTRAT_PYTHON

cargo test --workspace --locked "$@"

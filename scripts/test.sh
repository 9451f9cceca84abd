#!/usr/bin/env bash
# The test command: everything the tests need, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# tests/serve.rs queries `riskstrat serve` with an independently written Flight SQL
# client, Apache Arrow's Python ADBC driver, installed here from PyPI into a venv
# (once; later runs reuse it).
# tests/report.rs renders the report in Debian's Chromium, driven by Playwright from
# PyPI into the same venv (Playwright's own browser download is never used).
PYENV=target/pyenv
# tests/object_stores.rs runs moto's S3 server from the same venv on 127.0.0.1.
if ! "$PYENV/bin/python" -c "import adbc_driver_flightsql, pyarrow, playwright, moto.server" 2>/dev/null; then
    python3 -m venv "$PYENV"
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check adbc-driver-flightsql pyarrow playwright "moto[server]"
fi
if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends chromium >/dev/null \
        || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y --no-install-recommends chromium >/dev/null; }
fi
if ! "$PYENV/bin/python" -c "import azure.storage.blob" 2>/dev/null; then
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check azure-storage-blob
fi
# ... and gcp-storage-emulator for GCS, behind tests/python/gcs_front.py (its XML API).
if [ ! -x "$PYENV/bin/gcp-storage-emulator" ]; then
    "$PYENV/bin/pip" install --quiet --disable-pip-version-check gcp-storage-emulator
fi
RISKSTRAT_PYTHON="$(pwd)/$PYENV/bin/python"
export RISKSTRAT_PYTHON

# tests/object_stores.rs runs Azurite (Microsoft's Azure Storage emulator) from npm.
NODEENV=target/node
if [ ! -x "$NODEENV/node_modules/.bin/azurite-blob" ]; then
    mkdir -p "$NODEENV"
    (cd "$NODEENV" && npm install --silent --no-audit --no-fund azurite@3 >/dev/null)
fi
RISKSTRAT_AZURITE="$(pwd)/$NODEENV/node_modules/.bin/azurite-blob"
export RISKSTRAT_AZURITE

cargo test --workspace --locked "$@"

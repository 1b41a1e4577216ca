#!/usr/bin/env bash
# Fresh machine -> test results: make a venv, install localrelay with its test
# extra, run the whole suite (unit tests, then end-to-end tests with real processes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"

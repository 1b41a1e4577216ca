#!/usr/bin/env bash
# Fresh machine -> test results: install the system packages the end-to-end
# tests drive (Debian's chromium + chromedriver for the inspector page, pebble
# as the ACME server, systemd-analyze for the unit file, curl, redis-server and
# haproxy for the relay fleet and its load balancer config), make a venv,
# install localrelay with its test extra, run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v pebble >/dev/null || [ -x /usr/bin/pebble ] || need+=(pebble)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v curl >/dev/null || need+=(curl)
command -v redis-server >/dev/null || need+=(redis-server)
command -v haproxy >/dev/null || need+=(haproxy)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  else
    echo "test.sh: missing ${need[*]} (tests that need them will be skipped); as root: apt-get install -y ${need[*]}" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
exec .venv/bin/python -m pytest "$@"

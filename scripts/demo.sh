#!/usr/bin/env bash
# Fresh machine -> a working tunnel on *.localhost in one command:
# installs localrelay in .venv, starts a relay (open, local development only),
# a sample local server on :3000 and an agent, then fetches the public URL.
# Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
RELAY_PORT="${RELAY_PORT:-8080}"
LOCAL_PORT="${LOCAL_PORT:-3000}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
DATA="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT INT TERM
.venv/bin/relay-server serve --open --host 127.0.0.1 --http-port "$RELAY_PORT" --data-dir "$DATA" &
pids+=($!)
.venv/bin/python examples/hello_server.py "$LOCAL_PORT" &
pids+=($!)
for _ in $(seq 50); do
  .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$RELAY_PORT/_relay/health', timeout=1)" 2>/dev/null && break
  sleep 0.2
done
.venv/bin/relay-client http "$LOCAL_PORT" --server "http://localhost:$RELAY_PORT" --subdomain demo &
pids+=($!)
for _ in $(seq 50); do
  if out=$(.venv/bin/python - "$RELAY_PORT" <<'PY' 2>/dev/null
import sys, urllib.request
port = sys.argv[1]
req = urllib.request.Request(f"http://127.0.0.1:{port}/hello?from=demo", headers={"Host": f"demo.localhost:{port}"})
print(urllib.request.urlopen(req, timeout=2).read().decode())
PY
  ); then
    echo "GET http://demo.localhost:$RELAY_PORT/hello?from=demo -> $out"
    echo "Open http://demo.localhost:$RELAY_PORT/ in a browser (Ctrl-C to stop)."
    wait
    exit 0
  fi
  sleep 0.2
done
echo "demo: the tunnel did not answer; see the messages above" >&2
exit 1

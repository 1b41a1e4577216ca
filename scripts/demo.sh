#!/usr/bin/env bash
# Fresh machine -> a plugin on a public-style URL in one command.
# Installs localrelay in .venv, starts a relay on *.localhost (open: local
# development only), the sample ChatGPT plugin (examples/plugin) on :3000 and an
# agent with --rewrite-urls, then runs `relay-client check` against the tunnel
# the way the plugin host does on registration. Ctrl-C stops all three.
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
.venv/bin/python examples/plugin/server.py "$LOCAL_PORT" &
pids+=($!)
for _ in $(seq 50); do
  .venv/bin/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$RELAY_PORT/_relay/health', timeout=1)" 2>/dev/null && break
  sleep 0.2
done
.venv/bin/relay-client http "$LOCAL_PORT" --server "http://localhost:$RELAY_PORT" --subdomain demo --rewrite-urls &
pids+=($!)
URL="http://demo.localhost:$RELAY_PORT"
up=""
for _ in $(seq 50); do
  if .venv/bin/python - "$RELAY_PORT" <<'PY' 2>/dev/null; then up=1; break; fi
import sys, urllib.request
port = sys.argv[1]
req = urllib.request.Request(f"http://127.0.0.1:{port}/.well-known/ai-plugin.json", headers={"Host": f"demo.localhost:{port}"})
urllib.request.urlopen(req, timeout=2)
PY
  sleep 0.2
done
[ -n "$up" ] || { echo "demo: the tunnel did not come up; see the messages above" >&2; exit 1; }
.venv/bin/relay-client check "$URL"
echo
echo "The plugin answers at $URL (open it in a browser: *.localhost is your machine)."
echo "Every request is in the inspector at http://127.0.0.1:4040. Ctrl-C to stop."
wait

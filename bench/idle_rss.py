"""Idle RSS of a freshly started relay and agent (the import baseline of issue 3's memory target).

Starts ``relay-server serve --open`` and ``relay-client http PORT --no-inspect`` exactly as
``bench/run.py`` does, waits until the tunnel is up and idle, then prints VmRSS and VmHWM of
each, in MiB. ``--imports`` also lists the third-party top-level packages each one loaded.
Usage: ``.venv/bin/python bench/idle_rss.py [--repeat N] [--imports]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def loaded_packages(pid: int) -> list[str]:
    """Top-level packages under site-packages mapped by the process (its .so files) - a rough view."""
    seen: set[str] = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if "site-packages/" in line:
                seen.add(line.split("site-packages/", 1)[1].split("/", 1)[0])
    return sorted(seen)


def once(show_imports: bool) -> dict[str, dict[str, int]]:
    relay_port, origin_port = free_port(), free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryDirectory() as data_dir:
        relay = subprocess.Popen(
            [PY, "-m", "relay_server", "serve", "--open", "--host", "127.0.0.1", "--http-port", str(relay_port),
             "--data-dir", data_dir, "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        agent = None
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{relay_port}/_relay/health", timeout=2).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or relay.poll() is not None:
                        raise SystemExit("relay did not start")
                    time.sleep(0.1)
            agent = subprocess.Popen(
                [PY, "-m", "relay_client", "http", str(origin_port), "--server", f"http://localhost:{relay_port}",
                 "--subdomain", "app", "--no-inspect"],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while True:
                body = urllib.request.urlopen(f"http://127.0.0.1:{relay_port}/_relay/health", timeout=2).read()
                if b'"tunnels": 1' in body or b'"tunnels":1' in body:
                    break
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit(f"agent did not connect: {body[:200]!r}")
                time.sleep(0.1)
            time.sleep(1.0)
            result = {"relay": status(relay.pid), "agent": status(agent.pid)}
            if show_imports:
                for role, p in (("relay", relay), ("agent", agent)):
                    print(f"{role} maps: {' '.join(loaded_packages(p.pid))}")
            return result
        finally:
            for p in (agent, relay):
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--imports", action="store_true")
    a = ap.parse_args()
    runs = [once(a.imports and i == 0) for i in range(a.repeat)]
    for role in ("relay", "agent"):
        rss = [r[role]["VmRSS"] / MIB for r in runs]
        hwm = [r[role]["VmHWM"] / MIB for r in runs]
        print(f"{role}: idle VmRSS median {statistics.median(rss):.1f} MiB (runs {', '.join(f'{x:.1f}' for x in rss)}); "
              f"VmHWM median {statistics.median(hwm):.1f}")
    total = [r["relay"]["VmRSS"] / MIB + r["agent"]["VmRSS"] / MIB for r in runs]
    print(f"relay + agent idle VmRSS median {statistics.median(total):.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())

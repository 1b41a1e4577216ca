#!/usr/bin/env python3
"""localrelay benchmark: the origin directly vs through localrelay, on loopback.

One command (from the repo root, with the product installed in .venv):

    .venv/bin/python bench/run.py                # default run, about 2 minutes
    .venv/bin/python bench/run.py --write        # also append the result to BENCHMARKS.md
    .venv/bin/python bench/run.py --profile      # + py-spy profile of relay and agent under c32 load
    .venv/bin/python bench/run.py --peers ssh,ssh+nginx,localtunnel   # + other tunnels, same loads
    .venv/bin/python bench/run.py --quick        # smoke run (~40 s): 3 s wrk runs, small transfers

Needs wrk and curl (`apt-get install -y wrk`; installed automatically when running as
root). Peers need a one-time `PEERS_DIR=/work/main/.peers bash /work/shared/peers/setup.sh`
(or `--setup-peers`); they are run through the shared harness (bench.py) as a subprocess.

What it does, all on 127.0.0.1, every process in its own session, all stopped by
process group at the end (also on Ctrl-C / SIGTERM / errors):
  1. starts the origin (the shared peers' server.py: aiohttp + uvloop), the relay
     (`relay-server serve --open`) and the agent (`relay-client http`), each on a free port;
  2. for `--repeat` rounds, interleaving direct and tunnel: wrk small GETs at 32
     connections (2 threads) and at 1 connection, curl 200 MiB download, curl 200 MiB upload;
  3. a 1 GiB download and a 1 GiB upload through the tunnel, with the relay's and agent's
     VmHWM reset just before each (/proc/PID/clear_refs) so the peak belongs to that transfer;
  4. all along, samples VmRSS of relay and agent every 50 ms and their CPU time per measure;
  5. prints a markdown table (figures, tunnel/direct ratios, targets met or missed),
     writes the raw figures to bench/results/run-STAMP.json, and with --write appends the
     section to BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
PEERS_SRC = os.environ.get("BENCH_PEERS_SRC", "/work/shared/peers")
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(ROOT, ".peers"))
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
PY = VENV_PY if os.path.exists(VENV_PY) else sys.executable
MIB = 1024 * 1024
SAMPLE_EVERY = 0.05  # seconds between RSS samples
PROFILE_RATE = 200  # py-spy samples per second
CURL_STALL = ["--speed-time", "10", "--speed-limit", "1024"]  # give up after 10 s below 1 KiB/s
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# Targets from the issue: (key, label, op, value, unit, horizon)
TARGETS = [
    ("c32_ratio", "small GETs c32, tunnel/direct", ">=", 0.15, "", "now"),
    ("download_mib_s", "200 MiB download through tunnel", ">=", 150, "MiB/s", "now"),
    ("upload_mib_s", "200 MiB upload through tunnel", ">=", 150, "MiB/s", "now"),
    ("relay_rss_1g", "relay peak RSS during 1 GiB transfer", "<", 80, "MiB", "now"),
    ("agent_rss_1g", "agent peak RSS during 1 GiB transfer", "<", 80, "MiB", "now"),
    ("c32_ratio", "small GETs c32, tunnel/direct", ">=", 0.25, "", "later"),
    ("c1_p99_ms", "c1 p99 latency through tunnel", "<", 2.0, "ms", "later"),
    ("download_mib_s", "200 MiB download through tunnel", ">=", 500, "MiB/s", "later"),
    ("upload_mib_s", "200 MiB upload through tunnel", ">=", 400, "MiB/s", "later"),
]


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes
class Procs:
    """Long-running processes this run started, each in its own session (pgid == pid)."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        self.items: list[tuple[str, subprocess.Popen, object]] = []

    def start(self, role: str, cmd: list[str], env: dict | None = None, cwd: str | None = None) -> subprocess.Popen:
        os.makedirs(self.logdir, exist_ok=True)
        logf = open(os.path.join(self.logdir, f"{role}.log"), "wb")
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, **(env or {})), cwd=cwd or ROOT, start_new_session=True)
        self.items.append((role, p, logf))
        log(f"started {role} pid {p.pid}: {shlex.join(cmd)}")
        return p

    def check_alive(self) -> None:
        for role, p, _ in self.items:
            if p.poll() is not None:
                raise RuntimeError(f"{role} exited with {p.returncode}; see {self.logdir}/{role}.log")

    def logtext(self, role: str) -> str:
        try:
            with open(os.path.join(self.logdir, f"{role}.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        for role, p, logf in reversed(self.items):
            stop_group(p, grace=5)
            logf.close()
        self.items = []


def stop_group(p: subprocess.Popen, grace: float = 5, sig: int = signal.SIGTERM) -> None:
    """Stop the process group we created for p: the signal, then SIGKILL after grace seconds."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)


def run_cmd(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """subprocess.run in its own session; its group is killed on timeout, Ctrl-C or error."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         text=True, env=dict(os.environ, **(env or {})), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        stop_group(p, grace=0.5, sig=signal.SIGKILL)
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, procs: Procs, timeout: float = 15) -> None:
    end = time.time() + timeout
    while time.time() < end:
        procs.check_alive()
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def http_get(url: str, host: str | None = None, timeout: float = 3) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- /proc readers
def read_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0]) * 1024
    return out


def read_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def cpu_secs(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def reset_hwm(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed here."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssMonitor(threading.Thread):
    """Samples VmRSS of the watched pids; keeps the maximum per (role, phase) and overall."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.phase = "startup"
        self.max = defaultdict(int)  # (role, phase) -> bytes; (role, "*") -> whole run
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.sample()
            self.phase = phase
            self.sample()

    def sample(self) -> None:
        for role, pid in self.pids.items():
            try:
                rss = read_rss(pid)
            except (OSError, ValueError, IndexError):
                continue
            for key in ((role, self.phase), (role, "*")):
                if rss > self.max[key]:
                    self.max[key] = rss

    def run(self) -> None:
        while not self.halt.wait(SAMPLE_EVERY):
            with self.lock:
                self.sample()


# ---------------------------------------------------------------- measures
def to_ms(s: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    v, u = float(m.group(1)), m.group(2)
    return {"us": v / 1000, "ms": v, "s": v * 1000, "m": v * 60000}[u]


def host_args(host: str | None) -> list[str]:
    return ["-H", f"Host: {host}"] if host else []


def wrk(url: str, host: str | None, conns: int, threads: int, duration: int) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "--latency"]
    r = run_cmd(cmd + host_args(host) + [url + "/hello"], timeout=duration + 30)
    out = r.stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        return {"ok": False, "error": (out + r.stderr)[-300:]}
    res = {"rps": round(float(m.group(1)))}
    for pct in ("50", "90", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        res[f"p{pct}_ms"] = round(to_ms(m.group(1)), 3) if m else None
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    errs += int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs += sum(map(int, m.groups())) if m else 0
    res["errors"] = errs  # shown in the report; req/s still counts (error answers can be fast: check it)
    return res


def download(url: str, host: str | None, nbytes: int, timeout: float = 300) -> dict:
    cmd = ["curl", "-s", "-o", "/dev/null", "-m", str(int(timeout))] + CURL_STALL
    cmd += ["-w", "%{http_code} %{size_download} %{time_total}"] + host_args(host) + [f"{url}/bytes/{nbytes}"]
    r = run_cmd(cmd, timeout=timeout + 10)
    try:
        code, size, t = r.stdout.split()
    except ValueError:
        return {"ok": False, "error": f"curl rc {r.returncode}: {r.stderr[-200:]}"}
    res = {"mib_s": round(int(size) / float(t) / MIB, 1), "secs": round(float(t), 2),
           "ok": code == "200" and int(size) == nbytes}
    if not res["ok"]:
        res.update(code=code, received=int(size), curl_rc=r.returncode)
    return res


def upload_file(nbytes: int) -> str:
    """A file of nbytes: a 16 MiB random block repeated (incompressible, quick to make)."""
    path = os.path.join(RESULTS, f"upload-{nbytes}.bin")
    if not os.path.exists(path) or os.path.getsize(path) != nbytes:
        os.makedirs(RESULTS, exist_ok=True)
        block = os.urandom(16 * MIB)
        with open(path + ".tmp", "wb") as f:
            left = nbytes
            while left:
                k = min(left, len(block))
                f.write(block[:k])
                left -= k
        os.replace(path + ".tmp", path)
    return path


def upload(url: str, host: str | None, nbytes: int, timeout: float = 300) -> dict:
    """POST /upload: the origin consumes the body and answers its byte count."""
    path = upload_file(nbytes)
    cmd = ["curl", "-s", "-X", "POST", "-T", path, "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
           "-o", "-", "-m", str(int(timeout))] + CURL_STALL
    cmd += ["-w", "\n%{http_code} %{size_upload} %{time_total}"] + host_args(host) + [url + "/upload"]
    r = run_cmd(cmd, timeout=timeout + 10)
    lines = r.stdout.strip().splitlines()
    try:
        code, up, t = lines[-1].split()
        got = int(lines[0]) if len(lines) > 1 and lines[0].strip().isdigit() else -1
    except (ValueError, IndexError):
        return {"ok": False, "error": f"curl rc {r.returncode}: {r.stderr[-200:]}"}
    res = {"mib_s": round(int(up) / float(t) / MIB, 1), "secs": round(float(t), 2),
           "ok": code == "200" and int(up) == nbytes and got == nbytes}
    if not res["ok"]:
        res.update(code=code, sent=int(up), origin_received=got, curl_rc=r.returncode)
    return res


# ---------------------------------------------------------------- the run
class Bench:
    def __init__(self, args: argparse.Namespace, stamp: str):
        self.a = args
        self.stamp = stamp
        self.dir = os.path.join(RESULTS, stamp)
        self.procs = Procs(os.path.join(self.dir, "logs"))
        self.monitor: RssMonitor | None = None
        self.results: dict[str, dict[str, list]] = {"direct": defaultdict(list), "tunnel": defaultdict(list)}
        self.rss: dict = {}
        self.cpu: dict[str, list] = defaultdict(list)
        self.pids: dict[str, int] = {}

    # -- setup
    def start(self) -> None:
        a = self.a
        oport = a.origin_port or free_port()
        rport = a.relay_port or free_port()
        self.direct_url = f"http://127.0.0.1:{oport}"
        self.tunnel_url = f"http://127.0.0.1:{rport}"
        self.tunnel_host = f"app.localhost:{rport}"
        app = self.procs.start("origin", [PY, os.path.join(PEERS_SRC, "server.py"), str(oport), "127.0.0.1"])
        wait_port(oport, self.procs)
        relay = self.procs.start("relay", relay_cmd(rport, os.path.join(self.dir, "relay-data")), env=PRODUCT_ENV)
        end = time.time() + 20
        while True:
            self.procs.check_alive()
            try:
                if http_get(f"{self.tunnel_url}/_relay/health", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > end:
                raise RuntimeError("relay health check did not answer 200 within 20 s")
            time.sleep(0.2)
        agent = self.procs.start("agent", agent_cmd(oport, rport), env=PRODUCT_ENV)
        end = time.time() + 20
        while "Forwarding " not in self.procs.logtext("agent"):
            self.procs.check_alive()
            if time.time() > end:
                raise RuntimeError("agent did not print 'Forwarding ...' within 20 s")
            time.sleep(0.1)
        end = time.time() + 10
        while True:
            try:
                st, body = http_get(self.tunnel_url + "/hello", self.tunnel_host)
                if st == 200 and body == b"hello world\n":
                    break
            except OSError:
                pass
            if time.time() > end:
                raise RuntimeError("GET /hello through the tunnel did not work within 10 s")
            time.sleep(0.2)
        self.pids = {"origin": app.pid, "relay": relay.pid, "agent": agent.pid}
        self.rss["idle"] = {r: read_status(self.pids[r])["VmRSS"] for r in ("relay", "agent")}
        self.monitor = RssMonitor({"relay": relay.pid, "agent": agent.pid})
        self.monitor.start()
        log(f"ready: direct {self.direct_url}, tunnel {self.tunnel_url} (Host: {self.tunnel_host})")

    def target(self, which: str) -> tuple[str, str | None]:
        return (self.direct_url, None) if which == "direct" else (self.tunnel_url, self.tunnel_host)

    def measure(self, which: str, name: str, fn, *fargs) -> dict:
        self.procs.check_alive()
        self.monitor.set_phase(f"{which}:{name}")
        before = {r: cpu_secs(p) for r, p in self.pids.items()}
        t0 = time.monotonic()
        res = fn(*fargs)
        wall = time.monotonic() - t0
        res["cpu_pct"] = {r: round(100 * (cpu_secs(p) - before[r]) / wall) for r, p in self.pids.items()}
        self.results[which][name].append(res)
        shown = {k: v for k, v in res.items() if k not in ("cpu_pct",)}
        cpu = " ".join(f"{r}={v}%" for r, v in res["cpu_pct"].items())
        log(f"{which:6s} {name:10s} " + " ".join(f"{k}={v}" for k, v in shown.items()) + f"  cpu: {cpu}")
        return res

    def run(self) -> None:
        a = self.a
        bulk = a.bulk_mib * MIB
        for rnd in range(1, a.repeat + 1):
            log(f"round {rnd}/{a.repeat}")
            for name, conns, threads in (("hello_c32", 32, 2), ("hello_c1", 1, 1)):
                for which in ("direct", "tunnel"):
                    self.measure(which, name, wrk, *self.target(which), conns, threads, a.duration)
            for which in ("direct", "tunnel"):
                self.measure(which, "download", download, *self.target(which), bulk)
            for which in ("direct", "tunnel"):
                self.measure(which, "upload", upload, *self.target(which), bulk)
        big = a.big_mib * MIB
        hwm_so_far = {r: read_status(self.pids[r])["VmHWM"] for r in ("relay", "agent")}
        self.rss["hwm_before_big"] = hwm_so_far
        for name, fn in (("big_download", download), ("big_upload", upload)):
            if name == "big_upload" and a.no_big_upload:
                continue
            reset = all(reset_hwm(self.pids[r]) for r in ("relay", "agent"))
            self.measure("tunnel", name, fn, *self.target("tunnel"), big, 600)
            hwm = {r: read_status(self.pids[r])["VmHWM"] for r in ("relay", "agent")}
            self.rss[name] = {"hwm_reset": reset, "hwm": hwm,
                              "sampled": {r: self.monitor.max[(r, f"tunnel:{name}")] for r in ("relay", "agent")}}
        self.monitor.set_phase("end")
        final = {r: read_status(self.pids[r]) for r in ("relay", "agent")}
        self.rss["whole_run"] = {
            "hwm": {r: max([final[r]["VmHWM"], hwm_so_far[r]] + [self.rss[n]["hwm"][r] for n in ("big_download", "big_upload") if n in self.rss])
                    for r in ("relay", "agent")},
            "sampled": {r: self.monitor.max[(r, "*")] for r in ("relay", "agent")},
            "end_rss": {r: final[r]["VmRSS"] for r in ("relay", "agent")},
        }
        self.rss["sampled_by_phase"] = {f"{r}@{ph}": v for (r, ph), v in sorted(self.monitor.max.items())}
        self.procs.check_alive()

    def profile(self) -> dict:
        """py-spy both processes while wrk drives small GETs at c32 through the tunnel."""
        spy = os.path.join(os.path.dirname(PY), "py-spy")
        spy = spy if os.path.exists(spy) else shutil.which("py-spy")
        if not spy:
            log("py-spy not found: `.venv/bin/pip install py-spy`; skipping the profile")
            return {}
        secs = self.a.profile_secs
        self.monitor.set_phase("profile")
        url, host = self.target("tunnel")
        load = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{secs + 4}s", "--timeout", "5s"] + host_args(host) + [url + "/hello"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        spies = {}
        try:
            time.sleep(1.5)
            for role in ("relay", "agent"):
                out = os.path.join(self.dir, f"profile-{role}.speedscope.json")
                spies[role] = (out, subprocess.Popen(
                    [spy, "record", "--pid", str(self.pids[role]), "-d", str(secs), "-r", str(PROFILE_RATE),
                     "--format", "speedscope", "-o", out, "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True))
            for role, (out, p) in spies.items():
                try:
                    p.wait(secs + 30)
                except subprocess.TimeoutExpired:
                    pass
            load.wait(secs + 30)
        finally:
            for _, p in spies.values():
                stop_group(p, grace=2)
            stop_group(load, grace=2)
        summary = {}
        for role, (out, p) in spies.items():
            if os.path.exists(out):
                summary[role] = {"file": os.path.relpath(out, ROOT), **speedscope_top(out, self.a.profile_top, PROFILE_RATE, secs)}
            else:
                summary[role] = {"error": (p.stderr.read() if p.stderr else b"").decode(errors="replace")[-300:]}
        return summary

    def stop(self) -> None:
        if self.monitor:
            self.monitor.halt.set()
        self.procs.stop()
        shutil.rmtree(os.path.join(self.dir, "relay-data"), ignore_errors=True)


# The product runs from this working tree (python -m, cwd and PYTHONPATH = repo root), not
# from whatever copy the venv's console scripts import: a non-editable `pip install .`
# leaves a stale copy in site-packages. --installed uses the console scripts instead.
USE_INSTALLED = False
PRODUCT_ENV = {"PYTHONPATH": ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}


def product_base(script: str, module: str) -> list[str]:
    exe = os.path.join(os.path.dirname(PY), script)
    if USE_INSTALLED and os.path.exists(exe):
        return [exe]
    return [PY, "-m", module]


def product_source() -> str:
    """Where the relay and agent processes import the product from (checked, not assumed)."""
    code = "import relay_server, relay_client, relay_protocol as p, os; print(os.path.dirname(os.path.dirname(p.__file__)))"
    if USE_INSTALLED:
        cmd = [PY, "-c", code]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=dict(os.environ))
    else:
        r = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, **PRODUCT_ENV))
    if r.returncode:
        raise SystemExit(f"cannot import the product with {PY}: {r.stderr.strip()[-300:]}")
    return r.stdout.strip()


def relay_cmd(port: int, data_dir: str) -> list[str]:
    base = product_base("relay-server", "relay_server")
    return base + ["serve", "--open", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", data_dir,
                   "--log-level", "warning"]


_AGENT_HELP: str | None = None


def agent_cmd(local_port: int, relay_port: int) -> list[str]:
    global _AGENT_HELP
    base = product_base("relay-client", "relay_client")
    if _AGENT_HELP is None:
        _AGENT_HELP = run_cmd(base + ["http", "--help"], timeout=30, env={"COLUMNS": "200", **PRODUCT_ENV}).stdout
    extra = ["--no-inspect"] if "--no-inspect" in _AGENT_HELP else []  # the inspector is not what we measure
    return base + ["http", str(local_port), "--server", f"http://localhost:{relay_port}", "--subdomain", "app"] + extra


# Frames on every stack (CLI wrappers, the loop runner): left out of the inclusive list.
BORING = re.compile(r"typer/|click/|asyncio/runners\.py|uvloop/__init__|eventloop\.py|/cli\.py|<module>|runpy")


def speedscope_top(path: str, n: int, rate: int, secs: int) -> dict:
    """Top-n functions by own (self) time, and by inclusive time, from a py-spy speedscope file."""
    with open(path) as f:
        doc = json.load(f)
    frames = doc["shared"]["frames"]
    self_t, total_t, all_w, count = defaultdict(float), defaultdict(float), 0.0, 0
    for prof in doc["profiles"]:
        for stack, w in zip(prof["samples"], prof["weights"]):
            if not stack:
                continue
            all_w += w
            count += 1
            keys = [func_key(frames[i]) for i in stack]
            self_t[keys[-1]] += w  # speedscope stacks run root -> leaf
            for k in set(keys):
                total_t[k] += w
    pct = lambda v: round(100 * v / all_w, 1) if all_w else 0.0
    interesting = [(k, v) for k, v in total_t.items() if not BORING.search(k)]
    return {"samples": count, "busy_pct": round(100 * count / (rate * secs)) if rate and secs else None,
            "self": [(k, pct(v)) for k, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:n]],
            "total": [(k, pct(v)) for k, v in sorted(interesting, key=lambda kv: -kv[1])[:n]]}


def func_key(fr: dict) -> str:
    """'function (short/path.py)': site-packages/, stdlib and repo prefixes cut off."""
    name, file = fr.get("name", "?"), fr.get("file") or ""
    for marker in ("site-packages/", ROOT + "/"):
        if marker in file:
            return f"{name} ({file.split(marker, 1)[1]})"
    m = re.search(r"lib/python3\.\d+/(.+)$", file)
    return f"{name} ({m.group(1) if m else file})"


# ---------------------------------------------------------------- peers via the shared harness
def run_peers(args: argparse.Namespace, stamp: str, out: str) -> int:
    bench = os.path.join(PEERS_SRC, "bench.py")
    peers = [p for p in args.peers.split(",") if p]
    if not os.path.exists(os.path.join(PEERS_DIR, ".venv", "bin", "python")) or (
            {"ssh", "ssh+nginx"} & set(peers) and not shutil.which("nginx")):
        if args.setup_peers:
            log(f"installing peers into {PEERS_DIR}")
            r = subprocess.run(["bash", os.path.join(PEERS_SRC, "setup.sh")], env=dict(os.environ, PEERS_DIR=PEERS_DIR),
                               start_new_session=True)
            if r.returncode:
                raise RuntimeError("peer setup failed")
        else:
            raise SystemExit(f"peers are not installed: run `PEERS_DIR={PEERS_DIR} bash {PEERS_SRC}/setup.sh` "
                             "(or pass --setup-peers)")
    env = dict(os.environ, PEERS_DIR=PEERS_DIR, BENCH_OUT=out, BENCH_DURATION=str(args.duration),
               BENCH_REPEAT=str(args.repeat), BENCH_BULK_BYTES=str(args.bulk_mib * MIB),
               BENCH_MEASURES=args.peer_measures)
    if "custom" in peers:
        rport = free_port()
        pp = "" if USE_INSTALLED else f"PYTHONPATH={shlex.quote(PRODUCT_ENV['PYTHONPATH'])} "
        relay = pp + shlex.join(relay_cmd(rport, os.path.join(RESULTS, stamp, "peer-relay-data")))
        agent = pp + shlex.join(agent_cmd(0, rport)).replace(" http 0 ", " http $LOCAL_PORT ")
        env.update(CUSTOM_RELAY_CMD=relay, CUSTOM_AGENT_CMD=agent, CUSTOM_URL=f"http://127.0.0.1:{rport}",
                   CUSTOM_HOST=f"app.localhost:{rport}", CUSTOM_READY_URL=f"http://127.0.0.1:{rport}/_relay/health")
    cmd = [sys.executable, bench, "direct"] + [p for p in peers if p != "direct"]
    log(f"peers via the shared harness: {shlex.join(cmd)} (BENCH_OUT={os.path.relpath(out, ROOT)})")
    p = subprocess.Popen(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        return p.wait()
    finally:
        stop_group(p, grace=20)  # SIGTERM lets bench.py stop the processes it started


def load_peer_results(path: str) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    if os.path.exists(path):
        for line in open(path):
            r = json.loads(line)
            rows[r["peer"]][r["measure"]].append(r)
    return rows


# ---------------------------------------------------------------- report
def med(recs: list, key: str):
    vals = [r[key] for r in recs if r.get(key) is not None and r.get("ok", True)]
    return statistics.median(vals) if vals else None


def fmt(v, nd=0, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float) and nd:
        return f"{v:,.{nd}f}{unit}"
    return f"{round(v):,}{unit}"


def ratio(a, b, nd=2):
    return f"{a / b:.{nd}f}" if a is not None and b else "–"


def runs_note(recs: list, key: str, nd=0) -> str:
    vals = [("FAILED" if not r.get("ok", True) else fmt(r.get(key), nd)) for r in recs]
    return " / ".join(vals)


def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    git = run_cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], 10).stdout.strip()
    product = ["relay_server", "relay_client", "relay_protocol"]
    dirty = run_cmd(["git", "-C", ROOT, "status", "--porcelain", "--"] + product, 10).stdout.strip().splitlines()
    if dirty:  # identify the uncommitted state by a hash of its diff
        diff = subprocess.run(["git", "-C", ROOT, "diff", "HEAD", "--"] + product, capture_output=True).stdout
        dirty = f" + {len(dirty)} uncommitted product file(s), diff sha1 {hashlib.sha1(diff).hexdigest()[:10]}"
    wrkv = run_cmd(["wrk", "-v"], 10)
    return {"nproc": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu": model, "mem_mib": mem,
            "kernel": platform.release(), "python": platform.python_version(),
            "wrk": (wrkv.stdout + wrkv.stderr).split("\n")[0].split(" Copyright")[0],
            "git": git + (dirty or "")}


def report(b: Bench | None, meta: dict, peers: dict, prof: dict) -> str:
    L = []
    a = meta["args"]
    L.append(f"### Run of {meta['date']}")
    L.append("")
    L.append(f"- command: `{meta['command']}`")
    m = meta["machine"]
    L.append(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem_mib']:,} MiB RAM, Linux {m['kernel']}, "
             f"Python {m['python']}, {m['wrk']}; load generator, origin, relay and agent share the CPUs")
    L.append(f"- product: git {m['git']}, imported from `{meta['product_source']}`; "
             f"load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']}")
    L.append(f"- settings: wrk {a['duration']} s per run, {a['repeat']} run(s) per measure (median shown, "
             f"runs in brackets), bulk {a['bulk_mib']} MiB, big transfers {a['big_mib']} MiB; "
             f"origin = shared peers' server.py (aiohttp + uvloop)")
    L.append("")
    if b is not None:
        d, t = b.results["direct"], b.results["tunnel"]
        L.append("| measure | direct | localrelay | tunnel/direct | CPU % of one core during the tunnel run: origin / relay / agent |")
        L.append("|---|---|---|---|---|")

        def cpu(recs):
            vals = [r["cpu_pct"] for r in recs if "cpu_pct" in r]
            if not vals:
                return "–"
            return " / ".join(str(round(statistics.median(v[k] for v in vals))) for k in ("origin", "relay", "agent"))

        def row(label, name, key, nd=0, lower_better=False):
            dv, tv = med(d[name], key), med(t[name], key)
            dn = f"{fmt(dv, nd)} ({runs_note(d[name], key, nd)})" if len(d[name]) > 1 else fmt(dv, nd)
            tn = f"{fmt(tv, nd)} ({runs_note(t[name], key, nd)})" if len(t[name]) > 1 else fmt(tv, nd)
            if any(not r.get("ok", True) for r in t[name]):
                tn += " **(failed run(s))**"
            rt = ratio(tv, dv) + ("×" if lower_better else "")
            L.append(f"| {label} | {dn} | {tn} | {rt} | {cpu(t[name]) if key in ('rps', 'mib_s') else ''} |")

        row("small GET, 32 conns: req/s", "hello_c32", "rps")
        row("  c32 latency p50, ms", "hello_c32", "p50_ms", 2, True)
        row("  c32 latency p99, ms", "hello_c32", "p99_ms", 2, True)
        row("small GET, 1 conn: req/s", "hello_c1", "rps")
        row("  c1 latency p50, ms", "hello_c1", "p50_ms", 2, True)
        row("  c1 latency p99, ms", "hello_c1", "p99_ms", 2, True)
        row(f"download {a['bulk_mib']} MiB, MiB/s", "download", "mib_s", 1)
        row(f"upload {a['bulk_mib']} MiB, MiB/s", "upload", "mib_s", 1)
        for name, label in (("big_download", "download"), ("big_upload", "upload")):
            if t.get(name):
                row(f"{label} {a['big_mib']} MiB (tunnel only), MiB/s", name, "mib_s", 1)
        errs = sum(r.get("errors", 0) for w in (d, t) for n in ("hello_c32", "hello_c1") for r in w[n])
        L.append("")
        if errs:
            L.append(f"wrk reported **{errs} errors** (non-2xx or socket errors) in total.")
            L.append("")
        # memory
        rs = b.rss
        L.append("| peak RSS, MiB | relay VmHWM | relay sampled max | agent VmHWM | agent sampled max |")
        L.append("|---|---|---|---|---|")
        mb = lambda v: f"{v / MIB:.1f}" if v else "–"
        for name, label in (("big_download", f"during the {a['big_mib']} MiB download"),
                            ("big_upload", f"during the {a['big_mib']} MiB upload")):
            if name in rs:
                h, s = rs[name]["hwm"], rs[name]["sampled"]
                note = "" if rs[name]["hwm_reset"] else " (VmHWM not resettable: whole run so far)"
                L.append(f"| {label}{note} | {mb(h['relay'])} | {mb(s['relay'])} | {mb(h['agent'])} | {mb(s['agent'])} |")
        w = rs["whole_run"]
        L.append(f"| whole run | {mb(w['hwm']['relay'])} | {mb(w['sampled']['relay'])} | {mb(w['hwm']['agent'])} | "
                 f"{mb(w['sampled']['agent'])} |")
        L.append(f"| RSS at start (tunnel up, idle) | {mb(rs['idle']['relay'])} | | {mb(rs['idle']['agent'])} | |")
        L.append(f"| RSS at the end (after all transfers) | {mb(w['end_rss']['relay'])} | | {mb(w['end_rss']['agent'])} | |")
        L.append("")
        # targets
        vals = target_values(b)
        L.append("| target (from the issue) | when | measured | verdict |")
        L.append("|---|---|---|---|")
        for key, label, op, goal, unit, when in TARGETS:
            v = vals.get(key)
            label = label.replace("1 GiB", f"{a['big_mib']} MiB").replace("200 MiB", f"{a['bulk_mib']} MiB")
            L.append(f"| {label} {op} {goal:g}{(' ' + unit) if unit else ''} | {when} | "
                     f"{fmt(v, 2 if key in ('c32_ratio', 'c1_p99_ms') else 1)}{(' ' + unit) if unit and v is not None else ''} "
                     f"| {verdict(v, op, goal)} |")
        L.append("")
    if peers:
        L.extend(peers_table(b, peers))
    if prof:
        L.append(f"Profile (py-spy, {a['profile_secs']} s at {PROFILE_RATE} Hz, non-idle samples, small GETs at c32 "
                 "through the tunnel): top functions by own time, and by inclusive time")
        L.append("")
        for role, p in prof.items():
            if "error" in p:
                L.append(f"- {role}: py-spy failed: {p['error']}")
                continue
            L.append(f"{role}: {p['samples']} non-idle samples (busy ~{p.get('busy_pct')}% of the time); "
                     f"`{p['file']}` opens in https://www.speedscope.app. `Runner.run (asyncio/runners.py)` own time "
                     "is time inside uvloop's C code (socket syscalls, callback dispatch); a "
                     "function's own time includes the C calls it makes (`StreamWriter._write` = `transport.write`, "
                     "i.e. the send() syscall).")
            L.append("")
            L.append("| # | function (file) | own % | | function (file), inclusive | incl. % |")
            L.append("|---|---|---|---|---|---|")
            for i, ((fs, ps), (ft, pt)) in enumerate(zip(p["self"], p["total"]), 1):
                L.append(f"| {i} | `{fs}` | {ps} | | `{ft}` | {pt} |")
            L.append("")
    return "\n".join(L)


def target_values(b: Bench) -> dict:
    d, t = b.results["direct"], b.results["tunnel"]
    c32d, c32t = med(d["hello_c32"], "rps"), med(t["hello_c32"], "rps")
    rss = lambda r: max([b.rss[n]["hwm"][r] for n in ("big_download", "big_upload") if n in b.rss]
                        + [b.rss[n]["sampled"][r] for n in ("big_download", "big_upload") if n in b.rss]) / MIB
    return {"c32_ratio": c32t / c32d if c32t is not None and c32d else None,
            "c1_p99_ms": med(t["hello_c1"], "p99_ms"),
            "download_mib_s": med(t["download"], "mib_s"), "upload_mib_s": med(t["upload"], "mib_s"),
            "relay_rss_1g": rss("relay"), "agent_rss_1g": rss("agent")}


def verdict(v, op, goal) -> str:
    if v is None:
        return "not measured"
    met = v >= goal if op == ">=" else v < goal
    if op == ">=":
        gap = f"{v / goal:.2f} of the goal; needs ×{goal / v:.2f}" if v else "needs a working run"
        return f"met ({v / goal:.2f}× the goal)" if met else f"**missed**: {gap}"
    return f"met ({100 * (goal - v) / goal:.0f}% headroom)" if met else f"**missed** by {v - goal:.2f} ({v / goal:.2f}× the limit)"


def peers_table(b: Bench | None, peers: dict) -> list[str]:
    L = ["Other tunnels, measured right after by the shared harness (`/work/shared/peers/bench.py`, same origin and "
         "loads; its own `direct` row is the baseline for the ×direct figures):", ""]
    L.append("| peer | c32 req/s (×direct) | c1 req/s, p99 ms | download MiB/s | upload MiB/s | echo MiB/s | "
             "SSE first event ms | peak RSS MiB (sum of its processes) | localrelay/peer: c32, c1, down, up |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    base = peers.get("direct", {})
    dc32 = med(base.get("hello_c32", []), "rps")
    ours = {}
    t = b.results["tunnel"] if b is not None else peers.get("custom", {})  # ours, else ours via the harness
    if t:
        ours = {"c32": med(t.get("hello_c32", []), "rps"), "c1": med(t.get("hello_c1", []), "rps"),
                "down": med(t.get("download", []), "mib_s"), "up": med(t.get("upload", []), "mib_s")}
    for peer, m in peers.items():
        c32 = med(m.get("hello_c32", []), "rps")
        c1 = med(m.get("hello_c1", []), "rps")
        down, up = med(m.get("download", []), "mib_s"), med(m.get("upload", []), "mib_s")
        echo = med(m.get("echo", []), "mib_s")
        sse = med(m.get("sse", []), "first_ms")
        fails = [k for k in ("download", "upload", "echo", "sse") if any(not r.get("ok", True) for r in m.get(k, []))]
        rss = m.get("peak_rss", [{}])[-1].get("mib")
        name = "localrelay (via harness)" if peer == "custom" else peer
        name += f" (failed: {', '.join(fails)})" if fails else ""
        cmp = " / ".join(ratio(ours.get(k), v) for k, v in (("c32", c32), ("c1", c1), ("down", down), ("up", up))) \
            if peer not in ("direct", "custom") and ours else "–"
        L.append(f"| {name} | {fmt(c32)} ({ratio(c32, dc32)}) | {fmt(c1)}, {fmt(med(m.get('hello_c1', []), 'p99_ms'), 2)} | "
                 f"{fmt(down, 1)} | {fmt(up, 1)} | {fmt(echo, 1)} | {fmt(sse, 1)} | {fmt(rss, 1)} | {cmp} |")
    L.append("")
    return L


def ensure_tools() -> None:
    if not shutil.which("curl"):
        raise SystemExit("curl is needed: apt-get install -y curl")
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk missing: installing it (apt-get install -y wrk)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env)
            subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: sudo apt-get install -y wrk")


def loadavg() -> str:
    return open("/proc/loadavg").read().split()[0]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Benchmark localrelay against the origin directly (loopback).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--repeat", type=int, default=2, help="runs of each direct/tunnel measure (median reported)")
    p.add_argument("--bulk-mib", type=int, default=200, help="size of the download/upload measures")
    p.add_argument("--big-mib", type=int, default=1024, help="size of the tunnel transfer watched for RSS")
    p.add_argument("--no-big-upload", action="store_true", help="only the big download, not the big upload")
    p.add_argument("--quick", action="store_true", help="smoke run: --duration 3 --repeat 1 --bulk-mib 50 --big-mib 200")
    p.add_argument("--peers", default="", help="comma list run after ours via the shared harness: "
                                                "ssh,ssh+nginx,localtunnel,custom (custom = localrelay through the harness)")
    p.add_argument("--peer-measures", default="hello_c32,hello_c1,download,upload,echo,sse")
    p.add_argument("--peers-only", action="store_true", help="skip our direct/tunnel run, only the peers")
    p.add_argument("--setup-peers", action="store_true", help="run the shared setup.sh if peers are missing")
    p.add_argument("--profile", action="store_true", help="py-spy the relay and agent under c32 load at the end")
    p.add_argument("--profile-secs", type=int, default=10)
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--installed", action="store_true",
                   help="run the venv's relay-server/relay-client console scripts instead of this working tree")
    p.add_argument("--origin-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--relay-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--write", nargs="?", const=os.path.join(ROOT, "BENCHMARKS.md"), default=None, metavar="FILE",
                   help="append the markdown section to FILE (default BENCHMARKS.md)")
    a = p.parse_args()
    if a.quick:
        a.duration, a.repeat, a.bulk_mib, a.big_mib = 3, 1, 50, 200
    return a


def _on_signal(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    global USE_INSTALLED
    a = parse_args()
    USE_INSTALLED = a.installed
    ensure_tools()
    now = dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python3"
    meta = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "command": f"{exe} bench/run.py {shlex.join(sys.argv[1:])}".strip(),
            "machine": machine(), "load_start": loadavg(), "args": vars(a), "product_source": product_source()}
    os.makedirs(os.path.join(RESULTS, stamp), exist_ok=True)
    b, prof, peers, rc = None, {}, {}, 0
    t0 = time.monotonic()
    if not a.peers_only:
        b = Bench(a, stamp)
        try:
            b.start()
            b.run()
            if a.profile:
                prof = b.profile()
        finally:
            b.stop()
    if a.peers:
        out = os.path.join(RESULTS, stamp, "peers.jsonl")
        rc = run_peers(a, stamp, out)
        peers = load_peer_results(out)
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - t0)
    text = report(b, meta, peers, prof)
    print(text)
    raw = {"meta": meta, "results": b.results if b else {}, "rss": b.rss if b else {}, "profile": prof,
           "peers": peers}
    path = os.path.join(RESULTS, f"run-{stamp}.json")
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=dict)
    log(f"raw figures: {os.path.relpath(path, ROOT)}; logs: bench/results/{stamp}/logs; took {meta['elapsed_s']} s")
    big = os.path.join(RESULTS, f"upload-{a.big_mib * MIB}.bin")
    if a.big_mib > a.bulk_mib and os.path.exists(big):
        os.remove(big)  # 1 GiB is a lot to leave behind; remade in ~1 s
    if a.write:
        if not os.path.exists(a.write):
            with open(a.write, "w") as f:
                f.write("# Benchmarks\n\nRun `.venv/bin/python bench/run.py --write` to append a section.\n")
        with open(a.write, "a") as f:
            f.write("\n" + text.rstrip() + "\n")
        log(f"appended to {a.write}")
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # everything we started is already stopped (finally blocks)
        print("# interrupted", file=sys.stderr)
        sys.exit(130)

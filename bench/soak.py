#!/usr/bin/env python3
"""Bounded soak: agents connect and leave in waves while traffic runs; is the relay's memory flat?

    .venv/bin/python bench/soak.py                  # 3 minutes, 100 churning agents
    .venv/bin/python bench/soak.py --minutes 2 --agents 150 --json bench/results/soak.json

Everything on 127.0.0.1, one fresh relay (``--open``, this working tree) and these
processes around it, each started here in its own session and stopped by PID:

- an origin (``soak_children.py origin``: ``/hello`` and ``/bytes?n=``);
- ``--traffic-tunnels`` real ``relay-client`` processes that carry the traffic;
- an agent worker (``soak_children.py agents``) holding ``--agents`` in-process
  tunnels (``relay_client.Tunnel``, the library face): every ``--wave-seconds`` it opens
  half that many new ones and closes the oldest half, so agents keep arriving and leaving;
- each wave, ``--killed-per-wave`` more ``relay-client`` processes are started and the
  previous wave's are SIGKILLed (agents that vanish without a goodbye);
- load: ``wrk`` (small GETs, if installed) and an aiohttp mix in this process: small GETs,
  1 MiB downloads, downloads abandoned after 128 KiB, requests for a name with no agent.

Every ``--interval`` seconds the relay's VmRSS and open fds (/proc) and its tunnel count
(``/_relay/health``) are sampled.  After ``--warmup`` seconds, the samples are cut in
thirds; the run is **flat** when the last third's maximum RSS is within ``--tolerance``
percent of the first third's maximum, and so is its maximum of fds beyond one socket per
connected agent (plus ``FD_SLACK``; raw fd counts follow the waves).  Prints a table
and the verdict; exit status 0 when flat, 1 when not, 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from idle_tunnels import raise_nofile  # fd limit for relay and agent worker (bench/ is on sys.path: it holds this script)

#: The origin and the agent worker (run as child processes).
CHILDREN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak_children.py")

MIB = 1024 * 1024

#: Seconds any process gets to come up or to stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

#: Absolute fd slack of the verdict, on top of the percentage.
FD_SLACK = 10

#: The aiohttp mix: cumulative shares of small GETs, 1 MiB downloads, abandoned downloads; the rest go to a missing name.
MIX = (0.80, 0.93, 0.98)

#: Body sizes of the mix.
DOWNLOAD_BYTES = 1 * MIB
ABANDONED_BYTES = 16 * MIB
ABANDON_AFTER = 128 * 1024

#: Seconds one load request may take before it counts as an error.
REQUEST_TIMEOUT = 30.0


def log(msg: str) -> None:
    print(f"# soak: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A port free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Open fds of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def health(port: int) -> dict:
    """The relay's ``/_relay/health``."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_relay/health", headers={"Host": f"localhost:{port}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def tunnels_now(port: int) -> int:
    """The relay's tunnel count, or -1 if it did not answer within health's timeout (a finding, not a crash)."""
    try:
        return int(health(port).get("tunnels", -1))
    except OSError:
        return -1


def load_average() -> str:
    """The 1/5/15-minute load averages, as the kernel prints them."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --------------------------------------------------------------------------- orchestrator
@dataclass
class Sample:
    """One reading of the relay."""

    t: float
    rss: int
    fds: int
    tunnels: int
    requests: int
    errors: int


@dataclass
class Counts:
    """What the aiohttp load saw."""

    ok: int = 0
    offline: int = 0
    abandoned: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


class Child:
    """A child process in its own session, its stdout lines collected on a thread."""

    def __init__(self, name: str, argv: list[str], raise_limit: bool = False, stderr_path: str | None = None) -> None:
        self.name = name
        self.argv = argv
        self.lines: list[str] = []
        self._cond = threading.Condition()
        stderr = open(stderr_path, "w") if stderr_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            text=True, start_new_session=True, preexec_fn=raise_nofile if raise_limit else None,
            env={**{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}, "PYTHONUNBUFFERED": "1"},
        )
        if stderr_path:
            stderr.close()  # the child has its own copy
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = START_TIMEOUT) -> str:
        """The first stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) before printing {prefix!r}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not print {prefix!r} within {timeout:g}s")
                self._cond.wait(0.2)

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL by PID (a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)


#: Runs the relay under tracemalloc: SIGUSR1 takes a snapshot; from the second on, the growth since
#: the first (top allocation sites, with tracebacks) is written to the file named in argv[1].
TRACED_RELAY = """
import gc, runpy, signal, sys, tracemalloc
out = sys.argv.pop(1)
tracemalloc.start(12)
first = []
def dump(*_):
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    if not first:
        first.append(snap)
        return
    lines = snap.compare_to(first[0], 'lineno')
    with open(out, 'w') as f:
        f.write(f'total growth: {sum(s.size_diff for s in lines) / 1024:.0f} KiB\\n\\nby line:\\n')
        f.write('\\n'.join(str(s) for s in lines[:25]) + '\\n\\nby traceback:\\n')
        for stat in snap.compare_to(first[0], 'traceback')[:10]:
            f.write(f'{stat}\\n' + '\\n'.join(stat.traceback.format(limit=12)) + '\\n\\n')
signal.signal(signal.SIGUSR1, dump)
sys.argv[0] = 'relay_server'
runpy.run_module('relay_server', run_name='__main__', alter_sys=True)
"""


def agent_cmd(origin_port: int, relay_port: int, subdomain: str | None = None) -> list[str]:
    """A real ``relay-client http`` process for this relay."""
    argv = [sys.executable, "-m", "relay_client", "http", str(origin_port), "--server", f"http://localhost:{relay_port}", "--no-inspect"]
    return argv + (["--subdomain", subdomain] if subdomain else [])


async def aiohttp_load(relay_port: int, hosts: list[str], concurrency: int, deadline: float, counts: Counts) -> None:
    """The request mix until ``deadline``, ``concurrency`` at a time."""
    import aiohttp

    base = f"http://127.0.0.1:{relay_port}"
    missing = f"nobody-here.localhost:{relay_port}"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as session:

        async def one() -> None:
            host = random.choice(hosts)
            r = random.random()
            if r < MIX[0]:
                async with session.get(f"{base}/hello", headers={"Host": host}) as response:
                    body = await response.read()
                    ok = response.status == 200 and body == b"hello world\n"
                    kind = f"hello {response.status}"
            elif r < MIX[1]:
                async with session.get(f"{base}/bytes?n={DOWNLOAD_BYTES}", headers={"Host": host}) as response:
                    size = 0
                    async for chunk in response.content.iter_chunked(1 << 16):
                        size += len(chunk)
                    ok = response.status == 200 and size == DOWNLOAD_BYTES
                    kind = f"download {response.status} {size}"
            elif r < MIX[2]:
                async with session.get(f"{base}/bytes?n={ABANDONED_BYTES}", headers={"Host": host}) as response:
                    got = 0
                    while got < ABANDON_AFTER:
                        chunk = await response.content.read(1 << 16)
                        if not chunk:
                            break
                        got += len(chunk)
                    response.close()  # drop the connection mid-body: the relay must free the stream
                    ok = response.status == 200 and got >= ABANDON_AFTER
                    kind = f"abandon {response.status}"
                    if ok:
                        counts.abandoned += 1
                        return
            else:
                async with session.get(f"{base}/hello", headers={"Host": missing, "Accept": "application/json"}) as response:
                    await response.read()
                    ok = response.status == 502 and response.headers.get("X-Relay-Error") == "tunnel-offline"
                    kind = f"offline {response.status}"
                    if ok:
                        counts.offline += 1
                        return
            if ok:
                counts.ok += 1
            else:
                counts.error(kind)

        async def worker() -> None:
            while time.monotonic() < deadline:
                try:
                    await one()
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                    counts.error(type(exc).__name__)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def start_wrk(relay_port: int, host: str, seconds: int, connections: int) -> subprocess.Popen[str] | None:
    """wrk on small GETs for the whole run, if wrk is installed."""
    if not shutil.which("wrk"):
        log("wrk not found: the aiohttp mix carries all the traffic")
        return None
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-H", f"Host: {host}", f"http://127.0.0.1:{relay_port}/hello"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def parse_wrk(output: str) -> dict:
    """Requests, non-2xx and socket errors from wrk's summary."""
    result = {"requests": 0, "non_2xx": 0, "socket_errors": 0}
    for line in output.splitlines():
        words = line.split()
        if "requests in" in line:
            result["requests"] = int(words[0])
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(words[-1])
        elif line.strip().startswith("Socket errors"):
            result["socket_errors"] = sum(int(w.rstrip(",")) for w in words if w.rstrip(",").isdigit())
    return result


def extra_fds(sample: Sample) -> int | None:
    """Open fds beyond one websocket per connected agent (None if the tunnel count is unknown).

    Each agent holds one socket on the relay, so raw fd counts follow the waves (a sample
    taken while a wave is half opened shows 50 more); what is left is listeners, public
    connections and anything leaked.
    """
    return sample.fds - sample.tunnels if sample.tunnels >= 0 else None


def verdict(samples: list[Sample], tolerance: float) -> dict:
    """Compare the last third of the samples with the first: max RSS, and max fds beyond the agents' sockets."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    rss_first, rss_last = max(s.rss for s in first), max(s.rss for s in last)
    extra_first = max((e for s in first if (e := extra_fds(s)) is not None), default=0)
    extra_last = max((e for s in last if (e := extra_fds(s)) is not None), default=0)
    rss_flat = rss_last <= rss_first * (1 + tolerance / 100)
    fds_flat = extra_last <= extra_first * (1 + tolerance / 100) + FD_SLACK
    return {
        "samples_per_third": third,
        "rss_first_max_mib": round(rss_first / MIB, 1),
        "rss_last_max_mib": round(rss_last / MIB, 1),
        "rss_change_pct": round((rss_last - rss_first) / rss_first * 100, 1),
        "extra_fds_first_max": extra_first,
        "extra_fds_last_max": extra_last,
        "flat": rss_flat and fds_flat,
        "rss_flat": rss_flat,
        "fds_flat": fds_flat,
    }


def print_table(samples: list[Sample], warmup: float) -> None:
    """One row per sample."""
    print("| t (s) | tunnels | relay RSS (MiB) | relay fds | fds − tunnels | requests so far | errors so far |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for s in samples:
        mark = " (warm-up)" if s.t < warmup else ""
        extra = extra_fds(s)
        print(
            f"| {s.t:.0f}{mark} | {s.tunnels if s.tunnels >= 0 else 'no answer'} | {s.rss / MIB:.1f} | {s.fds} | "
            f"{extra if extra is not None else '–'} | {s.requests} | {s.errors} |"
        )


async def orchestrate(args: argparse.Namespace) -> int:
    """Start everything, run the soak, sample, stop everything, report."""
    raise_nofile()
    children: list[Child] = []
    killed_wave: list[Child] = []
    wrk: subprocess.Popen[str] | None = None
    data_dir = tempfile.mkdtemp(prefix="soak-relay-")
    relay_log = args.relay_log or os.path.join(data_dir, "relay.log")
    try:
        origin_port, relay_port = free_port(), free_port()
        origin = Child("origin", [sys.executable, CHILDREN, "origin", str(origin_port)])
        children.append(origin)
        launch = [sys.executable, "-c", TRACED_RELAY, args.trace_relay] if args.trace_relay else [sys.executable, "-m", "relay_server"]
        relay = Child(
            "relay",
            [*launch, "serve", "--open", "--host", "127.0.0.1", "--http-port", str(relay_port),
             "--data-dir", data_dir],
            raise_limit=True,
            stderr_path=relay_log,
        )
        children.append(relay)
        origin.wait_for("origin listening")
        deadline = time.monotonic() + START_TIMEOUT * (4 if args.trace_relay else 1)  # tracemalloc slows imports
        while True:
            try:
                health(relay_port)
                break
            except OSError:
                if time.monotonic() > deadline or relay.proc.poll() is not None:
                    raise RuntimeError("the relay did not become healthy")
                time.sleep(0.2)
        hosts = []
        for index in range(args.traffic_tunnels):
            name = f"soak-t{index}"
            child = Child(f"agent {name}", agent_cmd(origin_port, relay_port, name))
            children.append(child)
            child.wait_for("Forwarding ")
            hosts.append(f"{name}.localhost:{relay_port}")
        relay_pid = relay.proc.pid
        idle = (rss_bytes(relay_pid), open_fds(relay_pid))
        log(f"relay up: {idle[1]} fds, {idle[0] / MIB:.1f} MiB with {args.traffic_tunnels} tunnels; load average {load_average()}")

        worker = Child(
            "agent worker",
            [sys.executable, CHILDREN, "agents", "--server", f"http://localhost:{relay_port}",
             "--local", f"http://127.0.0.1:{origin_port}", "--agents", str(args.agents), "--wave-seconds", str(args.wave_seconds)],
            raise_limit=True,
        )
        children.append(worker)
        worker.wait_for("{", timeout=START_TIMEOUT + args.agents)
        log(f"{args.agents} churning agents connected; load begins")

        seconds = args.minutes * 60
        started = time.monotonic()
        deadline = started + seconds
        if not args.no_wrk:
            wrk = start_wrk(relay_port, hosts[0], int(seconds), args.wrk_connections)
        counts = Counts()
        load = asyncio.create_task(aiohttp_load(relay_port, hosts, args.concurrency, deadline, counts))
        samples: list[Sample] = []
        next_wave = started + args.wave_seconds
        load_start = load_average()
        traced = False
        while time.monotonic() < deadline:
            now = time.monotonic()
            if args.trace_relay and not traced and now - started >= args.warmup:
                os.kill(relay_pid, signal.SIGUSR1)  # the reference snapshot
                traced = True
            if now >= next_wave:  # agents that vanish without a goodbye
                for child in killed_wave:
                    child.kill()
                killed_wave = [Child("killed agent", agent_cmd(origin_port, relay_port)) for _ in range(args.killed_per_wave)]
                next_wave = now + args.wave_seconds
            tunnels = tunnels_now(relay_port)
            samples.append(
                Sample(now - started, rss_bytes(relay_pid), open_fds(relay_pid), tunnels, counts.ok + counts.offline + counts.abandoned, counts.errors)
            )
            if relay.proc.poll() is not None:
                raise RuntimeError(f"the relay exited ({relay.proc.returncode}) during the soak")
            await asyncio.sleep(max(0.0, min(args.interval, deadline - time.monotonic())))
        await asyncio.wait_for(load, REQUEST_TIMEOUT + 10)
        if args.trace_relay:
            os.kill(relay_pid, signal.SIGUSR1)  # growth over the measured part, written to the file
        load_end = load_average()
        wrk_result = {}
        if wrk is not None:
            out, _ = wrk.communicate(timeout=STOP_TIMEOUT + 10)
            wrk_result = parse_wrk(out)

        # Everyone leaves; the relay should drop back to what it held with just the traffic tunnels.
        for child in killed_wave:
            child.kill()
        worker.stop()
        settle_deadline = time.monotonic() + 30
        while tunnels_now(relay_port) != args.traffic_tunnels and time.monotonic() < settle_deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        after = (rss_bytes(relay_pid), open_fds(relay_pid), tunnels_now(relay_port))
        churn = json.loads(next((line for line in reversed(worker.lines) if line.startswith("{")), "{}"))

        with open(relay_log, errors="replace") as f:
            relay_lines = f.read().splitlines()
        tracebacks = sum(1 for line in relay_lines if line.startswith("Traceback"))
        measured = [s for s in samples if s.t >= args.warmup]
        result = verdict(measured, args.tolerance)
        print(f"command: {' '.join(shlex.quote(a) for a in sys.argv)}")
        print(f"load average (1/5/15 min): {load_start} at the start, {load_end} at the end; {os.cpu_count()} cores")
        print(f"relay before load: {idle[1]} fds, {idle[0] / MIB:.1f} MiB RSS ({args.traffic_tunnels} tunnels)")
        print(
            f"agents: {churn.get('opened', 0)} library tunnels opened and {churn.get('closed', 0)} closed in "
            f"{churn.get('wave', 0)} waves ({churn.get('failed', 0)} failed to open), plus "
            f"{args.killed_per_wave} relay-client processes SIGKILLed per wave"
        )
        print(
            f"aiohttp mix: {counts.ok} ok, {counts.offline} tunnel-offline 502s (expected), "
            f"{counts.abandoned} downloads abandoned mid-body, {counts.errors} errors {counts.error_kinds or ''}"
        )
        if wrk_result:
            print(f"wrk /hello: {wrk_result['requests']} requests, {wrk_result['non_2xx']} non-2xx, {wrk_result['socket_errors']} socket errors")
        kept = relay_log if args.relay_log else "not kept; --relay-log FILE keeps it"
        print(f"relay log: {len(relay_lines)} lines, {tracebacks} tracebacks ({kept})")
        print()
        print_table(samples, args.warmup)
        print()
        print(
            f"after everyone left: {after[2]} tunnels, {after[1]} fds, {after[0] / MIB:.1f} MiB RSS "
            f"(before load: {idle[1]} fds, {idle[0] / MIB:.1f} MiB)"
        )
        print(
            f"verdict: {'FLAT' if result['flat'] else 'NOT FLAT'}: RSS max {result['rss_first_max_mib']} MiB in the first third "
            f"after warm-up, {result['rss_last_max_mib']} MiB in the last ({result['rss_change_pct']:+}%, tolerance {args.tolerance:g}%); "
            f"fds beyond the agents' sockets max {result['extra_fds_first_max']} then {result['extra_fds_last_max']} "
            f"(tolerance {args.tolerance:g}% + {FD_SLACK})"
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {"args": vars(args), "samples": [asdict(s) for s in samples], "verdict": result, "wrk": wrk_result,
                     "counts": asdict(counts), "churn": churn, "idle": idle, "after": after, "tracebacks": tracebacks,
                     "load_average": [load_start, load_end]},
                    f, indent=1,
                )
        return 0 if result["flat"] else 1
    finally:
        if wrk is not None and wrk.poll() is None:
            wrk.kill()
            wrk.wait(STOP_TIMEOUT)
        for child in killed_wave:
            child.kill()
        for child in reversed(children):
            child.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # token store, and the log unless --relay-log


def traceback_summary(exc: BaseException) -> str:
    """Where in this script ``exc`` was raised (file:line of the innermost frame here)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == os.path.abspath(__file__)]
    return f"line {frames[-1].lineno}: {frames[-1].line}" if frames else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the soak (default 3)")
    parser.add_argument("--agents", type=int, default=100, help="churning library agents held at once (default 100)")
    parser.add_argument("--wave-seconds", type=float, default=10.0, help="seconds between waves (default 10)")
    parser.add_argument("--killed-per-wave", type=int, default=2, help="relay-client processes SIGKILLed per wave (default 2)")
    parser.add_argument("--traffic-tunnels", type=int, default=2, help="relay-client processes carrying traffic (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="aiohttp requests in flight (default 8)")
    parser.add_argument("--wrk-connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--no-wrk", action="store_true", help="aiohttp load only")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (default 5)")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds left out of the verdict (default 20)")
    parser.add_argument("--tolerance", type=float, default=10.0, help="percent the last third may exceed the first (default 10)")
    parser.add_argument("--json", help="also write samples and verdict to this file")
    parser.add_argument("--relay-log", metavar="FILE", help="keep the relay's log here (default: in its temporary data dir)")
    parser.add_argument(
        "--trace-relay", metavar="FILE",
        help="run the relay under tracemalloc and write its top allocation growth (warm-up to end) to FILE; slows it down",
    )
    args = parser.parse_args()
    if args.traffic_tunnels < 1 or args.agents < 2 or args.minutes <= 0:
        parser.error("need --traffic-tunnels >= 1, --agents >= 2 and --minutes > 0")
    if args.minutes * 60 < args.warmup + 3 * args.interval:
        parser.error(
            f"--minutes {args.minutes:g} leaves no samples after the {args.warmup:g} s warm-up: the verdict needs "
            f"at least {(args.warmup + 3 * args.interval) / 60:.2f} minutes (or a shorter --warmup)"
        )
    try:
        return asyncio.run(orchestrate(args))
    except (RuntimeError, OSError) as exc:
        log(f"soak failed: {exc!r} ({traceback_summary(exc)})")
        return 2


if __name__ == "__main__":
    sys.exit(main())

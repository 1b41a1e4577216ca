#!/usr/bin/env python3
"""CPU time per small request in the relay and in the agent, robust to a busy machine.

Throughput moves with whatever else runs on the cores; the CPU each of our processes
spends per completed request hardly does.  This starts an origin (the shared peers'
aiohttp server), a relay and an agent, drives ``GET /hello`` through the tunnel with
``wrk -cC -dD``, reads utime+stime of relay and agent from ``/proc/PID/stat`` before and
after, and divides by the requests wrk completed.  Repeated R times; the median is shown.

    .venv/bin/python bench/cpu_per_request.py                       # this tree, 3 x 10 s at c32
    .venv/bin/python bench/cpu_per_request.py --tree /tmp/base      # another copy of the tree
    .venv/bin/python bench/cpu_per_request.py --tree /tmp/before --compare /tmp/after --repeat 6   # A/B, alternating

``--tree`` (or ``--relay-tree`` / ``--agent-tree``) runs ``python -m relay_server`` /
``python -m relay_client`` from that directory, so two copies can be compared in one
sitting with the same venv.

``--floor`` also measures, in the same rounds, two byte pipes on uvloop in a chain in
front of the same origin (``bench/pipe_floor.py``): the shape of a relay and an agent
with none of their work, so what a Python tunnel costs at the least on this machine
(reported as its "relay" and "agent").

``--narrow`` also measures ``bench/narrow_floor.py`` the same way: a relay and an agent
that do only the work our wire shape requires (llhttp at both ends, heads, websocket and
multiplexer framing; no flow control, limits, metrics, logs or inspector), once with the
JSON heads of ``relay_protocol.heads`` and once with NUL-separated binary heads: the
ceiling a rewritten per-request path could reach in Python.

``--ssh`` adds ``ssh -R`` (the peers' harness set-up) the same way: sshd counted as the
"relay" (with every process it forks), ssh as the "agent".

    .venv/bin/python bench/cpu_per_request.py --floor --ssh --conns 1 --threads 1 --duration 5 --repeat 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
ORIGIN = "/work/shared/peers/server.py"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_secs(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def syscalls(pid: int) -> tuple[int, int]:
    """(read-like, write-like) syscalls so far, from /proc/PID/io (counts recv/send too)."""
    with open(f"/proc/{pid}/io") as f:
        fields = dict(line.split(": ") for line in f.read().splitlines())
    return int(fields["syscr"]), int(fields["syscw"])


#: Every process started, so ``main`` stops them all by PID even when a stack fails half-way up.
STARTED: list[subprocess.Popen] = []


def start(cmd: list[str], tree: str | None, log: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ, **(env_extra or {}))
    if tree:
        env["PYTHONPATH"] = tree
    out = open(log, "wb")
    p = subprocess.Popen(cmd, cwd=tree or ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    STARTED.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=2) as r:
        return r.status, r.read()


def wait_until(check, what: str, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready within {timeout} s")


def wrk(url: str, host: str, conns: int, threads: int, secs: float) -> int:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{int(secs)}s", "-H", f"Host: {host}", url + "/hello"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 60).stdout
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise RuntimeError(f"no request count in wrk output: {out[-500:]}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} failed responses through the tunnel")
    return int(m.group(1))


def print_profile(role: str, path: str, n: int = 25) -> None:
    """Top functions by own time and by inclusive time from a py-spy raw (collapsed) file."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            frames = [fr.split(" (")[0] + " (" + fr.split(" (")[-1].split(":")[0].rsplit("/", 2)[-1]
                      for fr in stack.split(";") if fr and not fr.startswith(("process ", "thread "))]
            c = int(count)
            total += c
            if frames:
                own[frames[-1]] = own.get(frames[-1], 0) + c
            for fr in set(frames):
                incl[fr] = incl.get(fr, 0) + c
    print(f"-- {role}: {total} samples; own time")
    for fr, c in sorted(own.items(), key=lambda kv: -kv[1])[:n]:
        print(f"   {100 * c / total:5.1f}%  {fr}")
    print(f"-- {role}: inclusive")
    for fr, c in sorted(incl.items(), key=lambda kv: -kv[1])[:n]:
        print(f"   {100 * c / total:5.1f}%  {fr}")


class Stack:
    """One origin + relay + agent, run from given product trees."""

    #: py-spy can read the stacks of its relay and agent (False for ``ssh -R``'s C processes).
    profiled = True

    def __init__(self, name: str, relay_tree: str, agent_tree: str, agent_args: list[str], logs: str) -> None:
        self.name, self.relay_tree, self.agent_tree = name, relay_tree, agent_tree
        self.procs: list[subprocess.Popen] = []
        oport, rport = free_port(), free_port()
        self.origin = self._start([PY, ORIGIN, str(oport), "127.0.0.1"], None, f"{logs}/{name}-origin.log")
        wait_until(lambda: get(f"http://127.0.0.1:{oport}/hello")[0] == 200, "origin")
        self.relay = self._start([PY, "-m", "relay_server", "serve", "--open", "--host", "127.0.0.1", "--http-port",
                                  str(rport), "--data-dir", f"{logs}/{name}-relay-data", "--log-level", "warning"],
                                 relay_tree, f"{logs}/{name}-relay.log")
        wait_until(lambda: get(f"http://127.0.0.1:{rport}/_relay/health")[0] == 200, "relay")
        self.agent = self._start([PY, "-m", "relay_client", "http", str(oport), "--server", f"http://localhost:{rport}",
                                  "--subdomain", "app", *agent_args], agent_tree, f"{logs}/{name}-agent.log")
        self.host = f"app.localhost:{rport}"
        self.url = f"http://127.0.0.1:{rport}"
        wait_until(lambda: get(self.url + "/hello", self.host) == (200, b"hello world\n"), "tunnel")
        print(f"  {name}: origin pid {self.origin.pid}, relay pid {self.relay.pid}, agent pid {self.agent.pid}",
              flush=True)

    def _start(self, cmd: list[str], tree: str | None, log: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
        p = start(cmd, tree, log, env_extra)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop(p)

    def cpu(self, p: subprocess.Popen) -> float:
        """CPU seconds a role's process has used so far."""
        return cpu_secs(p.pid)

    def calls(self, p: subprocess.Popen) -> tuple[int, int]:
        """A role's (read-like, write-like) syscalls so far."""
        return syscalls(p.pid)

    def round(self, a: argparse.Namespace, profile: str | None = None) -> dict:
        roles = (("relay", self.relay), ("agent", self.agent), ("origin", self.origin))
        spies = []
        if profile and self.profiled:
            os.makedirs(profile, exist_ok=True)
            for role, p in roles[:2]:
                out = os.path.join(profile, f"{self.name}-{role}.raw.txt")
                spies.append((role, out, subprocess.Popen(
                    [os.path.join(os.path.dirname(PY), "py-spy"), "record", "-r", "200", "-d", str(a.duration),
                     "-f", "raw", "--nonblocking", "-p", str(p.pid), "-o", out],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)))
        before = {r: self.cpu(p) for r, p in roles}
        calls = {r: self.calls(p) for r, p in roles[:2]}
        n = wrk(self.url, self.host, a.conns, a.threads, a.duration)
        row = {r: 1e6 * (self.cpu(p) - before[r]) / n for r, p in roles}
        for r, p in roles[:2]:
            now = self.calls(p)
            row[f"{r}_reads"], row[f"{r}_writes"] = ((now[i] - calls[r][i]) / n for i in (0, 1))
        row["req_s"] = n / a.duration
        print(f"  {self.name}: {n} requests ({row['req_s']:.0f}/s): relay {row['relay']:.0f} µs, agent "
              f"{row['agent']:.0f} µs, origin {row['origin']:.0f} µs CPU per request; read/write syscalls per "
              f"request: relay {row['relay_reads']:.2f}/{row['relay_writes']:.2f}, "
              f"agent {row['agent_reads']:.2f}/{row['agent_writes']:.2f}", flush=True)
        for role, out, spy in spies:
            spy.wait(60)
            print_profile(role, out)
        return row


class FloorStack(Stack):
    """An origin behind two uvloop byte pipes (``pipe_floor.py``): the relay's and the agent's places, no work."""

    def __init__(self, logs: str) -> None:  # noqa: PLW0231  (a different stack, the same rounds)
        self.name, self.relay_tree, self.agent_tree = "floor", "bench/pipe_floor.py", "bench/pipe_floor.py"
        self.procs = []
        oport, back, front = free_port(), free_port(), free_port()
        pipe = os.path.join(ROOT, "bench", "pipe_floor.py")
        self.origin = self._start([PY, ORIGIN, str(oport), "127.0.0.1"], None, f"{logs}/floor-origin.log")
        wait_until(lambda: get(f"http://127.0.0.1:{oport}/hello")[0] == 200, "origin")
        self.agent = self._start([PY, pipe, str(back), str(oport)], None, f"{logs}/floor-back.log")
        self.relay = self._start([PY, pipe, str(front), str(back)], None, f"{logs}/floor-front.log")
        self.host = f"127.0.0.1:{front}"
        self.url = f"http://127.0.0.1:{front}"
        wait_until(lambda: get(self.url + "/hello") == (200, b"hello world\n"), "pipes")
        print(f"  floor: origin pid {self.origin.pid}, front pipe pid {self.relay.pid}, back pipe pid {self.agent.pid}",
              flush=True)


class NarrowStack(Stack):
    """An origin behind ``narrow_floor.py``: a relay and an agent doing only the work our wire shape requires."""

    def __init__(self, logs: str, binary: bool = False) -> None:  # noqa: PLW0231  (a different stack, the same rounds)
        name = "narrow-binary" if binary else "narrow"
        self.name, self.relay_tree, self.agent_tree = name, "bench/narrow_floor.py", "bench/narrow_floor.py"
        self.procs = []
        heads = {"NARROW_HEADS": "binary"} if binary else None
        oport, aport, front = free_port(), free_port(), free_port()
        narrow = os.path.join(ROOT, "bench", "narrow_floor.py")
        self.origin = self._start([PY, ORIGIN, str(oport), "127.0.0.1"], None, f"{logs}/{name}-origin.log")
        wait_until(lambda: get(f"http://127.0.0.1:{oport}/hello")[0] == 200, "origin")
        self.relay = self._start([PY, narrow, "relay", str(front), str(aport)], None, f"{logs}/{name}-relay.log", heads)
        wait_until(lambda: "listening" in _text(f"{logs}/{name}-relay.log"), "narrow relay")
        self.agent = self._start([PY, narrow, "agent", str(aport), str(oport)], None, f"{logs}/{name}-agent.log", heads)
        self.host = f"127.0.0.1:{front}"
        self.url = f"http://127.0.0.1:{front}"
        wait_until(lambda: get(self.url + "/hello") == (200, b"hello world\n"), "narrow tunnel")
        print(f"  {name}: origin pid {self.origin.pid}, relay pid {self.relay.pid}, agent pid {self.agent.pid}",
              flush=True)


def _text(path: str) -> str:
    with open(path) as f:
        return f.read()


class SshStack(Stack):
    """The origin behind ``ssh -R`` (sshd in the relay's place, ssh in the agent's), set up by the peers' harness."""

    profiled = False

    def __init__(self, logs: str) -> None:  # noqa: PLW0231  (a different stack, the same rounds)
        import importlib.util

        self.name, self.relay_tree, self.agent_tree = "ssh -R", "sshd", "ssh"
        self.procs = []
        os.environ.setdefault("PEERS_DIR", os.path.join(ROOT, ".peers"))  # the harness reads it at import
        spec = importlib.util.spec_from_file_location("peers_harness", os.path.join(os.path.dirname(ORIGIN), "bench.py"))
        harness = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(harness)  # type: ignore[union-attr]
        self.harness = harness
        self.origin = self._start([PY, ORIGIN, str(harness.LOCAL_PORT), "127.0.0.1"], None, f"{logs}/ssh-origin.log")
        wait_until(lambda: get(f"http://127.0.0.1:{harness.LOCAL_PORT}/hello")[0] == 200, "origin")
        self.peer_procs = harness.Procs()
        harness.start_ssh(self.peer_procs)
        started = {role: p for role, p, _ in self.peer_procs.items}
        self.relay, self.agent = started["sshd"], started["ssh"]
        self.url = f"http://127.0.0.1:{harness.SSH_FWD_PORT}"
        self.host = f"127.0.0.1:{harness.SSH_FWD_PORT}"
        wait_until(lambda: get(self.url + "/hello") == (200, b"hello world\n"), "ssh -R")
        print(f"  ssh -R: origin pid {self.origin.pid}, sshd pid {self.relay.pid}, ssh pid {self.agent.pid}", flush=True)

    def cpu(self, p: subprocess.Popen) -> float:
        """sshd forks a process per connection (and one more for privilege separation): count them all."""
        total = 0.0
        for pid in self.harness.descendants([p.pid]):
            try:
                total += cpu_secs(pid)
            except (OSError, IndexError, ValueError):
                pass
        return total

    def calls(self, p: subprocess.Popen) -> tuple[int, int]:
        reads = writes = 0
        for pid in self.harness.descendants([p.pid]):
            try:
                r, w = syscalls(pid)
            except (OSError, KeyError, ValueError):
                continue
            reads, writes = reads + r, writes + w
        return reads, writes

    def stop(self) -> None:
        self.peer_procs.stop()
        super().stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=None, help="product tree for both processes (default: this one)")
    ap.add_argument("--relay-tree", default=None)
    ap.add_argument("--agent-tree", default=None)
    ap.add_argument("--compare", default=None, metavar="TREE",
                    help="also run a second stack from TREE; rounds alternate between the two (A/B in one sitting)")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--agent-args", default="--no-inspect", help="extra relay-client http options")
    ap.add_argument("--narrow", action="store_true",
                    help="also measure the narrowest relay and agent of our wire shape (bench/narrow_floor.py), "
                         "with JSON heads and with binary ones")
    ap.add_argument("--floor", action="store_true",
                    help="also measure two uvloop byte pipes in the relay's and agent's places (bench/pipe_floor.py)")
    ap.add_argument("--ssh", action="store_true",
                    help="also measure ssh -R in front of an origin (sshd as 'relay', ssh as 'agent'; needs "
                         "/work/shared/peers and Debian's openssh-server)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="py-spy record relay and agent during the last round into DIR; print top own-time functions "
                         "(our stacks and the narrow and floor pairs; ssh -R is C and is not profiled)")
    a = ap.parse_args()
    logs = tempfile.mkdtemp(prefix="cpu-per-request-")
    stacks: list[Stack] = []
    try:
        stacks.append(Stack("A", a.relay_tree or a.tree or ROOT, a.agent_tree or a.tree or ROOT,
                            a.agent_args.split(), logs))
        if a.compare:
            stacks.append(Stack("B", a.compare, a.compare, a.agent_args.split(), logs))
        if a.floor:
            stacks.append(FloorStack(logs))
        if a.narrow:
            stacks.append(NarrowStack(logs))
            stacks.append(NarrowStack(logs, binary=True))
        if a.ssh:
            stacks.append(SshStack(logs))
        for s in stacks:
            wrk(s.url, s.host, a.conns, a.threads, 2)  # warm-up
        rows: dict[str, list[dict]] = {s.name: [] for s in stacks}
        for i in range(a.repeat):
            for s in (stacks if i % 2 == 0 else stacks[::-1]):
                rows[s.name].append(s.round(a, a.profile if i == a.repeat - 1 else None))
        out = {}
        for s in stacks:
            med = {k: statistics.median(r[k] for r in rows[s.name]) for k in ("relay", "agent", "origin", "req_s")}
            out[s.name] = med
            print(f"{s.name} median of {a.repeat}: relay {med['relay']:.0f} µs, agent {med['agent']:.0f} µs, "
                  f"relay+agent {med['relay'] + med['agent']:.0f} µs per request; {med['req_s']:.0f} req/s "
                  f"(relay {s.relay_tree}, agent {s.agent_tree})")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        if a.json:
            print(json.dumps({"median": out, "rounds": rows}))
    finally:
        for s in stacks:
            s.stop()
        for p in reversed(STARTED):  # those of a stack that failed before it was up
            stop(p)


if __name__ == "__main__":
    main()

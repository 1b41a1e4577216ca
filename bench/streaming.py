#!/usr/bin/env python3
"""Two latency measures for bench/run.py, each run as its own process (JSON on stdout).

    streaming.py sse URL [--host H] [--events 20] [--interval 0.1]
        GET /sse?n=EVENTS: the origin (the peers' server.py) writes one event every INTERVAL
        seconds whose data is its time.time_ns() at the write. For each event: arrival time
        at this client (time.time_ns() right after recv() returns it) minus that stamp, the
        first event included. Same clock on both ends (one machine). Reports p50 / max of
        those delays, the first event's delay, and the time from sending the request to the
        first event (that one also contains the request's trip and the stream's opening).

    streaming.py during-download URL [--host H] [--bytes 1073741824] [--conns 4] [--secs 4]
        Small GETs (/hello) on CONNS keep-alive connections, one request at a time per
        connection, for SECS seconds, once with no other traffic ("alone") and once while a
        1 GiB download runs on the same tunnel ("during"): curl -o /dev/null reading as fast
        as it can, started LEAD seconds before the small requests so it is at full speed;
        if it completes before the window ends, the next one starts at once, so a download
        is in flight for the whole window. Reports p50/p90/p99/max latency and req/s of
        both, and the download's MiB/s.

The small-request client is a minimal HTTP/1.1 client on asyncio (uvloop when installed),
TCP_NODELAY, one process; its own overhead is in both the "alone" and "during" figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit

MIB = 1024 * 1024
CURL_STALL = ["--speed-time", "10", "--speed-limit", "1024"]


def pct(sorted_vals: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


# ---------------------------------------------------------------- SSE
def sse(url: str, host: str | None, events: int, interval: float, timeout: float) -> dict:
    u = urlsplit(url)
    deadline = time.monotonic() + timeout
    s = socket.create_connection((u.hostname, u.port or 80), 5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got: list[tuple[int, int]] = []  # (written ns, arrived ns)
    try:
        req = (f"GET {u.path.rstrip('/')}/sse?n={events}&interval={interval} HTTP/1.1\r\nHost: {host or u.netloc}\r\n"
               "Accept: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n").encode()
        t_req = time.time_ns()
        s.sendall(req)
        buf = b""
        seen = 0
        while len(got) < events:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                data = s.recv(65536)
            except socket.timeout:
                break
            now = time.time_ns()
            if not data:
                break
            buf += data
            stamps = re.findall(rb"\ndata: (\d+)\n", buf)
            for ts in stamps[seen:]:
                got.append((int(ts), now))
            seen = len(stamps)
    finally:
        s.close()
    if not got:
        return {"ok": False, "events": 0, "error": "no event arrived"}
    delays = sorted((r - w) / 1e6 for w, r in got)
    spread = (got[-1][1] - got[0][1]) / 1e6
    expect = (events - 1) * interval * 1000
    return {"ok": len(got) == events and spread > 0.5 * expect, "events": len(got),
            "p50_ms": round(statistics.median(delays), 3), "max_ms": round(delays[-1], 3),
            "first_ms": round((got[0][1] - got[0][0]) / 1e6, 3),
            "first_after_request_ms": round((got[0][1] - t_req) / 1e6, 2),
            "over_5ms": sum(d > 5 for d in delays), "spread_ms": round(spread)}


# ---------------------------------------------------------------- small GETs
async def _open(host: str, port: int):
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return reader, writer


async def _one_conn(host: str, port: int, req: bytes, stop_at: float, lat: list[float], errors: list[str],
                    reconnects: list[int]) -> None:
    """One keep-alive connection, one request at a time; a connection the server closes between
    requests (keep-alive limits, e.g. nginx's 1,000 requests) is reopened and the request timed anew."""
    try:
        reader, writer = await _open(host, port)
    except OSError as e:
        errors.append(f"connect: {e}")
        return
    try:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            writer.write(req)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except (asyncio.IncompleteReadError, ConnectionResetError) as e:
                if isinstance(e, asyncio.IncompleteReadError) and e.partial:
                    raise
                writer.close()
                reconnects.append(1)
                reader, writer = await _open(host, port)
                continue
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
            if not head.startswith(b"HTTP/1.1 200") or not m:
                errors.append(head[:80].decode(errors="replace"))
                return
            await asyncio.wait_for(reader.readexactly(int(m.group(1))), 10)
            lat.append(time.perf_counter() - t0)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError) as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        writer.close()


async def small_gets(url: str, host: str | None, conns: int, secs: float) -> dict:
    u = urlsplit(url)
    req = f"GET /hello HTTP/1.1\r\nHost: {host or u.netloc}\r\n\r\n".encode()
    lat: list[float] = []
    errors: list[str] = []
    reconnects: list[int] = []
    t0 = time.perf_counter()
    await asyncio.gather(*(_one_conn(u.hostname, u.port or 80, req, t0 + secs, lat, errors, reconnects)
                           for _ in range(conns)))
    wall = time.perf_counter() - t0
    ms = sorted(v * 1000 for v in lat)
    return {"requests": len(ms), "rps": round(len(ms) / wall), "p50_ms": _r(pct(ms, 50)), "p90_ms": _r(pct(ms, 90)),
            "p99_ms": _r(pct(ms, 99)), "max_ms": _r(ms[-1] if ms else None), "errors": len(errors),
            "reconnects": len(reconnects),
            **({"first_error": errors[0]} if errors else {})}


def _r(v):
    return round(v, 3) if v is not None else None


class Downloader(threading.Thread):
    """Runs curl downloads of NBYTES back to back until `stop` is set (the last one completes)."""

    def __init__(self, url: str, host: str | None, nbytes: int, timeout: float):
        super().__init__(daemon=True)
        self.cmd = ["curl", "-s", "-o", "/dev/null", "-m", str(int(timeout))] + CURL_STALL
        self.cmd += ["-w", "%{http_code} %{size_download} %{time_total}"]
        self.cmd += (["-H", f"Host: {host}"] if host else []) + [f"{url}/bytes/{nbytes}"]
        self.nbytes = nbytes
        self.stop = threading.Event()
        self.results: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self.started = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
            self.started.set()
            out, err = self.proc.communicate()
            try:
                code, size, t = out.split()
                self.results.append({"ok": code == "200" and int(size) == self.nbytes,
                                     "mib_s": round(int(size) / float(t) / MIB, 1), "secs": round(float(t), 2)})
            except ValueError:
                self.results.append({"ok": False, "error": f"curl rc {self.proc.returncode} {err[-120:]}"})
                return

    def kill(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def during_download(url: str, host: str | None, nbytes: int, conns: int, secs: float, lead: float,
                          timeout: float) -> dict:
    alone = await small_gets(url, host, conns, secs)
    await asyncio.sleep(0.5)
    dl = Downloader(url, host, nbytes, timeout)
    dl.start()
    try:
        await asyncio.to_thread(dl.started.wait, 10)
        await asyncio.sleep(lead)
        in_flight_at_start = not dl.results
        during = await small_gets(url, host, conns, secs)
        dl.stop.set()
        await asyncio.to_thread(dl.join, timeout)
    finally:
        dl.stop.set()
        dl.kill()
    ok_dl = [r for r in dl.results if r.get("ok")]
    return {"alone": alone, "during": during, "downloads": len(dl.results),
            "download_ok": bool(dl.results) and len(ok_dl) == len(dl.results),
            "download_mib_s": round(statistics.median(r["mib_s"] for r in ok_dl), 1) if ok_dl else None,
            "download_in_flight_at_start": in_flight_at_start,
            "ok": bool(during["requests"]) and not during["errors"] and bool(ok_dl)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sse")
    s.add_argument("url")
    s.add_argument("--host")
    s.add_argument("--events", type=int, default=20)
    s.add_argument("--interval", type=float, default=0.1)
    s.add_argument("--timeout", type=float, default=20)
    d = sub.add_parser("during-download")
    d.add_argument("url")
    d.add_argument("--host")
    d.add_argument("--bytes", type=int, default=1 << 30)
    d.add_argument("--conns", type=int, default=4)
    d.add_argument("--secs", type=float, default=4)
    d.add_argument("--lead", type=float, default=0.5)
    d.add_argument("--timeout", type=float, default=120, help="per download")
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda s_, f: (_ for _ in ()).throw(SystemExit(f"signal {s_}")))
    if a.cmd == "sse":
        res = sse(a.url, a.host, a.events, a.interval, a.timeout)
    else:
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        res = asyncio.run(during_download(a.url, a.host, a.bytes, a.conns, a.secs, a.lead, a.timeout))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())

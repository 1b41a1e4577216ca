#!/usr/bin/env python3
"""The soak's child processes (see soak.py): the origin, and the worker that keeps agents coming and going.

    python bench/soak_children.py origin PORT
    python bench/soak_children.py agents --server URL --local URL --agents N --wave-seconds S

The agent worker holds N library tunnels (``relay_client.Tunnel``); every S seconds it opens
N/2 new ones and closes the N/2 oldest, printing one JSON line of totals after each wave.
It closes them all on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import deque

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"# soak: {msg}", file=sys.stderr, flush=True)


async def serve_origin(port: int) -> None:
    """``/hello`` (12 bytes) and ``/bytes?n=N`` (streamed, Content-Length) until killed."""
    from aiohttp import web

    block = os.urandom(MIB)

    async def hello(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"hello world\n", content_type="text/plain")

    async def many(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("n", "1024"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = size
        while left > 0:
            piece = block[: min(left, 256 * 1024)]
            await response.write(piece)
            left -= len(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/hello", hello)
    app.router.add_get("/bytes", many)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"origin listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


async def agent_worker(server: str, local: str, agents: int, wave_seconds: float) -> None:
    """Hold ``agents`` library tunnels; each wave open half that many new ones and close the oldest half."""
    from relay_client import Tunnel

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    live: deque[Tunnel] = deque()
    totals = {"wave": 0, "opened": 0, "closed": 0, "failed": 0}

    async def open_some(count: int) -> None:
        tunnels = [Tunnel(local=local, server=server) for _ in range(count)]
        results = await asyncio.gather(*(t.open() for t in tunnels), return_exceptions=True)
        for tunnel, result in zip(tunnels, results):
            if isinstance(result, BaseException):
                totals["failed"] += 1
                if totals["failed"] <= 5:
                    log(f"agent worker: a tunnel failed to open: {result!r}")
            else:
                live.append(tunnel)
                totals["opened"] += 1

    async def close_some(count: int) -> None:
        leaving = [live.popleft() for _ in range(min(count, len(live)))]
        await asyncio.gather(*(t.aclose() for t in leaving), return_exceptions=True)
        totals["closed"] += len(leaving)

    def report() -> None:
        print(json.dumps({**totals, "live": len(live)}), flush=True)

    for start in range(0, agents, 25):  # the first fill, in batches
        await open_some(min(25, agents - start))
    report()
    half = max(1, agents // 2)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), wave_seconds)
            break
        except asyncio.TimeoutError:
            pass
        totals["wave"] += 1
        await open_some(half)
        await close_some(len(live) - agents)
        report()
    await close_some(len(live))
    report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    origin = modes.add_parser("origin", help="serve /hello and /bytes?n= on 127.0.0.1:PORT")
    origin.add_argument("port", type=int)
    agents = modes.add_parser("agents", help="hold library tunnels that come and go in waves")
    agents.add_argument("--server", required=True)
    agents.add_argument("--local", required=True)
    agents.add_argument("--agents", type=int, required=True)
    agents.add_argument("--wave-seconds", type=float, required=True)
    args = parser.parse_args()
    if args.mode == "origin":
        asyncio.run(serve_origin(args.port))
    else:
        asyncio.run(agent_worker(args.server, args.local, args.agents, args.wave_seconds))


if __name__ == "__main__":
    main()

"""Helpers the streaming tests share: ids, the origin's state report, RSS sampling, event readers."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from support.localrelay import Origin

#: The limited relay's per-tunnel limits (``--max-streams``, ``--max-url-bytes``, ``--max-header-bytes``).
MAX_STREAMS = 5
MAX_URL_BYTES = 1024
MAX_HEADER_BYTES = 4096


def new_id() -> str:
    """A fresh id for one request, so the origin's records never mix between tests."""
    return secrets.token_hex(6)


async def origin_state(client: aiohttp.ClientSession, origin: Origin, ident: str) -> dict:
    """What the origin recorded for ``ident`` (asked directly, not through the tunnel)."""
    async with client.get(f"{origin.url}/s/state?id={ident}") as response:
        assert response.status == 200
        return await response.json()


async def wait_for_state(
    client: aiohttp.ClientSession,
    origin: Origin,
    ident: str,
    predicate: Callable[[dict], bool],
    timeout: float,
    what: str,
) -> dict:
    """Poll the origin's record for ``ident`` until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = await origin_state(client, origin, ident)
        if predicate(state):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"origin never saw {what} for {ident} within {timeout:g}s (last state {state})")


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` from /proc/PID/status (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            value, unit = line.split()[1:3]
            assert unit == "kB", line
            return int(value) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class Arrival:
    """One event as the client saw it: its payload and the wall-clock time it arrived."""

    data: dict
    arrived: float

    @property
    def delay(self) -> float:
        """Seconds between the origin writing the event and the client reading it."""
        return self.arrived - self.data["t"]


async def read_events(response: aiohttp.ClientResponse, kind: str, line_timeout: float = 5.0) -> list[Arrival]:
    """Every event of an ``/s/events`` body, stamped with its arrival time, until the body ends.

    SSE events are ``data:`` lines; ndjson and untyped bodies carry one JSON object per line.
    """
    arrivals: list[Arrival] = []
    while True:
        line = await asyncio.wait_for(response.content.readline(), line_timeout)
        arrived = time.time()
        if not line:
            return arrivals
        text = line.decode().rstrip("\n")
        if kind == "sse":
            if text.startswith("data: "):
                arrivals.append(Arrival(json.loads(text[len("data: "):]), arrived))
            else:
                assert text == "" or text.split(":", 1)[0] in ("event", "id"), text
        else:
            arrivals.append(Arrival(json.loads(text), arrived))

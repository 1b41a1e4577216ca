"""Start what the security tests drive: the guard origin, a relay with chosen options, agents."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from support.clients import RAW_READ_TIMEOUT, build_request, raw_request
from support.localrelay import START_TIMEOUT, Origin
from support.ports import LOOPBACK, free_port
from support.processes import ProcessGroup

ORIGIN_SCRIPT = Path(__file__).resolve().parent / "guard_origin.py"


def start_guard_origin(group: ProcessGroup) -> Origin:
    """Start ``guard_origin.py`` on 127.0.0.1 and wait until it listens."""
    port = free_port()
    process = group.start(f"guard-origin:{port}", [sys.executable, str(ORIGIN_SCRIPT), "--port", str(port)])
    process.wait_for_line(rf"^origin listening on 127\.0\.0\.1:{port}$", timeout=START_TIMEOUT)
    return Origin(port, process)


async def origin_record(origin: Origin, ident: str) -> dict | None:
    """What the guard origin's /upload recorded for ``ident`` (asked directly)."""
    response = await raw_request(origin.port, build_request("GET", f"/state?id={ident}", f"{LOOPBACK}:{origin.port}"))
    assert response.status == 200, response
    return json.loads(response.body)


async def wait_for_record(origin: Origin, ident: str, outcome: str, timeout: float = 20.0) -> dict:
    """Poll the origin until /upload for ``ident`` ended with ``outcome``."""
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = await origin_record(origin, ident)
        if record is not None and record["outcome"] == outcome:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"the origin never saw {ident} {outcome} within {timeout:g}s (last: {record})")


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = RAW_READ_TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not within ``timeout``)."""
    data = b""
    async with asyncio.timeout(timeout):
        while chunk := await reader.read(65536):
            data += chunk
    return data


async def relay_still_serves(relay_port: int, host: str) -> None:
    """A normal request through the tunnel still answers 200 from the origin."""
    response = await raw_request(relay_port, build_request("GET", "/still-serving", host))
    assert response.status == 200, (response.status, response.body[:300])
    assert json.loads(response.body)["raw_path"] == "/still-serving"

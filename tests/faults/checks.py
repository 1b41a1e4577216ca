"""Small public-side checks the fault tests share: one GET, and waiting for a URL to give a status."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from support.clients import make_client
from support.payloads import payload

#: Seconds one check request may take.
REQUEST_TIMEOUT = 10.0

#: Bytes of the body that proves the tunnel works end to end.
PROOF_SIZE = 300_000


async def get(url: str, timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict[str, str], bytes]:
    """GET on a fresh connection: (status, headers, body)."""
    async with make_client(timeout=timeout) as session:
        async with session.get(url, headers={"Accept": "application/json"}) as response:
            return response.status, dict(response.headers), await response.read()


async def status_of(url: str, timeout: float = REQUEST_TIMEOUT) -> int | str:
    """The status of GET url, or the name of the error if there was no answer."""
    try:
        return (await get(url, timeout))[0]
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return type(exc).__name__


async def wait_for_status(url: str, wanted: int, timeout: float, what: str) -> float:
    """Poll until GET url answers ``wanted``; the seconds that took.  Fails after ``timeout``."""
    started = time.monotonic()
    seen: list[int | str] = []
    while True:
        status = await status_of(url, timeout=min(REQUEST_TIMEOUT, timeout))
        if status == wanted:
            return time.monotonic() - started
        if not seen or seen[-1] != status:
            seen.append(status)
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: {url} did not answer {wanted} within {timeout:g}s (answers seen: {seen})")
        await asyncio.sleep(0.2)


async def assert_tunnel_works(public_url: str) -> None:
    """A body of known bytes comes through whole."""
    status, headers, body = await get(f"{public_url}/_o/bytes?n={PROOF_SIZE}")
    assert status == 200, (status, headers, body[:300])
    assert body == payload(7, PROOF_SIZE), f"{len(body)} bytes, not the expected {PROOF_SIZE}"

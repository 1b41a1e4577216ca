"""Per-tunnel limits answer at once and leave the tunnel working: streams in flight, URL and header sizes."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from streaming.tools import MAX_HEADER_BYTES, MAX_STREAMS, MAX_URL_BYTES, new_id, wait_for_state
from support.localrelay import Agent, Origin

#: Longest the request past the stream limit may wait for its 503.
MAX_REFUSAL_TIME = 1.0

#: How long the requests filling the slots hold them.
HOLD_SECONDS = 2.0


async def _works(tunnel: Agent, client: aiohttp.ClientSession, label: str) -> None:
    async with client.get(f"{tunnel.public_url}/still-working?after={label}") as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["raw_path"] == f"/still-working?after={label}"


async def test_the_request_past_max_streams_gets_503_at_once_and_the_tunnel_keeps_working(
    limited_tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ids = [new_id() for _ in range(MAX_STREAMS)]

    async def slow(ident: str) -> tuple[int, str]:
        async with client.get(f"{limited_tunnel.public_url}/s/hold?id={ident}&s={HOLD_SECONDS}") as response:
            return response.status, await response.text()

    holders = [asyncio.create_task(slow(ident)) for ident in ids]
    try:
        for ident in ids:
            await wait_for_state(client, stream_origin, ident, lambda s: s.get("outcome") == "running", 5, "a slot")
        started = time.monotonic()
        async with client.get(f"{limited_tunnel.public_url}/one-too-many") as refused:
            body = await refused.json()
        elapsed = time.monotonic() - started
        assert all(not task.done() for task in holders), "the slots were freed before the extra request: nothing proved"
        results = await asyncio.wait_for(asyncio.gather(*holders), 10)
    finally:
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)

    assert refused.status == 503
    assert refused.headers.get("X-Relay-Error") == "too-many-requests"
    assert body["error"] == "too-many-requests"
    assert elapsed < MAX_REFUSAL_TIME, f"the 503 took {elapsed:.2f}s"
    assert results == [(200, f"held {HOLD_SECONDS:g}")] * MAX_STREAMS
    await _works(limited_tunnel, client, "max-streams")


async def test_a_request_target_past_max_url_bytes_gets_414_and_the_tunnel_keeps_working(
    limited_tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    within = "/within?q=" + "a" * (MAX_URL_BYTES - len("/within?q="))
    assert len(within) == MAX_URL_BYTES
    async with client.get(f"{limited_tunnel.public_url}{within}") as response:
        assert response.status == 200
        assert (await response.json())["raw_path"] == within

    too_long = within + "b"
    async with client.get(f"{limited_tunnel.public_url}{too_long}") as response:
        assert response.status == 414
        assert response.headers.get("X-Relay-Error") == "uri-too-long"
    await _works(limited_tunnel, client, "414")


async def test_headers_past_max_header_bytes_get_431_and_the_tunnel_keeps_working(
    limited_tunnel: Agent, client: aiohttp.ClientSession
) -> None:
    # aiohttp adds a few headers of its own (Host, Accept, ...); stay well clear of the limit on both sides.
    fitting = {f"X-Fill-{i}": "f" * 400 for i in range(MAX_HEADER_BYTES // 2 // 410)}
    async with client.get(f"{limited_tunnel.public_url}/headers-fit", headers=fitting) as response:
        assert response.status == 200
        received = {k: v for k, v in (await response.json())["headers"]}
        assert all(received.get(k) == v for k, v in fitting.items())

    too_many = {f"X-Fill-{i}": "f" * 400 for i in range(MAX_HEADER_BYTES // 410 + 2)}
    assert sum(len(k) + len(v) for k, v in too_many.items()) > MAX_HEADER_BYTES
    async with client.get(f"{limited_tunnel.public_url}/headers-too-big", headers=too_many) as response:
        assert response.status == 431
        assert response.headers.get("X-Relay-Error") == "headers-too-large"
    await _works(limited_tunnel, client, "431")

"""Many requests on one tunnel at once: each gets its own answer, none waits for another."""

from __future__ import annotations

import asyncio
import secrets
import time

import aiohttp
import pytest

from support.localrelay import Agent, Origin, Relay, start_agent
from support.processes import ProcessGroup

#: How many requests are in flight together.
CONCURRENT_REQUESTS = 200


async def test_200_concurrent_requests_each_get_their_own_body_back(agent: Agent, client: aiohttp.ClientSession) -> None:
    run = secrets.token_hex(4)

    async def one(i: int) -> tuple[int, int, bytes, str]:
        body = f"request {i} of run {run} ".encode() * (1 + i % 50)
        async with client.post(f"{agent.public_url}/_o/mirror?i={i}", data=body) as response:
            return i, response.status, await response.read(), response.headers.get("X-Origin-Raw-Path", "")

    results = await asyncio.gather(*(one(i) for i in range(CONCURRENT_REQUESTS)))
    assert len(results) == CONCURRENT_REQUESTS
    for i, status, body, raw_path in results:
        assert status == 200, (i, status, body[:200])
        assert body == f"request {i} of run {run} ".encode() * (1 + i % 50)
        assert bytes.fromhex(raw_path) == f"/_o/mirror?i={i}".encode()


async def test_a_slow_request_does_not_hold_up_a_fast_one_on_the_same_tunnel(
    agent: Agent, origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident = secrets.token_hex(6)

    async def slow() -> tuple[int, str, float]:
        started = time.monotonic()
        async with client.get(f"{agent.public_url}/_o/sleep?s=3&id={ident}") as response:
            return response.status, await response.text(), time.monotonic() - started

    slow_task = asyncio.create_task(slow())
    try:
        deadline = time.monotonic() + 5
        while True:  # wait (bounded) until the origin is actually sleeping on the slow request
            async with client.get(f"{origin.url}/_o/seen?id={ident}") as seen:
                if (await seen.json())["started"]:
                    break
            assert time.monotonic() < deadline, "the slow request never reached the origin"
            await asyncio.sleep(0.05)

        started = time.monotonic()
        async with client.get(f"{agent.public_url}/fast?id={ident}") as fast:
            fast_info = await fast.json()
            assert fast.status == 200
        fast_elapsed = time.monotonic() - started
        assert fast_info["raw_path"] == f"/fast?id={ident}"
        assert fast_elapsed < 1.0, f"fast request took {fast_elapsed:.2f}s behind a slow one"
        assert not slow_task.done(), "the slow request finished early; the test proves nothing"

        status, text, slow_elapsed = await asyncio.wait_for(slow_task, 15)
    finally:
        slow_task.cancel()
    assert status == 200
    assert text == "slept 3"
    assert slow_elapsed >= 2.9


async def _started(client: aiohttp.ClientSession, origin: Origin, ident: str) -> bool:
    async with client.get(f"{origin.url}/_o/seen?id={ident}") as seen:
        return (await seen.json())["started"]


async def _wait_started(client: aiohttp.ClientSession, origin: Origin, ident: str, what: str) -> None:
    deadline = time.monotonic() + 10
    while not await _started(client, origin, ident):
        assert time.monotonic() < deadline, f"{what} never reached the origin"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("limit", [1, 2])
async def test_local_connections_caps_the_requests_the_local_server_sees_at_once(
    processes: ProcessGroup, relay: Relay, origin: Origin, client: aiohttp.ClientSession, limit: int
) -> None:
    """``--local-connections N``: with N streams held open, the next request waits for one to end."""
    agent = start_agent(
        processes, relay, str(origin.port), relay.token, f"cap{limit}{secrets.token_hex(3)}",
        extra=("--local-connections", str(limit)),
    )
    idents = [secrets.token_hex(6) for _ in range(limit + 1)]

    async def drip(ident: str) -> bytes:
        async with client.get(f"{agent.public_url}/_o/drip?id={ident}") as response:
            assert response.status == 200
            return await response.read()

    streams = [asyncio.create_task(drip(ident)) for ident in idents[:limit]]
    try:
        for ident in idents[:limit]:
            await _wait_started(client, origin, ident, "a held stream")
        waiting = asyncio.create_task(drip(idents[limit]))
        streams.append(waiting)
        await asyncio.sleep(1.0)
        assert not await _started(client, origin, idents[limit]), "a request got past the connection limit"
        async with client.get(f"{origin.url}/_o/release?id={idents[0]}") as released:
            assert released.status == 200
        assert await asyncio.wait_for(streams[0], 10) == b'{"part":"first"}\n{"part":"second"}\n'
        await _wait_started(client, origin, idents[limit], "the waiting request, once a connection was free")
        for ident in idents[1:]:
            async with client.get(f"{origin.url}/_o/release?id={ident}"):
                pass
        bodies = await asyncio.wait_for(asyncio.gather(*streams[1:]), 10)
        assert bodies == [b'{"part":"first"}\n{"part":"second"}\n'] * limit
    finally:
        for stream in streams:
            stream.cancel()


async def test_by_default_many_streams_reach_the_local_server_at_once(
    agent: Agent, origin: Origin, client: aiohttp.ClientSession
) -> None:
    """The counterpart: the shared agent (256 connections) lets three held streams through together."""
    idents = [secrets.token_hex(6) for _ in range(3)]

    async def drip(ident: str) -> bytes:
        async with client.get(f"{agent.public_url}/_o/drip?id={ident}") as response:
            return await response.read()

    streams = [asyncio.create_task(drip(ident)) for ident in idents]
    try:
        for ident in idents:
            await _wait_started(client, origin, ident, "a held stream")
        for ident in idents:
            async with client.get(f"{origin.url}/_o/release?id={ident}"):
                pass
        assert await asyncio.wait_for(asyncio.gather(*streams), 10) == [b'{"part":"first"}\n{"part":"second"}\n'] * 3
    finally:
        for stream in streams:
            stream.cancel()

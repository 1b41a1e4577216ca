"""Aborts propagate: a client that leaves cancels the local request, a local server that dies cuts the client off."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streaming.tools import MAX_STREAMS, new_id, wait_for_state
from support.clients import build_request
from support.localrelay import Agent, Origin, Relay
from support.payloads import payload
from support.ports import LOOPBACK

#: Seconds the origin may take to notice that a request it is serving was abandoned.
CANCEL_NOTICE = 5.0

#: Longest the relay may take to give a freed stream slot back (it is asynchronous).
RELEASE_GRACE = 2.0


async def _open_in_flight(
    relay: Relay,
    tunnel: Agent,
    origin: Origin,
    client: aiohttp.ClientSession,
    target: str,
    ident: str,
    *,
    streaming: bool,
) -> asyncio.StreamWriter:
    """Send a request on a raw connection; return once the origin is serving it (and, if streaming, it is flowing)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, relay.port), 5)
    try:
        writer.write(build_request("GET", target, tunnel.host))
        await writer.drain()
        await wait_for_state(client, origin, ident, lambda s: s.get("outcome") == "running", 5, "the request")
        if streaming:  # the head and a first line have come through
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200 "), head
            await asyncio.wait_for(reader.readuntil(b'{"tick":'), 5)
    except BaseException:
        writer.transport.abort()
        raise
    return writer


async def _all_slots_answer(tunnel: Agent, client: aiohttp.ClientSession) -> list[int]:
    async def one(i: int) -> int:
        async with client.get(f"{tunnel.public_url}/s/hold?id={new_id()}&s=0.3") as response:
            await response.read()
            return response.status

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(MAX_STREAMS))), 10)


async def test_a_client_that_disconnects_gets_its_local_request_cancelled_and_its_stream_released(
    limited_tunnel: Agent, limited_relay: Relay, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    # Fill every stream slot of the tunnel with requests whose clients then vanish:
    # some still waiting for a response head, some in the middle of a streamed body.
    kinds = ["waiting", "streaming"] * MAX_STREAMS
    abandoned = [(new_id(), kind) for kind in kinds[:MAX_STREAMS]]
    writers: list[asyncio.StreamWriter] = []
    try:
        for ident, kind in abandoned:
            streaming = kind == "streaming"
            target = f"/s/hold?id={ident}&s=20" + ("&stream=1" if streaming else "")
            writers.append(
                await _open_in_flight(
                    limited_relay, limited_tunnel, stream_origin, client, target, ident, streaming=streaming
                )
            )
    finally:
        for writer in writers:  # every client disconnects at once
            writer.transport.abort()

    for ident, kind in abandoned:
        state = await wait_for_state(
            client, stream_origin, ident, lambda s: s.get("outcome") != "running", CANCEL_NOTICE, "the cancellation"
        )
        assert state["outcome"] == "cancelled" or state["outcome"].startswith("disconnected"), (kind, state)

    # Every slot is free again: as many requests as the limit allows all get through, none is refused.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RELEASE_GRACE
    while (statuses := await _all_slots_answer(limited_tunnel, client)) != [200] * MAX_STREAMS:
        if loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert statuses == [200] * MAX_STREAMS, f"abandoned streams still hold slots: {statuses}"


@pytest.mark.parametrize("mode", ["length", "chunked"])
async def test_a_local_server_that_drops_the_connection_mid_body_leaves_the_client_an_incomplete_response(
    mode: str, tunnel: Agent, stream_origin: Origin, client: aiohttp.ClientSession
) -> None:
    ident, size, sent = new_id(), 100_000, 30_000
    received = bytearray()
    async with client.get(f"{tunnel.public_url}/s/cut?id={ident}&mode={mode}&size={size}&sent={sent}") as response:
        assert response.status == 200
        if mode == "length":
            assert response.headers.get("Content-Length") == str(size)
        else:
            assert response.headers.get("Transfer-Encoding") == "chunked"
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            while chunk := await asyncio.wait_for(response.content.read(65536), 10):
                received += chunk
            # Reaching here means the body ended cleanly: a short body passed off as complete.
    # Everything the origin wrote before the cut came through (it waited 0.3 s before cutting), and nothing else.
    assert len(received) == sent, f"{len(received)} of the {sent} bytes written before the cut arrived"
    assert bytes(received) == payload(9, sent)
    state = await wait_for_state(client, stream_origin, ident, lambda s: s.get("outcome") == "cut", 5, "the cut")
    assert state["written"] == sent

    async with client.get(f"{tunnel.public_url}/after-cut?id={ident}") as after:
        assert after.status == 200
        assert (await after.json())["raw_path"] == f"/after-cut?id={ident}"

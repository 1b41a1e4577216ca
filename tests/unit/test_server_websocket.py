"""The relay's end of an agent websocket (relay_server/ws_transport.py): aiohttp's handshake, then ours.

A real aiohttp server runs ``open_agent_websocket`` in its handler; the
peer is websockets' own client, so framing, masking, pings and the close
handshake are checked against an implementation we did not write.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from relay_protocol.driver import TransportClosed
from relay_server.ws_transport import ServerWebsocket, open_agent_websocket

from .test_ws_transport import Receiver

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support import stallproxy

MAX_MESSAGE = 64 * 1024


class Relay:
    """An aiohttp app whose one route takes the websocket over; each link and its receiver are queued."""

    def __init__(self, heartbeat: float) -> None:
        self.heartbeat = heartbeat
        self.links: asyncio.Queue[tuple[ServerWebsocket, Receiver]] = asyncio.Queue()
        self.ended: asyncio.Queue[str] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        opened = await open_agent_websocket(request, max_message=MAX_MESSAGE, heartbeat=self.heartbeat)
        if opened is None:
            return web.Response(status=400, text="websocket required")
        ws, link = opened
        first = await link.recv()  # before attach, as the endpoint reads HELLO
        receiver = Receiver()
        if first is not None:
            receiver.messages.put_nowait(first)
        link.attach(receiver)
        self.links.put_nowait((link, receiver))
        try:
            await receiver.closed.wait()
            self.ended.put_nowait("closed")
        except asyncio.CancelledError:
            self.ended.put_nowait("cancelled")  # aiohttp cancels its handler when told the socket is gone
            raise
        return ws


@pytest.fixture
async def relay(request: pytest.FixtureRequest) -> AsyncIterator[Relay]:
    r = Relay(getattr(request, "param", 20.0))
    app = web.Application()
    app.router.add_get("/connect", r.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    r.runner = runner
    r.port = runner.addresses[0][1]
    yield r
    await runner.cleanup()


async def agent(port: int) -> ClientConnection:
    return await connect(f"ws://127.0.0.1:{port}/connect", ping_interval=None, compression=None, proxy=None)


async def greeted(relay: Relay) -> tuple[ClientConnection, ServerWebsocket, Receiver]:
    """An agent connected, its first message through, the relay's end attached."""
    client = await agent(relay.port)
    await client.send(b"hello")
    link, receiver = await asyncio.wait_for(relay.links.get(), 2)
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"hello"
    return client, link, receiver


async def test_messages_go_both_ways_and_the_close_is_the_agents(relay):
    client, link, receiver = await greeted(relay)
    for size in (0, 125, 126, 65535, 65536):  # every length encoding of an unmasked frame
        link.write_message(bytes([size % 251]) * size)
        assert await asyncio.wait_for(client.recv(), 2) == bytes([size % 251]) * size
    await client.send([b"frag", b"men", b"ted"])
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"fragmented"
    await client.close(1000, "bye")
    await asyncio.wait_for(receiver.closed.wait(), 5)
    assert relay.ended.get_nowait() in ("closed", "cancelled")
    with pytest.raises(TransportClosed):
        link.write_message(b"after close")


async def test_the_relays_close_reaches_the_agent_with_its_code(relay):
    client, link, _ = await greeted(relay)
    await asyncio.wait_for(link.close(1008, "UNAUTHORIZED"), 5)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), 2)
    assert (client.close_code, client.close_reason) == (1008, "UNAUTHORIZED")


async def test_a_text_message_closes_with_1003_and_is_not_delivered(relay):
    client, _, receiver = await greeted(relay)
    await client.send("some text")
    await asyncio.wait_for(receiver.closed.wait(), 5)
    assert receiver.messages.empty()
    assert (client.close_code, client.close_reason) == (1003, "binary frames only")


async def test_a_message_over_the_limit_closes_with_1009(relay):
    client, _, receiver = await greeted(relay)
    await client.send(b"x" * (MAX_MESSAGE + 1))
    await asyncio.wait_for(receiver.closed.wait(), 5)
    assert receiver.messages.empty()
    assert client.close_code == 1009


async def test_an_unmasked_frame_from_the_agent_is_a_protocol_error(relay):
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    writer.write(
        b"GET /connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert head.startswith(b"HTTP/1.1 101")
    writer.write(b"\x82\x02hi")  # a binary frame without the mask a client must use
    close = await asyncio.wait_for(reader.read(64), 2)
    assert close[:1] == b"\x88" and int.from_bytes(close[2:4], "big") == 1002
    writer.close()


@pytest.mark.parametrize("relay", [0.1], indirect=True)
async def test_pings_keep_a_live_agent_and_drop_a_silent_one(relay):
    client = await agent(relay.port)  # websockets answers pings by itself
    await client.send(b"hello")
    _, receiver = await asyncio.wait_for(relay.links.get(), 2)
    await asyncio.sleep(0.5)  # several pings, each answered
    assert not receiver.closed.is_set()
    await client.close()
    with stallproxy.start(0, relay.port) as proxy:
        silent = await agent(proxy.port)
        await silent.send(b"hello")
        _, receiver = await asyncio.wait_for(relay.links.get(), 2)
        proxy.stall()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(receiver.closed.wait(), 10)
        # interval + pong timeout (interval / 2) + close timeout, and slack
        assert asyncio.get_running_loop().time() - started < 0.1 + 0.05 + 5.0 + 1.0
        assert await asyncio.wait_for(relay.ended.get(), 2) in ("closed", "cancelled")


async def test_aiohttp_is_told_when_the_socket_goes(relay):
    """Its server forgets the connection (else a relay's shutdown would wait on it) and its handler ends."""
    client = await agent(relay.port)
    await client.send(b"hello")
    await asyncio.wait_for(relay.links.get(), 2)
    server = relay.runner.server
    assert len(server.connections) == 1
    client.transport.abort()
    for _ in range(200):
        if not server.connections:
            break
        await asyncio.sleep(0.01)
    assert server.connections == []
    assert await asyncio.wait_for(relay.ended.get(), 2) in ("closed", "cancelled")

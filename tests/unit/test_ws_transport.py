"""The agent's websocket after the handshake (relay_client/ws_transport.py) against a real websockets server."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from relay_client.ws_transport import ClientWebsocket
from relay_protocol.driver import TransportClosed

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from support import stallproxy  # noqa: E402


class Receiver:
    """A MessageReceiver that records what the transport told it."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[bytes] = asyncio.Queue()
        self.writable_calls = 0
        self.closed = asyncio.Event()

    def message_received(self, message: bytes) -> None:
        self.messages.put_nowait(message)

    def transport_writable(self) -> None:
        self.writable_calls += 1

    def transport_closed(self) -> None:
        self.closed.set()


class Server:
    """A websockets server that echoes binary messages and records how each connection closed."""

    def __init__(self) -> None:
        self.port = 0
        self.closes: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()
        self.connections: list[ServerConnection] = []

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        try:
            async for message in ws:
                if message == b"send text":
                    await ws.send("some text")
                elif message == b"send fragments":
                    await ws.send([b"frag", b"men", b"ted"])
                elif message == b"send then close":
                    await ws.send(b"last words")
                    await ws.close(1001, "going away")
                else:
                    await ws.send(message)
        except ConnectionClosed:
            pass
        self.closes.put_nowait((ws.close_code, ws.close_reason))


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    s = Server()
    async with serve(s.handler, "127.0.0.1", 0, ping_interval=None) as ws_server:
        s.port = ws_server.sockets[0].getsockname()[1]
        yield s


async def open_websocket(port: int, **timing: float | None) -> ClientWebsocket:
    ws = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None, compression=None, proxy=None)
    settings: dict = {"ping_interval": None, "ping_timeout": None, "close_timeout": 2.0} | timing
    return ClientWebsocket(ws, **settings)


async def test_messages_go_both_ways_before_and_after_attach(server):
    link = await open_websocket(server.port)
    await link.send(b"\x00one")
    assert await asyncio.wait_for(link.recv(), 2) == b"\x00one"
    receiver = Receiver()
    link.write_message(b"two")  # the echo may arrive before attach: it is queued, then delivered
    await asyncio.sleep(0.05)
    link.attach(receiver)
    link.write_message(b"three")
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"two"
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"three"
    await asyncio.wait_for(link.close(), 5)
    assert await asyncio.wait_for(server.closes.get(), 2) == (1000, "")
    assert receiver.closed.is_set()
    with pytest.raises(TransportClosed):
        link.write_message(b"after close")


async def test_a_fragmented_binary_message_arrives_whole(server):
    link = await open_websocket(server.port)
    receiver = Receiver()
    link.attach(receiver)
    link.write_message(b"send fragments")
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"fragmented"
    await link.close()


async def test_a_text_message_closes_the_connection_with_1003(server):
    link = await open_websocket(server.port)
    receiver = Receiver()
    link.attach(receiver)
    link.write_message(b"send text")
    await asyncio.wait_for(receiver.closed.wait(), 5)
    assert await asyncio.wait_for(server.closes.get(), 2) == (1003, "binary frames only")
    assert receiver.messages.empty()


async def test_messages_before_the_servers_close_are_delivered_and_then_the_close(server):
    link = await open_websocket(server.port)
    receiver = Receiver()
    link.attach(receiver)
    link.write_message(b"send then close")
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"last words"
    await asyncio.wait_for(receiver.closed.wait(), 5)
    assert await asyncio.wait_for(link.recv(), 1) is None


async def test_recv_returns_none_once_the_server_is_gone(server):
    link = await open_websocket(server.port)
    await asyncio.sleep(0.05)
    await server.connections[0].close()
    assert await asyncio.wait_for(link.recv(), 5) is None


async def test_keepalive_pings_are_answered_and_keep_the_connection(server):
    link = await open_websocket(server.port, ping_interval=0.05, ping_timeout=0.2)
    receiver = Receiver()
    link.attach(receiver)
    await asyncio.sleep(0.5)  # several pings, each answered in time
    assert not receiver.closed.is_set()
    link.write_message(b"still here")
    assert await asyncio.wait_for(receiver.messages.get(), 2) == b"still here"
    await link.close()


async def test_a_stalled_path_is_noticed_by_the_keepalive_and_the_socket_dropped(server):
    with stallproxy.start(0, server.port) as proxy:
        link = await open_websocket(proxy.port, ping_interval=0.1, ping_timeout=0.2, close_timeout=0.3)
        receiver = Receiver()
        link.attach(receiver)
        proxy.stall()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(receiver.closed.wait(), 5)
        elapsed = asyncio.get_running_loop().time() - started
        assert elapsed < 0.1 + 0.2 + 0.3 + 0.5  # interval + timeout + close timeout, and some slack
        with pytest.raises(TransportClosed):
            link.write_message(b"too late")


async def test_close_is_bounded_when_the_server_never_answers(server):
    with stallproxy.start(0, server.port) as proxy:
        link = await open_websocket(proxy.port, close_timeout=0.2)
        proxy.stall()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(link.close(), 5)
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_writable_follows_the_sockets_flow_control(server):
    link = await open_websocket(server.port)
    receiver = Receiver()
    link.attach(receiver)
    assert link.writable
    link.pause_writing()  # what the socket's transport calls past its high-water mark
    assert not link.writable
    link.resume_writing()
    assert link.writable and receiver.writable_calls == 1
    await link.close()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_masked_binary_frame_is_what_websockets_reads_back(size: int) -> None:
    """Our two-piece frame parses, with websockets' own reader on the server side, to the same message."""
    import os

    from websockets.frames import Frame, Opcode
    from websockets.streams import StreamReader

    from relay_client.ws_transport import masked_binary_frame

    data = os.urandom(size)
    head, payload = masked_binary_frame(data)
    assert head[1] & 0x80 and (size == 0 or payload != data)  # masked (random data almost never masks to itself)
    reader = StreamReader()
    reader.feed_data(head + payload)
    parser = Frame.parse(reader.read_exact, mask=True)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, data)
    assert masked_binary_frame(data)[0][-4:] != head[-4:]  # a fresh mask per frame

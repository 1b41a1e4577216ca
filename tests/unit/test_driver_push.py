"""The driver over a PushTransport (the agent's way): every driver test again, plus write back-pressure.

The agent's end of each ``Pair`` delivers messages by callback and writes
without awaiting; the relay's end stays a pulled ``MemoryTransport``.
"""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from relay_protocol.driver import MessageReceiver, Multiplexer, MuxStream, TransportClosed
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.limits import MIN_WINDOW

from .peers import connect
from .test_driver import *  # noqa: F403  (each test runs again here, with this module's ``pair``)
from .test_driver import MemoryTransport, Pair, deliver, pairs_of, read_all, until


class PushMemoryTransport:
    """The agent's end of an in-memory websocket, with the PushTransport interface."""

    def __init__(self) -> None:
        self.inbox = self  # the relay's MemoryTransport delivers with ``peer.inbox.put_nowait``
        self.peer: MemoryTransport | None = None
        self.closed = False
        self.in_flight = 0
        self.black_hole = False
        self.writable = True
        self.receiver: MessageReceiver | None = None
        self.queued: deque[bytes | None] = deque()
        self.close_calls = 0

    # what the relay's end calls
    def put_nowait(self, message: bytes | None) -> None:
        asyncio.get_running_loop().call_soon(self._arrive, message)  # a socket delivers on a later pass

    def _arrive(self, message: bytes | None) -> None:
        if self.receiver is None:
            self.queued.append(message)
            return
        if message is None:
            self.closed = True
            self.receiver.transport_closed()
            return
        self.in_flight -= len(message)
        self.receiver.message_received(message)

    # PushTransport
    def attach(self, receiver: MessageReceiver) -> None:
        self.receiver = receiver
        while self.queued:
            self._arrive(self.queued.popleft())

    def write_message(self, data: bytes) -> None:
        if self.closed:
            raise TransportClosed("closed")
        assert self.writable, "written while the transport said it was full"
        deliver(self, data)

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        self.close_calls += 1
        for end in (self, self.peer):
            if end is not None and not end.closed:
                end.closed = True
                end.inbox.put_nowait(None)

    def set_writable(self, writable: bool) -> None:
        self.writable = writable
        if writable and self.receiver is not None:
            self.receiver.transport_writable()

    # Transport
    async def send(self, data: bytes) -> None:
        self.write_message(data)

    async def recv(self) -> bytes | None:
        raise AssertionError("a pushed transport is never read")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.start_close(code, reason)


class PushPair(Pair):
    """A relay multiplexer (pulled transport) and an agent multiplexer (pushed transport)."""

    def transports(self) -> tuple[MemoryTransport, PushMemoryTransport]:  # type: ignore[override]
        relay_end, agent_end = MemoryTransport(), PushMemoryTransport()
        relay_end.peer = agent_end  # type: ignore[assignment]
        agent_end.peer = relay_end
        return relay_end, agent_end


@pytest.fixture
async def pair():
    async with pairs_of(PushPair) as make:
        yield make


async def test_the_agent_multiplexer_is_driven_by_callbacks(pair):
    p = pair()
    assert p.agent._push and not p.relay._push
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    served = await p.accept()
    served.send_response(ResponseHead(200, "OK"))
    await served.write(b"hi", end=True)
    assert await asyncio.wait_for(stream.response, 2) == ResponseHead(200, "OK")
    assert await read_all(stream) == b"hi"


async def test_nothing_is_written_while_the_transport_is_full_and_all_of_it_after(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    served = await p.accept()
    p.agent_transport.set_writable(False)
    served.send_response(ResponseHead(200, "OK"))
    await served.write(b"held back", end=True)
    await asyncio.sleep(0.05)
    assert not stream.response.done()
    p.agent_transport.set_writable(True)
    assert await asyncio.wait_for(stream.response, 2) == ResponseHead(200, "OK")
    assert await read_all(stream) == b"held back"


async def test_writers_wait_for_space_while_the_transport_is_full(pair):
    p = pair()
    p.agent_transport.set_writable(False)
    stream = p.relay.open_stream(RequestHead("GET", "/big"), end_stream=True)
    served = await p.accept()
    served.send_response(ResponseHead(200, "OK"))
    body = bytes(range(256)) * 8192  # 2 MiB: past the send queue's high-water mark
    writer = asyncio.create_task(served.write(body, end=True))
    await asyncio.sleep(0.05)
    assert not writer.done()  # queued up to the mark, then waiting
    p.agent_transport.set_writable(True)
    assert await asyncio.wait_for(read_all(stream), 5) == body
    await asyncio.wait_for(writer, 2)


async def test_an_error_in_the_stream_callback_ends_run_with_it():
    link = connect()
    relay_end, agent_end = MemoryTransport(), PushMemoryTransport()
    relay_end.peer, agent_end.peer = agent_end, relay_end  # type: ignore[assignment]

    def broken(stream: MuxStream) -> None:
        raise RuntimeError("application bug")

    relay = Multiplexer(link.relay, relay_end)
    agent = Multiplexer(link.agent, agent_end, broken)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(agent.run())]
    relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    with pytest.raises(RuntimeError, match="application bug"):
        await asyncio.wait_for(tasks[1], 5)
    assert agent_end.close_calls >= 1
    await asyncio.wait_for(tasks[0], 5)


async def test_a_local_close_flushes_goaway_then_closes_the_socket(pair):
    p = pair()
    p.agent.close(reason="agent stopping")
    await asyncio.wait_for(asyncio.gather(*p.tasks), 5)
    assert p.relay.close_reason == "agent stopping"
    assert p.agent.closed_locally
    await until(lambda: p.agent_transport.closed)


async def test_write_now_sends_at_once_within_credit_and_leaves_the_rest_to_write(pair):
    p = pair(relay_stream_window=MIN_WINDOW)
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    served = await p.accept()
    served.send_response(ResponseHead(200, "OK"))
    assert not served.write_now(b"x" * (MIN_WINDOW + 1))  # more than the window: nothing sent
    assert served.write_now(b"small")
    assert served.write_now(b" end", end=True)
    assert await read_all(stream) == b"small end"
    assert not served.write_now(b"after the end")  # closed: write() raises, write_now declines


async def test_write_now_declines_on_a_reset_stream(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("POST", "/"))
    served = await p.accept()
    stream.reset()
    await until(lambda: served.error is not None)
    assert not served.write_now(b"x")

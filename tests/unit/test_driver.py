"""The asyncio driver over an in-memory message transport (relay_protocol/driver.py)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from relay_protocol.driver import MessageReceiver, Multiplexer, MuxStream, StreamError, TransportClosed
from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.frames import FrameType, encode_frame
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.limits import MIN_WINDOW

from .peers import KIB, connect


def deliver(end: Any, data: bytes) -> None:
    """Send ``data`` from ``end`` to its peer, as a socket would (lost if ``end`` is a black hole)."""
    if end.closed:
        raise TransportClosed("closed")
    assert end.peer is not None
    if end.black_hole:
        return
    message = bytes(data)
    end.peer.in_flight += len(message)
    end.peer.arrive_later(message)


class MemoryTransport:
    """One end of an in-memory websocket, a ``PushTransport``: whole binary messages, in order, by callback."""

    def __init__(self) -> None:
        self.peer: MemoryTransport | None = None
        self.closed = False
        #: Bytes sent to us that our receiver has not been handed yet.
        self.in_flight = 0
        #: Set to lose everything this end sends (a peer that went silent).
        self.black_hole = False
        self.writable = True
        self.receiver: MessageReceiver | None = None
        #: Messages (None: the close) that arrived before ``attach``.
        self.queued: deque[bytes | None] = deque()
        self.close_calls = 0

    def arrive_later(self, message: bytes | None) -> None:
        """What the peer's send does: the message arrives on a later loop pass, as from a socket."""
        asyncio.get_running_loop().call_soon(self._arrive, message)

    def _arrive(self, message: bytes | None) -> None:
        if self.receiver is None:
            self.queued.append(message)
            return
        if message is None:
            self.receiver.transport_closed()
            return
        self.in_flight -= len(message)
        self.receiver.message_received(message)

    def set_writable(self, writable: bool) -> None:
        """What the socket's flow control does past its high- and below its low-water mark."""
        self.writable = writable
        if writable and self.receiver is not None:
            self.receiver.transport_writable()

    # PushTransport
    def attach(self, receiver: MessageReceiver) -> None:
        self.receiver = receiver
        while self.queued:
            self._arrive(self.queued.popleft())

    def write_message(self, data: bytes) -> None:
        assert self.writable, "written while the transport said it was full"
        deliver(self, data)

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        self.close_calls += 1
        for end in (self, self.peer):
            if end is not None and not end.closed:
                end.closed = True
                end.arrive_later(None)

    # Transport (the handshake's)
    async def send(self, data: bytes) -> None:
        self.write_message(data)

    async def recv(self) -> bytes | None:
        raise AssertionError("the driver never reads a transport; it attaches")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.start_close(code, reason)


def transport_pair() -> tuple[MemoryTransport, MemoryTransport]:
    a, b = MemoryTransport(), MemoryTransport()
    a.peer, b.peer = b, a
    return a, b


class Pair:
    """A relay and an agent multiplexer running over a MemoryTransport pair."""

    def __init__(self, **windows: int) -> None:
        link = connect(**windows)
        self.relay_transport, self.agent_transport = transport_pair()
        self.accepted: asyncio.Queue[MuxStream] = asyncio.Queue()
        self.relay = Multiplexer(link.relay, self.relay_transport)
        self.agent = Multiplexer(link.agent, self.agent_transport, self.accepted.put_nowait)
        self.tasks = [asyncio.create_task(self.relay.run()), asyncio.create_task(self.agent.run())]

    async def accept(self) -> MuxStream:
        return await asyncio.wait_for(self.accepted.get(), 2)

    async def aclose(self) -> None:
        await self.relay_transport.close()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)


@pytest.fixture
async def pair() -> AsyncIterator[Callable[..., Pair]]:
    """A maker of pairs; every pair made is closed at the end."""
    created: list[Pair] = []

    def make(**windows: int) -> Pair:
        p = Pair(**windows)
        created.append(p)
        return p

    yield make
    for p in created:
        await p.aclose()


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait for ``condition`` to hold, yielding to the loop."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.001)


async def read_all(stream: MuxStream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(bytes(chunk))
    return b"".join(parts)


def buffered(stream: MuxStream) -> int:
    """Body bytes delivered to a stream that its reader has not taken (white-box)."""
    return sum(len(chunk) for chunk in stream._chunks)


# ---------------------------------------------------------------- basics


async def test_request_and_response_make_a_round_trip(pair):
    p = pair()
    head = RequestHead("POST", "/echo", [("X-A", "1"), ("X-A", "2")], "192.0.2.1")
    stream = p.relay.open_stream(head)
    await stream.write(b"hello ", end=False)
    await stream.write(b"world", end=True)
    served = await p.accept()
    assert served.request == head
    assert await read_all(served) == b"hello world"
    assert served.at_eof
    served.send_response(ResponseHead(201, "Created", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]))
    await served.write(b"got it", end=True)
    response = await asyncio.wait_for(stream.response, 2)
    assert response == ResponseHead(201, "Created", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")])
    assert await read_all(stream) == b"got it"
    await until(lambda: p.relay.open_streams == 0 and p.agent.open_streams == 0)


async def test_bodyless_request_and_response(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    served = await p.accept()
    assert served.at_eof and await served.read() == b""
    served.send_response(ResponseHead(204), end_stream=True)
    assert (await asyncio.wait_for(stream.response, 2)).status == 204
    assert await stream.read() == b""


async def test_bodies_larger_than_every_window_arrive_complete_and_in_order(pair):
    p = pair(
        relay_stream_window=MIN_WINDOW,
        relay_connection_window=2 * MIN_WINDOW,
        agent_stream_window=MIN_WINDOW,
        agent_connection_window=2 * MIN_WINDOW,
    )
    rng = random.Random(7)
    upload = rng.randbytes(3 * 1024 * KIB + 123)
    download = rng.randbytes(2 * 1024 * KIB + 7)

    async def serve() -> bytes:
        served = await p.accept()
        received = await read_all(served)
        served.send_response(ResponseHead(200))
        view = memoryview(download)
        for start in range(0, len(download), 100 * KIB):  # several writes, each past the window
            await served.write(view[start : start + 100 * KIB])
        served.end()
        return received

    server = asyncio.create_task(serve())
    stream = p.relay.open_stream(RequestHead("PUT", "/big"))

    async def fetch() -> bytes:
        await stream.write(upload, end=True)
        await stream.response
        return await read_all(stream)

    received, got = await asyncio.wait_for(asyncio.gather(server, fetch()), 10)
    assert hashlib.sha256(received).digest() == hashlib.sha256(upload).digest()
    assert len(got) == len(download) and got == download


async def test_concurrent_streams_share_a_small_connection_window(pair):
    p = pair(agent_stream_window=MIN_WINDOW, agent_connection_window=MIN_WINDOW)
    bodies = {i: bytes([i]) * (200 * KIB) for i in range(4)}

    async def serve_one():
        served = await p.accept()
        data = await read_all(served)
        served.send_response(ResponseHead(200), end_stream=True)
        return data

    servers = [asyncio.create_task(serve_one()) for _ in bodies]
    streams = [p.relay.open_stream(RequestHead("POST", f"/{i}")) for i in bodies]
    await asyncio.wait_for(asyncio.gather(*(s.write(bodies[i], end=True) for i, s in enumerate(streams))), 10)
    received = sorted(await asyncio.gather(*servers))
    assert received == sorted(bodies.values())


# ---------------------------------------------------------------- backpressure


async def test_slow_reader_bounds_what_the_writer_can_push(pair):
    window = MIN_WINDOW * 4
    p = pair(agent_stream_window=window, agent_connection_window=window * 4)
    body = random.Random(1).randbytes(window * 8)
    stream = p.relay.open_stream(RequestHead("POST", "/slow"))
    writer = asyncio.create_task(stream.write(body, end=True))
    served = await p.accept()

    def held() -> int:
        return buffered(served) + p.agent_transport.in_flight

    await until(lambda: held() == window)
    await asyncio.sleep(0.05)  # give the writer every chance to overrun
    assert not writer.done()
    assert held() == window

    received = bytearray()
    while chunk := await served.read():
        received += chunk
        assert held() <= window
        await asyncio.sleep(0)
    assert bytes(received) == body
    await asyncio.wait_for(writer, 2)


async def test_writer_resumes_when_the_reader_catches_up(pair):
    p = pair(agent_stream_window=MIN_WINDOW)
    stream = p.relay.open_stream(RequestHead("POST", "/"))
    writer = asyncio.create_task(stream.write(b"w" * (MIN_WINDOW + 1)))
    served = await p.accept()
    await until(lambda: buffered(served) == MIN_WINDOW)
    assert not writer.done()
    assert len(await served.read()) > 0
    await served.read()  # coming back for more is what gives the first chunk's credit
    await asyncio.wait_for(writer, 2)


# ---------------------------------------------------------------- reset and close


async def test_agent_reset_fails_the_relays_response_read_and_write(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("POST", "/"))
    served = await p.accept()
    served.reset(ErrorCode.LOCAL_UNREACHABLE, "connection refused")
    with pytest.raises(StreamError) as info:
        await asyncio.wait_for(stream.response, 2)
    assert info.value.code is ErrorCode.LOCAL_UNREACHABLE and info.value.reason == "connection refused"
    with pytest.raises(StreamError):
        await stream.read()
    with pytest.raises(StreamError):
        await stream.write(b"more")
    assert stream.error is not None and stream.error.code is ErrorCode.LOCAL_UNREACHABLE


async def test_relay_reset_fails_the_agents_read_and_write(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("POST", "/"))
    served = await p.accept()
    reader = asyncio.create_task(served.read())
    await asyncio.sleep(0.01)
    stream.reset(ErrorCode.TIMEOUT, "no response in time")
    with pytest.raises(StreamError) as info:
        await asyncio.wait_for(reader, 2)
    assert info.value.code is ErrorCode.TIMEOUT
    with pytest.raises(StreamError):
        served.send_response(ResponseHead(200))
    with pytest.raises(StreamError):
        await served.write(b"x")


async def test_reset_wakes_a_writer_blocked_on_credit(pair):
    p = pair(agent_stream_window=MIN_WINDOW)
    stream = p.relay.open_stream(RequestHead("POST", "/"))
    writer = asyncio.create_task(stream.write(b"x" * (MIN_WINDOW * 3)))
    served = await p.accept()
    await until(lambda: buffered(served) == MIN_WINDOW)
    served.reset(ErrorCode.CANCEL, "not interested")
    with pytest.raises(StreamError) as info:
        await asyncio.wait_for(writer, 2)
    assert info.value.code is ErrorCode.CANCEL


async def test_reset_stream_returns_its_unread_bytes_to_the_connection(pair):
    p = pair(agent_stream_window=MIN_WINDOW, agent_connection_window=MIN_WINDOW)
    first = p.relay.open_stream(RequestHead("POST", "/1"))
    await first.write(b"a" * MIN_WINDOW)
    served = await p.accept()
    await until(lambda: buffered(served) == MIN_WINDOW)
    served.reset(ErrorCode.CANCEL)
    second = p.relay.open_stream(RequestHead("POST", "/2"))
    await asyncio.wait_for(second.write(b"b" * MIN_WINDOW, end=True), 2)
    assert await read_all(await p.accept()) == b"b" * MIN_WINDOW


async def test_finished_stream_with_an_unread_body_gives_its_connection_credit_back(pair):
    # The agent answers without reading the request body (say, 413) and lets the
    # stream go; the unread bytes must not stay charged to the connection window.
    p = pair(agent_stream_window=MIN_WINDOW, agent_connection_window=2 * MIN_WINDOW)
    for i in range(4):
        stream = p.relay.open_stream(RequestHead("POST", f"/{i}"))
        await asyncio.wait_for(stream.write(b"x" * MIN_WINDOW, end=True), 0.5)
        served = await p.accept()
        await until(lambda: buffered(served) == MIN_WINDOW)
        served.send_response(ResponseHead(413), end_stream=True)
        served.release()
        assert (await asyncio.wait_for(stream.response, 1)).status == 413


async def test_write_on_a_finished_stream_fails_instead_of_hanging(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    served = await p.accept()
    served.send_response(ResponseHead(204), end_stream=True)
    await asyncio.wait_for(stream.response, 2)
    with pytest.raises((StreamError, LocalProtocolError)):
        await asyncio.wait_for(stream.write(b"too late"), 0.5)


async def test_closing_the_transport_fails_every_open_stream(pair):
    p = pair(agent_stream_window=MIN_WINDOW)
    waiting = p.relay.open_stream(RequestHead("GET", "/a"), end_stream=True)
    blocked = p.relay.open_stream(RequestHead("POST", "/b"))
    writer = asyncio.create_task(blocked.write(b"x" * (MIN_WINDOW * 2)))
    served = [await p.accept(), await p.accept()]
    reader = asyncio.create_task(served[1].read())
    await until(lambda: buffered(served[1]) == MIN_WINDOW or reader.done())
    await p.relay_transport.close()
    await asyncio.wait_for(asyncio.gather(*p.tasks), 5)
    for failure in (waiting.response, writer, waiting.read()):
        with pytest.raises(StreamError) as info:
            await asyncio.wait_for(failure, 2)
        assert info.value.code is ErrorCode.GOING_AWAY
    with pytest.raises(StreamError):
        await served[0].read()
    with pytest.raises(StreamError):
        await served[0].write(b"x")
    assert p.relay.closed and p.agent.closed
    assert p.relay.open_streams == p.agent.open_streams == 0
    with pytest.raises(StreamError):
        p.relay.open_stream(RequestHead("GET", "/"))


async def test_goaway_ends_both_sides_with_the_code_and_reason(pair):
    p = pair()
    stream = p.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    await p.accept()
    p.relay.close(ErrorCode.GOING_AWAY, "relay shutting down")
    await asyncio.wait_for(asyncio.gather(*p.tasks), 5)
    assert (p.agent.close_code, p.agent.close_reason) == (ErrorCode.GOING_AWAY, "relay shutting down")
    with pytest.raises(StreamError) as info:
        await stream.response
    assert info.value.code is ErrorCode.GOING_AWAY


async def test_protocol_error_from_the_peer_closes_the_connection(pair):
    p = pair()
    await p.relay_transport.send(encode_frame(FrameType.DATA, 0, 99, b"bogus"))
    await asyncio.wait_for(asyncio.gather(*p.tasks), 5)
    assert p.agent.close_code is ErrorCode.PROTOCOL_ERROR
    assert p.relay.close_code is ErrorCode.PROTOCOL_ERROR  # the agent's GOAWAY told the relay


# ---------------------------------------------------------------- ping


async def test_ping_round_trip_reports_a_time(pair):
    p = pair()
    rtt = await p.relay.ping(2)
    assert 0 <= rtt < 2
    assert 0 <= await p.agent.ping(2) < 2


async def test_ping_without_an_answer_times_out(pair):
    p = pair()
    p.agent_transport.black_hole = True  # the agent's answers are lost
    with pytest.raises(asyncio.TimeoutError):
        await p.relay.ping(0.05)
    assert not p.relay.closed


# ---------------------------------------------------------------- the transport's flow control and errors


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
    relay_end, agent_end = transport_pair()

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

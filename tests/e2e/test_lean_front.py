"""The relay's lean front answers exactly as aiohttp's path does, and hands over everything else.

The relay runs in the test's process (its own listener on loopback, the
production ``GuardedRunner`` with the lean front) so each test can also see
which path served a request: ``LeanFront.served`` and ``handed_over``.  A hand-
written agent (``RogueAgent``) answers, so both paths get byte-identical
answers from the agent, and the same request is sent twice: once as the lean
front takes it, once with a ``Connection`` header naming another header,
which it leaves to aiohttp (the named header is hop-by-hop, so the agent must
see the same head both times).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from security.rogue_agent import RogueAgent
from support.clients import RawResponse, build_request, raw_request, read_response
from support.ports import LOOPBACK, free_port

from relay_protocol import ErrorCode, ResponseHead
from relay_protocol.events import StreamOpened, StreamReset
from relay_protocol.frames import FrameType, encode_code_reason
from relay_server import lean_front
from relay_server.app import Relay
from relay_server.config import RelayConfig
from relay_server.lean_front import LeanFront
from relay_server.observer import RelayObserver, RequestRecord
from relay_server.publiclimits import GuardedRunner

STEP = 10.0


class Records(RelayObserver):
    """Keeps every finished request's record (what the access log and metrics see)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[RequestRecord] = []

    def request_finished(self, record: RequestRecord) -> None:
        self.finished.append(record)


@dataclass
class Stack:
    port: int
    relay: Relay
    front: LeanFront
    agent: RogueAgent
    records: Records
    runner: web.AppRunner
    host: str = field(init=False)

    def __post_init__(self) -> None:
        self.host = f"{self.agent.name}.localhost:{self.port}"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    port = free_port()
    records = Records()
    relay = Relay(RelayConfig(domain="localhost", host=LOOPBACK, http_port=port, data_dir=tmp_path, open=True), observer=records)
    fronts: list[LeanFront] = []

    def lean(aiohttp_protocol):  # as serve() builds it
        fronts.append(LeanFront(relay, aiohttp_protocol))
        return fronts[-1]

    runner = GuardedRunner(
        relay.make_app(),
        header_timeout=relay.config.header_timeout,
        observer=records,
        lean=lean,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        auto_decompress=False,
    )
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    agent = await RogueAgent.connect(port, "lean")
    assert (fronts[0].served, fronts[0].handed_over) == (0, 1)  # the agent's websocket is aiohttp's
    fronts[0].handed_over = 0
    try:
        yield Stack(port, relay, fronts[0], agent, records, runner)
    finally:
        await agent.close()
        await runner.cleanup()


async def answer(agent: RogueAgent, head: ResponseHead, body: bytes, *, split: bool = False) -> StreamOpened:
    """Wait for the next request and answer it (head and body in one message, or ``split`` apart)."""
    opened = await agent.next_open()
    agent.session.send_response(opened.stream_id, head, end_stream=not body and not split)
    if split:
        await agent._flush()
        await asyncio.sleep(0.05)
    if body or split:
        agent.session.send_data(opened.stream_id, body, end_stream=True)
    await agent._flush()
    return opened


async def exchange(stack: Stack, method: str, head: ResponseHead, body: bytes, *, lean: bool, split: bool = False,
                   headers: list[tuple[str, str]] = ()) -> tuple[StreamOpened, RawResponse]:
    """One request on a fresh connection, taken by the lean front or (``lean=False``) by aiohttp."""
    connection = [("Connection", "close")] if lean else [("Connection", "close, X-Hop"), ("X-Hop", "1")]
    request = build_request(method, "/p/a%20b?q=1&r=2", stack.host, [*connection, *headers])
    served, handed = stack.front.served, stack.front.handed_over
    response = asyncio.create_task(raw_request(stack.port, request, head_request=method == "HEAD", until_eof=True))
    opened = await asyncio.wait_for(answer(stack.agent, head, body, split=split), STEP)
    raw = await asyncio.wait_for(response, STEP)
    assert (stack.front.served - served, stack.front.handed_over - handed) == ((1, 0) if lean else (0, 1))
    return opened, raw


def comparable(response: RawResponse) -> tuple:
    """The response with the Date header's value masked (it is the clock's)."""
    headers = [(k, "DATE" if k.lower() == "date" else v) for k, v in response.headers]
    return response.status, response.reason, headers, response.body, response.chunked, response.trailing


CASES = {
    "length": ("GET", ResponseHead(200, "OK", [("Content-Type", "text/plain"), ("Content-Length", "5")]), b"hello", False),
    "no length: chunked": ("GET", ResponseHead(200, "OK", [("X-A", "1"), ("x-a", "2")]), b"chunked body", False),
    "empty chunked": ("GET", ResponseHead(200, "", []), b"", False),
    "204 drops Content-Length": ("GET", ResponseHead(204, "No Content", [("Content-Length", "0")]), b"", False),
    "304": ("GET", ResponseHead(304, "Not Modified", [("ETag", '"x"'), ("Content-Length", "9")]), b"", False),
    "HEAD keeps Content-Length": ("HEAD", ResponseHead(200, "OK", [("Content-Length", "42")]), b"", False),
    "own reason, own Date and Server": (
        "GET",
        ResponseHead(404, "Nope", [("Date", "Mon, 01 Jan 2024 00:00:00 GMT"), ("Server", "origin/1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]),
        b"{}",
        False,
    ),
    "hop-by-hop from the agent": ("GET", ResponseHead(200, "OK", [("Keep-Alive", "timeout=5"), ("Content-Length", "2")]), b"ok", False),
    "streamed, length": ("GET", ResponseHead(200, "OK", [("Content-Length", "6")]), b"stream", True),
    "streamed, chunked": ("GET", ResponseHead(200, "OK", [("Content-Type", "text/event-stream")]), b"data: 1\n\n", True),
    # Framing the caller could not trust: every Content-Length goes and the body is chunked.
    "Content-Length not a number": ("GET", ResponseHead(200, "OK", [("Content-Length", "abc")]), b"body", False),
    "Content-Length as Python reads numbers": ("GET", ResponseHead(200, "OK", [("Content-Length", "0_4")]), b"body", False),
    "two Content-Lengths that disagree": (
        "GET", ResponseHead(200, "OK", [("Content-Length", "4"), ("X-A", "1"), ("content-length", "40")]), b"body", False
    ),
    "the same Content-Length twice": (
        "GET", ResponseHead(200, "OK", [("Content-Length", "4"), ("content-length", "4")]), b"body", False
    ),
}

#: The cases whose body reaches the caller chunked although the agent sent a Content-Length.
UNTRUSTED_LENGTH = {"Content-Length not a number", "Content-Length as Python reads numbers", "two Content-Lengths that disagree"}


@pytest.mark.parametrize("case", list(CASES))
async def test_both_paths_forward_the_same_head_and_give_the_same_response(stack: Stack, case: str) -> None:
    method, head, body, split = CASES[case]
    extra = [("X-Rep", "a"), ("x-rep", "b"), ("Accept", "*/*")]
    lean_open, lean_response = await exchange(stack, method, head, body, lean=True, split=split, headers=extra)
    aio_open, aio_response = await exchange(stack, method, head, body, lean=False, split=split, headers=extra)
    assert lean_open.head == aio_open.head
    assert lean_open.head.target == "/p/a%20b?q=1&r=2"
    names = [k.lower() for k, _ in lean_open.head.headers]
    assert "connection" not in names and "x-hop" not in names and names.count("x-rep") == 2
    assert dict(lean_open.head.headers)["X-Forwarded-For"] == LOOPBACK
    assert comparable(lean_response) == comparable(aio_response)
    assert lean_response.get("Connection") == "close"
    if method != "HEAD" and head.status not in (204, 304):
        assert lean_response.body == body
    lean_record, aio_record = stack.records.finished[-2:]
    assert (lean_record.method, lean_record.path, lean_record.status, lean_record.bytes_out, lean_record.error) == (
        aio_record.method, aio_record.path, aio_record.status, aio_record.bytes_out, aio_record.error
    )
    assert lean_record.path == "/p/a%20b" and lean_record.status == head.status
    lengths = [v for k, v in lean_response.headers if k.lower() == "content-length"]
    if case in UNTRUSTED_LENGTH:
        assert lean_response.chunked and lengths == []
    elif case == "the same Content-Length twice":
        assert not lean_response.chunked and lengths == ["4"]


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
async def test_both_paths_give_the_same_error_page(stack: Stack, accept: str) -> None:
    responses = []
    for lean in (True, False):
        connection = [("Connection", "close")] if lean else [("Connection", "close, X-Hop"), ("X-Hop", "1")]
        request = build_request("GET", "/down", stack.host, [*connection, ("Accept", accept)])
        response = asyncio.create_task(raw_request(stack.port, request, until_eof=True))
        opened = await stack.agent.next_open()
        reset = encode_code_reason(ErrorCode.LOCAL_UNREACHABLE, "Connection refused")
        await stack.agent.send_frame(FrameType.RESET, opened.stream_id, reset)
        responses.append(await asyncio.wait_for(response, STEP))
    lean_response, aio_response = responses
    assert lean_response.status == 502 and lean_response.get("X-Relay-Error") == "local-unreachable"
    assert b"Connection refused" in lean_response.body
    assert comparable(lean_response) == comparable(aio_response)
    assert [r.error for r in stack.records.finished[-2:]] == ["local-unreachable"] * 2


async def test_a_keep_alive_connection_stays_lean_until_a_request_needs_aiohttp(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        statuses = []
        for n, extra in enumerate(([], [], [("Content-Length", "4")], [])):
            body = b"body" if extra else b""
            writer.write(build_request("POST" if extra else "GET", f"/{n}", stack.host, [("Connection", "keep-alive"), *extra], body))
            opened = await asyncio.wait_for(
                answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "1")]), str(n).encode()), STEP
            )
            assert opened.head.target == f"/{n}"
            response = await asyncio.wait_for(read_response(reader), STEP)
            statuses.append((response.status, response.body))
        assert statuses == [(200, b"0"), (200, b"1"), (200, b"2"), (200, b"3")]
        # Two lean requests, then the POST with a body moved the connection to aiohttp for good.
        assert (stack.front.served, stack.front.handed_over) == (2, 1)
    finally:
        writer.close()


async def test_pipelined_requests_are_aiohttps_and_answered_in_order(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        writer.write(build_request("GET", "/one", stack.host, [("Connection", "keep-alive")]) +
                     build_request("GET", "/two", stack.host, [("Connection", "keep-alive")]))
        for target in ("/one", "/two"):
            opened = await asyncio.wait_for(
                answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "4")]), target[1:].encode() + b"!"), STEP
            )
            assert opened.head.target == target
        bodies = [(await asyncio.wait_for(read_response(reader), STEP)).body for _ in range(2)]
        assert bodies == [b"one!", b"two!"]
        assert (stack.front.served, stack.front.handed_over) == (0, 1)
    finally:
        writer.close()


async def test_a_request_sent_ahead_waits_for_the_answer_before_it(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        writer.write(build_request("GET", "/first", stack.host, [("Connection", "keep-alive")]))
        first = await asyncio.wait_for(stack.agent.next_open(), STEP)
        writer.write(build_request("GET", "/second", stack.host, [("Connection", "keep-alive")]))
        await asyncio.sleep(0.1)  # the second one is in the relay's hands, unanswered
        stack.agent.session.send_response(first.stream_id, ResponseHead(200, "OK", [("Content-Length", "1")]))
        stack.agent.session.send_data(first.stream_id, b"1", end_stream=True)
        await stack.agent._flush()
        second = await asyncio.wait_for(answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "1")]), b"2"), STEP)
        assert (first.head.target, second.head.target) == ("/first", "/second")
        bodies = [(await asyncio.wait_for(read_response(reader), STEP)).body for _ in range(2)]
        assert bodies == [b"1", b"2"]
        assert (stack.front.served, stack.front.handed_over) == (2, 0)
    finally:
        writer.close()


async def test_a_caller_who_leaves_resets_the_stream_at_the_agent(stack: Stack) -> None:
    _reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    writer.write(build_request("GET", "/slow", stack.host, [("Connection", "keep-alive")]))
    opened = await asyncio.wait_for(stack.agent.next_open(), STEP)
    writer.close()
    async with asyncio.timeout(STEP):
        while True:
            events = await stack.agent._receive()
            resets = [e for e in events if isinstance(e, StreamReset) and e.stream_id == opened.stream_id]
            if resets:
                break
    assert resets[0].code == ErrorCode.CANCEL
    async with asyncio.timeout(STEP):
        while not stack.records.finished:
            await asyncio.sleep(0.01)
    record = stack.records.finished[-1]
    assert (record.status, record.error) == (499, "public client went away")
    assert stack.relay.in_flight == 0 and stack.front.served == 1


async def test_a_body_short_of_its_content_length_ends_the_connection(stack: Stack) -> None:
    request = build_request("GET", "/short", stack.host, [("Connection", "keep-alive")])
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        writer.write(request)
        await asyncio.wait_for(answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "10")]), b"12345"), STEP)
        with pytest.raises(asyncio.IncompleteReadError) as cut:
            await asyncio.wait_for(read_response(reader), STEP)
        assert cut.value.partial == b"12345"
        assert stack.front.served == 1
    finally:
        writer.close()


async def test_idle_connections_close_after_the_keep_alive_timeout(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lean_front, "KEEPALIVE_TIMEOUT", 0.3)
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        writer.write(build_request("GET", "/", stack.host, [("Connection", "keep-alive")]))
        await asyncio.wait_for(answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "1")]), b"x"), STEP)
        assert (await asyncio.wait_for(read_response(reader), STEP)).body == b"x"
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the relay, idle
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        writer.close()


async def test_stopping_closes_idle_lean_connections(stack: Stack) -> None:
    reader, writer = await asyncio.open_connection(LOOPBACK, stack.port)
    try:
        writer.write(build_request("GET", "/", stack.host, [("Connection", "keep-alive")]))
        await asyncio.wait_for(answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "1")]), b"x"), STEP)
        assert (await asyncio.wait_for(read_response(reader), STEP)).body == b"x"
        assert len(stack.front.connections) == 1
        await stack.runner.server.shutdown(1.0)  # what the runner's cleanup does when the relay stops
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert not stack.front.connections
    finally:
        writer.close()


async def test_tls_connections_are_served_lean_and_handed_over_mid_connection(stack: Stack) -> None:
    """On the https listener too: X-Forwarded-Proto says https, and a hand-over keeps the TLS session."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(f"{stack.agent.name}.localhost")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    tls_port = free_port()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(stack.runner.server.tls_protocol, LOOPBACK, tls_port, ssl=server_context)
    host = f"{stack.agent.name}.localhost:{tls_port}"
    reader, writer = await asyncio.open_connection(
        LOOPBACK, tls_port, ssl=client_context, server_hostname=f"{stack.agent.name}.localhost"
    )
    try:
        heads = []
        for method, extra, body in (("GET", [], b""), ("POST", [("Content-Length", "4")], b"body"), ("GET", [], b"")):
            writer.write(build_request(method, "/tls", host, [("Connection", "keep-alive"), *extra], body))
            opened = await asyncio.wait_for(
                answer(stack.agent, ResponseHead(200, "OK", [("Content-Length", "2")]), b"ok"), STEP
            )
            heads.append(dict(opened.head.headers))
            assert (await asyncio.wait_for(read_response(reader), STEP)).body == b"ok"
        assert [h["X-Forwarded-Proto"] for h in heads] == ["https"] * 3
        assert (stack.front.served, stack.front.handed_over) == (1, 1)  # the GET, then aiohttp from the POST on
    finally:
        writer.close()
        listener.close()

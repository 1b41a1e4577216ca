"""The public side's limits: slow request heads, stalled and oversized bodies.

One relay with tight limits (``--header-timeout 1 --body-timeout 1
--max-body-bytes 1000``) in front of the guard origin; every test drives it
over raw sockets so nothing between the test and the relay fixes anything up.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Iterator

import pytest

from security.guarded_stack import (
    origin_record,
    read_until_closed,
    relay_still_serves,
    start_guard_origin,
    wait_for_record,
)
from support.clients import build_request, raw_request, read_response
from support.localrelay import Agent, Origin, Relay, start_agent, start_relay
from support.ports import LOOPBACK
from support.processes import ProcessGroup

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_BODY_BYTES = 1000

#: Ceiling for "cut off after the timeout": far below aiohttp's keep-alive timeout (75 s), generous under load.
CUT_OFF_WITHIN = 10.0

KEEP_ALIVE = [("Connection", "keep-alive")]


@pytest.fixture(scope="module")
def stack(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Relay, Agent, Origin]]:
    """Relay with tight public limits, one agent (``guarded``) forwarding to the guard origin."""
    origin = start_guard_origin(module_processes)
    relay = start_relay(
        module_processes,
        tmp_path_factory.mktemp("limits-relay"),
        extra=(
            "--open",
            "--header-timeout", str(HEADER_TIMEOUT),
            "--body-timeout", str(BODY_TIMEOUT),
            "--max-body-bytes", str(MAX_BODY_BYTES),
            "--trusted-proxy", "127.0.0.1/32",  # the tests' own address: X-Forwarded-For names the caller
            "--log-format", "json",  # limit hits are events of their own there
        ),
        expect_paste_line=False,
    )
    agent = start_agent(module_processes, relay, str(origin.port), None, subdomain="guarded")
    yield relay, agent, origin
    for process in (relay.process, agent.process, origin.process):
        assert process.returncode is None, f"a process died\n{process.output()}"


async def _dribble(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    """Send one header line every 0.2 s, never the blank line that ends the head."""
    n = 0
    while not stop.is_set():
        try:
            writer.write(f"X-Drip-{n}: {n}\r\n".encode())
            await writer.drain()
        except ConnectionError:
            return
        n += 1
        await asyncio.sleep(0.2)


async def _cut_off_while_dribbling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[bytes, float]:
    """Dribble a head until the relay closes; what it sent and how long that took."""
    stop = asyncio.Event()
    started = time.monotonic()
    dripper = asyncio.create_task(_dribble(writer, stop))
    try:
        data = await read_until_closed(reader, CUT_OFF_WITHIN)
    finally:
        stop.set()
        await asyncio.gather(dripper, return_exceptions=True)
    return data, time.monotonic() - started


async def test_a_request_head_dribbled_byte_by_byte_is_answered_408_and_closed_after_the_header_timeout(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, _ = stack
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(f"GET /slowloris HTTP/1.1\r\nHost: {agent.host}\r\n".encode())
        data, elapsed = await _cut_off_while_dribbling(reader, writer)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"X-Relay-Error: header-timeout" in data
    assert elapsed >= HEADER_TIMEOUT * 0.9, f"cut off after {elapsed:.2f}s, before the timeout"
    await relay_still_serves(relay.port, agent.host)


async def test_a_slow_second_request_head_on_a_keep_alive_connection_is_cut_off_too(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, _ = stack
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(build_request("GET", "/first", agent.host, KEEP_ALIVE))
        first = await read_response(reader)
        assert first.status == 200 and json.loads(first.body)["raw_path"] == "/first"
        writer.write(f"GET /second HTTP/1.1\r\nHost: {agent.host}\r\n".encode())
        data, _ = await _cut_off_while_dribbling(reader, writer)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]


async def test_an_idle_keep_alive_connection_outlives_the_header_timeout(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(build_request("GET", "/before-idle", agent.host, KEEP_ALIVE))
        assert (await read_response(reader)).status == 200
        await asyncio.sleep(HEADER_TIMEOUT * 3)  # idle, no head started: not the header timeout's business
        writer.write(build_request("GET", "/after-idle", agent.host, KEEP_ALIVE))
        after = await read_response(reader)
    finally:
        writer.close()
    assert after.status == 200 and json.loads(after.body)["raw_path"] == "/after-idle"


async def test_a_streamed_response_longer_than_the_header_timeout_is_not_cut(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    response = await raw_request(relay.port, build_request("GET", f"/slow?s={HEADER_TIMEOUT * 3}", agent.host))
    assert response.status == 200
    assert response.body.endswith(b"data: end\n\n"), response.body[-200:]


async def test_the_agent_websocket_lives_longer_than_the_header_timeout(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    await asyncio.sleep(HEADER_TIMEOUT * 3)
    await relay_still_serves(relay.port, agent.host)
    assert agent.process.count(r"^Forwarding ") == 1, agent.process.output()


async def test_a_request_body_that_stalls_gets_408_and_the_local_server_sees_the_abort(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(
            f"POST /upload?id={ident} HTTP/1.1\r\nHost: {agent.host}\r\nContent-Length: 900\r\n\r\n".encode() + b"x" * 10
        )
        await writer.drain()
        started = time.monotonic()
        response = await read_response(reader)
        elapsed = time.monotonic() - started
    finally:
        writer.close()
    assert response.status == 408, (response.status, response.body[:300])
    assert response.get("X-Relay-Error") == "body-timeout"
    assert (response.get("Connection") or "").lower() == "close"
    assert BODY_TIMEOUT * 0.9 <= elapsed < CUT_OFF_WITHIN
    record = await wait_for_record(origin, ident, "aborted")
    assert record["received"] <= 10
    await relay_still_serves(relay.port, agent.host)


async def test_a_request_body_that_stalls_after_the_response_started_ends_with_the_connection_closed(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(
            f"POST /upload?id={ident}&early=1 HTTP/1.1\r\nHost: {agent.host}\r\nContent-Length: 900\r\n\r\n".encode()
            + b"y" * 10
        )
        await writer.drain()
        data = await read_until_closed(reader, CUT_OFF_WITHIN)
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert b"answering before the body is read" in data
    assert not data.endswith(b"0\r\n\r\n"), "the cut-off response must not look complete"
    await wait_for_record(origin, ident, "aborted")


async def test_a_declared_content_length_over_the_limit_gets_413_before_reaching_the_agent(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    body = b"z" * (MAX_BODY_BYTES + 1)
    response = await raw_request(
        relay.port, build_request("POST", f"/upload?id={ident}", agent.host, [("Content-Length", str(len(body)))], body)
    )
    assert response.status == 413, (response.status, response.body[:300])
    assert response.get("X-Relay-Error") == "body-too-large"
    assert await origin_record(origin, ident) is None, "the refused request reached the local server"
    await relay_still_serves(relay.port, agent.host)


async def test_a_body_limit_hit_names_the_caller_behind_a_trusted_proxy_not_the_proxy(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, _ = stack
    body = b"z" * (MAX_BODY_BYTES + 1)
    caller = "198.51.100.7"  # only a header value: nothing is sent there
    headers = [("Content-Length", str(len(body))), ("X-Forwarded-For", caller)]
    seen = len(relay.process.lines["stderr"])  # earlier tests hit this limit from 127.0.0.1 themselves
    response = await raw_request(relay.port, build_request("POST", "/upload", agent.host, headers, body))
    assert response.status == 413, (response.status, response.body[:300])
    line = relay.process.wait_for_line(r'"event": "limit_hit".*"limit": "max_body_bytes"', stream="stderr", timeout=5, after=seen)
    event = json.loads(line.string)
    assert event["remote"] == caller, event  # not the proxy's address (127.0.0.1)
    assert event["tunnel"] == "guarded"


async def test_a_body_at_the_limit_passes_whole(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    ident = secrets.token_hex(6)
    body = b"k" * MAX_BODY_BYTES
    response = await raw_request(
        relay.port, build_request("POST", f"/upload?id={ident}", agent.host, [("Content-Length", str(len(body)))], body)
    )
    assert response.status == 200, (response.status, response.body[:300])
    assert json.loads(response.body) == {"outcome": "complete", "received": MAX_BODY_BYTES}


async def test_a_chunked_body_growing_past_the_limit_is_cut_with_413_and_the_local_server_sees_the_abort(
    stack: tuple[Relay, Agent, Origin],
) -> None:
    relay, agent, origin = stack
    ident = secrets.token_hex(6)
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(
            f"POST /upload?id={ident} HTTP/1.1\r\nHost: {agent.host}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        for _ in range(3):  # 3 x 600 bytes: over the 1000-byte limit on the second chunk
            writer.write(b"258\r\n" + b"c" * 600 + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)
        status = (await read_response(reader)).status
    except (ConnectionError, asyncio.IncompleteReadError):
        status = None  # closed while we were still sending: also a refusal
    finally:
        writer.close()
    assert status in (413, None), status
    record = await wait_for_record(origin, ident, "aborted")
    assert record["received"] <= MAX_BODY_BYTES
    await relay_still_serves(relay.port, agent.host)


async def test_each_limit_hit_shows_up_in_the_relays_metrics_under_its_name(stack: tuple[Relay, Agent, Origin]) -> None:
    relay, agent, _ = stack
    # Make sure each limit has been hit at least once on this relay, whatever ran before.
    body = b"z" * (MAX_BODY_BYTES + 1)
    await raw_request(relay.port, build_request("POST", "/upload?id=metrics", agent.host, [("Content-Length", str(len(body)))], body))
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(f"POST /upload?id=metrics-stall HTTP/1.1\r\nHost: {agent.host}\r\nContent-Length: 10\r\n\r\n".encode())
        await read_response(reader)
    finally:
        writer.close()
    reader, writer = await asyncio.open_connection(LOOPBACK, relay.port)
    try:
        writer.write(b"GET /never-finished HTTP/1.1\r\n")
        await read_until_closed(reader, CUT_OFF_WITHIN)
    finally:
        writer.close()
    metrics = await raw_request(relay.port, build_request("GET", "/_relay/metrics", f"localhost:{relay.port}"))
    assert metrics.status == 200, metrics
    text = metrics.body.decode()
    for limit in ("max_body_bytes", "body_timeout", "header_timeout"):
        match = re.search(rf'^relay_limit_hits_total\{{limit="{limit}"\}} (\S+)$', text, re.M)
        assert match and float(match.group(1)) >= 1, f"{limit} not counted:\n{text}"

"""Requests the agent sends at once, without a task (``Forwarder._send_at_once``).

A bodiless request that finds an idle keep-alive connection to the local
server is written on it straight from the stream's arrival and answered from
callbacks.  These tests drive that path through a real relay and agent, with
a local server scripted in the test (so which connection carries what, and
when it closes, is known exactly): a client that leaves while it waits, a
kept-alive connection that closes instead of answering, and a response too
slow to come whole with its head.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from streaming.tools import new_id
from support.clients import build_request, raw_request
from support.localrelay import Agent, Relay, start_agent
from support.ports import LOOPBACK
from support.processes import ProcessGroup
from support.rawservers import RawServers

pytestmark = pytest.mark.timeout(60)

#: Seconds any one step may take.
STEP = 5.0


@dataclass
class Connection:
    """One connection the scripted local server accepted: the request lines it read, and whether it ended."""

    number: int
    requests: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


#: What the scripted server does with a request: writes its answer; False: close the connection instead.
Answer = Callable[[Connection, str, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


@dataclass
class ScriptedOrigin:
    port: int
    connections: list[Connection]
    request_seen: asyncio.Condition


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Answer], Awaitable[ScriptedOrigin]]]:
    """Start a raw keep-alive HTTP server on loopback that answers each request as ``answer`` says."""
    servers = RawServers()

    async def start(answer: Answer) -> ScriptedOrigin:
        connections: list[Connection] = []
        seen = asyncio.Condition()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = Connection(len(connections) + 1)
            connections.append(conn)
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    line = head.split(b"\r\n", 1)[0].decode()
                    async with seen:
                        conn.requests.append(line)
                        seen.notify_all()
                    if not await answer(conn, line, reader, writer):
                        return
                    await writer.drain()
            finally:
                conn.closed.set()

        return ScriptedOrigin(await servers.start(handle), connections, seen)

    yield start
    await servers.close()


def _ok(writer: asyncio.StreamWriter, text: str) -> bool:
    body = text.encode()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


async def _wait_for_request(origin: ScriptedOrigin, line: str) -> Connection:
    """The connection that carried the request ``line``, once the server has read it."""

    def carrier() -> Connection | None:
        return next((c for c in origin.connections if line in c.requests), None)

    async with origin.request_seen:
        await asyncio.wait_for(origin.request_seen.wait_for(lambda: carrier() is not None), STEP)
    conn = carrier()
    assert conn is not None
    return conn


async def _console_line(agent: Agent, path: str) -> str:
    """The agent's console line for ``path`` (its log is written in batches, read from a thread)."""
    match = await asyncio.to_thread(agent.process.wait_for_line, rf" {re.escape(path)} .*", timeout=STEP)
    return match.group(0)


async def _tunnel_with_idle_connection(
    processes: ProcessGroup,
    relay: Relay,
    scripted: Callable[[Answer], Awaitable[ScriptedOrigin]],
    client: aiohttp.ClientSession,
    answer: Answer,
    warm: str = "/warm",
) -> tuple[ScriptedOrigin, Agent, str]:
    """A scripted local server and an agent in front of it, after one GET ``warm`` left a connection idle."""
    origin = await scripted(answer)
    agent = start_agent(processes, relay, str(origin.port), None, f"once{new_id()}")
    async with client.get(f"{agent.public_url}{warm}") as response:
        assert response.status == 200
        return origin, agent, await response.text()


async def test_a_client_that_leaves_closes_the_reused_local_connection_and_is_logged_as_gone(
    processes: ProcessGroup, open_relay: Relay, scripted, client: aiohttp.ClientSession
) -> None:
    hold = f"/hold-{new_id()}"

    async def answer(conn: Connection, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if hold in line:  # no answer: wait for the agent to give up the request (the connection's end)
            await reader.read()
            return False
        return _ok(writer, f"conn {conn.number}")

    origin, agent, warmed = await _tunnel_with_idle_connection(processes, open_relay, scripted, client, answer)
    assert warmed == "conn 1"

    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, open_relay.port), STEP)
    writer.write(build_request("GET", hold, agent.host))
    await writer.drain()
    carrier = await _wait_for_request(origin, f"GET {hold} HTTP/1.1")
    assert carrier.number == 1, "the request went on a new connection, not the idle one"
    writer.transport.abort()  # the public client leaves while the local server works on it

    # The agent gives up the local request: its connection closes, which tells the local server.
    await asyncio.wait_for(carrier.closed.wait(), STEP)
    line = await _console_line(agent, hold)
    assert "(cancelled: public client went away)" in line, line

    # The tunnel carries on, on a fresh local connection.
    async with client.get(f"{agent.public_url}/after") as response:
        assert (response.status, await response.text()) == (200, "conn 2")


async def test_a_kept_alive_connection_that_closes_unanswered_gets_a_get_sent_again_and_a_post_refused(
    processes: ProcessGroup, open_relay: Relay, scripted, client: aiohttp.ClientSession
) -> None:
    async def answer(conn: Connection, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if len(conn.requests) > 1:
            return False  # each connection answers once, then closes on the next request instead of answering
        return _ok(writer, f"conn {conn.number} {line.split()[1]}")

    origin, agent, warmed = await _tunnel_with_idle_connection(processes, open_relay, scripted, client, answer, "/one")
    assert warmed == "conn 1 /one"

    # A GET may be repeated (RFC 9110, 9.2.2): the agent sends it again on a new connection.
    async with client.get(f"{agent.public_url}/two") as response:
        assert (response.status, await response.text()) == (200, "conn 2 /two")
    assert origin.connections[0].requests == ["GET /one HTTP/1.1", "GET /two HTTP/1.1"]

    # A POST may not: the local server might have acted on it.  The caller is told why.
    post = build_request("POST", "/three", agent.host, [("Accept", "text/plain")])
    answer_ = await raw_request(open_relay.port, post)
    assert answer_.status == 502, answer_
    assert answer_.get("X-Relay-Error") == "local-error"
    assert "the local server closed the connection before answering" in answer_.body.decode()
    assert origin.connections[1].requests == ["GET /two HTTP/1.1", "POST /three HTTP/1.1"]
    assert len(origin.connections) == 2, "the POST was sent a second time"


async def test_a_response_whose_body_comes_after_its_head_is_relayed_as_it_comes(
    processes: ProcessGroup, open_relay: Relay, scripted, client: aiohttp.ClientSession
) -> None:
    slow = f"/slow-{new_id()}"
    go_on = asyncio.Event()

    async def answer(conn: Connection, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if slow not in line:
            return _ok(writer, "warm")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"6\r\nfirst \r\n")
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        return True

    origin, agent, warmed = await _tunnel_with_idle_connection(processes, open_relay, scripted, client, answer)
    assert warmed == "warm"

    async with client.get(f"{agent.public_url}{slow}") as response:
        assert response.status == 200
        carrier = await _wait_for_request(origin, f"GET {slow} HTTP/1.1")
        assert carrier.number == 1, "the request went on a new connection, not the idle one"
        # The head and the first part reach the client while the local server still holds the rest.
        assert await asyncio.wait_for(response.content.readexactly(6), STEP) == b"first "
        go_on.set()
        assert await asyncio.wait_for(response.content.read(), STEP) == b"second"
    line = await _console_line(agent, slow)
    assert " 200 " in line and "(" not in line, line


async def test_a_response_head_too_large_for_the_tunnel_gets_a_502_that_says_so_and_the_tunnel_goes_on(
    processes: ProcessGroup, open_relay: Relay, scripted, client: aiohttp.ClientSession
) -> None:
    # 150 KB of quotes: within the local client's head limit (256 KiB raw), twice that once
    # JSON-escaped for the tunnel, past the protocol's head limit.
    quotes = b'"' * 150_000

    async def answer(conn: Connection, line: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if "/big-head" in line:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Quotes: " + quotes + b"\r\nContent-Length: 2\r\n\r\nno")
            return True
        return _ok(writer, f"conn {conn.number}")

    origin, agent, warmed = await _tunnel_with_idle_connection(processes, open_relay, scripted, client, answer)
    assert warmed == "conn 1"

    big_head = build_request("GET", "/big-head", agent.host, [("Accept", "text/plain")])
    refused = await raw_request(open_relay.port, big_head)
    assert refused.status == 502, refused
    assert refused.get("X-Relay-Error") == "local-error"
    assert "The local server's response cannot be relayed" in refused.body.decode()
    assert (await _wait_for_request(origin, "GET /big-head HTTP/1.1")).number == 1  # the idle connection carried it
    line = await _console_line(agent, "/big-head")
    assert "(response not relayable:" in line, line

    async with client.get(f"{agent.public_url}/after") as response:
        assert response.status == 200
        assert (await response.text()).startswith("conn ")

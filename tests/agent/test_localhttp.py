"""The agent's keep-alive client for its local server (relay_client/localhttp.py).

Real loopback sockets: an in-process aiohttp origin for ordinary exchanges, and
raw asyncio servers scripted byte by byte for the edge cases (interim answers,
bodies delimited by the connection's end, stale keep-alive connections, broken
responses), so what goes on the wire is pinned exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from support.ports import free_port
from support.rawservers import RawServers

from relay_client import localhttp
from relay_client.localhttp import (
    READ_HIGH_WATER,
    LocalHttpPool,
    LocalServerError,
    LocalUnreachable,
)
from relay_client.target import LocalTarget

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def echo_origin() -> AsyncIterator[LocalTarget]:
    """An aiohttp origin answering with the raw request headers, body length and peer port."""

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        lines = [f"{k.decode()}: {v.decode()}" for k, v in request.raw_headers]
        peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
        lines += [f"== {request.method} {request.raw_path} body={len(body)} peer={peer}"]
        return web.Response(text="\n".join(lines))

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(int(request.query.get("n", "64"))):
            await response.write(b"x" * 65536)
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield LocalTarget("http", "127.0.0.1", runner.addresses[0][1])
    finally:
        await runner.cleanup()


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[Script], Awaitable[LocalTarget]]]:
    """Start a raw server running ``script`` per connection; every connection is closed at the end."""
    servers = RawServers()

    async def start(script: Script) -> LocalTarget:
        return LocalTarget("http", "localhost", await servers.start(script))

    yield start
    await servers.close()


async def _read_all(pool: LocalHttpPool, method: str, path: str, headers, body=None) -> tuple[int, str, bytes]:
    async with await pool.request(method, path, headers, body) as response:
        parts = []
        while chunk := await response.read():
            parts.append(chunk)
        return response.status, response.reason, b"".join(parts)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def _head_of(reader: asyncio.StreamReader) -> list[str]:
    return (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[:-2]


async def test_the_local_server_gets_exactly_the_forwarded_headers_in_order_with_repeats(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin)
    headers = [("Host", "app.example"), ("X-Rep", "1"), ("x-rep", "2"), ("Cookie", "a=1")]
    status, _, body = await _read_all(pool, "GET", "/p?q=%20&r=1", headers)
    await pool.close()
    lines = body.decode().splitlines()
    assert status == 200
    # Exactly what was given, case and repeats kept (aiohttp's client merged X-Rep and x-rep).
    assert lines[:-1] == ["Host: app.example", "X-Rep: 1", "x-rep: 2", "Cookie: a=1"]
    assert lines[-1].startswith("== GET /p?q=%20&r=1 body=0")


async def test_body_framing_is_chosen_from_what_the_request_has(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin)
    _, _, sized = await _read_all(pool, "PUT", "/s", [("Host", "h"), ("Content-Length", "5")], _chunks(b"12", b"345"))
    _, _, streamed = await _read_all(pool, "POST", "/c", [("Host", "h")], _chunks(b"abc", b"", b"defg"))
    _, _, empty_post = await _read_all(pool, "POST", "/e", [("Host", "h")])
    _, _, plain_get = await _read_all(pool, "GET", "/g", [])
    await pool.close()
    assert sized.decode().splitlines()[:-1] == ["Host: h", "Content-Length: 5"]
    assert "body=5" in sized.decode()
    assert streamed.decode().splitlines()[:-1] == ["Host: h", "Transfer-Encoding: chunked"]
    assert "body=7" in streamed.decode()
    assert empty_post.decode().splitlines()[:-1] == ["Host: h", "Content-Length: 0"]
    # No Host from the public client (HTTP/1.0): the local server's own host:port.
    assert plain_get.decode().splitlines()[:-1] == [f"Host: 127.0.0.1:{echo_origin.port}"]


async def test_connections_are_kept_alive_and_reused(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin)
    peers = set()
    for _ in range(5):
        _, _, body = await _read_all(pool, "GET", "/k", [("Host", "h")])
        peers.add(body.decode().rsplit("peer=", 1)[1])
    await pool.close()
    assert len(peers) == 1


async def test_send_now_goes_only_on_an_idle_connection_and_never_waits(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin, limit=1)
    assert pool.send_now("GET", "/cold", [("Host", "h")]) is None  # nothing idle yet: request() connects
    _, _, warm = await _read_all(pool, "GET", "/warm", [("Host", "h")])
    local = pool.send_now("GET", "/now", [("Host", "h"), ("X-Seen", "1")])
    assert local is not None and local.head is not None
    assert pool.send_now("GET", "/busy", [("Host", "h")]) is None  # the one connection is taken: no waiting here
    response = await asyncio.wait_for(local.head, 5)
    body = b"".join([chunk async for chunk in _drain(response)]).decode()
    local.close()
    assert local.closed
    assert body.splitlines() == ["Host: h", "X-Seen: 1", f"== GET /now body=0 peer={warm.decode().rsplit('peer=', 1)[1]}"]
    # A head request() would refuse is not sent here either: request() raises it, answered as usual.
    assert pool.send_now("GET", "/x", [("X-Bad", "a\r\nInjected: 1")]) is None
    with pytest.raises(LocalServerError, match="line break"):
        await pool.request("GET", "/x", [("X-Bad", "a\r\nInjected: 1")])
    await pool.close()


async def _drain(response: localhttp.LocalResponse) -> AsyncIterator[bytes]:
    while chunk := await response.read():
        yield chunk


async def test_concurrent_requests_respect_the_connection_limit(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin, limit=2)
    first = await pool.request("GET", "/big?n=1", [("Host", "h")])
    second = await pool.request("GET", "/big?n=1", [("Host", "h")])
    third = asyncio.ensure_future(pool.request("GET", "/a", [("Host", "h")]))
    await asyncio.sleep(0.2)
    assert not third.done()  # waits for a free connection
    async with first as response:
        while await response.read():
            pass
    exchange = await asyncio.wait_for(third, 5)
    async with exchange as response:
        assert response.status == 200
    second.close()
    await pool.close()


async def test_a_request_that_finds_every_connection_busy_too_long_fails_saying_so(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin, limit=1, connection_wait=0.3)
    held = await pool.request("GET", "/big?n=1", [("Host", "h")])  # unread: keeps the one connection
    started = asyncio.get_running_loop().time()
    with pytest.raises(LocalServerError, match="all 1 connections to the local server stayed busy for 0.3 s"):
        await pool.request("GET", "/a", [("Host", "h")])
    assert asyncio.get_running_loop().time() - started < 3
    held.close()
    status, _, _ = await _read_all(pool, "GET", "/after", [("Host", "h")])  # the slot came back
    assert status == 200
    await pool.close()


async def test_a_large_body_is_read_only_as_fast_as_it_is_consumed(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin)
    async with await pool.request("GET", "/big?n=256", [("Host", "h")]) as response:  # 16 MiB
        await asyncio.sleep(0.5)  # nobody reads: the connection must stop reading
        assert response._buffered <= READ_HIGH_WATER + 256 * 1024, response._buffered
        total = response._buffered
        while chunk := await response.read():
            total += len(chunk)
    await pool.close()
    assert total >= 256 * 65536 - READ_HIGH_WATER - 256 * 1024


async def test_a_connection_paused_by_a_large_whole_response_reads_again_when_reused(scripted, monkeypatch):
    # A low mark and a small body sent in one write: the whole answer arrives in one read, past the
    # mark, so reading pauses with the response complete (with a real-sized body the kernel may hand
    # it over in pieces and pause mid-body instead, which is read()'s case, not this one).
    monkeypatch.setattr(localhttp, "READ_HIGH_WATER", 1000)
    body = b"z" * 5000

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _head_of(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()

    target = await scripted(script)
    pool = LocalHttpPool(target)
    for _ in range(4):  # the forwarder's fast path: wait until complete, take everything at once
        exchange = await asyncio.wait_for(pool.request("GET", "/", []), 5)
        async with exchange as response:
            for _ in range(500):
                if response.complete:
                    break
                await asyncio.sleep(0.01)
            assert response.complete and response._conn._paused_reading  # whole, and reading paused
            assert response.take_all() == body
    assert len(pool._idle) == 1
    await pool.close()


async def test_bodies_delimited_by_length_chunks_or_the_connections_end(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _head_of(reader)
            path = head[0].split()[1]
            if path == "/length":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            elif path == "/chunked":
                writer.write(b"HTTP/1.1 201 Made\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            elif path == "/eof":
                writer.write(b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\nuntil the end")
                await writer.drain()
                return  # closing the connection ends the body
            await writer.drain()

    target = await scripted(script)
    pool = LocalHttpPool(target)
    assert await _read_all(pool, "GET", "/length", []) == (200, "OK", b"hello")
    assert await _read_all(pool, "GET", "/chunked", []) == (201, "Made", b"abcde")
    assert await _read_all(pool, "GET", "/eof", []) == (200, "OK", b"until the end")
    await pool.close()


async def test_head_204_and_304_answers_end_at_their_head_and_the_connection_stays_usable(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _head_of(reader)
            method, path = head[0].split()[:2]
            if method == "HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif path == "/204":
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif path == "/304":
                writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    target = await scripted(script)
    pool = LocalHttpPool(target)
    async with await pool.request("HEAD", "/h", []) as response:
        assert response.complete and response.headers == [("Content-Length", "1000")]
        assert await response.read() == b""
    assert await _read_all(pool, "GET", "/204", []) == (204, "No Content", b"")
    assert await _read_all(pool, "GET", "/304", []) == (304, "Not Modified", b"")
    assert await _read_all(pool, "GET", "/x", []) == (200, "OK", b"ok")
    assert len(pool._idle) == 1
    await pool.close()


async def test_interim_answers_are_skipped_and_expect_continue_waits_for_100(scripted):
    seen: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head_of(reader)
        await asyncio.sleep(0.3)  # the body must not come before our 100
        assert not reader._buffer  # type: ignore[attr-defined]
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        seen.append(await reader.readexactly(4))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()
        await asyncio.sleep(5)

    target = await scripted(script)
    pool = LocalHttpPool(target)
    headers = [("Expect", "100-continue"), ("Content-Length", "4")]
    assert await _read_all(pool, "PUT", "/u", headers, _chunks(b"data")) == (200, "OK", b"done")
    await pool.close()
    assert seen == [b"data"]


async def test_a_final_answer_before_100_continue_skips_the_body_and_closes_the_connection(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head_of(reader)
        writer.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    target = await scripted(script)
    pool = LocalHttpPool(target)
    headers = [("Expect", "100-continue"), ("Content-Length", "4")]
    assert await _read_all(pool, "PUT", "/u", headers, _chunks(b"data")) == (413, "Too Big", b"")
    assert pool._idle == []  # the declared body never went: the connection cannot be reused
    await pool.close()


async def test_a_2xx_answer_before_the_body_still_gets_the_body_as_an_echo_needs(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await _head_of(reader)
            path = head[0].split()[1]
            # /both: 100 and the final head in one segment; /direct: the final head with no 100.
            interim = b"HTTP/1.1 100 Continue\r\n\r\n" if path == "/both" else b""
            writer.write(interim + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await writer.drain()
            data = await reader.readexactly(4)
            writer.write(b"4\r\n" + data + b"\r\n0\r\n\r\n")
            await writer.drain()

    target = await scripted(script)
    pool = LocalHttpPool(target)
    headers = [("Expect", "100-continue"), ("Content-Length", "4")]
    assert await _read_all(pool, "POST", "/both", headers, _chunks(b"ping")) == (200, "OK", b"ping")
    assert await _read_all(pool, "POST", "/direct", headers, _chunks(b"pong")) == (200, "OK", b"pong")
    await pool.close()


async def test_a_stale_keep_alive_connection_is_retried_once_for_an_idempotent_request(scripted):
    connections = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await _head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % connections)
        await writer.drain()
        # then close: the server's keep-alive ended while the connection sat in the pool

    target = await scripted(script)
    pool = LocalHttpPool(target)
    assert await _read_all(pool, "GET", "/", []) == (200, "OK", b"1")
    await asyncio.sleep(0.1)
    assert await _read_all(pool, "GET", "/", []) == (200, "OK", b"2")
    await pool.close()


async def test_a_dead_local_server_is_unreachable_with_the_systems_reason():
    pool = LocalHttpPool(LocalTarget("http", "localhost", free_port()))
    with pytest.raises(LocalUnreachable) as caught:
        await pool.request("GET", "/", [])
    await pool.close()
    assert caught.value.reason == "Connection refused"


async def test_broken_responses_fail_with_a_clear_error(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head_of(reader)
        path = head[0].split()[1]
        if path == "/garbage":
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif path == "/cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    target = await scripted(script)
    pool = LocalHttpPool(target)
    with pytest.raises(LocalServerError, match="invalid response"):
        await _read_all(pool, "GET", "/garbage", [])
    with pytest.raises(LocalServerError, match="mid-response"):
        await _read_all(pool, "GET", "/cut", [])
    with pytest.raises(LocalServerError, match="before answering"):
        await _read_all(pool, "GET", "/silent", [])
    await pool.close()


async def test_a_huge_response_head_is_refused_without_buffering_it(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _head_of(reader)
        if head[0].split()[1] == "/many":
            writer.write(b"HTTP/1.1 200 OK\r\n" + b"X-A: 1\r\n" * 600)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nX-Big: ")
            for _ in range(64):  # 4 MiB of one header value, never ended
                writer.write(b"v" * 65536)
                await writer.drain()
        await writer.drain()
        await asyncio.sleep(5)

    target = await scripted(script)
    pool = LocalHttpPool(target)
    with pytest.raises(LocalServerError, match="larger than 262144 bytes"):
        await _read_all(pool, "GET", "/big", [])
    with pytest.raises(LocalServerError, match="more than 500 headers"):
        await _read_all(pool, "GET", "/many", [])
    await pool.close()


async def test_trailers_are_dropped_and_do_not_leak_into_the_next_response(scripted):
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-Trailer: t\r\n\r\n")
        await _head_of(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(5)

    target = await scripted(script)
    pool = LocalHttpPool(target)
    async with await pool.request("GET", "/1", []) as response:
        assert response.headers == [("Transfer-Encoding", "chunked")]
        assert await response.read() == b"hi"
    async with await pool.request("GET", "/2", []) as response:
        assert response.headers == [("Content-Length", "2")]
        assert await response.read() == b"ok"
    await pool.close()


async def test_a_line_break_in_a_header_never_reaches_the_wire(scripted):
    received: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(1000))

    target = await scripted(script)
    pool = LocalHttpPool(target)
    with pytest.raises(LocalServerError, match="line break"):
        await pool.request("GET", "/", [("X-A", "1\r\nX-Injected: yes")])
    await pool.close()
    assert received == []


async def test_leaving_an_unfinished_response_closes_its_connection(echo_origin: LocalTarget):
    pool = LocalHttpPool(echo_origin)
    async with await pool.request("GET", "/big?n=64", [("Host", "h")]) as response:
        assert response.status == 200
    assert pool._idle == [] and not pool._busy
    assert await _read_all(pool, "GET", "/after", [("Host", "h")]) != (0, "", b"")
    await pool.close()


async def test_an_https_local_server_is_verified_like_any_tls_server(tmp_path):
    trustme = pytest.importorskip("trustme")
    import ssl

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls {request.secure}")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    target = LocalTarget("https", "localhost", runner.addresses[0][1])
    try:
        trusting = ssl.create_default_context()
        ca.configure_trust(trusting)
        pool = LocalHttpPool(target, ssl_context=trusting)
        assert await _read_all(pool, "GET", "/", [("Host", "localhost")]) == (200, "OK", b"tls True")
        await pool.close()
        strict = LocalHttpPool(target)  # the system's CAs do not know this one
        with pytest.raises(LocalUnreachable, match="TLS handshake failed"):
            await strict.request("GET", "/", [])
        await strict.close()
    finally:
        await runner.cleanup()

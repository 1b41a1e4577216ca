"""A keep-alive HTTP/1.1 client for the agent's one local server.

Every public request becomes one request to the same origin, so the general
machinery of ``aiohttp.ClientSession`` (URL objects, per-request request and
response objects, cookie and redirect handling, connection keys, timers) is
work the hot path does not need: it was a third of the agent's CPU per small
request.  This client keeps a pool of connections to the configured target,
writes each request head as one pre-joined buffer, and parses responses with
llhttp (``httptools``, the parser uvicorn uses).  Bodies stream both ways
with back-pressure; nothing is decompressed.  Websocket upgrades and the
inspector's replay still go through the shared ``aiohttp`` session.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import httptools

from relay_client.settings import LOCAL_CONNECTION_LIMIT  # the default; --local-connections sets the agent's
from relay_client.target import LocalTarget, is_localhost
from relay_protocol.httpheaders import decode_raw_headers
from relay_protocol.limits import MAX_HEAD_SIZE, MAX_HEADER_COUNT


#: How long a request waits for a free connection when all are busy (long responses
#: such as SSE hold one each) before it fails with a message that says so.
CONNECTION_WAIT = 30.0

#: A pooled connection idle longer than this is closed instead of reused
#: (servers drop idle keep-alive connections; aiohttp's client uses 15 s too).
KEEPALIVE_IDLE = 15.0

#: Bytes of response body buffered per connection before it stops reading
#: the local server (the stream's window then sets the pace).
READ_HIGH_WATER = 2**18
READ_LOW_WATER = 2**16

#: How long a request with ``Expect: 100-continue`` waits for the local server's
#: 100 (or final answer) before sending its body anyway, as curl does.
EXPECT_CONTINUE_WAIT = 1.0

#: Methods whose request without a body gets no ``Content-Length: 0`` (aiohttp's rule).
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

#: A request that failed on a reused connection before any answer is sent again
#: once on a fresh one, if repeating it is harmless (RFC 9110, 9.2.2) and it had no body.
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class LocalServerError(Exception):
    """The local server failed a request (closed early, sent something unparsable)."""


class LocalUnreachable(LocalServerError):
    """No connection to the local server; ``reason`` is the system's word for why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unreachable_reason(error: OSError) -> str:
    """The system's word for why a connection to the local server failed.

    asyncio words a refusal "Connect call failed (...)", and aiohttp one of both
    loopback addresses "Multiple exceptions: [Errno 111] ..., ..." (keeping the
    errno when they failed alike): the errno's own text is clearer.
    """
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


class _Retry(LocalServerError):
    """A reused connection turned out to be closed before it answered."""

    def __init__(self) -> None:
        super().__init__("the local server closed the connection before answering")


def may_send_again(error: BaseException, method: str) -> bool:
    """``error`` is a reused connection closing before any answer, and repeating the request is harmless.

    RFC 9110, 9.2.2: only idempotent methods; a request with a body never
    comes here (its body may be half sent, and is not kept).
    """
    return isinstance(error, _Retry) and method in _IDEMPOTENT


class _Slots:
    """A counting limit on connections in use: taking a free slot is a plain call, not a coroutine.

    Fair as ``asyncio.Semaphore``: while anyone waits, a newcomer waits behind them.
    """

    __slots__ = ("free", "waiters")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self, timeout: float) -> None:
        """Wait for a slot; TimeoutError after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed to us as we gave up: pass it on
            else:
                waiter.cancel()
                try:
                    self.waiters.remove(waiter)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot goes straight to the longest waiter
                return
        self.free += 1


class LocalResponse:
    """One response from the local server: head at once, body chunk by chunk."""

    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_error", "_waiter", "headers", "reason", "status")

    def __init__(self, conn: _Connection) -> None:
        self.status = 0
        self.reason = ""
        #: The raw header pairs as the local server sent them (decoded, order and repeats kept).
        self.headers: list[tuple[str, str]] = []
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: LocalServerError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def complete(self) -> bool:
        """The whole body has arrived (small responses usually arrive with their head)."""
        return self._done

    @property
    def buffered(self) -> int:
        """Body bytes here and not yet taken."""
        return self._buffered

    def take_all(self) -> bytes:
        """Every buffered body byte at once (used when ``complete``)."""
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        self._conn.resume_reading()
        return data

    async def read(self) -> bytes:
        """The next body chunk; b"" at the end; LocalServerError if the body broke off."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < READ_LOW_WATER:
            self._conn.resume_reading()
        return chunk

    def at_eof(self) -> bool:
        """Nothing more to read: the body ended and every chunk was taken."""
        return self._done and not self._chunks

    # -- fed by the connection
    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > READ_HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: LocalServerError) -> None:
        if not self._done and self._error is None:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self, pool: LocalHttpPool, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        #: Kept: each ``get_running_loop()`` costs a getpid() syscall on Python 3.11.
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.idle_since = 0.0
        self.used = False
        self._parser: httptools.HttpResponseParser | None = None
        self._response: LocalResponse | None = None
        self._head_ready: asyncio.Future[LocalResponse] | None = None
        self._continue: asyncio.Future[None] | None = None
        self._head_only = False
        self._until_eof = False
        self._got_bytes = False
        self._reason: list[bytes] = []
        self._raw: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        #: Why the response head was refused while parsing (a callback cannot raise through llhttp).
        self._refusal: str | None = None
        self._paused_reading = False
        self._drain: asyncio.Future[None] | None = None
        self._paused_writing = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # nothing asked: a server talking out of turn is not reused
            self._close()
            return
        self._got_bytes = True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # a 101 answer: the head is complete; the connection is not reused
        except httptools.HttpParserError as exc:
            self._broken(self._refusal or f"the local server sent an invalid response: {exc}")
            return
        if self._response is None:
            # llhttp sets no limit and keeps a header's pieces until it ends: bound the head here.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_SIZE:
                self._broken(f"the local server's response head is larger than {MAX_HEAD_SIZE} bytes")

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        response = self._response
        if self._head_ready is not None and not self._head_ready.done():
            if not self._got_bytes and self.used:
                self._head_ready.set_exception(_Retry())
            else:
                detail = f": {exc}" if exc else ""
                self._head_ready.set_exception(
                    LocalServerError(f"the local server closed the connection before answering{detail}")
                )
        elif response is not None and not response._done:
            if self._until_eof:
                response._finish()  # a body delimited by the end of the connection
            else:
                response._fail(LocalServerError("the local server closed the connection mid-response"))
        self._parser = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the local server closed the connection"))
        if self._continue is not None and not self._continue.done():
            self._continue.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- flow control of the response body
    def pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None and not self.closed:
            self._paused_reading = False
            self.transport.resume_reading()

    # -- llhttp callbacks
    def on_status(self, status: bytes) -> None:
        self._reason.append(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            return  # a trailer of a chunked body: not relayed
        self._raw.append((name, value))
        if len(self._raw) > MAX_HEADER_COUNT:
            self._refusal = f"the local server's response has more than {MAX_HEADER_COUNT} headers"
            raise ValueError(self._refusal)  # llhttp stops; data_received reports the refusal

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the final one follows.
            if status == 100 and self._continue is not None and not self._continue.done():
                self._continue.set_result(None)
            self._reason.clear()
            self._raw.clear()
            self._head_bytes = 0
            return
        response = LocalResponse(self)
        response.status = status
        response.reason = b"".join(self._reason).decode("latin-1")
        response.headers = decode_raw_headers(self._raw)
        self._reason.clear()
        self._raw.clear()
        self._response = response
        if not parser.should_keep_alive() or status == 101:
            self.reusable = False
        if self._continue is not None and not self._continue.done():
            self._continue.set_result(None)  # a final answer before the body: stop waiting
        if self._head_only or status in (101, 204, 304):
            response._done = True
            # llhttp would wait for the body a HEAD response announces: there is none, and
            # whatever else the server sends on this connection is out of turn.
            self._parser = None
        else:
            self._until_eof = _until_eof(response.headers)
        if self._head_ready is not None and not self._head_ready.done():
            self._head_ready.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is not None and not response._done:
            response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None:
            return  # the end of an interim (1xx) answer
        if not response._done:
            response._finish()
        self._parser = None  # one response per request; anything more is out of turn

    # -- used by the pool
    def begin(self, head_only: bool, expect_continue: bool) -> asyncio.Future[LocalResponse]:
        loop = self.loop
        self._parser = httptools.HttpResponseParser(self)
        self._response = None
        self._reason.clear()
        self._raw.clear()
        self._head_bytes = 0
        self._refusal = None
        self._head_only = head_only
        self._until_eof = False
        self._got_bytes = False
        self._head_ready = loop.create_future()
        self._continue = loop.create_future() if expect_continue else None
        return self._head_ready

    async def drain(self) -> None:
        if self._paused_writing and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    async def wait_for_continue(self, timeout: float) -> None:
        """Wait for 100 Continue (or a final answer, or the connection's end), at most ``timeout``."""
        if self._continue is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._continue), timeout)
        except TimeoutError:
            pass

    @property
    def refused_body(self) -> bool:
        """A final answer of 300 or more came before the body went: the server does not want it.

        curl's rule: a 2xx answer (a server streaming its reply while it reads,
        as an echo does) still gets the body; a refusal or redirect does not.
        """
        return self._response is not None and self._response.status >= 300

    def settled(self) -> bool:
        """The response arrived whole and the connection may carry another request."""
        response = self._response
        return (
            self.reusable
            and not self.closed
            and response is not None
            and response._done
            and not self._until_eof
            and not response._chunks
        )

    def rest(self) -> None:
        """Back in the pool: forget the finished exchange, remember when it ended."""
        self.resume_reading()  # an idle connection must notice the server closing it
        self.used = True
        self.idle_since = time.monotonic()
        self._parser = None
        self._response = None
        self._head_ready = None
        self._continue = None

    def _broken(self, message: str) -> None:
        self.reusable = False
        error = LocalServerError(message)
        if self._head_ready is not None and not self._head_ready.done():
            self._head_ready.set_exception(error)
        elif self._response is not None:
            self._response._fail(error)
        self._close()

    def _close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class LocalHttpPool:
    """Keep-alive connections to the agent's configured local server, and nothing else."""

    def __init__(
        self,
        target: LocalTarget,
        limit: int = LOCAL_CONNECTION_LIMIT,
        connect_timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
        connection_wait: float = CONNECTION_WAIT,
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.limit = limit
        self.connection_wait = connection_wait
        self._ssl: ssl.SSLContext | None = None
        if target.scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._slots = _Slots(limit)
        self._closed = False
        #: Host header for requests that came without one.
        self.host_port = target.host_port

    async def request(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes | memoryview] | None = None,
    ) -> LocalExchange:
        """Send a request and wait for the response head; use the result with ``async with``."""
        head, chunked, expect = _request_head(method, target, headers, self.host_port, body is not None)
        if not self._slots.try_take():
            await self._wait_for_slot()
        try:
            retried = False
            while True:
                conn = self._take_idle()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                self._busy.add(conn)
                exchange = LocalExchange(self, conn)
                try:
                    exchange.response = await exchange.start(head, method == "HEAD", body, chunked, expect)
                    return exchange
                except _Retry as exc:
                    self._finish(conn)
                    if reused and not retried and body is None and may_send_again(exc, method):
                        retried = True
                        continue
                    raise LocalServerError(str(exc)) from None
                except BaseException:
                    exchange.stop_upload()
                    self._finish(conn)
                    raise
        except BaseException:
            self._slots.release()
            raise

    def send_now(self, method: str, target: str, headers: Sequence[tuple[str, str]]) -> LocalExchange | None:
        """A bodiless request written at once on an idle connection; its ``head`` future is the answer.

        None where ``request`` would have to wait (every connection busy, none
        idle to reuse) or would refuse the head: use ``request`` then.  So the
        common case costs no coroutine and no task.
        """
        try:
            head = _request_head(method, target, headers, self.host_port, False)[0]
        except LocalServerError:
            return None
        if not self._slots.try_take():
            return None
        conn = self._take_idle()
        if conn is None:
            self._slots.release()
            return None
        self._busy.add(conn)
        exchange = LocalExchange(self, conn)
        try:
            exchange.head = exchange.start(head, method == "HEAD", None, False, False)
        except _Retry:  # it closed while idle: ``request`` connects anew
            exchange.close()
            return None
        return exchange

    async def _wait_for_slot(self) -> None:
        try:
            await self._slots.take(self.connection_wait)
        except TimeoutError:
            raise LocalServerError(
                f"all {self.limit} connections to the local server stayed busy for {self.connection_wait:g} s "
                "(each open request or stream, such as an SSE response, holds one; "
                "relay-client http --local-connections allows more)"
            ) from None

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if now - conn.idle_since > KEEPALIVE_IDLE:
                conn.abort()
                continue
            return conn
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        target = self.target
        hosts = ["127.0.0.1", "::1"] if is_localhost(target.host) else [target.host]
        server_hostname = target.host if self._ssl is not None else None
        first_error: OSError | None = None
        for host in hosts:
            try:
                async with asyncio.timeout(self.connect_timeout):
                    _transport, conn = await loop.create_connection(
                        lambda: _Connection(self, loop), host, target.port, ssl=self._ssl, server_hostname=server_hostname
                    )
                return conn
            except TimeoutError:
                first_error = first_error or TimeoutError(f"no connection within {self.connect_timeout:g} s")
            except ssl.SSLError as exc:
                raise LocalUnreachable(f"TLS handshake failed: {exc.reason or exc}") from None
            except OSError as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise LocalUnreachable(unreachable_reason(first_error))

    def _finish(self, conn: _Connection) -> None:
        """A request on ``conn`` is over: keep the connection for the next one, or close it."""
        self._busy.discard(conn)
        if conn.settled() and not self._closed:
            conn.rest()
            self._idle.append(conn)
        elif not conn.closed:
            conn.abort()

    def _forget(self, conn: _Connection) -> None:
        """``conn`` closed; an idle one leaves the pool at once."""
        if conn in self._busy:
            return
        try:
            self._idle.remove(conn)
        except ValueError:
            pass

    async def close(self) -> None:
        """Close every connection (the agent is stopping)."""
        self._closed = True
        for conn in [*self._idle, *self._busy]:
            conn.abort()
        self._idle.clear()
        self._busy.clear()


class LocalExchange:
    """One request on one pooled connection; leaving ``async with`` frees or closes the connection."""

    __slots__ = ("_closed", "_conn", "_pool", "_upload", "head", "response")

    def __init__(self, pool: LocalHttpPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self._upload: asyncio.Task[None] | None = None
        #: From ``send_now``: resolves to the response (its head, and what came of the body).
        self.head: asyncio.Future[LocalResponse] | None = None
        self.response: LocalResponse | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """``close`` was called: the connection went back to the pool, or was closed."""
        return self._closed

    def start(
        self,
        head: bytes,
        head_only: bool,
        body: AsyncIterator[bytes | memoryview] | None,
        chunked: bool,
        expect: bool,
    ) -> asyncio.Future[LocalResponse]:
        """Send the request head (the body follows in a task); the future is the response head."""
        conn = self._conn
        head_ready = conn.begin(head_only, expect)
        if conn.closed or conn.transport is None:
            raise _Retry()
        conn.transport.write(head)
        if body is not None:
            self._upload = conn.loop.create_task(self._send_body(body, chunked, expect))
            # A failed upload (the local server closed mid-body) shows as the response's error.
            self._upload.add_done_callback(_ignore_result)
        return head_ready

    async def _send_body(self, body: AsyncIterator[bytes | memoryview], chunked: bool, expect: bool) -> None:
        conn = self._conn
        transport = conn.transport
        assert transport is not None
        if expect:
            await conn.wait_for_continue(EXPECT_CONTINUE_WAIT)
            if conn.refused_body or conn.closed:
                conn.reusable = False  # the declared body never went: the connection cannot carry another request
                return
        async for chunk in body:
            if conn.closed:
                return
            if not chunk:
                continue
            if chunked:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                transport.write(chunk)
            await conn.drain()
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    def stop_upload(self) -> None:
        """Stop sending the request body; the connection is not reused after a half-sent body."""
        upload = self._upload
        if upload is not None and not upload.done():
            upload.cancel()
            self._conn.reusable = False

    async def __aenter__(self) -> LocalResponse:
        assert self.response is not None
        return self.response

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Give the connection back if its exchange finished cleanly; else close it."""
        if self._closed:
            return
        self._closed = True
        self.stop_upload()
        self._pool._finish(self._conn)
        self._pool._slots.release()


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def _until_eof(headers: list[tuple[str, str]]) -> bool:
    """No Content-Length and not chunked: the body lasts until the connection closes."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length":
            return False
        if lowered == "transfer-encoding" and "chunked" in value.lower():
            return False
    return True


def _request_head(
    method: str, target: str, headers: Sequence[tuple[str, str]], host_port: str, has_body: bool
) -> tuple[bytes, bool, bool]:
    """The request line and headers as one buffer (Host added if missing, body framing chosen).

    Also whether the body goes chunked, and whether it must wait for ``100 Continue``
    (asked with ``Expect: 100-continue``; only a request with a body waits).
    """
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = has_length = expect = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "host":
            has_host = True
        elif lowered == "content-length":
            has_length = True
        elif lowered == "expect" and value.strip().lower() == "100-continue":
            expect = has_body
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {host_port}")
    chunked = has_body and not has_length
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    elif not has_body and not has_length and method not in _NO_BODY_METHODS:
        lines.append("Content-Length: 0")
    text = "\r\n".join(lines)
    breaks = len(lines) - 1
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise LocalServerError("the request head contains a line break inside a line")
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape"), chunked, expect

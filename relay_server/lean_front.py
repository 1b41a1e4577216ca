"""The public listener's own protocol: plain requests to a tunnel without aiohttp's per-request machinery.

Most of what a tunnel carries is small bodiless requests (page loads, API
GETs, polling, health checks).  One that arrives whole in one read and has
nothing unusual about it (HTTP/1.1, an origin-form target, no Connection,
Upgrade, Expect, Content-Length or Transfer-Encoding header, no repeated
singleton header, within the size limits, for a local tunnel with no access
rules, relay not stopping) is parsed by llhttp, sent to its agent and answered
from callbacks: no Task, no request or response objects.  aiohttp's request
and response machinery was about a third of the relay's CPU per such request.

Anything else goes to aiohttp at the first sight of it: the connection is
handed, with every byte received so far, to the ``HeadTimedHandler`` aiohttp
would have started with, and stays with it.  So bodies, websockets,
malformed or slow heads, the relay's own endpoints, refusals by a limit,
password-protected tunnels and fleet routes keep their one implementation in
``front`` and ``app``.  The checks made here before taking a request are
exactly the ones that would make that path answer differently; what the agent
receives (``forwarded_headers``), the caller receives (the same response
head aiohttp writes: agent headers, ``Date``, chunked framing when there is no
Content-Length), the access log and the metrics are the same either way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum
from typing import NamedTuple

import httptools
from aiohttp.helpers import EMPTY_BODY_STATUS_CODES, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_nodelay
from aiohttp.web_response import REASON_PHRASES

from relay_protocol.driver import MuxStream, StreamError
from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.httpheaders import decode_raw_headers
from relay_server.access import forwarded_client, peer_address
from relay_server.app import Relay
from relay_server.front import (
    busy_error,
    first_header,
    forwarded_headers,
    offline_error,
    response_headers,
    stream_failure,
    timeout_error,
)
from relay_server.metering import RequestMeter
from relay_server.pages import error_body
from relay_server.publiclimits import KEEPALIVE_TIMEOUT
from relay_server.tunnel import Tunnel

log = logging.getLogger("relay_server.front")

#: Request headers that make a request aiohttp's to answer (a body, an upgrade, an expectation).
_NOT_LEAN = frozenset({"content-length", "transfer-encoding", "upgrade", "expect"})

#: The Connection header values served here: after the response the connection stays (False) or closes (True).
_CONNECTION_OPTIONS = {"keep-alive": False, "close": True}

#: Headers aiohttp refuses to see twice in one request (RFC 9110 singletons): such a request goes to aiohttp.
_SINGLETONS = frozenset(
    {
        "content-length",
        "content-location",
        "content-range",
        "content-type",
        "etag",
        "host",
        "max-forwards",
        "server",
        "transfer-encoding",
        "user-agent",
    }
)

#: Past this many headers aiohttp's parser refuses a request (its ``max_headers``): leave that to it.
_MAX_LEAN_HEADERS = 100

#: Paths of ACME http-01 challenges (``relay_server.tls.acme.challenges.HTTP01_PREFIX``; not imported: TLS is optional).
_ACME_CHALLENGES = b"/.well-known/acme-challenge/"

#: A whole body shorter than this is copied behind its head for one send; a longer one goes out after it.
_COPY_LIMIT = 64 * 1024

#: Bytes kept from a client that sends ahead while its request is answered, before reading pauses.
_MAX_AHEAD = 64 * 1024


class _Framing(Enum):
    EMPTY = 0  # HEAD, 1xx, 204, 304: the head says it all
    LENGTH = 1  # Content-Length: exactly that many bytes
    CHUNKED = 2  # no length: chunked, as aiohttp frames it


class LeanFront:
    """Builds the listeners' protocols; knows the relay and how to make aiohttp's protocol for a hand-over.

    ``plain`` says whether plain-http connections may be served here: not when
    aiohttp middlewares must see them (the TLS setup's redirect to https and
    its ACME http-01 answers).  TLS connections always may; a request for an
    ACME challenge path goes to aiohttp wherever it arrives.
    """

    def __init__(self, relay: Relay, aiohttp_protocol: Callable[[], asyncio.Protocol], plain: bool = True) -> None:
        self.relay = relay
        self.config = relay.config
        self.aiohttp_protocol = aiohttp_protocol
        self.plain = plain
        #: Connections still served here (the ones handed to aiohttp are aiohttp's to close).
        self.connections: set[PublicConnection] = set()
        #: Requests served here, and connections handed to aiohttp (for tests and debugging).
        self.served = 0
        self.handed_over = 0

    def __call__(self) -> asyncio.Protocol:
        """The protocol for a new connection on the http listener."""
        return PublicConnection(self) if self.plain else self.aiohttp_protocol()

    def tls_protocol(self) -> asyncio.Protocol:
        """The protocol for a new connection on the https listener (its transport decrypts)."""
        return PublicConnection(self)

    def close_idle(self) -> None:
        """Close every connection with no request in flight (the relay is stopping)."""
        for connection in list(self.connections):
            connection.close_if_idle()


class _Exchange:
    """One request served here, from its head to the end of its response."""

    __slots__ = ("accept", "close", "finished", "key", "meter", "method", "path", "stream", "task", "tunnel")

    def __init__(
        self, stream: MuxStream, tunnel: Tunnel, meter: RequestMeter, method: str, path: str, accept: str, close: bool
    ) -> None:
        self.stream = stream
        self.tunnel = tunnel
        self.meter = meter
        self.method = method
        self.path = path
        self.accept = accept
        #: The caller said ``Connection: close``: so does the response, and the connection ends after it.
        self.close = close
        self.key = 0
        self.task: asyncio.Task[None] | None = None
        self.finished = False


class PlainRequest(NamedTuple):
    """One whole request the lean front may take (what ``PlainRequestReader.read`` found)."""

    method: str
    target: str
    host: str
    raw: list[tuple[bytes, bytes]]
    #: The headers decoded as aiohttp decodes them, and their names in lower case.
    pairs: list[tuple[str, str]]
    lowered: list[str]
    #: The caller said ``Connection: close``.
    close: bool


class PlainRequestReader:
    """llhttp over one connection's bytes: a ``PlainRequest``, or None for anything aiohttp must see.

    None means: not exactly one whole request in the bytes; a body, an upgrade
    or an expectation; malformed by llhttp's strict rules; not HTTP/1.1; not an
    origin-form ASCII target; CONNECT; no Host, or a repeated singleton header
    (aiohttp refuses those); a Connection header other than one ``close`` or
    ``keep-alive``; more headers than aiohttp takes.  Kept apart from the
    protocol so a test can hold it against aiohttp's own parser.
    """

    def __init__(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._begun = 0
        self._complete = 0
        self._body = False

    def read(self, data: bytes) -> PlainRequest | None:
        """The one plain request ``data`` holds, or None (the parser is then of no further use)."""
        self._url, self._headers, self._begun, self._complete, self._body = b"", [], 0, 0, False
        parser = self._parser
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # malformed, or an upgrade: aiohttp answers
            return None
        raw = self._headers
        url = self._url
        if self._begun != 1 or self._complete != 1 or self._body or len(raw) > _MAX_LEAN_HEADERS:
            return None
        if parser.get_http_version() != "1.1" or not url.startswith(b"/") or not url.isascii():
            return None
        if url.startswith(_ACME_CHALLENGES):  # the TLS setup's middleware answers those
            return None
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            return None
        pairs = decode_raw_headers(raw)
        lowered = [name.lower() for name, _ in pairs]
        if not _NOT_LEAN.isdisjoint(lowered) or "host" not in lowered:  # HTTP/1.1 without Host: aiohttp's 400
            return None
        if len(set(lowered)) != len(lowered) and any(lowered.count(name) > 1 for name in _SINGLETONS.intersection(lowered)):
            return None
        close = False
        if "connection" in lowered:
            if lowered.count("connection") > 1:
                return None
            option = _CONNECTION_OPTIONS.get(pairs[lowered.index("connection")][1].strip().lower())
            if option is None:  # names other headers, or upgrades: aiohttp's
                return None
            close = option
        host = pairs[lowered.index("host")][1]
        return PlainRequest(method, url.decode("ascii"), host, raw, pairs, lowered, close)

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self._begun += 1

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing whitespace; aiohttp does not

    def on_body(self, body: bytes) -> None:
        self._body = True

    def on_message_complete(self) -> None:
        self._complete += 1


class PublicConnection(asyncio.Protocol):
    """One public connection, served here until a request needs aiohttp."""

    def __init__(self, front: LeanFront) -> None:
        self._front = front
        self.transport: asyncio.Transport | None = None
        self._reader = PlainRequestReader()
        self._peer = ""
        self._scheme = "http"
        self._loop = asyncio.get_running_loop()
        #: The request being answered (one at a time, as HTTP/1.1 answers in order).
        self._exchange: _Exchange | None = None
        #: Bytes that came while a request was being answered (pipelined or sent ahead).
        self._ahead = b""
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._idle_since = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note the peer; TCP_NODELAY as aiohttp sets it; the idle keep-alive clock starts."""
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is no asyncio.Transport subclass)
        tcp_nodelay(transport, True)
        self._peer = peer_address(transport)
        if transport.get_extra_info("sslcontext") is not None:
            self._scheme = "https"
        self._front.connections.add(self)
        self._idle_since = self._loop.time()
        self._idle_timer = self._loop.call_at(self._idle_since + KEEPALIVE_TIMEOUT, self._check_idle)

    def data_received(self, data: bytes) -> None:
        """Take a whole plain request, or hand the connection to aiohttp."""
        if self._exchange is not None:
            self._ahead += data
            if len(self._ahead) > _MAX_AHEAD and not self._reading_paused and self.transport is not None:
                self._reading_paused = True
                self.transport.pause_reading()
            return
        if self._ahead:
            data, self._ahead = self._ahead + data, b""
        if not self._take(data):
            self._hand_over(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        """The caller went away: its request in flight is cancelled at the agent too."""
        self._front.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        drained = self._drained
        if drained is not None and not drained.done():
            drained.cancel()  # the body copy waiting on it ends (its task is cancelled below too)
        exchange = self._exchange
        if exchange is not None:
            exchange.meter.failed("public client went away")
            if exchange.task is not None:
                exchange.task.cancel()  # its finally ends the exchange
            else:
                self._finish(exchange)

    def pause_writing(self) -> None:
        """The caller reads slower than the agent sends: the body copy waits."""
        self._writing_paused = True

    def resume_writing(self) -> None:
        """The caller caught up."""
        self._writing_paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # ------------------------------------------------------------ taking a request
    def _take(self, data: bytes) -> bool:
        """Serve ``data`` here if it is exactly one plain request to a local tunnel; False: aiohttp's."""
        request = self._reader.read(data)
        if request is None:
            return False
        method, url, host, raw, pairs, lowered, close = request
        front = self._front
        relay = front.relay
        config = front.config
        if relay.stopping:
            return False
        name = relay.name_for_host(host)
        if name is None:
            return False
        tunnel = relay.registry.lookup(name)
        if not isinstance(tunnel, Tunnel) or not tunnel.access.open:
            return False
        if len(url) > config.max_url_bytes or sum(len(k) + len(v) for k, v in raw) > config.max_header_bytes:
            return False  # aiohttp's path answers 414/431 and counts the limit
        self._open(tunnel, method, url, pairs, lowered, close)
        front.served += 1
        return True

    def _open(
        self, tunnel: Tunnel, method: str, target: str, pairs: list[tuple[str, str]], lowered: list[str], close: bool
    ) -> None:
        """Start the exchange: the stream to the agent, the meter, the response deadline."""
        front = self._front
        config = front.config
        relay = front.relay
        peer = self._peer
        client = peer
        if config.is_trusted_proxy(peer):
            client = forwarded_client(peer, first_header(pairs, lowered, "x-forwarded-for") or "", config)
        meter = RequestMeter(tunnel.name, client, relay.observer)
        relay.observer.request_started(tunnel.name)
        tunnel.requests += 1
        head = RequestHead(method, target, forwarded_headers(pairs, lowered, peer, config, self._scheme), peer)
        accept = first_header(pairs, lowered, "accept") or ""
        path = target.partition("?")[0]  # queries carry secrets: never logged
        try:
            stream = tunnel.mux.open_stream(head, end_stream=True)
        except LocalProtocolError as exc:
            if exc.code == ErrorCode.FRAME_TOO_LARGE:
                failure = (431, "headers-too-large", "Request headers too large", str(exc))
            elif exc.code == ErrorCode.TOO_MANY_STREAMS:
                meter.limit_hit("max_streams")
                failure = busy_error(tunnel.name)
            else:
                failure = offline_error(tunnel.name)
            self._answer_refusal(meter, method, path, accept, close, failure)
            return
        except StreamError:
            self._answer_refusal(meter, method, path, accept, close, offline_error(tunnel.name))
            return
        exchange = self._exchange = _Exchange(stream, tunnel, meter, method, path, accept, close)
        exchange.key = relay.entered(self)
        meter.stream_opened(stream.id)
        tunnel.deadlines.watch(stream, config.response_timeout)
        stream.response.add_done_callback(self._on_response_head)

    def _hand_over(self, data: bytes) -> None:
        """From here on aiohttp serves this connection, starting with ``data``."""
        transport = self.transport
        self._front.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if transport is None or transport.is_closing():
            return
        self._front.handed_over += 1
        handler = self._front.aiohttp_protocol()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if self._writing_paused:
            handler.pause_writing()
        if data:
            handler.data_received(data)

    # ------------------------------------------------------------ answering
    def _on_response_head(self, response: asyncio.Future[ResponseHead]) -> None:
        exchange = self._exchange
        if exchange is None or exchange.stream.response is not response or exchange.finished:
            return  # the caller went away first
        try:
            self._answer(exchange, response)
        except Exception:  # a bug here must not leave the caller waiting or the stream open
            log.exception("tunnel %s: answering a request failed", exchange.tunnel.name)
            exchange.meter.failed("relay error")
            if self.transport is not None:
                self.transport.abort()
            self._finish(exchange)

    def _answer(self, exchange: _Exchange, response: asyncio.Future[ResponseHead]) -> None:
        """The agent's response head (or the stream's failure) is in: answer the caller."""
        stream = exchange.stream
        timed_out = exchange.tunnel.deadlines.done(stream)
        error = response.exception()
        if error is not None:
            if timed_out:
                failure = timeout_error(exchange.tunnel.name, self._front.config)
            elif isinstance(error, StreamError):
                failure = stream_failure(error, exchange.tunnel.name)
            else:
                failure = (502, "stream-reset", "Tunnel error", f"The agent abandoned the request: {error}")
            self._write_error(exchange.meter, exchange.accept, exchange.close, failure)
            self._finish(exchange)
            return
        head = response.result()
        head_bytes, framing, length = _response_head(exchange.method, head, exchange.close)
        if not stream.complete:
            exchange.task = self._loop.create_task(self._relay_body(exchange, head.status, head_bytes, framing, length))
            return
        body = stream.read_whole()
        meter = exchange.meter
        meter.head_at = time.monotonic()
        meter.status = head.status
        transport = self.transport
        assert transport is not None
        if framing is _Framing.EMPTY:
            transport.write(head_bytes)
        elif framing is _Framing.LENGTH:
            sent = body[:length] if len(body) > length else body
            if len(sent) < _COPY_LIMIT:
                transport.write(head_bytes + sent)  # one send
            else:
                transport.writelines((head_bytes, sent))
            meter.bytes_out = len(sent)
            if len(sent) < length:  # the agent ended short of its Content-Length: never look complete
                meter.failed("response body cut off: shorter than its Content-Length")
                transport.close()
        else:
            size = len(body)
            transport.write(head_bytes + (b"%x\r\n" % size + body + b"\r\n0\r\n\r\n" if size else b"0\r\n\r\n"))
            meter.bytes_out = size
        self._finish(exchange)

    async def _relay_body(
        self, exchange: _Exchange, status: int, head_bytes: bytes, framing: _Framing, length: int
    ) -> None:
        """A response still arriving (a stream, a large body): the head now, the body as it comes."""
        stream = exchange.stream
        meter = exchange.meter
        transport = self.transport
        assert transport is not None
        try:
            transport.write(head_bytes)
            meter.head_at = time.monotonic()
            meter.status = status
            left = length
            while True:
                try:
                    chunk = await stream.read()
                except StreamError as exc:
                    log.info("tunnel %s: response body cut off (%s)", exchange.tunnel.name, exc)
                    meter.failed(f"response body cut off: {exc}")
                    transport.abort()
                    return
                if not chunk:
                    break
                if framing is _Framing.EMPTY:
                    continue
                if framing is _Framing.LENGTH:
                    if len(chunk) > left:
                        chunk = chunk[:left]
                    left -= len(chunk)
                    if chunk:
                        transport.write(chunk)
                else:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                meter.bytes_out += len(chunk)
                if self._writing_paused:
                    await self._drain()
            if framing is _Framing.CHUNKED:
                transport.write(b"0\r\n\r\n")
            elif framing is _Framing.LENGTH and left > 0:
                meter.failed("response body cut off: shorter than its Content-Length")
                transport.close()
        except ConnectionError:
            meter.failed("public client went away")
        finally:
            self._finish(exchange)

    async def _drain(self) -> None:
        drained = self._drained
        if drained is None or drained.done():
            drained = self._drained = self._loop.create_future()
        await drained

    def _write_error(self, meter: RequestMeter, accept: str, close: bool, failure: tuple[int, str, str, str]) -> None:
        """A relay-made answer (the same head and page aiohttp's ``error_response`` gives)."""
        status, code, title, message = failure
        content_type, text = error_body(accept, status, code, title, message)
        body = text.encode()
        lines = (
            f"HTTP/1.1 {status} {REASON_PHRASES.get(status, '')}\r\n"
            f"X-Relay-Error: {code}\r\nCache-Control: no-store\r\n"
            f"Content-Type: {content_type}; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            f"Date: {rfc822_formatted_time()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        )
        head = (lines + "Connection: close\r\n\r\n" if close else lines + "\r\n").encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + body)
        meter.head_at = time.monotonic()
        meter.status = status
        meter.bytes_out = len(body)
        meter.failed(code)

    def _answer_refusal(
        self, meter: RequestMeter, method: str, path: str, accept: str, close: bool, failure: tuple[int, str, str, str]
    ) -> None:
        """The stream could not open: answer at once and record the request."""
        self._write_error(meter, accept, close, failure)
        self._front.relay.observer.request_finished(meter.record(method, path))
        if close and self.transport is not None:
            self.transport.close()

    def _finish(self, exchange: _Exchange) -> None:
        """The exchange is over (answered, failed or abandoned): record it, free the stream, read on."""
        if exchange.finished:
            return
        exchange.finished = True
        exchange.stream.release(ErrorCode.CANCEL, "public client went away")
        exchange.tunnel.deadlines.done(exchange.stream)
        relay = self._front.relay
        relay.left(exchange.key)
        relay.observer.request_finished(exchange.meter.record(exchange.method, exchange.path))
        if self._exchange is exchange:
            self._exchange = None
        self._idle_since = self._loop.time()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if exchange.close:
            transport.close()  # after the response, which is already queued
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if self._ahead:
            self.data_received(b"")

    # ------------------------------------------------------------ idle connections
    def _check_idle(self) -> None:
        """One timer per connection: close it once idle for the keep-alive timeout (aiohttp's 75 s here too)."""
        self._idle_timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        now = self._loop.time()
        due = self._idle_since + KEEPALIVE_TIMEOUT
        if self._exchange is None and not self._ahead and now >= due:
            transport.close()
            return
        self._idle_timer = self._loop.call_at(max(due, now + 1.0), self._check_idle)

    def close_if_idle(self) -> None:
        """Close the connection if no request is in flight on it."""
        if self._exchange is None and self.transport is not None:
            self.transport.close()


def _response_head(method: str, head: ResponseHead, close: bool) -> tuple[bytes, _Framing, int]:
    """The head aiohttp's ``StreamResponse`` (as the front configures it) writes for an agent's response.

    The agent's headers as ``front.response_headers`` leaves them (in order,
    no hop-by-hop ones, at most one valid Content-Length); no Content-Length
    on 1xx/204/304; chunked framing when a body has no length; ``Date`` when
    the agent sent none; nothing else added.
    """
    status = head.status
    headers, lowered = response_headers(head.headers)
    length = 0
    if status in EMPTY_BODY_STATUS_CODES or method == "HEAD":
        framing = _Framing.EMPTY
    elif "content-length" in lowered:
        framing, length = _Framing.LENGTH, int(headers[lowered.index("content-length")][1])
    else:
        framing = _Framing.CHUNKED
    if status in EMPTY_BODY_STATUS_CODES and "content-length" in lowered:
        headers = [pair for lname, pair in zip(lowered, headers) if lname != "content-length"]
        lowered = [lname for lname in lowered if lname != "content-length"]
    if framing is _Framing.CHUNKED:
        headers.append(("Transfer-Encoding", "chunked"))
    if "date" not in lowered:
        headers.append(("Date", rfc822_formatted_time()))
    if close:
        headers.append(("Connection", "close"))
    reason = head.reason or REASON_PHRASES.get(status, "")
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode(), framing, length

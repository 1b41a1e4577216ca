"""Limits on what a public client may make the relay wait for or read.

aiohttp has no request-head timeout: a client that opens connections and
dribbles header bytes (slowloris) would hold each one until the keep-alive
timeout (an hour by default).  ``GuardedRunner`` makes aiohttp build
``HeadTimedHandler`` protocols, which note when the first byte of a request head
arrives and clear the note when the parser yields the message; one timer per
connection checks the note, and a head not complete within ``header_timeout``
gets 408 and the connection is closed.  Bodies,
responses, websockets and idle keep-alive connections are not timed here:
a connection with no head started is aiohttp's keep-alive timeout's business
(``KEEPALIVE_TIMEOUT`` here, instead of aiohttp's hour).  Malformed requests
get their 4xx with one log line instead of aiohttp's error traceback.

``BodyGuard`` is the body side: the front reads the public request body
through it, so a body that stalls for ``body_timeout`` seconds, or grows past
``max_body_bytes``, ends the stream to the agent and the caller gets 408/413
(or a closed connection once the response has started).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError, _ErrInfo
from aiohttp.web_server import Server

from relay_server.config import RelayConfig
from relay_server.observer import RelayObserver
from relay_server.pages import error_response

log = logging.getLogger("relay_server.limits")

#: Seconds an idle keep-alive connection stays open (aiohttp's own default is an hour).
KEEPALIVE_TIMEOUT = 75.0

_TIMEOUT_BODY = b"Request header timeout: the request head did not arrive in time.\n"

#: What a client that never finished its request head gets before the close.
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Relay-Error: header-timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\n\r\n" + _TIMEOUT_BODY
)


class HeadTimedHandler(RequestHandler):
    """aiohttp's protocol plus a deadline on each request head (slowloris defence)."""

    def __init__(self, manager: Server, *, header_timeout: float, observer: RelayObserver, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._observer = observer
        self._head_timer: asyncio.TimerHandle | None = None
        #: loop.time() when the pending request head's first byte came (None: no head pending).
        #: Heads are stamped, not timed one by one: the one timer re-arms itself for the head
        #: pending when it fires, so a busy keep-alive connection arms about one timer per
        #: ``header_timeout`` instead of one call_later()/cancel() pair per request.
        self._head_since: float | None = None
        #: Body of the last parsed message: while it is incomplete, bytes arriving are body, not a head.
        self._last_payload: Any = None

    def data_received(self, data: bytes) -> None:
        """Time a request head from its first byte until the parser yields it."""
        awaiting_head = (
            not (self._close or self._force_close)  # closing: aiohttp ignores further bytes anyway
            and self._payload_parser is None
            and not self._upgraded
            and (self._last_payload is None or self._last_payload.is_eof())
        )
        if data and awaiting_head and self._head_since is None and self._header_timeout > 0:
            self._head_since = now = self._loop.time()
            if self._head_timer is None:
                self._head_timer = self._loop.call_at(now + self._header_timeout, self._check_head)
        before, body = self._request_count, self._last_payload
        super().data_received(data)
        if self._request_count != before:
            self._head_since = None  # the head is in; the timer, if it fires, finds nothing pending
            if self._messages:
                newest = self._messages[-1]
                if isinstance(newest[0], _ErrInfo) and body is not None and not body.is_eof():
                    # The parser failed inside a body (a bad chunk size...): aiohttp queues a 400 for
                    # later but never tells the body's reader, which would wait forever. Tell it.
                    body.set_exception(RequestPayloadError(newest[0].message or "malformed request body"))
                    body.feed_eof()  # nothing more will come: aiohttp must not linger reading it
                self._last_payload = newest[1]

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A malformed request is the client's fault: one log line, no traceback (scanners send plenty)."""
        if not 400 <= status < 500:
            return super().handle_error(request, status, exc, message)
        log.info("refused a malformed request from %s (%d): %s", request.remote, status, _first_line(exc or message))
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = web.Response(status=status, text=message, content_type="text/plain")
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        """Drop the timer with the connection."""
        self._disarm()
        self._last_payload = None
        super().connection_lost(exc)

    def _disarm(self) -> None:
        self._head_since = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _check_head(self) -> None:
        """The timer fired: time out the pending head if it is overdue, else wait for its deadline."""
        self._head_timer = None
        since = self._head_since
        if since is None:
            return  # no head pending: the next one arms the timer again
        due = since + self._header_timeout
        if self._loop.time() < due:
            self._head_timer = self._loop.call_at(due, self._check_head)
            return
        self._head_since = None
        self._head_timed_out()

    def _head_timed_out(self) -> None:
        transport = self.transport
        if transport is None or self._force_close:
            return
        peer = transport.get_extra_info("peername")
        remote = peer[0] if isinstance(peer, tuple) and peer else None
        log.info("closed a connection from %s: request head not complete within %gs", remote, self._header_timeout)
        self._observer.limit_hit("header_timeout", None, remote)
        if not self._request_in_progress and not self._messages:
            # Nothing else is being answered on this connection: the 408 cannot interleave.
            transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.force_close()  # close() flushes the 408 first


def _first_line(reason: object) -> str:
    """The parser's reason without the request bytes it sometimes quotes after it."""
    text = str(reason).strip()
    return (text.splitlines() or [""])[0][:200]


class LeanFrontLike(Protocol):
    """What the server needs of ``lean_front.LeanFront`` (imported by ``serve``: it imports the app)."""

    def __call__(self) -> asyncio.Protocol:
        """A protocol for a new connection on the http listener."""

    def tls_protocol(self) -> asyncio.Protocol:
        """A protocol for a new connection on the https listener."""

    def close_idle(self) -> None:
        """Close connections with no request in flight."""


class _GuardedServer(Server):
    """aiohttp's Server, building ``HeadTimedHandler`` protocols (behind the lean front, when there is one)."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        observer: RelayObserver,
        lean: Callable[[Callable[[], RequestHandler]], LeanFrontLike] | None = None,
        proxied: Callable[[Callable[[], asyncio.Protocol]], asyncio.Protocol] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._guard = {"header_timeout": header_timeout, "observer": observer}
        self.lean = lean(self.aiohttp_protocol) if lean is not None else None
        #: With --proxy-protocol: wraps the http listener's protocol in one that reads the PROXY header first.
        self.proxied = proxied

    def tls_protocol(self) -> asyncio.Protocol:
        """The protocol for a connection on the https listener (which reads any PROXY header itself)."""
        lean = self.lean
        return lean.tls_protocol() if lean is not None else self.aiohttp_protocol()

    def __call__(self) -> asyncio.Protocol:
        make: Callable[[], asyncio.Protocol] = self.lean if self.lean is not None else self.aiohttp_protocol
        return self.proxied(make) if self.proxied is not None else make()

    def aiohttp_protocol(self) -> RequestHandler:
        """aiohttp's protocol for one connection (TLS connections, and those the lean front hands over)."""
        return HeadTimedHandler(self, loop=self._loop, **self._guard, **self._kwargs)

    async def shutdown(self, timeout: float | None = None) -> None:
        """Idle connections of the lean front close with aiohttp's."""
        if self.lean is not None:
            self.lean.close_idle()
        await super().shutdown(timeout)


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose connections get the request-head timeout."""

    def __init__(
        self,
        app: web.Application,
        *,
        header_timeout: float,
        observer: RelayObserver,
        lean: Callable[[Callable[[], RequestHandler]], LeanFrontLike] | None = None,
        proxied: Callable[[Callable[[], asyncio.Protocol]], asyncio.Protocol] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("keepalive_timeout", KEEPALIVE_TIMEOUT)
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._observer = observer
        #: Builds the lean front (given the aiohttp protocol factory it hands connections to), or None.
        self._lean = lean
        #: Wraps the http listener's protocol factory in a PROXY-header reader (``--proxy-protocol``), or None.
        self._proxied = proxied

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        guarded = _GuardedServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            header_timeout=self._header_timeout,
            observer=self._observer,
            lean=self._lean,
            proxied=self._proxied,
            **server._kwargs,
        )
        return guarded


#: The relay's observer, stored on the aiohttp application so request code can report limit hits.
RELAY_OBSERVER = web.AppKey("relay_observer", RelayObserver)

_NO_OBSERVER = RelayObserver()


def observer_of(request: web.BaseRequest) -> RelayObserver:
    """The observer of the relay serving ``request`` (a no-op one outside a Relay app)."""
    app = getattr(request, "app", None)
    return app.get(RELAY_OBSERVER, _NO_OBSERVER) if app is not None else _NO_OBSERVER


class BodyRefused(Exception):
    """The public request body broke a limit; ``status`` is what the caller gets if nothing was sent yet."""

    def __init__(self, limit: str, status: int, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.status = status


class BodyGuard:
    """Reads a public request body chunk by chunk under the body timeout and size limit."""

    def __init__(self, config: RelayConfig, observer: RelayObserver, tunnel: str, remote: str | None) -> None:
        self.timeout = config.body_timeout
        self.max_bytes = config.max_body_bytes
        self.observer = observer
        self.tunnel = tunnel
        self.remote = remote
        self.received = 0
        #: Set when a limit ended the body: the front answers with it.
        self.refusal: BodyRefused | None = None

    def declared_too_large(self, content_length: int | None) -> BodyRefused | None:
        """A Content-Length over the limit is refused before any stream opens."""
        if self.max_bytes and content_length is not None and content_length > self.max_bytes:
            return self._refuse(
                "max_body_bytes", 413, f"The request body ({content_length} bytes) is over this relay's limit of {self.max_bytes} bytes."
            )
        return None

    async def next_chunk(self, request: web.BaseRequest) -> bytes:
        """The next body bytes (b"" at the end); raises ``BodyRefused`` on a stall or an oversize body."""
        try:
            if self.timeout > 0:
                async with asyncio.timeout(self.timeout):
                    chunk = await request.content.readany()
            else:
                chunk = await request.content.readany()
        except TimeoutError:
            raise self._refuse(
                "body_timeout", 408, f"No request body bytes arrived for {self.timeout:g} seconds."
            ) from None
        except (RequestPayloadError, HttpProcessingError) as exc:
            # Broken framing mid-body (a bad chunk size...): the client's fault, not a limit.
            self.refusal = BodyRefused("malformed_body", 400, f"The request body is malformed: {_first_line(exc)}")
            raise self.refusal from None
        self.received += len(chunk)
        if self.max_bytes and self.received > self.max_bytes:
            raise self._refuse("max_body_bytes", 413, f"The request body is over this relay's limit of {self.max_bytes} bytes.")
        return chunk

    def _refuse(self, limit: str, status: int, message: str) -> BodyRefused:
        self.refusal = BodyRefused(limit, status, message)
        self.observer.limit_hit(limit, self.tunnel, self.remote)
        return self.refusal


#: X-Relay-Error code and page title of each body refusal status.
_REFUSALS = {408: ("body-timeout", "Request timeout"), 413: ("body-too-large", "Request body too large")}


def refusal_response(request: web.BaseRequest, refusal: BodyRefused) -> web.Response:
    """408/413 for a refused body; the connection closes after it (the rest of the body is unread)."""
    code, title = _REFUSALS.get(refusal.status, ("bad-request-body", "Bad request"))
    response = error_response(request, refusal.status, code, title, str(refusal))
    response.force_close()
    return response

"""Time and count each public request for the observer (metrics, access log).

The relay's dispatch wraps every request to a tunnel's hostname: it tells the
observer ``request_started``, then ``request_finished`` with a
``RequestRecord`` however the request ends (answered, refused by a limit,
tunnel offline, caller gone).  The front notes what only it knows (the
stream id, when the response head left, body bytes sent, why a body broke
off) on the request's ``RequestMeter``; code without one (a bare unit-test
request) gets a meter that notes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from aiohttp import web

from relay_server.access import client_address
from relay_server.config import RelayConfig
from relay_server.observer import RelayObserver, RequestRecord

#: Status recorded for a request whose caller left before any response head (nginx's convention).
CLIENT_CLOSED = 499


class RequestMeter:
    """What one public request did, noted as it happens."""

    def __init__(self, tunnel: str, client: str, observer: RelayObserver) -> None:
        self.tunnel = tunnel
        self.client = client
        self.observer = observer
        self.started = time.monotonic()
        self.stream_id = 0
        self.head_at: float | None = None
        self.status: int | None = None
        self.bytes_out = 0
        self.error = ""

    def stream_opened(self, stream_id: int) -> None:
        """The request got this stream on its tunnel."""
        self.stream_id = stream_id

    def head_sent(self, response: web.StreamResponse) -> None:
        """The response head left for the caller (time to first byte)."""
        if self.head_at is None:
            self.head_at = time.monotonic()
            self.status = response.status

    def sent(self, n: int) -> None:
        """``n`` response body bytes went to the caller."""
        self.bytes_out += n

    def failed(self, error: str) -> None:
        """Why the exchange ended early (the first reason wins)."""
        if not self.error:
            self.error = error

    def limit_hit(self, limit: str) -> None:
        """A named limit refused this request."""
        self.observer.limit_hit(limit, self.tunnel, self.client)

    def record(self, method: str, path: str, bytes_in: int = 0) -> RequestRecord:
        """The finished request as the observer sees it, from what was noted (``path`` without its query)."""
        now = time.monotonic()
        return RequestRecord(
            tunnel=self.tunnel,
            stream_id=self.stream_id,
            method=method,
            path=path,
            status=self.status if self.status is not None else CLIENT_CLOSED,
            duration=now - self.started,
            ttfb=None if self.head_at is None else self.head_at - self.started,
            bytes_in=bytes_in,
            bytes_out=self.bytes_out,
            client=self.client,
            error=self.error,
        )


class _NoMeter(RequestMeter):
    """The meter of a request nobody measures: notes nothing."""

    def __init__(self) -> None:
        super().__init__("", "", RelayObserver())

    def stream_opened(self, stream_id: int) -> None:
        """Nothing to note."""

    def head_sent(self, response: web.StreamResponse) -> None:
        """Nothing to note."""

    def sent(self, n: int) -> None:
        """Nothing to note."""

    def failed(self, error: str) -> None:
        """Nothing to note."""


METER_KEY = web.RequestKey("relay_meter", RequestMeter)
_NO_METER = _NoMeter()


def meter_of(request: web.BaseRequest) -> RequestMeter:
    """This request's meter (a do-nothing one if it is not measured)."""
    try:
        return request[METER_KEY]
    except KeyError:
        return _NO_METER


def _path(request: web.BaseRequest) -> str:
    """The raw path without its query string: queries carry secrets (API keys, signed URLs)."""
    return request.raw_path.partition("?")[0]


def _body_size(response: web.StreamResponse) -> int:
    """Body bytes of a response the front built whole (relay errors, refusals), not yet sent."""
    if isinstance(response, web.Response):
        body = response.body
        if isinstance(body, (bytes, bytearray)):
            return len(body)
    return 0


def record_of(request: web.BaseRequest, meter: RequestMeter, response: web.StreamResponse | None) -> RequestRecord:
    """The finished request as the observer sees it (the meter is done with after this)."""
    if response is not None and meter.head_at is None:
        # Answered by the relay itself (error page, refusal): the head leaves as this returns.
        meter.head_at = time.monotonic()
        meter.status = response.status
        meter.bytes_out = _body_size(response)
        meter.failed(response.headers.get("X-Relay-Error", ""))
    return meter.record(request.method, _path(request), getattr(request.content, "total_bytes", 0))


async def measured(
    request: web.BaseRequest,
    tunnel: str,
    config: RelayConfig,
    observer: RelayObserver,
    handler: Callable[[], Awaitable[web.StreamResponse]],
) -> web.StreamResponse:
    """Run ``handler`` for a request to ``tunnel``, telling the observer how it went however it ends.

    Called inline by the relay's dispatch (not as an aiohttp middleware: the
    middleware chain costs a few percent of a small request's CPU).
    """
    meter = RequestMeter(tunnel, client_address(request, config), observer)
    request[METER_KEY] = meter
    observer.request_started(tunnel)
    response: web.StreamResponse | None = None
    try:
        response = await handler()
        return response
    except asyncio.CancelledError:
        meter.failed("public client went away")
        raise
    except web.HTTPException as exc:
        if meter.head_at is None:
            meter.status = exc.status
        raise
    except Exception as exc:
        meter.failed(f"relay error: {type(exc).__name__}")
        meter.status = meter.status or 500
        raise
    finally:
        observer.request_finished(record_of(request, meter, response))

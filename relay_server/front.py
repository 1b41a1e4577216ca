"""Public HTTP <-> one protocol stream: the relay's hot path.

Each public request opens a stream on its tunnel's connection.  The request
body is pumped into the stream as it arrives (``stream.write`` waits for
credit, and aiohttp stops reading the socket when we stop reading the body,
so a slow agent slows the uploader, never our memory).  The response head
and body are written to the caller as the agent sends them.  A websocket
upgrade is accepted only once the local server has accepted it, then the
two websocket hops are bridged message by message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiohttp import web

from relay_protocol.driver import MuxStream, StreamError
from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.httpheaders import (
    HOP_BY_HOP,
    WEBSOCKET_HANDSHAKE,
    connection_tokens,
    decode_raw_headers,
    header_tokens,
    is_websocket_upgrade,
    strip_hop_by_hop,
)
from relay_protocol.wsbridge import bridge
from relay_protocol.wsmessages import MAX_WS_MESSAGE
from relay_server.access import client_address
from relay_server.config import RelayConfig
from relay_server.integrity import ambiguous_target, origin_form
from relay_server.metering import RequestMeter, meter_of
from relay_server.pages import error_response
from relay_server.publiclimits import BodyGuard, BodyRefused, observer_of, refusal_response
from relay_server.tunnel import Tunnel

log = logging.getLogger("relay_server.front")

#: Incoming headers that only a trusted proxy may set; from anyone else we drop them.
_FORWARDED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"})


def request_head(
    request: web.BaseRequest, config: RelayConfig, scheme: str = "http", drop: frozenset[str] = frozenset()
) -> RequestHead:
    """The stream head for a public request: hop-by-hop gone, X-Forwarded-* set by us.

    ``drop`` names (lower case) further headers to leave out.
    """
    peer = request.remote or ""
    pairs = decode_raw_headers(request.raw_headers)
    headers = forwarded_headers(pairs, [name.lower() for name, _ in pairs], peer, config, scheme, drop)
    return RequestHead(request.method, request.raw_path, headers, peer)


def forwarded_headers(
    pairs: list[tuple[str, str]],
    lowered: list[str],
    peer: str,
    config: RelayConfig,
    scheme: str,
    drop: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The public request's headers as the agent gets them (``lowered``: their names in lower case).

    One pass over the headers: each name is checked against one set.  Shared by
    aiohttp's path and the lean front, so both forward exactly the same head.
    """
    prior_for = prior_proto = None
    if config.is_trusted_proxy(peer):
        prior_for = first_header(pairs, lowered, "x-forwarded-for")
        prior_proto = first_header(pairs, lowered, "x-forwarded-proto")
        dropped = _HOP_AND_PRIOR_PROXY | drop if drop else _HOP_AND_PRIOR_PROXY
    else:
        dropped = _HOP_AND_FORWARDED | drop if drop else _HOP_AND_FORWARDED
    if "connection" in lowered:  # and whatever the Connection header names
        dropped = dropped | connection_tokens(pairs, lowered)
    headers = [pair for lname, pair in zip(lowered, pairs) if lname not in dropped]
    headers.append(("X-Forwarded-For", f"{prior_for}, {peer}" if prior_for else peer))
    headers.append(("X-Forwarded-Proto", prior_proto or scheme))
    if "x-forwarded-host" in dropped or "x-forwarded-host" not in lowered:
        headers.append(("X-Forwarded-Host", first_header(pairs, lowered, "host") or ""))
    return headers


def first_header(pairs: list[tuple[str, str]], lowered: list[str], name: str) -> str | None:
    """The value of the first header called ``name`` (lower case), as aiohttp's ``headers.get`` gives it."""
    try:
        return pairs[lowered.index(name)][1]
    except ValueError:
        return None


#: Headers never forwarded from an untrusted peer: hop-by-hop ones and the proxy headers we set.
_HOP_AND_FORWARDED = HOP_BY_HOP | _FORWARDED
#: From a trusted proxy: hop-by-hop ones and the two proxy headers we rewrite (X-Forwarded-Host stays).
_HOP_AND_PRIOR_PROXY = HOP_BY_HOP | {"x-forwarded-for", "x-forwarded-proto"}
#: Also dropped when the relay checks the tunnel's password: it is not the local server's business.
_AUTHORIZATION = frozenset({"authorization"})


def response_headers(headers: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """The agent's response headers as the caller gets them, and their names in lower case.

    No hop-by-hop ones, and at most one Content-Length: one that is not a
    decimal number, or several that disagree, is framing the caller cannot
    trust (two lengths are how responses are smuggled past a proxy in front):
    they all go, and the body is framed by chunks as if none had been sent.
    Repeats of one valid value become one.
    """
    pairs = strip_hop_by_hop(headers)
    lowered = [name.lower() for name, _ in pairs]
    count = lowered.count("content-length")
    if count == 0 or (count == 1 and _is_length(pairs[lowered.index("content-length")][1].strip())):
        return pairs, lowered
    lengths = [value.strip() for lname, (_, value) in zip(lowered, pairs) if lname == "content-length"]
    keep = _is_length(lengths[0]) and all(value == lengths[0] for value in lengths)
    out: list[tuple[str, str]] = []
    out_lowered: list[str] = []
    for lname, pair in zip(lowered, pairs):
        if lname == "content-length":
            if not keep:
                continue
            keep = False  # the first one only
        out.append(pair)
        out_lowered.append(lname)
    return out, out_lowered


def _is_length(value: str) -> bool:
    return value.isascii() and value.isdigit()


async def _pump_request_body(request: web.BaseRequest, stream: MuxStream, guard: BodyGuard) -> None:
    """Copy the public request body into the stream as it arrives (under the body timeout and size limit)."""
    try:
        while chunk := await guard.next_chunk(request):
            await stream.write(chunk)
        stream.end()
    except BodyRefused as exc:
        # The local server sees the abort; forward() answers the caller from guard.refusal.
        stream.reset(ErrorCode.CANCEL, str(exc))
    except StreamError:
        pass  # the agent reset the stream; the response side reports it
    except (ConnectionError, asyncio.IncompleteReadError, web.HTTPException):
        stream.reset(ErrorCode.CANCEL, "public client stopped sending the request body")


async def forward(request: web.BaseRequest, tunnel: Tunnel, config: RelayConfig) -> web.StreamResponse:
    """Answer one public request through the tunnel."""
    if not tunnel.access.open:
        refusal = tunnel.access.check(request, config, tunnel.name)
        if refusal is not None:
            return refusal
    mismatch = ambiguous_target(request)
    if mismatch is not None:
        return mismatch
    websocket = is_websocket_upgrade(request.method, request.headers.get("Upgrade", ""))
    has_body = request.body_exists and not websocket
    guard: BodyGuard | None = None
    if request.body_exists:  # no body (most requests): nothing to guard, nothing declared too large
        # The caller as the meter names it (behind a trusted proxy, not the proxy's address).
        guard = BodyGuard(config, observer_of(request), tunnel.name, client_address(request, config))
        too_large = guard.declared_too_large(request.content_length)
        if too_large is not None:
            return refusal_response(request, too_large)
    tunnel.requests += 1
    # The tunnel's password is the relay's business, not the local server's.
    drop = _AUTHORIZATION if tunnel.access.basic_auth_hash is not None else frozenset()
    head = request_head(request, config, scheme=request.scheme, drop=drop)  # "https" on the TLS listener
    head.target = origin_form(head.target)  # absolute-form (already matched to Host) travels as a path
    if websocket:
        head.upgrade = "websocket"
    try:
        stream = tunnel.mux.open_stream(head, end_stream=not has_body and not websocket)
    except LocalProtocolError as exc:
        if exc.code == ErrorCode.FRAME_TOO_LARGE:
            return error_response(request, 431, "headers-too-large", "Request headers too large", str(exc))
        if exc.code == ErrorCode.TOO_MANY_STREAMS:
            meter_of(request).limit_hit("max_streams")
            return error_response(request, *busy_error(tunnel.name))
        return _offline(request, tunnel.name)
    except StreamError:
        return _offline(request, tunnel.name)
    upload = asyncio.create_task(_pump_request_body(request, stream, guard)) if guard is not None and has_body else None
    bridged = False
    meter = meter_of(request)
    meter.stream_opened(stream.id)
    try:
        # The tunnel's one deadline timer, not asyncio.timeout() or a timer per request:
        # on expiry it resets the stream (TIMEOUT), which fails the wait.
        deadlines = tunnel.deadlines
        deadlines.watch(stream, config.response_timeout)
        try:
            response_head = await stream.response
        except StreamError as exc:
            if not deadlines.done(stream):
                if guard is not None and guard.refusal is not None:
                    return refusal_response(request, guard.refusal)
                return _stream_failed(request, tunnel, exc)
            return error_response(request, *timeout_error(tunnel.name, config))
        finally:
            deadlines.done(stream)
        if websocket and response_head.status == 101:
            bridged = True
            return await _bridge_websocket(request, stream, response_head)
        return await _write_response(request, stream, response_head, meter, tunnel.name)
    finally:
        if upload is not None and not upload.done():
            upload.cancel()
        # Whatever ended the exchange early (caller gone, error), free the stream;
        # a websocket bridge frees its stream itself, once both closes have passed.
        if not bridged:
            stream.release(ErrorCode.CANCEL, "public client went away")


async def _write_response(
    request: web.BaseRequest, stream: MuxStream, head: ResponseHead, meter: RequestMeter, tunnel: str
) -> web.StreamResponse:
    """Send the agent's response head, then its body chunk by chunk as it arrives.

    When the whole body is already here (small responses arrive in the same
    websocket message as their head), head, body and end leave in one write;
    otherwise the head goes out at once, so streams (SSE) start immediately.
    """
    whole = stream.complete
    kind = _WholeResponse if whole else RelayedResponse
    # The multidict is built from the list in one call (not one add() per header); order and repeats stay.
    response = kind(status=head.status, reason=head.reason or None, headers=response_headers(head.headers)[0])
    # The meter notes time to first byte, body bytes, why it broke off.
    try:
        await response.prepare(request)
        meter.head_sent(response)
        if whole:
            body = stream.read_whole()
            size = len(body)
            if not size or response.content_length in (None, size):
                # write_eof(body) sends head, body and end at once but, unlike write(),
                # never clips a body to its Content-Length: only taken when none needs clipping.
                await response.write_eof(body)
                meter.sent(size)
                return response
            await response.write(body)
            meter.sent(size)
        await copy_body(request, response, stream.read, (StreamError,), meter, f"tunnel {tunnel}")
    except ConnectionError:
        meter.failed("public client went away")  # the caller's finally resets the stream
    return response


async def copy_body(
    request: web.BaseRequest,
    response: web.StreamResponse,
    read: Callable[[], Awaitable[bytes]],
    broken: tuple[type[BaseException], ...],
    meter: RequestMeter,
    source: str,
) -> bool:
    """Write the body ``read`` yields (b"" at its end) to a prepared response; True if it ended properly.

    If reading fails with one of ``broken``, the body broke off upstream: the
    caller's connection is cut without a proper end, so the caller sees an
    incomplete response, never a short one.  A caller who went away raises
    ConnectionError from the writes, for the caller of this to note.
    """
    while True:
        try:
            chunk = await read()
        except broken as exc:
            log.info("%s: response body cut off (%s)", source, exc)
            meter.failed(f"response body cut off: {exc}")
            abort_connection(request)
            return False
        if not chunk:
            break
        await response.write(chunk)
        meter.sent(len(chunk))
    await response.write_eof()
    return True


class RelayedResponse(web.StreamResponse):
    """A StreamResponse that adds no headers the local server did not send.

    aiohttp fills in Content-Type (application/octet-stream) and Server when they
    are missing; a proxy must not invent either, so they are taken out again.
    """

    async def _prepare_headers(self) -> None:
        headers = self.headers
        had_type, had_server = "Content-Type" in headers, "Server" in headers
        await super()._prepare_headers()
        if not had_type:
            headers.popall("Content-Type", None)
        if not had_server:
            headers.popall("Server", None)


class _WholeResponse(RelayedResponse):
    """A relayed response whose headers wait for the first body write (one send, not two)."""

    _send_headers_immediately = False


async def _bridge_websocket(request: web.BaseRequest, stream: MuxStream, head: ResponseHead) -> web.StreamResponse:
    """The local server accepted the upgrade: accept the public client's, then pump messages."""
    protocols = header_tokens(head.headers, "Sec-WebSocket-Protocol")[:1]
    deflate = any(t.startswith("permessage-deflate") for t in header_tokens(head.headers, "Sec-WebSocket-Extensions"))
    ws = web.WebSocketResponse(
        protocols=protocols, autoping=False, autoclose=True, compress=deflate, max_msg_size=MAX_WS_MESSAGE
    )
    for name, value in strip_hop_by_hop(head.headers):
        if name.lower() not in WEBSOCKET_HANDSHAKE:
            ws.headers.add(name, value)
    await ws.prepare(request)
    meter_of(request).head_sent(ws)
    await run_past_cancellation(bridge(ws, stream))
    return ws


async def run_past_cancellation(bridging: Coroutine[Any, Any, None]) -> None:
    """Run a websocket bridge to its end even if aiohttp cancels the handler awaiting it.

    When the public client closes, aiohttp cancels the handler as the socket
    goes; the bridge must still carry the close code to the other side, so it
    runs on (bounded by its own timeouts) and releases what it holds itself.
    """
    task = asyncio.ensure_future(bridging)
    _BRIDGES.add(task)
    task.add_done_callback(_BRIDGES.discard)
    await asyncio.shield(task)


#: Bridges running past their handler's cancellation (kept referenced until done).
_BRIDGES: set[asyncio.Task[None]] = set()


def abort_connection(request: web.BaseRequest) -> None:
    """Cut the caller's connection, so a body cut short can never look complete."""
    transport = request.transport
    if transport is not None:
        transport.abort()


def _stream_failed(request: web.BaseRequest, tunnel: Tunnel, exc: StreamError) -> web.Response:
    return error_response(request, *stream_failure(exc, tunnel.name))


def stream_failure(exc: StreamError, name: str) -> tuple[int, str, str, str]:
    """(status, X-Relay-Error code, title, message) for a stream that failed before its response head."""
    if exc.code == ErrorCode.LOCAL_UNREACHABLE:
        return 502, "local-unreachable", "Local server unreachable", exc.reason
    if exc.code == ErrorCode.LOCAL_ERROR:
        return 502, "local-error", "Local server failed", exc.reason
    if exc.code == ErrorCode.TOO_MANY_STREAMS:
        return 503, "too-many-requests", "Tunnel busy", exc.reason
    if exc.code == ErrorCode.GOING_AWAY:
        return offline_error(name, "The agent disconnected before answering.")
    if exc.code == ErrorCode.REFUSED_STREAM:  # the agent is shutting down and took no new requests
        return offline_error(name, "The agent is shutting down.")
    return 502, "stream-reset", "Tunnel error", f"The agent abandoned the request: {exc}"


def timeout_error(name: str, config: RelayConfig) -> tuple[int, str, str, str]:
    """The 504 for a response head that did not come within --response-timeout."""
    return (
        504,
        "agent-timeout",
        "Tunnel timed out",
        f"The agent for {name} did not answer within {config.response_timeout:g} seconds.",
    )


def busy_error(name: str) -> tuple[int, str, str, str]:
    """The 503 for a tunnel at its limit of streams in flight."""
    return 503, "too-many-requests", "Tunnel busy", f"The tunnel {name} has too many requests in flight; retry shortly."


def offline_error(name: str, detail: str = "") -> tuple[int, str, str, str]:
    """The 502 for a name whose agent is not (or no longer) there."""
    message = detail or f"No agent is connected for {name}."
    return 502, "tunnel-offline", "Tunnel offline", f"{message} Start one with: relay-client http PORT --subdomain {name}"


def _offline(request: web.BaseRequest, name: str, detail: str = "") -> web.Response:
    return error_response(request, *offline_error(name, detail))


def tunnel_offline(request: web.BaseRequest, name: str) -> web.Response:
    """502 for a name with no connected agent."""
    return _offline(request, name)

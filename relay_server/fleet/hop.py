"""Node-to-node forwarding: a public request for a tunnel held by another fleet node.

The node the request landed on (the first node) computes the request head as it
would for a tunnel of its own (hop-by-hop headers gone, its X-Forwarded-*),
signs it with the cluster secret and streams it to the owner node's internal
listener (fleet/internal.py), which hands it to the agent through the usual
front.  Nothing is buffered: the request body is read from the caller as the
owner reads it, the response is written to the caller chunk by chunk as it
arrives (aiohttp waits for the caller's socket before reading more), and a
websocket is accepted only once the owner (and the local server) accepted it,
then bridged message by message.  A caller that goes away cancels the hop
request, so the owner node resets its stream to the agent.

One aiohttp ClientSession per relay carries every hop (connections to each
owner node are reused); it has a connect timeout but no read timeout, which
would cut long streams.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from relay_protocol.httpheaders import (
    WEBSOCKET_HANDSHAKE,
    decode_raw_headers,
    header_tokens,
    is_websocket_upgrade,
    strip_hop_by_hop,
)
from relay_protocol.wsmessages import MAX_WS_MESSAGE
from relay_server.config import RelayConfig
from relay_server.fleet.proof import AUTH_HEADER, HOP_HEADER, NODE_HEADERS, ClusterProof
from relay_server.fleet.route import RemoteRoute
from relay_server.front import RelayedResponse, copy_body, request_head, run_past_cancellation
from relay_server.integrity import ambiguous_target, origin_form
from relay_server.metering import meter_of
from relay_server.pages import error_response

log = logging.getLogger("relay_server.fleet.hop")

#: Seconds to open a TCP connection to an owner node; past it the node counts as unreachable.
HOP_CONNECT_TIMEOUT = 3.0

#: Seconds beyond the owner's own response timeout (it answers 504 itself) before we give up on a hung node.
HOP_HEAD_SLACK = 10.0

#: Seconds an idle pooled connection to another node is kept (the owner's keep-alive is longer).
HOP_KEEPALIVE = 15.0

#: Seconds a websocket close handshake through the hop may take.
HOP_WS_CLOSE_TIMEOUT = 10.0

#: Headers aiohttp's client would add on its own: a proxy adds none.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")

#: Methods a hop may send twice when the first try met a connection the owner had closed.
_RETRYABLE = frozenset({"GET", "HEAD", "OPTIONS"})

#: Websocket close code sent to the caller when the owner node's connection is lost (no close frame).
_WS_LOST = 1011


class NodeHop:
    """The client side of node-to-node forwarding, one per relay process."""

    def __init__(self, config: RelayConfig, registry: Any) -> None:
        if not config.cluster_secret:
            raise ValueError("node-to-node forwarding needs the cluster secret")
        self.config = config
        self.registry = registry
        self.proof = ClusterProof(config.cluster_secret)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared client session, made on first use (it needs the running loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=HOP_KEEPALIVE)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=HOP_CONNECT_TIMEOUT, sock_read=None),
                auto_decompress=False,  # bodies pass byte for byte, Content-Encoding untouched
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                raise_for_status=False,
                trust_env=False,  # never through an HTTP(S)_PROXY of the environment
            )
        return self._session

    async def close(self) -> None:
        """Close pooled connections (app cleanup)."""
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def forward(self, request: web.BaseRequest, route: RemoteRoute) -> web.StreamResponse:
        """Answer ``request`` through the node holding ``route.name``."""
        mismatch = ambiguous_target(request)
        if mismatch is not None:
            return mismatch
        head = request_head(request, self.config, scheme=request.scheme)  # this node's X-Forwarded-*
        target = origin_form(head.target)
        host = request.headers.get("Host", "")
        headers = [(k, v) for k, v in head.headers if k.lower() not in NODE_HEADERS]
        headers.append((AUTH_HEADER, self.proof.sign(request.method, host, target)))
        headers.append((HOP_HEADER, "1"))
        url = URL(route.url.rstrip("/") + target, encoded=True)
        if is_websocket_upgrade(request.method, request.headers.get("Upgrade", "")):
            return await self._websocket(request, route, url, headers)
        return await self._http(request, route, url, headers)

    async def _http(
        self, request: web.BaseRequest, route: RemoteRoute, url: URL, headers: list[tuple[str, str]]
    ) -> web.StreamResponse:
        meter = meter_of(request)
        data = _request_body(request) if request.body_exists else None
        try:
            async with asyncio.timeout(self.config.response_timeout + HOP_HEAD_SLACK):
                try:
                    upstream = await self.session().request(
                        request.method, url, headers=headers, data=data, allow_redirects=False
                    )
                except aiohttp.ServerDisconnectedError:
                    # Most likely a pooled connection the owner closed (it restarted): a safe request
                    # (GET, HEAD, OPTIONS: no body, no effect) goes once more, on a fresh connection.
                    if data is not None or request.method not in _RETRYABLE:
                        raise
                    upstream = await self.session().request(
                        request.method, url, headers=headers, allow_redirects=False
                    )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._failed(request, route, exc, "hop")
        finished = False
        try:
            response = RelayedResponse(status=upstream.status, reason=upstream.reason or None)
            for name, value in strip_hop_by_hop(decode_raw_headers(upstream.raw_headers)):
                response.headers.add(name, value)
            try:
                await response.prepare(request)
                meter.head_sent(response)
                finished = await copy_body(
                    request,
                    response,
                    upstream.content.readany,
                    (aiohttp.ClientError, OSError, asyncio.IncompleteReadError),
                    meter,
                    f"hop to node {route.node_id} for {route.name}",
                )
            except ConnectionError:
                meter.failed("public client went away")
            return response
        finally:
            if finished:
                upstream.release()
            else:
                upstream.close()  # drops the connection: the owner node resets its stream to the agent

    async def _websocket(
        self, request: web.BaseRequest, route: RemoteRoute, url: URL, headers: list[tuple[str, str]]
    ) -> web.StreamResponse:
        pairs = list(request.headers.items())
        offered = header_tokens(pairs, "Sec-WebSocket-Protocol")
        deflate = any(t.startswith("permessage-deflate") for t in header_tokens(pairs, "Sec-WebSocket-Extensions"))
        plain = [(k, v) for k, v in headers if k.lower() not in WEBSOCKET_HANDSHAKE]
        try:
            async with asyncio.timeout(self.config.response_timeout + HOP_HEAD_SLACK):
                upstream = await self.session().ws_connect(
                    url,
                    headers=plain,
                    protocols=offered,
                    autoping=False,  # pings and pongs travel end to end, as in the front
                    autoclose=True,
                    compress=15 if deflate else 0,  # offered to the owner only if the caller offered it
                    max_msg_size=MAX_WS_MESSAGE,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=HOP_WS_CLOSE_TIMEOUT),
                )
        except aiohttp.WSServerHandshakeError as exc:
            return _refused_upgrade(exc)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return self._failed(request, route, exc, "websocket hop")
        ws = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (),
            autoping=False,
            autoclose=True,
            compress=bool(upstream.compress),
            max_msg_size=MAX_WS_MESSAGE,
        )
        handshake = getattr(upstream, "_response", None)  # the owner's 101: cookies and the like pass on
        if handshake is not None:
            for name, value in strip_hop_by_hop(decode_raw_headers(handshake.raw_headers)):
                if name.lower() not in WEBSOCKET_HANDSHAKE:
                    ws.headers.add(name, value)
        try:
            await ws.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        meter_of(request).head_sent(ws)
        await run_past_cancellation(_bridge(ws, upstream))  # the close code must reach the owner
        return ws

    def _failed(self, request: web.BaseRequest, route: RemoteRoute, exc: BaseException, what: str) -> web.Response:
        """The answer when the hop fails before a response: 502 (route dropped if unreachable) or 504."""
        if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
            return self._unreachable(request, route, exc)
        if isinstance(exc, TimeoutError):
            return error_response(
                request, 504, "tunnel-node-timeout", "Tunnel timed out",
                f"The relay node holding {route.name} did not answer in time.",
            )
        log.info("%s to node %s for %s failed before the response: %s", what, route.node_id, route.name, exc)
        return error_response(
            request, 502, "tunnel-node-failed", "Tunnel node failed",
            f"The relay node holding {route.name} dropped the request.",
        )

    def _unreachable(self, request: web.BaseRequest, route: RemoteRoute, exc: BaseException) -> web.Response:
        """502 at once, and stop routing to that node until the registry hears of the name again."""
        log.warning("tunnel node %s at %s unreachable for %s: %s", route.node_id, route.url, route.name, exc)
        _forget(self.registry, route)
        return error_response(
            request, 502, "tunnel-node-unreachable", "Tunnel node unreachable",
            f"The relay node holding {route.name} cannot be reached; the agent will reconnect to another node.",
        )


def _forget(registry: Any, route: RemoteRoute) -> None:
    """Drop a dead node's route from the registry's mirror (RedisRegistry.drop_route); later news restores it."""
    drop = getattr(registry, "drop_route", None)
    if not callable(drop):
        return
    try:
        drop(route.name, route.node_id)
    except Exception:  # the mirror corrects itself at the next resync; the caller has its 502
        log.exception("could not drop the route of %s", route.name)


async def _request_body(request: web.BaseRequest) -> Any:
    """The caller's body as it arrives (aiohttp stops reading the socket while we wait on the owner)."""
    while chunk := await request.content.readany():
        yield chunk


async def _bridge(public: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump messages both ways until either side closes; then close the other with the same code."""
    inbound = asyncio.create_task(_pump(public, upstream))
    outbound = asyncio.create_task(_pump(upstream, public))
    try:
        done, pending = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
        if pending:  # one side closed: give the other a moment to pass its close on
            await asyncio.wait(pending, timeout=HOP_WS_CLOSE_TIMEOUT)
    finally:
        for task in (inbound, outbound):
            if not task.done():
                task.cancel()
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        for side in (upstream, public):
            if not side.closed:
                try:
                    async with asyncio.timeout(HOP_WS_CLOSE_TIMEOUT):
                        await side.close(code=_WS_LOST)
                except (TimeoutError, ConnectionError, aiohttp.ClientError):
                    pass


async def _pump(source: Any, sink: Any) -> None:
    """Copy one direction: data, pings and pongs as they are; a close with its code and reason."""
    try:
        while True:
            msg = await source.receive()
            kind = msg.type
            if kind == aiohttp.WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif kind == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif kind == aiohttp.WSMsgType.PING:
                await sink.ping(msg.data or b"")
            elif kind == aiohttp.WSMsgType.PONG:
                await sink.pong(msg.data or b"")
            elif kind == aiohttp.WSMsgType.CLOSE:
                code = msg.data if isinstance(msg.data, int) and msg.data else 1005
                reason = (msg.extra or "").encode("utf-8")
                await sink.close(code=1000 if code == 1005 else code, message=reason)
                return
            else:  # CLOSING/CLOSED/ERROR: the socket went without a close frame
                await sink.close(code=_WS_LOST, message=b"connection lost")
                return
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        return  # the sink is gone; the bridge closes what is left


def _refused_upgrade(exc: aiohttp.WSServerHandshakeError) -> web.Response:
    """The owner (or the local server) answered the upgrade with something other than 101: pass its status on."""
    response = web.Response(status=exc.status or 502)
    for name, value in strip_hop_by_hop(list((exc.headers or {}).items())):
        if name.lower() not in WEBSOCKET_HANDSHAKE and name.lower() not in ("content-length", "content-type"):
            response.headers.add(name, value)
    return response


def hop_of(relay: Any) -> NodeHop:
    """The relay's NodeHop, made on first use."""
    hop = getattr(relay, "fleet_hop", None)
    if hop is None:
        hop = NodeHop(relay.config, relay.registry)
        relay.fleet_hop = hop
    return hop


def install_hop(app: web.Application, relay: Any) -> NodeHop:
    """Give ``relay`` its NodeHop and close the hop's connections when ``app`` is cleaned up."""
    hop = hop_of(relay)

    async def close_hop(_app: web.Application) -> None:
        await hop.close()

    app.on_cleanup.append(close_hop)
    return hop


async def forward_to_node(request: web.BaseRequest, route: RemoteRoute, relay: Any) -> web.StreamResponse:
    """Answer a public request for a tunnel that lives on another node (``Relay.dispatch`` calls this)."""
    return await hop_of(relay).forward(request, route)

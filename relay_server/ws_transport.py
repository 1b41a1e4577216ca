"""The agent's websocket at the relay: aiohttp's opening handshake, then our ``PushWebsocket``.

aiohttp's ``WebSocketResponse.prepare`` checks the upgrade and sends the 101
(on the same listener as public traffic, behind the same limits); then
``ServerWebsocket`` takes the socket over, so both ends of the tunnel run the
same websocket code and the driver has one way of running (no read and write
tasks, whose hops each message cost through aiohttp's ``receive`` and
``send_bytes``).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from websockets.protocol import Protocol, Side

from relay_protocol.websocket import PushWebsocket, frame_head

#: How long the relay waits for an agent's answer to its close frame before dropping the socket.
CLOSE_TIMEOUT = 5.0


class ServerWebsocket(PushWebsocket):
    """Binary messages over an agent's websocket, delivered by callback (a ``PushTransport``)."""

    def __init__(
        self,
        request: web.BaseRequest,
        *,
        max_message: int,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        transport = request.transport
        if transport is None:  # the agent left during the handshake
            raise ConnectionResetError("the agent's connection closed during the handshake")
        super().__init__(
            Protocol(Side.SERVER, max_size=max_message),
            transport,  # type: ignore[arg-type]  # asyncio.BaseTransport as aiohttp types it; a stream transport
            asyncio.get_running_loop(),
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )
        #: aiohttp's protocol for this connection: told when the socket goes, as it would have been.
        self._handler = request.protocol
        self._take_over(paused=self._handler.writing_paused)

    def _binary_frame(self, data: bytes) -> tuple[bytes, bytes]:
        return frame_head(len(data), masked=False), data

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._handler.connection_lost(exc)  # aiohttp's bookkeeping of its connections, and the handler's end


async def open_agent_websocket(
    request: web.BaseRequest, *, max_message: int, heartbeat: float
) -> tuple[web.WebSocketResponse, ServerWebsocket] | None:
    """Answer the upgrade and take the socket over; None if the request is not a websocket upgrade.

    The response is what the handler returns to aiohttp once the socket is
    closed.  aiohttp's own reader never sees a byte: the agent sends nothing
    before the 101 (RFC 6455 section 4.1), and we take over before the loop
    reads again.
    """
    ws = web.WebSocketResponse(max_msg_size=max_message, compress=False, heartbeat=None, autoping=True)
    if not ws.can_prepare(request).ok:
        return None
    await ws.prepare(request)
    return ws, ServerWebsocket(request, max_message=max_message, ping_interval=heartbeat, ping_timeout=heartbeat / 2)

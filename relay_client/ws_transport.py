"""The agent's websocket once open: websockets' client handshake, then our ``PushWebsocket``.

``websockets.asyncio.client.connect`` does the opening handshake (TLS,
proxies, redirects, its errors); then ``ClientWebsocket`` takes the socket
over from websockets' asyncio ``Connection``, which would cost a task hop per
message on the way in (``recv``) and an async context manager with locks on
the way out (``send``).
"""

from __future__ import annotations

import secrets

from websockets.asyncio.client import ClientConnection
from websockets.frames import apply_mask  # the C speedup, when websockets has it built

from relay_protocol.websocket import PushWebsocket, frame_head


class ClientWebsocket(PushWebsocket):
    """Binary messages over an open client websocket, delivered by callback (a ``PushTransport``)."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        super().__init__(
            ws.protocol,
            ws.transport,
            ws.loop,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
        )
        #: Kept: the handshake's request and response, and the referent of the protocol's logger.
        self.ws = ws
        if ws.keepalive_task is not None:
            ws.keepalive_task.cancel()
            ws.keepalive_task = None
        if ws.connection_lost_waiter.done():
            self._lost.set_result(None)
            return
        queued = ws.recv_messages.frames.queue  # frames it received after the handshake (the relay sends none)
        self._take_over(list(queued), paused=ws.paused)
        queued.clear()
        if ws.recv_messages.paused:
            ws.transport.resume_reading()

    def _binary_frame(self, data: bytes) -> tuple[bytes, bytes]:
        return masked_binary_frame(data)


def masked_binary_frame(data: bytes | memoryview) -> tuple[bytes, bytes]:
    """Head and masked payload of one final binary frame from a client (RFC 6455 section 5.2).

    What ``websockets.frames.Frame.serialize`` makes for a message with no
    extension, in two pieces for ``writelines``: it assembles the frame in a
    ``BytesIO`` and copies the payload twice more (into it, then out), which
    was a tenth of the agent's CPU on a download.  The mask still comes from
    ``secrets`` and the masking is websockets' own ``apply_mask``.
    """
    mask = secrets.token_bytes(4)
    return frame_head(len(data), masked=True) + mask, apply_mask(data, mask)

"""Pump websocket messages between one local websocket hop and a tunnel stream.

The relay (public client's websocket) and the agent (local server's
websocket) run the same pump; both use aiohttp websocket objects, which this
module only duck-types (``receive``, ``send_str``, ``send_bytes``, ``ping``,
``pong``, ``close``), so the protocol package stays free of aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from relay_protocol.driver import MuxStream, StreamError
from relay_protocol.errors import ErrorCode, RemoteProtocolError
from relay_protocol.wsmessages import Kind, MessageDecoder, decode_close, encode_close, encode_message

log = logging.getLogger(__name__)

#: aiohttp's WSMsgType values for the non-data message types (opcodes above 0xff).
_CLOSING_TYPES = {0x100, 0x101, 0x102}  # CLOSING, CLOSED, ERROR


class WebSocketLike(Protocol):
    """The part of aiohttp's websocket API the bridge uses."""

    async def receive(self) -> Any: ...
    async def send_str(self, data: str) -> None: ...
    async def send_bytes(self, data: bytes) -> None: ...
    async def ping(self, message: bytes = b"") -> None: ...
    async def pong(self, message: bytes = b"") -> None: ...
    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


async def bridge(ws: WebSocketLike, stream: MuxStream) -> None:
    """Run both directions until either end closes; then close the other."""
    inbound = asyncio.create_task(_socket_to_stream(ws, stream))
    outbound = asyncio.create_task(_stream_to_socket(stream, ws))
    try:
        done, pending = await asyncio.wait({inbound, outbound}, return_when=asyncio.FIRST_COMPLETED)
        # One direction ended: give the other a moment to pass the close on.
        if pending:
            await asyncio.wait(pending, timeout=5.0)
    finally:
        for task in (inbound, outbound):
            if not task.done():
                task.cancel()
        await asyncio.gather(inbound, outbound, return_exceptions=True)
        stream.release(ErrorCode.CANCEL, "websocket closed")


async def _socket_to_stream(ws: WebSocketLike, stream: MuxStream) -> None:
    try:
        while True:
            msg = await ws.receive()
            kind = int(msg.type)
            if kind == Kind.TEXT:
                await stream.write(encode_message(Kind.TEXT, msg.data.encode("utf-8")))
            elif kind == Kind.BINARY:
                await stream.write(encode_message(Kind.BINARY, msg.data))
            elif kind == Kind.PING:
                await stream.write(encode_message(Kind.PING, msg.data or b""))
            elif kind == Kind.PONG:
                await stream.write(encode_message(Kind.PONG, msg.data or b""))
            elif kind == Kind.CLOSE:
                code = msg.data if isinstance(msg.data, int) else 1005
                await stream.write(encode_close(code, msg.extra or ""), end=True)
                return
            elif kind in _CLOSING_TYPES:
                # The socket went away without a close frame: 1006 on the other side.
                await stream.write(encode_close(1006, "connection lost"), end=True)
                return
    except StreamError:
        return


async def _stream_to_socket(stream: MuxStream, ws: WebSocketLike) -> None:
    decoder = MessageDecoder()
    try:
        while chunk := await stream.read():
            for kind, payload in decoder.feed(chunk):
                if kind is Kind.TEXT:
                    await ws.send_str(payload.decode("utf-8", "replace"))
                elif kind is Kind.BINARY:
                    await ws.send_bytes(payload)
                elif kind is Kind.PING:
                    await ws.ping(payload)
                elif kind is Kind.PONG:
                    await ws.pong(payload)
                elif kind is Kind.CLOSE:
                    code, reason = decode_close(payload)
                    await ws.close(code=_sendable(code), message=reason.encode("utf-8"))
                    return
        await ws.close(code=1001, message=b"tunnel stream ended")
    except (StreamError, RemoteProtocolError) as exc:
        log.debug("websocket bridge stream ended: %s", exc)
        await ws.close(code=1011, message=b"tunnel error")
    except ConnectionError:
        pass


def _sendable(code: int) -> int:
    """Codes that may not appear in a close frame (1005, 1006, 1015) become 1000/1011."""
    if code == 1005:
        return 1000
    if code in (1006, 1015):
        return 1011
    return code

"""aiohttp's server websocket as a protocol ``Transport`` (errors translated here, once)."""

from __future__ import annotations

from aiohttp import WSMsgType, web

from relay_protocol.driver import TransportClosed


class AiohttpTransport:
    """Binary messages over an aiohttp ``WebSocketResponse``."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        """Send one message; a closed socket becomes TransportClosed."""
        try:
            await self.ws.send_bytes(data)
        except (ConnectionError, RuntimeError) as exc:
            raise TransportClosed(str(exc)) from None

    async def recv(self) -> bytes | None:
        """Next binary message; None on close, error, or a text message (not our protocol)."""
        msg = await self.ws.receive()
        if msg.type is WSMsgType.BINARY:
            return msg.data
        if msg.type is WSMsgType.TEXT:
            await self.close(1003, "binary frames only")
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely; never raises."""
        try:
            await self.ws.close(code=code, message=reason.encode()[:120])
        except Exception:  # already gone: nothing left to close
            pass

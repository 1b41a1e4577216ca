"""The websockets client connection as a protocol ``Transport`` (errors translated here)."""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from relay_protocol.driver import TransportClosed


class WebsocketsTransport:
    """Binary messages over a ``websockets`` client connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        """Send one message; a closed socket becomes TransportClosed."""
        try:
            await self.ws.send(data)
        except ConnectionClosed as exc:
            raise TransportClosed(str(exc)) from None

    async def recv(self) -> bytes | None:
        """Next binary message; None once the connection closed."""
        try:
            message = await self.ws.recv()
        except ConnectionClosed:
            return None
        if isinstance(message, str):
            await self.close(1003, "binary frames only")
            return None
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely; never raises."""
        try:
            await self.ws.close(code, reason[:120])
        except Exception:  # already gone
            pass

"""Connections from a TCP balancer that speaks the PROXY protocol (``--proxy-protocol``).

Every connection must come from a ``--trusted-proxy`` address and open with
a PROXY header (``proxyheader``); the address it names becomes the
connection's peer for everything above (``X-Forwarded-For``, ``--allow-ip``,
rate limits, access log), through ``AddressedTransport``.  Anything else (an
untrusted peer, no header, a malformed one, one too slow to arrive) is
closed: the balancer is the only way in.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from relay_server.access import peer_address
from relay_server.config import RelayConfig
from relay_server.proxyheader import ProxyHeaderError, parse

log = logging.getLogger("relay_server.limits")

#: Seconds a balancer has to send the header once connected.
HEADER_TIMEOUT = 5.0


class AddressedTransport:
    """A transport whose peer is the client the PROXY header named; the rest is the real transport's."""

    def __init__(self, transport: asyncio.BaseTransport, peer: tuple[str, int]) -> None:
        self._transport = transport
        self._peer = peer

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``peername`` is the client's; every other detail the socket's."""
        if name == "peername":
            return self._peer
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def hand_to(inner: asyncio.BaseProtocol, transport: asyncio.BaseTransport, client: tuple[str, int] | None) -> None:
    """Make ``inner`` the connection's protocol, seeing ``client`` as its peer (None: the socket's own)."""
    transport.set_protocol(inner)
    inner.connection_made(AddressedTransport(transport, client) if client is not None else transport)


class Addressing(asyncio.Protocol):
    """The TLS listener's shim: the header was read before the handshake; ``inner`` gets the client as its peer."""

    def __init__(self, inner: asyncio.BaseProtocol, client: tuple[str, int] | None) -> None:
        self._inner = inner
        self._client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Step aside for ``inner`` at once."""
        hand_to(self._inner, transport, self._client)


def addressed(factory: Callable[[], asyncio.BaseProtocol], client: tuple[str, int]) -> Callable[[], Addressing]:
    """A protocol factory like ``factory`` whose protocols see ``client`` as their peer."""
    return lambda: Addressing(factory(), client)


class ProxyHeaderReader(asyncio.Protocol):
    """The first protocol on a plain connection: reads the PROXY header, then hands over to ``inner()``."""

    def __init__(self, inner: Callable[[], asyncio.Protocol], config: RelayConfig) -> None:
        self._inner = inner
        self._config = config
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Only a trusted balancer may connect; it has ``HEADER_TIMEOUT`` seconds to say who the client is."""
        self._transport = transport  # type: ignore[assignment]
        address = peer_address(transport)
        if not self._config.is_trusted_proxy(address):
            log.info("closed a connection from %s: --proxy-protocol takes connections from --trusted-proxy only", address)
            transport.abort()  # type: ignore[attr-defined]
            return
        self._timer = asyncio.get_running_loop().call_later(HEADER_TIMEOUT, self._too_slow)

    def data_received(self, data: bytes) -> None:
        """Wait for the whole header; then the rest of the bytes are the next protocol's."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buffer += data
        try:
            header = parse(self._buffer)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is None:
            return
        self._stop_timer()
        rest = self._buffer[header.size :]
        self._buffer = b""
        inner = self._inner()
        hand_to(inner, transport, header.client)
        if rest and isinstance(inner, asyncio.Protocol):
            inner.data_received(rest)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Gone before the header."""
        self._stop_timer()

    def _too_slow(self) -> None:
        self._timer = None
        self._refuse(f"no PROXY header within {HEADER_TIMEOUT:g} s")

    def _refuse(self, reason: str) -> None:
        self._stop_timer()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            log.info("closed a connection from %s: %s", peer_address(transport) or "?", reason)
            transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

"""Resolve ``localhost`` and ``*.localhost`` to loopback ourselves (RFC 6761).

Browsers and curl do this; many system resolvers do not, which would make
``http://NAME.localhost:8080`` work in a browser and fail in our own tools.
Loopback IPv4 comes first: most development servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from relay_client.target import is_localhost


class LoopbackResolver(AbstractResolver):
    """``*.localhost`` -> 127.0.0.1 and ::1; everything else -> the system resolver."""

    def __init__(self) -> None:
        self._default = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Loopback addresses for localhost names, else the default resolver's answer."""
        if not is_localhost(host):
            return await self._default.resolve(host, port, family)
        results: list[ResolveResult] = []
        if family in (socket.AF_INET, socket.AF_UNSPEC):
            results.append(_result(host, "127.0.0.1", port, socket.AF_INET))
        if family in (socket.AF_INET6, socket.AF_UNSPEC):
            results.append(_result(host, "::1", port, socket.AF_INET6))
        return results

    async def close(self) -> None:
        """Close the delegate."""
        await self._default.close()


def _result(hostname: str, address: str, port: int, family: socket.AddressFamily) -> Any:
    return ResolveResult(hostname=hostname, host=address, port=port, family=family, proto=0, flags=socket.AI_NUMERICHOST)

"""HTTP clients for public requests: aiohttp with *.localhost -> 127.0.0.1, and a raw socket one.

The raw client sends exactly the bytes a test writes (odd paths, repeated and
hop-by-hop headers, ``Expect: 100-continue``) and parses the answer itself, so
nothing between the test and the relay normalises anything.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from support.ports import LOOPBACK

#: Longest status line or header line the raw client accepts.
MAX_RAW_LINE = 64 * 1024

#: Seconds any single raw read may take.
RAW_READ_TIMEOUT = 10.0


class LocalhostResolver(AbstractResolver):
    """``localhost`` and ``*.localhost`` resolve to 127.0.0.1 only; nothing else resolves."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """127.0.0.1 for localhost names."""
        name = host.lower().rstrip(".")
        if name != "localhost" and not name.endswith(".localhost") and name != LOOPBACK:
            raise OSError(f"the e2e tests only talk to localhost, not {host!r}")
        return [
            ResolveResult(hostname=host, host=LOOPBACK, port=port, family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)
        ]

    async def close(self) -> None:
        """Nothing to release."""


def make_client(limit: int = 300, timeout: float = 60.0) -> aiohttp.ClientSession:
    """A client session for public URLs: no decompression, no cookie jar, bounded time."""
    connector = aiohttp.TCPConnector(limit=limit, resolver=LocalhostResolver(), force_close=False)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=5),
    )


@dataclass
class RawResponse:
    """A response as it came off the wire."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: Interim (1xx) responses seen before this one, as (status, reason).
    interim: list[tuple[int, str]] = field(default_factory=list)
    chunked: bool = False
    #: Bytes that followed the response before the server closed (``until_eof=True`` only).
    trailing: bytes = b""

    def get_all(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        values = self.get_all(name)
        return values[0] if values else None


async def _readline(reader: asyncio.StreamReader) -> bytes:
    line = await asyncio.wait_for(reader.readuntil(b"\r\n"), RAW_READ_TIMEOUT)
    if len(line) > MAX_RAW_LINE:
        raise AssertionError(f"line of {len(line)} bytes from the server")
    return line[:-2]


async def read_head(reader: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    """One status line and its header block."""
    status_line = (await _readline(reader)).decode("latin-1")
    version, _, rest = status_line.partition(" ")
    assert version.startswith("HTTP/1."), status_line
    code, _, reason = rest.partition(" ")
    headers: list[tuple[str, str]] = []
    while line := await _readline(reader):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name, value.strip()))
    return int(code), reason, headers


async def read_response(reader: asyncio.StreamReader, *, head_request: bool = False) -> RawResponse:
    """Interim responses, then the final head and its body (Content-Length, chunked or until close)."""
    interim: list[tuple[int, str]] = []
    while True:
        status, reason, headers = await read_head(reader)
        if 100 <= status < 200 and status != 101:
            interim.append((status, reason))
            continue
        break
    response = RawResponse(status, reason, headers, interim=interim)
    if head_request or status in (204, 304):
        return response
    if any(v.lower() == "chunked" for v in response.get_all("Transfer-Encoding")):
        response.chunked = True
        parts = []
        while True:
            size = int((await _readline(reader)).split(b";")[0], 16)
            if size == 0:
                while await _readline(reader):  # trailers
                    pass
                break
            parts.append(await asyncio.wait_for(reader.readexactly(size), RAW_READ_TIMEOUT))
            assert await _readline(reader) == b""
        response.body = b"".join(parts)
    elif (length := response.get("Content-Length")) is not None:
        response.body = await asyncio.wait_for(reader.readexactly(int(length)), RAW_READ_TIMEOUT)
    else:
        response.body = await asyncio.wait_for(reader.read(), RAW_READ_TIMEOUT)
    return response


async def raw_request(port: int, request: bytes, *, head_request: bool = False, until_eof: bool = False) -> RawResponse:
    """Send ``request`` verbatim to 127.0.0.1:port on a fresh connection; read one response.

    With ``until_eof`` also read whatever follows it until the server closes
    (the request must say ``Connection: close``), to prove nothing does.
    """
    reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), RAW_READ_TIMEOUT)
    try:
        writer.write(request)
        await writer.drain()
        response = await read_response(reader, head_request=head_request)
        if until_eof:
            response.trailing = await asyncio.wait_for(reader.read(), RAW_READ_TIMEOUT)
        return response
    finally:
        writer.close()


def build_request(method: str, target: bytes | str, host: str, headers: list[tuple[str, str]] = (), body: bytes = b"") -> bytes:
    """Request bytes: the target goes on the wire exactly as given."""
    if isinstance(target, str):
        target = target.encode("utf-8")
    lines = [method.encode() + b" " + target + b" HTTP/1.1", f"Host: {host}".encode()]
    lines += [f"{k}: {v}".encode("latin-1") for k, v in headers]
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}".encode())
    if not any(k.lower() == "connection" for k, _ in headers):
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body

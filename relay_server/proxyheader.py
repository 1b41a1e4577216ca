"""The PROXY protocol header (HAProxy's, versions 1 and 2): the client address a TCP balancer saw.

A balancer in TCP mode (haproxy ``send-proxy-v2``, nginx ``proxy_protocol``,
cloud network load balancers) opens every connection to the relay with one
such header naming the client's address; without it the relay would only
ever see the balancer's.  Sans-I/O: ``parse`` takes the bytes received so far
and says what it found.  Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

#: A version 1 header is one line of at most this many bytes, CRLF included.
V1_MAX = 107

#: What every version 2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: Longest version 2 header accepted (addresses plus TLVs such as the balancer's TLS details).
V2_MAX = 16 + 2048

_V1_PREFIX = b"PROXY "


class ProxyHeaderError(ValueError):
    """Not a valid PROXY header: the connection is closed."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the balancer said: ``size`` bytes of header; the client's address, or None (a health check, LOCAL)."""

    size: int
    client: tuple[str, int] | None


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``; None while more bytes are needed; ProxyHeaderError if it is none."""
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data)
    if data:
        raise ProxyHeaderError("the connection did not start with a PROXY header")
    return None


def _parse_v1(data: bytes) -> ProxyHeader | None:
    if not _V1_PREFIX.startswith(data[: len(_V1_PREFIX)]):
        raise ProxyHeaderError("the connection did not start with a PROXY header")
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header longer than 107 bytes")
        return None
    words = data[:end].split(b" ")
    if len(words) >= 2 and words[1] == b"UNKNOWN":
        return ProxyHeader(end + 2, None)
    if len(words) != 6 or words[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    try:
        source = ipaddress.ip_address(words[2].decode("ascii"))
        ipaddress.ip_address(words[3].decode("ascii"))
        port = _port(words[4])
        _port(words[5])
    except (ValueError, UnicodeDecodeError):
        raise ProxyHeaderError("malformed PROXY v1 header") from None
    if (source.version == 4) != (words[1] == b"TCP4"):
        raise ProxyHeaderError("PROXY v1 address does not match its family")
    return ProxyHeader(end + 2, (str(source), port))


def _port(word: bytes) -> int:
    if not word.isdigit() or len(word) > 5 or (len(word) > 1 and word[:1] == b"0"):
        raise ValueError("bad port")
    port = int(word)
    if port > 65535:
        raise ValueError("bad port")
    return port


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if not V2_SIGNATURE.startswith(data[:12]):
        raise ProxyHeaderError("the connection did not start with a PROXY header")
    if len(data) < 16:
        return None
    version_command, family, length = data[12], data[13], struct.unpack("!H", data[14:16])[0]
    if version_command >> 4 != 2:
        raise ProxyHeaderError("unsupported PROXY protocol version")
    if 16 + length > V2_MAX:
        raise ProxyHeaderError("PROXY v2 header too long")
    if len(data) < 16 + length:
        return None
    size = 16 + length
    command = version_command & 0x0F
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(size, None)
    if command != 1:
        raise ProxyHeaderError("unknown PROXY v2 command")
    body = data[16:size]
    if family == 0x11:  # TCP over IPv4
        if length < 12:
            raise ProxyHeaderError("PROXY v2 IPv4 addresses cut short")
        source = ipaddress.IPv4Address(body[0:4])
        port = struct.unpack("!H", body[8:10])[0]
        return ProxyHeader(size, (str(source), port))
    if family == 0x21:  # TCP over IPv6
        if length < 36:
            raise ProxyHeaderError("PROXY v2 IPv6 addresses cut short")
        source6 = ipaddress.IPv6Address(body[0:16])
        port = struct.unpack("!H", body[32:34])[0]
        return ProxyHeader(size, (str(source6.ipv4_mapped or source6), port))
    if family == 0x00:  # UNSPEC: nothing to learn
        return ProxyHeader(size, None)
    raise ProxyHeaderError("PROXY v2 address family not supported (TCP over IPv4 or IPv6 only)")


def v1_header(client: tuple[str, int], server: tuple[str, int]) -> bytes:
    """A version 1 header (for tests and tools)."""
    family = "TCP6" if ":" in client[0] else "TCP4"
    return f"PROXY {family} {client[0]} {server[0]} {client[1]} {server[1]}\r\n".encode("ascii")

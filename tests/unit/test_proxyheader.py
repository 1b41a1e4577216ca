"""The PROXY protocol header parser: versions 1 and 2, whole, partial and wrong."""

from __future__ import annotations

import socket
import struct

import pytest

from relay_server.proxyheader import V2_SIGNATURE, ProxyHeader, ProxyHeaderError, parse, v1_header


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src: str, sport: int, tlvs: bytes = b"") -> bytes:
    body = socket.inet_aton(src) + socket.inet_aton("10.0.0.1") + struct.pack("!HH", sport, 443) + tlvs
    return v2(1, 0x11, body)


def v2_tcp6(src: str, sport: int) -> bytes:
    body = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack("!HH", sport, 443)
    return v2(1, 0x21, body)


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"PROXY TCP4 203.0.113.7 10.0.0.1 51000 80\r\nGET /", ProxyHeader(42, ("203.0.113.7", 51000))),
        (b"PROXY TCP6 2001:db8::7 ::1 1 443\r\n", ProxyHeader(34, ("2001:db8::7", 1))),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(15, None)),
        (b"PROXY UNKNOWN ffff:f::1 ffff::1 1 2\r\n", ProxyHeader(37, None)),
        (v2_tcp4("203.0.113.9", 4242) + b"GET /", ProxyHeader(28, ("203.0.113.9", 4242))),
        (v2_tcp4("203.0.113.9", 4242, tlvs=b"\x05\x00\x02ab"), ProxyHeader(33, ("203.0.113.9", 4242))),
        (v2_tcp6("2001:db8::9", 8080), ProxyHeader(52, ("2001:db8::9", 8080))),
        (v2_tcp6("::ffff:198.51.100.4", 8080), ProxyHeader(52, ("198.51.100.4", 8080))),
        (v2(0, 0x00, b""), ProxyHeader(16, None)),  # LOCAL: the balancer's own health check
        (v2(1, 0x00, b""), ProxyHeader(16, None)),  # PROXY over UNSPEC
    ],
)
def test_whole_headers_give_the_client_and_their_size(data: bytes, expected: ProxyHeader) -> None:
    assert parse(data) == expected


@pytest.mark.parametrize("header", [v1_header(("203.0.113.7", 5), ("10.0.0.1", 80)), v2_tcp4("203.0.113.7", 5)])
def test_a_header_cut_anywhere_asks_for_more(header: bytes) -> None:
    for cut in range(len(header)):
        assert parse(header[:cut]) is None, cut
    assert parse(header) is not None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",  # no header at all
        b"\x16\x03\x01\x02\x00",  # a TLS hello straight away
        b"PROXY TCP4 203.0.113.7 10.0.0.1 51000\r\n",  # a field missing
        b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",  # v6 address under TCP4
        b"PROXY TCP6 203.0.113.7 ::1 1 2\r\n",  # v4 address under TCP6
        b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 80\r\n",  # port out of range
        b"PROXY TCP4 203.0.113.7 10.0.0.1 080 80\r\n",  # leading zero
        b"PROXY TCP4 203.0.113.700 10.0.0.1 1 2\r\n",  # not an address
        b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",  # not TCP
        b"PROXY TCP4 " + b"1" * 120,  # no CRLF within 107 bytes
        V2_SIGNATURE + bytes([0x10, 0x11, 0, 0]),  # version 1 in a v2 header
        V2_SIGNATURE + bytes([0x22, 0x11, 0, 0]),  # unknown command
        v2(1, 0x11, b"\x01\x02\x03"),  # IPv4 addresses cut short
        v2(1, 0x31, b"x" * 216),  # AF_UNIX
        V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000),  # longer than accepted
        b"\r\n\r\n\x00\r\nQUIX\n",  # not the signature
    ],
)
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)

"""The ClientHello parser, fed real ClientHellos from Python's own TLS client (no sockets)."""

from __future__ import annotations

import ssl

import pytest

from relay_server.tls.clienthello import ClientHello, NotTLS, parse_client_hello, record_size


def client_hello(server_name: str | None, alpn: list[str] | None = None) -> bytes:
    """The first bytes a TLS client sends for ``server_name``."""
    context = ssl.create_default_context()
    context.check_hostname = server_name is not None
    if server_name is None:
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_the_server_name_and_alpn_protocols_are_read_from_a_real_client_hello() -> None:
    data = client_hello("Demo.Example.COM", ["h2", "http/1.1"])

    assert record_size(data) == len(data)
    assert parse_client_hello(data) == ClientHello("demo.example.com", ("h2", "http/1.1"))


def test_a_client_hello_without_sni_has_no_server_name() -> None:
    assert parse_client_hello(client_hello(None)).server_name is None


def test_the_acme_tls_alpn_protocol_is_seen() -> None:
    assert parse_client_hello(client_hello("x.example.com", ["acme-tls/1"])).alpn == ("acme-tls/1",)


def test_plain_http_is_not_tls() -> None:
    with pytest.raises(NotTLS):
        record_size(b"GET / HTTP/1.1\r\n")


def test_a_record_of_impossible_length_is_not_tls() -> None:
    with pytest.raises(NotTLS):
        record_size(b"\x16\x03\x01\xff\xff")


def test_a_handshake_record_that_is_not_a_client_hello_is_not_tls() -> None:
    with pytest.raises(NotTLS):
        parse_client_hello(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00")


def test_a_client_hello_cut_short_inside_the_record_reports_no_name_instead_of_failing() -> None:
    data = client_hello("demo.example.com")
    header = bytearray(data[:5])
    cut = data[5:60]  # the message says it is longer than what this record carries
    header[3:5] = len(cut).to_bytes(2, "big")

    assert parse_client_hello(bytes(header) + cut) == ClientHello(None)


def test_garbage_extensions_are_not_tls() -> None:
    data = bytearray(client_hello("demo.example.com"))
    # Corrupt the first extension's length so it runs past the extensions block.
    body_start = 5 + 4 + 2 + 32
    session_len = data[body_start]
    pos = body_start + 1 + session_len
    pos += 2 + int.from_bytes(data[pos : pos + 2], "big")
    pos += 1 + data[pos]
    ext_start = pos + 2
    data[ext_start + 2 : ext_start + 4] = b"\xff\xff"

    with pytest.raises(NotTLS):
        parse_client_hello(bytes(data))

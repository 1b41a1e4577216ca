"""TLS probes for the tests: HTTPS requests with a chosen SNI name, and the certificate a server shows.

Connections always go to 127.0.0.1; the name is only the TLS server name and
the Host header, so ``NAME.localhost`` works whatever the system resolver does.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from support.ports import LOOPBACK

#: Seconds for one TLS connection, handshake and response.
TLS_TIMEOUT = 30.0

#: Most response body bytes read.
MAX_BODY = 1024 * 1024


@dataclass
class HTTPSResponse:
    """One response over TLS, and the leaf certificate the server sent."""

    status: int
    headers: dict[str, str]
    body: bytes
    certificate: x509.Certificate


def client_context(cafile: Path | None) -> ssl.SSLContext:
    """A verifying client context trusting only ``cafile`` (or nothing, then verification fails)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cafile is not None:
        context.load_verify_locations(cafile=str(cafile))
    context.set_alpn_protocols(["http/1.1"])
    return context


def https_get(
    port: int,
    hostname: str,
    path: str = "/",
    *,
    cafile: Path | None,
    headers: dict[str, str] | None = None,
    timeout: float = TLS_TIMEOUT,
) -> HTTPSResponse:
    """``GET https://hostname:port/path`` on 127.0.0.1, verifying against ``cafile`` only.

    Trusting only a root proves the server sent the intermediates too (the full chain).
    """
    context = client_context(cafile)
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            lines = [f"GET {path} HTTP/1.1", f"Host: {hostname}:{port}", "Connection: close"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            response = http.client.HTTPResponse(tls)
            response.begin()
            body = response.read(MAX_BODY)
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            return HTTPSResponse(response.status, {k.lower(): v for k, v in response.getheaders()}, body, leaf)


def served_certificate(port: int, hostname: str | None, timeout: float = TLS_TIMEOUT) -> x509.Certificate:
    """The leaf certificate the server presents for ``hostname`` (no verification)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der, "the server sent no certificate"
    return x509.load_der_x509_certificate(der)


def handshake_error(port: int, hostname: str | None, cafile: Path | None = None, timeout: float = TLS_TIMEOUT) -> ssl.SSLError:
    """The SSLError a handshake for ``hostname`` ends with (fails the test if it succeeds)."""
    context = client_context(cafile)
    if cafile is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=hostname):
                pass
        except ssl.SSLError as exc:
            return exc
    raise AssertionError(f"the TLS handshake for {hostname!r} succeeded; expected a refusal")


def dns_names(cert: x509.Certificate) -> list[str]:
    """The certificate's subjectAltName DNS names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.DNSName)


class KeepAliveConnection:
    """One TLS connection reused for several requests (to see that it survives a certificate swap)."""

    def __init__(self, port: int, hostname: str, cafile: Path | None, timeout: float = TLS_TIMEOUT) -> None:
        self.hostname = hostname
        self.port = port
        raw = socket.create_connection((LOOPBACK, port), timeout=timeout)
        try:
            self.tls = client_context(cafile).wrap_socket(raw, server_hostname=hostname)
        except BaseException:
            raw.close()
            raise
        self.certificate = x509.load_der_x509_certificate(self.tls.getpeercert(binary_form=True))

    def get(self, path: str) -> tuple[int, bytes]:
        """``GET path`` on this connection; (status, body)."""
        request = f"GET {path} HTTP/1.1\r\nHost: {self.hostname}:{self.port}\r\n\r\n"
        self.tls.sendall(request.encode())
        response = http.client.HTTPResponse(self.tls)
        response.begin()
        return response.status, response.read(MAX_BODY)

    def close(self) -> None:
        """Close the connection."""
        self.tls.close()


def handshake_in_pieces(port: int, hostname: str, cafile: Path, cuts: tuple[int, ...], pause: float = 0.2) -> str:
    """A TLS handshake whose ClientHello is sent in pieces (cut at ``cuts``); the negotiated version."""
    context = client_context(cafile)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=hostname)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    with socket.create_connection((LOOPBACK, port), timeout=TLS_TIMEOUT) as raw:
        start = 0
        for cut in (*cuts, len(hello)):
            raw.sendall(hello[start:cut])
            start = cut
            time.sleep(pause)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    raw.sendall(pending)
                chunk = raw.recv(65536)
                if not chunk:
                    raise ConnectionError("the server closed the connection during the handshake") from None
                incoming.write(chunk)
        pending = outgoing.read()
        if pending:
            raw.sendall(pending)
        return tls.version() or ""

"""Answers the relay gives while a CA validates: HTTP-01 bodies and TLS-ALPN-01 certificates."""

from __future__ import annotations

import datetime
import hashlib
import ssl

# cryptography (~9 MiB resident) is imported only when a TLS-ALPN-01 certificate is made:
# ``options`` reads the names below on every start, HTTPS or not.

HTTP01 = "http-01"
TLS_ALPN01 = "tls-alpn-01"

#: The ALPN protocol a CA offers when it validates TLS-ALPN-01 (RFC 8737).
ACME_TLS_ALPN = "acme-tls/1"

#: id-pe-acmeIdentifier (RFC 8737 section 6.1), as a dotted string (an ObjectIdentifier when used).
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"

#: Where HTTP-01 answers are served (RFC 8555 section 8.3).
HTTP01_PREFIX = "/.well-known/acme-challenge/"


def tls_alpn01_context(hostname: str, key_authorization: str) -> ssl.SSLContext:
    """A context serving the self-signed validation certificate for ``hostname``, ALPN ``acme-tls/1`` only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ObjectIdentifier

    from relay_server.tls.certificate import context_from_pem
    from relay_server.tls.keys import cert_pem, key_pem, new_key

    key = new_key()
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        # extnValue is the DER OCTET STRING holding the SHA-256 of the key authorization.
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier(ACME_IDENTIFIER_OID), b"\x04\x20" + digest), critical=True)
        .sign(key, hashes.SHA256())
    )
    return context_from_pem(cert_pem(cert), key_pem(key), alpn=(ACME_TLS_ALPN,))


class Challenges:
    """Pending challenge answers by token (HTTP-01) and by hostname (TLS-ALPN-01)."""

    def __init__(self) -> None:
        self._http01: dict[str, str] = {}
        self._tls_alpn01: dict[str, ssl.SSLContext] = {}

    def http01_answer(self, token: str) -> str | None:
        """The key authorization to answer ``GET /.well-known/acme-challenge/<token>`` with."""
        return self._http01.get(token)

    def tls_alpn01_context(self, hostname: str) -> ssl.SSLContext | None:
        """The validation context for ``hostname``, while its challenge is pending."""
        return self._tls_alpn01.get(hostname)

    def add(self, kind: str, hostname: str, token: str, key_authorization: str) -> None:
        """Start answering a challenge."""
        if kind == HTTP01:
            self._http01[token] = key_authorization
        elif kind == TLS_ALPN01:
            self._tls_alpn01[hostname] = tls_alpn01_context(hostname, key_authorization)
        else:
            raise ValueError(f"unsupported challenge type {kind}")

    def remove(self, kind: str, hostname: str, token: str) -> None:
        """Stop answering a challenge."""
        if kind == HTTP01:
            self._http01.pop(token, None)
        else:
            self._tls_alpn01.pop(hostname, None)

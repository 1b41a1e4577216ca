"""One servable certificate: PEM chain + key, checked, turned into an ``ssl.SSLContext``.

Every problem a user can cause (garbage PEM, a key that does not match the
certificate, an unreadable file) becomes a ``CertificateError`` whose message
names the file and the problem in one line.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

#: ALPN the relay speaks over TLS (aiohttp serves HTTP/1.1 only).
HTTP_ALPN = ("http/1.1",)


class CertificateError(Exception):
    """A certificate or key cannot be used; the message says which file and why."""


def file_stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when a file is rewritten or replaced (inode, mtime, ctime, size); None if missing."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def covers(names: tuple[str, ...], hostname: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``hostname`` (RFC 6125 wildcards: one label)."""
    for name in names:
        if name == hostname:
            return True
        if name.startswith("*.") and "." in hostname:
            label, rest = hostname.split(".", 1)
            if label and rest == name[2:]:
                return True
    return False


@dataclass(slots=True)
class Certificate:
    """A loaded chain and key: what it is valid for and until when, and the context serving it."""

    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    serial: int
    context: ssl.SSLContext
    chain_path: Path | None = None
    key_path: Path | None = None
    stamps: tuple[tuple[int, ...] | None, ...] = field(default=())

    def covers(self, hostname: str) -> bool:
        """Whether this certificate is valid for ``hostname``."""
        return covers(self.names, hostname)

    def lifetime(self) -> float:
        """Seconds from notBefore to notAfter."""
        return (self.not_after - self.not_before).total_seconds()

    def seconds_left(self, now: datetime.datetime | None = None) -> float:
        """Seconds until notAfter (negative once expired)."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return (self.not_after - now).total_seconds()

    def files_changed(self) -> bool:
        """Whether the chain or key file differs from what was loaded."""
        if self.chain_path is None:
            return False
        return (file_stamp(self.chain_path), file_stamp(self.key_path or self.chain_path)) != self.stamps


def server_context(chain_path: Path, key_path: Path | None, alpn: tuple[str, ...] = HTTP_ALPN) -> ssl.SSLContext:
    """A server context serving this chain (leaf and intermediates, as stored) with our TLS settings."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(list(alpn))
    context.load_cert_chain(str(chain_path), str(key_path) if key_path else None)
    return context


def context_from_pem(chain_pem: bytes, key_pem: bytes, alpn: tuple[str, ...] = HTTP_ALPN) -> ssl.SSLContext:
    """``server_context`` for material held in memory (OpenSSL loads only from files)."""
    with tempfile.TemporaryDirectory(prefix="relay-tls-") as folder:
        chain = Path(folder) / "chain.pem"
        key = Path(folder) / "key.pem"
        for path, data in ((chain, chain_pem), (key, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        return server_context(chain, key, alpn)


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value).lower() for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(names)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {what} {path}: {exc.strerror}") from None


def _public_bytes(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)  # type: ignore[attr-defined]


def load_certificate(chain_path: Path, key_path: Path | None = None) -> Certificate:
    """Load and check a PEM chain and its key (``key_path`` None: the key is in the chain file)."""
    # Stamped before reading: a change after this point is seen by the next check.
    stamps = (file_stamp(chain_path), file_stamp(key_path or chain_path))
    chain_pem = _read(chain_path, "certificate")
    key_pem = _read(key_path, "key") if key_path else chain_pem
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise CertificateError(f"{chain_path} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----')") from None
    leaf = chain[0]
    key_source = key_path or chain_path
    if b"PRIVATE KEY-----" not in key_pem:
        raise CertificateError(f"{key_source} holds no PEM private key (expected '-----BEGIN ... PRIVATE KEY-----')")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise CertificateError(f"{key_source}: the private key is encrypted; give the relay an unencrypted key") from None
    except (ValueError, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateError(f"{key_source} holds no usable private key: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise CertificateError(f"{key_source}: unsupported key type {type(key).__name__}")
    if _public_bytes(key.public_key()) != _public_bytes(leaf.public_key()):
        raise CertificateError(f"{key_source} does not match the certificate in {chain_path} (a different key pair)")
    try:
        context = server_context(chain_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateError(f"{chain_path}: OpenSSL refused the certificate/key pair: {exc}") from None
    return Certificate(
        names=_names(leaf),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        context=context,
        chain_path=chain_path,
        key_path=key_path,
        stamps=stamps,
    )

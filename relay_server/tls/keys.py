"""Key pairs, PEM encodings and certificate requests, with ``cryptography`` (P-256 everywhere)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 private key (accepted by every ACME CA and TLS client in use)."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM of ``key``."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def load_key_pem(data: bytes) -> ec.EllipticCurvePrivateKey:
    """An EC private key from PEM; ValueError for anything else."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("not an EC private key")
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    """PEM of one certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def csr_der(key: ec.EllipticCurvePrivateKey, hostnames: list[str]) -> bytes:
    """DER certificate request for ``hostnames`` (names in the SAN only, as CAs read them)."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hostnames]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.DER)

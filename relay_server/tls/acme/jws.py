"""JSON Web Signatures for ACME requests (RFC 7515, flattened form) with an ES256 account key."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

#: Bytes of each of r and s in an ES256 signature.
_P256_BYTES = 32


def b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(_P256_BYTES, "big")


class AccountKey:
    """An ACME account's P-256 key: its JWK, thumbprint, and request signing."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("the ACME account key must be P-256")
        self.key = key
        numbers = key.public_key().public_numbers()
        #: Members in lexicographic order, as the thumbprint (RFC 7638) needs.
        self.jwk: dict[str, str] = {
            "crv": "P-256",
            "kty": "EC",
            "x": b64url(_int_bytes(numbers.x)),
            "y": b64url(_int_bytes(numbers.y)),
        }
        canonical = json.dumps(self.jwk, separators=(",", ":"), sort_keys=True).encode()
        #: RFC 7638 thumbprint, the second half of every key authorization.
        self.thumbprint = b64url(hashlib.sha256(canonical).digest())

    def key_authorization(self, token: str) -> str:
        """``token.thumbprint``: what a challenge answer proves we hold (RFC 8555 section 8.1)."""
        return f"{token}.{self.thumbprint}"

    def sign(self, url: str, nonce: str, payload: Any | None, kid: str | None = None) -> bytes:
        """The request body: flattened JWS over ``payload`` (None means POST-as-GET, an empty payload)."""
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if kid is None:
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = kid
        protected_b64 = b64url(json.dumps(protected, separators=(",", ":")).encode())
        payload_b64 = "" if payload is None else b64url(json.dumps(payload, separators=(",", ":")).encode())
        der = self.key.sign(f"{protected_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        body = {"protected": protected_b64, "payload": payload_b64, "signature": b64url(_int_bytes(r) + _int_bytes(s))}
        return json.dumps(body, separators=(",", ":")).encode()

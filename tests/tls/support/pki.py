"""Test certificates with ``trustme``: root -> intermediate -> leaf, written as PEM files.

A client trusting only the root proves the relay sends the full chain.  The
wildcard tests use the domain ``relay.localhost``: OpenSSL refuses a
``*.localhost`` wildcard (one label after the star); ``*.relay.localhost`` is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

#: Base domain of the relays started with certificate files.
DOMAIN = "relay.localhost"


@dataclass
class CertFiles:
    """A certificate chain file (leaf + intermediate) and its key file."""

    chain: Path
    key: Path
    serial: int


class LocalPKI:
    """A root CA (whose file clients trust) and an intermediate that signs the leaves."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.root = trustme.CA()
        self.intermediate = self.root.create_child_ca()
        self.root_file = folder / "root.pem"
        self.root.cert_pem.write_to_path(str(self.root_file))
        self._count = 0

    def issue(self, *names: str, chain: Path | None = None, key: Path | None = None, **options) -> CertFiles:
        """A leaf for ``names`` written as chain (leaf + intermediate) and key files."""
        self._count += 1
        leaf = self.intermediate.issue_cert(*names, **options)
        chain = chain or self.folder / f"leaf{self._count}.pem"
        key = key or self.folder / f"leaf{self._count}-key.pem"
        chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        key.write_bytes(leaf.private_key_pem.bytes())
        serial = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).serial_number
        return CertFiles(chain, key, serial)

"""Keys and certificates in the data dir: private directories, atomic writes, safe names.

Layout under ``<data-dir>/tls/``::

    acme/<server>/account-key.pem   the ACME account key (0600)
    acme/<server>/account.json      its account URL
    acme/<server>/certs/<host>/     fullchain.pem + privkey.pem, one dir per hostname
    local-ca/ca.pem, ca-key.pem     the --self-signed development CA
    local-ca/certs/<host>/          certificates it issued

``<server>`` is the ACME directory's host plus a short hash of its URL, so
switching between staging and production never serves the other's certificates.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

#: Directory modes: only the relay's user may list or enter them.
PRIVATE_DIR = 0o700

#: Key files: only the relay's user may read them.
PRIVATE_FILE = 0o600

#: Certificates and the local CA certificate are public material.
PUBLIC_FILE = 0o644

#: A DNS host name as it may appear in a path: lower-case labels, no '..', no '/'.
_HOSTNAME = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

CHAIN_FILE = "fullchain.pem"
KEY_FILE = "privkey.pem"


class StorageError(Exception):
    """A file in the data dir cannot be read or written; the message names it."""


def is_hostname(name: str) -> bool:
    """Whether ``name`` is a plain lower-case DNS name (safe as a directory name)."""
    return bool(_HOSTNAME.match(name))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` with mode 0700 (and the ``tls`` folders above it, up to the data dir, likewise)."""
    try:
        missing = []
        probe = path
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        for folder in reversed(missing):
            folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
            os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror}") from None
    return path


def write_file(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename) with ``mode``."""
    ensure_private_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + "-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None


def read_file(path: Path) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class CertPaths:
    """Where one hostname's certificate chain and key live."""

    chain: Path
    key: Path


class CertDirectory:
    """``<root>/<hostname>/{fullchain,privkey}.pem`` for every hostname an issuer serves."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def paths(self, hostname: str) -> CertPaths:
        """The two files of ``hostname`` (which must be a plain DNS name)."""
        if not is_hostname(hostname):
            raise StorageError(f"refusing to store a certificate for {hostname!r}: not a plain host name")
        folder = self.root / hostname
        return CertPaths(folder / CHAIN_FILE, folder / KEY_FILE)

    def save(self, hostname: str, chain_pem: bytes, key_pem: bytes) -> CertPaths:
        """Store a new chain and key (key first, so a reader never pairs a new chain with an old key)."""
        paths = self.paths(hostname)
        ensure_private_dir(self.root)
        ensure_private_dir(paths.chain.parent)
        write_file(paths.key, key_pem, PRIVATE_FILE)
        write_file(paths.chain, chain_pem, PUBLIC_FILE)
        return paths

    def hostnames(self) -> list[str]:
        """Every hostname with both files present."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(self.root.iterdir()):
            if is_hostname(entry.name) and (entry / CHAIN_FILE).is_file() and (entry / KEY_FILE).is_file():
                found.append(entry.name)
        return found


def tls_root(data_dir: Path) -> Path:
    """``<data-dir>/tls``."""
    return data_dir / "tls"


def acme_server_dir(data_dir: Path, directory_url: str) -> Path:
    """The folder for one ACME server's account and certificates."""
    host = urlsplit(directory_url).hostname or "acme"
    safe = re.sub(r"[^a-z0-9.-]", "-", host.lower())
    digest = hashlib.sha256(directory_url.encode()).hexdigest()[:8]
    return tls_root(data_dir) / "acme" / f"{safe}-{digest}"


def local_ca_dir(data_dir: Path) -> Path:
    """The folder of the --self-signed development CA."""
    return tls_root(data_dir) / "local-ca"

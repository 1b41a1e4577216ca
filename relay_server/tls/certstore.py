"""What the TLS listener can serve: certificates from files, and ones the relay obtained.

File certificates (``--tls-cert``/``--tls-key``) are re-read when their files
change (checked at most every ``RELOAD_INTERVAL`` seconds, on a handshake):
a new context is built and swapped in; connections already open keep the one
they started with.  A half-replaced pair (new certificate, old key) fails the
check and the old certificate stays in service until the pair is whole again.
Obtained certificates (ACME, local CA) are put here by ``ondemand``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from relay_server.tls.certificate import Certificate, CertificateError, load_certificate

log = logging.getLogger("relay_server.tls")

#: Least seconds between two checks of the certificate files' modification stamps.
RELOAD_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class CertFiles:
    """One ``--tls-cert`` and its ``--tls-key`` (None: the key is in the certificate file)."""

    chain: Path
    key: Path | None = None


class CertStore:
    """Certificates by hostname: files first (exact name, then wildcard), then obtained ones."""

    def __init__(
        self,
        files: list[CertFiles] | None = None,
        *,
        reload_interval: float = RELOAD_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._files = list(files or [])
        self._static: list[Certificate] = [load_certificate(f.chain, f.key) for f in self._files]
        self._obtained: dict[str, Certificate] = {}
        self._reload_interval = reload_interval
        self._clock = clock
        self._next_check = clock() + reload_interval
        self._broken: dict[Path, str] = {}

    # ------------------------------------------------------------- lookups
    def find(self, hostname: str) -> Certificate | None:
        """The certificate to serve for ``hostname``, or None."""
        self.reload_if_due()
        for cert in self._static:
            if hostname in cert.names:
                return cert
        for cert in self._static:
            if cert.covers(hostname):
                return cert
        return self._obtained.get(hostname)

    def covered_by_files(self, hostname: str) -> bool:
        """Whether a certificate file already serves ``hostname`` (so nothing needs ordering)."""
        return any(cert.covers(hostname) for cert in self._static)

    def default(self, fallback_name: str | None = None) -> Certificate | None:
        """For a client that sent no name: the first certificate file, else the one obtained for ``fallback_name``."""
        self.reload_if_due()
        if self._static:
            return self._static[0]
        return self._obtained.get(fallback_name) if fallback_name else None

    def static(self) -> list[Certificate]:
        """The certificates loaded from files, in option order."""
        return list(self._static)

    # ------------------------------------------------------------- obtained
    def put(self, hostname: str, cert: Certificate) -> None:
        """Serve ``cert`` for ``hostname`` from the next handshake on."""
        self._obtained[hostname] = cert

    def obtained(self, hostname: str) -> Certificate | None:
        """The certificate obtained for ``hostname``, if any."""
        return self._obtained.get(hostname)

    def obtained_items(self) -> Iterator[tuple[str, Certificate]]:
        """Every (hostname, obtained certificate)."""
        return iter(list(self._obtained.items()))

    # ------------------------------------------------------------- reload
    def reload_if_due(self) -> None:
        """Re-read changed certificate files, at most every ``reload_interval`` seconds."""
        now = self._clock()
        if now < self._next_check:
            return
        self._next_check = now + self._reload_interval
        self.reload()

    def reload(self) -> None:
        """Re-read every certificate file whose stamp changed; keep the old one if the new one is bad."""
        for index, (files, cert) in enumerate(zip(self._files, self._static)):
            if not cert.files_changed():
                continue
            try:
                fresh = load_certificate(files.chain, files.key)
            except CertificateError as exc:
                message = str(exc)
                if self._broken.get(files.chain) != message:  # say it once per distinct problem
                    log.warning("not reloading %s (still serving the previous certificate): %s", files.chain, message)
                    self._broken[files.chain] = message
                continue
            self._broken.pop(files.chain, None)
            self._static[index] = fresh
            log.info(
                "reloaded %s: %s, valid until %s", files.chain, ", ".join(fresh.names), fresh.not_after.isoformat()
            )

"""ClientHello -> SSL context: a challenge answer, a stored certificate, an on-demand one, or a refusal."""

from __future__ import annotations

import ssl

from relay_server.tls.acme.challenges import ACME_TLS_ALPN, Challenges
from relay_server.tls.certstore import CertStore
from relay_server.tls.clienthello import ClientHello
from relay_server.tls.ondemand import CertificateManager


class ContextResolver:
    """Chooses the context for each TLS connection (``TLSSite`` awaits it before the handshake)."""

    def __init__(
        self,
        store: CertStore,
        manager: CertificateManager | None = None,
        challenges: Challenges | None = None,
        *,
        default_names: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.manager = manager
        self.challenges = challenges
        #: Obtained certificates to serve a client that sent no name (tried in order).
        self.default_names = default_names

    async def __call__(self, hello: ClientHello) -> ssl.SSLContext | None:
        """The context for this ClientHello; None when nothing may answer it (the listener refuses it)."""
        name = hello.server_name
        if ACME_TLS_ALPN in hello.alpn:
            # A CA validating TLS-ALPN-01: only the validation certificate may answer.
            return self.challenges.tls_alpn01_context(name) if self.challenges and name else None
        if name is None:
            return self._default()
        if self.manager is not None:
            cert = await self.manager.certificate_for(name)
        else:
            cert = self.store.find(name)
        return cert.context if cert is not None else None

    def _default(self) -> ssl.SSLContext | None:
        cert = self.store.default()
        for name in self.default_names:
            if cert is not None:
                break
            cert = self.store.obtained(name)
        return cert.context if cert is not None else None

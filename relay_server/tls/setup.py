"""``RelayConfig`` -> the TLS parts of a running relay (store, issuer, resolver, site, middleware)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware

from relay_server.app import Relay
from relay_server.config import RelayConfig
from relay_server.tls.acme.challenges import HTTP01, TLS_ALPN01, Challenges
from relay_server.tls.acme.issuer import AcmeIssuer, client_ssl_context
from relay_server.tls.certificate import CertificateError
from relay_server.tls.certstore import CertFiles, CertStore
from relay_server.tls.http01 import tls_middleware
from relay_server.tls.listener import TLSSite
from relay_server.tls.ondemand import CertificateManager, NamesUnder, TunnelHostnames
from relay_server.tls.resolver import ContextResolver
from relay_server.tls.selfsigned import LocalCA
from relay_server.tls.storage import StorageError

log = logging.getLogger("relay_server.tls")


class TLSSetupError(Exception):
    """TLS cannot start with these options; the message is the one line the user sees."""


@dataclass(slots=True)
class TLSRuntime:
    """Everything HTTPS needs while the relay runs."""

    config: RelayConfig
    store: CertStore
    resolver: ContextResolver
    manager: CertificateManager | None = None
    challenges: Challenges | None = None
    local_ca: LocalCA | None = None
    middleware: Middleware | None = None
    prefetch: tuple[str, ...] = ()
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def site(self, runner: web.BaseRunner) -> TLSSite:
        """The TLS listener on ``--host``/``--https-port``."""
        assert self.config.https_port is not None
        config = self.config
        return TLSSite(
            runner, config.host, config.https_port, self.resolver,  # type: ignore[arg-type]
            proxy_from=config.is_trusted_proxy if config.proxy_protocol else None,
            reuse_port=bool(config.cluster),  # --workers: every worker listens on the same port, as on http
        )

    async def start(self) -> None:
        """Serve stored certificates, start the first orders and the renewal loop."""
        if self.manager is None:
            return
        loaded = self.manager.load_saved()
        if loaded:
            log.info("serving %d stored certificate(s) from %s", loaded, self.manager.issuer.certs.root)
        self.manager.prefetch(self.prefetch)
        self._tasks.append(asyncio.create_task(self.manager.run_renewals(), name="certificate renewals"))

    async def close(self) -> None:
        """Stop renewals and orders in progress."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.manager is not None:
            await self.manager.close()


def _challenge_types(config: RelayConfig) -> tuple[str, ...]:
    if config.acme_challenge:
        return (config.acme_challenge,)
    return (HTTP01, TLS_ALPN01) if config.http_port else (TLS_ALPN01,)


def build_tls(config: RelayConfig, relay: Relay) -> TLSRuntime | None:
    """The TLS runtime for ``config`` (None without --https-port); TLSSetupError on bad files or options."""
    if not config.https_port:
        return None
    try:
        store = CertStore([CertFiles(chain, key) for chain, key in config.tls_files])
    except CertificateError as exc:
        raise TLSSetupError(str(exc)) from None
    for cert in store.static():
        if cert.seconds_left() <= 0:
            log.warning("certificate %s expired on %s", cert.chain_path, cert.not_after.isoformat())
    challenges: Challenges | None = None
    manager: CertificateManager | None = None
    local_ca: LocalCA | None = None
    defaults: tuple[str, ...] = (config.domain,)
    try:
        if config.acme_email:
            try:
                ssl_context = client_ssl_context(config.acme_ca)
            except (OSError, ssl.SSLError) as exc:
                reason = getattr(exc, "strerror", None) or exc
                raise TLSSetupError(f"--acme-ca {config.acme_ca}: cannot load it as a CA file: {reason}") from None
            challenges = Challenges()
            issuer = AcmeIssuer(
                config.data_dir,
                config.acme_directory,
                email=config.acme_email,
                ssl_context=ssl_context,
                challenges=challenges,
                challenge_types=_challenge_types(config),
            )
            manager = CertificateManager(store, issuer, TunnelHostnames(config.domain, relay.registry, relay.tokens))
        elif config.self_signed:
            local_ca = LocalCA(config.data_dir, config.domain)
            manager = CertificateManager(store, local_ca, NamesUnder(config.domain))
            defaults = (config.domain, "localhost")
    except StorageError as exc:
        raise TLSSetupError(str(exc)) from None
    middleware = tls_middleware(config, challenges, config.redirect_https) if challenges or config.redirect_https else None
    resolver = ContextResolver(store, manager, challenges, default_names=defaults)
    return TLSRuntime(
        config, store, resolver, manager, challenges, local_ca, middleware, prefetch=defaults if manager else ()
    )

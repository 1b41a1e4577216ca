"""Certificates on demand: which hostnames may get one, one order at a time each, renewal, backoff.

A stranger can send any name in SNI; ordering for it would burn the CA's rate
limits for the relay's domain, so only names a ``HostPolicy`` allows are ever
ordered: for ACME, the base domain and ``NAME.<domain>`` of a live or reserved
tunnel.  Concurrent first handshakes for one name share one order (a task per
name).  A failed order blocks that name for a growing while (``Backoff``),
during which handshakes for it fail at once instead of ordering again.
Certificates are renewed once a third of their lifetime is left.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from relay_server.registry import TunnelRegistry
from relay_server.tls.certificate import Certificate, CertificateError, load_certificate
from relay_server.tls.certstore import CertStore
from relay_server.tls.storage import CertDirectory, CertPaths, StorageError, is_hostname
from relay_server.tokens import TokenStore, TokenStoreError

log = logging.getLogger("relay_server.tls")

#: Renew once less than this share of a certificate's lifetime is left (30 days of Let's Encrypt's 90).
RENEW_FRACTION = 1 / 3

#: Seconds a handshake waits for an order in progress before giving up (the order goes on).
ORDER_WAIT = 60.0

#: First pause after a failed order, doubled after each further failure, capped.
BACKOFF_FIRST = 60.0
BACKOFF_MAX = 6 * 3600.0

#: Bounds of the renewal loop's sleep between checks.
RENEW_CHECK_MIN = 1.0
RENEW_CHECK_MAX = 3600.0

#: Which hostnames may get a certificate.
HostPolicy = Callable[[str], bool]


class Issuer(Protocol):
    """Something that produces certificates: an ACME account, or the local development CA."""

    #: For log lines: "ACME (https://acme-v02.api.letsencrypt.org/directory)", "local CA".
    description: str
    #: Where its certificates are kept.
    certs: CertDirectory

    async def issue(self, hostname: str) -> CertPaths:
        """Obtain a certificate for ``hostname``, store it, and return its files."""

    async def close(self) -> None:
        """Release network resources."""


class OrderFailed(Exception):
    """No certificate for a hostname now; the message says why (the cause is already logged)."""


class IssueError(Exception):
    """An issuer could not produce a certificate; the message is the reason (for the log line)."""


@dataclass(slots=True)
class Backoff:
    """Per-hostname failure count and the time before which no new order is tried."""

    first: float = BACKOFF_FIRST
    cap: float = BACKOFF_MAX
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, int] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)

    def failed(self, hostname: str) -> float:
        """Record a failure; the seconds to wait before the next try."""
        count = self._failures.get(hostname, 0) + 1
        self._failures[hostname] = count
        delay = min(self.cap, self.first * 2 ** (count - 1))
        self._until[hostname] = self.clock() + delay
        return delay

    def succeeded(self, hostname: str) -> None:
        """Forget earlier failures."""
        self._failures.pop(hostname, None)
        self._until.pop(hostname, None)

    def remaining(self, hostname: str) -> float:
        """Seconds until ``hostname`` may be tried again (0 if now)."""
        return max(0.0, self._until.get(hostname, 0.0) - self.clock())

    def waiting(self) -> Iterable[str]:
        """Hostnames currently blocked."""
        return [h for h in self._until if self.remaining(h) > 0]


class TunnelHostnames:
    """ACME policy: the base domain, and ``NAME.<domain>`` when NAME is a live or reserved tunnel."""

    def __init__(self, domain: str, registry: TunnelRegistry, tokens: TokenStore) -> None:
        self.domain = domain
        self.registry = registry
        self.tokens = tokens

    def __call__(self, hostname: str) -> bool:
        """Whether ``hostname`` may get a certificate."""
        if hostname == self.domain:
            return True
        name, dot, rest = hostname.partition(".")
        if not dot or rest != self.domain or not name:
            return False
        if self.registry.lookup(name) is not None:
            return True
        try:
            return self.tokens.reserved_by(name) is not None
        except TokenStoreError:
            return False


class NamesUnder:
    """Local-CA policy: the base domain, any one label under it, and ``localhost``."""

    def __init__(self, domain: str) -> None:
        self.domain = domain

    def __call__(self, hostname: str) -> bool:
        """Whether ``hostname`` may get a certificate."""
        if hostname in (self.domain, "localhost"):
            return True
        name, dot, rest = hostname.partition(".")
        return bool(dot and name and rest == self.domain)


def renew_at(cert: Certificate) -> datetime.datetime:
    """When ``cert`` is due for renewal."""
    return cert.not_after - datetime.timedelta(seconds=cert.lifetime() * RENEW_FRACTION)


class CertificateManager:
    """Obtains, stores and renews certificates for the hostnames its policy allows."""

    def __init__(
        self,
        store: CertStore,
        issuer: Issuer,
        allowed: HostPolicy,
        *,
        order_wait: float = ORDER_WAIT,
        backoff: Backoff | None = None,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.allowed = allowed
        self.order_wait = order_wait
        self.backoff = backoff or Backoff()
        self._orders: dict[str, asyncio.Task[Certificate]] = {}

    def may_order(self, hostname: str) -> bool:
        """Whether ``hostname`` is a name this relay would get a certificate for."""
        return is_hostname(hostname) and not self.store.covered_by_files(hostname) and self.allowed(hostname)

    def load_saved(self) -> int:
        """Serve the certificates kept in the data dir from earlier runs; how many were loaded."""
        loaded = 0
        for hostname in self.issuer.certs.hostnames():
            paths = self.issuer.certs.paths(hostname)
            try:
                cert = load_certificate(paths.chain, paths.key)
            except CertificateError as exc:
                log.warning("ignoring stored certificate for %s: %s", hostname, exc)
                continue
            self.store.put(hostname, cert)
            loaded += 1
        return loaded

    async def certificate_for(self, hostname: str) -> Certificate | None:
        """What to serve for ``hostname`` now, waiting for an order when there is nothing valid yet."""
        cert = self.store.find(hostname)
        if cert is not None and cert.seconds_left() > 0:
            if self.store.obtained(hostname) is cert and renew_at(cert) <= _now() and self.may_order(hostname):
                self._start_order(hostname, quiet=True)  # renew in the background, serve the current one
            return cert
        if not self.may_order(hostname):
            return cert
        try:
            task = self._start_order(hostname)
        except OrderFailed:
            return cert
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.order_wait)
        except (OrderFailed, asyncio.TimeoutError, TimeoutError):
            return cert

    def prefetch(self, hostnames: Iterable[str]) -> None:
        """Start orders for ``hostnames`` that have no valid certificate (the base domain at startup)."""
        for hostname in hostnames:
            cert = self.store.find(hostname)
            if (cert is None or renew_at(cert) <= _now()) and self.may_order(hostname):
                try:
                    self._start_order(hostname, quiet=True)
                except OrderFailed:
                    pass

    def _start_order(self, hostname: str, quiet: bool = False) -> asyncio.Task[Certificate]:
        """The order in progress for ``hostname``, or a new one; OrderFailed while backing off."""
        task = self._orders.get(hostname)
        if task is not None:
            return task
        wait = self.backoff.remaining(hostname)
        if wait > 0:
            raise OrderFailed(f"{hostname}: last order failed; next try in {wait:.0f}s")
        task = asyncio.create_task(self._order(hostname), name=f"certificate {hostname}")
        self._orders[hostname] = task
        task.add_done_callback(lambda t: self._finished(hostname, t, quiet))
        return task

    def _finished(self, hostname: str, task: asyncio.Task[Certificate], quiet: bool) -> None:
        self._orders.pop(hostname, None)
        if quiet and not task.cancelled():
            task.exception()  # already logged in _order; mark it retrieved

    async def _order(self, hostname: str) -> Certificate:
        """One order: issue, load, serve; on failure log, back off and raise OrderFailed."""
        started = time.monotonic()
        log.info("certificate for %s: ordering from %s", hostname, self.issuer.description)
        try:
            paths = await self.issuer.issue(hostname)
            cert = load_certificate(paths.chain, paths.key)
        except asyncio.CancelledError:
            raise
        except (CertificateError, StorageError, OSError, IssueError) as exc:
            delay = self.backoff.failed(hostname)
            log.error("certificate for %s failed: %s; next try in %s", hostname, exc, _duration(delay))
            raise OrderFailed(str(exc)) from None
        except Exception as exc:  # an unexpected bug: same backoff, plus the traceback in the log
            delay = self.backoff.failed(hostname)
            log.exception("certificate for %s failed unexpectedly; next try in %s", hostname, _duration(delay))
            raise OrderFailed(str(exc)) from None
        self.backoff.succeeded(hostname)
        self.store.put(hostname, cert)
        log.info(
            "certificate for %s: issued in %.1fs, valid until %s (renewal from %s)",
            hostname, time.monotonic() - started, cert.not_after.isoformat(), renew_at(cert).isoformat(),
        )
        return cert

    async def run_renewals(self) -> None:
        """Forever: renew obtained certificates when due (for names still allowed); sleep until the next one."""
        while True:
            now = _now()
            sleep = RENEW_CHECK_MAX
            for hostname, cert in self.store.obtained_items():
                due = renew_at(cert)
                if due > now:
                    sleep = min(sleep, (due - now).total_seconds())
                    continue
                if hostname in self._orders or not self.may_order(hostname):
                    continue  # in progress, or no longer a tunnel's name: let it lapse
                wait = self.backoff.remaining(hostname)
                if wait > 0:
                    sleep = min(sleep, wait)
                    continue
                self._start_order(hostname, quiet=True)
            if self._orders:
                sleep = min(sleep, RENEW_CHECK_MIN * 5)
            await asyncio.sleep(min(RENEW_CHECK_MAX, max(RENEW_CHECK_MIN, sleep)))

    async def close(self) -> None:
        """Cancel orders in progress and release the issuer."""
        for task in list(self._orders.values()):
            task.cancel()
        for task in list(self._orders.values()):
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.issuer.close()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"

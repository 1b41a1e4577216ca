"""On-demand certificates with a fake issuer: one order per name, the policy, backoff, renewal."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import pytest

from relay_server.tls.certstore import CertFiles, CertStore
from relay_server.tls.ondemand import Backoff, CertificateManager, IssueError, NamesUnder, TunnelHostnames, renew_at
from relay_server.tls.storage import CertDirectory, CertPaths
from relay_server.tokens import TokenStore

from tls.support.pki import LocalPKI


class FakeIssuer:
    """Issues from the test PKI after ``gate`` opens; counts orders; fails while ``failing``."""

    description = "a fake CA"

    def __init__(self, pki: LocalPKI, folder: Path, lifetime: datetime.timedelta = datetime.timedelta(days=90)) -> None:
        self.pki = pki
        self.certs = CertDirectory(folder)
        self.lifetime = lifetime
        self.orders: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def issue(self, hostname: str) -> CertPaths:
        self.orders.append(hostname)
        await self.gate.wait()
        if self.failing:
            raise IssueError("the CA said no")
        now = datetime.datetime.now(datetime.timezone.utc)
        files = self.pki.issue(hostname, not_before=now - self.lifetime / 2, not_after=now + self.lifetime / 2)
        return self.certs.save(hostname, files.chain.read_bytes(), files.key.read_bytes())

    async def close(self) -> None:
        pass


class Clock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allow_all(hostname: str) -> bool:
    return True


async def test_concurrent_first_requests_for_one_name_share_one_order(pki: LocalPKI, tmp_path: Path) -> None:
    issuer = FakeIssuer(pki, tmp_path / "certs")
    issuer.gate.clear()
    manager = CertificateManager(CertStore(), issuer, allow_all)

    waiting = [asyncio.create_task(manager.certificate_for("demo.example.com")) for _ in range(10)]
    await asyncio.sleep(0.05)
    issuer.gate.set()
    certs = await asyncio.gather(*waiting)

    assert issuer.orders == ["demo.example.com"]
    assert len({id(c) for c in certs}) == 1 and certs[0].names == ("demo.example.com",)
    assert manager.store.obtained("demo.example.com") is certs[0]


async def test_a_name_the_policy_refuses_is_never_ordered(pki: LocalPKI, tmp_path: Path) -> None:
    issuer = FakeIssuer(pki, tmp_path / "certs")
    manager = CertificateManager(CertStore(), issuer, lambda name: name == "ok.example.com")

    assert await manager.certificate_for("stranger.example.com") is None
    assert await manager.certificate_for("../../etc.example.com") is None
    assert issuer.orders == []


async def test_a_name_covered_by_a_certificate_file_is_never_ordered(pki: LocalPKI, tmp_path: Path) -> None:
    wildcard = pki.issue("*.example.com")
    issuer = FakeIssuer(pki, tmp_path / "certs")
    manager = CertificateManager(CertStore([CertFiles(wildcard.chain, wildcard.key)]), issuer, allow_all)

    cert = await manager.certificate_for("demo.example.com")

    assert cert is not None and cert.serial == wildcard.serial
    assert issuer.orders == []


async def test_a_failed_order_backs_off_and_is_tried_again_only_after_the_pause(
    pki: LocalPKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    issuer = FakeIssuer(pki, tmp_path / "certs")
    issuer.failing = True
    manager = CertificateManager(CertStore(), issuer, allow_all, backoff=Backoff(first=60, cap=600, clock=clock))

    assert await manager.certificate_for("demo.example.com") is None
    assert await manager.certificate_for("demo.example.com") is None
    assert issuer.orders == ["demo.example.com"]
    assert any("certificate for demo.example.com failed: the CA said no; next try in 60s" in r.getMessage() for r in caplog.records)

    clock.now += 61
    issuer.failing = False
    cert = await manager.certificate_for("demo.example.com")

    assert cert is not None
    assert issuer.orders == ["demo.example.com", "demo.example.com"]
    assert manager.backoff.remaining("demo.example.com") == 0


def test_backoff_doubles_after_each_failure_up_to_its_cap() -> None:
    clock = Clock()
    backoff = Backoff(first=60, cap=300, clock=clock)

    delays = [backoff.failed("a.example.com") for _ in range(5)]

    assert delays == [60, 120, 240, 300, 300]
    assert backoff.remaining("b.example.com") == 0
    backoff.succeeded("a.example.com")
    assert backoff.failed("a.example.com") == 60


async def test_a_certificate_due_for_renewal_is_served_while_its_successor_is_ordered(pki: LocalPKI, tmp_path: Path) -> None:
    issuer = FakeIssuer(pki, tmp_path / "certs", lifetime=datetime.timedelta(days=90))
    manager = CertificateManager(CertStore(), issuer, allow_all)
    now = datetime.datetime.now(datetime.timezone.utc)
    # 90 days of life, 20 left: past the renewal point (a third left).
    old = pki.issue("demo.example.com", not_before=now - datetime.timedelta(days=70), not_after=now + datetime.timedelta(days=20))
    paths = issuer.certs.save("demo.example.com", old.chain.read_bytes(), old.key.read_bytes())
    assert manager.load_saved() == 1
    assert renew_at(manager.store.obtained("demo.example.com")) < now
    issuer.gate.clear()

    served = await manager.certificate_for("demo.example.com")
    assert served.serial == old.serial
    issuer.gate.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if manager.store.obtained("demo.example.com").serial != old.serial:
            break

    assert issuer.orders == ["demo.example.com"]
    assert manager.store.obtained("demo.example.com").serial != old.serial
    assert paths.chain.read_bytes() != old.chain.read_bytes()


async def test_the_renewal_loop_renews_what_is_due_and_lets_names_no_longer_allowed_lapse(pki: LocalPKI, tmp_path: Path) -> None:
    allowed = {"kept.example.com"}
    issuer = FakeIssuer(pki, tmp_path / "certs")
    manager = CertificateManager(CertStore(), issuer, lambda name: name in allowed)
    now = datetime.datetime.now(datetime.timezone.utc)
    for name in ("kept.example.com", "gone.example.com"):
        due = pki.issue(name, not_before=now - datetime.timedelta(days=80), not_after=now + datetime.timedelta(days=10))
        issuer.certs.save(name, due.chain.read_bytes(), due.key.read_bytes())
    manager.load_saved()

    loop = asyncio.create_task(manager.run_renewals())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if issuer.orders and not manager._orders:
                break
    finally:
        loop.cancel()
        await manager.close()

    assert issuer.orders == ["kept.example.com"]


def test_the_acme_policy_allows_the_base_domain_and_live_or_reserved_tunnel_names_only(tmp_path: Path) -> None:
    class Registry:
        def lookup(self, name: str) -> object | None:
            return object() if name == "live" else None

    tokens = TokenStore(tmp_path)
    tokens.create(subdomain="booked")
    policy = TunnelHostnames("example.com", Registry(), tokens)  # type: ignore[arg-type]

    assert policy("example.com")
    assert policy("live.example.com")
    assert policy("booked.example.com")
    assert not policy("other.example.com")
    assert not policy("a.live.example.com")
    assert not policy("live.example.org")
    assert not policy("localhost")


def test_the_local_ca_policy_allows_any_one_label_under_the_domain_and_localhost() -> None:
    policy = NamesUnder("dev.test")

    assert policy("dev.test") and policy("x.dev.test") and policy("localhost")
    assert not policy("a.b.dev.test") and not policy("example.com")

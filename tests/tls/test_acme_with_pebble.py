"""Automatic certificates against Pebble (the ACME test server) on 127.0.0.1.

Pebble validates HTTP-01 on the relay's HTTP port and TLS-ALPN-01 on its TLS
port, resolving every name to 127.0.0.1 through the tests' loopback DNS.
Certificates it issues chain to a root fetched from its management port; the
HTTPS requests trust only that root, so they also prove the full chain is sent.
"""

from __future__ import annotations

import json
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.localrelay import Origin, create_token, wait_until
from support.ports import free_port
from support.processes import ProcessGroup

from tls.support.dns import LoopbackDNS
from tls.support.https import dns_names, handshake_error, https_get
from tls.support.pebble import Pebble, skip_reason, start_pebble
from tls.support.pki import LocalPKI
from tls.support.relays import TLSRelay, count_lines, start_tls_agent, start_tls_relay

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

#: Seconds an on-demand order may take against Pebble (it validates at once with PEBBLE_VA_NOSLEEP).
ORDER_DEADLINE = 45.0


@dataclass
class AcmeSetup:
    """Pebble and a relay getting certificates from it."""

    pebble: Pebble
    relay: TLSRelay
    root: Path


def _start(
    processes: ProcessGroup,
    dns: LoopbackDNS,
    pki: LocalPKI,
    data_dir: Path,
    tmp_path: Path,
    *extra: str,
    validity_seconds: int | None = None,
    pebble_http_port: int | None = None,
) -> AcmeSetup:
    http_port, https_port = free_port(), free_port()
    server = pki.issue("localhost", "127.0.0.1")
    pebble = start_pebble(
        processes, tmp_path, server_cert=(server.chain, server.key, pki.root_file), dns=dns,
        http_port=pebble_http_port or http_port, tls_port=https_port, validity_seconds=validity_seconds,
    )
    relay = start_tls_relay(
        processes, data_dir,
        "--acme-email", "relay-admin@example.com", "--acme-directory", pebble.directory, "--acme-ca", str(pki.root_file),
        *extra, http_port=http_port, https_port=https_port,
    )
    return AcmeSetup(pebble, relay, pebble.write_root(tmp_path / "pebble-root.pem"))


def _orders(relay: TLSRelay, hostname: str) -> int:
    return count_lines(relay.process, rf"certificate for {hostname.replace('.', '[.]')}: ordering")


def _issued(relay: TLSRelay, hostname: str) -> int:
    return count_lines(relay.process, rf"certificate for {hostname.replace('.', '[.]')}: issued")


def test_a_tunnel_hostname_gets_a_certificate_on_its_first_request_and_concurrent_firsts_share_one_order(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path)
    start_tls_agent(processes, acme.relay.server_url, str(origin.port), acme.relay.token, cacert=acme.root, subdomain="demo")
    assert _orders(acme.relay, "demo.localhost") == 0  # nothing is ordered before someone asks

    results: list[object] = [None] * 5

    def fetch(index: int) -> None:
        try:
            results[index] = https_get(acme.relay.https_port, "demo.localhost", f"/first/{index}", cafile=acme.root)
        except Exception as exc:  # reported below with the others
            results[index] = exc

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(ORDER_DEADLINE)

    for index, response in enumerate(results):
        assert not isinstance(response, Exception) and response is not None, f"request {index}: {response!r}\n{acme.relay.stderr()}"
        assert response.status == 200
        assert json.loads(response.body)["raw_path"] == f"/first/{index}"
        assert dns_names(response.certificate) == ["demo.localhost"]
    assert _orders(acme.relay, "demo.localhost") == 1, acme.relay.stderr()
    assert _issued(acme.relay, "demo.localhost") == 1


def test_a_hostname_without_a_tunnel_gets_no_order(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path)

    for name in ("ghost.localhost", "www.example.com", "a.b.localhost"):
        error = handshake_error(acme.relay.https_port, name)
        assert "UNRECOGNIZED_NAME" in str(error).upper()
        assert _orders(acme.relay, name) == 0, acme.relay.stderr()
    certs = list(data_dir.glob("tls/acme/*/certs/*"))
    assert all(path.name == "localhost" for path in certs), certs  # at most the base domain's
    assert acme.relay.process.returncode is None


def test_a_reserved_name_gets_a_certificate_while_its_agent_is_offline(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path)
    create_token(data_dir, "--subdomain", "reserved")

    response = https_get(acme.relay.https_port, "reserved.localhost", "/", cafile=acme.root)

    assert response.status == 502  # tunnel offline page, served over a real certificate
    assert dns_names(response.certificate) == ["reserved.localhost"]


def test_the_base_domain_is_ordered_at_startup_and_agents_connect_over_wss_with_it(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path)
    wait_until(lambda: _issued(acme.relay, "localhost") == 1, ORDER_DEADLINE, message="base domain certificate issued")

    agent = start_tls_agent(processes, acme.relay.server_url, str(origin.port), acme.relay.token, cacert=acme.root)

    assert agent.public_url.startswith("https://") and agent.public_url.endswith(f".localhost:{acme.relay.https_port}")
    folder = next(data_dir.glob("tls/acme/*"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "account-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "certs" / "localhost" / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "certs" / "localhost").stat().st_mode) == 0o700


def test_a_short_lived_certificate_is_renewed_before_it_expires(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path, validity_seconds=12)
    start_tls_agent(processes, acme.relay.server_url, str(origin.port), acme.relay.token, cacert=acme.root, subdomain="brief")
    first = https_get(acme.relay.https_port, "brief.localhost", "/", cafile=acme.root).certificate

    # Renewal starts with a third of the 12 s left, so a second certificate arrives before the first expires.
    wait_until(lambda: _issued(acme.relay, "brief.localhost") >= 2, 30, interval=0.25, message="renewal")
    second = https_get(acme.relay.https_port, "brief.localhost", "/renewed", cafile=acme.root)

    assert second.status == 200
    assert second.certificate.serial_number != first.serial_number
    assert second.certificate.not_valid_after_utc > first.not_valid_after_utc


def test_tls_alpn_01_validation_on_the_tls_port_gets_a_certificate(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path, "--acme-challenge", "tls-alpn-01", "--log-level", "debug")
    start_tls_agent(processes, acme.relay.server_url, str(origin.port), acme.relay.token, cacert=acme.root, subdomain="alpn")

    response = https_get(acme.relay.https_port, "alpn.localhost", "/", cafile=acme.root)

    assert response.status == 200
    assert count_lines(acme.relay.process, r"answering tls-alpn-01 for alpn[.]localhost") == 1


def test_a_failed_validation_is_logged_and_backed_off_instead_of_reordered(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    # Pebble validates HTTP-01 on a port where nothing listens, so every order fails.
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path, pebble_http_port=free_port())
    start_tls_agent(processes, f"http://localhost:{acme.relay.http_port}", str(origin.port), acme.relay.token, subdomain="unlucky")

    first = handshake_error(acme.relay.https_port, "unlucky.localhost")
    second = handshake_error(acme.relay.https_port, "unlucky.localhost")

    assert "UNRECOGNIZED_NAME" in str(first).upper() and "UNRECOGNIZED_NAME" in str(second).upper()
    failures = [line for line in acme.relay.process.lines["stderr"] if "certificate for unlucky.localhost failed" in line]
    assert len(failures) == 1 and "next try in 60s" in failures[0], acme.relay.stderr()
    assert _orders(acme.relay, "unlucky.localhost") == 1
    assert acme.relay.process.returncode is None


def test_stored_certificates_are_served_after_a_restart_without_a_new_order(
    processes: ProcessGroup, loopback_dns: LoopbackDNS, pki: LocalPKI, data_dir: Path, tmp_path: Path, origin: Origin
) -> None:
    acme = _start(processes, loopback_dns, pki, data_dir, tmp_path)
    agent = start_tls_agent(processes, acme.relay.server_url, str(origin.port), acme.relay.token, cacert=acme.root, subdomain="kept")
    before = https_get(acme.relay.https_port, "kept.localhost", "/", cafile=acme.root).certificate
    agent.process.stop()
    acme.relay.process.stop()

    again = start_tls_relay(
        processes, data_dir,
        "--acme-email", "relay-admin@example.com", "--acme-directory", acme.pebble.directory, "--acme-ca", str(pki.root_file),
        http_port=acme.relay.http_port, https_port=acme.relay.https_port, expect_paste_line=False,
    )
    after = https_get(again.https_port, "kept.localhost", "/", cafile=acme.root)

    assert after.status == 502  # no agent now; the name's stored certificate still answers
    assert after.certificate.serial_number == before.serial_number
    assert _orders(again, "kept.localhost") == 0

"""HTTPS end to end with certificate files made in the test: relay and agent processes, agent over wss://."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
from pathlib import Path

from support.localrelay import Origin, wait_until
from support.ports import LOOPBACK
from support.processes import ProcessGroup, python_module

from tls.support.pki import DOMAIN, LocalPKI
from tls.support.https import KeepAliveConnection, handshake_error, handshake_in_pieces, https_get, served_certificate
from tls.support.relays import TLSRelay, start_tls_agent, start_tls_relay

#: Seconds a replaced certificate file may take to be served.
RELOAD_DEADLINE = 10.0


def _relay_with_files(processes: ProcessGroup, data_dir: Path, *pairs, extra: tuple[str, ...] = ()) -> TLSRelay:
    options: list[str] = ["--domain", DOMAIN]
    for files in pairs:
        options += ["--tls-cert", str(files.chain), "--tls-key", str(files.key)]
    return start_tls_relay(processes, data_dir, *options, *extra)


def _echo(body: bytes) -> dict:
    return json.loads(body)


def _header(echo: dict, name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def test_public_https_request_reaches_the_local_server_through_an_agent_on_wss(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI, origin: Origin
) -> None:
    wildcard = pki.issue(f"*.{DOMAIN}", DOMAIN)
    relay = _relay_with_files(processes, data_dir, wildcard)
    assert relay.server_url == f"https://{DOMAIN}:{relay.https_port}"
    agent = start_tls_agent(processes, relay.server_url, str(origin.port), relay.token, cacert=pki.root_file, subdomain="demo")
    assert agent.public_url == f"https://demo.{DOMAIN}:{relay.https_port}"

    response = https_get(relay.https_port, f"demo.{DOMAIN}", "/some/path?x=1", cafile=pki.root_file)

    assert response.status == 200
    echo = _echo(response.body)
    assert echo["raw_path"] == "/some/path?x=1"
    assert _header(echo, "X-Forwarded-Proto") == ["https"]
    assert _header(echo, "X-Forwarded-Host") == [f"demo.{DOMAIN}:{relay.https_port}"]
    assert response.certificate.serial_number == wildcard.serial
    assert "tunnel demo connected" in relay.stderr()


def test_plain_http_requests_still_say_http_in_x_forwarded_proto(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI, origin: Origin
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))
    start_tls_agent(processes, relay.server_url, str(origin.port), relay.token, cacert=pki.root_file, subdomain="plain")
    conn = http.client.HTTPConnection(LOOPBACK, relay.http_port, timeout=10)
    try:
        conn.request("GET", "/p", headers={"Host": f"plain.{DOMAIN}"})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert _header(_echo(body), "X-Forwarded-Proto") == ["http"]


def test_sni_picks_the_exact_certificate_before_the_wildcard_and_the_bare_domain_its_own(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    wildcard = pki.issue(f"*.{DOMAIN}")
    special = pki.issue(f"special.{DOMAIN}")
    bare = pki.issue(DOMAIN)
    relay = _relay_with_files(processes, data_dir, wildcard, special, bare)

    assert served_certificate(relay.https_port, f"special.{DOMAIN}").serial_number == special.serial
    assert served_certificate(relay.https_port, f"other.{DOMAIN}").serial_number == wildcard.serial
    assert served_certificate(relay.https_port, DOMAIN).serial_number == bare.serial
    health = https_get(relay.https_port, DOMAIN, "/_relay/health", cafile=pki.root_file)
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"


def test_a_certificate_given_as_one_file_with_its_key_is_served(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    files = pki.issue(f"*.{DOMAIN}", DOMAIN)
    combined = files.chain.with_name("combined.pem")
    combined.write_bytes(files.chain.read_bytes() + files.key.read_bytes())
    relay = start_tls_relay(processes, data_dir, "--domain", DOMAIN, "--tls-cert", str(combined))

    response = https_get(relay.https_port, DOMAIN, "/_relay/health", cafile=pki.root_file)

    assert response.status == 200
    assert response.certificate.serial_number == files.serial


def test_a_replaced_certificate_file_is_served_without_restart_and_open_connections_survive(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    first = pki.issue(f"*.{DOMAIN}", DOMAIN)
    relay = _relay_with_files(processes, data_dir, first)
    kept = KeepAliveConnection(relay.https_port, DOMAIN, pki.root_file)
    try:
        assert kept.get("/_relay/health")[0] == 200
        # Replace the files the way tools do: write new files, rename over the old ones.
        second = pki.issue(f"*.{DOMAIN}", DOMAIN)
        os.replace(second.key, first.key)
        os.replace(second.chain, first.chain)

        def new_one_served() -> bool:
            return served_certificate(relay.https_port, DOMAIN).serial_number == second.serial

        wait_until(new_one_served, RELOAD_DEADLINE, interval=0.2, message="the replaced certificate served")
        assert https_get(relay.https_port, f"x.{DOMAIN}", "/", cafile=pki.root_file).status == 502  # no such tunnel
        status, body = kept.get("/_relay/health")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert kept.certificate.serial_number == first.serial
    finally:
        kept.close()
    assert relay.process.returncode is None
    assert "reloaded" in relay.stderr()


def test_a_half_replaced_pair_keeps_the_old_certificate_until_the_key_arrives(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    first = pki.issue(f"*.{DOMAIN}", DOMAIN)
    relay = _relay_with_files(processes, data_dir, first)
    second = pki.issue(f"*.{DOMAIN}", DOMAIN)
    os.replace(second.chain, first.chain)  # the new certificate, still the old key

    time.sleep(1.5)  # past the reload interval: the relay has looked and refused the pair
    assert served_certificate(relay.https_port, DOMAIN).serial_number == first.serial
    assert https_get(relay.https_port, DOMAIN, "/_relay/health", cafile=pki.root_file).status == 200

    os.replace(second.key, first.key)
    wait_until(
        lambda: served_certificate(relay.https_port, DOMAIN).serial_number == second.serial,
        RELOAD_DEADLINE, interval=0.2, message="the completed pair served",
    )
    assert "does not match" in relay.stderr()


def test_an_unknown_server_name_fails_the_handshake_and_the_relay_keeps_serving(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))

    error = handshake_error(relay.https_port, "stranger.example.com")

    assert "UNRECOGNIZED_NAME" in str(error).upper()
    assert relay.process.returncode is None
    assert https_get(relay.https_port, f"demo.{DOMAIN}", "/", cafile=pki.root_file).status == 502


def test_a_client_without_sni_gets_the_first_certificate(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    first = pki.issue(f"*.{DOMAIN}", DOMAIN)
    relay = _relay_with_files(processes, data_dir, first, pki.issue(f"special.{DOMAIN}"))

    assert served_certificate(relay.https_port, None).serial_number == first.serial


def test_plain_http_sent_to_the_tls_port_gets_a_readable_400(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))
    conn = http.client.HTTPConnection(LOOPBACK, relay.https_port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Host": DOMAIN})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    assert response.status == 400
    assert b"https://" in body


def test_redirect_https_sends_tunnel_requests_on_plain_http_to_https(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN), extra=("--redirect-https",))
    conn = http.client.HTTPConnection(LOOPBACK, relay.http_port, timeout=10)
    try:
        conn.request("POST", "/submit?a=1", body=b"x", headers={"Host": f"demo.{DOMAIN}:{relay.http_port}"})
        response = conn.getresponse()
        response.read()
        conn.request("GET", "/_relay/health", headers={"Host": DOMAIN})
        health = conn.getresponse()
        health.read()
    finally:
        conn.close()
    assert response.status == 308
    assert response.getheader("Location") == f"https://demo.{DOMAIN}:{relay.https_port}/submit?a=1"
    assert health.status == 200  # the relay's own endpoints stay on plain HTTP


def test_the_agent_refuses_a_relay_certificate_it_does_not_trust_with_one_clear_line(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI, origin: Origin
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))
    agent = processes.start(
        "untrusting-agent",
        python_module("relay_client", "http", str(origin.port), "--server", relay.server_url, "--token", relay.token),
    )
    code = agent.wait_exit(30)
    output = agent.output()
    errors = [line for line in agent.lines["stderr"] if line.startswith("relay-client: error:")]
    assert code != 0, output
    assert len(errors) == 1 and "--cacert" in errors[0], output
    assert "Traceback" not in output


def test_a_client_hello_arriving_in_several_packets_is_still_answered(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))

    version = handshake_in_pieces(relay.https_port, f"demo.{DOMAIN}", pki.root_file, cuts=(3, 60))

    assert version in ("TLSv1.2", "TLSv1.3")


def test_a_client_that_leaves_in_the_middle_of_its_hello_does_not_disturb_the_relay(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    relay = _relay_with_files(processes, data_dir, pki.issue(f"*.{DOMAIN}", DOMAIN))
    for _ in range(20):
        with socket.create_connection((LOOPBACK, relay.https_port), timeout=5) as raw:
            raw.sendall(b"\x16\x03\x01\x02\x00\x01\x00")  # announces 512 bytes, sends 2

    assert https_get(relay.https_port, DOMAIN, "/_relay/health", cafile=pki.root_file).status == 200
    assert relay.process.returncode is None

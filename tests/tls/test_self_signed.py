"""``relay-server serve --self-signed``: a local CA in the data dir, a certificate per NAME.localhost."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from support.localrelay import Origin
from support.processes import ProcessGroup

from tls.support.https import handshake_error, https_get
from tls.support.relays import start_tls_relay, start_tls_agent

#: ``Self-signed HTTPS: local CA /path/ca.pem (try: curl --cacert /path/ca.pem https://NAME.localhost:PORT/)``
CA_LINE = r"^Self-signed HTTPS: local CA (\S+) \(try: curl --cacert \S+ https://NAME\.localhost:(\d+)/\)$"


def test_self_signed_prints_the_ca_path_and_any_name_localhost_verifies_with_it(
    processes: ProcessGroup, data_dir: Path
) -> None:
    relay = start_tls_relay(processes, data_dir, "--self-signed")
    match = relay.process.wait_for_line(CA_LINE, timeout=5)
    ca = Path(match.group(1))
    assert int(match.group(2)) == relay.https_port
    assert ca == data_dir / "tls" / "local-ca" / "ca.pem"
    assert relay.cacert == str(ca)  # the first-start paste line carries --cacert too

    for name in ("alpha.localhost", "beta.localhost"):
        response = https_get(relay.https_port, name, "/", cafile=ca)
        assert response.status == 502  # no tunnel by that name: the relay's page, over verified TLS
    health = https_get(relay.https_port, "localhost", "/_relay/health", cafile=ca)
    assert json.loads(health.body)["status"] == "ok"
    key_mode = stat.S_IMODE((data_dir / "tls" / "local-ca" / "ca-key.pem").stat().st_mode)
    assert key_mode == 0o600


def test_the_paste_line_of_a_self_signed_relay_connects_an_agent_over_wss(
    processes: ProcessGroup, data_dir: Path, origin: Origin
) -> None:
    relay = start_tls_relay(processes, data_dir, "--self-signed")
    assert relay.server_url == f"https://localhost:{relay.https_port}"

    agent = start_tls_agent(processes, relay.server_url, str(origin.port), relay.token, cacert=relay.cacert, subdomain="dev")
    response = https_get(relay.https_port, "dev.localhost", "/from-https", cafile=Path(relay.cacert))

    assert agent.public_url == f"https://dev.localhost:{relay.https_port}"
    assert response.status == 200
    assert json.loads(response.body)["raw_path"] == "/from-https"


def test_the_local_ca_is_kept_across_restarts(processes: ProcessGroup, data_dir: Path) -> None:
    first = start_tls_relay(processes, data_dir, "--self-signed")
    ca_before = (data_dir / "tls" / "local-ca" / "ca.pem").read_bytes()
    first.process.stop()
    second = start_tls_relay(processes, data_dir, "--self-signed", expect_paste_line=False)

    assert (data_dir / "tls" / "local-ca" / "ca.pem").read_bytes() == ca_before
    ca = data_dir / "tls" / "local-ca" / "ca.pem"
    assert https_get(second.https_port, "again.localhost", "/", cafile=ca).status == 502


def test_names_outside_the_domain_get_no_certificate_from_the_local_ca(processes: ProcessGroup, data_dir: Path) -> None:
    relay = start_tls_relay(processes, data_dir, "--self-signed")

    error = handshake_error(relay.https_port, "www.example.com")

    assert "UNRECOGNIZED_NAME" in str(error).upper()
    assert not (data_dir / "tls" / "local-ca" / "certs" / "www.example.com").exists()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl not installed")
def test_curl_with_the_printed_ca_reaches_name_localhost(processes: ProcessGroup, data_dir: Path) -> None:
    relay = start_tls_relay(processes, data_dir, "--self-signed")
    ca = data_dir / "tls" / "local-ca" / "ca.pem"
    url = f"https://demo.localhost:{relay.https_port}/_relay/health"

    result = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca),
         "--resolve", f"demo.localhost:{relay.https_port}:127.0.0.1", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True, text=True, timeout=20, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == "502"  # demo.localhost is a tunnel name with no agent: the relay answered over TLS

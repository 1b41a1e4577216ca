"""Bad TLS inputs stop ``relay-server serve`` with one clear stderr line and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from support.ports import LOOPBACK
from support.processes import ProcessGroup

from tls.support.pki import DOMAIN, LocalPKI
from tls.support.relays import run_relay_to_exit


def _refusal(processes: ProcessGroup, data_dir: Path, *options: str) -> tuple[int, str]:
    code, stderr, output = run_relay_to_exit(processes, data_dir, *options)
    errors = [line for line in stderr if line.startswith("relay-server: error:")]
    assert code != 0, output
    assert len(errors) == 1, output
    assert "Traceback" not in output, output
    return code, errors[0]


def test_a_garbage_certificate_file_is_a_clear_startup_error(processes: ProcessGroup, data_dir: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "cert.pem"
    garbage.write_text("this is not a certificate\n")
    key = tmp_path / "key.pem"
    key.write_text("nor is this a key\n")

    _, line = _refusal(processes, data_dir, "--https-port", "1", "--tls-cert", str(garbage), "--tls-key", str(key))

    assert str(garbage) in line and "no PEM certificate" in line
    assert not (data_dir / "tokens.json").exists()  # nothing was set up for a relay that never ran


def test_a_key_that_does_not_match_the_certificate_is_a_clear_startup_error(
    processes: ProcessGroup, data_dir: Path, pki: LocalPKI
) -> None:
    one = pki.issue(DOMAIN)
    other = pki.issue(DOMAIN)

    _, line = _refusal(processes, data_dir, "--https-port", "1", "--tls-cert", str(one.chain), "--tls-key", str(other.key))

    assert str(other.key) in line and "does not match" in line


def test_a_garbage_key_file_is_a_clear_startup_error(processes: ProcessGroup, data_dir: Path, pki: LocalPKI, tmp_path: Path) -> None:
    cert = pki.issue(DOMAIN)
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")

    _, line = _refusal(processes, data_dir, "--https-port", "1", "--tls-cert", str(cert.chain), "--tls-key", str(key))

    assert str(key) in line and "private key" in line


def test_a_missing_certificate_file_is_a_clear_startup_error(processes: ProcessGroup, data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"

    _, line = _refusal(processes, data_dir, "--https-port", "1", "--tls-cert", str(missing))

    assert str(missing) in line and "cannot read" in line


def test_an_https_port_in_use_is_a_clear_startup_error(processes: ProcessGroup, data_dir: Path, pki: LocalPKI) -> None:
    cert = pki.issue(DOMAIN)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]

        _, line = _refusal(
            processes, data_dir, "--host", LOOPBACK, "--https-port", str(port),
            "--tls-cert", str(cert.chain), "--tls-key", str(cert.key),
        )

    assert f"cannot listen on {LOOPBACK}:{port}" in line and "in use" in line


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (("--https-port", "8443"), "needs certificates"),
        (("--tls-cert", "x.pem"), "need --https-port"),
        (("--self-signed", "--acme-email", "a@example.com"), "exclude each other"),
        (("--https-port", "8443", "--acme-email", "not-an-address"), "--acme-email"),
        (("--https-port", "8443", "--acme-email", "a@example.com", "--acme-directory", "ftp://x"), "--acme-directory"),
        (("--redirect-https",), "--redirect-https"),
        (("--self-signed", "--acme-challenge", "dns-01"), "--acme-challenge"),
    ],
    ids=["https-port-alone", "cert-without-port", "two-sources", "bad-email", "bad-directory", "redirect-alone", "bad-challenge"],
)
def test_tls_options_that_do_not_fit_together_are_refused_with_the_option_named(
    processes: ProcessGroup, data_dir: Path, options: tuple[str, ...], words: str
) -> None:
    code, line = _refusal(processes, data_dir, *options)

    assert code == 2
    assert words in line


def test_an_unreadable_acme_ca_file_is_a_clear_startup_error(processes: ProcessGroup, data_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("garbage\n")

    _, line = _refusal(
        processes, data_dir, "--https-port", "1", "--acme-email", "a@example.com",
        "--acme-directory", "https://127.0.0.1:1/dir", "--acme-ca", str(bogus),
    )

    assert "--acme-ca" in line and str(bogus) in line

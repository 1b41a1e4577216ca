"""Certificate files: checks with clear messages, selection by name, reload when the files change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay_server.tls.certificate import CertificateError, covers, load_certificate
from relay_server.tls.certstore import CertFiles, CertStore

from tls.support.pki import LocalPKI


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_wildcard_covers_one_label_only() -> None:
    names = ("*.example.com",)
    assert covers(names, "a.example.com")
    assert not covers(names, "example.com")
    assert not covers(names, "a.b.example.com")
    assert not covers(names, "aexample.com")


def test_a_loaded_certificate_knows_its_names_and_dates(pki: LocalPKI) -> None:
    files = pki.issue("*.example.com", "example.com")

    cert = load_certificate(files.chain, files.key)

    assert cert.names == ("*.example.com", "example.com")
    assert cert.serial == files.serial
    assert cert.seconds_left() > 0
    assert not cert.files_changed()


def test_a_key_from_another_pair_is_refused_naming_the_key_file(pki: LocalPKI) -> None:
    one, other = pki.issue("a.example.com"), pki.issue("a.example.com")

    with pytest.raises(CertificateError, match="does not match") as caught:
        load_certificate(one.chain, other.key)
    assert str(other.key) in str(caught.value)


def test_an_encrypted_key_is_refused_with_a_hint(pki: LocalPKI, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    files = pki.issue("a.example.com")
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
        )
    )

    with pytest.raises(CertificateError, match="encrypted"):
        load_certificate(files.chain, locked)


def test_the_store_prefers_an_exact_name_over_a_wildcard_and_knows_nothing_else(pki: LocalPKI) -> None:
    wildcard, exact = pki.issue("*.example.com"), pki.issue("special.example.com")
    store = CertStore([CertFiles(wildcard.chain, wildcard.key), CertFiles(exact.chain, exact.key)])

    assert store.find("special.example.com").serial == exact.serial
    assert store.find("other.example.com").serial == wildcard.serial
    assert store.find("example.org") is None
    assert store.default().serial == wildcard.serial
    assert store.covered_by_files("x.example.com") and not store.covered_by_files("example.com")


def test_changed_files_are_reloaded_at_most_once_per_interval(pki: LocalPKI) -> None:
    clock = Clock()
    first = pki.issue("example.com")
    store = CertStore([CertFiles(first.chain, first.key)], reload_interval=1.0, clock=clock)
    second = pki.issue("example.com")
    os.replace(second.key, first.key)
    os.replace(second.chain, first.chain)

    assert store.find("example.com").serial == first.serial  # not yet due for a look
    clock.now += 1.0
    assert store.find("example.com").serial == second.serial


def test_a_broken_replacement_keeps_the_previous_certificate_in_service(pki: LocalPKI, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    first = pki.issue("example.com")
    store = CertStore([CertFiles(first.chain, first.key)], clock=clock)
    first.chain.write_text("half-written garbage")

    clock.now += 5
    assert store.find("example.com").serial == first.serial
    clock.now += 5
    assert store.find("example.com").serial == first.serial
    warnings = [r for r in caplog.records if "not reloading" in r.getMessage()]
    assert len(warnings) == 1  # said once, not at every handshake

"""Fixtures of the TLS tests: a test PKI, an origin, process groups, a loopback DNS for Pebble."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS_DIR = str(Path(__file__).resolve().parents[1])
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

pytest.importorskip("trustme")

from support.localrelay import Origin, start_origin  # noqa: E402
from support.processes import ProcessGroup  # noqa: E402

from tls.support.dns import LoopbackDNS  # noqa: E402
from tls.support.pki import LocalPKI  # noqa: E402


@pytest.fixture
def pki(tmp_path: Path) -> LocalPKI:
    """A fresh test PKI in this test's temporary folder."""
    folder = tmp_path / "pki"
    folder.mkdir()
    return LocalPKI(folder)




@pytest.fixture(scope="session")
def origin(session_processes: ProcessGroup) -> Origin:
    """The local server behind the tunnels (describes each request back as JSON)."""
    return start_origin(session_processes)


@pytest.fixture(scope="session")
def loopback_dns() -> Iterator[LoopbackDNS]:
    """A DNS responder answering 127.0.0.1 for every name (Pebble validates through it)."""
    dns = LoopbackDNS()
    try:
        yield dns
    finally:
        dns.stop()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data dir for one relay."""
    path = tmp_path / "relay-data"
    path.mkdir()
    return path

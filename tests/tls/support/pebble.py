"""Pebble, the ACME test server (Debian package ``pebble``), on 127.0.0.1 for one test.

The tests find the binary as ``$PEBBLE_BIN``, else ``pebble`` on PATH, else
``/usr/bin/pebble``; without it the ACME tests are skipped with the install
line.  Pebble's own HTTPS certificate comes from a test CA made here (the
package ships none), which the relay is told to trust with ``--acme-ca``.
Certificates Pebble issues chain to a root made fresh at each start, fetched
from its management port (``/roots/0``).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from support.ports import LOOPBACK, free_port
from support.processes import ManagedProcess, ProcessGroup, child_env

from tls.support.dns import LoopbackDNS

#: Seconds Pebble gets to start listening.
PEBBLE_START_TIMEOUT = 20.0

#: Seconds for one request to Pebble's management port.
MANAGEMENT_TIMEOUT = 5.0


def pebble_binary() -> str | None:
    """Where the pebble binary is, or None."""
    configured = os.environ.get("PEBBLE_BIN")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    found = shutil.which("pebble")
    if found:
        return found
    return "/usr/bin/pebble" if os.access("/usr/bin/pebble", os.X_OK) else None


@dataclass
class Pebble:
    """A running Pebble and how to talk to it."""

    process: ManagedProcess
    directory: str
    management_port: int
    #: CA of Pebble's own HTTPS listener (give it to the relay as --acme-ca).
    server_ca: Path

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.server_ca))

    def root_pem(self) -> bytes:
        """The root that issued certificates chain to (changes at every Pebble start)."""
        url = f"https://{LOOPBACK}:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=self._context(), timeout=MANAGEMENT_TIMEOUT) as response:
            return response.read()

    def write_root(self, path: Path) -> Path:
        """Save ``root_pem()`` to ``path`` and return it."""
        path.write_bytes(self.root_pem())
        return path


def start_pebble(
    group: ProcessGroup,
    workdir: Path,
    *,
    server_cert: tuple[Path, Path, Path],
    dns: LoopbackDNS,
    http_port: int,
    tls_port: int,
    validity_seconds: int | None = None,
    nonce_reject_percent: int = 0,
) -> Pebble:
    """Start Pebble validating HTTP-01 on ``http_port`` and TLS-ALPN-01 on ``tls_port`` of 127.0.0.1.

    ``server_cert`` is (certificate, key, CA) for Pebble's own listener.
    """
    binary = pebble_binary()
    assert binary, "pebble is not installed"
    acme_port, management_port = free_port(), free_port()
    cert, key, ca = server_cert
    settings: dict = {
        "listenAddress": f"{LOOPBACK}:{acme_port}",
        "managementListenAddress": f"{LOOPBACK}:{management_port}",
        "certificate": str(cert),
        "privateKey": str(key),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }
    if validity_seconds is not None:
        settings["certificateValidityPeriod"] = validity_seconds
    config = workdir / "pebble-config.json"
    config.write_text(json.dumps({"pebble": settings}, indent=2))
    env = child_env({
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": str(nonce_reject_percent),
        "PEBBLE_AUTHZREUSE": "0",
    })
    process = group.start(
        f"pebble:{acme_port}", [binary, "-config", str(config), "-dnsserver", dns.address, "-strict=false"], env
    )
    process.wait_for_line(r"ACME directory available at", stream="stdout", timeout=PEBBLE_START_TIMEOUT)
    return Pebble(process, f"https://{LOOPBACK}:{acme_port}/dir", management_port, ca)


def skip_reason() -> str | None:
    """Why the ACME tests cannot run here, or None."""
    if pebble_binary() is None:
        return "pebble not installed (apt-get install -y pebble, or set PEBBLE_BIN)"
    if sys.platform == "win32":
        return "pebble tests need a POSIX platform"
    return None

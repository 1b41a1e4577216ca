"""Where the inspector listens: the ``--inspect`` value parsed and checked to be loopback.

Kept apart from ``server`` (aiohttp.web, the API, the page) so that ``relay-client http``
can check its options without loading the inspector, which ``--no-inspect`` never starts.
"""

from __future__ import annotations

import ipaddress

#: Where the inspector listens unless told otherwise (ngrok's address).
DEFAULT_INSPECT_HOST = "127.0.0.1"
DEFAULT_INSPECT_PORT = 4040


def is_loopback_name(host: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ::1."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_inspect_addr(value: str) -> tuple[str, int]:
    """``4040``, ``127.0.0.1:4040``, ``localhost:4040`` or ``[::1]:4040`` -> (host, port); ValueError otherwise."""
    text = value.strip()
    host, port_text = DEFAULT_INSPECT_HOST, text
    if not text.isdigit():
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"--inspect {value!r}: give PORT or HOST:PORT (for example 127.0.0.1:4040)")
        host = host.strip("[]")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"--inspect {value!r}: the port must be a number from 0 to 65535")
    if not is_loopback_name(host):
        raise ValueError(f"--inspect {value!r}: the inspector is local only; use 127.0.0.1, ::1 or localhost")
    return host, int(port_text)

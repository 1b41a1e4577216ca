"""The local server the agent forwards to, from ``PORT_OR_URL``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


def is_localhost(host: str) -> bool:
    """``localhost`` or a name under it (RFC 6761: always loopback)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")


class TargetError(ValueError):
    """PORT_OR_URL cannot be understood; the message says what is accepted."""


@dataclass(frozen=True, slots=True)
class LocalTarget:
    """scheme://host:port of the local server; nothing else is ever contacted."""

    scheme: str
    host: str
    port: int

    @property
    def host_port(self) -> str:
        """``host:port`` as a Host header names it (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """``http://host:port`` (IPv6 hosts bracketed)."""
        return f"{self.scheme}://{self.host_port}"


def parse_target(value: str) -> LocalTarget:
    """``5003``, ``localhost:5003``, ``http://127.0.0.1:5003`` or ``https://...``."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        return LocalTarget("http", "localhost", _port(text, value))
    if not text.isascii():
        raise TargetError(f"{value!r}: use an ASCII host name or address and a port")
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise TargetError(f"{value!r}: only http:// and https:// local servers are supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TargetError(f"{value!r}: give the local server's origin only (no path or query)")
    if not parts.hostname:
        raise TargetError(f"{value!r}: no host name")
    try:
        port = parts.port
    except ValueError:
        raise TargetError(f"{value!r}: invalid port") from None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise TargetError(f"{value!r}: port must be between 1 and 65535")
    return LocalTarget(parts.scheme, parts.hostname, port)


def _port(text: str, original: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535:
        raise TargetError(f"{original!r}: port must be between 1 and 65535")
    return port

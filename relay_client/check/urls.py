"""URL questions the checks ask: absolute? http(s)? same origin? reachable only from this machine?"""

from __future__ import annotations

import ipaddress
from urllib.parse import urljoin, urlsplit

from relay_client.resolver import is_localhost


class UrlError(ValueError):
    """A URL the user gave that cannot be checked; the message says why."""


def parse_target(url: str) -> str:
    """The URL to check, validated: absolute http(s) with a host."""
    text = url.strip()
    if "://" not in text:
        raise UrlError(f"{url!r} is not a URL: give the full public URL, e.g. https://NAME.example.com")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise UrlError(f"{url!r}: only http:// and https:// URLs can be checked")
    if not parts.hostname:
        raise UrlError(f"{url!r} has no host name")
    try:
        _ = parts.port  # raises for a non-numeric or out-of-range port
    except ValueError:
        raise UrlError(f"{url!r} has an invalid port") from None
    return text


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports left out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    return origin(a) == origin(b)


def is_absolute_http(url: str) -> bool:
    """An absolute http:// or https:// URL with a host."""
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def host_of(url: str) -> str:
    """The host name of ``url``, lower-cased (empty if none)."""
    return (urlsplit(url).hostname or "").lower()


def is_machine_local(host: str) -> bool:
    """A host only this machine (or its LAN) can reach: localhost, loopback, private or link-local IPs.

    ``NAME.localhost`` is not counted: it is how a relay on this machine serves
    its public names during development (RFC 6761 resolves it to loopback, but
    it names the relay's public side, not the developer's server).
    """
    name = host.lower().strip("[]").rstrip(".")
    if name in ("localhost", "0.0.0.0", "::"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


def is_dev_host(host: str) -> bool:
    """A development host: local to this machine, or a ``*.localhost`` name."""
    return is_machine_local(host) or is_localhost(host)


def resolve(base: str, ref: str) -> str:
    """``ref`` resolved against ``base`` (absolute refs come back unchanged)."""
    return urljoin(base, ref)


def with_origin(url: str, new_origin: str) -> str:
    """``url``'s path and query on ``new_origin``."""
    parts = urlsplit(url)
    path = parts.path or "/"
    return new_origin + path + (f"?{parts.query}" if parts.query else "")

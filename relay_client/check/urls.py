"""URL questions the checks ask: absolute? http(s)? same origin? reachable only from this machine?"""

from __future__ import annotations

import ipaddress
from urllib.parse import SplitResult, urljoin, urlsplit

from relay_client.target import is_localhost


class UrlError(ValueError):
    """A URL the user gave that cannot be checked; the message says why."""


def _split(url: str) -> SplitResult | None:
    """``urlsplit``, or None for text it refuses (an unclosed ``[``, say)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _port(parts: SplitResult) -> tuple[bool, int | None]:
    """(valid, port): a port that is not a number in 0-65535 is invalid."""
    try:
        return True, parts.port
    except ValueError:
        return False, None


def parse_target(url: str) -> str:
    """The URL to check, validated: absolute http(s) with a host and a valid port."""
    text = url.strip()
    if "://" not in text:
        raise UrlError(f"{url!r} is not a URL: give the full public URL, e.g. https://NAME.example.com")
    parts = _split(text)
    if parts is None:
        raise UrlError(f"{url!r} is not a valid URL")
    if parts.scheme not in ("http", "https"):
        raise UrlError(f"{url!r}: only http:// and https:// URLs can be checked")
    if not parts.hostname:
        raise UrlError(f"{url!r} has no host name")
    if not _port(parts)[0]:
        raise UrlError(f"{url!r} has an invalid port")
    return text


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports left out (unparsable URLs come back as given)."""
    parts = _split(url)
    if parts is None:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = _port(parts)[1]
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port."""
    return origin(a) == origin(b)


def is_absolute_http(url: str) -> bool:
    """An absolute http:// or https:// URL with a host and a valid port."""
    parts = _split(url)
    return parts is not None and parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and _port(parts)[0]


def host_of(url: str) -> str:
    """The host name of ``url``, lower-cased (empty if none)."""
    parts = _split(url)
    return (parts.hostname or "").lower() if parts is not None else ""


def path_of(url: str) -> str:
    """The path of ``url`` (empty if none or unparsable)."""
    parts = _split(url)
    return parts.path if parts is not None else ""


#: Addresses only this machine or its own network reaches (loopback, RFC 1918, CGNAT, link-local, ULA).
_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/32", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
        "::/128", "::1/128", "fc00::/7", "fe80::/10",
    )
)


def is_machine_local(host: str) -> bool:
    """A host only this machine (or its LAN) can reach: localhost, loopback, private or link-local IPs.

    ``NAME.localhost`` is not counted: it is how a relay on this machine serves
    its public names during development (RFC 6761 resolves it to loopback, but
    it names the relay's public side, not the developer's server).
    """
    name = host.lower().strip("[]").rstrip(".")
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL_NETWORKS)


def is_dev_host(host: str) -> bool:
    """A development host: local to this machine, or a ``*.localhost`` name."""
    return is_machine_local(host) or is_localhost(host)


def resolve(base: str, ref: str) -> str:
    """``ref`` resolved against ``base`` (absolute refs, and ones that cannot be resolved, come back unchanged)."""
    try:
        return urljoin(base, ref)
    except ValueError:
        return ref


def with_origin(url: str, new_origin: str) -> str:
    """``url``'s path and query on ``new_origin``."""
    parts = _split(url)
    if parts is None:
        return new_origin + "/"
    path = parts.path or "/"
    return new_origin + path + (f"?{parts.query}" if parts.query else "")

"""HTTP header rules both sides apply: what never crosses a proxy hop."""

from __future__ import annotations

from collections.abc import Iterable

#: RFC 9110 section 7.6.1 connection-specific headers, plus the non-standard ones
#: proxies are known to leak (Proxy-Connection).  Never forwarded, either way.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def decode_header_bytes(raw: bytes) -> str:
    """Header bytes as text: UTF-8 where valid (what aiohttp re-encodes on the way out), else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def strip_hop_by_hop(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop hop-by-hop headers and any header the Connection header names (a new list)."""
    pairs = headers if isinstance(headers, list) else list(headers)
    lowered = [name.lower() for name, _ in pairs]  # once per header: this runs on every head
    if HOP_BY_HOP.isdisjoint(lowered):  # the usual case (Connection is hop-by-hop itself): a copy
        return list(pairs)
    named: frozenset[str] | set[str] = HOP_BY_HOP
    if "connection" in lowered:
        named = HOP_BY_HOP | connection_tokens(pairs, lowered)
    return [(name, value) for lname, (name, value) in zip(lowered, pairs) if lname not in named]


def decode_raw_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    """``decode_header_bytes`` over name/value pairs, with one fast pass when all are UTF-8."""
    try:
        return [(name.decode(), value.decode()) for name, value in raw]
    except UnicodeDecodeError:
        return [(decode_header_bytes(name), decode_header_bytes(value)) for name, value in raw]


#: Headers of the websocket opening handshake: each websocket hop makes its own.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)


def is_websocket_upgrade(method: str, upgrade_header: str) -> bool:
    """A GET asking to switch to the websocket protocol (RFC 6455 section 4.1)."""
    return method == "GET" and "websocket" in upgrade_header.lower()


def header_tokens(headers: Iterable[tuple[str, str]], name: str) -> list[str]:
    """Comma-separated tokens of every header called ``name``, in order."""
    lname = name.lower()
    return [t.strip() for k, v in headers if k.lower() == lname for t in v.split(",") if t.strip()]


def connection_tokens(pairs: list[tuple[str, str]], lowered: list[str]) -> set[str]:
    """The header names (lower case) the Connection headers among ``pairs`` list; ``lowered``: their names, lowered."""
    return {
        token.strip().lower()
        for lname, (_, value) in zip(lowered, pairs)
        if lname == "connection"
        for token in value.split(",")
        if token.strip()
    }

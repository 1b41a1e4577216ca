"""Exchanges as ngrok's agent API writes captured requests.

Field names, nesting and units follow ngrok: ``start`` is RFC 3339,
``duration`` is nanoseconds, header names are canonicalised as Go's
``net/http`` does (``content-type`` -> ``Content-Type``) with every value in
a list, and ``raw`` is the base64 of the HTTP/1.1 message (head plus the
captured body). Everything ngrok does not have lives under one extra key,
``localrelay`` (ngrok's API promises that clients tolerate new fields).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from relay_client.exchange import Exchange

#: Name used by ngrok for a tunnel started from the command line; accepted as an alias.
COMMAND_LINE = "command_line"

#: What every captured message claims as its protocol.
PROTO = "HTTP/1.1"

def canonical_header(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-request-id`` -> ``X-Request-Id`` (odd names kept as they are)."""
    if not name or any(c in name for c in " \t:\r\n") or not name.isascii():
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def header_map(headers: list[tuple[str, str]]) -> dict[str, list[str]]:
    """``{Name: [values]}``, repeated headers merged in order."""
    out: dict[str, list[str]] = {}
    for name, value in headers:
        out.setdefault(canonical_header(name), []).append(value)
    return out


def rfc3339(timestamp: float) -> str:
    """Wall-clock time with the local UTC offset, as ngrok writes ``start``."""
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _head_lines(first: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first] + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def request_message(exchange: Exchange) -> bytes:
    """The request as it would be on the wire (captured body only)."""
    head = _head_lines(f"{exchange.method} {exchange.target} {PROTO}", exchange.request_headers)
    return head + bytes(exchange.request_body)


def response_message(exchange: Exchange) -> bytes:
    """The response as it would be on the wire (captured body only)."""
    status_line = f"{PROTO} {exchange.status} {exchange.reason}".rstrip()
    return _head_lines(status_line, exchange.response_headers) + bytes(exchange.response_body)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tunnel_name(name: str | None) -> str:
    """The name the API shows for the tunnel (ngrok's default before the relay named it)."""
    return name or COMMAND_LINE


def exchange_json(exchange: Exchange, tunnel: str | None) -> dict[str, Any]:
    """One captured request in ngrok's format, plus our ``localrelay`` extension."""
    response: dict[str, Any] | None = None
    if exchange.status is not None:
        response = {
            "status": f"{exchange.status} {exchange.reason}".rstrip(),
            "status_code": exchange.status,
            "proto": PROTO,
            "headers": header_map(exchange.response_headers),
            "raw": _b64(response_message(exchange)),
        }
    return {
        "uri": f"/api/requests/http/{exchange.id}",
        "id": exchange.id,
        "tunnel_name": tunnel_name(tunnel),
        "remote_addr": exchange.remote_addr,
        "start": rfc3339(exchange.started),
        "duration": int((exchange.duration or 0.0) * 1e9),
        "request": {
            "method": exchange.method,
            "proto": PROTO,
            "headers": header_map(exchange.request_headers),
            "uri": exchange.target,
            "raw": _b64(request_message(exchange)),
        },
        "response": response,
        "localrelay": {
            "replay": exchange.replay,
            "websocket": exchange.websocket,
            "done": exchange.duration is not None,
            "error": exchange.error,
            "started": exchange.started,
            "request_bytes": exchange.request_bytes,
            "request_truncated": exchange.request_truncated,
            "response_bytes": exchange.response_bytes,
            "response_truncated": exchange.response_truncated,
            "capture_limit": exchange.capture_limit,
        },
    }

"""The MCP authorization discovery a client does on 401 (RFC 9728 protected-resource metadata), without I/O.

An MCP server that needs a token answers 401 with
``WWW-Authenticate: Bearer resource_metadata="<url>"``; the document there
(or at ``/.well-known/oauth-protected-resource[/path]``) names the
``resource`` (the public MCP URL the token is for) and its
``authorization_servers``. Behind a tunnel both must name the public URL,
not ``localhost``.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from relay_client.check.report import Check, failed, passed
from relay_client.check.urls import host_of, is_absolute_http, is_machine_local, origin

WELL_KNOWN = "/.well-known/oauth-protected-resource"

_PARAM = re.compile(r'([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)')

_REWRITE = "run the agent with --rewrite-urls, or configure the server with its public URL"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme and auth-params of a ``WWW-Authenticate`` value (first challenge)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for name, value in _PARAM.findall(rest):
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name.lower(), value)
    return scheme, params


def check_challenge(header: str | None, endpoint: str) -> tuple[Check, str | None]:
    """The 401's challenge names its resource metadata; that URL (if any) comes back too."""
    name = "WWW-Authenticate"
    public = origin(endpoint)
    wanted = f'Bearer resource_metadata="{public}{WELL_KNOWN}{_path(endpoint)}"'
    if not header:
        return failed(name, "the 401 carries no WWW-Authenticate header", f"answer 401 with WWW-Authenticate: {wanted}"), None
    scheme, params = parse_challenge(header)
    metadata = params.get("resource_metadata")
    if scheme.lower() != "bearer":
        return failed(name, f"scheme is {scheme!r}, not Bearer", f"answer 401 with WWW-Authenticate: {wanted}"), metadata
    if not metadata:
        return (
            failed(name, "Bearer challenge without resource_metadata", f"add it: WWW-Authenticate: {wanted}"),
            None,
        )
    if not is_absolute_http(metadata):
        return failed(name, f"resource_metadata {metadata!r} is not an absolute URL", f"use {wanted}"), None
    if is_machine_local(host_of(metadata)) and origin(metadata) != public:
        return (
            failed(name, f"resource_metadata {metadata} points at your machine, which clients cannot reach", _REWRITE),
            metadata,
        )
    return passed(name, f"Bearer with resource_metadata {metadata}"), metadata


def well_known_urls(endpoint: str) -> list[str]:
    """Where clients look without a hint: the path-inserted form first, then the root (RFC 9728 section 3.1)."""
    base = origin(endpoint) + WELL_KNOWN
    path = _path(endpoint)
    return [base + path, base] if path else [base]


def _path(url: str) -> str:
    path = urlsplit(url).path.rstrip("/")
    return path if path and path != "/" else ""


def parse_metadata(body: bytes) -> dict[str, Any] | None:
    """The metadata document as an object, or None."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return document if isinstance(document, dict) else None


def check_metadata(document: dict[str, Any], served_at: str, endpoint: str) -> list[Check]:
    """``resource`` is the public MCP URL; ``authorization_servers`` are absolute and reachable from outside."""
    checks = [passed("protected resource metadata", f"served at {served_at}")]
    resource = document.get("resource")
    public_origin = origin(endpoint)
    accepted = {endpoint.rstrip("/"), public_origin}
    if not isinstance(resource, str) or not resource:
        checks.append(failed("metadata resource", "no resource field", f'add "resource": "{endpoint}"'))
    elif resource.rstrip("/") not in accepted:
        where = " (your machine, which clients cannot reach)" if is_machine_local(host_of(resource)) else ""
        checks.append(
            failed(
                "metadata resource",
                f"resource is {resource}{where}, not the public URL {endpoint}",
                f'serve "resource": "{endpoint}": {_REWRITE}',
            )
        )
    else:
        checks.append(passed("metadata resource", f"resource {resource} is the public URL"))
    servers = document.get("authorization_servers")
    if not isinstance(servers, list) or not servers:
        checks.append(
            failed("authorization servers", "authorization_servers is missing or empty", 'list your OAuth issuer: "authorization_servers": ["https://..."]')
        )
        return checks
    bad = [str(s) for s in servers if not isinstance(s, str) or not is_absolute_http(s)]
    local = [
        s for s in servers if isinstance(s, str) and is_absolute_http(s) and is_machine_local(host_of(s)) and origin(s) != public_origin
    ]
    if bad:
        checks.append(failed("authorization servers", f"not absolute URLs: {', '.join(bad)}", "list issuer URLs such as https://auth.example.com"))
    elif local:
        checks.append(failed("authorization servers", f"{', '.join(local)} points at your machine", _REWRITE))
    else:
        checks.append(passed("authorization servers", ", ".join(servers)))
    return checks

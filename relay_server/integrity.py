"""Request-integrity checks the HTTP parser leaves to us, applied before a request reaches a tunnel.

aiohttp routes an absolute-form request (``GET http://b.example/x``) by the
target's authority, as RFC 9112 section 3.2.2 says, but the Host header
travels on unchanged; when the two disagree the local server would see one
tunnel's request claiming another's Host.  Such a request is ambiguous, so it
is refused rather than forwarded; a consistent one travels to the agent in
origin-form (the agent forwards paths only, never a URL naming a server).
"""

from __future__ import annotations

from aiohttp import web
from yarl import URL

from relay_server.pages import error_response


def ambiguous_target(request: web.BaseRequest) -> web.Response | None:
    """400 for an absolute-form target whose authority is not the Host header; None when consistent."""
    raw = request.raw_path
    if raw.startswith("/"):
        return None  # origin-form: routed by Host alone
    try:
        authority = URL(raw).raw_authority.lower()
    except ValueError:
        authority = ""
    host = request.headers.get("Host", "").lower()
    if authority and authority == host:
        return None
    return error_response(
        request,
        400,
        "host-mismatch",
        "Bad request",
        "The request target names a different host than the Host header.",
    )


def origin_form(target: str) -> str:
    """``/path?query`` of an absolute-form target (checked against Host before); other targets unchanged."""
    if target.startswith("/"):
        return target
    url = URL(target, encoded=True)
    if not url.absolute:
        return target
    path = url.raw_path or "/"
    return f"{path}?{url.raw_query_string}" if url.raw_query_string else path

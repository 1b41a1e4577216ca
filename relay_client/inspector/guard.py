"""Keep the inspector local: loopback Host names only, no cross-origin writes.

The inspector shows request bodies (tokens, cookies) and can send requests
to the local server, and it has no password, like ngrok's. A web page the
developer visits could otherwise read it through DNS rebinding (a name that
resolves to 127.0.0.1, sent as the Host) or make the browser POST a replay
(a cross-site request, which carries an ``Origin``). Both are refused here.
Errors under ``/api`` are JSON, as ngrok's are.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from yarl import URL

from relay_client.inspector.address import is_loopback_name
from relay_client.inspector.errors import api_error

if TYPE_CHECKING:
    from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Methods that change nothing: no Origin check needed.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _hostname(authority: str) -> str | None:
    try:
        return URL(f"http://{authority}").host
    except (ValueError, TypeError):
        return None


def local_only(extra_hosts: tuple[str, ...] = ()) -> Middleware:
    """Middleware: refuse non-loopback Host names (plus ``extra_hosts``) and cross-origin writes."""
    allowed = {h.strip("[]").lower() for h in extra_hosts if h}

    def host_ok(authority: str | None) -> bool:
        name = _hostname(authority or "")
        return name is not None and (is_loopback_name(name) or name.strip("[]").lower() in allowed)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not host_ok(request.headers.get("Host")):
            return api_error(403, "the inspector answers only to localhost; open it at http://127.0.0.1:PORT")
        origin = request.headers.get("Origin")
        if request.method not in _SAFE_METHODS and origin is not None:
            _scheme, sep, authority = origin.partition("://")
            if not sep or not host_ok(authority):
                return api_error(403, f"cross-origin request from {origin[:100]!r} refused")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api") or exc.status < 400:
                raise
            return api_error(exc.status, exc.reason)

    return middleware

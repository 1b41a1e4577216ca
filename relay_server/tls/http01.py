"""Plain-HTTP duties of TLS: answer ACME HTTP-01 challenges, and redirect tunnels to https://.

Both run as one aiohttp middleware ahead of the relay's Host routing, added
by ``serve`` only when ACME or ``--redirect-https`` is on, so a relay without
them pays nothing.  A challenge path with a token we did not issue falls
through to normal routing (the tunnel's own server may use that path).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from relay_server.app import CONNECT_PATH, tunnel_name
from relay_server.config import RelayConfig
from relay_server.tls.acme.challenges import HTTP01_PREFIX, Challenges


def tls_middleware(config: RelayConfig, challenges: Challenges | None, redirect: bool) -> Middleware:
    """The middleware answering HTTP-01 (when ``challenges``) and redirecting tunnels (when ``redirect``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if challenges is not None and path.startswith(HTTP01_PREFIX):
            answer = challenges.http01_answer(path[len(HTTP01_PREFIX) :])
            if answer is not None:
                return web.Response(body=answer.encode("ascii"), content_type="application/octet-stream")
        if redirect and not request.secure and path != CONNECT_PATH:
            name = tunnel_name(request.host, config.domain)
            if name is not None:
                # 308 keeps the method and body, so a POST to http:// is re-sent as a POST.
                location = config.public_url(name) + request.raw_path
                raise web.HTTPPermanentRedirect(location)
        return await handler(request)

    return middleware

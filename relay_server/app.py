"""The relay's aiohttp application: one catch-all route that dispatches by Host."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from relay_protocol.errors import ErrorCode
from relay_server import __version__
from relay_server.agent_endpoint import AgentEndpoint
from relay_server.config import RelayConfig
from relay_server.front import forward, tunnel_offline
from relay_server.observer import RelayObserver
from relay_server.pages import error_response
from relay_server.registry import LocalRegistry, TunnelRegistry
from relay_server.tokens import TokenStore

log = logging.getLogger("relay_server")

CONNECT_PATH = "/_relay/connect"
HEALTH_PATH = "/_relay/health"


def tunnel_name(host: str, domain: str) -> str | None:
    """The tunnel a Host header names, or None for the relay itself.

    ``NAME.domain[:port]`` -> ``NAME``; the bare domain, an IP address or any
    other host -> None (the relay's own endpoints answer there).
    """
    host = host.strip().lower()
    if host.startswith("["):  # [v6]:port
        return None
    host = host.rsplit(":", 1)[0] if ":" in host else host
    host = host.rstrip(".")
    suffix = "." + domain
    if host.endswith(suffix) and len(host) > len(suffix):
        name = host[: -len(suffix)]
        # a.b.example.com is no tunnel's name (names are one DNS label): the relay answers itself.
        return name if "." not in name else None
    return None


class Relay:
    """Holds the relay's state for one process (nothing lives in module globals)."""

    def __init__(
        self, config: RelayConfig, registry: TunnelRegistry | None = None, observer: RelayObserver | None = None
    ) -> None:
        self.config = config
        self.registry: TunnelRegistry = registry if registry is not None else LocalRegistry()
        self.tokens = TokenStore(config.data_dir)
        #: Metrics and structured logs hook in here; every part of the relay reports to it.
        self.observer = observer if observer is not None else RelayObserver()
        self.agents = AgentEndpoint(config, self.registry, self.tokens, self.observer)
        self.started = time.time()

    def make_app(self) -> web.Application:
        """The aiohttp application serving agents, public traffic and health."""
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route by Host: a tunnel's hostname goes to its agent, anything else to us."""
        name = tunnel_name(request.host, self.config.domain)
        if name is not None:
            tunnel = self.registry.lookup(name)
            if tunnel is None:
                return tunnel_offline(request, name)
            refusal = self._check_limits(request)
            if refusal is not None:
                return refusal
            return await forward(request, tunnel, self.config)
        path = request.path
        if path == CONNECT_PATH:
            return await self.agents.handle(request)
        if path == HEALTH_PATH:
            return web.json_response(
                {
                    "status": "ok",
                    "version": __version__,
                    "tunnels": len(self.registry),
                    "uptime": round(time.time() - self.started, 1),
                }
            )
        return error_response(
            request,
            404,
            "not-a-tunnel",
            "Not a tunnel",
            f"This is a localrelay relay. Tunnels answer at {self.config.public_url('NAME')}.",
        )

    def _check_limits(self, request: web.BaseRequest) -> web.Response | None:
        """414 / 431 for requests past the configured size limits (before they reach an agent)."""
        if len(request.raw_path) > self.config.max_url_bytes:
            return error_response(
                request, 414, "uri-too-long", "URI too long",
                f"The request target is longer than this relay's limit of {self.config.max_url_bytes} bytes.",
            )
        size = sum(len(k) + len(v) for k, v in request.raw_headers)
        if size > self.config.max_header_bytes:
            return error_response(
                request, 431, "headers-too-large", "Request headers too large",
                f"The request headers total {size} bytes, over this relay's limit of {self.config.max_header_bytes}.",
            )
        return None

    async def _on_shutdown(self, app: web.Application) -> None:
        """Tell every agent we are going away so it reconnects to the next process."""
        tunnels = list(self.registry)
        for tunnel in tunnels:
            tunnel.mux.close(ErrorCode.GOING_AWAY, "relay shutting down")
        if tunnels:
            log.info("told %d agent(s) the relay is going away", len(tunnels))

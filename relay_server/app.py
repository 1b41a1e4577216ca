"""The relay's aiohttp application: one catch-all route that dispatches by Host."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Protocol

from aiohttp import web
from yarl import URL

from relay_protocol.errors import ErrorCode
from relay_protocol.eventloop import fewer_young_collections
from relay_server import __version__
from relay_server.agent_endpoint import AgentEndpoint
from relay_server.config import RelayConfig
from relay_server.front import forward, tunnel_offline
from relay_server.metering import measured, meter_of
from relay_server.metrics import METRICS_PATH, may_read_metrics, metrics_endpoint
from relay_server.observer import RelayObserver
from relay_server.pages import error_response
from relay_server.publiclimits import RELAY_OBSERVER
from relay_server.registry import LocalRegistry, TunnelRegistry
from relay_server.tokens import TokenStore
from relay_server.tunnel import Tunnel

log = logging.getLogger("relay_server")

#: Host headers whose tunnel name ``Relay.dispatch`` remembers (the cache starts over when full).
_MAX_CACHED_HOSTS = 1024

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


class InFlight(Protocol):
    """A public request in progress: aiohttp's request, or the lean front's connection serving one."""

    @property
    def transport(self) -> asyncio.BaseTransport | None:
        """Its caller's connection (aborted when a stop cuts the request off)."""


class Relay:
    """Holds the relay's state for one process (nothing lives in module globals)."""

    def __init__(
        self,
        config: RelayConfig,
        registry: TunnelRegistry | None = None,
        observer: RelayObserver | None = None,
        tokens: TokenStore | None = None,
    ) -> None:
        self.config = config
        self.registry: TunnelRegistry = (
            registry if registry is not None else LocalRegistry(name_grace=config.name_grace)
        )
        self.tokens = tokens if tokens is not None else TokenStore(config.data_dir)  # a fleet's live in Redis
        #: Metrics and structured logs hook in here; every part of the relay reports to it.
        self.observer = observer if observer is not None else RelayObserver()
        self.agents = AgentEndpoint(config, self.registry, self.tokens, self.observer)
        self.started = time.time()
        #: Set on SIGTERM: new requests get 503, agents are told to move on.
        self.stopping = False
        #: Public requests inside a tunnel right now (shutdown waits for them, then cuts them).
        self._in_flight: dict[int, InFlight] = {}  # by id(): requests are not hashable
        self._idle = asyncio.Event()
        self._idle.set()
        #: ``tunnel_name`` of each Host header seen lately (the same few arrive over and over).
        self._names: dict[str, str | None] = {}

    def make_app(self) -> web.Application:
        """The aiohttp application serving agents, public traffic and health."""
        app = web.Application(client_max_size=0)
        app[RELAY_OBSERVER] = self.observer  # request-level limits report through it
        every = _EveryPath()
        app.router.register_resource(every)
        every.add_route("*", self.dispatch)
        app.on_shutdown.append(self._on_shutdown)
        app.cleanup_ctx.append(self.agents.watch_tokens)  # revoked/expired tokens lose their tunnels
        app.cleanup_ctx.append(_collector_tuned)
        if self.config.cluster:  # a fleet node: requests for other nodes' tunnels hop there
            from relay_server.fleet.hop import install_hop

            install_hop(app, self)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route by Host: a tunnel's hostname goes to its agent, anything else to us."""
        name = self.name_for_host(request.host)
        if name is not None:
            return await measured(request, name, self.config, self.observer, lambda: self._to_tunnel(request, name))
        path = request.path
        if path == CONNECT_PATH:
            if self.stopping:
                return _restarting(request)
            return await self.agents.handle(request)
        if path == METRICS_PATH:
            return await metrics_endpoint(request, self)
        if path == HEALTH_PATH:
            health = {
                "status": "ok",
                "version": __version__,
                "tunnels": len(self.registry),
                "uptime": round(time.time() - self.started, 1),
            }
            if self.stopping:  # asked on a connection kept alive from before: out of rotation now
                health["status"] = "stopping"
                return web.json_response(health, status=503)
            if self.config.cluster:  # a fleet node: "ok" or "degraded"; its internals to loopback/admin only
                from relay_server.fleet.node import fleet_health

                health.update(fleet_health(self, detail=may_read_metrics(request, self.config, self.tokens)))
            return web.json_response(health)
        return error_response(
            request,
            404,
            "not-a-tunnel",
            "Not a tunnel",
            f"This is a localrelay relay. Tunnels answer at {self.config.public_url('NAME')}.",
        )

    def name_for_host(self, host: str) -> str | None:
        """``tunnel_name`` of a Host header, remembered (the same few arrive over and over)."""
        try:
            return self._names[host]
        except KeyError:
            if len(self._names) >= _MAX_CACHED_HOSTS:  # Host is the caller's to choose: keep the cache bounded
                self._names.clear()
            name = self._names[host] = tunnel_name(host, self.config.domain)
            return name

    async def _to_tunnel(self, request: web.Request, name: str) -> web.StreamResponse:
        """A public request for tunnel ``name``: to its agent, its fleet node, or a clear refusal."""
        if self.stopping:
            return _restarting(request)
        tunnel = self.registry.lookup(name)
        if tunnel is None:
            return tunnel_offline(request, name)
        refusal = self._check_limits(request)
        if refusal is not None:
            return refusal
        # Not counted_in_flight(): a generator context manager per request costs about 1 µs.
        key = self.entered(request)
        try:
            if isinstance(tunnel, Tunnel):
                return await forward(request, tunnel, self.config)
            from relay_server.fleet.hop import forward_to_node  # a RemoteRoute: held by another fleet node

            return await forward_to_node(request, tunnel, self)
        finally:
            self.left(key)

    @contextmanager
    def counted_in_flight(self, request: web.BaseRequest) -> Iterator[None]:
        """Count ``request`` among the in-flight ones while it runs: a graceful stop waits for it, then cuts it."""
        key = self.entered(request)
        try:
            yield
        finally:
            self.left(key)

    def entered(self, request: InFlight) -> int:
        """Count ``request`` among the in-flight ones until ``left(key)``: a graceful stop waits for it, then cuts it."""
        key = id(request)
        if not self._in_flight:  # _idle is set exactly while nothing is in flight
            self._idle.clear()
        self._in_flight[key] = request
        return key

    def left(self, key: int) -> None:
        """An in-flight request ended; the last one out wakes a waiting graceful stop."""
        self._in_flight.pop(key, None)
        if not self._in_flight:
            self._idle.set()

    def _check_limits(self, request: web.BaseRequest) -> web.Response | None:
        """414 / 431 for requests past the configured size limits (before they reach an agent)."""
        if len(request.raw_path) > self.config.max_url_bytes:
            meter_of(request).limit_hit("max_url_bytes")
            return error_response(
                request, 414, "uri-too-long", "URI too long",
                f"The request target is longer than this relay's limit of {self.config.max_url_bytes} bytes.",
            )
        size = sum(len(k) + len(v) for k, v in request.raw_headers)
        if size > self.config.max_header_bytes:
            meter_of(request).limit_hit("max_header_bytes")
            return error_response(
                request, 431, "headers-too-large", "Request headers too large",
                f"The request headers total {size} bytes, over this relay's limit of {self.config.max_header_bytes}.",
            )
        return None

    @property
    def in_flight(self) -> int:
        """Public requests inside a tunnel right now."""
        return len(self._in_flight)

    def begin_shutdown(self) -> int:
        """Stop taking work: new requests get 503, every agent hears GOAWAY(NO_ERROR).

        An agent told so connects again (to the next relay process) while the
        requests already on this connection finish.  Returns the agents told.
        """
        self.stopping = True
        tunnels = list(self.registry)
        for tunnel in tunnels:
            tunnel.mux.drain("relay shutting down")
        return len(tunnels)

    async def wait_idle(self, timeout: float, hurry: asyncio.Event | None = None) -> bool:
        """Wait up to ``timeout`` s for in-flight public requests to end; False if some remain."""
        waits = [asyncio.ensure_future(self._idle.wait())]
        if hurry is not None:
            waits.append(asyncio.ensure_future(hurry.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
        return self._idle.is_set()

    def close_tunnels(self, reason: str = "relay shutting down") -> int:
        """Cut every agent connection and every public request still running, now.

        A cut request's connection is aborted, so its caller sees an error (a
        short Content-Length body, a chunked body without its last chunk), never
        a response that looks complete.  Returns the agent connections closed.
        """
        tunnels = [t for t in self.registry if not t.mux.closed]
        for tunnel in tunnels:
            tunnel.mux.close(ErrorCode.GOING_AWAY, reason)
        for request in list(self._in_flight.values()):
            transport = request.transport
            if transport is not None:
                transport.abort()  # also frees a handler blocked writing to a caller who stopped reading
        return len(tunnels)

    async def _on_shutdown(self, app: web.Application) -> None:
        """Last resort when the app stops without ``serve``'s drain: close every agent connection."""
        self.stopping = True
        closed = self.close_tunnels()
        if closed:
            log.info("closed %d agent connection(s): relay shutting down", closed)


async def _collector_tuned(app: web.Application) -> AsyncIterator[None]:
    """aiohttp ``cleanup_ctx``: the young generation is collected less often while the relay serves."""
    with fewer_young_collections():
        yield


class _EveryPath(web.Resource):
    """The app's one resource: matches every path with no regex and no unquoting.

    What ``add_route("*", "/{tail:.*}")`` does, minus the pattern match and the
    ``tail`` it would capture (nothing reads it): Relay.dispatch routes by Host.
    """

    def __init__(self) -> None:
        super().__init__(name=None)

    @property
    def canonical(self) -> str:
        """Indexed at the root, which every path's walk up the tree reaches."""
        return "/"

    def _match(self, path: str) -> dict[str, str]:
        return {}

    def raw_match(self, path: str) -> bool:
        """Whether ``path`` is this resource's pattern (for ``url_for`` lookups by name)."""
        return path == "/"

    def add_prefix(self, prefix: str) -> None:
        """Never mounted under a prefix."""
        raise NotImplementedError("the relay's catch-all resource takes no prefix")

    def get_info(self) -> dict[str, str]:
        """What aiohttp's introspection shows."""
        return {"path": "/*"}

    def url_for(self) -> URL:  # type: ignore[override]
        """The root (the resource has no path of its own)."""
        return URL.build(path="/")

    def __repr__(self) -> str:
        return "<_EveryPath: every path>"


def _restarting(request: web.BaseRequest) -> web.Response:
    """503 while the relay drains: the caller retries and reaches the next process."""
    response = error_response(
        request, 503, "relay-restarting", "Relay restarting", "This relay is restarting; retry in a moment."
    )
    response.headers["Retry-After"] = "1"
    response.force_close()
    return response

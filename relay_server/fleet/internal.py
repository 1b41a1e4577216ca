"""The internal listener: where other fleet nodes hand this node requests for the tunnels it holds.

It answers only requests carrying a valid cluster proof (fleet/proof.py); any
other request gets 403 and nothing else (no health, no agent endpoint, no
tunnel traffic).  A proven request names its tunnel by Host, as a public one
does, and goes through the same front (flow control, limits, streaming,
websockets) to a tunnel held here; it is never forwarded again, so a stale
route on two nodes cannot bounce a request between them (502 instead).

The first node's X-Forwarded-* are kept as they are: the request is handed to
the front as if it came from the address the first node saw, with the first
node's X-Forwarded-For chain before it, so the agent sees exactly the headers a
direct request through the first node would carry and per-tunnel address lists
(``--allow-ip``) judge the same client address.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
from typing import Any

from aiohttp import web

from relay_server.app import tunnel_name
from relay_server.config import RelayConfig
from relay_server.front import forward
from relay_server.publiclimits import RELAY_OBSERVER
from relay_server.tunnel import Tunnel
from relay_server.fleet.proof import AUTH_HEADER, HOP_HEADER, NODE_HEADERS, ClusterProof
from relay_server.fleet.workers import WORKER_ENV

log = logging.getLogger("relay_server.fleet.internal")

#: aiohttp's parser limits sit this far above the relay's own (as on the public listener).
PARSER_SLACK = 1024

#: Distinct first-node peers whose trusting config is kept (bounded: each is a small object).
_TRUST_CACHE_SIZE = 256


class InternalListenError(Exception):
    """The internal listener cannot start; the message is the one line the user sees."""


def _json(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"error": code, "message": message, "status": status})
    response = web.Response(status=status, text=body, content_type="application/json")
    response.headers["X-Relay-Error"] = code
    return response


class InternalHandler:
    """Checks the proof, then hands the request to the front for a tunnel held on this node."""

    def __init__(self, relay: Any) -> None:
        config: RelayConfig = relay.config
        if not config.cluster_secret:
            raise ValueError("the internal listener needs the cluster secret")
        self.relay = relay
        self.config = config
        self.proof = ClusterProof(config.cluster_secret)
        self._trusting: dict[str, RelayConfig] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request from another node."""
        host = request.headers.get("Host", "")
        why = self.proof.verify(request.headers.get(AUTH_HEADER), request.method, host, request.raw_path)
        if why is None and request.headers.get(HOP_HEADER) != "1":
            why = "not a forwarded request"
        if why is not None:
            log.info("internal listener: refused %s from %s: %s", request.method, request.remote, why)
            response = _json(403, "forbidden", "This is a relay node's internal listener.")
            response.force_close()
            return response
        name = tunnel_name(host, self.config.domain)
        if name is None:
            return _json(404, "not-a-tunnel", f"{host!r} names no tunnel of this fleet.")
        if getattr(self.relay, "stopping", False):
            response = _json(503, "relay-restarting", "This relay node is restarting; retry in a moment.")
            response.headers["Retry-After"] = "1"
            return response
        tunnel = self.relay.registry.lookup(name)
        if not isinstance(tunnel, Tunnel):  # gone, or held elsewhere: never forwarded twice
            return _json(502, "tunnel-not-on-node", f"The tunnel {name} is not on this relay node.")
        try:
            first, config = self._as_first_node_saw(request)
        except UnicodeError:
            return _json(400, "bad-header", "A header of the forwarded request is not valid UTF-8.")
        with self.relay.counted_in_flight(first):
            return await forward(first, tunnel, config)

    def _as_first_node_saw(self, request: web.Request) -> tuple[web.Request, RelayConfig]:
        """The request as the first node received it: its peer, its chain, no node headers."""
        forwarded_for = request.headers.get("X-Forwarded-For", "")
        prior, _, peer = forwarded_for.rpartition(",")
        peer, prior = peer.strip(), prior.strip()
        headers: list[tuple[str, str]] = []
        for key, value in request.headers.items():
            lower = key.lower()
            if lower in NODE_HEADERS:
                continue
            if lower == "x-forwarded-for":
                if prior:
                    headers.append((key, prior))
                continue
            headers.append((key, value))
        first = request.clone(headers=headers, remote=peer or (request.remote or ""))
        return first, self._config_trusting(peer)

    def _config_trusting(self, peer: str) -> RelayConfig:
        """The relay's config, also trusting ``peer``: the front then keeps the first node's chain as is."""
        if self.config.is_trusted_proxy(peer):
            return self.config
        config = self._trusting.get(peer)
        if config is None:
            try:
                network = ipaddress.ip_network(peer)
            except ValueError:
                return self.config
            if len(self._trusting) >= _TRUST_CACHE_SIZE:
                self._trusting.clear()
            config = dataclasses.replace(self.config, trusted_proxies=[*self.config.trusted_proxies, network])
            self._trusting[peer] = config
        return config


def make_internal_app(relay: Any) -> web.Application:
    """The internal listener's application (one catch-all route, proof required)."""
    app = web.Application(client_max_size=0)
    app[RELAY_OBSERVER] = relay.observer
    app.router.add_route("*", "/{tail:.*}", InternalHandler(relay).handle)
    return app


async def start_internal(relay: Any) -> web.AppRunner:
    """Listen on ``--host``:``--internal-port``; the runner to clean up at the end."""
    config: RelayConfig = relay.config
    assert config.internal_port is not None
    runner = web.AppRunner(
        make_internal_app(relay),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,  # a first node that goes away cancels the request here too
        auto_decompress=False,
        max_line_size=config.max_url_bytes + PARSER_SLACK,
        max_field_size=config.max_header_bytes + PARSER_SLACK,
    )
    await runner.setup()
    # A --workers child binds next to the supervisor, which holds the port (bound, never listening)
    # so that no outgoing connection takes it as its source port meanwhile.
    supervised = WORKER_ENV in os.environ
    site = web.TCPSite(
        runner, config.host, config.internal_port, backlog=1024, reuse_address=True, reuse_port=supervised or None
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise InternalListenError(
            f"cannot listen on {config.host}:{config.internal_port} (--internal-port): {exc.strerror or exc}"
        ) from None
    return runner

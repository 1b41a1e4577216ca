"""This relay process as a fleet node: shared registry and tokens, internal listener, health.

``serve`` builds a ``FleetNode`` when ``--cluster`` is given, hands its registry
and token store to the Relay, starts it before taking traffic and closes it
last.  A node that cannot reach Redis within ``START_WAIT`` seconds refuses to
start (one line naming the Redis and the error): a node that knows no routes
and no tokens would only answer 502 and refuse every agent.  Once running, a
Redis outage degrades the node instead (see fleet/registry.py).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from relay_server.config import RelayConfig
from relay_server.fleet.internal import InternalListenError, start_internal
from relay_server.fleet.redisconn import redact
from relay_server.fleet.registry import RedisRegistry
from relay_server.fleet.tokens import RedisTokenStore
from relay_server.fleet.workers import worker_index

log = logging.getLogger("relay_server.fleet")

#: Seconds a starting node waits for Redis before it gives up with a clear error.
START_WAIT = 5.0


class FleetStartError(Exception):
    """The node cannot join the fleet; the message is the one line the user sees."""


class FleetNode:
    """Registry, tokens and internal listener of one node."""

    def __init__(self, config: RelayConfig) -> None:
        assert config.cluster and config.advertise and config.internal_port
        self.config = config
        try:
            self.registry = RedisRegistry(config.cluster, config.advertise, name_grace=config.name_grace)
            self.tokens = RedisTokenStore(config.cluster)
        except ValueError as exc:  # a URL redis-py cannot use (TokenStoreError is a ValueError too)
            raise FleetStartError(str(exc)) from None
        self.internal: web.AppRunner | None = None
        #: Worker 0 of ``--workers`` (or a lone node) prints the first-start paste line; the others stay quiet.
        self.prints_token = worker_index() == 0

    async def start(self, relay: Any) -> None:
        """Join: reach Redis, load routes and tokens, open the internal listener (or FleetStartError)."""
        try:
            # The listener first: its port is taken before any connection to Redis could take it as a source port.
            self.internal = await start_internal(relay)
            if not await self.registry.start(START_WAIT) or not await self.tokens.start(START_WAIT):
                error = self.registry.link.last_error or (self.tokens.link.last_error if self.tokens.link else None)
                raise FleetStartError(
                    f"cannot reach the fleet's Redis at {redact(self.config.cluster or '')} within {START_WAIT:g} s"
                    + (f": {error}" if error else "")
                )
            watcher = getattr(getattr(relay, "agents", None), "watcher", None)
            if watcher is not None:  # a token revoked on any node: its tunnels here go at once
                self.tokens.on_change.append(watcher.sweep)
        except InternalListenError as exc:
            await self.close(release=False)
            raise FleetStartError(str(exc)) from None
        except BaseException:
            await self.close(release=False)
            raise
        log.info(
            "fleet node %s: internal listener on %s:%d, advertised as %s",
            self.registry.node_id, self.config.host, self.config.internal_port, self.config.advertise,
        )

    async def close(self, *, release: bool = True) -> None:
        """Leave: close the internal listener, give up our names (other nodes stop routing here), disconnect."""
        if self.internal is not None:
            await self.internal.cleanup()
            self.internal = None
        await self.registry.stop(release=release)
        await self.tokens.stop()

    def health(self, detail: bool = False) -> dict[str, Any]:
        """The ``status`` and ``cluster`` fields of ``/_relay/health``.

        Anyone may read whether the node is degraded; the node id (it names the host), the internal
        advertise URL, the Redis address and the token store's state are for ``detail`` readers only
        (loopback or an admin token, the rule of ``/_relay/metrics``).
        """
        degraded = self.registry.degraded or self.tokens.degraded
        cluster: dict[str, Any] = {"degraded": degraded}
        if detail:
            cluster = {
                **self.registry.status(), "degraded": degraded, "worker": worker_index(),
                "token_store": {**self.tokens.status(), "epoch": self.tokens.epoch, "restored": self.tokens.restored},
            }
        return {"status": "degraded" if degraded else "ok", "cluster": cluster}


def fleet_health(relay: Any, detail: bool = False) -> dict[str, Any]:
    """Health fields of a clustered relay (empty when the node is not set up, e.g. in unit tests)."""
    node = getattr(relay, "fleet", None)
    return node.health(detail) if isinstance(node, FleetNode) else {}


"""RedisRegistry: the fleet-wide name table, a lease per name in Redis.

``lr:route:<name>`` holds ``{"node", "url", "tok", "key"}`` (node id, its
internal listener, token id or "" on an --open relay, agent key) with a TTL of
``lease_ttl``; the node that holds the tunnel renews all its leases every
``lease_ttl / 3`` with Lua calls of at most ``RENEW_BATCH`` names each (a
script blocks Redis while it runs: 10,000 names in one call would hold it for
tens of milliseconds), so a node that dies loses its names within the TTL.  Claims and releases are Lua scripts, so "take it if free or ours"
is atomic fleet-wide, and each publishes an event on ``lr:events``.

Lookups never touch Redis: local tunnels come from a ``LocalRegistry``, other
nodes' from ``_mirror``, filled by a SCAN when the subscription (re)starts,
kept current by the events, and rebuilt every ``resync_interval`` to repair a
missed message.  Each node publishes ``alive`` with its heartbeat; a mirrored
route whose node has not been heard from for a TTL is not routed to.

The name grace lives in Redis too: an agent lost without goodbye leaves its
lease marked ``held`` for ``name_grace`` seconds, which only the same token
(the same agent key on an --open relay) may claim, on any node.

Redis down: local tunnels and the mirror keep answering lookups (a dead
node's routes are then kept until the hop to it fails, see ``drop_route``),
claims raise ``FleetUnavailable``, ``degraded`` is true.  When the
subscription comes back, the node re-asserts every name it holds (an emptied
Redis gets them back), reloads the mirror, and is healthy again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from relay_protocol.limits import seconds_from_env
from relay_server.fleet.errors import FleetUnavailable
from relay_server.fleet.redisconn import FleetLink, cancel_tasks
from relay_server.fleet.route import RemoteRoute
from relay_server.registry import Claimant, LocalRegistry, NameTaken, Owner

log = logging.getLogger("relay_server.fleet")


#: Seconds a name's lease (and a node's heartbeat) lives without renewal: a dead node's
#: names stop routing and are free after this.  ``RELAY_FLEET_LEASE_TTL`` overrides it (tests).
LEASE_TTL = seconds_from_env("RELAY_FLEET_LEASE_TTL", 10.0)

#: Seconds between two full reloads of the mirror (repairs a missed pub/sub message).
RESYNC_INTERVAL = seconds_from_env("RELAY_FLEET_RESYNC_INTERVAL", 30.0)

#: Keys fetched per SCAN/MGET round trip when the mirror is reloaded.
SCAN_BATCH = 1000

#: Leases renewed per Lua call of the heartbeat: each call blocks Redis for well under a millisecond
#: per hundred names, so other nodes' claims and lookups never wait long behind a big node.
RENEW_BATCH = 500

#: Key prefix of everything the fleet stores, and the event channel.
PREFIX = "lr:"

# Owner of a lease: "" stands for "no token" (an --open relay), compared like Owner.may_reclaim.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
local prev = ''
if cur then
  local c = cjson.decode(cur)
  if c.held == 1 then
    local may
    if c.tok == '' then may = (ARGV[3] == '' and c.key == ARGV[4]) else may = (c.tok == ARGV[3]) end
    if not may then return {'held', tostring(redis.call('PTTL', KEYS[1]))} end
  elseif c.node ~= ARGV[1] then
    if c.tok ~= ARGV[3] or c.key ~= ARGV[4] then return {'taken', c.node} end
    prev = c.node
  end
end
redis.call('SET', KEYS[1], cjson.encode({node=ARGV[1], url=ARGV[2], tok=ARGV[3], key=ARGV[4]}), 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[6], cjson.encode({ev='claim', name=ARGV[7], node=ARGV[1], url=ARGV[2], tok=ARGV[3]}))
if prev ~= '' then
  redis.call('PUBLISH', ARGV[6], cjson.encode({ev='evict', name=ARGV[7], node=prev, tok=ARGV[3], key=ARGV[4]}))
end
return {'ok', prev}
"""

_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local c = cjson.decode(cur)
if c.node ~= ARGV[1] or c.key ~= ARGV[2] or c.held == 1 then return 0 end
if tonumber(ARGV[3]) > 0 then
  c.held = 1
  redis.call('SET', KEYS[1], cjson.encode(c), 'PX', ARGV[3])
else
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', ARGV[4], cjson.encode({ev='release', name=ARGV[5], node=ARGV[1]}))
return 1
"""

# KEYS[1]: this node's heartbeat key; KEYS[2..]: route keys (one batch).  ARGV: node, url, ttl,
# channel, "1" to beat the heart too (the first batch) else "0", then (name, tok, key) per route.
# Renews ours, re-asserts missing ones, returns the names lost.
_RENEW = """
if ARGV[5] == '1' then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('PUBLISH', ARGV[4], cjson.encode({ev='alive', node=ARGV[1], url=ARGV[2]}))
end
local lost = {}
for i = 2, #KEYS do
  local base = 5 + (i - 2) * 3
  local name, tok, key = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local cur = redis.call('GET', KEYS[i])
  if not cur then
    redis.call('SET', KEYS[i], cjson.encode({node=ARGV[1], url=ARGV[2], tok=tok, key=key}), 'PX', ARGV[3])
    redis.call('PUBLISH', ARGV[4], cjson.encode({ev='claim', name=name, node=ARGV[1], url=ARGV[2], tok=tok}))
  else
    local c = cjson.decode(cur)
    if c.node == ARGV[1] and c.key == key and c.held ~= 1 then
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
    else
      lost[#lost + 1] = name
    end
  end
end
return lost
"""

_NODE_DOWN = """
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], cjson.encode({ev='down', node=ARGV[2]}))
return 1
"""


def default_node_id() -> str:
    """A node id unique in the fleet: host, process, and a random suffix (a restart is a new node)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisRegistry:
    """A ``TunnelRegistry`` shared by every node of the fleet (see the module docstring)."""

    def __init__(
        self,
        url: str,
        advertise: str,
        *,
        node_id: str | None = None,
        name_grace: float = 0.0,
        lease_ttl: float = LEASE_TTL,
        resync_interval: float = RESYNC_INTERVAL,
        prefix: str = PREFIX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = node_id or default_node_id()
        #: Where other nodes reach this node's internal listener.
        self.advertise = advertise
        self.name_grace = name_grace
        self.lease_ttl = lease_ttl
        self.resync_interval = resync_interval
        self._prefix = prefix
        self._channel = prefix + "events"
        self._clock = clock
        #: This node's tunnels; the grace period is kept in Redis, fleet-wide, not here.
        self.local = LocalRegistry(name_grace=0.0)
        #: Other nodes' routes, by name.
        self._mirror: dict[str, RemoteRoute] = {}
        #: Token id of each mirrored route that has one, and the reverse (for max_tunnels_per_token).
        self._mirror_token: dict[str, str] = {}
        self._token_names: dict[str, set[str]] = {}
        #: Monotonic time each other node was last heard from.
        self._last_seen: dict[str, float] = {}
        #: Events that arrived while a resync was reading Redis, applied again on top of its result.
        self._replay: list[str] | None = None
        #: Tunnels whose claim is on its way to Redis (ids): the heartbeat leaves their names alone.
        self._claiming: set[int] = set()
        self.link = FleetLink(url, self._channel, self._on_event, retry_interval=min(1.0, lease_ttl / 3))
        self.link.on_restored.append(self._restore)
        redis = self.link.redis
        self._claim_script = redis.register_script(_CLAIM)
        self._release_script = redis.register_script(_RELEASE)
        self._renew_script = redis.register_script(_RENEW)
        self._down_script = redis.register_script(_NODE_DOWN)
        self._tasks: list[asyncio.Task[None]] = []
        #: Names per renewal call (``RENEW_BATCH``; a test may lower it).
        self.renew_batch = RENEW_BATCH
        #: Renewal calls made so far (what the tests and a curious operator look at).
        self.renew_calls = 0

    # ---------------------------------------------------------------- lifecycle
    async def start(self, wait: float = 5.0) -> bool:
        """Subscribe, load the mirror, start the heartbeat; True once connected within ``wait`` s.

        When Redis is not reachable in time the node runs degraded and keeps trying.
        """
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self.link.run(), name="fleet-events"),
                asyncio.create_task(self._heartbeat(), name="fleet-heartbeat"),
                asyncio.create_task(self._resync_loop(), name="fleet-resync"),
            ]
        return await self.link.wait_connected(wait)

    async def stop(self, *, release: bool = True) -> None:
        """Stop the background tasks; with ``release``, say goodbye (other nodes drop our routes now).

        ``release=False`` leaves Redis as it is, as a crashed node would.
        """
        tasks, self._tasks = self._tasks, []
        await cancel_tasks(tasks)
        if release:
            for tunnel in list(self.local):
                with suppress(FleetUnavailable):
                    await self.link.call(
                        self._release_script, keys=[self._route_key(tunnel.name)],
                        args=[self.node_id, tunnel.owner.agent_key, 0, self._channel, tunnel.name],
                    )
            with suppress(FleetUnavailable):
                await self.link.call(
                    self._down_script, keys=[self._node_key(self.node_id)], args=[self._channel, self.node_id]
                )
        await self.link.close()

    # ---------------------------------------------------------------- TunnelRegistry
    async def claim(self, tunnel: Claimant) -> None:
        """Take ``tunnel.name`` on this node and fleet-wide, or raise NameTaken / FleetUnavailable."""
        name = tunnel.name
        previous = next((t for t in self.local if t.name == name), None)
        await self.local.claim(tunnel)  # same rules as a single relay against this node's own tunnels
        self._claiming.add(id(tunnel))
        try:
            status, detail = await self.link.call(
                self._claim_script,
                keys=[self._route_key(name)],
                args=[self.node_id, self.advertise, *_owner_args(tunnel.owner), self._ttl_ms(), self._channel, name],
            )
        except FleetUnavailable:
            if previous is not None and previous.owner == tunnel.owner:
                # The same agent reconnecting to us while Redis is away: the lease is ours already,
                # and the heartbeat re-asserts it when Redis is back.
                log.warning("tunnel %s replaced locally while the fleet's Redis is unreachable", name)
                return
            await self.local.release(tunnel)
            raise
        finally:
            self._claiming.discard(id(tunnel))
        if status == "ok":
            self._forget(name)
            if detail:
                log.info("tunnel %s moved here from node %s (same agent)", name, detail)
            return
        await self.local.release(tunnel)
        if status == "held":
            left = max(1, round(int(detail) / 1000))
            raise NameTaken(
                f"subdomain {name!r} is held for its previous agent, which lost its connection; "
                f"it is free in {left} s unless that agent comes back"
            )
        log.debug("claim of %s refused: held by node %s", name, detail)  # node ids stay inside the fleet
        raise NameTaken(f"subdomain {name!r} is in use by another agent")

    async def release(self, tunnel: Claimant) -> None:
        """Forget ``tunnel`` if it still holds its name; keep the name for its owner for ``name_grace`` s."""
        if next((t for t in self.local if t.name == tunnel.name), None) is not tunnel:
            return
        await self.local.release(tunnel)
        grace_ms = 0 if tunnel.said_goodbye or self.name_grace <= 0 else int(self.name_grace * 1000)
        try:
            await self.link.call(
                self._release_script,
                keys=[self._route_key(tunnel.name)],
                args=[self.node_id, tunnel.owner.agent_key, grace_ms, self._channel, tunnel.name],
            )
        except FleetUnavailable:  # the lease is no longer renewed: it lapses within the TTL
            log.warning("tunnel %s released here only (fleet Redis unreachable): its lease lapses", tunnel.name)

    def lookup(self, name: str) -> Claimant | RemoteRoute | None:
        """The local tunnel, else the route to the node holding ``name``, else None (no Redis call)."""
        tunnel = self.local.lookup(name)
        if tunnel is not None:
            return tunnel
        route = self._mirror.get(name)
        if route is None or not self._node_alive(route.node_id):
            return None  # its node stopped renewing: never route to a dead node past the TTL
        return route

    def __len__(self) -> int:
        return len(self.local)

    def __iter__(self) -> Iterator[Claimant]:
        return iter(self.local)

    # ---------------------------------------------------------------- fleet extras
    @property
    def degraded(self) -> bool:
        """Redis is unreachable: lookups answer from what is known, claims fail."""
        return self.link.degraded

    def remote_routes(self) -> list[RemoteRoute]:
        """Every route this node knows on other nodes."""
        return list(self._mirror.values())

    def drop_route(self, name: str, node_id: str) -> None:
        """Forget ``name`` on ``node_id`` (its node did not answer the hop); a later event or resync restores it."""
        route = self._mirror.get(name)
        if route is not None and route.node_id == node_id:
            self._forget(name)

    def remote_tunnels_of(self, token_id: str, except_name: str | None = None) -> int:
        """Tunnels ``token_id`` holds on other live nodes (``except_name`` not counted: the agent moving here)."""
        return sum(
            1
            for name in self._token_names.get(token_id, ())
            if name != except_name and name in self._mirror and self._node_alive(self._mirror[name].node_id)
        )

    def _node_alive(self, node_id: str) -> bool:
        """Heard from within the TTL; while Redis is down nobody can be heard, so every known node counts."""
        return self.link.degraded or self._clock() - self._last_seen.get(node_id, -1e18) <= self.lease_ttl

    def _put(self, route: RemoteRoute, token_id: str) -> None:
        """Mirror ``route`` (replacing what was known of its name)."""
        self._forget(route.name)
        self._mirror[route.name] = route
        if token_id:
            self._mirror_token[route.name] = token_id
            self._token_names.setdefault(token_id, set()).add(route.name)

    def _forget(self, name: str) -> None:
        """Drop ``name`` from the mirror."""
        self._mirror.pop(name, None)
        token_id = self._mirror_token.pop(name, None)
        if token_id is not None:
            names = self._token_names.get(token_id)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._token_names[token_id]

    def status(self) -> dict[str, Any]:
        """What ``/_relay/health`` reports about the fleet."""
        now = self._clock()
        alive = sorted(n for n, seen in self._last_seen.items() if now - seen <= self.lease_ttl)
        return {
            "node": self.node_id,
            "advertise": self.advertise,
            **self.link.status(),
            "local_tunnels": len(self.local),
            "remote_routes": len(self._mirror),
            "nodes": [self.node_id, *alive],
        }

    # ---------------------------------------------------------------- background work
    async def _heartbeat(self) -> None:
        """Renew this node's heartbeat and every lease it holds, every TTL/3."""
        while True:
            try:
                await self._renew()
            except FleetUnavailable:
                pass  # degraded; the link retries and restores
            except Exception:
                log.exception("fleet heartbeat failed")
            await asyncio.sleep(self.lease_ttl / 3)

    async def _renew(self) -> None:
        """Heartbeat, renew our leases, re-assert missing ones (``renew_batch`` names a call); evict lost names."""
        tunnels = [t for t in self.local if id(t) not in self._claiming]
        size = max(1, self.renew_batch)
        lost: list[str] = []
        for start in range(0, max(1, len(tunnels)), size):  # no tunnels: one call, the heartbeat alone
            batch = tunnels[start:start + size]
            keys = [self._node_key(self.node_id), *(self._route_key(t.name) for t in batch)]
            args: list[Any] = [self.node_id, self.advertise, self._ttl_ms(), self._channel, "1" if start == 0 else "0"]
            for tunnel in batch:
                args.extend([tunnel.name, *_owner_args(tunnel.owner)])
            self.renew_calls += 1
            lost.extend(await self.link.call(self._renew_script, keys=keys, args=args) or ())
        for name in lost:
            for tunnel in tunnels:
                if tunnel.name == name and self.local.lookup(name) is tunnel:
                    log.warning("tunnel %s lost its lease to another node; disconnecting it", name)
                    tunnel.evict("the name was taken over on another relay node")

    async def _resync_loop(self) -> None:
        """Rebuild the mirror every ``resync_interval`` s, and forget nodes not heard from."""
        while True:
            await asyncio.sleep(self.resync_interval)
            if self.link.degraded:
                continue
            try:
                await self._resync()
            except FleetUnavailable:
                pass
            except Exception:
                log.exception("fleet resync failed")

    async def _restore(self) -> None:
        """After (re)subscribing: re-assert our names, then load every other node's routes."""
        await self._renew()
        await self._resync()

    async def _resync(self) -> None:
        """Load every live route of other nodes from Redis (SCAN + MGET), replacing the mirror."""
        self._replay = []
        try:
            await self._load_mirror()
        finally:
            replay, self._replay = self._replay, None
        for data in replay:  # newer than what the SCAN may have read
            self._on_event(data)

    async def _load_mirror(self) -> None:
        redis = self.link.redis
        names: list[str] = []
        values: list[str | None] = []
        cursor = 0
        pattern = self._route_key("*")
        strip = len(self._route_key(""))
        while True:
            cursor, keys = await self.link.call(redis.scan, cursor, match=pattern, count=SCAN_BATCH)
            if keys:
                names.extend(k[strip:] for k in keys)
                values.extend(await self.link.call(redis.mget, keys))
            if cursor == 0:
                break
        routes: dict[str, RemoteRoute] = {}
        tokens: dict[str, str] = {}
        for name, raw in zip(names, values):
            lease = _decode(raw)
            node = lease.get("node") if lease is not None else None
            if not node or lease.get("held") == 1 or node == self.node_id:
                continue
            routes[name] = RemoteRoute(name, str(node), str(lease.get("url", "")))
            tokens[name] = str(lease.get("tok") or "")
        nodes = sorted({r.node_id for r in routes.values()})
        alive = await self.link.call(redis.mget, [self._node_key(n) for n in nodes]) if nodes else []
        now = self._clock()
        live_nodes = {n for n, beat in zip(nodes, alive) if beat is not None}
        self._mirror, self._mirror_token, self._token_names = {}, {}, {}
        for name, route in routes.items():
            if route.node_id in live_nodes:
                self._put(route, tokens[name])
        for node in live_nodes:
            self._last_seen[node] = max(self._last_seen.get(node, now), now)
        for node in [n for n, seen in self._last_seen.items() if now - seen > self.lease_ttl and n not in live_nodes]:
            del self._last_seen[node]

    def _on_event(self, data: str) -> None:
        """Apply one fleet event to the mirror (or evict a tunnel of ours a newer connection replaced)."""
        event = _decode(data)
        if event is None:
            return
        kind, node = event.get("ev"), str(event.get("node", ""))
        if not node:
            return
        if self._replay is not None and kind != "evict":  # an eviction is done once, never replayed
            self._replay.append(data)
        if kind == "evict":
            if node == self.node_id:
                self._evict(str(event.get("name", "")), str(event.get("key", "")))
            return
        if node == self.node_id:
            return
        if kind == "alive":
            self._last_seen[node] = self._clock()
        elif kind == "claim":
            name = str(event.get("name", ""))
            self._put(RemoteRoute(name, node, str(event.get("url", ""))), str(event.get("tok") or ""))
            self._last_seen[node] = self._clock()
        elif kind == "release":
            self.drop_route(str(event.get("name", "")), node)
        elif kind == "down":
            self._last_seen.pop(node, None)
            for name in [n for n, r in self._mirror.items() if r.node_id == node]:
                self._forget(name)

    def _evict(self, name: str, agent_key: str) -> None:
        """Close our connection for ``name``: the same agent connected to another node."""
        for tunnel in self.local:
            if tunnel.name == name and tunnel.owner.agent_key == agent_key:
                log.info("tunnel %s replaced by a new connection of the same agent on another node", name)
                tunnel.evict("replaced by a new connection from the same agent on another relay node")

    # ---------------------------------------------------------------- keys
    def _route_key(self, name: str) -> str:
        return f"{self._prefix}route:{name}"

    def _node_key(self, node_id: str) -> str:
        return f"{self._prefix}node:{node_id}"

    def _ttl_ms(self) -> int:
        return max(1, int(self.lease_ttl * 1000))


def _owner_args(owner: Owner) -> list[str]:
    """A lease owner as script arguments: token id ("" for none) and agent key."""
    return [owner.token_id or "", owner.agent_key]


def _decode(raw: str | None) -> dict[str, Any] | None:
    """A lease or event as a dict; None when missing or not ours."""
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

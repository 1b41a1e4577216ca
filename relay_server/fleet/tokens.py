"""RedisTokenStore: the fleet's tokens in Redis, served to the relay from an in-memory mirror.

It is a ``TokenStore`` (same queries: ``find``, ``authenticate``,
``authenticate_admin``, ``get``, ``reserved_by``, ``records``; same changes:
``create``, ``revoke``) whose records live in the Redis hash ``lr:tokens``
(id -> the record as JSON: the SHA-256 hash, never the token) instead of a
file.  Writes are one Lua script that checks reservations fleet-wide and
publishes on ``lr:tokens:events``.

Two modes:

- Not started (``relay-server token ... --cluster``): every query reads
  Redis with a blocking client, like TokenStore re-reads its file.
- Started (a relay node): queries are answered from the mirror, never from
  Redis, so ``authenticate`` stays sync and keeps answering while Redis is
  down.  The mirror reloads on every event and every ``reload_interval``
  seconds; after each reload the ``on_change`` callbacks run (the relay sweeps
  its tunnels there, so a token revoked on any node disconnects its agents
  everywhere at once, and the TokenWatcher's one-second sweep catches the rest).

A Redis that restarts without persistence comes back empty; applied as is,
that would look like every token revoked at once and disconnect every agent.
So every read of the mirror also reads the fleet's epoch key ``lr:epoch``
(set once, never expiring, ``<random>:<Redis time ms>``).  A node that finds
it missing or different from the one it knew never applies that read:
it first writes its copy of the records back (``HSETNX``: nothing newer is
overwritten, and the first node to find the key missing sets a new epoch),
then reads again.  A node whose Redis was merely restarted by someone else's
restore (the epoch changed less than ``RESTORE_WINDOW`` seconds ago) writes
back what it has too, except the ids revoked since (``lr:tokens:revoked``), so
a ``token revoke --cluster`` is never undone; a revoke is an explicit event
and still disconnects at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import redis
from redis.exceptions import RedisError

from relay_protocol.limits import seconds_from_env
from relay_server.fleet.errors import FleetUnavailable
from relay_server.fleet.redisconn import COMMAND_TIMEOUT, CONNECT_TIMEOUT, FleetLink, cancel_tasks, describe, redact
from relay_server.fleet.registry import PREFIX
from relay_server.tokens import TokenRecord, TokenStore, TokenStoreError

log = logging.getLogger("relay_server.fleet")

#: Seconds between two full reloads of the token mirror (repairs a missed event).
TOKEN_RELOAD_INTERVAL = seconds_from_env("RELAY_FLEET_TOKEN_RELOAD", 30.0)

#: Seconds after a new epoch (Redis found empty) during which other nodes still write their records
#: back, and for which revoked ids are remembered so that no write-back brings one back.
RESTORE_WINDOW = 60.0

# KEYS[1]: the token hash, KEYS[2]: the set of ids revoked lately.  ARGV[1]: channel, ARGV[2]: how
# long (ms) a revoked id is remembered, then (id, record JSON or "" to delete) pairs.
# Refuses (changing nothing) when a written record reserves a name another token reserves.
_WRITE = """
local changes = {}
for i = 3, #ARGV, 2 do changes[ARGV[i]] = ARGV[i + 1] end
local owners = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if changes[all[i]] == nil then
    local ok, rec = pcall(cjson.decode, all[i + 1])
    if ok and type(rec) == 'table' and type(rec.subdomains) == 'table' then
      for _, n in ipairs(rec.subdomains) do owners[n] = all[i] end
    end
  end
end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] ~= '' then
    local rec = cjson.decode(ARGV[i + 1])
    if type(rec.subdomains) == 'table' then
      for _, n in ipairs(rec.subdomains) do
        if owners[n] then return {'reserved', n} end
      end
    end
  end
end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('SADD', KEYS[2], ARGV[i])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
  redis.call('PUBLISH', ARGV[1], cjson.encode({ev = (ARGV[i + 1] == '' and 'revoke' or 'write'), id = ARGV[i]}))
end
return {'ok', ''}
"""

# KEYS[1]: the token hash, KEYS[2]: the epoch key.  The epoch ("" if missing) and every record, in one read.
_LOAD = """
return {redis.call('GET', KEYS[2]) or '', redis.call('HGETALL', KEYS[1])}
"""

# KEYS: the token hash, the epoch key, the revoked set.  ARGV[1]: the epoch this node knew ("" for none),
# ARGV[2]: a random id for a new epoch, ARGV[3]: RESTORE_WINDOW in ms, ARGV[4]: channel, then this
# node's (id, record JSON) pairs.  Sets the epoch if missing; writes the records back (never over
# one present, never one revoked lately) when the node knew an older epoch and the current one is
# new.  Returns {'same' | 'new', epoch, records written}.
_RESTORE = """
local cur = redis.call('GET', KEYS[2])
if cur and cur == ARGV[1] then return {'same', cur, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local write
if not cur then
  cur = ARGV[2] .. ':' .. now
  redis.call('SET', KEYS[2], cur)
  write = ARGV[1] ~= ''
else
  local born = tonumber(string.match(cur, ':(%d+)$') or '0') or 0
  write = ARGV[1] ~= '' and now - born <= tonumber(ARGV[3])
end
local n = 0
if write then
  for i = 5, #ARGV, 2 do
    if redis.call('SISMEMBER', KEYS[3], ARGV[i]) == 0 and redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
      n = n + 1
    end
  end
  if n > 0 then redis.call('PUBLISH', ARGV[4], cjson.encode({ev = 'restore', n = n})) end
end
return {'new', cur, n}
"""


class ClusterURLError(TokenStoreError, ValueError):
    """``--cluster`` is not a Redis URL."""


class RedisTokenStore(TokenStore):
    """Tokens shared by the fleet (see the module docstring)."""

    def __init__(self, url: str, *, prefix: str = PREFIX, reload_interval: float = TOKEN_RELOAD_INTERVAL) -> None:
        # No file: TokenStore's queries run on self._records, which this class fills from Redis.
        super().__init__(Path("."))
        self.url = url
        self.path = redact(url)  # type: ignore[assignment]  # what error messages name
        self._key = prefix + "tokens"
        self._channel = prefix + "tokens:events"
        self._epoch_key = prefix + "epoch"
        self._revoked_key = prefix + "tokens:revoked"
        #: The fleet epoch this node's mirror belongs to (None: never loaded); see the module docstring.
        self.epoch: str | None = None
        #: Token records this node wrote back into an emptied Redis, over its lifetime.
        self.restored = 0
        self.reload_interval = reload_interval
        #: The records as last read from Redis, id -> JSON (what ``_save`` diffs against).
        self._stored: dict[str, str] = {}
        self._version = 0
        try:
            self._client = redis.Redis.from_url(
                url, decode_responses=True, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT
            )
        except ValueError as exc:
            raise ClusterURLError(
                f"--cluster {redact(url)!r} is not a Redis URL (redis://HOST:PORT/DB): {exc}"
            ) from None
        self._write = self._client.register_script(_WRITE)
        self._load_script: Any = None
        self._restore_script: Any = None
        self._sync_lock = asyncio.Lock()
        self.link: FleetLink | None = None
        #: Called after each mirror reload that changed something (e.g. sweep tunnels of revoked tokens).
        self.on_change: list[Callable[[], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wanted: asyncio.Event | None = None

    # ---------------------------------------------------------------- relay mode
    async def start(self, wait: float = 5.0) -> bool:
        """Load the mirror and follow changes; True once loaded within ``wait`` s (else it keeps trying)."""
        if self.link is None:
            self.link = FleetLink(self.url, self._channel, self._on_event)
            self._load_script = self.link.redis.register_script(_LOAD)
            self._restore_script = self.link.redis.register_script(_RESTORE)
            self.link.on_restored.append(self._reload)
            self._wanted = asyncio.Event()
            self._tasks = [
                asyncio.create_task(self.link.run(), name="fleet-token-events"),
                asyncio.create_task(self._reload_loop(), name="fleet-token-reload"),
            ]
        return await self.link.wait_connected(wait)

    async def stop(self) -> None:
        """Stop following changes and close the connections."""
        tasks, self._tasks = self._tasks, []
        await cancel_tasks(tasks)
        if self.link is not None:
            await self.link.close()
        self._client.close()

    @property
    def degraded(self) -> bool:
        """The mirror cannot be refreshed (Redis unreachable): tokens are checked against the last copy."""
        return self.link is None or self.link.degraded

    def _on_event(self, _data: str) -> None:
        if self._wanted is not None:
            self._wanted.set()

    async def _reload_loop(self) -> None:
        """Reload after each event (several events, one reload) and every ``reload_interval`` s."""
        assert self._wanted is not None and self.link is not None
        while True:
            # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancel that races the event.
            waiter = asyncio.ensure_future(self._wanted.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.reload_interval)
            finally:
                waiter.cancel()
            self._wanted.clear()
            with suppress(FleetUnavailable):  # Redis down: the mirror stays as it is; tried again next round
                await self._reload()

    async def _reload(self) -> None:
        """Replace the mirror with what Redis holds now; run ``on_change`` if it differs.

        Never applies a read from another epoch (an emptied Redis): the records go back first.
        """
        assert self.link is not None
        async with self._sync_lock:
            epoch, stored = await self._load()
            if not epoch or epoch != self.epoch:
                await self._write_back()
                epoch, stored = await self._load()
                if epoch != self.epoch:  # emptied again meanwhile: keep the copy, look again soon
                    if self._wanted is not None:
                        self._wanted.set()
                    return
            changed = self._apply(stored)
        if changed:
            for callback in list(self.on_change):
                try:
                    callback()
                except Exception:
                    log.exception("token change callback failed")

    async def _load(self) -> tuple[str, dict[str, str]]:
        """The epoch ("" if missing) and every record, read atomically."""
        assert self.link is not None
        epoch, flat = await self.link.call(self._load_script, keys=[self._key, self._epoch_key])
        return str(epoch), dict(zip(flat[::2], flat[1::2]))

    async def _write_back(self) -> None:
        """Join the current epoch; if Redis lost the tokens since this node's last read, put them back."""
        assert self.link is not None
        pairs: list[str] = []
        if self.epoch is not None:
            for token_id, raw in self._stored.items():
                pairs += [token_id, raw]
        _, epoch, written = await self.link.call(
            self._restore_script,
            keys=[self._key, self._epoch_key, self._revoked_key],
            args=[self.epoch or "", secrets.token_hex(8), int(RESTORE_WINDOW * 1000), self._channel, *pairs],
        )
        if self.epoch is not None and epoch != self.epoch:
            log.warning(
                "the fleet's Redis %s has a new epoch (restarted without persistence?): "
                "wrote %d token record(s) back from this node's copy", self.path, int(written),
            )
        self.restored += int(written)
        self.epoch = str(epoch)

    # ---------------------------------------------------------------- TokenStore storage
    def _reload_if_changed(self) -> None:
        """Started: nothing (the mirror is kept fresh).  Not started: read Redis now."""
        if self.link is not None:
            return
        try:
            stored = self._client.hgetall(self._key)
        except (RedisError, OSError) as exc:
            raise TokenStoreError(f"cannot read tokens from the fleet's Redis {self.path}: {describe(exc)}") from None
        self._apply(stored)

    def _apply(self, stored: dict[str, str], force: bool = False) -> bool:
        """Make ``stored`` (id -> JSON) the current records; False if nothing changed."""
        if stored == self._stored and not force:
            return False
        records: list[TokenRecord] = []
        for token_id, raw in sorted(stored.items()):
            try:
                records.append(TokenRecord(**json.loads(raw)))
            except (ValueError, TypeError) as exc:  # one bad record must not lock everyone out
                log.error("token %s in the fleet's Redis is unreadable, ignored: %s", token_id, exc)
        self._records, self._stored = records, dict(stored)
        self._version += 1
        self._stamp = (self._version,)
        return True

    def _save(self) -> None:
        """Write what changed in ``self._records`` since the last read, atomically, and tell every node."""
        current = {r.id: json.dumps(asdict(r), separators=(",", ":"), sort_keys=True) for r in self._records}
        changes: list[str] = []
        for token_id, raw in current.items():
            if self._stored.get(token_id) != raw:
                changes += [token_id, raw]
        for token_id in self._stored.keys() - current.keys():
            changes += [token_id, ""]
        if not changes:
            return
        before = self._stored
        try:
            status, name = self._write(
                keys=[self._key, self._revoked_key],
                args=[self._channel, int(RESTORE_WINDOW * 1000), *changes],
            )
        except (RedisError, OSError) as exc:
            self._restore(before)
            raise TokenStoreError(f"cannot write tokens to the fleet's Redis {self.path}: {describe(exc)}") from None
        if status != "ok":
            self._restore(before)
            raise TokenStoreError(f"subdomain {name!r} is already reserved by another token")
        self._stored = current

    def _restore(self, stored: dict[str, str]) -> None:
        """Undo an unwritten change in memory (a refused create must not authenticate here)."""
        self._apply(stored, force=True)
        if self._wanted is not None:
            self._wanted.set()  # and look again: Redis is the truth

    def status(self) -> dict[str, Any]:
        """What health reports about the token mirror."""
        link = self.link.status() if self.link is not None else {"degraded": True}
        return {"tokens": len(self._records), "degraded": link.get("degraded"), "error": link.get("error")}

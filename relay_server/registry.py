"""Which live tunnel answers for which name: the one shared structure of the relay.

The relay talks to it only through ``TunnelRegistry`` so a fleet-wide
registry (Redis-backed, in the fleet issue) can replace ``LocalRegistry``
without touching the HTTP code.  Claims are async because a shared registry
needs a round trip; lookups are sync because they sit on every request's path
and a shared registry answers them from its cache.

The interface, all of it:

- ``await claim(tunnel)``: take ``tunnel.name`` or raise ``NameTaken``.
- ``await release(tunnel)``: the tunnel's connection ended; free its name, or
  hold it for ``name_grace`` seconds when the agent vanished without saying
  goodbye (``tunnel.said_goodbye`` is false), so a network blip does not hand
  the name to someone else.  During the grace only the same token (any of its
  agent processes; on an ``--open`` relay, the same agent key) may claim it.
- ``lookup(name)``: the tunnel taking new requests for ``name``, or None (no
  agent, an agent that is shutting down, or a name held in its grace period:
  the caller answers 502 "tunnel offline" at once).
- ``len(registry)`` and ``iter(registry)``: the live tunnels (draining ones too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a name: the token used (None on an --open relay) and the agent process."""

    token_id: str | None
    agent_key: str

    def may_reclaim(self, other: Owner) -> bool:
        """Whether ``other`` may take over a name this owner lost: same token (same agent if no token)."""
        if self.token_id is None:
            return other.token_id is None and other.agent_key == self.agent_key
        return other.token_id == self.token_id


class Claimant(Protocol):
    """What the registry needs to know about a tunnel."""

    name: str
    owner: Owner

    @property
    def accepting(self) -> bool:
        """The connection is up and takes new requests (false once either side is draining)."""

    @property
    def said_goodbye(self) -> bool:
        """The connection ended on purpose (the agent left cleanly, or the relay closed it): no grace."""

    def evict(self, reason: str) -> None:
        """Disconnect this tunnel because another connection replaced it."""


T = TypeVar("T", bound=Claimant)


class NameTaken(Exception):
    """The name is held by a different agent."""


class TunnelRegistry(Protocol[T]):
    """Name -> live tunnel."""

    async def claim(self, tunnel: T) -> None:
        """Register ``tunnel`` under its name, or raise NameTaken.

        The same owner reconnecting (same token and agent key) replaces its
        old connection, which is evicted: after a network blip the old socket
        may not have been noticed dead yet.  A holder whose agent is leaving
        (draining) gives the name up to anyone.  A name in its grace period
        goes only to the same token.
        """

    async def release(self, tunnel: T) -> None:
        """Forget ``tunnel`` if it still holds its name (a replaced one does not); maybe hold the name."""

    def lookup(self, name: str) -> T | None:
        """The tunnel taking new requests for ``name``, if any."""

    def __len__(self) -> int:
        """Number of live tunnels."""

    def __iter__(self) -> Iterator[T]:
        """Every live tunnel."""


@dataclass(frozen=True, slots=True)
class _Hold:
    """A lost agent's name, kept for its owner until ``until`` (monotonic seconds)."""

    owner: Owner
    until: float


class LocalRegistry:
    """The in-process registry of a single relay."""

    def __init__(self, name_grace: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        #: Seconds a name stays held after its agent vanished (0: freed at once).
        self.name_grace = name_grace
        self._clock = clock
        self._by_name: dict[str, Claimant] = {}
        self._held: dict[str, _Hold] = {}

    async def claim(self, tunnel: Claimant) -> None:
        """See ``TunnelRegistry.claim``."""
        name = tunnel.name
        held = self._by_name.get(name)
        if held is not None and held is not tunnel:
            if held.accepting:
                if held.owner != tunnel.owner:
                    raise NameTaken(f"subdomain {name!r} is in use by another agent")
                held.evict("replaced by a new connection from the same agent")
            elif not held.said_goodbye and not held.owner.may_reclaim(tunnel.owner):
                # Lost a moment ago, not yet released: the grace period applies already.
                raise NameTaken(f"subdomain {name!r} is held for its previous agent, which lost its connection")
            # else: its agent is leaving; it finishes its requests without the name.
        else:
            hold = self._live_hold(name)
            if hold is not None and not hold.owner.may_reclaim(tunnel.owner):
                left = max(1, round(hold.until - self._clock()))
                raise NameTaken(
                    f"subdomain {name!r} is held for its previous agent, which lost its connection; "
                    f"it is free in {left} s unless that agent comes back"
                )
        self._held.pop(name, None)
        self._by_name[name] = tunnel

    async def release(self, tunnel: Claimant) -> None:
        """See ``TunnelRegistry.release``."""
        name = tunnel.name
        if self._by_name.get(name) is not tunnel:
            return
        del self._by_name[name]
        self._expire()
        if self.name_grace > 0 and not tunnel.said_goodbye:
            self._held[name] = _Hold(tunnel.owner, self._clock() + self.name_grace)

    def lookup(self, name: str) -> Claimant | None:
        """See ``TunnelRegistry.lookup``."""
        tunnel = self._by_name.get(name)
        return tunnel if tunnel is not None and tunnel.accepting else None

    def held(self, name: str) -> bool:
        """Whether ``name`` is in its grace period (no live tunnel, kept for its last owner)."""
        return name not in self._by_name and self._live_hold(name) is not None

    def _live_hold(self, name: str) -> _Hold | None:
        hold = self._held.get(name)
        if hold is not None and hold.until <= self._clock():
            del self._held[name]
            return None
        return hold

    def _expire(self) -> None:
        """Drop every elapsed hold (keeps the table as small as the recent losses)."""
        now = self._clock()
        for name in [n for n, h in self._held.items() if h.until <= now]:
            del self._held[name]

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Claimant]:
        return iter(list(self._by_name.values()))

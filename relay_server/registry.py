"""Which live tunnel answers for which name: the one shared structure of the relay.

The relay talks to it only through ``TunnelRegistry`` so a fleet-wide
registry (Redis-backed, in the fleet issue) can replace ``LocalRegistry``
without touching the HTTP code.  Claims are async because a shared registry
needs a round trip; lookups are sync because they sit on every request's path
and a shared registry answers them from its cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a name: the token used (None on an --open relay) and the agent process."""

    token_id: str | None
    agent_key: str


class Claimant(Protocol):
    """What the registry needs to know about a tunnel."""

    name: str
    owner: Owner

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
        may not have been noticed dead yet.
        """

    async def release(self, tunnel: T) -> None:
        """Forget ``tunnel`` if it still holds its name (a replaced one does not)."""

    def lookup(self, name: str) -> T | None:
        """The live tunnel for ``name``, if any."""

    def __len__(self) -> int:
        """Number of live tunnels."""

    def __iter__(self) -> Iterator[T]:
        """Every live tunnel."""


class LocalRegistry:
    """The in-process registry of a single relay."""

    def __init__(self) -> None:
        self._by_name: dict[str, Claimant] = {}

    async def claim(self, tunnel: Claimant) -> None:
        """See ``TunnelRegistry.claim``."""
        held = self._by_name.get(tunnel.name)
        if held is not None and held is not tunnel:
            if held.owner != tunnel.owner:
                raise NameTaken(f"subdomain {tunnel.name!r} is in use by another agent")
            held.evict("replaced by a new connection from the same agent")
        self._by_name[tunnel.name] = tunnel

    async def release(self, tunnel: Claimant) -> None:
        """See ``TunnelRegistry.release``."""
        if self._by_name.get(tunnel.name) is tunnel:
            del self._by_name[tunnel.name]

    def lookup(self, name: str) -> Claimant | None:
        """See ``TunnelRegistry.lookup``."""
        return self._by_name.get(name)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Claimant]:
        return iter(list(self._by_name.values()))

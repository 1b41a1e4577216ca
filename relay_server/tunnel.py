"""A live tunnel on the relay: one agent connection and the name it holds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from relay_protocol.driver import Multiplexer
from relay_protocol.errors import ErrorCode
from relay_server.access import AccessPolicy
from relay_server.registry import Owner


@dataclass(eq=False, slots=True)
class Tunnel:
    """What the front needs to route a public request to an agent."""

    name: str
    public_url: str
    owner: Owner
    mux: Multiplexer
    remote_addr: str = ""
    client: str = ""
    access: AccessPolicy = field(default_factory=AccessPolicy)
    connected_at: float = field(default_factory=time.time)
    requests: int = 0

    def evict(self, reason: str) -> None:
        """Close this agent's connection (a newer one of the same agent took over)."""
        self.mux.close(ErrorCode.GOING_AWAY, reason)

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

    @property
    def accepting(self) -> bool:
        """Up and taking new requests: not closed, and neither side draining."""
        return self.mux.accepting_streams

    @property
    def said_goodbye(self) -> bool:
        """The connection ends on purpose, so the name needs no grace period.

        The agent said so (GOAWAY NO_ERROR when it stops, or GOING_AWAY from an
        older agent), or the relay closed it itself (eviction, revoked token,
        shutdown).  A lost socket, a missed heartbeat or a protocol error is no
        goodbye: the agent will be back and its name waits for it.
        """
        mux = self.mux
        return mux.peer_draining or mux.closed_locally or mux.close_code == ErrorCode.GOING_AWAY

    def evict(self, reason: str) -> None:
        """Close this agent's connection (a newer one of the same agent took over).

        A connection already draining keeps running: its requests finish, and it
        closes by itself once they have.
        """
        if self.mux.draining or self.mux.peer_draining:
            return
        self.mux.close(ErrorCode.GOING_AWAY, reason)

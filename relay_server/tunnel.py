"""A live tunnel on the relay: one agent connection and the name it holds."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from relay_protocol.driver import Multiplexer, MuxStream
from relay_protocol.errors import ErrorCode
from relay_server.access import AccessPolicy
from relay_server.registry import Owner


class ResponseDeadlines:
    """Resets streams whose response head is overdue (TIMEOUT), with one timer for all of them.

    A timer per request (``call_later`` then ``cancel``) costs more than the
    rest of the bookkeeping of a small request; here a request is one dict
    entry, and the one timer wakes at the earliest deadline, expires what is
    overdue and sleeps until the next (about once per timeout under load).
    """

    __slots__ = ("_due", "_timer", "_timer_at", "_expired", "_loop")

    def __init__(self) -> None:
        #: Stream -> loop time its response head is due by, in the order they were added.
        self._due: dict[MuxStream, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        #: Streams reset here whose request has not yet called ``done``.
        self._expired: set[MuxStream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, stream: MuxStream, timeout: float) -> None:
        """Reset ``stream`` if its response head has not arrived ``timeout`` s from now."""
        loop = self._loop
        if loop is None:  # looked up once: get_running_loop() costs a getpid() syscall on Python 3.11
            loop = self._loop = asyncio.get_running_loop()
        due = loop.time() + timeout
        self._due[stream] = due
        if self._timer is None:
            self._arm(loop, due)
        elif due < self._timer_at:  # a shorter timeout than the one the timer waits for
            self._timer.cancel()
            self._arm(loop, due)

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._timer = loop.call_at(when, self._fire)
        self._timer_at = when

    def done(self, stream: MuxStream) -> bool:
        """Stop watching ``stream``; True if it was reset here because its deadline passed."""
        self._due.pop(stream, None)
        if not self._expired:
            return False
        try:
            self._expired.remove(stream)
        except KeyError:
            return False
        return True

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None  # set by the watch() that armed the timer
        now = loop.time() + _CLOCK_SLACK  # timers may fire a hair early: a deadline that close has passed
        next_due: float | None = None
        for stream, due in list(self._due.items()):  # at most max_streams, about once per timeout
            if due > now:
                if next_due is None or due < next_due:
                    next_due = due
                continue
            del self._due[stream]
            if not stream.response.done():
                self._expired.add(stream)
                stream.reset(ErrorCode.TIMEOUT, "no response in time")
        if next_due is not None:
            self._arm(loop, next_due)


#: Seconds early a timer may fire (event loop clocks tick in milliseconds).
_CLOCK_SLACK = 0.001


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
    #: Times out requests whose response head the agent is slow to send.
    deadlines: ResponseDeadlines = field(default_factory=ResponseDeadlines)

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

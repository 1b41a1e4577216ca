"""The inspector's memory: a bounded history of exchanges and live subscribers.

``Recorder`` is an ``Observer``: the forwarder calls it from the event loop
as each exchange starts, gets its answer and ends. It keeps the newest
``limit`` exchanges (bodies are already capped by ``Exchange.capture_limit``,
so memory is bounded by ``limit * 2 * capture_limit``) and pushes every event
to each subscriber's bounded queue. A subscriber that falls behind loses its
backlog and gets one ``resync`` event instead, so a stalled browser tab can
never make the agent's memory grow.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

from relay_client.exchange import Exchange
from relay_client.inspector.metrics import TunnelMetrics

#: Exchanges kept by default (ngrok evicts by size; we evict by count).
DEFAULT_HISTORY = 500

#: Events a subscriber may have waiting before it is told to resync.
SUBSCRIBER_BACKLOG = 256


@dataclass(frozen=True, slots=True)
class Event:
    """One thing a subscriber is told: ``request``, ``update``, ``clear``, ``resync`` or ``close``."""

    kind: str
    exchange: Exchange | None = None


class Subscription:
    """A live feed of recorder events (used by the page's event stream)."""

    def __init__(self, recorder: Recorder, backlog: int = SUBSCRIBER_BACKLOG) -> None:
        self._recorder = recorder
        self.queue: asyncio.Queue[Event] = asyncio.Queue(backlog)

    def push(self, event: Event) -> None:
        """Queue ``event``; if the backlog is full, drop it all and ask for a resync."""
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Event("close" if event.kind == "close" else "resync"))

    async def get(self) -> Event:
        """The next event (waits)."""
        return await self.queue.get()

    def close(self) -> None:
        """Stop receiving events."""
        self._recorder.unsubscribe(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Recorder:
    """Observer keeping the newest ``limit`` exchanges, with lookup by id and live subscribers."""

    def __init__(self, limit: int = DEFAULT_HISTORY) -> None:
        if limit < 1:
            raise ValueError("the inspector history must hold at least one exchange")
        self.limit = limit
        self.metrics = TunnelMetrics()
        # prometheus_client is imported here, not at module load: an agent run with
        # --no-inspect has no recorder and never pays for it.
        from relay_client.inspector.agent_metrics import AgentMetrics

        #: The same traffic in Prometheus form (``GET /metrics`` on the inspector).
        self.prometheus = AgentMetrics()
        self._history: OrderedDict[str, Exchange] = OrderedDict()
        self._subscribers: set[Subscription] = set()

    # -- Observer -------------------------------------------------------------------------

    def request_started(self, exchange: Exchange) -> None:
        """Remember a new exchange (evicting the oldest past the bound) and announce it."""
        self.add(exchange)

    def response_started(self, exchange: Exchange) -> None:
        """Announce the response head."""
        if exchange.id in self._history:
            self._publish(Event("update", exchange))

    def finished(self, exchange: Exchange) -> None:
        """Count the exchange in the metrics and announce its end."""
        self.metrics.finished(exchange.duration or 0.0)
        self.prometheus.finished(exchange)
        if exchange.id in self._history:
            self._publish(Event("update", exchange))

    # -- history --------------------------------------------------------------------------

    def add(self, exchange: Exchange) -> None:
        """Record ``exchange`` as the newest entry."""
        self.metrics.started()
        self._history[exchange.id] = exchange
        self._history.move_to_end(exchange.id)
        while len(self._history) > self.limit:
            self._history.popitem(last=False)
        self._publish(Event("request", exchange))

    def get(self, exchange_id: str) -> Exchange | None:
        """The exchange with this id, if still in the history."""
        return self._history.get(exchange_id)

    def newest_first(self) -> Iterator[Exchange]:
        """Every remembered exchange, newest first."""
        return reversed(self._history.values())

    def __len__(self) -> int:
        return len(self._history)

    def clear(self) -> None:
        """Forget every exchange (metrics keep counting) and tell subscribers."""
        self._history.clear()
        self._publish(Event("clear"))

    # -- subscribers ----------------------------------------------------------------------

    def subscribe(self, backlog: int = SUBSCRIBER_BACKLOG) -> Subscription:
        """A new live feed; close it (or use ``with``) when done."""
        subscription = Subscription(self, backlog)
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop feeding ``subscription``."""
        self._subscribers.discard(subscription)

    @property
    def subscriber_count(self) -> int:
        """Live feeds open right now."""
        return len(self._subscribers)

    def close_subscribers(self) -> None:
        """Tell every feed to end (the inspector is stopping)."""
        for subscription in list(self._subscribers):
            subscription.push(Event("close"))
        self._subscribers.clear()

    def _publish(self, event: Event) -> None:
        for subscription in list(self._subscribers):
            subscription.push(event)

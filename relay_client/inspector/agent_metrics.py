"""The agent's Prometheus metrics, served on the inspector port at ``GET /metrics``.

``AgentMetrics`` keeps its own ``CollectorRegistry`` (never the library's
global one, so agents in one process, as the library runs them, never mix).
The recorder feeds it each finished exchange, kept in plain tallies
(``relay_protocol.tallies``); those, the connection gauge and the reconnect
counter become metric families when scraped.  Labels are
bounded (status class, standard method), never a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from relay_client.exchange import Exchange
from relay_protocol.tallies import RequestTallies, TallyNames


class TunnelState(Protocol):
    """What the scrape reads from the agent (``relay_client.agent.TunnelState``)."""

    @property
    def connected(self) -> bool:
        """Whether the websocket to the relay is up."""

    @property
    def reconnects(self) -> int:
        """How many times the tunnel came back after a loss."""


class _Connection(Collector):
    """``relay_client_connected`` and ``relay_client_reconnects_total`` from the agent's state."""

    def __init__(self) -> None:
        self.state: TunnelState | None = None

    def collect(self) -> Iterator[Metric]:
        """The two series, as of now (zero before an agent is attached)."""
        state = self.state
        connected = 1 if state is not None and state.connected else 0
        reconnects = state.reconnects if state is not None else 0
        yield GaugeMetricFamily("relay_client_connected", "1 while the tunnel to the relay is up.", value=connected)
        yield CounterMetricFamily(
            "relay_client_reconnects", "Times the tunnel came back after a loss.", value=reconnects
        )


#: The agent's per-exchange families.
_TALLY_NAMES = TallyNames(
    requests=("relay_client_requests", "Requests forwarded to the local server, by status class and method."),
    duration=("relay_client_request_duration_seconds", "Request duration at the agent, head in to exchange end."),
    bytes_in=("relay_client_bytes_in", "Request body bytes received from the relay."),
    bytes_out=("relay_client_bytes_out", "Response body bytes sent back to the relay."),
    errors=("relay_client_request_errors", "Exchanges that ended with an error."),
)


class AgentMetrics:
    """Requests, durations and bytes through this agent, plus its connection state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tallies = RequestTallies(_TALLY_NAMES)
        self.registry.register(self.tallies)
        self._connection = _Connection()
        self.registry.register(self._connection)

    def watch(self, state: TunnelState) -> None:
        """Read the connection gauge and reconnect count from ``state`` when scraped."""
        self._connection.state = state

    def finished(self, exchange: Exchange) -> None:
        """Count one finished exchange."""
        tallies = self.tallies
        tallies.requests.count(exchange.status, exchange.method)
        tallies.duration.observe(exchange.duration or 0.0)
        tallies.bytes_in += exchange.request_bytes
        tallies.bytes_out += exchange.response_bytes
        if exchange.error:
            tallies.errors += 1

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's Accept asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

"""The agent's Prometheus metrics, served on the inspector port at ``GET /metrics``.

``AgentMetrics`` keeps its own ``CollectorRegistry`` (never the library's
global one, so agents in one process, as the library runs them, never mix).
The recorder feeds it each finished exchange; the connection gauge and the
reconnect counter are read from the agent's state when scraped.  Labels are
bounded (status class, standard method), never a path.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from relay_client.exchange import Exchange

#: Methods that get their own label value; anything else is ``other``.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

#: Seconds: request duration buckets (streams and long polls reach minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class TunnelState(Protocol):
    """What the scrape reads from the agent (``relay_client.agent.TunnelState``)."""

    @property
    def connected(self) -> bool:
        """Whether the websocket to the relay is up."""

    @property
    def reconnects(self) -> int:
        """How many times the tunnel came back after a loss."""


def status_class(status: int | None) -> str:
    """``2xx`` for 204; ``none`` when no response came (local server unreachable, aborted)."""
    if status is None:
        return "none"
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def method_class(method: str) -> str:
    """The method itself if standard, else ``other``."""
    upper = method.upper()
    return upper if upper in STANDARD_METHODS else "other"


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


class AgentMetrics:
    """Requests, durations and bytes through this agent, plus its connection state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "relay_client_requests", "Requests forwarded to the local server, by status class and method.",
            ["status_class", "method"], registry=r,
        )
        self.duration = Histogram(
            "relay_client_request_duration_seconds", "Request duration at the agent, head in to exchange end.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.bytes_in = Counter("relay_client_bytes_in", "Request body bytes received from the relay.", registry=r)
        self.bytes_out = Counter("relay_client_bytes_out", "Response body bytes sent back to the relay.", registry=r)
        self.errors = Counter("relay_client_request_errors", "Exchanges that ended with an error.", registry=r)
        self._connection = _Connection()
        r.register(self._connection)

    def watch(self, state: TunnelState) -> None:
        """Read the connection gauge and reconnect count from ``state`` when scraped."""
        self._connection.state = state

    def finished(self, exchange: Exchange) -> None:
        """Count one finished exchange."""
        self.requests.labels(status_class=status_class(exchange.status), method=method_class(exchange.method)).inc()
        self.duration.observe(exchange.duration or 0.0)
        if exchange.request_bytes:
            self.bytes_in.inc(exchange.request_bytes)
        if exchange.response_bytes:
            self.bytes_out.inc(exchange.response_bytes)
        if exchange.error:
            self.errors.inc()

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's Accept asks for."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

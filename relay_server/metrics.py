"""Prometheus metrics of one relay, served at ``GET /_relay/metrics``.

``RelayMetrics`` is a ``RelayObserver``: the relay's hooks turn into
counters and histograms in a ``CollectorRegistry`` of its own (never
prometheus_client's global one, so two relays in one process never mix).
Gauges of live state (tunnels, open streams) are read from the tunnel
registry when scraped.  Labels are bounded: status class, method (the
standard ones, else ``other``), limit and refusal code names; never a
tunnel name, path or address.

Only a loopback caller (the socket's address; behind a trusted proxy, the
address it forwards) or one with ``Authorization: Bearer <admin token>`` may
read them: request counts and limit hits tell an outsider too much.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from relay_protocol.tallies import RequestTallies, TallyNames
from relay_server.access import client_address
from relay_server.config import RelayConfig
from relay_server.observer import RelayObserver, RequestRecord, find_observer
from relay_server.tokens import TokenStoreError, bearer_token

METRICS_PATH = "/_relay/metrics"

class _Mux(Protocol):
    open_streams: int


class _LiveTunnel(Protocol):
    mux: _Mux


class _LiveState(Collector):
    """Gauges read at scrape time from the tunnel registry."""

    def __init__(self, tunnels: Iterable[_LiveTunnel]) -> None:
        self.tunnels = tunnels

    def collect(self) -> Iterator[Metric]:
        """The two gauges, as of now."""
        live = list(self.tunnels)
        streams = 0
        for tunnel in live:
            mux = getattr(tunnel, "mux", None)
            streams += int(getattr(mux, "open_streams", 0) or 0)
        yield GaugeMetricFamily("relay_tunnels_connected", "Agents connected right now (one tunnel each).", value=len(live))
        yield GaugeMetricFamily("relay_streams_open", "Streams open on all tunnels right now.", value=streams)


#: The relay's per-request families.
_TALLY_NAMES = TallyNames(
    requests=("relay_requests", "Public requests to tunnels, by status class and method."),
    duration=("relay_request_duration_seconds", "Public request duration, head in to last response byte."),
    bytes_in=("relay_bytes_in", "Request body bytes received from public clients."),
    bytes_out=("relay_bytes_out", "Response body bytes sent to public clients."),
    errors=("relay_request_errors", "Public requests that ended early or with a relay error."),
    ttfb=("relay_request_ttfb_seconds", "Time from a public request's head to its response head."),
)


class RelayMetrics(RelayObserver):
    """The relay's Prometheus metrics, fed by the observer hooks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tallies = RequestTallies(_TALLY_NAMES)
        r.register(self.tallies)
        self.auth_failures = Counter("relay_agent_auth_failures", "Agent logins refused (no, bad or revoked token).", registry=r)
        self.limit_hits = Counter("relay_limit_hits", "Requests or connections refused by a named limit.", ["limit"], registry=r)
        self.connects = Counter("relay_agent_connects", "Agent tunnels established (reconnects included).", registry=r)
        self.reconnects = Counter("relay_agent_reconnects", "Agent tunnels re-established by an agent that held the name before.", registry=r)
        self.disconnects = Counter("relay_agent_disconnects", "Agent tunnels that went down.", registry=r)
        self.refused = Counter("relay_agent_handshakes_refused", "Agent handshakes refused, by wire code.", ["code"], registry=r)
        self._live: _LiveState | None = None

    def watch(self, tunnels: Iterable[Any]) -> None:
        """Read the tunnel and stream gauges from ``tunnels`` (the relay's registry) when scraped."""
        if self._live is None:
            self._live = _LiveState(tunnels)
            self.registry.register(self._live)
        else:
            self._live.tunnels = tunnels

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type): Prometheus text, or OpenMetrics if ``accept`` (the scraper's Accept) asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- hooks ----------------------------------------------------------------------------

    def agent_connected(self, name: str, remote: str, client: str, reconnect: bool, token_id: str | None = None) -> None:
        """Count a connect (and a reconnect)."""
        self.connects.inc()
        if reconnect:
            self.reconnects.inc()

    def agent_disconnected(self, name: str, remote: str, reason: str, token_id: str | None = None) -> None:
        """Count a disconnect."""
        self.disconnects.inc()

    def agent_refused(self, remote: str, code: str, reason: str, token_id: str | None = None) -> None:
        """Count a refusal by its wire code name."""
        self.refused.labels(code=_bounded(code)).inc()

    def auth_failed(self, remote: str, reason: str, token_id: str | None = None) -> None:
        """Count a failed agent login."""
        self.auth_failures.inc()

    def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
        """Count a limit's refusal."""
        self.limit_hits.labels(limit=_bounded(limit)).inc()

    def request_finished(self, record: RequestRecord) -> None:
        """Count, time and size a finished request."""
        tallies = self.tallies
        tallies.requests.count(record.status, record.method)
        tallies.duration.observe(record.duration)
        if record.ttfb is not None:
            tallies.ttfb.observe(record.ttfb)
        tallies.bytes_in += record.bytes_in
        tallies.bytes_out += record.bytes_out
        if record.error:
            tallies.errors += 1


def _bounded(value: str) -> str:
    """A label value from code (limit or wire-code names): identifiers only, capped in length."""
    cleaned = "".join(c for c in str(value) if c.isalnum() or c in "_-.")[:64]
    return cleaned or "unknown"


# -- the endpoint -------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def may_read_metrics(request: web.BaseRequest, config: RelayConfig, tokens: Any) -> bool:
    """Loopback callers (by socket, or as forwarded by a trusted proxy) and admin tokens may."""
    if _is_loopback(client_address(request, config)):
        return True
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None:
        return False
    try:
        return bool(tokens.authenticate_admin(token))
    except TokenStoreError:  # an unreadable store admits nobody
        return False


def _forbidden(message: str, status: int = 403) -> web.Response:
    return web.json_response({"error": "forbidden" if status == 403 else "not-found", "message": message}, status=status)


async def metrics_endpoint(request: web.BaseRequest, relay: Any) -> web.Response:
    """``GET /_relay/metrics`` for ``relay`` (an ``app.Relay``): Prometheus text, or 403 JSON."""
    if not may_read_metrics(request, relay.config, relay.tokens):
        return _forbidden("metrics are readable from this machine only, or with an admin token (Authorization: Bearer ...)")
    metrics = find_observer(relay.observer, RelayMetrics)
    if metrics is None:
        return _forbidden("this relay collects no metrics", status=404)
    if request.method not in ("GET", "HEAD"):
        return web.json_response({"error": "method-not-allowed", "message": "use GET"}, status=405, headers={"Allow": "GET, HEAD"})
    metrics.watch(relay.registry)
    body, content_type = metrics.render(request.headers.get("Accept"))
    return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

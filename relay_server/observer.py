"""Hooks the relay calls at every event worth counting or logging.

The relay's code calls one ``RelayObserver`` at each point (an agent
connected, a login failed, a limit refused something, a request finished);
metrics and structured logs are observers, so the hot path knows nothing of
Prometheus or log formats.  The base class does nothing and is what tests
and a bare ``Relay`` get.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    """One finished public request, as the access log and the metrics see it."""

    tunnel: str
    stream_id: int
    method: str
    path: str
    status: int
    #: Seconds from the request head arriving to the last response byte (or the failure).
    duration: float
    #: Seconds from the request head arriving to the response head (None: no response head).
    ttfb: float | None
    bytes_in: int
    bytes_out: int
    client: str
    #: Why it ended early (client abort, agent reset, timeout...), or "".
    error: str = ""


class RelayObserver:
    """No-op base: override what you watch."""

    def agent_connected(self, name: str, remote: str, client: str, reconnect: bool) -> None:
        """A tunnel came up (``reconnect``: the same agent had held this name before)."""

    def agent_disconnected(self, name: str, remote: str, reason: str) -> None:
        """A tunnel went down."""

    def agent_refused(self, remote: str, code: str, reason: str) -> None:
        """A handshake was refused (bad name, name taken, too many tunnels...)."""

    def auth_failed(self, remote: str, reason: str) -> None:
        """An agent presented no token, a malformed one, or one that is unknown, revoked or expired."""

    def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
        """A named limit refused something (``limit``: the RelayConfig field or constant's name)."""

    def request_started(self, tunnel: str) -> None:
        """A public request was handed to a tunnel (a stream is about to open)."""

    def request_finished(self, record: RequestRecord) -> None:
        """A public request ended, completely or not."""

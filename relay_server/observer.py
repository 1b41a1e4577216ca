"""Hooks the relay calls at every event worth counting or logging.

The relay's code calls one ``RelayObserver`` at each point (an agent
connected, a login failed, a limit refused something, a request finished);
metrics and structured logs are observers, so the hot path knows nothing of
Prometheus or log formats.  The base class does nothing and is what tests
and a bare ``Relay`` get; ``Observers`` fans one call out to several (the
served relay has metrics and the event log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("relay_server.observer")


@dataclass(slots=True)
class RequestRecord:
    """One finished public request, as the access log and the metrics see it."""

    tunnel: str
    stream_id: int
    method: str
    #: The request path without its query string (queries carry secrets).
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
    """No-op base: override what you watch.

    ``token_id`` (where given) is the token's public id (``tok_...``), never the token.
    """

    def agent_connected(
        self, name: str, remote: str, client: str, reconnect: bool, token_id: str | None = None
    ) -> None:
        """A tunnel came up (``reconnect``: the same agent had held this name before)."""

    def agent_disconnected(self, name: str, remote: str, reason: str, token_id: str | None = None) -> None:
        """A tunnel went down."""

    def agent_refused(self, remote: str, code: str, reason: str, token_id: str | None = None) -> None:
        """A handshake was refused (bad name, name taken, too many tunnels...)."""

    def auth_failed(self, remote: str, reason: str, token_id: str | None = None) -> None:
        """An agent presented no token, a malformed one, or one that is unknown, revoked or expired."""

    def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
        """A named limit refused something (``limit``: the RelayConfig field or constant's name)."""

    def request_started(self, tunnel: str) -> None:
        """A public request was handed to a tunnel (a stream is about to open)."""

    def request_finished(self, record: RequestRecord) -> None:
        """A public request ended, completely or not."""


_HOOKS = tuple(name for name in vars(RelayObserver) if not name.startswith("_"))


class Observers(RelayObserver):
    """Calls every hook on each of several observers; one failing never stops the others or the relay."""

    def __init__(self, observers: Iterable[RelayObserver]) -> None:
        self.observers = list(observers)
        # Per hook, only the members that override it: a request's hooks then skip no-op calls.
        self._hooks: dict[str, list[Callable[..., None]]] = {
            hook: [
                getattr(member, hook)
                for member in self.observers
                if getattr(type(member), hook, None) is not getattr(RelayObserver, hook)
            ]
            for hook in _HOOKS
        }
        self._started = self._hooks["request_started"]
        self._finished = self._hooks["request_finished"]

    def __iter__(self) -> Iterator[RelayObserver]:
        return iter(self.observers)

    def _each(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for method in self._hooks[hook]:
            try:
                method(*args, **kwargs)
            except Exception:  # an observer's bug must not break the request or the agent it watches
                log.exception("observer %s failed in %s", type(method.__self__).__name__, hook)

    def agent_connected(
        self, name: str, remote: str, client: str, reconnect: bool, token_id: str | None = None
    ) -> None:
        """See ``RelayObserver``."""
        self._each("agent_connected", name, remote, client, reconnect, token_id=token_id)

    def agent_disconnected(self, name: str, remote: str, reason: str, token_id: str | None = None) -> None:
        """See ``RelayObserver``."""
        self._each("agent_disconnected", name, remote, reason, token_id=token_id)

    def agent_refused(self, remote: str, code: str, reason: str, token_id: str | None = None) -> None:
        """See ``RelayObserver``."""
        self._each("agent_refused", remote, code, reason, token_id=token_id)

    def auth_failed(self, remote: str, reason: str, token_id: str | None = None) -> None:
        """See ``RelayObserver``."""
        self._each("auth_failed", remote, reason, token_id=token_id)

    def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
        """See ``RelayObserver``."""
        self._each("limit_hit", limit, tunnel, remote)

    # The two per-request hooks loop over their own list directly: no *args tuple, no hook lookup.
    def request_started(self, tunnel: str) -> None:
        """See ``RelayObserver``."""
        for method in self._started:
            try:
                method(tunnel)
            except Exception:
                log.exception("observer %s failed in request_started", type(method.__self__).__name__)

    def request_finished(self, record: RequestRecord) -> None:
        """See ``RelayObserver``."""
        for method in self._finished:
            try:
                method(record)
            except Exception:
                log.exception("observer %s failed in request_finished", type(method.__self__).__name__)


def find_observer(observer: RelayObserver, kind: type[Any]) -> Any | None:
    """The first observer of type ``kind`` in ``observer`` (itself or, for ``Observers``, one of its members)."""
    if isinstance(observer, kind):
        return observer
    if isinstance(observer, Observers):
        for member in observer:
            found = find_observer(member, kind)
            if found is not None:
                return found
    return None

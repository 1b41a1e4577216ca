"""One proxied request and its response, as the console and the inspector see it.

The forwarder fills an ``Exchange`` as bytes pass and tells its observers at
three moments: request head seen, response head seen, exchange finished.
Bodies are captured only up to a bound (``capture_limit``), so the
inspector's memory stays flat whatever the traffic; the full byte counts are
kept regardless.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Protocol

#: Default bytes of each body kept for the inspector.
DEFAULT_CAPTURE_LIMIT = 128 * 1024

_ids = itertools.count(1)


@dataclass(eq=False, slots=True)
class Exchange:
    """Request and response of one stream."""

    method: str
    target: str
    request_headers: list[tuple[str, str]]
    remote_addr: str = ""
    capture_limit: int = DEFAULT_CAPTURE_LIMIT
    #: "req_NNNNNN_MMMMMMMM" (a counter and the start in ms), set from ``started`` when not given.
    id: str = ""
    started: float = field(default_factory=time.time)
    _t0: float = field(default_factory=time.monotonic)
    request_body: bytearray = field(default_factory=bytearray)
    request_bytes: int = 0
    #: The whole request body has arrived (replay needs it).
    request_complete: bool = False
    status: int | None = None
    reason: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    response_body: bytearray = field(default_factory=bytearray)
    response_bytes: int = 0
    duration: float | None = None
    error: str | None = None
    #: True for a replay started from the inspector.
    replay: bool = False
    websocket: bool = False

    def __post_init__(self) -> None:
        if not self.id:
            self.id = f"req_{next(_ids):06d}_{int(self.started * 1000) % 10**8:08d}"

    def add_request_body(self, chunk: bytes | memoryview) -> None:
        """Count (and within the limit, keep) request body bytes."""
        self.request_bytes += len(chunk)
        room = self.capture_limit - len(self.request_body)
        if room > 0:
            self.request_body += chunk[:room]

    def add_response_body(self, chunk: bytes | memoryview) -> None:
        """Count (and within the limit, keep) response body bytes."""
        self.response_bytes += len(chunk)
        room = self.capture_limit - len(self.response_body)
        if room > 0:
            self.response_body += chunk[:room]

    def finish(self, error: str | None = None) -> None:
        """Record the end (and why, if it failed)."""
        if self.duration is None:
            self.duration = time.monotonic() - self._t0
        if error and not self.error:
            self.error = error

    @property
    def request_truncated(self) -> bool:
        """The captured request body is shorter than the real one."""
        return self.request_bytes > len(self.request_body)

    @property
    def response_truncated(self) -> bool:
        """The captured response body is shorter than the real one."""
        return self.response_bytes > len(self.response_body)


class Observer(Protocol):
    """Something that wants to see exchanges (console log, inspector)."""

    def request_started(self, exchange: Exchange) -> None:
        """The request head arrived; the body may still be coming."""

    def response_started(self, exchange: Exchange) -> None:
        """The local server answered with a head."""

    def finished(self, exchange: Exchange) -> None:
        """The exchange ended (``exchange.error`` says if it failed)."""

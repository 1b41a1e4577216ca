"""A server-sent events parser (WHATWG HTML, "event stream interpretation"): bytes in, events out, no I/O.

Each event is stamped with the arrival time of the bytes that completed it,
which is what the buffering check looks at.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay_client.check.limits import MAX_SSE_EVENT_BYTES, MAX_SSE_EVENTS


class SSEError(ValueError):
    """The stream broke a limit (event too large, too many events)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event."""

    event: str
    data: str
    id: str | None
    arrived: float


class SSEParser:
    """Feed chunks with their arrival time; collect the events they complete."""

    def __init__(self, max_event_bytes: int = MAX_SSE_EVENT_BYTES, max_events: int = MAX_SSE_EVENTS) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_events = max_events
        self.events: list[Event] = []
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._size = 0
        self._fields_seen = False
        self._skip_lf = False

    def feed(self, chunk: bytes, arrived: float) -> list[Event]:
        """Parse ``chunk``; the events it completed (also appended to ``self.events``)."""
        self._buffer += chunk
        completed: list[Event] = []
        while True:
            line, found = self._next_line()
            if not found:
                break
            event = self._line(line, arrived)
            if event is not None:
                completed.append(event)
        if len(self._buffer) > self.max_event_bytes:
            raise SSEError(f"an SSE line passed {self.max_event_bytes} bytes")
        return completed

    def _next_line(self) -> tuple[bytes, bool]:
        if self._skip_lf and self._buffer:
            # The previous line ended in CR at a chunk's end; a LF starting this chunk belongs to it.
            if self._buffer.startswith(b"\n"):
                self._buffer = self._buffer[1:]
            self._skip_lf = False
        lf, cr = self._buffer.find(b"\n"), self._buffer.find(b"\r")
        if lf < 0 and cr < 0:
            return b"", False
        if cr < 0 or (0 <= lf < cr):
            line, self._buffer = self._buffer[:lf], self._buffer[lf + 1 :]
            return line, True
        if cr + 1 == len(self._buffer):
            self._skip_lf = True
            line, self._buffer = self._buffer[:cr], b""
            return line, True
        skip = 2 if self._buffer[cr + 1] == 0x0A else 1
        line, self._buffer = self._buffer[:cr], self._buffer[cr + skip :]
        return line, True

    def _line(self, raw: bytes, arrived: float) -> Event | None:
        if not raw:
            return self._dispatch(arrived)
        text = raw.decode("utf-8", "replace")
        if text.startswith(":"):
            return None  # comment (keep-alive)
        name, sep, value = text.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        self._size += len(raw)
        if self._size > self.max_event_bytes:
            raise SSEError(f"an SSE event passed {self.max_event_bytes} bytes")
        if name == "data":
            self._data.append(value)
            self._fields_seen = True
        elif name == "event":
            self._event = value
            self._fields_seen = True
        elif name == "id" and "\x00" not in value:
            self._id = value
            self._fields_seen = True
        return None

    def _dispatch(self, arrived: float) -> Event | None:
        # Unlike a browser's EventSource we also dispatch data-less events: MCP servers send
        # "id: X" with empty data first (a resumption primer), and its timing is telling.
        if not self._fields_seen:
            return None
        event = Event(self._event or "message", "\n".join(self._data), self._id, arrived)
        self._data, self._event, self._size, self._fields_seen = [], "", 0, False
        if len(self.events) >= self.max_events:
            raise SSEError(f"more than {self.max_events} SSE events in one response")
        self.events.append(event)
        return event

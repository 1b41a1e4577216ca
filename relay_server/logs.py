"""The relay's log lines: ``--log-format text`` (human) or ``json`` (one object a line).

``configure_logging`` installs one stderr handler for every logger.  In JSON
each record is ``{"time", "level", "logger", "message", ...fields}``, where
fields come from ``extra={"fields": {...}}``.  ``EventLog`` is the observer
that writes one access line per public request and, in JSON, one line per
agent event, with the fields a log pipeline filters on.

No line may carry a secret: the relay never logs headers, request paths lose
their query string, and as a last guard every formatted line has anything
shaped like a token or an ``Authorization`` value masked.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from relay_server.observer import RelayObserver, RequestRecord

#: Text lines keep today's shape.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

ACCESS_LOGGER = "relay_server.access"
access_log = logging.getLogger(ACCESS_LOGGER)
event_log = logging.getLogger("relay_server.events")

#: Token-shaped strings (``lr_`` + 20 or more URL-safe characters) and credentials after an auth scheme.
_SECRETS = re.compile(
    r"(?P<token>\blr_[A-Za-z0-9_-]{16,})"
    r"|(?P<scheme>\b(?:Bearer|Basic|Digest)\s+)[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)


#: Lowercase words one of which an ASCII line must contain for ``_SECRETS`` to match in it.
_SECRET_MARKERS = ("lr_", "bearer", "basic", "digest")


def redact(text: str) -> str:
    """``text`` with token-shaped strings and Authorization credentials masked."""
    if text.isascii():
        # Most lines (every access line but a rare one) hold none of the words the pattern
        # starts with: a few substring scans in C instead of the case-insensitive regex.
        # (Only ASCII text: under IGNORECASE the regex also matches a few non-ASCII letters.)
        lowered = text.lower()
        if not any(marker in lowered for marker in _SECRET_MARKERS):
            return text
    return _SECRETS.sub(lambda m: "lr_[redacted]" if m.group("token") else m.group("scheme") + "[redacted]", text)


def printable(text: str, limit: int = 2048) -> str:
    """Control characters escaped (a path cannot forge a second log line), capped in length."""
    if len(text) <= limit and text.isprintable():
        return text  # the common case, checked in C instead of character by character
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    return out + "..." if len(text) > limit else out


class TextFormatter(logging.Formatter):
    """The human format, redacted."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """logging's own ``asctime``, with the strftime done once per second, not per line."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._second_text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = second
        return self.default_msec_format % (self._second_text, record.msecs)

    def format(self, record: logging.LogRecord) -> str:
        """One (or, with a traceback, several) human lines."""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(str(key), value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # json.dumps escapes newlines, so a record is always exactly one line.
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


#: Seconds info lines may wait to be written together (one write per batch, not per request).
LOG_FLUSH_DELAY = 0.1

#: Pending characters that force a write at once.
LOG_BATCH_CHARS = 64 * 1024


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the per-request access lines in batches from the event loop; every other line at once.

    Under load the access log is one line per request, and one write(2) per
    line costs the relay more CPU than some of its request handling; batching
    within ``LOG_FLUSH_DELAY`` keeps the lines in order and on time for a
    reader.  Outside a running loop (start-up, shutdown, other threads) every
    line is written at once.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._size = 0
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        loop = _running_loop()
        if loop is None or record.name != ACCESS_LOGGER:  # only the per-request lines wait for a batch
            self._pending.append(line)
            self.flush()
            return
        self._pending.append(line)
        self._size += len(line)
        if self._size >= LOG_BATCH_CHARS:
            self.flush()
        elif self._scheduled_on is not loop:  # (a flush scheduled on a loop since closed never runs)
            self._scheduled_on = loop
            loop.call_later(LOG_FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        self._scheduled_on = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._size = 0
        self.acquire()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            pass  # stderr gone (closed pipe): nothing better to do with a log line
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def configure_logging(level: int, log_format: str, stream: TextIO | None = None) -> None:
    """Send every log record to stderr in ``text`` or ``json``; replaces earlier handlers."""
    handler = BatchedStreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings become records too, so nothing unformatted reaches stderr.
    logging.captureWarnings(True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class EventLog(RelayObserver):
    """Access lines for public requests; in JSON, structured lines for agent events too.

    Text logs already say when an agent connects, leaves, fails to log in or
    is refused (in human words, from the agent endpoint), so
    ``agent_events=False`` adds only what they lack: the access line.
    """

    def __init__(self, agent_events: bool = True) -> None:
        self.agent_events = agent_events

    def request_finished(self, record: RequestRecord) -> None:
        """One access line: who asked what of which tunnel, the answer, time and bytes."""
        if not access_log.isEnabledFor(logging.INFO):
            return  # nobody reads it: build nothing
        path = printable(record.path)
        ttfb = _ms(record.ttfb)
        fields = {
            "event": "request",
            "tunnel": record.tunnel,
            "stream_id": record.stream_id,
            "method": record.method,
            "path": path,
            "status": record.status,
            "duration_ms": _ms(record.duration),
            "ttfb_ms": ttfb,
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "client": record.client,
            "error": record.error,
        }
        text = (
            f"{record.client} {record.tunnel} {printable(record.method, 32)} {path} {record.status} "
            f"{record.duration * 1000:.1f}ms ttfb={'-' if ttfb is None else f'{ttfb:.1f}ms'} "
            f"in={record.bytes_in} out={record.bytes_out} stream={record.stream_id}"
        )
        if record.error:
            text += f" error={printable(record.error, 200)}"
        # The record is made directly: Logger.info() would first walk the stack for the
        # caller's file and line (findCaller), which no relay log format shows.
        line = access_log.makeRecord(ACCESS_LOGGER, logging.INFO, "", 0, "%s", (text,), None, extra={"fields": fields})
        access_log.handle(line)

    def agent_connected(self, name: str, remote: str, client: str, reconnect: bool, token_id: str | None = None) -> None:
        """A structured line for the tunnel coming up."""
        if self.agent_events:
            self._event(
                "agent_connected", f"tunnel {name} {'reconnected' if reconnect else 'connected'} from {remote}",
                tunnel=name, remote=remote, client=printable(client, 200), reconnect=reconnect, token_id=token_id,
            )

    def agent_disconnected(self, name: str, remote: str, reason: str, token_id: str | None = None) -> None:
        """A structured line for the tunnel going down."""
        if self.agent_events:
            self._event(
                "agent_disconnected", f"tunnel {name} disconnected: {printable(reason, 200)}",
                tunnel=name, remote=remote, reason=printable(reason, 200), token_id=token_id,
            )

    def agent_refused(self, remote: str, code: str, reason: str, token_id: str | None = None) -> None:
        """A structured line for a refused handshake."""
        if self.agent_events:
            self._event(
                "agent_refused", f"agent from {remote} refused ({code}): {printable(reason, 200)}",
                remote=remote, code=code, reason=printable(reason, 200), token_id=token_id,
            )

    def auth_failed(self, remote: str, reason: str, token_id: str | None = None) -> None:
        """A structured line for a failed agent login."""
        if self.agent_events:
            self._event(
                "auth_failed", f"agent login from {remote} failed: {printable(reason, 200)}",
                remote=remote, reason=printable(reason, 200), token_id=token_id, level=logging.WARNING,
            )

    def limit_hit(self, limit: str, tunnel: str | None, remote: str | None) -> None:
        """A structured line for a limit's refusal (text logs show it on the access line)."""
        if self.agent_events:
            self._event("limit_hit", f"limit {limit} hit by {remote or '-'}", limit=limit, tunnel=tunnel, remote=remote)

    @staticmethod
    def _event(event: str, message: str, level: int = logging.INFO, **fields: Any) -> None:
        event_log.log(level, "%s", message, extra={"fields": {"event": event, **fields}})


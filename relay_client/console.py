"""The agent's console: one access-log line per proxied request, text or JSON."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import TextIO

from relay_client.exchange import Exchange
from relay_client.statusbar import Status, StatusHeader

#: Longest a log line waits in the buffer when stdout is not a terminal.
FLUSH_INTERVAL = 0.1

#: Statuses with which dev servers reject an unexpected Host (Vite, MCP SDK servers...).
_HOST_REJECTIONS = {421, 403}


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}B"


class ConsoleLog:
    """Observer that prints each finished exchange (and heads with ``verbose``)."""

    def __init__(
        self,
        out: TextIO | None = None,
        fmt: str = "text",
        verbose: bool = False,
        host_header: str = "preserve",
        local_url: str = "",
    ) -> None:
        self.out = out or sys.stdout
        self.fmt = fmt
        self.verbose = verbose
        self.host_header = host_header
        self._host_hint_shown = False
        self._flush_scheduled = False
        #: Lines not yet written: under load one write per FLUSH_INTERVAL, not one per
        #: request (stdout may be unbuffered, e.g. PYTHONUNBUFFERED=1 under systemd/docker).
        self._pending: list[str] = []
        #: "%H:%M:%S" of the last second formatted, and which second that was.
        self._stamp_second = -1
        self._stamp = ""
        try:
            self._interactive = self.out.isatty()
        except (AttributeError, ValueError):
            self._interactive = False
        #: The live header, on a terminal with text output only.
        self.header = StatusHeader(self.out, Status(local_url)) if self._interactive and fmt == "text" else None

    # ---------------------------------------------------------------- tunnel state
    def start(self, inspector_url: str | None = None) -> None:
        """Draw the live header (on a terminal)."""
        if self.header is not None:
            self.header.status.inspector_url = inspector_url
            self.header.install()

    def stop(self) -> None:
        """Write what is pending and give the terminal back."""
        self._flush()
        if self.header is not None:
            self.header.uninstall()

    def tunnel_up(self, public_url: str, local_url: str) -> None:
        """Print the contract's ``Forwarding`` line; mark the header online."""
        self._write(f"Forwarding {public_url} -> {local_url}")
        self._flush()
        if self.header is not None:
            status = self.header.status
            status.public_url, status.online, status.note = public_url, True, "online"
            self.header.draw(force=True)

    def tunnel_down(self, reason: str) -> None:
        """Mark the header as reconnecting."""
        if self.header is not None:
            status = self.header.status
            status.online, status.note = False, f"reconnecting ({reason})"
            status.reconnects += 1
            self.header.draw(force=True)

    def request_started(self, exchange: Exchange) -> None:
        """With -v: the request head."""
        if self.header is not None:
            self.header.status.in_flight += 1
        if self.verbose and self.fmt == "text":
            lines = [f"> {exchange.method} {exchange.target}"] + [f"> {k}: {v}" for k, v in exchange.request_headers]
            self._write("\n".join(lines))

    def response_started(self, exchange: Exchange) -> None:
        """With -v: the response head; always: the Host-rejection hint."""
        if self.verbose and self.fmt == "text":
            lines = [f"< {exchange.status} {exchange.reason}"] + [f"< {k}: {v}" for k, v in exchange.response_headers]
            self._write("\n".join(lines))
        if exchange.status in _HOST_REJECTIONS and self.host_header == "preserve" and not self._host_hint_shown:
            self._host_hint_shown = True
            self._hint(
                f"the local server answered {exchange.status} to Host "
                f"{_header(exchange.request_headers, 'Host')!r}; if it only accepts its own host name "
                "(Vite, MCP SDK servers do), restart with --host-header rewrite"
            )

    def finished(self, exchange: Exchange) -> None:
        """One line per exchange."""
        if self.header is not None:
            status = self.header.status
            status.requests += 1
            status.in_flight = max(0, status.in_flight - 1)
            status.errors += 1 if exchange.error or (exchange.status or 0) >= 500 else 0
            self.header.draw()
        duration_ms = (exchange.duration or 0.0) * 1000
        if self.fmt == "json":
            record = {
                "time": exchange.started,
                "id": exchange.id,
                "method": exchange.method,
                "path": exchange.target,
                "status": exchange.status,
                "duration_ms": round(duration_ms, 2),
                "bytes_in": exchange.request_bytes,
                "bytes_out": exchange.response_bytes,
                "remote_addr": exchange.remote_addr,
            }
            if exchange.error:
                record["error"] = exchange.error
            self._write(json.dumps(record))
            return
        second = int(exchange.started)
        if second != self._stamp_second:  # strftime once a second, not once a request
            self._stamp_second, self._stamp = second, time.strftime("%H:%M:%S", time.localtime(second))
        status = str(exchange.status) if exchange.status is not None else "---"
        line = (
            f"{self._stamp} {exchange.method:<7} {exchange.target[:120]:<40} {status} "
            f"{duration_ms:8.1f}ms {_size(exchange.response_bytes):>8}"
        )
        if exchange.error:
            line += f"  ({exchange.error})"
        self._write(line)

    def _hint(self, message: str) -> None:
        if self.fmt == "json":
            self._write(json.dumps({"time": time.time(), "level": "warning", "message": message}))
        else:
            print(f"hint: {message}", file=sys.stderr, flush=True)

    def _write(self, text: str) -> None:
        self._pending.append(text)
        if self._interactive:
            self._flush()
        elif not self._flush_scheduled:
            # Under load, one write and flush per FLUSH_INTERVAL instead of a syscall per request.
            try:
                asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self._flush)
                self._flush_scheduled = True
            except RuntimeError:  # no loop (tests, shutdown): flush now
                self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            try:
                self.out.write(text)
            except (BrokenPipeError, ValueError):  # stdout closed: keep forwarding anyway
                return
        try:
            self.out.flush()
        except (BrokenPipeError, ValueError):
            pass


def _header(headers: list[tuple[str, str]], name: str) -> str:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), "")

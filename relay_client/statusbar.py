"""A live status header at the top of the terminal, with log lines scrolling below it.

Only used when stdout is a terminal (``ConsoleLog`` writes plain lines
otherwise). It reserves the top rows with an ANSI scroll region, redraws them
when the tunnel's state changes (at most ``REDRAW_INTERVAL`` apart for
request counts), and gives the terminal back on exit.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from typing import TextIO

#: Rows the header takes (its lines plus a rule).
HEADER_ROWS = 6

#: Least time between two redraws caused by request counts.
REDRAW_INTERVAL = 0.1

_BOLD, _DIM, _GREEN, _YELLOW, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[33m", "\x1b[0m"


@dataclass(slots=True)
class Status:
    """What the header shows."""

    local_url: str
    public_url: str | None = None
    inspector_url: str | None = None
    online: bool = False
    note: str = "connecting"
    requests: int = 0
    in_flight: int = 0
    errors: int = 0
    reconnects: int = 0


class StatusHeader:
    """Draws ``Status`` in the reserved top rows of a terminal."""

    def __init__(self, out: TextIO, status: Status) -> None:
        self.out = out
        self.status = status
        self._installed = False
        self._last_draw = 0.0
        self._pending = False

    def install(self) -> None:
        """Clear the screen, reserve the header rows, put the cursor in the log area."""
        rows = shutil.get_terminal_size((100, 24)).lines
        self.out.write(f"\x1b[2J\x1b[{HEADER_ROWS + 1};{rows}r\x1b[{HEADER_ROWS + 1};1H")
        self._installed = True
        self.draw(force=True)

    def uninstall(self) -> None:
        """Give the whole terminal back to the shell."""
        if self._installed:
            self._installed = False
            self.out.write("\x1b[r\n")
            self.out.flush()

    def draw(self, force: bool = False) -> None:
        """Redraw the header (throttled unless ``force``), keeping the log cursor where it was."""
        now = time.monotonic()
        if not self._installed:
            return
        if not force and now - self._last_draw < REDRAW_INTERVAL:
            if not self._pending:  # draw the latest counts once the interval has passed
                try:
                    asyncio.get_running_loop().call_later(REDRAW_INTERVAL, self.draw, True)
                    self._pending = True
                except RuntimeError:  # no loop running: nothing will come later, draw now
                    self._draw(now)
            return
        self._draw(now)

    def _draw(self, now: float) -> None:
        self._pending = False
        self._last_draw = now
        width = shutil.get_terminal_size((100, 24)).columns
        lines = self.render(width)
        parts = ["\x1b7"]  # save cursor
        for row, line in enumerate(lines, start=1):
            parts.append(f"\x1b[{row};1H\x1b[2K{line}")
        parts.append("\x1b8")  # restore cursor
        self.out.write("".join(parts))
        self.out.flush()

    def render(self, width: int) -> list[str]:
        """The header's lines (ANSI-coloured), exactly ``HEADER_ROWS`` of them."""
        s = self.status
        state = f"{_GREEN}online{_RESET}" if s.online else f"{_YELLOW}{s.note}{_RESET}"
        public = s.public_url or "(waiting for the relay)"
        lines = [
            f"{_BOLD}localrelay{_RESET}{_DIM}  Ctrl-C to quit{_RESET}",
            f"Status      {state}",
            f"Forwarding  {public} -> {s.local_url}",
            f"Inspector   {s.inspector_url or 'off'}",
            f"Requests    {s.requests} total, {s.in_flight} in flight, {s.errors} failed"
            f"    Reconnects {s.reconnects}",
            _DIM + "─" * max(10, min(width, 120)) + _RESET,
        ]
        return lines[:HEADER_ROWS]

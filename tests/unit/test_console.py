"""The agent's console log writes its lines in batches, not one write per request (relay_client/console.py)."""

from __future__ import annotations

import asyncio
import io
import time

from relay_client.console import FLUSH_INTERVAL, ConsoleLog
from relay_client.exchange import Exchange


class CountingOut(io.StringIO):
    """A non-terminal stdout that counts writes (each would be a syscall on an unbuffered stdout)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def finished_exchange(path: str, status: int = 200) -> Exchange:
    exchange = Exchange("GET", path, [("Host", "h")])
    exchange.status = status
    exchange.add_response_body(b"x" * 12)
    exchange.finish()
    return exchange


async def test_many_lines_in_one_interval_leave_in_one_write_in_order():
    out = CountingOut()
    console = ConsoleLog(out=out)
    for i in range(100):
        console.finished(finished_exchange(f"/r{i}"))
    assert out.getvalue() == ""  # nothing yet: the write waits for the flush interval
    await asyncio.sleep(FLUSH_INTERVAL * 3)
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == [f"/r{i}" for i in range(100)]
    assert out.writes == 1


async def test_stop_writes_what_is_pending_at_once():
    out = CountingOut()
    console = ConsoleLog(out=out)
    console.finished(finished_exchange("/last", 404))
    console.stop()
    assert "/last" in out.getvalue() and " 404 " in out.getvalue()


def test_without_an_event_loop_each_line_is_written_at_once():
    out = CountingOut()
    ConsoleLog(out=out).finished(finished_exchange("/now"))
    assert "/now" in out.getvalue()


def test_the_clock_in_each_line_is_the_exchange_start_in_local_time():
    out = CountingOut()
    console = ConsoleLog(out=out)
    first = finished_exchange("/a")
    first.started = 1_700_000_000.25
    later = finished_exchange("/b")
    later.started = 1_700_000_061.9  # a minute and a second later: a new stamp, not the cached one
    console.finished(first)
    console.finished(later)
    stamps = [line.split()[0] for line in out.getvalue().splitlines()]
    assert stamps == [
        time.strftime("%H:%M:%S", time.localtime(1_700_000_000)),
        time.strftime("%H:%M:%S", time.localtime(1_700_000_061)),
    ]


def test_a_closed_stdout_does_not_break_logging():
    out = CountingOut()
    out.close()
    ConsoleLog(out=out).finished(finished_exchange("/gone"))  # no exception

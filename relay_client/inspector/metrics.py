"""Tunnel metrics in the shape ngrok's ``/api/tunnels`` reports (``conns`` and ``http``).

Rates are per second, exponentially weighted over 1, 5 and 15 minutes and
ticked every 5 seconds, as go-metrics meters (which ngrok uses) compute them;
ticks are applied lazily when a value is read or marked, so nothing runs in
the background. Percentiles are in nanoseconds over the most recent durations.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

#: Seconds between two EWMA ticks.
TICK_SECONDS = 5.0

#: Durations kept for the percentiles.
DURATION_SAMPLE = 1024

#: Idle ticks after which every rate has decayed to nothing (15 minutes of 5 s ticks, three times over).
_MAX_CATCH_UP_TICKS = 540

_PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p95", 0.95), ("p99", 0.99))


class _Ewma:
    """One exponentially weighted moving average of an event rate."""

    def __init__(self, minutes: float) -> None:
        self.alpha = 1 - math.exp(-TICK_SECONDS / 60.0 / minutes)
        self.rate = 0.0
        self.primed = False

    def tick(self, count: int) -> None:
        instant = count / TICK_SECONDS
        if self.primed:
            self.rate += self.alpha * (instant - self.rate)
        else:
            self.rate, self.primed = instant, True


class Meter:
    """Counts events and keeps 1, 5 and 15 minute rates."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_tick = clock()
        self._uncounted = 0
        self.count = 0
        self._rates = (_Ewma(1), _Ewma(5), _Ewma(15))

    def mark(self, n: int = 1) -> None:
        """Record ``n`` events now."""
        self._catch_up()
        self._uncounted += n
        self.count += n

    def _catch_up(self) -> None:
        ticks = int((self._clock() - self._last_tick) // TICK_SECONDS)
        if ticks <= 0:
            return
        self._last_tick += ticks * TICK_SECONDS
        for ewma in self._rates:
            ewma.tick(self._uncounted)
            for _ in range(min(ticks - 1, _MAX_CATCH_UP_TICKS)):
                ewma.tick(0)
        self._uncounted = 0

    def rates(self) -> tuple[float, float, float]:
        """(rate1, rate5, rate15) in events per second."""
        self._catch_up()
        one, five, fifteen = (ewma.rate for ewma in self._rates)
        return one, five, fifteen


def _percentiles(sample: deque[float]) -> dict[str, float]:
    if not sample:
        return {name: 0 for name, _ in _PERCENTILES}
    ordered = sorted(sample)
    out: dict[str, float] = {}
    for name, q in _PERCENTILES:
        index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
        out[name] = ordered[index]
    return out


class TunnelMetrics:
    """``conns`` (streams, with the in-flight gauge) and ``http`` (finished requests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.conns = Meter(clock)
        self.http = Meter(clock)
        self.in_flight = 0
        self._durations: deque[float] = deque(maxlen=DURATION_SAMPLE)

    def started(self) -> None:
        """A request began."""
        self.conns.mark()
        self.in_flight += 1

    def finished(self, duration_seconds: float) -> None:
        """A request ended after ``duration_seconds``."""
        self.http.mark()
        self.in_flight = max(0, self.in_flight - 1)
        self._durations.append(duration_seconds * 1e9)

    def as_ngrok(self) -> dict[str, dict[str, float]]:
        """``{"conns": {...}, "http": {...}}`` with ngrok's field names."""
        percentiles = _percentiles(self._durations)
        conn_rates = self.conns.rates()
        http_rates = self.http.rates()
        conns: dict[str, float] = {"count": self.conns.count, "gauge": self.in_flight}
        conns.update(zip(("rate1", "rate5", "rate15"), conn_rates))
        conns.update(percentiles)
        http: dict[str, float] = {"count": self.http.count}
        http.update(zip(("rate1", "rate5", "rate15"), http_rates))
        http.update(percentiles)
        return {"conns": conns, "http": http}

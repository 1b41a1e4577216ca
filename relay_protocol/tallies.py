"""Per-request tallies for Prometheus, shared by the relay's and the agent's metrics.

prometheus_client's ``Counter`` and ``Histogram`` take a lock and walk their
Python objects on every update; a relay or agent updates five of them per
request and is scraped once in a while.  Both run on one thread, so plain
ints kept here and turned into metric families when scraped are exact, and
cost a fraction.  Labels stay bounded: status class and standard method.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: Methods that get their own label value; anything else is ``other`` (bounded cardinality).
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

#: Seconds: request duration and time-to-first-byte buckets (streams and long polls reach minutes).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

#: Most (status, method) pairs whose label values are kept at hand.
MAX_CACHED_LABELS = 1024


def status_class(status: int | None) -> str:
    """``2xx`` for 204; ``other`` outside 100-599; ``none`` when no response came."""
    if status is None:
        return "none"
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


def method_class(method: str) -> str:
    """The method itself if standard, else ``other``."""
    upper = method.upper()
    return upper if upper in STANDARD_METHODS else "other"


class Latencies:
    """A histogram kept as plain per-bucket counts, made cumulative when scraped."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound (+Inf)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration (prometheus_client's rule: a bucket holds what is <= its bound)."""
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram as prometheus_client's own ``Histogram`` exposes it."""
        buckets, running = [], 0
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts):
            running += count
            buckets.append((floatToGoString(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class RequestCounts:
    """Requests by (status class, method class), with the label values of each (status, method) remembered."""

    __slots__ = ("_labels", "counts")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}
        self._labels: dict[tuple[int | None, str], tuple[str, str]] = {}

    def count(self, status: int | None, method: str) -> None:
        """One more request with this status and method."""
        key = (status, method)
        labels = self._labels.get(key)
        if labels is None:
            labels = (status_class(status), method_class(method))
            if len(self._labels) < MAX_CACHED_LABELS:  # odd methods must not grow it without bound
                self._labels[key] = labels
        counts = self.counts
        counts[labels] = counts.get(labels, 0) + 1

    def family(self, name: str, documentation: str) -> CounterMetricFamily:
        """The labelled counter as prometheus_client's own ``Counter`` exposes it (``NAME_total``)."""
        family = CounterMetricFamily(name, documentation, labels=["status_class", "method"])
        for labels, count in self.counts.items():
            family.add_metric(labels, count)
        return family


@dataclass(frozen=True, slots=True)
class TallyNames:
    """(metric name, help) of each family a ``RequestTallies`` exposes; no ``ttfb``: not kept."""

    requests: tuple[str, str]
    duration: tuple[str, str]
    bytes_in: tuple[str, str]
    bytes_out: tuple[str, str]
    errors: tuple[str, str]
    ttfb: tuple[str, str] | None = None


class RequestTallies(Collector):
    """What every finished request updates, exposed as metric families when scraped."""

    def __init__(self, names: TallyNames) -> None:
        self.names = names
        self.requests = RequestCounts()
        self.duration = Latencies()
        self.ttfb = Latencies()
        self.bytes_in = 0
        self.bytes_out = 0
        self.errors = 0

    def collect(self) -> Iterator[Metric]:
        """The families, as of now (names and help as prometheus_client's own metrics would give)."""
        names = self.names
        yield self.requests.family(*names.requests)
        yield self.duration.family(*names.duration)
        if names.ttfb is not None:
            yield self.ttfb.family(*names.ttfb)
        yield CounterMetricFamily(*names.bytes_in, value=self.bytes_in)
        yield CounterMetricFamily(*names.bytes_out, value=self.bytes_out)
        yield CounterMetricFamily(*names.errors, value=self.errors)

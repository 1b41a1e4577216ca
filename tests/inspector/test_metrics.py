"""Tunnel metrics in ngrok's shape: counts, gauge, EWMA rates, percentiles in nanoseconds."""

from __future__ import annotations

import pytest

from relay_client.inspector.metrics import TICK_SECONDS, TunnelMetrics


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_metrics_have_ngrok_field_names() -> None:
    shape = TunnelMetrics().as_ngrok()
    assert set(shape) == {"conns", "http"}
    assert set(shape["conns"]) == {"count", "gauge", "rate1", "rate5", "rate15", "p50", "p90", "p95", "p99"}
    assert set(shape["http"]) == {"count", "rate1", "rate5", "rate15", "p50", "p90", "p95", "p99"}


def test_counts_gauge_and_percentiles_follow_requests() -> None:
    metrics = TunnelMetrics(Clock())
    for _ in range(3):
        metrics.started()
    for ms in (10, 20):
        metrics.finished(ms / 1000)
    shape = metrics.as_ngrok()
    assert shape["conns"]["count"] == 3
    assert shape["conns"]["gauge"] == 1
    assert shape["http"]["count"] == 2
    assert shape["http"]["p50"] == pytest.approx(10e6)
    assert shape["http"]["p99"] == pytest.approx(20e6)


def test_rates_are_per_second_after_a_tick_and_decay_when_idle() -> None:
    clock = Clock()
    metrics = TunnelMetrics(clock)
    for _ in range(10):
        metrics.started()
        metrics.finished(0.001)
    clock.now += TICK_SECONDS
    first = metrics.as_ngrok()["http"]["rate1"]
    assert first == pytest.approx(10 / TICK_SECONDS)
    clock.now += 3600
    assert metrics.as_ngrok()["http"]["rate1"] < first / 1000

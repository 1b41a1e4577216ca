"""Read Prometheus text from a relay or an agent and compare two readings.

The text is parsed with ``prometheus_client.parser`` (what a scraper would
accept), never with regular expressions, so a malformed exposition fails.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from support.ports import LOOPBACK

#: Seconds a test waits for a counter to move (the hook runs just after the response leaves).
MOVE_TIMEOUT = 20.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(port: int, path: str, host: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` from 127.0.0.1:port with this Host: (status, headers, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def family_names(text: str) -> set[str]:
    """Names of the metric families declared (counters without ``_total``), with or without samples."""
    return {family.name for family in text_string_to_metric_families(text)}


def parse(text: str) -> Samples:
    """Every sample of the exposition by (name, labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(port: int, path: str = "/_relay/metrics", host: str | None = None, headers: Mapping[str, str] | None = None) -> Samples:
    """The samples served at ``path``; fails unless it answers 200 Prometheus text."""
    status, response_headers, body = fetch(port, path, host or f"localhost:{port}", headers)
    assert status == 200, f"{path} answered {status}: {body[:300]!r}"
    assert response_headers.get("content-type", "").startswith("text/plain"), response_headers
    return parse(body.decode("utf-8"))


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one series moved between two readings."""
    return value(after, name, **labels) - value(before, name, **labels)


def wait_for_move(
    read: Callable[[], Samples], before: Samples, name: str, expected: float, timeout: float = MOVE_TIMEOUT, **labels: str
) -> Samples:
    """Re-read until ``name{labels}`` moved by at least ``expected`` since ``before``; the reading that shows it."""
    deadline = time.monotonic() + timeout
    while True:
        after = read()
        if delta(before, after, name, **labels) >= expected:
            return after
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name}{labels} moved by {delta(before, after, name, **labels)} within {timeout:g}s, expected {expected}"
            )
        time.sleep(0.1)

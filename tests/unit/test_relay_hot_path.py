"""The relay's per-request shortcuts (log line, metrics) give exactly what the slow paths gave."""

from __future__ import annotations

import logging

from relay_server import metrics as relay_metrics
from relay_server.logs import _SECRETS, TEXT_FORMAT, TextFormatter, printable, redact
from relay_server.metrics import RelayMetrics
from relay_server.observer import RequestRecord


def _regex_only(text: str) -> str:
    return _SECRETS.sub(lambda m: "lr_[redacted]" if m.group("token") else m.group("scheme") + "[redacted]", text)


def test_redact_masks_exactly_what_the_pattern_alone_masks_including_non_ascii_look_alikes() -> None:
    lines = [
        "127.0.0.1 demo GET /hello 200 0.8ms ttfb=0.7ms in=0 out=12 stream=5",
        "saw LR_AbCdEfGhIjKlMnOpQrStUv and bearer abcdefgh12345",
        "Authorization: DIGEST abcdefgh12345678",
        "baſic abcdefghijklmnop",  # long s: IGNORECASE matches it as 's'
        "tunnel é connected: Basic YWxpY2U6cHc=",
        "lr_short and basic",
        "",
    ]
    for line in lines:
        assert redact(line) == _regex_only(line), line
    assert "[redacted]" in redact("baſic abcdefghijklmnop")


def test_printable_keeps_a_clean_path_and_still_caps_a_long_one() -> None:
    assert printable("/hello?x") == "/hello?x"
    assert printable("x" * 10, limit=4) == "xxxx..."
    assert printable("/é/ü") == "/é/ü"


def test_the_text_timestamp_is_the_one_logging_itself_writes() -> None:
    mine, stock = TextFormatter(), logging.Formatter(TEXT_FORMAT)
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.0004, 1_700_000_000.5):
        record = logging.LogRecord("relay_server.access", logging.INFO, "", 0, "%s", ("x",), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000) + 0.0
        assert mine.format(record) == stock.format(record)


def _record(status: int, method: str) -> RequestRecord:
    return RequestRecord("demo", 1, method, "/", status, 0.001, 0.0005, 3, 12, "127.0.0.1")


def _count(metrics: RelayMetrics, status_class: str, method: str) -> float:
    value = metrics.registry.get_sample_value("relay_requests_total", {"status_class": status_class, "method": method})
    return value or 0.0


def test_request_counts_stay_exact_with_the_cached_labelled_counters(monkeypatch) -> None:
    monkeypatch.setattr(relay_metrics, "_MAX_CACHED_LABELS", 2)  # the bound is reached: the rest go uncached
    metrics = RelayMetrics()
    for _ in range(5):
        metrics.request_finished(_record(200, "GET"))
        metrics.request_finished(_record(204, "GET"))  # same label pair, another cache key
        metrics.request_finished(_record(404, "POST"))
        metrics.request_finished(_record(200, "BREW"))
    assert _count(metrics, "2xx", "GET") == 10
    assert _count(metrics, "4xx", "POST") == 5
    assert _count(metrics, "2xx", "other") == 5
    assert len(metrics._request_counters) == 2
    assert metrics.registry.get_sample_value("relay_bytes_out_total") == 20 * 12

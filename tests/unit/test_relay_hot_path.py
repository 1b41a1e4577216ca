"""The relay's per-request shortcuts (log line, metrics) give exactly what the slow paths gave."""

from __future__ import annotations

import logging

import pytest

from relay_protocol import tallies
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


def test_request_counts_stay_exact_with_the_cached_label_values(monkeypatch) -> None:
    monkeypatch.setattr(tallies, "MAX_CACHED_LABELS", 2)  # the bound is reached: the rest go uncached
    metrics = RelayMetrics()
    for _ in range(5):
        metrics.request_finished(_record(200, "GET"))
        metrics.request_finished(_record(204, "GET"))  # same label pair, another cache key
        metrics.request_finished(_record(404, "POST"))
        metrics.request_finished(_record(200, "BREW"))
    assert _count(metrics, "2xx", "GET") == 10
    assert _count(metrics, "4xx", "POST") == 5
    assert _count(metrics, "2xx", "other") == 5
    assert len(metrics.tallies.requests._labels) == 2
    assert metrics.registry.get_sample_value("relay_bytes_out_total") == 20 * 12


def test_the_request_tallies_expose_what_prometheus_clients_own_counters_would() -> None:
    """Every sample (buckets, sums, counts, labelled totals) as a Counter and a Histogram fed the same give."""
    import random

    from prometheus_client import CollectorRegistry, Counter, Histogram

    reference = CollectorRegistry()
    requests = Counter("relay_requests", "x", ["status_class", "method"], registry=reference)
    duration = Histogram("relay_request_duration_seconds", "x", buckets=tallies.LATENCY_BUCKETS, registry=reference)
    ttfb = Histogram("relay_request_ttfb_seconds", "x", buckets=tallies.LATENCY_BUCKETS, registry=reference)
    bytes_in = Counter("relay_bytes_in", "x", registry=reference)
    bytes_out = Counter("relay_bytes_out", "x", registry=reference)
    errors = Counter("relay_request_errors", "x", registry=reference)
    metrics = RelayMetrics()
    rnd = random.Random(3)
    bounds = list(tallies.LATENCY_BUCKETS)
    for i in range(2000):
        seconds = rnd.choice([rnd.uniform(0, 400), rnd.choice(bounds), 0.0])  # on a bound exactly, too
        first = None if i % 7 == 0 else seconds / 2
        record = RequestRecord(
            "demo", i, rnd.choice(["GET", "POST", "BREW"]), "/", rnd.choice([200, 204, 404, 502, 700]),
            seconds, first, rnd.randrange(3) * 10, rnd.randrange(5) * 7, "127.0.0.1", "cut off" if i % 11 == 0 else "",
        )
        metrics.request_finished(record)
        requests.labels(tallies.status_class(record.status), tallies.method_class(record.method)).inc()
        duration.observe(record.duration)
        if record.ttfb is not None:
            ttfb.observe(record.ttfb)
        bytes_in.inc(record.bytes_in)
        bytes_out.inc(record.bytes_out)
        if record.error:
            errors.inc()

    def samples(registry: CollectorRegistry) -> dict:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            for sample in family.samples
            if not sample.name.endswith("_created") and family.name.startswith(("relay_request", "relay_bytes"))
        }

    ours, theirs = samples(metrics.registry), samples(reference)
    assert ours.keys() == theirs.keys() and len(ours) > 40
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-9), key


# ---------------------------------------------------------------- heads, deadlines, routing


def test_heads_are_the_bytes_json_dumps_gives_for_any_text() -> None:
    import json
    import random

    from relay_protocol.heads import RequestHead, ResponseHead

    alphabet = ["a", '"', "\\", "\n", "\r", "\x00", "\x1f", "\x7f", "é", "☃", "\U0001f600", "\u2028", " ", "\t"]
    rnd = random.Random(7)

    def text() -> str:
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 6)))

    def dumps(obj: dict) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    for _ in range(500):
        headers = [(text(), text()) for _ in range(rnd.randint(0, 3))]
        flat = [part for pair in headers for part in pair]
        upgrade = rnd.choice(["", "websocket"])
        request = RequestHead(text(), text(), headers, text(), upgrade)
        expected = {"m": request.method, "t": request.target, "h": flat, "r": request.remote_addr}
        if upgrade:
            expected["u"] = upgrade
        assert request.encode() == dumps(expected)
        response = ResponseHead(rnd.randint(100, 999), text(), headers)
        assert response.encode() == dumps({"s": response.status, "r": response.reason, "h": flat})


def test_heads_with_whitespace_or_a_bom_around_the_json_still_decode_as_json_loads_would() -> None:
    from relay_protocol.heads import ResponseHead

    assert ResponseHead.decode(b' {"s": 200, "h": ["A", "1"]} \n') == ResponseHead(200, "", [("A", "1")])
    assert ResponseHead.decode('\ufeff{"s":204,"h":[]}'.encode("utf-8")) == ResponseHead(204, "", [])


async def test_a_response_deadline_resets_only_the_overdue_stream_and_says_so_once() -> None:
    import asyncio

    from relay_protocol.driver import StreamError
    from relay_protocol.errors import ErrorCode
    from relay_server.tunnel import ResponseDeadlines

    class Stream:
        def __init__(self) -> None:
            self.response: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self.resets: list[ErrorCode] = []

        def reset(self, code: ErrorCode, reason: str) -> None:
            self.resets.append(code)
            self.response.set_exception(StreamError(code, reason))
            self.response.exception()

    deadlines = ResponseDeadlines()
    slow, quick, answered = Stream(), Stream(), Stream()
    deadlines.watch(slow, 0.2)  # type: ignore[arg-type]
    deadlines.watch(quick, 0.05)  # type: ignore[arg-type]  # shorter than the armed timer: re-armed earlier
    deadlines.watch(answered, 0.05)  # type: ignore[arg-type]
    answered.response.set_result(200)
    assert deadlines.done(answered) is False  # type: ignore[arg-type]
    await asyncio.sleep(0.12)
    assert quick.resets == [ErrorCode.TIMEOUT] and slow.resets == [] and answered.resets == []
    await asyncio.sleep(0.2)
    assert slow.resets == [ErrorCode.TIMEOUT]
    assert deadlines.done(slow) is True and deadlines.done(slow) is False  # type: ignore[arg-type]
    assert deadlines.done(quick) is True  # type: ignore[arg-type]


async def test_the_catch_all_resource_routes_every_path_to_the_relay(tmp_path) -> None:
    from aiohttp.test_utils import make_mocked_request

    from relay_server.app import Relay
    from relay_server.config import RelayConfig

    relay = Relay(RelayConfig(domain="example.test", open=True, data_dir=tmp_path))
    app = relay.make_app()
    app.freeze()
    for path in ("/", "/a/b/c?x=1", "/_relay/health", "*"):
        match = await app.router.resolve(make_mocked_request("GET", path, app=app))
        assert match.handler == relay.dispatch, path

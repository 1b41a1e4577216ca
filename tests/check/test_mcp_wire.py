"""MCP wire helpers without sockets: version judgement, response matching, and the buffering verdict."""

from __future__ import annotations

import pytest

from relay_client.check import mcp_wire as wire
from relay_client.check.report import Status


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"])
def test_every_handshake_version_the_sdks_speak_passes(version: str) -> None:
    assert wire.judge_version(version).status is Status.PASS


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("2026-07-28", "a stateless-era version that is never negotiated by initialize"),
        ("2023-01-01", "which no current SDK speaks"),
        (None, "which no current SDK speaks"),
    ],
)
def test_a_version_no_sdk_negotiates_fails(version: object, message: str) -> None:
    check = wire.judge_version(version)
    assert check.status is Status.FAIL and message in check.message


def test_modern_requests_carry_the_envelope_and_routing_headers() -> None:
    params = wire.modern_params({"cursor": "c"})
    assert params["cursor"] == "c"
    assert params["_meta"][wire.PROTOCOL_VERSION_META] == "2026-07-28"
    assert params["_meta"][wire.CLIENT_CAPABILITIES_META] == {}
    headers = wire.modern_headers("tools/list")
    assert headers["MCP-Protocol-Version"] == "2026-07-28" and headers["Mcp-Method"] == "tools/list"
    assert headers["Accept"] == "application/json, text/event-stream"


def test_the_response_is_found_by_id_among_notifications_and_batches() -> None:
    messages = [
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        [{"jsonrpc": "2.0", "id": 1, "result": {"a": 1}}, {"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "no"}}],
    ]
    assert wire.find_response(messages, 2) == {"jsonrpc": "2.0", "id": 2, "error": {"code": -1, "message": "no"}}
    assert wire.find_response(messages, 3) is None


def timing(arrivals: tuple[float, ...], end: float, left_open: bool = False) -> wire.Timing:
    return wire.Timing("tools/list", 0.0, end, arrivals, left_open)


def test_events_spread_over_time_prove_streaming() -> None:
    check = wire.streaming_verdict([timing((0.01, 0.31, 0.61), 0.62)])
    assert check.status is Status.PASS
    assert check.message == "tools/list: events arrived as sent (the stream went on 300 ms after an event had arrived)"


def test_several_events_arriving_together_late_at_the_end_are_buffered() -> None:
    check = wire.streaming_verdict([timing((0.6, 0.6, 0.61), 0.61)])
    assert check.status is Status.FAIL
    assert check.message.startswith("tools/list: 3 events arrived together 600 ms after the request")


def test_one_buffered_answer_fails_even_when_another_streamed() -> None:
    streamed, buffered = timing((0.0, 0.3), 0.3), timing((0.6, 0.61), 0.61)
    assert wire.streaming_verdict([streamed, buffered]).status is Status.FAIL


@pytest.mark.parametrize(
    "timings",
    [
        [timing((0.01,), 0.01)],  # one quick event: nothing to compare
        [timing((0.005, 0.006), 0.007)],  # a burst, but right away: a fast server
        [timing((0.6,), 0.6)],  # one late event: a slow server, not evidence of buffering
    ],
)
def test_unobservable_delivery_is_a_warning_not_a_guess(timings: list[wire.Timing]) -> None:
    assert wire.streaming_verdict(timings).status is Status.WARN


def test_a_stream_left_open_after_its_answer_proves_incremental_delivery() -> None:
    assert wire.streaming_verdict([timing((0.01,), 1.01, left_open=True)]).status is Status.PASS


def test_json_only_servers_have_nothing_to_buffer() -> None:
    check = wire.streaming_verdict([])
    assert check.status is Status.PASS and "JSON" in check.message

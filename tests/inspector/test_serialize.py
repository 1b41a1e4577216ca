"""Exchanges in ngrok's captured-request format."""

from __future__ import annotations

import base64
from datetime import datetime

from relay_client.exchange import Exchange
from relay_client.inspector.serialize import canonical_header, exchange_json, header_map

from .conftest import finished_exchange


def test_a_captured_request_has_exactly_ngroks_fields_plus_one_extension() -> None:
    data = exchange_json(finished_exchange(), "demo")
    assert set(data) == {"uri", "id", "tunnel_name", "remote_addr", "start", "duration", "request", "response", "localrelay"}
    assert set(data["request"]) == {"method", "proto", "headers", "uri", "raw"}
    assert set(data["response"]) == {"status", "status_code", "proto", "headers", "raw"}
    assert data["uri"] == f"/api/requests/http/{data['id']}"
    assert data["tunnel_name"] == "demo"
    assert data["remote_addr"] == "203.0.113.7"


def test_start_is_rfc3339_with_an_offset_and_duration_is_integer_nanoseconds() -> None:
    exchange = finished_exchange()
    exchange.duration = 0.0123456
    data = exchange_json(exchange, "demo")
    start = datetime.fromisoformat(data["start"])
    assert start.utcoffset() is not None
    assert abs(start.timestamp() - exchange.started) < 1.0
    assert data["duration"] == 12345600
    assert isinstance(data["duration"], int)


def test_status_line_and_code_are_given_as_ngrok_gives_them() -> None:
    data = exchange_json(finished_exchange(status=502, reason="Bad Gateway"), "demo")
    assert data["response"]["status"] == "502 Bad Gateway"
    assert data["response"]["status_code"] == 502
    assert data["request"]["proto"] == data["response"]["proto"] == "HTTP/1.1"


def test_header_names_are_canonical_and_repeated_headers_become_lists() -> None:
    headers = [("content-type", "a/b"), ("X-REQUEST-ID", "1"), ("set-cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert header_map(headers) == {"Content-Type": ["a/b"], "X-Request-Id": ["1"], "Set-Cookie": ["a=1", "b=2"]}
    assert canonical_header("www-authenticate") == "Www-Authenticate"
    assert canonical_header("odd name") == "odd name"


def test_raw_is_the_base64_http_message_with_the_captured_body() -> None:
    exchange = finished_exchange(
        method="POST", target="/submit?a=1", headers=[("Host", "h"), ("Content-Type", "application/json")],
        request_body=b'{"k": 1}', response_body=b"done",
    )
    data = exchange_json(exchange, "demo")
    request_raw = base64.b64decode(data["request"]["raw"])
    assert request_raw == b'POST /submit?a=1 HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n\r\n{"k": 1}'
    response_raw = base64.b64decode(data["response"]["raw"])
    assert response_raw == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\ndone"


def test_response_is_null_while_the_local_server_has_not_answered() -> None:
    exchange = Exchange("GET", "/slow", [("Host", "h")])
    data = exchange_json(exchange, None)
    assert data["response"] is None
    assert data["duration"] == 0
    assert data["localrelay"]["done"] is False
    assert data["tunnel_name"] == "command_line"


def test_the_extension_tells_truncation_and_full_sizes() -> None:
    exchange = finished_exchange(request_body=b"x" * 5000, response_body=b"y" * 3000, capture_limit=1024)
    extra = exchange_json(exchange, "demo")["localrelay"]
    assert extra["request_bytes"] == 5000 and extra["request_truncated"] is True
    assert extra["response_bytes"] == 3000 and extra["response_truncated"] is True
    assert extra["capture_limit"] == 1024 and extra["replay"] is False

"""Request/response heads: JSON encoding and header-injection checks (relay_protocol/heads.py)."""

from __future__ import annotations

import json

import pytest

from relay_protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from relay_protocol.events import ConnectionClosed
from relay_protocol.frames import FrameType
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.limits import MAX_HEAD_SIZE, MAX_HEADER_COUNT

from .peers import connect


def request_payload(**fields) -> bytes:
    obj = {"m": "GET", "t": "/", "h": [], "r": ""}
    obj.update(fields)
    return json.dumps(obj).encode()


def response_payload(**fields) -> bytes:
    obj = {"s": 200, "r": "OK", "h": []}
    obj.update(fields)
    return json.dumps(obj).encode()


# ---------------------------------------------------------------- round trips


def test_request_head_keeps_repeated_headers_in_order_and_unicode_intact():
    head = RequestHead(
        "POST",
        "/caf\u00e9?q=\u2603",
        [("Cookie", "a=1"), ("X-Name", "Zo\u00eb \u2603 \U0001f600"), ("Cookie", "b=2")],
        "203.0.113.9",
    )
    decoded = RequestHead.decode(head.encode())
    assert decoded == head


def test_response_head_keeps_repeated_set_cookie_headers_separate():
    head = ResponseHead(201, "Cr\u00e9\u00e9", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2, c=3")])
    assert ResponseHead.decode(head.encode()) == head


def test_head_encoding_is_compact_json_with_short_keys_and_a_flat_header_list():
    payload = RequestHead("GET", "/\u00e9", [("A", "1"), ("B", "2")], "::1").encode()
    assert payload == '{"m":"GET","t":"/\u00e9","h":["A","1","B","2"],"r":"::1"}'.encode()
    assert ResponseHead(404, "Not Found", [("A", "1")]).encode() == b'{"s":404,"r":"Not Found","h":["A","1"]}'


def test_missing_optional_fields_take_defaults():
    assert RequestHead.decode(b'{"m":"GET","t":"/","h":[]}').remote_addr == ""
    assert ResponseHead.decode(b'{"s":204,"h":[]}') == ResponseHead(204, "", [])


def test_unknown_fields_are_ignored():
    assert RequestHead.decode(request_payload(future=1)).method == "GET"


@pytest.mark.parametrize("method", ["GET", "PROPFIND", "M-SEARCH", "x.y~z"])
def test_any_token_is_a_valid_method(method):
    assert RequestHead.decode(request_payload(m=method)).method == method


@pytest.mark.parametrize("target", ["/", "*", "/a%20b?c=d#e", "http://example.com/"])
def test_targets_without_controls_or_spaces_are_accepted(target):
    assert RequestHead.decode(request_payload(t=target)).target == target


@pytest.mark.parametrize("status", [100, 200, 999])
def test_three_digit_statuses_are_accepted(status):
    assert ResponseHead.decode(response_payload(s=status)).status == status


# ---------------------------------------------------------------- injection


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\x00b", "\n"])
def test_cr_lf_or_nul_in_a_header_value_is_refused(value):
    with pytest.raises(RemoteProtocolError, match="invalid value"):
        RequestHead.decode(request_payload(h=["X-Test", value]))
    with pytest.raises(RemoteProtocolError, match="invalid value"):
        ResponseHead.decode(response_payload(h=["X-Test", value]))


@pytest.mark.parametrize(
    "name", ["", "X Test", "X-Test:", "X\r\nInjected", "X\nY", "X\x00", "Caf\u00e9", "(x)", 1, None, ["X"]]
)
def test_header_names_must_be_tokens(name):
    with pytest.raises(RemoteProtocolError, match="invalid header name"):
        RequestHead.decode(request_payload(h=[name, "v"]))
    with pytest.raises(RemoteProtocolError, match="invalid header name"):
        ResponseHead.decode(response_payload(h=[name, "v"]))


@pytest.mark.parametrize(
    "bad", [("X\nY", "v"), ("X\n", "v"), ("\nX", "v"), ("X-Ok", "a\r\nX-Injected: 1"), ("X-Ok", 1), (None, "v")]
)
def test_one_bad_header_among_many_good_ones_is_found(bad):
    good = [item for i in range(20) for item in (f"X-H{i}", f"value {i}")]
    for flat in (list(bad) + good, good + list(bad), good[:10] + list(bad) + good[10:]):
        with pytest.raises(RemoteProtocolError, match="invalid"):
            RequestHead.decode(request_payload(h=flat))
        with pytest.raises(RemoteProtocolError, match="invalid"):
            ResponseHead.decode(response_payload(h=flat))


def test_many_valid_headers_decode_in_order_with_repeats():
    pairs = [("Set-Cookie", "a=1"), ("x-y", ""), ("Set-Cookie", "b=2"), ("X-Uni", "caf\u00e9 \u2603")] * 30
    assert ResponseHead.decode(ResponseHead(200, "OK", pairs).encode()).headers == pairs
    assert RequestHead.decode(RequestHead("GET", "/", pairs).encode()).headers == pairs


@pytest.mark.parametrize("value", [1, None, True, ["v"], {"v": 1}])
def test_header_values_must_be_strings(value):
    with pytest.raises(RemoteProtocolError, match="invalid value"):
        RequestHead.decode(request_payload(h=["X", value]))


@pytest.mark.parametrize("method", ["", "GET /", "G\r\nET", "GET\n", "G\x00", "G\u00c9T", 7, None])
def test_bad_methods_are_refused(method):
    with pytest.raises(RemoteProtocolError, match="invalid request method"):
        RequestHead.decode(request_payload(m=method))


@pytest.mark.parametrize("target", ["", "/a b", "/a\r\nHost: evil", "/\x00", "/\x7f", "/\t", 5, None])
def test_bad_targets_are_refused(target):
    with pytest.raises(RemoteProtocolError, match="invalid request target"):
        RequestHead.decode(request_payload(t=target))


def test_remote_address_must_be_a_string():
    with pytest.raises(RemoteProtocolError, match="invalid remote address"):
        RequestHead.decode(request_payload(r=["1.2.3.4"]))


@pytest.mark.parametrize("status", [99, 1000, -200, "200", 200.0, True, None])
def test_bad_statuses_are_refused(status):
    with pytest.raises(RemoteProtocolError, match="invalid response status"):
        ResponseHead.decode(response_payload(s=status))


@pytest.mark.parametrize("reason", ["OK\r\nX-Injected: 1", "O\nK", "O\x00K", 5])
def test_bad_reasons_are_refused(reason):
    with pytest.raises(RemoteProtocolError, match="invalid response reason"):
        ResponseHead.decode(response_payload(r=reason))


@pytest.mark.parametrize("headers", [None, {"X": "1"}, "X: 1", ["X"], [["X", "1"]], 3])
def test_headers_must_be_a_flat_list_of_pairs(headers):
    with pytest.raises(RemoteProtocolError):
        RequestHead.decode(request_payload(h=headers))
    with pytest.raises(RemoteProtocolError):
        ResponseHead.decode(response_payload(h=headers))


def test_missing_header_list_is_refused():
    with pytest.raises(RemoteProtocolError, match="flat list"):
        RequestHead.decode(b'{"m":"GET","t":"/"}')


def test_up_to_the_header_count_limit_is_accepted_and_one_more_is_refused():
    flat = ["X", "v"] * MAX_HEADER_COUNT
    assert len(RequestHead.decode(request_payload(h=flat)).headers) == MAX_HEADER_COUNT
    with pytest.raises(RemoteProtocolError, match=f"more than {MAX_HEADER_COUNT} headers"):
        RequestHead.decode(request_payload(h=flat + ["X", "v"]))


def test_head_larger_than_the_limit_is_refused():
    payload = request_payload(h=["X", "v" * MAX_HEAD_SIZE])
    assert len(payload) > MAX_HEAD_SIZE
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        RequestHead.decode(payload)
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        ResponseHead.decode(response_payload(h=["X", "v" * MAX_HEAD_SIZE]))


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'"GET"', b"null", b"\xff\xfe{", b'{"m":"GET",'])
def test_payload_that_is_not_a_json_object_is_refused(payload):
    with pytest.raises(RemoteProtocolError):
        RequestHead.decode(payload)
    with pytest.raises(RemoteProtocolError):
        ResponseHead.decode(payload)


def test_deeply_nested_json_is_a_protocol_error_not_a_crash():
    # Under the size limit, but deep enough to overflow the JSON parser's recursion.
    payload = b'{"m":"GET","t":"/","h":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    assert len(payload) < MAX_HEAD_SIZE
    with pytest.raises(RemoteProtocolError):
        RequestHead.decode(payload)
    with pytest.raises(RemoteProtocolError):
        ResponseHead.decode(b'{"s":200,"h":' + b"[" * 50_000 + b"]" * 50_000 + b"}")


# ---------------------------------------------------------------- through a session


def test_header_injection_in_an_open_frame_closes_the_connection():
    link = connect()
    events = link.raw_to_agent(FrameType.OPEN, 0, 1, request_payload(h=["X", "a\r\nHost: evil"]))
    assert [type(e) for e in events] == [ConnectionClosed]
    assert events[0].code is ErrorCode.PROTOCOL_ERROR
    assert link.agent.open_streams == 0


@pytest.mark.parametrize(
    "headers",
    [
        # What aiohttp's client accepts from a local server: 128 headers of up to 8190 bytes.
        [("Set-Cookie", f"c{i}=" + "v" * 8000) for i in range(40)],
        [("X-Many", str(i)) for i in range(MAX_HEADER_COUNT + 1)],
    ],
    ids=["320KB-of-cookies", "501-headers"],
)
def test_sending_a_head_the_peer_would_refuse_fails_locally_not_at_the_peer(headers):
    # One oversized response must cost one stream, not the whole tunnel: the
    # sender should refuse the head (LocalProtocolError) instead of queueing a
    # frame that makes the relay tear down the connection and every request on it.
    link = connect()
    sid = link.open()
    with pytest.raises(LocalProtocolError):
        link.agent.send_response(sid, ResponseHead(200, "OK", headers))
    assert not any(isinstance(e, ConnectionClosed) for e in link.to_relay())


def test_websocket_upgrade_travels_in_the_u_field():
    head = RequestHead("GET", "/ws", [("Origin", "https://x")], "::1", upgrade="websocket")
    assert b'"u":"websocket"' in head.encode()
    assert RequestHead.decode(head.encode()) == head
    assert b'"u"' not in RequestHead("GET", "/").encode()


@pytest.mark.parametrize("upgrade", ["h2c", "WebSocket", 1, None])
def test_unknown_upgrades_are_refused(upgrade):
    with pytest.raises(RemoteProtocolError, match="unsupported upgrade"):
        RequestHead.decode(request_payload(u=upgrade))

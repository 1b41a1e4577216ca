"""Property-based fuzzing of every decoder the relay runs on what an agent sends.

tests/unit/test_fuzz.py fuzzes the frame decoder and sessions with random and
damaged bytes; this file covers the rest of the agent -> relay surface with
inputs shaped to get past the first check: response heads and HELLO payloads
as random JSON, the HELLO's subdomain and access options, bridged websocket
messages, and a relay session with real streams open fed well-framed frames
of every type naming those streams.  Each decoder either returns a valid
value or raises the protocol's own error: never another exception, never a hang
(hypothesis' deadline fails an example that takes too long).
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_protocol.errors import RemoteProtocolError
from relay_protocol.events import ConnectionClosed, Event, GoAwayReceived
from relay_protocol.frames import Flag, FrameType, encode_code_reason, encode_frame, encode_u32
from relay_protocol.handshake import Hello
from relay_protocol.heads import ResponseHead
from relay_protocol.limits import MAX_HEADER_COUNT, MAX_WINDOW, MIN_WINDOW
from relay_protocol.session import Phase, Session
from relay_protocol.wsmessages import Kind, MessageDecoder, decode_close, encode_message
from relay_server.access import AccessPolicy, InvalidAccessOptions
from relay_server.names import InvalidName, validate_name
from unit.peers import connect

#: Bounded so the whole file runs in a few seconds.
FUZZ = settings(max_examples=100, deadline=1000, database=None, suppress_health_check=[HealthCheck.too_slow])

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")

#: Any JSON value, a few levels deep.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)

#: Header text that includes the characters an injection needs.
header_text = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\r\n\x00 :\t"), max_size=24)


def _head_payloads() -> st.SearchStrategy[bytes]:
    """RESPONSE payloads: near-valid heads with hostile fields, random JSON, or raw bytes."""
    near_valid = st.fixed_dictionaries(
        {
            "s": st.one_of(st.integers(-5, 1200), json_values),
            "r": st.one_of(header_text, json_values),
            "h": st.one_of(st.lists(header_text, max_size=12), json_values),
        }
    ).map(lambda obj: json.dumps(obj).encode())
    return st.one_of(near_valid, json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=256))


@FUZZ
@given(_head_payloads())
def test_a_response_head_from_an_agent_decodes_to_a_safe_head_or_a_protocol_error(payload: bytes) -> None:
    try:
        head = ResponseHead.decode(payload)
    except RemoteProtocolError:
        return
    assert 100 <= head.status <= 999
    assert not re.search(r"[\r\n\x00]", head.reason)
    assert len(head.headers) <= MAX_HEADER_COUNT
    for name, value in head.headers:
        assert _TOKEN.match(name), name
        assert not re.search(r"[\r\n\x00]", value), value
    assert ResponseHead.decode(head.encode()) == head


def _hello_payloads() -> st.SearchStrategy[bytes]:
    """HELLO payloads: every field present with values of any type, or random JSON, or raw bytes."""
    fields = st.fixed_dictionaries(
        {},
        optional={
            "versions": st.one_of(st.lists(st.integers(-3, 5), max_size=4), json_values),
            "subdomain": st.one_of(st.text(max_size=70), json_values),
            "agent_key": json_values,
            "client": json_values,
            "stream_window": st.one_of(st.integers(-1, MAX_WINDOW * 2), json_values),
            "connection_window": st.one_of(st.integers(-1, MAX_WINDOW * 2), json_values),
            "options": st.one_of(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "basic_auth": st.one_of(st.text(alphabet="0123456789abcdefABCDEFxyz", max_size=70), json_values),
                        "allow_ip": st.one_of(st.lists(st.text(max_size=20) | json_values, max_size=4), json_values),
                    },
                ),
                json_values,
            ),
        },
    ).map(lambda obj: json.dumps(obj).encode())
    return st.one_of(fields, json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=256))


@FUZZ
@given(_hello_payloads())
def test_a_hello_decodes_to_valid_fields_or_a_protocol_error_and_its_name_and_options_are_checked_cleanly(
    payload: bytes,
) -> None:
    try:
        hello = Hello.decode(payload)
    except RemoteProtocolError:
        return
    assert hello.versions and all(type(v) is int for v in hello.versions)
    assert MIN_WINDOW <= hello.stream_window <= MAX_WINDOW
    assert MIN_WINDOW <= hello.connection_window <= MAX_WINDOW
    assert isinstance(hello.options, dict)
    # What the relay does next with a decoded HELLO: the requested name, then the access options.
    if hello.subdomain is not None:
        try:
            name = validate_name(hello.subdomain)
        except InvalidName:
            pass
        else:
            assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name), name
    try:
        policy = AccessPolicy.from_options(hello.options)
    except InvalidAccessOptions:
        return
    assert policy.basic_auth_hash is None or re.fullmatch(r"[0-9a-fA-F]{64}", policy.basic_auth_hash)


def _ws_stream() -> st.SearchStrategy[bytes]:
    """Bridged websocket bytes: valid messages with damage, or noise."""
    message = st.tuples(st.sampled_from(list(Kind)), st.binary(max_size=64)).map(lambda km: encode_message(*km))
    valid = st.lists(message, max_size=6).map(b"".join)
    damaged = st.tuples(valid, st.integers(0, 400), st.integers(0, 255)).map(
        lambda t: t[0][: t[1]] + bytes([t[2]]) + t[0][t[1] + 1 :]
    )
    return st.one_of(valid, damaged, st.binary(max_size=300))


@FUZZ
@given(_ws_stream(), st.lists(st.integers(1, 40), max_size=20), st.integers(0, 128))
def test_bridged_websocket_messages_decode_or_raise_a_protocol_error_in_any_split(
    data: bytes, pieces: list[int], max_message: int
) -> None:
    decoder = MessageDecoder(max_message=max_message)
    received: list[tuple[Kind, bytes]] = []
    offset = 0
    try:
        for size in pieces + [len(data)]:
            received += decoder.feed(data[offset : offset + size])
            offset += size
            if offset >= len(data):
                break
    except RemoteProtocolError:
        return
    consumed = b"".join(encode_message(kind, payload) for kind, payload in received)
    assert data.startswith(consumed), "decoded messages must be exactly the bytes fed, in order"
    assert all(len(payload) <= max_message for _, payload in received)
    for kind, payload in received:
        if kind is Kind.CLOSE:
            code, reason = decode_close(payload)
            assert 0 <= code <= 0xFFFF and isinstance(reason, str)


_STREAM_PAYLOADS = st.one_of(
    st.binary(max_size=48),
    _head_payloads(),
    st.sampled_from(
        [
            ResponseHead(200, "OK", [("A", "b")]).encode(),
            ResponseHead(101, "Switching Protocols").encode(),
            encode_u32(0),
            encode_u32(1),
            encode_u32(2**31 - 1),
            encode_u32(2**32 - 1),
            encode_code_reason(7, "cancel"),
            encode_code_reason(0, ""),
            encode_code_reason(999, "unknown code"),
            Hello().encode(),
        ]
    ),
)


@FUZZ
@given(
    st.integers(0, 4),
    st.lists(
        st.tuples(
            st.sampled_from(list(FrameType)),
            st.sampled_from([0, int(Flag.END_STREAM), int(Flag.ACK), 3]),
            st.sampled_from(["open", "open", "open", "zero", "never-opened", "even", "max"]),
            st.integers(0, 10),
            _STREAM_PAYLOADS,
        ),
        max_size=16,
    ),
    st.lists(st.integers(1, 128), max_size=8),
)
def test_a_relay_session_with_streams_open_survives_any_well_framed_agent_frames(
    opened: int, frames: list, pieces: list[int]
) -> None:
    link = connect()
    ids = [link.open() for _ in range(opened)]
    relay: Session = link.relay
    relay.data_to_send()
    data = b""
    for frame_type, flags, which, index, payload in frames:
        if which == "open":
            sid = ids[index % len(ids)] if ids else 1
        elif which == "zero":
            sid = 0
        elif which == "never-opened":
            sid = 2 * (len(ids) + index) + 1
        elif which == "even":
            sid = 2 * index + 2
        else:
            sid = 0x7FFFFFFF
        data += encode_frame(frame_type, flags, sid, payload)
    events: list[Event] = []
    offset = 0
    for size in pieces + [len(data)]:
        events += relay.receive_data(data[offset : offset + size])
        offset += size
        if offset >= len(data):
            break
    assert all(isinstance(event, Event) for event in events)
    ends = [i for i, event in enumerate(events) if isinstance(event, (ConnectionClosed, GoAwayReceived))]
    if ends:
        assert ends[0] == len(events) - 1, "no events after the connection ended"
        assert relay.phase is Phase.CLOSED
        assert relay.receive_data(encode_frame(FrameType.PING, 0, 0, b"12345678")) == []
    relay.data_to_send()  # whatever the relay queued in answer can be serialised
    assert relay.bytes_to_send == 0

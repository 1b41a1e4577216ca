"""Session-wide behaviour: ping, goaway, stream limits, output order and coalescing (relay_protocol/session.py)."""

from __future__ import annotations

import pytest

from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.events import (
    ConnectionClosed,
    DataReceived,
    GoAwayReceived,
    PingAcknowledged,
    StreamOpened,
    StreamReset,
)
from relay_protocol.frames import Flag, FrameType, decode_code_reason, encode_code_reason, encode_frame
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.limits import DEFAULT_MAX_STREAMS, MAX_STREAM_ID
from relay_protocol.session import Phase

from .peers import KIB, connect, frames

# ---------------------------------------------------------------- ping


def test_ping_is_acknowledged_with_the_same_payload():
    link = connect()
    link.relay.ping(b"\x00\x00\x00\x00\x00\x00\x00\x2a")
    assert link.to_agent() == []  # the agent answers without bothering its application
    (ack,) = frames(link.agent.data_to_send())
    assert ack.type is FrameType.PING and ack.flags == Flag.ACK
    link.relay.receive_data(encode_frame(ack.type, ack.flags, 0, ack.payload))
    link.agent.ping(b"agent-01")
    link.to_relay()
    assert link.to_agent() == [PingAcknowledged(b"agent-01")]


def test_ping_payload_is_at_most_eight_bytes():
    link = connect()
    link.relay.ping(b"0123456789")
    (ping,) = frames(link.relay.data_to_send())
    assert ping.payload == b"01234567"
    link.raw_to_agent(FrameType.PING, 0, 0, b"x" * 100)
    (ack,) = frames(link.agent.data_to_send())
    assert ack.payload == b"x" * 8


def test_default_ping_payload_is_eight_zero_bytes():
    link = connect()
    link.agent.ping()
    link.to_relay()
    assert link.to_agent() == [PingAcknowledged(b"\0" * 8)]


# ---------------------------------------------------------------- goaway


def test_goaway_closes_both_sessions_with_code_and_reason():
    link = connect()
    sid = link.open()
    link.relay.goaway(ErrorCode.GOING_AWAY, "relay shutting down")
    assert link.relay.phase is Phase.CLOSED and link.relay.open_streams == 1  # ours, until the driver fails them
    assert link.to_agent() == [GoAwayReceived(ErrorCode.GOING_AWAY, "relay shutting down")]
    assert link.agent.phase is Phase.CLOSED
    assert not link.agent.is_open(sid)


def test_goaway_is_sent_once():
    link = connect()
    link.agent.goaway(ErrorCode.GOING_AWAY, "bye")
    link.agent.goaway(ErrorCode.INTERNAL_ERROR, "again")
    (frame,) = frames(link.agent.data_to_send())
    assert decode_code_reason(frame.payload) == (ErrorCode.GOING_AWAY, "bye")


def test_nothing_new_can_be_sent_after_goaway():
    link = connect()
    sid = link.open()
    link.answer(sid)
    link.relay.goaway(ErrorCode.GOING_AWAY)
    with pytest.raises(LocalProtocolError) as info:
        link.relay.open_stream(RequestHead("GET", "/"))
    assert info.value.code is ErrorCode.GOING_AWAY
    with pytest.raises(LocalProtocolError):
        link.relay.send_data(sid, b"x")
    link.relay.reset_stream(sid)  # ignored once closed
    assert [f.type for f in frames(link.relay.data_to_send())] == [FrameType.GOAWAY]


def test_frames_after_goaway_are_ignored():
    link = connect()
    sid = link.open()
    link.answer(sid)
    link.agent.send_data(sid, b"late")
    later = link.agent.data_to_send()
    goaway = encode_frame(FrameType.GOAWAY, 0, 0, encode_code_reason(ErrorCode.GOING_AWAY, "bye"))
    assert link.relay.receive_data(goaway + later) == [GoAwayReceived(ErrorCode.GOING_AWAY, "bye")]
    assert link.relay.receive_data(later) == []


def test_goaway_with_a_short_payload_is_a_protocol_error():
    link = connect()
    (event,) = link.raw_to_agent(FrameType.GOAWAY, 0, 0, b"\x01")
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


def test_protocol_error_queues_goaway_with_its_code_and_closes_the_session():
    link = connect()
    (event,) = link.raw_to_agent(FrameType.OPEN, 0, 2, RequestHead("GET", "/").encode())
    assert isinstance(event, ConnectionClosed)
    assert link.agent.phase is Phase.CLOSED
    (goaway,) = frames(link.agent.data_to_send())
    assert goaway.type is FrameType.GOAWAY
    assert decode_code_reason(goaway.payload) == (ErrorCode.PROTOCOL_ERROR, event.reason)
    assert link.agent.receive_data(encode_frame(FrameType.PING, 0, 0, b"")) == []


def test_events_before_a_protocol_error_in_the_same_message_are_kept():
    link = connect()
    sid = link.relay.open_stream(RequestHead("GET", "/"))
    link.relay.send_data(sid, b"ok")
    good = link.relay.data_to_send()
    bad = encode_frame(FrameType.DATA, 0, 99, b"x")
    events = link.agent.receive_data(good + bad)
    assert [type(e) for e in events] == [StreamOpened, DataReceived, ConnectionClosed]


# ---------------------------------------------------------------- stream limits


def test_relay_cannot_open_more_than_max_streams():
    link = connect(relay_max_streams=2)
    first = link.open()
    link.open()
    with pytest.raises(LocalProtocolError) as info:
        link.relay.open_stream(RequestHead("GET", "/"))
    assert info.value.code is ErrorCode.TOO_MANY_STREAMS
    link.relay.reset_stream(first)
    assert link.relay.open_stream(RequestHead("GET", "/")) == 5


def test_agent_refuses_streams_beyond_its_limit_with_too_many_streams():
    link = connect(agent_max_streams=1)
    link.open()
    extra = link.relay.open_stream(RequestHead("GET", "/"))
    link.relay.send_data(extra, b"body")
    assert link.to_agent() == []
    (event,) = link.to_relay()
    assert event == StreamReset(extra, ErrorCode.TOO_MANY_STREAMS, "too many streams")
    assert link.agent.open_streams == 1 and link.relay.open_streams == 1
    assert link.agent.data_to_send() == b""  # the refused stream's body is dropped silently


def test_agent_accepts_as_many_streams_as_the_relay_announced_in_welcome():
    # The relay's limit is configurable (--max-streams); the agent is built
    # without one, so it must take the relay's WELCOME.max_streams as its own.
    link = connect(relay_max_streams=DEFAULT_MAX_STREAMS + 5, agent_max_streams=None)
    for _ in range(DEFAULT_MAX_STREAMS + 5):
        link.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    events = link.to_agent()
    assert not [e for e in events if not isinstance(e, StreamOpened)]
    assert link.to_relay() == []  # no RESET(TOO_MANY_STREAMS)


def test_stream_ids_run_out_at_two_to_the_31():
    link = connect()
    link.relay._next_stream_id = MAX_STREAM_ID  # white-box: skip two billion streams
    assert link.relay.open_stream(RequestHead("GET", "/")) == MAX_STREAM_ID
    with pytest.raises(LocalProtocolError) as info:
        link.relay.open_stream(RequestHead("GET", "/"))
    assert info.value.code is ErrorCode.GOING_AWAY


# ---------------------------------------------------------------- output order and coalescing


def test_heads_and_pings_are_sent_before_queued_data_but_a_reset_waits_its_turn():
    link = connect(agent_stream_window=1024 * KIB, agent_connection_window=2048 * KIB)
    bulk = link.open()
    link.relay.send_data(bulk, b"b" * 600 * KIB)
    second = link.relay.open_stream(RequestHead("GET", "/second"))
    link.relay.ping(b"pingpong")
    link.relay.reset_stream(second)
    out = [f.type for f in frames(link.relay.data_to_send())]
    first_data = out.index(FrameType.DATA)
    assert set(out[:first_data]) == {FrameType.OPEN, FrameType.PING}
    assert out[-1] is FrameType.RESET and set(out[first_data:-1]) == {FrameType.DATA}


def test_a_reset_after_a_finished_response_never_overtakes_its_data():
    link = connect()
    sid = link.open()  # the relay's request half stays open (a body or an upgrade)
    link.agent.send_response(sid, ResponseHead(403, "Forbidden"))
    link.agent.send_data(sid, b"no websockets for you", end_stream=True)
    link.agent.reset_stream(sid, ErrorCode.CANCEL, "request abandoned")
    out = frames(link.agent.data_to_send())
    assert [f.type for f in out] == [FrameType.RESPONSE, FrameType.DATA, FrameType.RESET]


def test_credit_overtakes_queued_data():
    link = connect()
    sid = link.open()
    link.answer(sid)
    link.relay.send_data(sid, b"x" * 40 * KIB)
    link.to_agent()
    link.agent.send_data(sid, b"r" * 10 * KIB)
    link.agent.acknowledge_received_data(sid, 40 * KIB)
    out = frames(link.agent.data_to_send())
    assert [f.type for f in out] == [FrameType.CREDIT, FrameType.DATA]


def test_data_to_send_coalesces_every_queued_frame_into_one_message():
    link = connect()
    ids = [link.open() for _ in range(3)]
    for sid in ids:
        link.answer(sid)
    for sid in ids:
        link.agent.send_data(sid, b"abc", end_stream=True)
    before = link.agent.bytes_to_send
    out = link.agent.data_to_send()
    assert len(out) == before and link.agent.bytes_to_send == 0
    assert len(frames(out)) == 3
    assert link.agent.data_to_send() == b""


def test_data_to_send_with_a_limit_stops_at_a_frame_boundary_and_keeps_order():
    link = connect()
    sid = link.open()
    link.answer(sid)
    for i in range(10):
        link.agent.send_data(sid, bytes([i]) * 1000)
    total = link.agent.bytes_to_send
    messages = []
    while link.agent.bytes_to_send:
        message = link.agent.data_to_send(2500)
        assert 2500 <= len(message) <= 2500 + 1010 or link.agent.bytes_to_send == 0
        messages.append(message)
    assert sum(map(len, messages)) == total
    payloads = [bytes(f.payload) for m in messages for f in frames(m)]
    assert payloads == [bytes([i]) * 1000 for i in range(10)]


def test_data_to_send_always_makes_progress_even_with_a_tiny_limit():
    link = connect()
    sid = link.open()
    link.answer(sid)
    link.agent.send_data(sid, b"x" * 5000)
    (frame,) = frames(link.agent.data_to_send(1))
    assert len(frame.payload) == 5000


def test_queued_body_bytes_are_the_ones_given_even_if_sent_later():
    link = connect()
    sid = link.open()
    link.answer(sid)
    body = b"exactly these bytes"
    link.agent.send_data(sid, body, end_stream=True)
    (event,) = link.to_relay()
    assert bytes(event.data) == body


def test_empty_response_body_and_end_travel_as_one_empty_data_frame():
    link = connect()
    sid = link.open(end_stream=True)
    link.agent.send_response(sid, ResponseHead(200))
    link.agent.end_stream(sid)
    out = frames(link.agent.data_to_send())
    assert [(f.type, f.flags, len(f.payload)) for f in out] == [
        (FrameType.RESPONSE, Flag.NONE, len(ResponseHead(200).encode())),
        (FrameType.DATA, Flag.END_STREAM, 0),
    ]


def test_receive_data_accepts_frames_split_anywhere():
    link = connect()
    sid = link.relay.open_stream(RequestHead("PUT", "/x"))
    link.relay.send_data(sid, b"0123456789", end_stream=True)
    data = link.relay.data_to_send()
    events = []
    for i in range(0, len(data), 7):
        events += link.agent.receive_data(data[i : i + 7])
    assert [type(e) for e in events] == [StreamOpened, DataReceived]
    assert bytes(events[1].data) == b"0123456789" and events[1].end_stream

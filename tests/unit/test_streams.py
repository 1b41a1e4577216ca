"""Stream states: the transition table and every illegal move (relay_protocol/streams.py, session.py)."""

from __future__ import annotations

import pytest

from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.events import (
    ConnectionClosed,
    DataReceived,
    ResponseReceived,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from relay_protocol.frames import Flag, FrameType, decode_code_reason, encode_code_reason, encode_u32
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.streams import TRANSITIONS, Action, Half, StreamState, StreamStateError

from .peers import connect, frames, of_type

# ---------------------------------------------------------------- the table


def test_each_half_goes_idle_body_ended():
    state = StreamState(1)
    state.on_send(Action.HEAD)
    assert state.send is Half.BODY
    state.on_send(Action.DATA)
    state.on_send(Action.DATA)
    assert state.send is Half.BODY
    state.on_send(Action.DATA_END)
    assert state.send is Half.ENDED and state.recv is Half.IDLE and not state.closed


def test_a_head_with_end_stream_ends_the_half_at_once():
    state = StreamState(1)
    state.on_receive(Action.HEAD_END)
    assert state.recv is Half.ENDED


def test_stream_is_closed_only_when_both_halves_ended():
    state = StreamState(1)
    state.on_send(Action.HEAD_END)
    assert not state.closed
    state.on_receive(Action.HEAD)
    assert not state.closed
    state.on_receive(Action.DATA_END)
    assert state.closed


def test_table_has_exactly_the_four_legal_moves():
    assert TRANSITIONS == {
        (Half.IDLE, Action.HEAD): Half.BODY,
        (Half.IDLE, Action.HEAD_END): Half.ENDED,
        (Half.BODY, Action.DATA): Half.BODY,
        (Half.BODY, Action.DATA_END): Half.ENDED,
    }


@pytest.mark.parametrize(
    "before, action, code",
    [
        ([], Action.DATA, ErrorCode.PROTOCOL_ERROR),
        ([], Action.DATA_END, ErrorCode.PROTOCOL_ERROR),
        ([Action.HEAD], Action.HEAD, ErrorCode.PROTOCOL_ERROR),
        ([Action.HEAD], Action.HEAD_END, ErrorCode.PROTOCOL_ERROR),
        ([Action.HEAD_END], Action.DATA, ErrorCode.STREAM_CLOSED),
        ([Action.HEAD, Action.DATA_END], Action.DATA, ErrorCode.STREAM_CLOSED),
        ([Action.HEAD, Action.DATA_END], Action.HEAD, ErrorCode.STREAM_CLOSED),
    ],
)
def test_every_move_missing_from_the_table_is_refused_with_its_code(before, action, code):
    state = StreamState(9)
    for step in before:
        state.on_receive(step)
    with pytest.raises(StreamStateError) as info:
        state.on_receive(action)
    assert info.value.code is code
    assert "stream 9" in str(info.value)


# ---------------------------------------------------------------- a full exchange


def test_request_and_response_with_bodies_flow_and_close_the_stream():
    link = connect()
    head = RequestHead("POST", "/upload?x=\u00e9", [("Cookie", "a=1"), ("Cookie", "b=2")], "198.51.100.7")
    sid = link.relay.open_stream(head)
    link.relay.send_data(sid, b"part one, ")
    link.relay.send_data(sid, b"part two", end_stream=True)
    events = link.to_agent()
    assert events[0] == StreamOpened(sid, head, False)
    assert [(type(e), bytes(e.data), e.end_stream) for e in events[1:]] == [
        (DataReceived, b"part one, ", False),
        (DataReceived, b"part two", True),
    ]
    link.agent.send_response(sid, ResponseHead(200, "OK", [("Set-Cookie", "s=1"), ("Set-Cookie", "t=2")]))
    link.agent.send_data(sid, "r\u00e9ponse".encode())
    link.agent.end_stream(sid)
    assert not link.agent.is_open(sid)
    events = link.to_relay()
    assert events[0] == ResponseReceived(sid, ResponseHead(200, "OK", [("Set-Cookie", "s=1"), ("Set-Cookie", "t=2")]), False)
    assert [(bytes(e.data), e.end_stream) for e in events[1:]] == [("r\u00e9ponse".encode(), False), (b"", True)]
    assert not link.relay.is_open(sid)
    assert link.relay.open_streams == link.agent.open_streams == 0


def test_relay_opens_odd_stream_ids_counting_up():
    link = connect()
    assert [link.open() for _ in range(4)] == [1, 3, 5, 7]


def test_request_without_body_and_response_without_body_close_the_stream():
    link = connect()
    sid = link.relay.open_stream(RequestHead("GET", "/"), end_stream=True)
    (event,) = link.to_agent()
    assert event.end_stream is True
    link.agent.send_response(sid, ResponseHead(204), end_stream=True)
    (event,) = link.to_relay()
    assert isinstance(event, ResponseReceived) and event.end_stream is True
    assert link.relay.open_streams == link.agent.open_streams == 0


def test_stream_stays_open_while_one_half_is_still_sending():
    link = connect()
    sid = link.open(end_stream=True)
    link.agent.send_response(sid, ResponseHead(200))
    link.to_relay()
    assert link.relay.is_open(sid) and link.agent.is_open(sid)
    link.agent.send_data(sid, b"late", end_stream=True)
    link.to_relay()
    assert not link.relay.is_open(sid) and not link.agent.is_open(sid)


def test_response_may_come_before_the_request_body_ends():
    link = connect()
    sid = link.open()
    link.answer(sid, end_stream=True)
    link.relay.send_data(sid, b"rest", end_stream=True)
    (event,) = link.to_agent()
    assert bytes(event.data) == b"rest" and event.end_stream
    assert link.agent.open_streams == link.relay.open_streams == 0


# ---------------------------------------------------------------- illegal frames from the peer


def assert_closed(events, code):
    assert [type(e) for e in events][-1:] == [ConnectionClosed]
    assert events[-1].code is code


def goaway_code(session):
    (frame,) = of_type(frames(session.data_to_send()), FrameType.GOAWAY)
    return decode_code_reason(frame.payload)[0]


def test_data_before_the_response_head_is_a_protocol_error():
    link = connect()
    sid = link.open()
    events = link.raw_to_relay(FrameType.DATA, 0, sid, b"too early")
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)
    assert goaway_code(link.relay) is ErrorCode.PROTOCOL_ERROR


def test_data_after_end_stream_is_stream_closed():
    link = connect()
    sid = link.open(end_stream=True)  # the request half ended with OPEN
    events = link.raw_to_agent(FrameType.DATA, 0, sid, b"more")
    assert_closed(events, ErrorCode.STREAM_CLOSED)
    assert goaway_code(link.agent) is ErrorCode.STREAM_CLOSED


def test_data_after_an_ended_response_is_stream_closed():
    link = connect()
    sid = link.open()
    link.answer(sid, end_stream=True)  # relay's request half still open, so the stream is too
    assert link.relay.is_open(sid)
    events = link.raw_to_relay(FrameType.DATA, 0, sid, b"x")
    assert_closed(events, ErrorCode.STREAM_CLOSED)


def test_second_response_head_is_a_protocol_error():
    link = connect()
    sid = link.open()
    link.answer(sid)
    events = link.raw_to_relay(FrameType.RESPONSE, 0, sid, ResponseHead(200).encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


def test_open_from_the_agent_is_a_protocol_error():
    link = connect()
    events = link.raw_to_relay(FrameType.OPEN, 0, 1, RequestHead("GET", "/").encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)
    assert "agents may not open streams" in events[-1].reason


def test_response_from_the_relay_is_a_protocol_error():
    link = connect()
    sid = link.open()
    events = link.raw_to_agent(FrameType.RESPONSE, 0, sid, ResponseHead(200).encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("reused", [1, 3])
def test_reused_stream_id_is_a_protocol_error(reused):
    link = connect()
    link.open()
    link.open()
    events = link.raw_to_agent(FrameType.OPEN, 0, reused, RequestHead("GET", "/").encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


def test_reusing_the_id_of_a_finished_stream_is_a_protocol_error():
    link = connect()
    sid = link.open(end_stream=True)
    link.agent.send_response(sid, ResponseHead(204), end_stream=True)
    assert link.agent.open_streams == 0
    events = link.raw_to_agent(FrameType.OPEN, 0, sid, RequestHead("GET", "/").encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


def test_even_stream_id_in_open_is_a_protocol_error():
    link = connect()
    events = link.raw_to_agent(FrameType.OPEN, 0, 2, RequestHead("GET", "/").encode())
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "ftype, payload",
    [
        (FrameType.DATA, b"x"),
        (FrameType.RESET, encode_code_reason(ErrorCode.CANCEL, "")),
        (FrameType.CREDIT, encode_u32(10)),
        (FrameType.RESPONSE, ResponseHead(200).encode()),
    ],
)
def test_frame_for_a_stream_the_relay_never_opened_is_a_protocol_error(ftype, payload):
    for sid in (3, 2):  # above the highest opened, and an id the relay never uses
        fresh = connect()
        fresh.open()
        events = fresh.raw_to_relay(ftype, 0, sid, payload)
        assert_closed(events, ErrorCode.PROTOCOL_ERROR)
        assert "never opened" in events[-1].reason


@pytest.mark.parametrize(
    "ftype, payload",
    [
        (FrameType.DATA, b"x"),
        (FrameType.RESET, encode_code_reason(ErrorCode.CANCEL, "")),
        (FrameType.CREDIT, encode_u32(10)),
    ],
)
def test_frame_for_a_stream_the_agent_never_saw_opened_is_a_protocol_error(ftype, payload):
    link = connect()
    link.open()
    events = link.raw_to_agent(ftype, 0, 5, payload)
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


def test_frame_for_an_even_stream_id_is_a_protocol_error_on_the_agent_too():
    # The relay opens odd ids only, so stream 2 can never have existed.
    link = connect()
    link.open()
    link.open()
    events = link.raw_to_agent(FrameType.DATA, 0, 2, b"x")
    assert_closed(events, ErrorCode.PROTOCOL_ERROR)


def test_frames_for_already_closed_streams_are_ignored():
    link = connect()
    sid = link.open(end_stream=True)
    link.answer(sid, end_stream=True)
    assert link.relay.open_streams == link.agent.open_streams == 0
    assert link.raw_to_relay(FrameType.DATA, 0, sid, b"late") == []
    assert link.raw_to_relay(FrameType.RESPONSE, 0, sid, ResponseHead(200).encode()) == []
    assert link.raw_to_relay(FrameType.CREDIT, 0, sid, encode_u32(5)) == []
    assert link.raw_to_relay(FrameType.RESET, 0, sid, encode_code_reason(ErrorCode.CANCEL, "")) == []
    assert link.raw_to_agent(FrameType.DATA, Flag.END_STREAM, sid, b"late") == []
    assert link.raw_to_agent(FrameType.CREDIT, 0, sid, encode_u32(5)) == []
    assert link.relay.phase.value == link.agent.phase.value == "open"


# ---------------------------------------------------------------- local misuse


def test_agent_cannot_open_streams_and_relay_cannot_send_responses():
    link = connect()
    with pytest.raises(LocalProtocolError, match="only the relay"):
        link.agent.open_stream(RequestHead("GET", "/"))
    sid = link.open()
    with pytest.raises(LocalProtocolError, match="only the agent"):
        link.relay.send_response(sid, ResponseHead(200))


def test_agent_cannot_send_data_before_its_response_head():
    link = connect()
    sid = link.open()
    with pytest.raises(LocalProtocolError) as info:
        link.agent.send_data(sid, b"x")
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_sending_after_our_end_stream_is_stream_closed():
    link = connect()
    sid = link.open()
    link.relay.end_stream(sid)
    with pytest.raises(LocalProtocolError) as info:
        link.relay.send_data(sid, b"x")
    assert info.value.code is ErrorCode.STREAM_CLOSED


def test_sending_on_an_unknown_or_finished_stream_is_stream_closed():
    link = connect()
    with pytest.raises(LocalProtocolError) as info:
        link.relay.send_data(41, b"x")
    assert info.value.code is ErrorCode.STREAM_CLOSED
    sid = link.open(end_stream=True)
    link.agent.send_response(sid, ResponseHead(204), end_stream=True)
    with pytest.raises(LocalProtocolError) as info:
        link.agent.send_data(sid, b"x")
    assert info.value.code is ErrorCode.STREAM_CLOSED


def test_second_response_head_is_refused_locally():
    link = connect()
    sid = link.open()
    link.agent.send_response(sid, ResponseHead(200))
    with pytest.raises(LocalProtocolError):
        link.agent.send_response(sid, ResponseHead(500))


# ---------------------------------------------------------------- reset


def test_relay_reset_reaches_the_agent_with_code_and_reason():
    link = connect()
    sid = link.open()
    link.relay.reset_stream(sid, ErrorCode.TIMEOUT, "no response in time")
    assert not link.relay.is_open(sid)
    (event,) = link.to_agent()
    assert event == StreamReset(sid, ErrorCode.TIMEOUT, "no response in time")
    assert not link.agent.is_open(sid)


def test_agent_reset_reaches_the_relay_with_code_and_reason():
    link = connect()
    sid = link.open()
    link.agent.reset_stream(sid, ErrorCode.LOCAL_UNREACHABLE, "connection refused")
    (event,) = link.to_relay()
    assert event == StreamReset(sid, ErrorCode.LOCAL_UNREACHABLE, "connection refused")
    assert link.relay.open_streams == 0


def test_reset_default_code_is_cancel():
    link = connect()
    sid = link.open()
    link.relay.reset_stream(sid)
    (event,) = link.to_agent()
    assert event.code is ErrorCode.CANCEL


def test_reset_of_an_unknown_or_closed_stream_sends_nothing():
    link = connect()
    link.relay.reset_stream(99)
    sid = link.open(end_stream=True)
    link.answer(sid, end_stream=True)
    link.relay.reset_stream(sid)
    assert link.relay.data_to_send() == b""


def test_frames_racing_with_our_reset_are_ignored():
    link = connect()
    sid = link.open()
    link.answer(sid)
    link.agent.send_data(sid, b"in flight")
    link.relay.reset_stream(sid)  # the relay resets before the agent's data arrives
    assert link.to_relay() == []
    (event,) = link.to_agent()
    assert isinstance(event, StreamReset)
    assert link.agent.open_streams == link.relay.open_streams == 0


def test_both_sides_resetting_at_once_is_harmless():
    link = connect()
    sid = link.open()
    link.relay.reset_stream(sid, ErrorCode.CANCEL)
    link.agent.reset_stream(sid, ErrorCode.LOCAL_ERROR)
    assert link.to_agent() == []
    assert link.to_relay() == []


def test_reset_with_unknown_code_is_reported_as_an_integer():
    link = connect()
    sid = link.open()
    (event,) = link.raw_to_agent(FrameType.RESET, 0, sid, b"\x03\xe8later")
    assert event == StreamReset(sid, 1000, "later")


def test_reset_without_a_code_is_a_protocol_error():
    link = connect()
    sid = link.open()
    assert_closed(link.raw_to_agent(FrameType.RESET, 0, sid, b"\x00"), ErrorCode.PROTOCOL_ERROR)


def test_credit_for_an_open_stream_is_reported_as_window_updated():
    link = connect()
    sid = link.open()
    assert link.raw_to_relay(FrameType.CREDIT, 0, sid, encode_u32(1)) == [WindowUpdated(sid)]

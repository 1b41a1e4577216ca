"""Flow control: stream and connection windows, credit after use (relay_protocol/windows.py, session.py)."""

from __future__ import annotations

import pytest

from relay_protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from relay_protocol.events import ConnectionClosed, StreamReset, WindowUpdated
from relay_protocol.frames import Flag, FrameType, decode_code_reason, decode_u32, encode_u32
from relay_protocol.heads import ResponseHead
from relay_protocol.limits import MAX_WINDOW
from relay_protocol.windows import ReceiveWindow, SendWindow

from .peers import KIB, Link, connect, frames, of_type


def credits(link_side_bytes: bytes) -> list[tuple[int, int]]:
    """(stream id, amount) of every CREDIT frame in some output."""
    return [(f.stream_id, decode_u32(f.payload)) for f in of_type(frames(link_side_bytes), FrameType.CREDIT)]


def upload(link: Link, size: int, **open_kwargs) -> int:
    """Relay opens a stream and sends ``size`` body bytes that the agent receives."""
    sid = link.open(**open_kwargs)
    link.relay.send_data(sid, b"u" * size)
    link.to_agent()
    return sid


# ---------------------------------------------------------------- the window objects


def test_receive_window_refuses_more_than_granted():
    window = ReceiveWindow(100)
    window.receive(60)
    with pytest.raises(RemoteProtocolError) as info:
        window.receive(41)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    assert (window.available, window.unconsumed) == (40, 60)


def test_receive_window_credits_once_half_is_consumed():
    window = ReceiveWindow(100)
    window.receive(30)
    window.receive(30)
    assert window.consume(20) == 0
    assert window.consume(29) == 0
    assert window.consume(1) == 50
    assert (window.available, window.unconsumed) == (90, 10)


def test_receive_window_never_credits_more_than_was_received():
    window = ReceiveWindow(100)
    window.receive(70)
    assert window.consume(1000) == 70
    assert window.available == 100 and window.unconsumed == 0


def test_send_window_overspend_is_our_bug():
    window = SendWindow(10)
    window.spend(10)
    with pytest.raises(LocalProtocolError) as info:
        window.spend(1)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_send_window_grants_of_zero_or_past_the_maximum_are_the_peers_fault():
    window = SendWindow(10)
    window.grant(5)
    assert window.available == 15
    with pytest.raises(RemoteProtocolError) as info:
        window.grant(0)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    with pytest.raises(RemoteProtocolError) as info:
        window.grant(MAX_WINDOW)
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


# ---------------------------------------------------------------- sending


def test_cannot_send_more_data_than_window():
    link = connect(agent_stream_window=16 * KIB)
    sid = link.open()
    with pytest.raises(LocalProtocolError) as info:
        link.relay.send_data(sid, b"x" * (16 * KIB + 1))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR
    assert link.relay.data_to_send() == b""  # nothing was queued
    link.relay.send_data(sid, b"x" * 16 * KIB)
    assert link.relay.send_window(sid) == 0
    with pytest.raises(LocalProtocolError):
        link.relay.send_data(sid, b"x")


def test_cannot_send_more_than_the_connection_window_across_streams():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=48 * KIB)
    first = upload(link, 32 * KIB)
    second = link.open()
    assert link.relay.send_window(first) == 0
    assert link.relay.send_window(second) == 16 * KIB
    with pytest.raises(LocalProtocolError) as info:
        link.relay.send_data(second, b"x" * (16 * KIB + 1))
    assert info.value.code is ErrorCode.FLOW_CONTROL_ERROR


def test_end_stream_needs_no_window():
    link = connect(agent_stream_window=16 * KIB)
    sid = upload(link, 16 * KIB)
    link.relay.end_stream(sid)
    (event,) = link.to_agent()
    assert event.end_stream and bytes(event.data) == b""


def test_send_window_of_an_unknown_stream_is_zero():
    assert connect().relay.send_window(12345) == 0


# ---------------------------------------------------------------- peer overruns


def test_peer_overrunning_the_stream_window_is_a_flow_control_error():
    link = connect(agent_stream_window=16 * KIB)
    sid = link.open()
    events = link.raw_to_agent(FrameType.DATA, 0, sid, b"x" * (16 * KIB + 1))
    assert isinstance(events[-1], ConnectionClosed) and events[-1].code is ErrorCode.FLOW_CONTROL_ERROR
    (goaway,) = of_type(frames(link.agent.data_to_send()), FrameType.GOAWAY)
    assert decode_code_reason(goaway.payload)[0] is ErrorCode.FLOW_CONTROL_ERROR


def test_peer_overrunning_the_connection_window_is_a_flow_control_error():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=48 * KIB)
    first, second = link.open(), link.open()
    assert link.raw_to_agent(FrameType.DATA, 0, first, b"x" * 32 * KIB)
    events = link.raw_to_agent(FrameType.DATA, 0, second, b"x" * (16 * KIB + 1))
    assert isinstance(events[-1], ConnectionClosed) and events[-1].code is ErrorCode.FLOW_CONTROL_ERROR


def test_zero_credit_is_a_flow_control_error():
    link = connect()
    sid = link.open()
    (event,) = link.raw_to_relay(FrameType.CREDIT, 0, sid, encode_u32(0))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.FLOW_CONTROL_ERROR


def test_credit_past_two_to_the_31_is_a_flow_control_error():
    link = connect()
    (event,) = link.raw_to_relay(FrameType.CREDIT, 0, 0, encode_u32(MAX_WINDOW))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.FLOW_CONTROL_ERROR


def test_credit_with_a_malformed_payload_is_a_protocol_error():
    link = connect()
    (event,) = link.raw_to_relay(FrameType.CREDIT, 0, 0, b"\0\0\1")
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


# ---------------------------------------------------------------- credit after use


def test_credit_is_returned_only_after_acknowledge_received_data():
    link = connect(agent_stream_window=64 * KIB)
    sid = upload(link, 64 * KIB)
    assert credits(link.agent.data_to_send()) == []  # received is not used
    link.agent.acknowledge_received_data(sid, 32 * KIB)
    assert credits(link.agent.data_to_send()) == [(sid, 32 * KIB)]


def test_credit_is_batched_until_half_the_window_is_used():
    link = connect(agent_stream_window=64 * KIB)
    sid = upload(link, 40 * KIB)
    for _ in range(31):
        link.agent.acknowledge_received_data(sid, KIB)
    assert credits(link.agent.data_to_send()) == []
    link.agent.acknowledge_received_data(sid, KIB)
    assert credits(link.agent.data_to_send()) == [(sid, 32 * KIB)]


def test_small_acknowledgements_on_a_spent_window_are_still_batched():
    # A fast sender keeps the window spent; a reader that uses the bytes in small
    # pieces must not answer each piece with its own CREDIT frame.
    link = connect(agent_stream_window=64 * KIB)
    sid = upload(link, 64 * KIB)
    granted = []
    for _ in range(64):
        link.agent.acknowledge_received_data(sid, KIB)
        granted += credits(link.agent.data_to_send())
    assert sum(n for _, n in granted) >= 32 * KIB  # the sender is never left stalled
    assert len(granted) <= 3, f"{len(granted)} CREDIT frames for 64 acknowledgements of 1 KiB"


def test_credit_reopens_the_senders_window():
    link = connect(agent_stream_window=64 * KIB)
    sid = upload(link, 64 * KIB)
    assert link.relay.send_window(sid) == 0
    link.agent.acknowledge_received_data(sid, 40 * KIB)
    events = link.to_relay()
    assert WindowUpdated(sid) in events
    assert link.relay.send_window(sid) == 40 * KIB


def test_acknowledging_more_than_received_credits_only_what_was_received():
    link = connect(agent_stream_window=64 * KIB, agent_connection_window=64 * KIB)
    sid = upload(link, 40 * KIB)
    link.agent.acknowledge_received_data(sid, 10**9)
    assert sorted(credits(link.agent.data_to_send())) == [(0, 40 * KIB), (sid, 40 * KIB)]


def test_acknowledging_zero_negative_or_unknown_streams_does_nothing():
    link = connect()
    sid = upload(link, 40 * KIB)
    link.agent.acknowledge_received_data(sid, 0)
    link.agent.acknowledge_received_data(sid, -5)
    link.agent.acknowledge_received_data(77, 40 * KIB)
    assert link.agent.data_to_send() == b""


def test_connection_credit_is_batched_at_half_the_connection_window():
    link = connect(agent_stream_window=64 * KIB, agent_connection_window=64 * KIB)
    first = upload(link, 20 * KIB)
    second = upload(link, 20 * KIB)
    link.agent.acknowledge_received_data(first, 20 * KIB)
    assert credits(link.agent.data_to_send()) == []
    link.agent.acknowledge_received_data(second, 12 * KIB)
    out = link.agent.data_to_send()
    assert credits(out) == [(0, 32 * KIB)]
    link.relay.receive_data(out)
    assert link.relay.send_window(link.open()) == 64 * KIB - 8 * KIB


def test_connection_credit_is_reported_as_window_updated_zero():
    link = connect(agent_stream_window=64 * KIB, agent_connection_window=64 * KIB)
    sid = upload(link, 40 * KIB)
    link.agent.acknowledge_received_data(sid, 40 * KIB)
    assert WindowUpdated(0) in link.to_relay()


def test_no_stream_credit_once_the_peer_ended_its_half():
    link = connect(agent_stream_window=64 * KIB, agent_connection_window=1024 * KIB)
    sid = link.open()
    link.relay.send_data(sid, b"x" * 40 * KIB, end_stream=True)
    link.to_agent()
    link.agent.acknowledge_received_data(sid, 40 * KIB)
    assert credits(link.agent.data_to_send()) == []  # stream half over; connection below half


# ---------------------------------------------------------------- reset and draining


def test_reset_by_the_peer_returns_unconsumed_bytes_to_the_connection_window():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=32 * KIB)
    sid = upload(link, 20 * KIB)
    link.relay.reset_stream(sid)
    assert [type(e) for e in link.to_agent()] == [StreamReset]
    assert credits(link.agent.data_to_send()) == [(0, 20 * KIB)]


def test_our_own_reset_returns_unconsumed_bytes_to_the_connection_window():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=32 * KIB)
    sid = upload(link, 20 * KIB)
    link.agent.reset_stream(sid)
    out = link.agent.data_to_send()
    assert sorted(f.type for f in frames(out)) == [FrameType.RESET, FrameType.CREDIT]
    assert credits(out) == [(0, 20 * KIB)]
    link.relay.receive_data(out)
    assert link.relay.send_window(link.open()) == 32 * KIB


def test_acknowledging_after_a_reset_gives_no_extra_credit():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=32 * KIB)
    sid = upload(link, 20 * KIB)
    link.agent.reset_stream(sid)
    link.agent.data_to_send()
    link.agent.acknowledge_received_data(sid, 20 * KIB)
    assert link.agent.data_to_send() == b""


def test_data_arriving_after_our_reset_is_credited_back_to_the_connection():
    link = connect(relay_stream_window=32 * KIB, relay_connection_window=32 * KIB)
    sid = link.open()
    link.answer(sid)
    link.agent.send_data(sid, b"d" * 20 * KIB)
    link.relay.reset_stream(sid)
    link.relay.data_to_send()
    assert link.to_relay() == []
    assert credits(link.relay.data_to_send()) == [(0, 20 * KIB)]


def test_closed_stream_drains_unconsumed_bytes_into_connection_credit_only():
    link = connect(agent_stream_window=32 * KIB, agent_connection_window=32 * KIB)
    sid = link.open()
    link.relay.send_data(sid, b"x" * 20 * KIB, end_stream=True)
    link.to_agent()
    link.agent.send_response(sid, ResponseHead(413), end_stream=True)  # answered without reading the body
    assert not link.agent.is_open(sid)
    link.agent.data_to_send()
    link.agent.acknowledge_received_data(sid, 12 * KIB)
    assert credits(link.agent.data_to_send()) == []
    link.agent.acknowledge_received_data(sid, 8 * KIB)
    assert credits(link.agent.data_to_send()) == [(0, 20 * KIB)]
    link.agent.acknowledge_received_data(sid, 8 * KIB)  # nothing left to drain
    assert link.agent.data_to_send() == b""


def test_data_flags_mark_only_the_last_chunk_of_a_large_send():
    link = connect(agent_stream_window=1024 * KIB, agent_connection_window=1024 * KIB)
    sid = link.open()
    link.relay.send_data(sid, b"z" * (600 * KIB), end_stream=True)
    data = of_type(frames(link.relay.data_to_send()), FrameType.DATA)
    assert [len(f.payload) for f in data] == [256 * KIB, 256 * KIB, 88 * KIB]
    assert [f.flags for f in data] == [Flag.NONE, Flag.NONE, Flag.END_STREAM]

"""HELLO/WELCOME: versions, windows and refusals (relay_protocol/handshake.py, session.py)."""

from __future__ import annotations

import json

import pytest

from relay_protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from relay_protocol.events import ConnectionClosed, GoAwayReceived, HelloReceived, WelcomeReceived
from relay_protocol.frames import FrameType, decode_code_reason, encode_frame
from relay_protocol.handshake import PROTOCOL_VERSION, SUPPORTED_VERSIONS, Hello, Welcome, choose_version
from relay_protocol.heads import RequestHead
from relay_protocol.limits import (
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_STREAM_WINDOW,
    MAX_CONTROL_PAYLOAD,
    MAX_WINDOW,
    MIN_WINDOW,
)
from relay_protocol.session import Phase, Role, Session

from .peers import KIB, Link, connect, frames, of_type


def hello_payload(**fields) -> bytes:
    obj = {"versions": [1]}
    obj.update(fields)
    return json.dumps(obj).encode()


# ---------------------------------------------------------------- payloads


def test_hello_round_trips_every_field():
    hello = Hello(
        versions=[1, 2],
        subdomain="myapp",
        agent_key="k",
        client="localrelay-agent/0.1",
        stream_window=32 * KIB,
        connection_window=64 * KIB,
        options={"basic_auth": "u:p"},
    )
    assert Hello.decode(hello.encode()) == hello


def test_hello_defaults_speak_this_version_with_default_windows():
    hello = Hello.decode(hello_payload())
    assert hello.versions == [PROTOCOL_VERSION] == list(SUPPORTED_VERSIONS)
    assert (hello.subdomain, hello.agent_key, hello.client, hello.options) == (None, "", "", {})
    assert (hello.stream_window, hello.connection_window) == (DEFAULT_STREAM_WINDOW, DEFAULT_CONNECTION_WINDOW)


def test_welcome_round_trips_every_field():
    welcome = Welcome(1, "demo", "https://demo.example.com", 32 * KIB, 64 * KIB, 50)
    assert Welcome.decode(welcome.encode()) == welcome


@pytest.mark.parametrize(
    "fields",
    [
        {"versions": None},
        {"versions": []},
        {"versions": 1},
        {"versions": ["1"]},
        {"versions": [1.0]},
        {"versions": [True]},
        {"subdomain": 5},
        {"options": []},
        {"agent_key": 1},
        {"client": None},
        {"stream_window": MIN_WINDOW - 1},
        {"stream_window": MAX_WINDOW + 1},
        {"connection_window": 0},
        {"connection_window": float(DEFAULT_CONNECTION_WINDOW)},
        {"stream_window": True},
    ],
)
def test_invalid_hello_fields_are_refused(fields):
    with pytest.raises(RemoteProtocolError):
        Hello.decode(hello_payload(**fields))


@pytest.mark.parametrize("window", [MIN_WINDOW, MAX_WINDOW])
def test_windows_at_the_limits_are_accepted(window):
    hello = Hello.decode(hello_payload(stream_window=window, connection_window=window))
    assert hello.stream_window == hello.connection_window == window


@pytest.mark.parametrize("payload", [b"", b"[1]", b"nope", b"\xff"])
def test_hello_that_is_not_a_json_object_is_refused(payload):
    with pytest.raises(RemoteProtocolError, match="HELLO"):
        Hello.decode(payload)


def test_control_payload_over_the_limit_is_refused():
    payload = hello_payload(client="x" * MAX_CONTROL_PAYLOAD)
    with pytest.raises(RemoteProtocolError, match="too large"):
        Hello.decode(payload)
    with pytest.raises(RemoteProtocolError, match="too large"):
        Welcome.decode(json.dumps({"version": 1, "name": "x" * MAX_CONTROL_PAYLOAD}).encode())


@pytest.mark.parametrize(
    "obj", [{}, {"version": "1"}, {"version": 1, "max_streams": -1}, {"version": 1, "name": 3}, {"version": 1, "stream_window": 1}]
)
def test_invalid_welcome_fields_are_refused(obj):
    with pytest.raises(RemoteProtocolError):
        Welcome.decode(json.dumps(obj).encode())


def test_version_choice_is_the_highest_shared_version():
    assert choose_version([7, 1, 3]) == 1


def test_no_shared_version_is_refused_with_unsupported_version_naming_both_lists():
    with pytest.raises(RemoteProtocolError) as info:
        choose_version([3, 2])
    assert info.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert "[2, 3]" in str(info.value) and "[1]" in str(info.value)


# ---------------------------------------------------------------- sessions


def test_handshake_opens_both_sessions_and_reports_hello_and_welcome():
    relay, agent = Session(Role.RELAY), Session(Role.AGENT)
    link = Link(relay, agent)
    agent.send_hello(Hello(subdomain="myapp", agent_key="key", client="tests", options={"a": 1}))
    (event,) = link.to_relay()
    assert isinstance(event, HelloReceived)
    assert (event.hello.subdomain, event.hello.agent_key, event.hello.client, event.hello.options) == (
        "myapp",
        "key",
        "tests",
        {"a": 1},
    )
    assert relay.phase is Phase.HANDSHAKE and relay.version == 1
    relay.accept(Welcome(version=0, name="myapp", public_url="http://myapp.localhost:8080"))
    assert relay.phase is Phase.OPEN
    (event,) = link.to_agent()
    assert isinstance(event, WelcomeReceived)
    assert (event.welcome.version, event.welcome.name, event.welcome.public_url) == (
        1,
        "myapp",
        "http://myapp.localhost:8080",
    )
    assert agent.phase is Phase.OPEN and agent.version == 1


def test_hello_is_the_agents_first_frame_and_carries_its_receive_windows():
    agent = Session(Role.AGENT, stream_window=32 * KIB, connection_window=96 * KIB)
    agent.send_hello(Hello(stream_window=1, connection_window=1))
    (frame,) = frames(agent.data_to_send())
    assert frame.type is FrameType.HELLO and frame.stream_id == 0
    hello = Hello.decode(frame.payload)
    assert (hello.stream_window, hello.connection_window) == (32 * KIB, 96 * KIB)


def test_welcome_carries_the_relays_windows_max_streams_and_the_chosen_version():
    relay = Session(Role.RELAY, stream_window=48 * KIB, connection_window=80 * KIB, max_streams=7)
    relay.receive_data(encode_frame(FrameType.HELLO, 0, 0, hello_payload(versions=[1, 9])))
    relay.accept(Welcome(version=99, name="n", public_url="u", stream_window=1, max_streams=1))
    (frame,) = frames(relay.data_to_send())
    welcome = Welcome.decode(frame.payload)
    assert (welcome.version, welcome.stream_window, welcome.connection_window, welcome.max_streams) == (
        1,
        48 * KIB,
        80 * KIB,
        7,
    )


def test_announced_windows_bound_what_each_side_may_send():
    link = connect(
        relay_stream_window=20 * KIB,
        relay_connection_window=30 * KIB,
        agent_stream_window=40 * KIB,
        agent_connection_window=50 * KIB,
    )
    sid = link.open()
    assert link.relay.send_window(sid) == 40 * KIB  # the agent's stream window
    link.answer(sid)
    assert link.agent.send_window(sid) == 20 * KIB  # the relay's stream window
    second = link.open()
    link.relay.send_data(second, b"x" * 40 * KIB)
    link.to_agent()
    third = link.open()
    assert link.relay.send_window(third) == 10 * KIB  # what is left of the agent's 50 KiB


def test_agent_offering_no_shared_version_is_refused_with_goaway_unsupported_version():
    relay, agent = Session(Role.RELAY), Session(Role.AGENT)
    link = Link(relay, agent)
    agent.send_hello(Hello(versions=[2, 3]))
    (event,) = link.to_relay()
    assert isinstance(event, ConnectionClosed)
    assert event.code is ErrorCode.UNSUPPORTED_VERSION
    assert relay.phase is Phase.CLOSED
    (frame,) = frames(relay.data_to_send())
    assert frame.type is FrameType.GOAWAY
    code, reason = decode_code_reason(frame.payload)
    assert code is ErrorCode.UNSUPPORTED_VERSION and "[2, 3]" in reason and "[1]" in reason
    (event,) = agent.receive_data(encode_frame(FrameType.GOAWAY, 0, 0, frame.payload))
    assert isinstance(event, GoAwayReceived) and event.code is ErrorCode.UNSUPPORTED_VERSION
    assert agent.phase is Phase.CLOSED


def test_agent_offering_several_versions_gets_the_shared_one():
    relay = Session(Role.RELAY)
    (event,) = relay.receive_data(encode_frame(FrameType.HELLO, 0, 0, hello_payload(versions=[5, 1, 4])))
    assert isinstance(event, HelloReceived) and relay.version == 1


def test_welcome_naming_a_version_the_agent_does_not_speak_closes_the_agent():
    agent = Session(Role.AGENT)
    agent.send_hello(Hello())
    agent.data_to_send()
    welcome = Welcome(version=2, name="n", public_url="u").encode()
    (event,) = agent.receive_data(encode_frame(FrameType.WELCOME, 0, 0, welcome))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.UNSUPPORTED_VERSION
    (frame,) = frames(agent.data_to_send())
    assert frame.type is FrameType.GOAWAY and decode_code_reason(frame.payload)[0] is ErrorCode.UNSUPPORTED_VERSION


def test_relay_refusal_reaches_the_agent_as_goaway_with_code_and_sentence():
    relay, agent = Session(Role.RELAY), Session(Role.AGENT)
    link = Link(relay, agent)
    agent.send_hello(Hello(subdomain="taken"))
    link.to_relay()
    relay.refuse(ErrorCode.NAME_TAKEN, "subdomain 'taken' is in use by another agent")
    assert relay.phase is Phase.CLOSED
    (event,) = link.to_agent()
    assert event == GoAwayReceived(ErrorCode.NAME_TAKEN, "subdomain 'taken' is in use by another agent")
    with pytest.raises(LocalProtocolError):
        relay.accept(Welcome(1, "taken", "u"))


@pytest.mark.parametrize(
    "role, ftype, payload",
    [
        (Role.AGENT, FrameType.HELLO, hello_payload()),
        (Role.RELAY, FrameType.WELCOME, Welcome(1, "n", "u").encode()),
        (Role.AGENT, FrameType.WELCOME, Welcome(1, "n", "u").encode()),  # before our HELLO
    ],
)
def test_handshake_frame_from_the_wrong_side_is_a_protocol_error(role, ftype, payload):
    session = Session(role)
    (event,) = session.receive_data(encode_frame(ftype, 0, 0, payload))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


def test_second_hello_is_a_protocol_error():
    relay = Session(Role.RELAY)
    hello = encode_frame(FrameType.HELLO, 0, 0, hello_payload())
    events = relay.receive_data(hello + hello)
    assert [type(e) for e in events] == [HelloReceived, ConnectionClosed]
    assert events[1].code is ErrorCode.PROTOCOL_ERROR


def test_second_welcome_is_a_protocol_error():
    link = connect()
    (event,) = link.raw_to_agent(FrameType.WELCOME, 0, 0, Welcome(1, "n", "u").encode())
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("ftype", [FrameType.OPEN, FrameType.DATA, FrameType.RESET])
def test_stream_frames_before_the_handshake_are_a_protocol_error(ftype):
    agent = Session(Role.AGENT)
    agent.send_hello(Hello())
    payload = RequestHead("GET", "/").encode() if ftype is FrameType.OPEN else b"\0\0"
    (event,) = agent.receive_data(encode_frame(ftype, 0, 1, payload))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


def test_data_before_hello_is_a_protocol_error_on_the_relay():
    (event,) = Session(Role.RELAY).receive_data(encode_frame(FrameType.DATA, 0, 1, b"x"))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


def test_deeply_nested_hello_is_a_protocol_error_not_a_crash():
    payload = b'{"versions":[1],"options":{"a":' + b"[" * 5000 + b"]" * 5000 + b"}}"
    assert len(payload) < MAX_CONTROL_PAYLOAD
    (event,) = Session(Role.RELAY).receive_data(encode_frame(FrameType.HELLO, 0, 0, payload))
    assert isinstance(event, ConnectionClosed) and event.code is ErrorCode.PROTOCOL_ERROR


def test_local_handshake_misuse_raises_local_protocol_error():
    agent, relay = Session(Role.AGENT), Session(Role.RELAY)
    with pytest.raises(LocalProtocolError, match="only the agent"):
        relay.send_hello(Hello())
    with pytest.raises(LocalProtocolError, match="only the relay"):
        agent.accept(Welcome(1, "n", "u"))
    with pytest.raises(LocalProtocolError, match="received HELLO"):
        relay.accept(Welcome(1, "n", "u"))
    agent.send_hello(Hello())
    with pytest.raises(LocalProtocolError, match="already sent"):
        agent.send_hello(Hello())


def test_streams_cannot_open_before_the_handshake_completes():
    relay = Session(Role.RELAY)
    relay.receive_data(encode_frame(FrameType.HELLO, 0, 0, hello_payload()))
    with pytest.raises(LocalProtocolError) as info:
        relay.open_stream(RequestHead("GET", "/"))
    assert info.value.code is ErrorCode.GOING_AWAY


def test_ping_is_answered_during_the_handshake():
    relay = Session(Role.RELAY)
    assert relay.receive_data(encode_frame(FrameType.PING, 0, 0, b"abcdefgh")) == []
    (frame,) = of_type(frames(relay.data_to_send()), FrameType.PING)
    assert frame.flags & 2 and frame.payload == b"abcdefgh"

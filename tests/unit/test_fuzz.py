"""Property-based fuzzing: malformed input only ever ends in a protocol error (frames.py, session.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay_protocol.errors import RemoteProtocolError
from relay_protocol.events import ConnectionClosed, Event, GoAwayReceived
from relay_protocol.frames import Flag, FrameDecoder, FrameType, encode_code_reason, encode_frame, encode_u32
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.session import Phase, Role, Session

from .peers import connect

FUZZ = settings(max_examples=150, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow])


def relay_side_traffic() -> bytes:
    """A valid agent -> relay byte stream (after the handshake)."""
    link = connect()
    ids = [link.open() for _ in range(3)]
    out = b""
    for sid in ids:
        link.agent.send_response(sid, ResponseHead(200, "OK", [("Set-Cookie", "a=1"), ("X-\u00e9", "\u2603")]))
        link.agent.send_data(sid, b"body" * 50)
        link.agent.acknowledge_received_data(sid, 0)
    link.agent.send_data(ids[0], b"", end_stream=True)
    link.agent.reset_stream(ids[1])
    link.agent.ping(b"12345678")
    out += link.agent.data_to_send()
    out += encode_frame(FrameType.CREDIT, 0, 0, encode_u32(1000))
    out += encode_frame(FrameType.CREDIT, 0, ids[2], encode_u32(1000))
    out += encode_frame(FrameType.GOAWAY, 0, 0, encode_code_reason(14, "bye"))
    return out


WELCOME = encode_frame(FrameType.WELCOME, 0, 0, Welcome(1, "demo", "http://demo.localhost").encode())


def agent_side_traffic() -> bytes:
    """A valid relay -> agent byte stream, starting with the WELCOME."""
    frames = [WELCOME]
    for sid in (1, 3, 5):
        frames.append(encode_frame(FrameType.OPEN, 0, sid, RequestHead("POST", "/x", [("A", "b")], "::1").encode()))
        frames.append(encode_frame(FrameType.DATA, 0, sid, b"payload" * 20))
    frames.append(encode_frame(FrameType.DATA, Flag.END_STREAM, 1, b""))
    frames.append(encode_frame(FrameType.RESET, 0, 3, encode_code_reason(7, "cancel")))
    frames.append(encode_frame(FrameType.CREDIT, 0, 5, encode_u32(100)))
    frames.append(encode_frame(FrameType.PING, 0, 0, b"abcdefgh"))
    frames.append(encode_frame(FrameType.PING, Flag.ACK, 0, b"abcdefgh"))
    frames.append(encode_frame(FrameType.GOAWAY, 0, 0, encode_code_reason(0, "")))
    return b"".join(frames)


HELLO = encode_frame(FrameType.HELLO, 0, 0, Hello(subdomain="demo").encode())
RELAY_TRAFFIC = relay_side_traffic()
AGENT_TRAFFIC = agent_side_traffic()


def mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """Truncate ``data`` and flip some bits."""
    out = bytearray(data[: max(0, min(cut, len(data)))])
    for position, bit in flips:
        if out:
            out[position % len(out)] ^= 1 << bit
    return bytes(out)


flips = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), max_size=6)


def fresh_session(role: Role, after_handshake: bool) -> Session:
    if not after_handshake:
        session = Session(role)
        if role is Role.AGENT:
            session.send_hello(Hello())
            session.data_to_send()
        return session
    link = connect()
    return link.relay if role is Role.RELAY else link.agent


def feed_in_pieces(session: Session, data: bytes, sizes: list[int]) -> list[Event]:
    events: list[Event] = []
    offset = 0
    for size in sizes + [len(data)]:
        events += session.receive_data(data[offset : offset + size])
        offset += size
        if offset >= len(data):
            break
    return events


def check_outcome(session: Session, events: list[Event]) -> None:
    assert all(isinstance(e, Event) for e in events)
    closed = [e for e in events if isinstance(e, (ConnectionClosed, GoAwayReceived))]
    if closed:
        assert events[-1] is closed[0], "no events after the connection ended"
        assert session.phase is Phase.CLOSED
    session.data_to_send()  # whatever was queued can be serialised


# ---------------------------------------------------------------- decoder


@FUZZ
@given(st.binary(max_size=4096))
def test_decoder_only_ever_raises_remote_protocol_error(data):
    decoder = FrameDecoder()
    try:
        frames = decoder.feed(data)
    except RemoteProtocolError:
        return
    consumed = sum(10 + len(f.payload) for f in frames)
    assert consumed + decoder.pending == len(data)


@FUZZ
@given(st.integers(0, 2000), flips, st.lists(st.integers(1, 64), max_size=20))
def test_decoder_on_damaged_valid_traffic_only_raises_remote_protocol_error(cut, bit_flips, pieces):
    data = mutate(RELAY_TRAFFIC + AGENT_TRAFFIC, cut, bit_flips)
    decoder = FrameDecoder()
    offset = 0
    try:
        for size in pieces + [len(data)]:
            decoder.feed(data[offset : offset + size])
            offset += size
    except RemoteProtocolError:
        pass


# ---------------------------------------------------------------- sessions


@FUZZ
@given(st.sampled_from(list(Role)), st.booleans(), st.binary(max_size=2048))
def test_session_survives_random_bytes(role, after_handshake, data):
    session = fresh_session(role, after_handshake)
    events = session.receive_data(data)
    check_outcome(session, events)


@FUZZ
@given(st.sampled_from(list(Role)), st.booleans(), st.integers(0, 3000), flips, st.lists(st.integers(1, 200), max_size=10))
def test_session_survives_truncated_and_bit_flipped_traffic(role, after_handshake, cut, bit_flips, pieces):
    if role is Role.RELAY:
        valid = RELAY_TRAFFIC if after_handshake else HELLO + RELAY_TRAFFIC
    else:
        valid = AGENT_TRAFFIC[len(WELCOME) :] if after_handshake else AGENT_TRAFFIC
    session = fresh_session(role, after_handshake)
    events = feed_in_pieces(session, mutate(valid, cut, bit_flips), pieces)
    check_outcome(session, events)


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(list(FrameType)),
            st.integers(0, 3),
            st.sampled_from([0, 1, 2, 3, 5, 7, 0x7FFFFFFF]),
            st.one_of(
                st.binary(max_size=64),
                st.sampled_from(
                    [
                        RequestHead("GET", "/").encode(),
                        ResponseHead(200).encode(),
                        encode_u32(1),
                        encode_u32(0),
                        encode_u32(2**31),
                        encode_code_reason(7, "x"),
                        Hello().encode(),
                        Welcome(1, "n", "u").encode(),
                        b'{"m":"GET","t":"/","h":["A","\\r\\n"]}',
                    ]
                ),
            ),
        ),
        max_size=12,
    ),
    st.sampled_from(list(Role)),
    st.booleans(),
)
def test_session_survives_well_formed_frames_in_any_order(frames, role, after_handshake):
    session = fresh_session(role, after_handshake)
    data = b"".join(encode_frame(t, flags, sid, payload) for t, flags, sid, payload in frames)
    events = session.receive_data(data)
    check_outcome(session, events)

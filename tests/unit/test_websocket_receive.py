"""``PushWebsocket`` delivers the messages websockets' own protocol reads, however the bytes are cut.

Its handling of websockets' frames (fragments joined, pongs matched, text
refused, the closing handshake, the size limit) must give exactly the
messages, and write exactly the replies (pongs, close frames), that
websockets' protocol alone gives for the same bytes: differential, with
hypothesis choosing the frames and where the stream is cut.  Whole binary frames
are cut out by ``relay_protocol.wsframes`` and everything else goes through
websockets, so this also holds that reader to websockets' answers.
"""

from __future__ import annotations

import asyncio
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import CLIENT, SERVER, Protocol, Side
from websockets.streams import StreamReader

from relay_protocol.websocket import PushWebsocket

LIMIT = 70_000  # the receiver's message size limit: frames past it fail the connection with 1009


class Wire:
    """A transport that records what is written to it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def set_protocol(self, protocol: object) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self.written += piece

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Collector:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    def message_received(self, message: bytes) -> None:
        self.messages.append(bytes(message))

    def transport_writable(self) -> None:
        pass

    def transport_closed(self) -> None:
        pass


def ours(side: Side, stream: bytes, cuts: list[int]) -> tuple[list[bytes], bytes, object]:
    loop = asyncio.new_event_loop()
    try:
        wire = Wire()
        link = PushWebsocket(Protocol(side, max_size=LIMIT), wire, loop, ping_interval=None, ping_timeout=None, close_timeout=1)  # type: ignore[arg-type]
        link._take_over()
        got = Collector()
        link.attach(got)
        start = 0
        for cut in sorted(set(cuts)) + [len(stream)]:
            if cut > start:
                link.data_received(stream[start:cut])
                start = cut
        link._close_timer and link._close_timer.cancel()
        return got.messages, bytes(wire.written), link.protocol.state
    finally:
        loop.close()


def theirs(side: Side, stream: bytes) -> tuple[list[bytes], bytes, object]:
    protocol = Protocol(side, max_size=LIMIT)
    protocol.receive_data(stream)
    messages, fragments = [], None
    for frame in protocol.events_received():
        if frame.opcode is Opcode.BINARY:
            if frame.fin:
                messages.append(frame.data)
            else:
                fragments = [frame.data]
        elif frame.opcode is Opcode.CONT and fragments is not None:
            fragments.append(frame.data)
            if frame.fin:
                messages.append(b"".join(fragments))
                fragments = None
    return messages, b"".join(protocol.data_to_send()), protocol.state


def replies_in(written: bytes, side: Side) -> list[tuple[Opcode, bytes, bool]]:
    """The frames ``side`` wrote (a client masks them with a random key: compare frames, not bytes)."""
    reader = StreamReader()
    reader.feed_data(written)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=side is CLIENT)
        try:
            next(parser)
        except StopIteration as done:
            frame = done.value
            frames.append((frame.opcode, frame.data, frame.fin))
        else:
            raise AssertionError("a frame cut short")
    return frames


def encode(frames: list[Frame], side: Side) -> bytes:
    """The bytes the peer of ``side`` sends: masked if the receiver is the server."""
    return b"".join(frame.serialize(mask=side is SERVER) for frame in frames)


payloads = st.one_of(
    st.binary(max_size=40),
    st.integers(min_value=120, max_value=70_000).map(lambda n: os.urandom(n)),
)
data_frame = payloads.map(lambda p: [Frame(Opcode.BINARY, p)])
fragmented = st.lists(st.binary(max_size=300), min_size=2, max_size=4).map(
    lambda parts: [Frame(Opcode.BINARY, parts[0], fin=False)]
    + [Frame(Opcode.CONT, p, fin=False) for p in parts[1:-1]]
    + [Frame(Opcode.CONT, parts[-1])]
)
ping = st.binary(max_size=20).map(lambda p: [Frame(Opcode.PING, p)])
pong = st.binary(max_size=20).map(lambda p: [Frame(Opcode.PONG, p)])
group = st.one_of(data_frame, data_frame, data_frame, fragmented, ping, pong)
ending = st.sampled_from(["none", "close", "text", "too big", "then data after close", "a fragment interrupted"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    side=st.sampled_from([SERVER, CLIENT]),
    groups=st.lists(group, max_size=8),
    end=ending,
    cuts=st.lists(st.integers(min_value=0, max_value=300_000), max_size=12),
    small_cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_the_same_messages_and_replies_as_websockets_own_protocol(side, groups, end, cuts, small_cuts) -> None:
    frames = [frame for g in groups for frame in g]
    if end == "close":
        frames.append(Frame(Opcode.CLOSE, Close(1000, "bye").serialize()))
    elif end == "text":
        frames.append(Frame(Opcode.TEXT, b"text"))
    elif end == "too big":
        frames.append(Frame(Opcode.BINARY, b"x" * (LIMIT + 1)))
    elif end == "a fragment interrupted":  # a whole binary frame where a continuation must come: 1002
        frames += [Frame(Opcode.BINARY, b"start", fin=False), Frame(Opcode.BINARY, b"whole"), Frame(Opcode.BINARY, b"x")]
    elif end == "then data after close":
        frames += [Frame(Opcode.CLOSE, Close(1000, "").serialize()), Frame(Opcode.BINARY, b"late")]
    stream = encode(frames, side)
    cuts = [c % (len(stream) + 1) for c in cuts] + small_cuts
    got, written, state = ours(side, stream, cuts)
    expected, replies, expected_state = theirs(side, stream)
    if end == "text":  # ours refuses text (close 1003) where websockets delivers it: compare up to it
        assert got == expected
        return
    assert got == expected
    assert replies_in(written, side) == replies_in(replies, side)
    assert state == expected_state


def test_a_frame_whose_mask_bit_is_wrong_is_websockets_protocol_error() -> None:
    unmasked = Frame(Opcode.BINARY, b"hi").serialize(mask=False)
    got, written, _ = ours(SERVER, unmasked, [])
    assert got == [] and written == theirs(SERVER, unmasked)[1] and written[:1] == b"\x88"
    assert int.from_bytes(written[2:4], "big") == 1002


def test_a_large_frame_cut_into_many_pieces_arrives_whole() -> None:
    payload = os.urandom(200_000 - 1)
    limit_ok = Frame(Opcode.BINARY, payload[:LIMIT]).serialize(mask=True)
    got, written, _ = ours(SERVER, limit_ok, list(range(0, len(limit_ok), 1500)))
    assert got == [payload[:LIMIT]] and written == b""

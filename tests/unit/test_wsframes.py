"""``BinaryFrameReader``: whole binary frames as views, control frames as bytes, the rest handed back whole.

``test_websocket_receive`` holds ``PushWebsocket`` (which uses this reader)
against websockets' own protocol for arbitrary frames and cuts; these pin what
the reader itself promises: no copy of a frame that arrives whole, one copy of
exactly a frame that arrives in pieces, and the exact bytes back where it stops.
"""

from __future__ import annotations

import os

import pytest
from websockets.frames import Close, Frame, Opcode

from relay_protocol.wsframes import BinaryFrameReader, Piece

LIMIT = 1 << 20


def binary(payload: bytes, masked: bool = False) -> bytes:
    return Frame(Opcode.BINARY, payload).serialize(mask=masked)


def drain(reader: BinaryFrameReader) -> list[tuple[Piece, bytes | memoryview]]:
    found = []
    while (piece := reader.next()) is not None:
        found.append(piece)
    return found


def test_frames_that_arrive_whole_come_out_as_views_into_the_received_bytes() -> None:
    payloads = [os.urandom(65536), b"", os.urandom(300)]
    data = b"".join(binary(p) for p in payloads)
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    reader.feed(data)
    found = drain(reader)
    assert [piece for piece, _ in found] == [Piece.BINARY] * 3
    assert [bytes(chunk) for _, chunk in found] == payloads
    for _, chunk in found:
        assert isinstance(chunk, memoryview) and chunk.obj is data  # no copy


def test_masked_frames_are_unmasked() -> None:
    payloads = [os.urandom(1000), os.urandom(70_000)]
    reader = BinaryFrameReader(masked=True, max_size=LIMIT)
    reader.feed(b"".join(binary(p, masked=True) for p in payloads))
    assert [bytes(chunk) for _, chunk in drain(reader)] == payloads


def test_a_frame_split_across_reads_is_put_together_alone_and_the_rest_stays_in_place() -> None:
    first, second = os.urandom(65536), os.urandom(65536)
    stream = binary(first) + binary(second)
    cut = 40_000
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    reader.feed(stream[:cut])
    assert drain(reader) == []
    tail = stream[cut:]
    reader.feed(tail)
    found = drain(reader)
    assert [bytes(chunk) for _, chunk in found] == [first, second]
    assert isinstance(found[1][1], memoryview) and found[1][1].obj is tail  # the frame after the split: not copied


def test_a_header_cut_after_one_byte_still_gives_the_frame() -> None:
    payload = os.urandom(70_000)  # a 64-bit length: a ten-byte header
    stream = binary(payload)
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    for piece in (stream[:1], stream[1:5], stream[5:11], stream[11:]):
        assert drain(reader) == []
        reader.feed(piece)
    assert [bytes(chunk) for _, chunk in drain(reader)] == [payload]


def test_control_frames_come_out_as_their_exact_bytes() -> None:
    ping = Frame(Opcode.PING, b"are you there").serialize(mask=False)
    close = Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=False)
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    reader.feed(binary(b"one") + ping + binary(b"two") + close)
    found = drain(reader)
    assert [(piece, bytes(chunk)) for piece, chunk in found] == [
        (Piece.BINARY, b"one"),
        (Piece.CONTROL, ping),
        (Piece.BINARY, b"two"),
        (Piece.CONTROL, close),
    ]


@pytest.mark.parametrize(
    "refused",
    [
        Frame(Opcode.TEXT, b"text").serialize(mask=False),
        Frame(Opcode.BINARY, b"part", fin=False).serialize(mask=False),
        Frame(Opcode.BINARY, b"masked").serialize(mask=True),  # a server does not mask
        bytes([0x82 | 0x40, 3]) + b"rsv",  # RSV1 set with no extension negotiated
        bytes([0x82, 127]) + (LIMIT + 1).to_bytes(8, "big"),  # over the limit: nothing of it need come
        bytes([0x89, 126, 0, 200]),  # a ping longer than 125 bytes
    ],
)
def test_at_the_first_frame_it_does_not_take_it_stops_and_hands_back_every_byte_from_there(refused: bytes) -> None:
    after = binary(b"after")
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    reader.feed(binary(b"before") + refused + after)
    found = drain(reader)
    assert [(piece, bytes(chunk)) for piece, chunk in found] == [
        (Piece.BINARY, b"before"),
        (Piece.REST, refused + after),
    ]
    assert not reader.active
    reader.feed(b"more")
    assert reader.next() is None


def test_stopping_while_a_frame_is_held_hands_back_its_bytes_too() -> None:
    stream = binary(os.urandom(5000))
    reader = BinaryFrameReader(masked=False, max_size=LIMIT)
    reader.feed(stream[:100])
    assert reader.next() is None
    reader.feed(stream[100:200])
    assert reader.stop() == stream[:200]

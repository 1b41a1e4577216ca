"""Frame layout and the incremental decoder (relay_protocol/frames.py)."""

from __future__ import annotations

import struct

import pytest

from relay_protocol.errors import ErrorCode, RemoteProtocolError
from relay_protocol.frames import (
    CONNECTION_FRAMES,
    STREAM_FRAMES,
    Flag,
    FrameDecoder,
    FrameType,
    decode_code_reason,
    decode_u32,
    encode_code_reason,
    encode_frame,
    encode_header,
    encode_u32,
)
from relay_protocol.limits import FRAME_HEADER_SIZE, MAX_FRAME_PAYLOAD


def test_header_is_type_flags_stream_id_length_in_network_order():
    frame = encode_frame(FrameType.DATA, Flag.END_STREAM, 0x01020304, b"abc")
    assert frame == bytes([5, 1, 1, 2, 3, 4, 0, 0, 0, 3]) + b"abc"
    assert len(encode_header(FrameType.PING, 0, 0, 8)) == FRAME_HEADER_SIZE == 10


def test_frame_type_codes_are_stable():
    assert {t.name: t.value for t in FrameType} == {
        "HELLO": 1,
        "WELCOME": 2,
        "OPEN": 3,
        "RESPONSE": 4,
        "DATA": 5,
        "RESET": 6,
        "CREDIT": 7,
        "PING": 8,
        "GOAWAY": 9,
    }
    assert (Flag.END_STREAM, Flag.ACK) == (1, 2)


def test_decoder_returns_every_frame_of_one_message_in_order():
    data = (
        encode_frame(FrameType.PING, 0, 0, b"12345678")
        + encode_frame(FrameType.DATA, 0, 1, b"hello")
        + encode_frame(FrameType.DATA, Flag.END_STREAM, 1, b"")
    )
    got = FrameDecoder().feed(data)
    assert [(f.type, f.flags, f.stream_id, bytes(f.payload)) for f in got] == [
        (FrameType.PING, Flag.NONE, 0, b"12345678"),
        (FrameType.DATA, Flag.NONE, 1, b"hello"),
        (FrameType.DATA, Flag.END_STREAM, 1, b""),
    ]


def test_decoder_reassembles_frames_fed_one_byte_at_a_time():
    data = encode_frame(FrameType.DATA, 0, 3, b"x" * 100) + encode_frame(FrameType.RESET, 0, 3, b"\x00\x07gone")
    decoder = FrameDecoder()
    got = []
    for i in range(len(data)):
        got += decoder.feed(data[i : i + 1])
        if i == 50:
            assert got == [] and decoder.pending == 51
    assert [(f.type, bytes(f.payload)) for f in got] == [
        (FrameType.DATA, b"x" * 100),
        (FrameType.RESET, b"\x00\x07gone"),
    ]
    assert decoder.pending == 0


def test_decoder_holds_a_partial_frame_until_the_rest_arrives():
    data = encode_frame(FrameType.DATA, 0, 1, b"abcdef")
    decoder = FrameDecoder()
    assert decoder.feed(data[:12]) == []
    assert decoder.pending == 12
    (frame,) = decoder.feed(data[12:] + data[:4])
    assert bytes(frame.payload) == b"abcdef"
    assert decoder.pending == 4


def test_decoded_payload_survives_later_feeds():
    decoder = FrameDecoder()
    (first,) = decoder.feed(encode_frame(FrameType.DATA, 0, 1, b"first"))
    decoder.feed(encode_frame(FrameType.DATA, 0, 1, b"second"))
    assert bytes(first.payload) == b"first"


def test_oversize_payload_is_refused_from_the_header_alone():
    header = struct.pack(">BBII", FrameType.DATA, 0, 1, MAX_FRAME_PAYLOAD + 1)
    with pytest.raises(RemoteProtocolError) as info:
        FrameDecoder().feed(header)
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


def test_payload_of_exactly_the_limit_is_accepted():
    payload = b"\0" * MAX_FRAME_PAYLOAD
    (frame,) = FrameDecoder().feed(encode_frame(FrameType.DATA, 0, 1, payload))
    assert len(frame.payload) == MAX_FRAME_PAYLOAD


def test_decoder_limit_is_configurable():
    with pytest.raises(RemoteProtocolError) as info:
        FrameDecoder(max_payload=4).feed(encode_frame(FrameType.DATA, 0, 1, b"12345"))
    assert info.value.code is ErrorCode.FRAME_TOO_LARGE


@pytest.mark.parametrize("ftype", [0, 10, 255])
def test_unknown_frame_type_is_a_protocol_error(ftype):
    with pytest.raises(RemoteProtocolError, match="unknown frame type") as info:
        FrameDecoder().feed(struct.pack(">BBII", ftype, 0, 0, 0))
    assert info.value.code is ErrorCode.PROTOCOL_ERROR


def test_stream_id_with_the_reserved_high_bit_is_refused():
    with pytest.raises(RemoteProtocolError, match="reserved high bit"):
        FrameDecoder().feed(encode_frame(FrameType.DATA, 0, 0x80000001, b""))


@pytest.mark.parametrize("ftype", sorted(STREAM_FRAMES))
def test_stream_frames_on_stream_zero_are_refused(ftype):
    with pytest.raises(RemoteProtocolError, match="must be sent on a stream"):
        FrameDecoder().feed(encode_frame(ftype, 0, 0, b""))


@pytest.mark.parametrize("ftype", sorted(CONNECTION_FRAMES))
def test_connection_frames_on_a_stream_are_refused(ftype):
    with pytest.raises(RemoteProtocolError, match="must be sent on stream 0"):
        FrameDecoder().feed(encode_frame(ftype, 0, 1, b""))


def test_credit_may_name_the_connection_or_a_stream():
    got = FrameDecoder().feed(
        encode_frame(FrameType.CREDIT, 0, 0, encode_u32(5)) + encode_frame(FrameType.CREDIT, 0, 7, encode_u32(6))
    )
    assert [(f.stream_id, decode_u32(f.payload)) for f in got] == [(0, 5), (7, 6)]


def test_unknown_flag_bits_are_dropped():
    (frame,) = FrameDecoder().feed(encode_frame(FrameType.DATA, 0xFD, 1, b""))
    assert frame.flags == Flag.END_STREAM


def test_frame_after_a_bad_one_in_the_same_message_is_not_returned():
    data = encode_frame(FrameType.DATA, 0, 1, b"ok") + struct.pack(">BBII", 99, 0, 0, 0)
    with pytest.raises(RemoteProtocolError):
        FrameDecoder().feed(data)


def test_code_and_reason_round_trip():
    code, reason = decode_code_reason(encode_code_reason(ErrorCode.NAME_TAKEN, "déjà pris"))
    assert code is ErrorCode.NAME_TAKEN
    assert reason == "déjà pris"


def test_unknown_error_codes_are_kept_as_integers():
    code, reason = decode_code_reason(struct.pack(">H", 4242) + b"future")
    assert code == 4242 and not isinstance(code, ErrorCode)
    assert reason == "future"


def test_reason_is_cut_to_1024_bytes_and_bad_utf8_is_replaced():
    payload = encode_code_reason(ErrorCode.CANCEL, "x" * 5000)
    assert len(payload) == 2 + 1024
    _, reason = decode_code_reason(b"\x00\x07\xff\xfe")
    assert reason == "\ufffd\ufffd"


@pytest.mark.parametrize("payload", [b"", b"\x00"])
def test_code_shorter_than_two_bytes_is_a_protocol_error(payload):
    with pytest.raises(RemoteProtocolError):
        decode_code_reason(payload)


@pytest.mark.parametrize("payload", [b"", b"\0\0\0", b"\0\0\0\0\0"])
def test_credit_value_must_be_exactly_four_bytes(payload):
    with pytest.raises(RemoteProtocolError):
        decode_u32(payload)


def test_u32_round_trips_the_largest_value():
    assert decode_u32(encode_u32(2**32 - 1)) == 2**32 - 1

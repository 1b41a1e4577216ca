"""Websocket messages inside a stream body (relay_protocol/wsmessages.py)."""

from __future__ import annotations

import pytest

from relay_protocol.errors import RemoteProtocolError
from relay_protocol.wsmessages import Kind, MessageDecoder, decode_close, encode_close, encode_message


def test_message_layout_is_kind_then_u32_length_then_payload():
    assert encode_message(Kind.TEXT, b"hi") == b"\x01\x00\x00\x00\x02hi"
    assert [k.value for k in Kind] == [0x1, 0x2, 0x8, 0x9, 0xA]


def test_messages_split_across_chunks_come_out_whole_and_in_order():
    data = encode_message(Kind.TEXT, "h\u00e9".encode()) + encode_message(Kind.BINARY, b"\0" * 300) + encode_message(Kind.PING, b"")
    decoder = MessageDecoder()
    out = []
    for i in range(0, len(data), 7):
        out += decoder.feed(memoryview(data)[i : i + 7])
    assert out == [(Kind.TEXT, "h\u00e9".encode()), (Kind.BINARY, b"\0" * 300), (Kind.PING, b"")]


def test_close_carries_code_and_reason():
    (message,) = MessageDecoder().feed(encode_close(4001, "bye \u2603"))
    assert message[0] is Kind.CLOSE
    assert decode_close(message[1]) == (4001, "bye \u2603")
    assert decode_close(b"") == (1005, "")


def test_close_reason_fits_a_websocket_control_frame():
    (message,) = MessageDecoder().feed(encode_close(1000, "x" * 500))
    assert len(message[1]) == 125


def test_oversize_and_unknown_messages_are_protocol_errors():
    with pytest.raises(RemoteProtocolError, match="exceeds"):
        MessageDecoder(max_message=10).feed(encode_message(Kind.BINARY, b"x" * 11))
    with pytest.raises(RemoteProtocolError, match="unknown websocket message kind"):
        MessageDecoder().feed(b"\x03\x00\x00\x00\x00")

"""Websocket messages carried inside one stream's body (sans-I/O).

When a public client's websocket is bridged to the local server's, each side
terminates its own websocket hop and the messages travel through the tunnel
stream as ``kind:u8 length:u32 payload``.  Kinds are RFC 6455 opcodes, so
text stays text, binary stays binary, and ping, pong and close (with its
code and reason) reach the other end as they were sent.
"""

from __future__ import annotations

import enum
import struct

from relay_protocol.errors import RemoteProtocolError

_HEAD = struct.Struct(">BI")

#: Largest websocket message bridged (both hops refuse larger ones).
MAX_WS_MESSAGE = 16 * 1024 * 1024


class Kind(enum.IntEnum):
    """RFC 6455 opcodes of bridged messages."""

    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


def encode_message(kind: Kind, payload: bytes) -> bytes:
    """One message as stream bytes."""
    return _HEAD.pack(kind, len(payload)) + payload


def encode_close(code: int, reason: str) -> bytes:
    """A CLOSE message: u16 code then the UTF-8 reason (RFC 6455 layout)."""
    return encode_message(Kind.CLOSE, struct.pack(">H", code) + reason.encode("utf-8")[:123])


def decode_close(payload: bytes) -> tuple[int, str]:
    """Code and reason of a CLOSE payload (1005 'no status' when empty)."""
    if len(payload) < 2:
        return 1005, ""
    return struct.unpack_from(">H", payload)[0], payload[2:].decode("utf-8", "replace")


class MessageDecoder:
    """Stream bytes in, whole messages out; a message may span many DATA frames."""

    def __init__(self, max_message: int = MAX_WS_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def feed(self, data: bytes | memoryview) -> list[tuple[Kind, bytes]]:
        """Add bytes; return each message they complete."""
        self._buffer += data
        out: list[tuple[Kind, bytes]] = []
        buf = self._buffer
        offset = 0
        while len(buf) - offset >= _HEAD.size:
            kind, length = _HEAD.unpack_from(buf, offset)
            if length > self._max:
                raise RemoteProtocolError(f"websocket message of {length} bytes exceeds {self._max}")
            try:
                kind = Kind(kind)
            except ValueError:
                raise RemoteProtocolError(f"unknown websocket message kind {kind}") from None
            start = offset + _HEAD.size
            if len(buf) - start < length:
                break
            out.append((kind, bytes(buf[start : start + length])))
            offset = start + length
        if offset:
            del buf[:offset]
        return out

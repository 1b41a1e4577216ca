"""Frame layout and the incremental frame decoder.

Every frame is a 10-byte header followed by its payload::

    type:u8  flags:u8  stream_id:u32  length:u32  payload[length]

A websocket message carries one or more whole frames (the sender coalesces
small frames into one message); the decoder also accepts frames split across
messages, so the same code serves any byte stream.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple, NoReturn

from relay_protocol.errors import ErrorCode, RemoteProtocolError
from relay_protocol.limits import FRAME_HEADER_SIZE, MAX_CONTROL_PAYLOAD, MAX_FRAME_PAYLOAD

_HEADER = struct.Struct(">BBII")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class FrameType(enum.IntEnum):
    """What a frame means; see docs/protocol.md for the table."""

    HELLO = 1
    WELCOME = 2
    OPEN = 3
    RESPONSE = 4
    DATA = 5
    RESET = 6
    CREDIT = 7
    PING = 8
    GOAWAY = 9


class Flag(enum.IntFlag):
    """Frame flags; unknown bits are ignored so later versions can add some."""

    NONE = 0
    END_STREAM = 0x1
    ACK = 0x2


#: Frames that belong to one stream (stream id > 0).
STREAM_FRAMES = frozenset({FrameType.OPEN, FrameType.RESPONSE, FrameType.DATA, FrameType.RESET})

#: Frames whose payload is bounded by MAX_CONTROL_PAYLOAD (heads and DATA have their own limits).
_SMALL_FRAMES = frozenset(
    {FrameType.HELLO, FrameType.WELCOME, FrameType.RESET, FrameType.CREDIT, FrameType.PING, FrameType.GOAWAY}
)

#: Frames about the whole connection (stream id 0).  CREDIT may be either.
CONNECTION_FRAMES = frozenset({FrameType.HELLO, FrameType.WELCOME, FrameType.PING, FrameType.GOAWAY})

#: Wire value -> (type, must be on a stream, must be on stream 0, payload bounded by
#: MAX_CONTROL_PAYLOAD): one int lookup per frame instead of hashing enum members
#: (a Python-level ``Enum.__hash__``) three times.
_RULES = {
    t.value: (t, t in STREAM_FRAMES, t in CONNECTION_FRAMES, t in _SMALL_FRAMES) for t in FrameType
}


class Frame(NamedTuple):
    """One decoded frame (a DATA payload is a read-only view of the message).

    A named tuple, not a frozen dataclass: one is built per frame on the hot path,
    and a tuple is built in C (about 3x faster), immutable all the same.
    """

    type: FrameType
    #: Known flag bits only (``Flag`` values); unknown bits are dropped.
    flags: int
    stream_id: int
    payload: bytes | memoryview


def encode_header(frame_type: FrameType, flags: int, stream_id: int, length: int) -> bytes:
    """The 10 header bytes; the payload is sent after them without a copy."""
    return _HEADER.pack(frame_type, flags, stream_id, length)


def encode_frame(frame_type: FrameType, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """A whole frame as bytes (used for small control frames)."""
    return _HEADER.pack(frame_type, flags, stream_id, len(payload)) + payload


def encode_code_reason(code: int, reason: str) -> bytes:
    """Payload of RESET and GOAWAY: u16 code, then a UTF-8 reason."""
    return _U16.pack(code) + reason.encode("utf-8", "replace")[:1024]


def decode_code_reason(payload: bytes) -> tuple[ErrorCode | int, str]:
    """Inverse of ``encode_code_reason``."""
    if len(payload) < 2:
        raise RemoteProtocolError("RESET/GOAWAY payload shorter than its 2-byte code")
    (code,) = _U16.unpack_from(payload)
    return ErrorCode.parse(code), payload[2:].decode("utf-8", "replace")


def encode_u32(value: int) -> bytes:
    """Payload of CREDIT."""
    return _U32.pack(value)


def decode_u32(payload: bytes) -> int:
    """Inverse of ``encode_u32``; a wrong length is the peer's fault."""
    if len(payload) != 4:
        raise RemoteProtocolError(f"expected a 4-byte value, got {len(payload)} bytes")
    return _U32.unpack(payload)[0]


_DATA = FrameType.DATA  # read per frame: a global, not an Enum class attribute lookup


class FrameDecoder:
    """Bytes in, whole frames out; keeps a partial frame until the rest arrives."""

    def __init__(self, max_payload: int = MAX_FRAME_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        """Add bytes and return every frame they complete, in order.

        DATA payloads are zero-copy views into the message (they keep it alive
        until consumed); every other payload is a small ``bytes`` copy.  The
        message may itself be a view into what the socket received.
        """
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
        view = memoryview(data)
        frames: list[Frame] = []
        offset = 0
        end = len(view)
        unpack, rules, max_payload, data_type = _HEADER.unpack_from, _RULES, self._max_payload, _DATA
        try:
            while end - offset >= FRAME_HEADER_SIZE:
                ftype, flags, stream_id, length = unpack(view, offset)
                rule = rules.get(ftype)
                if rule is None or length > max_payload or stream_id > 0x7FFFFFFF:
                    self._refuse_header(ftype, stream_id, length)
                frame_type, on_stream, on_connection, small = rule
                if (on_stream and stream_id == 0) or (on_connection and stream_id != 0) or (
                    small and length > MAX_CONTROL_PAYLOAD
                ):
                    self._refuse_placement(frame_type, stream_id, length)
                start = offset + FRAME_HEADER_SIZE
                stop = start + length
                if stop > end:
                    break
                payload = view[start:stop] if frame_type is data_type else bytes(view[start:stop])
                frames.append(Frame(frame_type, flags & 0x3, stream_id, payload))
                offset = stop
        finally:
            self._buffer = bytearray(data[offset:]) if offset < end else bytearray()
        return frames

    def _refuse_header(self, ftype: int, stream_id: int, length: int) -> NoReturn:
        """The header's own fields are wrong (checked in the order the peer is told about)."""
        if length > self._max_payload:
            raise RemoteProtocolError(
                f"frame payload of {length} bytes exceeds the limit of {self._max_payload}",
                ErrorCode.FRAME_TOO_LARGE,
            )
        if ftype not in _RULES:
            raise RemoteProtocolError(f"unknown frame type {ftype}")
        raise RemoteProtocolError(f"stream id {stream_id} uses the reserved high bit")

    @staticmethod
    def _refuse_placement(frame_type: FrameType, stream_id: int, length: int) -> NoReturn:
        """A known frame on the wrong kind of stream, or a control payload too long."""
        if stream_id == 0 and frame_type in STREAM_FRAMES:
            raise RemoteProtocolError(f"{frame_type.name} frame must be sent on a stream")
        if stream_id != 0 and frame_type in CONNECTION_FRAMES:
            raise RemoteProtocolError(f"{frame_type.name} frame must be sent on stream 0")
        raise RemoteProtocolError(
            f"{frame_type.name} payload of {length} bytes exceeds {MAX_CONTROL_PAYLOAD}",
            ErrorCode.FRAME_TOO_LARGE,
        )

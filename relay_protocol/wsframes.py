"""Whole binary websocket frames cut out of received bytes without copying them (sans-I/O).

Every message of the tunnel is one final binary frame (``frame_head``), and
bulk bodies are most of the bytes.  websockets' reader copies each of them
twice on the way in (into its buffer, then out of it): a fifth of the agent's
CPU during an upload.  ``BinaryFrameReader`` takes final binary frames itself,
as views into the bytes the socket gave (unmasked as the side requires), and
passes whole control frames on as their exact bytes for websockets to handle
(pings, pongs, the close handshake).  At the first frame of any other kind, or
one websockets must refuse (reserved bits, wrong masking, over the size limit,
fragments, text), it stops for good and hands every byte from that frame on
back: from then on websockets reads the connection as it always did, from a
frame boundary, and gives its own answer.
"""

from __future__ import annotations

from enum import Enum

from websockets.frames import apply_mask  # the C speedup, when websockets has it built

#: First byte of a final binary frame with no reserved bit set.
_FINAL_BINARY = 0x82
#: Close, ping, pong.
_CONTROL_OPCODES = frozenset({0x8, 0x9, 0xA})
#: RFC 6455 section 5.5: a control frame's payload is at most 125 bytes.
_MAX_CONTROL_PAYLOAD = 125


class Piece(Enum):
    """What ``BinaryFrameReader.next`` found."""

    BINARY = 0  # the payload of one final binary frame (a message)
    CONTROL = 1  # one whole control frame, header included, for websockets to read
    REST = 2  # every byte from a frame this reader does not take: websockets reads from here on


class BinaryFrameReader:
    """Cuts final binary frames out of a byte stream until something else arrives.

    ``masked`` is what the peer must do (clients mask, servers do not);
    ``max_size`` is the largest message taken here (larger ones go to
    websockets, which refuses them).  A frame split across reads is copied
    once, alone, when its last byte comes; bytes held for it are bounded by
    ``max_size`` plus a frame header.
    """

    __slots__ = ("active", "_masked", "_max_size", "_data", "_view", "_offset", "_parts", "_held", "_need", "_whole", "_first")

    def __init__(self, *, masked: bool, max_size: int | None) -> None:
        #: False once the reader has stopped: everything goes to websockets then.
        self.active = True
        self._masked = masked
        self._max_size = max_size
        self._data: bytes = b""
        self._view: memoryview | None = None
        self._offset = 0
        #: Pieces of an incomplete frame, kept until ``_need`` bytes of it are here.
        self._parts: list[bytes | memoryview] = []
        self._held = 0
        self._need = 0
        #: ``_need`` is the whole frame's length (else only its header's).
        self._whole = False
        #: A frame put together from pieces, read before the rest of ``_data``.
        self._first: bytes | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes from the socket (after ``next`` has returned None)."""
        if not self._parts:
            left = len(self._data) - self._offset
            if not left:
                self._data, self._view, self._offset = data, None, 0
                return
            self._parts.append(self._view_of_data()[self._offset :])  # the start of an incomplete frame
            self._held = left
            self._data, self._view, self._offset = b"", None, 0
        if self._held + len(data) < self._need:
            self._parts.append(data)
            self._held += len(data)
            return
        if self._whole:  # exactly the frame is copied; the rest of ``data`` is read in place
            missing = self._need - self._held
            self._parts.append(memoryview(data)[:missing])
            self._first = b"".join(self._parts)
            self._data, self._view, self._offset = data, None, missing
        else:  # only its header was short (rare): take everything together
            self._parts.append(data)
            self._data, self._view, self._offset = b"".join(self._parts), None, 0
        self._parts.clear()
        self._held = 0

    def next(self) -> tuple[Piece, bytes | memoryview] | None:
        """The next whole piece, or None until more bytes come (or once stopped)."""
        if not self.active or self._parts:
            return None
        first = self._first
        if first is not None:
            self._first = None
            found = self._cut(first, 0, None)
            assert found is not None  # whole by construction
            return found
        return self._cut(self._data, self._offset, self._view)

    def _cut(self, data: bytes, offset: int, view: memoryview | None) -> tuple[Piece, bytes | memoryview] | None:
        end = len(data)
        if end - offset < 2:
            self._need, self._whole = 2, False
            return None
        first, second = data[offset], data[offset + 1]
        length = second & 0x7F
        start = offset + 2
        if length >= 126:
            size = 2 if length == 126 else 8
            if end - start < size:
                self._need, self._whole = 2 + size, False
                return None
            length = int.from_bytes(data[start : start + size], "big")
            start += size
        masked = bool(second & 0x80)
        if masked:
            start += 4
        if first == _FINAL_BINARY and masked == self._masked and (self._max_size is None or length <= self._max_size):
            piece = Piece.BINARY
        elif first & 0xF0 == 0x80 and first & 0x0F in _CONTROL_OPCODES and length <= _MAX_CONTROL_PAYLOAD:
            piece = Piece.CONTROL
        else:
            self._offset = offset
            return Piece.REST, self.stop()
        stop = start + length
        if stop > end:
            self._need, self._whole = stop - offset, True
            return None
        if data is self._data:
            self._offset = stop
        if piece is Piece.CONTROL:
            return piece, data[offset:stop]
        if view is None:
            view = memoryview(data)
            if data is self._data:
                self._view = view
        payload = view[start:stop]
        if masked:
            return piece, apply_mask(payload, data[start - 4 : start])
        return piece, payload

    def _view_of_data(self) -> memoryview:
        view = self._view
        if view is None:
            view = self._view = memoryview(self._data)
        return view

    def stop(self) -> bytes:
        """Stop for good; every byte not yet returned, for websockets to read."""
        self.active = False
        pieces: list[bytes | memoryview] = [self._first] if self._first is not None else []
        pieces += self._parts
        pieces.append(self._view_of_data()[self._offset :])
        rest = b"".join(pieces)
        self._parts.clear()
        self._first = None
        self._data, self._view, self._offset, self._held = b"", None, 0, 0
        return rest

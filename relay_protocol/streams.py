"""The stream state machine, as one transition table.

Each stream has two halves: what we send and what we receive.  Each half
goes IDLE -> BODY -> ENDED: the head (OPEN or RESPONSE) moves it to BODY, or
straight to ENDED when it carries END_STREAM; DATA keeps it in BODY, DATA with
END_STREAM ends it.  A RESET, sent or received, ends the stream at once.  The
stream is closed, and forgotten, when both halves have ENDED.  docs/protocol.md
draws the combined states (open, half-closed, closed).
"""

from __future__ import annotations

import enum

from relay_protocol.errors import ErrorCode


class Half(enum.Enum):
    """State of one direction of a stream."""

    IDLE = "idle"
    BODY = "body"
    ENDED = "ended"

    #: Members are singletons: hash by identity (C) instead of ``Enum.__hash__`` (Python,
    #: by name), which every table lookup below would otherwise call twice.
    __hash__ = object.__hash__


class Action(enum.Enum):
    """What a frame does to the half it travels on."""

    HEAD = "head"
    HEAD_END = "head+end"
    DATA = "data"
    DATA_END = "data+end"

    __hash__ = object.__hash__  # see Half


#: (current state, action) -> next state.  Anything missing is a protocol violation.
TRANSITIONS: dict[tuple[Half, Action], Half] = {
    (Half.IDLE, Action.HEAD): Half.BODY,
    (Half.IDLE, Action.HEAD_END): Half.ENDED,
    (Half.BODY, Action.DATA): Half.BODY,
    (Half.BODY, Action.DATA_END): Half.ENDED,
}


_IDLE, _ENDED = Half.IDLE, Half.ENDED


class StreamStateError(Exception):
    """An action the table does not allow; the caller decides whose fault it is."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class StreamState:
    """Both halves of one stream."""

    __slots__ = ("stream_id", "send", "recv")

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.send = _IDLE
        self.recv = _IDLE

    # The table lookup is inlined in both (a few of these run per request); _refuse says why not.
    def on_send(self, action: Action) -> None:
        """Advance the sending half or raise StreamStateError."""
        try:
            self.send = TRANSITIONS[(self.send, action)]
        except KeyError:
            raise self._refuse(self.send, action, "send") from None

    def on_receive(self, action: Action) -> None:
        """Advance the receiving half or raise StreamStateError."""
        try:
            self.recv = TRANSITIONS[(self.recv, action)]
        except KeyError:
            raise self._refuse(self.recv, action, "receive") from None

    @property
    def closed(self) -> bool:
        """Both directions done: the stream can be forgotten."""
        return self.send is _ENDED and self.recv is _ENDED

    def _refuse(self, state: Half, action: Action, direction: str) -> StreamStateError:
        code = ErrorCode.STREAM_CLOSED if state is Half.ENDED else ErrorCode.PROTOCOL_ERROR
        return StreamStateError(f"stream {self.stream_id}: cannot {direction} {action.value} in state {state.value}", code)

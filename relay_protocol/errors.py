"""Protocol errors, split by who broke the rules, each carrying a wire code."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Codes carried by RESET and GOAWAY frames (u16 on the wire)."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    STREAM_CLOSED = 4
    FRAME_TOO_LARGE = 5
    REFUSED_STREAM = 6
    CANCEL = 7
    UNSUPPORTED_VERSION = 8
    NAME_TAKEN = 9
    NAME_INVALID = 10
    UNAUTHORIZED = 11
    LOCAL_UNREACHABLE = 12
    TIMEOUT = 13
    GOING_AWAY = 14
    TOO_MANY_STREAMS = 15
    LOCAL_ERROR = 16
    TOO_MANY_TUNNELS = 17

    @classmethod
    def parse(cls, value: int) -> ErrorCode | int:
        """Map a wire value to a known code, keeping unknown ones as plain ints."""
        try:
            return cls(value)
        except ValueError:
            return value


class ProtocolError(Exception):
    """Base of every protocol error; ``code`` is what goes on the wire."""

    code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """Our caller asked the session for something the protocol forbids (our bug)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (its fault); the connection ends."""

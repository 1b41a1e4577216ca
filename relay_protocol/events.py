"""What ``Session.receive_data`` returns: one event per meaningful frame."""

from __future__ import annotations

from dataclasses import dataclass

from relay_protocol.errors import ErrorCode
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.heads import RequestHead, ResponseHead


class Event:
    """Base class of every session event."""

    __slots__ = ()


@dataclass(slots=True)
class HelloReceived(Event):
    """Relay side: the agent introduced itself; answer with accept() or refuse()."""

    hello: Hello


@dataclass(slots=True)
class WelcomeReceived(Event):
    """Agent side: the relay accepted us; the tunnel is live."""

    welcome: Welcome


@dataclass(slots=True)
class StreamOpened(Event):
    """Agent side: a public request arrived on a new stream."""

    stream_id: int
    head: RequestHead
    end_stream: bool


@dataclass(slots=True)
class ResponseReceived(Event):
    """Relay side: the agent answered a stream with a response head."""

    stream_id: int
    head: ResponseHead
    end_stream: bool


@dataclass(slots=True)
class DataReceived(Event):
    """Body bytes for a stream; hand them on, then acknowledge them for credit."""

    stream_id: int
    #: A read-only view into the received message; copy it to keep it long.
    data: bytes | memoryview
    end_stream: bool


@dataclass(slots=True)
class StreamReset(Event):
    """The peer abandoned a stream; nothing more will arrive on it."""

    stream_id: int
    code: ErrorCode | int
    reason: str


@dataclass(slots=True)
class WindowUpdated(Event):
    """The peer gave credit: senders waiting on this stream (0: all) may resume."""

    stream_id: int


@dataclass(slots=True)
class PingAcknowledged(Event):
    """An answer to one of our pings."""

    payload: bytes


@dataclass(slots=True)
class GoAwayReceived(Event):
    """The peer is closing the connection (or refusing the handshake) and says why."""

    code: ErrorCode | int
    reason: str


@dataclass(slots=True)
class PeerDraining(Event):
    """The peer sent GOAWAY(NO_ERROR): no new streams; the open ones run to their end.

    The connection stays open.  The relay stops opening streams; an agent told
    this by its relay connects again elsewhere while its open streams finish.
    """

    reason: str


@dataclass(slots=True)
class ConnectionClosed(Event):
    """The session ended because of a protocol error; ``code`` says whose."""

    code: ErrorCode | int
    reason: str

"""The localrelay wire protocol: one websocket per agent, many HTTP streams on it.

Architecture, in the order bytes travel:

- ``frames``    fixed 10-byte frame header + payload; ``FrameDecoder`` turns bytes
                into frames and refuses anything malformed with ``RemoteProtocolError``.
- ``heads``     request/response heads (method, target, status, header list) as
                compact JSON payloads of OPEN and RESPONSE frames.
- ``handshake`` the versioned HELLO/WELCOME exchange that starts every connection.
- ``streams``   the per-stream state machine, one transition table.
- ``windows``   per-stream and per-connection credit (like HTTP/2 windows).
- ``session``   ``Session``: bytes in -> events out, frames queued -> bytes out.
                It never awaits and never touches a socket, so it is tested alone.
- ``driver``    the one asyncio module: runs a ``Session`` over any message
                transport and gives each stream ``read``/``write`` coroutines.

The relay and the agent both use ``Session``; only their roles differ (the relay
opens streams, the agent answers them).
"""

from relay_protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from relay_protocol.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    GoAwayReceived,
    PeerDraining,
    HelloReceived,
    PingAcknowledged,
    ResponseReceived,
    StreamOpened,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from relay_protocol.handshake import PROTOCOL_VERSION, Hello, Welcome
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.session import Role, Session

__all__ = [
    "PROTOCOL_VERSION",
    "ConnectionClosed",
    "DataReceived",
    "ErrorCode",
    "Event",
    "GoAwayReceived",
    "Hello",
    "HelloReceived",
    "LocalProtocolError",
    "PeerDraining",
    "PingAcknowledged",
    "ProtocolError",
    "RemoteProtocolError",
    "RequestHead",
    "ResponseHead",
    "ResponseReceived",
    "Role",
    "Session",
    "StreamOpened",
    "StreamReset",
    "Welcome",
    "WelcomeReceived",
    "WindowUpdated",
]

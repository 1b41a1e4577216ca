"""``Session``: the protocol state of one agent connection, with no I/O.

Bytes in (``receive_data``) give events out; calls such as ``open_stream`` or
``send_data`` queue frames, collected as bytes by ``data_to_send``.  The
session never awaits: the asyncio driver (``relay_protocol.driver``) or a test
moves the bytes.  Heads, CREDIT and PING are sent before queued body data, so
credit and new requests never wait behind a bulk transfer; RESET and GOAWAY
queue behind the data sent before them, so they never overtake an END_STREAM.
"""

from __future__ import annotations

import enum
from collections import deque

from relay_protocol import frames as f
from relay_protocol.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from relay_protocol.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    GoAwayReceived,
    HelloReceived,
    PeerDraining,
    PingAcknowledged,
    ResponseReceived,
    StreamOpened,
    StreamReset,
    WelcomeReceived,
    WindowUpdated,
)
from relay_protocol.frames import Flag, Frame, FrameDecoder, FrameType
from relay_protocol.handshake import SUPPORTED_VERSIONS, Hello, Welcome, choose_version
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.limits import (
    DATA_CHUNK_SIZE,
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_MAX_STREAMS,
    DEFAULT_STREAM_WINDOW,
    MAX_HEAD_SIZE,
    MAX_HEADER_COUNT,
    MAX_STREAM_ID,
)
from relay_protocol.streams import Action, Half, StreamState, StreamStateError
from relay_protocol.windows import ReceiveWindow, SendWindow


class Role(enum.Enum):
    """Which end of the connection this session is."""

    RELAY = "relay"
    AGENT = "agent"


class Phase(enum.Enum):
    """Connection lifecycle."""

    HANDSHAKE = "handshake"
    OPEN = "open"
    CLOSED = "closed"


# Hot-path constants read from module globals: attribute access on an Enum class costs
# several times a global lookup, and ``int & Flag.X`` runs IntFlag's Python-level __rand__.
_END_STREAM = int(Flag.END_STREAM)
_ACK = int(Flag.ACK)
_OPEN = Phase.OPEN
_CLOSED = Phase.CLOSED
_RELAY = Role.RELAY
_HALF_ENDED = Half.ENDED


class _Stream:
    """Per-stream bookkeeping: state table plus both windows."""

    __slots__ = ("state", "send_window", "recv_window")

    def __init__(self, stream_id: int, send_window: int, recv_window: int) -> None:
        self.state = StreamState(stream_id)
        self.send_window = SendWindow(send_window)
        self.recv_window = ReceiveWindow(recv_window)


class Session:
    """One end of one agent connection."""

    def __init__(
        self,
        role: Role,
        *,
        stream_window: int = DEFAULT_STREAM_WINDOW,
        connection_window: int = DEFAULT_CONNECTION_WINDOW,
        max_streams: int | None = None,
    ) -> None:
        self.role = role
        self.phase = Phase.HANDSHAKE
        self.version: int | None = None
        #: Open streams allowed; an agent given no limit adopts the relay's from WELCOME.
        self.max_streams = max_streams if max_streams is not None else DEFAULT_MAX_STREAMS
        self._adopt_peer_max_streams = max_streams is None
        self._decoder = FrameDecoder()
        self._streams: dict[int, _Stream] = {}
        self._local_stream_window = stream_window
        self._peer_stream_window = DEFAULT_STREAM_WINDOW
        self._recv_conn = ReceiveWindow(connection_window)
        self._send_conn = SendWindow(DEFAULT_CONNECTION_WINDOW)
        self._next_stream_id = 1
        self._highest_peer_stream = 0
        #: Streams closed normally whose last bytes the application has not used yet.
        self._draining: dict[int, int] = {}
        self._urgent: deque[bytes] = deque()
        self._data: deque[tuple[bytes, bytes | memoryview]] = deque()
        self._pending = 0
        self._hello_sent = False
        #: We sent GOAWAY(NO_ERROR): no new streams (an agent refuses OPENs), open ones finish.
        self.draining = False
        #: The peer sent GOAWAY(NO_ERROR): the relay opens no more streams on this connection.
        self.peer_draining = False
        self._handlers = {
            FrameType.DATA: self._on_data,
            FrameType.CREDIT: self._on_credit,
            FrameType.OPEN: self._on_open,
            FrameType.RESPONSE: self._on_response,
            FrameType.RESET: self._on_reset,
            FrameType.PING: self._on_ping,
            FrameType.GOAWAY: self._on_goaway,
            FrameType.HELLO: self._on_hello,
            FrameType.WELCOME: self._on_welcome,
        }

    # ------------------------------------------------------------------ handshake
    def send_hello(self, hello: Hello) -> None:
        """Agent: start the handshake; our receive windows go to the relay in it."""
        self._require_role(Role.AGENT, "send HELLO")
        if self._hello_sent:
            raise LocalProtocolError("HELLO already sent")
        hello.stream_window = self._local_stream_window
        hello.connection_window = self._recv_conn.size
        self._hello_sent = True
        self._queue(FrameType.HELLO, 0, 0, hello.encode())

    def accept(self, welcome: Welcome) -> None:
        """Relay: answer a HELLO; streams may open from now on."""
        self._require_role(Role.RELAY, "send WELCOME")
        if self.phase is not Phase.HANDSHAKE or self.version is None:
            raise LocalProtocolError("WELCOME only answers a received HELLO")
        welcome.version = self.version
        welcome.stream_window = self._local_stream_window
        welcome.connection_window = self._recv_conn.size
        welcome.max_streams = self.max_streams
        self._queue(FrameType.WELCOME, 0, 0, welcome.encode())
        self.phase = Phase.OPEN

    def refuse(self, code: ErrorCode, reason: str) -> None:
        """Relay: turn the agent away (bad name, wrong version); ends the session."""
        self.goaway(code, reason)

    def goaway(self, code: ErrorCode, reason: str = "") -> None:
        """Tell the peer we are closing and why; no new frames after this."""
        if self.phase is Phase.CLOSED:
            return
        self._queue_in_order(FrameType.GOAWAY, 0, f.encode_code_reason(code, reason))
        self.phase = Phase.CLOSED

    def drain(self, reason: str = "") -> None:
        """Say GOAWAY(NO_ERROR): no new streams from now on; the open ones finish normally.

        The connection stays open until a closing ``goaway`` from either side.
        Only once the handshake is done (before, there is nothing to drain).
        """
        if self.phase is not Phase.OPEN or self.draining:
            return
        self.draining = True
        self._queue(FrameType.GOAWAY, 0, 0, f.encode_code_reason(ErrorCode.NO_ERROR, reason))

    @property
    def accepting_streams(self) -> bool:
        """Open, and neither side has said it is draining: new streams may start."""
        return self.phase is Phase.OPEN and not self.draining and not self.peer_draining

    # ------------------------------------------------------------------ sending
    def open_stream(self, head: RequestHead, end_stream: bool = False) -> int:
        """Relay: start a stream carrying a public request; returns its id."""
        self._require_role(Role.RELAY, "open streams")
        self._require_open()
        if self.draining or self.peer_draining:
            raise LocalProtocolError("the connection is draining: no new streams", ErrorCode.GOING_AWAY)
        if len(self._streams) >= self.max_streams:
            raise LocalProtocolError(f"{self.max_streams} streams already open", ErrorCode.TOO_MANY_STREAMS)
        payload = _encoded_head(head)
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids exhausted; open a new connection", ErrorCode.GOING_AWAY)
        self._next_stream_id += 2
        stream = _Stream(stream_id, self._peer_stream_window, self._local_stream_window)
        stream.state.on_send(Action.HEAD_END if end_stream else Action.HEAD)
        self._streams[stream_id] = stream
        self._queue(FrameType.OPEN, _END_STREAM if end_stream else 0, stream_id, payload)
        self._forget_if_closed(stream)
        return stream_id

    def send_response(self, stream_id: int, head: ResponseHead, end_stream: bool = False) -> None:
        """Agent: answer a stream with the local server's response head."""
        self._require_role(Role.AGENT, "send RESPONSE")
        stream = self._local_stream(stream_id)
        payload = _encoded_head(head)
        self._advance_send(stream, Action.HEAD_END if end_stream else Action.HEAD)
        self._queue(FrameType.RESPONSE, _END_STREAM if end_stream else 0, stream_id, payload)
        self._forget_if_closed(stream)

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        """Queue body bytes; never more than ``send_window(stream_id)`` allows.

        The bytes are not copied until ``data_to_send``: don't mutate them before.
        """
        stream = self._local_stream(stream_id)
        n = len(data)
        if n > min(stream.send_window.available, self._send_conn.available):
            raise LocalProtocolError(
                f"stream {stream_id}: {n} bytes exceed the send window", ErrorCode.FLOW_CONTROL_ERROR
            )
        self._advance_send(stream, Action.DATA_END if end_stream else Action.DATA)
        stream.send_window.spend(n)
        self._send_conn.spend(n)
        flags = _END_STREAM if end_stream else 0
        if n <= DATA_CHUNK_SIZE:
            header = f.encode_header(FrameType.DATA, flags, stream_id, n)
            self._data.append((header, data))
            self._pending += len(header) + n
        else:
            view = memoryview(data)
            for start in range(0, n, DATA_CHUNK_SIZE):
                piece = view[start : start + DATA_CHUNK_SIZE]
                last = start + DATA_CHUNK_SIZE >= n
                header = f.encode_header(FrameType.DATA, flags if last else 0, stream_id, len(piece))
                self._data.append((header, piece))
                self._pending += len(header) + len(piece)
        self._forget_if_closed(stream)

    def end_stream(self, stream_id: int) -> None:
        """Finish our half of a stream (an empty DATA frame with END_STREAM)."""
        self.send_data(stream_id, b"", end_stream=True)

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abandon a stream in both directions; unknown or closed ids are ignored."""
        stream = self._streams.pop(stream_id, None)
        if stream is None or self.phase is Phase.CLOSED:
            return
        self._release_unconsumed(stream)
        self._queue_in_order(FrameType.RESET, stream_id, f.encode_code_reason(code, reason))

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """The application used ``n`` bytes of this stream: give credit back, batched.

        Call it for every received byte that was used or dropped, except after a
        reset: a reset stream's bytes are credited to the connection at once.
        """
        if n <= 0:
            return
        stream = self._streams.get(stream_id)
        if stream is not None:
            n = min(n, stream.recv_window.unconsumed)
            credit = stream.recv_window.consume(n)
            if credit and stream.state.recv is not Half.ENDED:
                self._queue(FrameType.CREDIT, 0, stream_id, f.encode_u32(credit))
        elif stream_id in self._draining:
            left = self._draining[stream_id]
            n = min(n, left)
            if left > n:
                self._draining[stream_id] = left - n
            else:
                del self._draining[stream_id]
        else:
            return
        self._credit_connection(n)

    def send_window(self, stream_id: int) -> int:
        """Body bytes we may send on this stream right now (0 if closed)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        return min(stream.send_window.available, self._send_conn.available)

    def ping(self, payload: bytes = b"\0" * 8) -> None:
        """Queue a PING; the answer arrives as ``PingAcknowledged``."""
        self._queue(FrameType.PING, 0, 0, payload[:8])

    # ------------------------------------------------------------------ output
    @property
    def bytes_to_send(self) -> int:
        """Bytes queued and not yet collected by ``data_to_send``."""
        return self._pending

    def data_to_send(self, limit: int | None = None) -> bytes:
        """Collect queued frames (control first), up to about ``limit`` bytes."""
        parts: list[bytes] = []
        size = 0
        while self._urgent and (limit is None or size < limit):
            frame = self._urgent.popleft()
            parts.append(frame)
            size += len(frame)
        while self._data and (limit is None or size < limit):
            header, payload = self._data.popleft()
            parts.append(header)
            parts.append(payload)
            size += len(header) + len(payload)
        self._pending -= size
        return b"".join(parts)

    def is_open(self, stream_id: int) -> bool:
        """The stream exists and is not closed in both directions."""
        return stream_id in self._streams

    @property
    def open_streams(self) -> int:
        """Streams not yet closed in both directions."""
        return len(self._streams)

    # ------------------------------------------------------------------ input
    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Feed bytes from the peer; return what they meant.

        A protocol violation by the peer queues GOAWAY with its code and
        returns ``ConnectionClosed``; the session is then closed.
        """
        if self.phase is _CLOSED:
            return []
        events: list[Event] = []
        handlers = self._handlers
        try:
            for frame in self._decoder.feed(data):
                handlers[frame.type](frame, events)
                if self.phase is _CLOSED:
                    break
        except RemoteProtocolError as exc:
            self.goaway(exc.code, str(exc))
            self._streams.clear()
            events.append(ConnectionClosed(exc.code, str(exc)))
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        # One dict lookup (IntEnum hashes as an int) instead of a chain of comparisons.
        self._handlers[frame.type](frame, events)

    def _on_ping(self, frame: Frame, events: list[Event]) -> None:
        if frame.flags & _ACK:
            events.append(PingAcknowledged(frame.payload))
        else:
            self._queue(FrameType.PING, _ACK, 0, frame.payload[:8])

    def _on_goaway(self, frame: Frame, events: list[Event]) -> None:
        code, reason = f.decode_code_reason(frame.payload)
        if code == ErrorCode.NO_ERROR and self.phase is _OPEN:
            if not self.peer_draining:  # a repeated drain says nothing new
                self.peer_draining = True
                events.append(PeerDraining(reason))
            return
        self.phase = _CLOSED
        self._streams.clear()
        events.append(GoAwayReceived(code, reason))

    def _on_hello(self, frame: Frame, events: list[Event]) -> None:
        if self.role is not Role.RELAY or self.version is not None:
            raise RemoteProtocolError("unexpected HELLO")
        hello = Hello.decode(frame.payload)
        self.version = choose_version(hello.versions)
        self._peer_stream_window = hello.stream_window
        self._send_conn = SendWindow(hello.connection_window)
        events.append(HelloReceived(hello))

    def _on_welcome(self, frame: Frame, events: list[Event]) -> None:
        if self.role is not Role.AGENT or self.phase is not Phase.HANDSHAKE or not self._hello_sent:
            raise RemoteProtocolError("unexpected WELCOME")
        welcome = Welcome.decode(frame.payload)
        if welcome.version not in SUPPORTED_VERSIONS:
            raise RemoteProtocolError(
                f"relay chose protocol version {welcome.version}, this agent speaks {list(SUPPORTED_VERSIONS)}",
                ErrorCode.UNSUPPORTED_VERSION,
            )
        if welcome.max_streams and self._adopt_peer_max_streams:
            self.max_streams = welcome.max_streams
        self.version = welcome.version
        self._peer_stream_window = welcome.stream_window
        self._send_conn = SendWindow(welcome.connection_window)
        self.phase = Phase.OPEN
        events.append(WelcomeReceived(welcome))

    def _on_open(self, frame: Frame, events: list[Event]) -> None:
        if self.role is not Role.AGENT:
            raise RemoteProtocolError("agents may not open streams")
        self._require_peer_open("OPEN")
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._highest_peer_stream:
            raise RemoteProtocolError(f"OPEN reuses or misnumbers stream id {sid}")
        if len(self._streams) >= self.max_streams:
            self._highest_peer_stream = sid
            self._queue(FrameType.RESET, 0, sid, f.encode_code_reason(ErrorCode.TOO_MANY_STREAMS, "too many streams"))
            return
        if self.draining:  # the OPEN crossed our GOAWAY(NO_ERROR) on the wire
            self._highest_peer_stream = sid
            refusal = f.encode_code_reason(ErrorCode.REFUSED_STREAM, "agent is shutting down")
            self._queue(FrameType.RESET, 0, sid, refusal)
            return
        head = RequestHead.decode(frame.payload)
        self._highest_peer_stream = sid
        end = bool(frame.flags & _END_STREAM)
        stream = _Stream(sid, self._peer_stream_window, self._local_stream_window)
        stream.state.on_receive(Action.HEAD_END if end else Action.HEAD)
        self._streams[sid] = stream
        events.append(StreamOpened(sid, head, end))

    def _on_response(self, frame: Frame, events: list[Event]) -> None:
        if self.role is not _RELAY:
            raise RemoteProtocolError("RESPONSE frames go from agent to relay")
        stream = self._peer_stream(frame.stream_id)
        if stream is None:
            return
        head = ResponseHead.decode(frame.payload)
        end = bool(frame.flags & _END_STREAM)
        self._advance_receive(stream, Action.HEAD_END if end else Action.HEAD)
        events.append(ResponseReceived(frame.stream_id, head, end))
        self._forget_if_closed(stream)

    def _on_data(self, frame: Frame, events: list[Event]) -> None:
        n = len(frame.payload)
        self._recv_conn.receive(n)
        stream = self._peer_stream(frame.stream_id)
        if stream is None:
            # Raced with our RESET: the bytes are dropped, the connection credit returned.
            self._credit_connection(n)
            return
        end = bool(frame.flags & _END_STREAM)
        self._advance_receive(stream, Action.DATA_END if end else Action.DATA)
        stream.recv_window.receive(n)
        events.append(DataReceived(frame.stream_id, frame.payload, end))
        self._forget_if_closed(stream)

    def _on_credit(self, frame: Frame, events: list[Event]) -> None:
        credit = f.decode_u32(frame.payload)
        if frame.stream_id == 0:
            self._send_conn.grant(credit)
            events.append(WindowUpdated(0))
            return
        stream = self._peer_stream(frame.stream_id)
        if stream is not None:
            stream.send_window.grant(credit)
            events.append(WindowUpdated(frame.stream_id))

    def _on_reset(self, frame: Frame, events: list[Event]) -> None:
        code, reason = f.decode_code_reason(frame.payload)
        stream = self._peer_stream(frame.stream_id)
        if stream is None:
            return
        del self._streams[frame.stream_id]
        self._release_unconsumed(stream)
        events.append(StreamReset(frame.stream_id, code, reason))

    # ------------------------------------------------------------------ helpers
    def _peer_stream(self, stream_id: int) -> _Stream | None:
        """The stream a peer frame names; None if it was closed (a harmless race)."""
        self._require_peer_open("stream frames")
        stream = self._streams.get(stream_id)
        if stream is not None:
            return stream
        known = self._next_stream_id - 2 if self.role is _RELAY else self._highest_peer_stream
        if stream_id > known or stream_id % 2 == 0:
            raise RemoteProtocolError(f"frame for stream {stream_id}, which was never opened")
        return None

    def _local_stream(self, stream_id: int) -> _Stream:
        self._require_open()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"stream {stream_id} is not open", ErrorCode.STREAM_CLOSED)
        return stream

    def _advance_send(self, stream: _Stream, action: Action) -> None:
        try:
            stream.state.on_send(action)
        except StreamStateError as exc:
            raise LocalProtocolError(str(exc), exc.code) from None

    def _advance_receive(self, stream: _Stream, action: Action) -> None:
        try:
            stream.state.on_receive(action)
        except StreamStateError as exc:
            raise RemoteProtocolError(str(exc), exc.code) from None

    def _forget_if_closed(self, stream: _Stream) -> None:
        state = stream.state
        if state.send is _HALF_ENDED and state.recv is _HALF_ENDED:  # state.closed, without the property call
            sid = state.stream_id
            del self._streams[sid]
            if stream.recv_window.unconsumed:
                self._draining[sid] = stream.recv_window.unconsumed

    def _release_unconsumed(self, stream: _Stream) -> None:
        """A reset stream's unused bytes are dropped: their connection credit goes back now."""
        self._credit_connection(stream.recv_window.unconsumed)
        stream.recv_window.unconsumed = 0

    def _credit_connection(self, n: int) -> None:
        credit = self._recv_conn.consume(n)
        if credit:
            self._queue(FrameType.CREDIT, 0, 0, f.encode_u32(credit))

    def _queue_in_order(self, ftype: FrameType, stream_id: int, payload: bytes) -> None:
        """Queue behind body data already queued: a RESET or GOAWAY must not overtake the
        DATA (and END_STREAM) sent before it, or the peer would drop a complete answer."""
        header = f.encode_header(ftype, 0, stream_id, len(payload))
        self._data.append((header, payload))
        self._pending += len(header) + len(payload)

    def _queue(self, ftype: FrameType, flags: int, stream_id: int, payload: bytes) -> None:
        frame = f.encode_frame(ftype, flags, stream_id, payload)
        self._urgent.append(frame)
        self._pending += len(frame)

    def _require_role(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"only the {role.value} may {what}")

    def _require_open(self) -> None:
        if self.phase is not _OPEN:
            raise LocalProtocolError(f"session is {self.phase.value}, not open", ErrorCode.GOING_AWAY)

    def _require_peer_open(self, what: str) -> None:
        if self.phase is not _OPEN:
            raise RemoteProtocolError(f"{what} before the handshake completed")


def _encoded_head(head: RequestHead | ResponseHead) -> bytes:
    """The head's payload, refused here if the peer would refuse it (it would end the connection)."""
    if len(head.headers) > MAX_HEADER_COUNT:
        raise LocalProtocolError(
            f"{len(head.headers)} headers exceed the protocol limit of {MAX_HEADER_COUNT}", ErrorCode.FRAME_TOO_LARGE
        )
    payload = head.encode()
    if len(payload) > MAX_HEAD_SIZE:
        raise LocalProtocolError(
            f"head of {len(payload)} bytes exceeds the protocol limit of {MAX_HEAD_SIZE}", ErrorCode.FRAME_TOO_LARGE
        )
    return payload


__all__ = ["Phase", "ProtocolError", "Role", "Session"]

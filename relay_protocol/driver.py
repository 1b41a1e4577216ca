"""The asyncio driver: runs a ``Session`` over a message transport.

This is the only module of the package that awaits.  It feeds websocket
messages to the session, sends what the session queues (coalescing frames
into messages), and gives each stream ``read``/``write`` coroutines that
respect flow control: ``write`` waits for credit and for the outgoing buffer
to drain below a high-water mark, ``read`` returns credit for the previous
chunk once the caller comes back for the next one (the bytes are used).

The transport is a ``PushTransport`` (``relay_protocol.websocket``, on both
sides): it hands each message over as it arrives and takes writes without
awaiting, so no task hops per message either way, and the queued frames go out
in one callback per loop pass.  Before ``run`` (the handshake) it is read and
written with ``recv`` and ``send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    GoAwayReceived,
    PeerDraining,
    PingAcknowledged,
    ResponseReceived,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from relay_protocol.heads import RequestHead, ResponseHead
from relay_protocol.session import Phase, Session

log = logging.getLogger(__name__)

_CLOSED = Phase.CLOSED  # a global lookup, not an Enum class attribute lookup, once per message

#: Most bytes put in one websocket message.
MAX_MESSAGE_SIZE = 64 * 1024

#: Stream writers wait while this many bytes are queued but unsent; keeps the
#: queue short so a new request's frames never wait behind much bulk data.
SEND_HIGH_WATER = 512 * 1024

#: How long ``run`` lets the writer flush a final GOAWAY before closing the socket.
CLOSE_FLUSH_TIMEOUT = 2.0


class TransportClosed(Exception):
    """The websocket under the session is gone."""


class Transport(Protocol):
    """A message transport as the handshake uses it, before the multiplexer runs."""

    async def send(self, data: bytes) -> None:
        """Send one binary message; raise TransportClosed if the socket is gone."""

    async def recv(self) -> bytes | None:
        """Next binary message, or None once the socket closed."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket; never raises."""


class MessageReceiver(Protocol):
    """What a ``PushTransport`` calls (the multiplexer)."""

    def message_received(self, message: bytes | memoryview) -> None:
        """One binary message arrived."""

    def transport_writable(self) -> None:
        """The transport's write buffer drained below its low-water mark."""

    def transport_closed(self) -> None:
        """The connection is gone; no more messages."""


class PushTransport(Transport, Protocol):
    """A transport that delivers messages by callback and writes without awaiting."""

    @property
    def writable(self) -> bool:
        """False while the write buffer is above its high-water mark (``transport_writable`` follows)."""

    def attach(self, receiver: MessageReceiver) -> None:
        """Deliver every message (those already queued first) to ``receiver`` from now on."""

    def write_message(self, data: bytes) -> None:
        """Send one binary message now; raise TransportClosed if the socket is gone."""

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Begin the closing handshake; ``transport_closed`` follows once the socket is gone."""


class StreamError(Exception):
    """The stream was reset (by the peer, by us, or because the connection died)."""

    def __init__(self, code: ErrorCode | int, reason: str) -> None:
        super().__init__(reason or getattr(code, "name", str(code)))
        self.code = code
        self.reason = reason


class MuxStream:
    """One stream as the application sees it."""

    __slots__ = (
        "id",
        "request",
        "response",
        "_mux",
        "_chunks",
        "_eof",
        "_error",
        "_reader",
        "_writer",
        "_unacked",
        "_on_reset",
        "_send_error",
    )

    def __init__(self, mux: Multiplexer, stream_id: int, request: RequestHead | None) -> None:
        self.id = stream_id
        self.request = request
        #: Relay side: resolves to the agent's response head.
        self.response: asyncio.Future[ResponseHead] = mux.loop().create_future()
        self._mux = mux
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._error: StreamError | None = None
        self._reader: asyncio.Future[None] | None = None
        self._writer: asyncio.Future[None] | None = None
        self._unacked = 0
        self._on_reset: Callable[[StreamError], None] | None = None
        #: Set when the peer reset the stream after finishing its own half: we may not
        #: send any more, but everything it sent stays readable (as HTTP/2's RST after END).
        self._send_error: StreamError | None = None

    def on_reset(self, callback: Callable[[StreamError], None] | None) -> None:
        """Call ``callback`` if the peer resets the stream or the connection dies.

        Lets the agent cancel a local request the moment the public client
        goes away, even while it is still waiting for the response head.
        """
        self._on_reset = callback

    # ----------------------------------------------------------------- reading
    async def read(self) -> bytes:
        """Next body chunk; b"" at the end; StreamError if the stream was reset."""
        if self._unacked:
            self._mux._acknowledge(self.id, self._unacked)
            self._unacked = 0
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._reader = self._mux.loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        chunk = self._chunks.popleft()
        self._unacked = len(chunk)
        return chunk

    def read_whole(self) -> bytes | memoryview:
        """The rest of a ``complete`` stream's body in one piece, without awaiting; its credit goes back now."""
        chunks = self._chunks
        unread = self._unacked + self.buffered
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._unacked = 0
        if unread:
            self._mux._acknowledge(self.id, unread)
        return body

    @property
    def buffered(self) -> int:
        """Body bytes the peer sent that nobody has read yet (at most the stream's receive window)."""
        return sum(map(len, self._chunks))

    @property
    def complete(self) -> bool:
        """The whole body has arrived (some of it may be unread)."""
        return self._eof and self._error is None

    @property
    def at_eof(self) -> bool:
        """The peer ended its half and every chunk has been read."""
        return self._eof and not self._chunks

    @property
    def error(self) -> StreamError | None:
        """Why the stream was reset, if it was."""
        return self._error

    @property
    def cut_off(self) -> bool:
        """Reset by either side, or its connection died: nothing more can be sent."""
        return self._error is not None or self._send_error is not None

    def _feed(self, data: bytes, end: bool) -> None:
        if data:
            self._chunks.append(data)
        if end:
            self._eof = True
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    # ----------------------------------------------------------------- writing
    def send_response(self, head: ResponseHead, end_stream: bool = False) -> None:
        """Agent side: send the response head (``end_stream`` when there is no body)."""
        self._mux.send_response(self, head, end_stream)

    async def write(self, data: bytes, end: bool = False) -> None:
        """Send body bytes as credit allows; ``end`` finishes our half."""
        mux = self._mux
        session = mux.session
        rest: bytes | memoryview = data
        if self._error is None and not session.is_open(self.id):
            raise StreamError(ErrorCode.STREAM_CLOSED, "stream already finished")
        while True:
            if self._error is not None:
                raise self._error
            if self._send_error is not None:
                raise self._send_error
            if mux._pending_too_high():
                await mux._wait_for_space()
                continue
            size = len(rest)
            window = session.send_window(self.id)
            if size and window <= 0:
                await self._wait_for_credit()
                continue
            if size <= window:
                piece, rest = rest, b""
            else:
                view = memoryview(rest)
                piece, rest = view[:window], view[window:]
            last = not rest
            session.send_data(self.id, piece, end_stream=end and last)
            mux._after_send(self.id)
            if last:
                return

    def can_write_now(self, size: int) -> bool:
        """``write_now`` would send ``size`` bytes (credit, the send queue and the stream allow it)."""
        mux = self._mux
        session = mux.session
        if self._error is not None or self._send_error is not None or mux._pending_too_high():
            return False
        return size <= session.send_window(self.id) and session.is_open(self.id)

    def write_now(self, data: bytes, end: bool = False) -> bool:
        """Send all of ``data`` without awaiting if credit and the send queue allow it.

        False (nothing sent) when ``write`` would wait or raise: await ``write`` then.
        """
        if not self.can_write_now(len(data)):
            return False
        self._mux.session.send_data(self.id, data, end_stream=end)
        self._mux._after_send(self.id)
        return True

    def end(self) -> None:
        """Finish our half of the stream without more data (no-op once reset)."""
        if self._error is None and self._send_error is None:
            try:
                self._mux.session.end_stream(self.id)
            except LocalProtocolError as exc:
                log.debug("end of stream %s ignored: %s", self.id, exc)
                return
            self._mux._after_send(self.id)

    def reset(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Abandon the stream both ways; the peer sees RESET with this code."""
        if self._error is None:
            if self._mux.session.is_open(self.id):
                # The session credits unread bytes back to the connection itself.
                self._mux.session.reset_stream(self.id, code, reason)
                self._chunks.clear()
                self._unacked = 0
            else:
                self._discard_unread()
            self._fail(StreamError(code, reason or "reset locally"))
            self._mux._streams.pop(self.id, None)
            self._mux._wake_writer()

    def release(self, code: ErrorCode = ErrorCode.CANCEL, reason: str = "") -> None:
        """Done with the stream: reset it if still open, else give back credit for unread bytes."""
        if self._mux.session.is_open(self.id):
            self.reset(code, reason)
        else:
            self._discard_unread()

    def _discard_unread(self) -> None:
        """Drop bytes the application will never read, acknowledging them so the window refills."""
        if not self._chunks and not self._unacked:
            return  # the usual case: everything was read
        unread = self._unacked + self.buffered
        self._chunks.clear()
        self._unacked = 0
        if unread:
            self._mux._acknowledge(self.id, unread)

    async def _wait_for_credit(self) -> None:
        self._writer = asyncio.get_running_loop().create_future()
        self._mux._blocked.add(self)
        try:
            await self._writer
        finally:
            self._writer = None
            self._mux._blocked.discard(self)

    def _wake_writer(self) -> None:
        if self._writer is not None and not self._writer.done():
            self._writer.set_result(None)

    def _fail(self, error: StreamError, remote: bool = False, reset: bool = False) -> None:
        if reset and self._eof and self._error is None:
            # The peer finished sending, then reset: that only stops our sending.
            if self._send_error is None:
                self._send_error = error
                if self._on_reset is not None:
                    self._on_reset(error)
            self._wake_writer()
            return
        if self._error is None:
            self._error = error
            self._chunks.clear()
            self._unacked = 0
            if remote and self._on_reset is not None:
                self._on_reset(error)
        if not self.response.done():
            self.response.set_exception(error)
            self.response.exception()  # mark retrieved: nobody may be waiting
        self._wake_reader()
        self._wake_writer()


class Multiplexer:
    """Drives one open ``Session`` over one transport until either side closes it."""

    def __init__(
        self,
        session: Session,
        transport: PushTransport,
        on_stream: Callable[[MuxStream], None] | None = None,
    ) -> None:
        self.session = session
        self.transport = transport
        self._on_stream = on_stream
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[int, MuxStream] = {}
        self._blocked: set[MuxStream] = set()
        self._space_waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self.close_code: ErrorCode | int = ErrorCode.NO_ERROR
        self.close_reason = ""
        self._pongs: dict[bytes, asyncio.Future[None]] = {}
        self._ping_seq = 0
        #: Called once with the reason when the peer says it is draining (GOAWAY NO_ERROR).
        self.on_peer_draining: Callable[[str], None] | None = None
        #: Either side said GOAWAY(NO_ERROR): close once the last stream is done and flushed.
        self._drain_reason: str | None = None
        #: We ended the connection on purpose (``close``), as opposed to losing it.
        self.closed_locally = False
        self._attached = False
        self._flush_scheduled = False
        #: Done when no more messages are taken (``run`` returns).
        self._ended: asyncio.Future[None] | None = None
        #: Done when the writer has finished.
        self._write_done: asyncio.Future[None] | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, looked up once: each ``get_running_loop()`` costs a getpid() syscall on Python 3.11."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    @property
    def open_streams(self) -> int:
        """Streams the application still holds."""
        return len(self._streams)

    @property
    def closed(self) -> bool:
        """The connection is gone or going (no new streams)."""
        return self._closed

    @property
    def draining(self) -> bool:
        """We said GOAWAY(NO_ERROR): no new streams, open ones finish."""
        return self.session.draining

    @property
    def peer_draining(self) -> bool:
        """The peer said GOAWAY(NO_ERROR): it takes or opens no new streams."""
        return self.session.peer_draining

    @property
    def accepting_streams(self) -> bool:
        """Open, and nobody is draining: a new stream may start."""
        return not self._closed and self.session.accepting_streams

    # ----------------------------------------------------------------- running
    async def run(self) -> None:
        """Read and write until the connection ends; then fail every stream.

        The transport's callbacks do the reading and the writing; this waits.
        """
        loop = self.loop()
        self._ended = loop.create_future()
        self._write_done = loop.create_future()
        transport = self.transport
        self._attached = True
        transport.attach(self)
        self._wake_writer()  # e.g. the WELCOME queued before we started, or a close() already asked
        try:
            await self._ended
        finally:
            self._closed = True
            self._wake_writer()
            try:
                await asyncio.wait_for(asyncio.shield(self._write_done), CLOSE_FLUSH_TIMEOUT)
            except BaseException:  # timeout or cancellation: stop flushing
                pass
            self._fail_all(ErrorCode.GOING_AWAY, self.close_reason or "tunnel connection closed")
            await transport.close()

    def message_received(self, message: bytes | memoryview) -> None:
        """PushTransport callback: one message."""
        ended = self._ended
        if ended is None or ended.done():
            return
        session = self.session
        try:
            for event in session.receive_data(message):
                self._dispatch(event)
        except Exception as exc:  # surfaces from run()
            ended.set_exception(exc)
            return
        if session.bytes_to_send:
            self._wake_writer()
        if session.phase is _CLOSED:
            self._closed = True
        if self._closed:
            ended.set_result(None)

    def transport_writable(self) -> None:
        """PushTransport callback: the socket drained; send what waited."""
        self._wake_writer()

    def transport_closed(self) -> None:
        """PushTransport callback: the socket is gone."""
        ended = self._ended
        if ended is not None and not ended.done():
            self.close_reason = self.close_reason or "connection lost"
            ended.set_result(None)
        self._wake_writer()

    def _flush(self) -> None:
        """The writer: send what the session queued while the socket takes it."""
        self._flush_scheduled = False
        done = self._write_done
        if done is None or done.done():
            return
        session = self.session
        transport = self.transport
        try:
            while True:
                while session.bytes_to_send:
                    if not transport.writable:
                        return  # transport_writable() calls us again
                    transport.write_message(session.data_to_send(MAX_MESSAGE_SIZE))
                    self._release_space()
                if self._drain_reason is not None and not self._closed:
                    self._finish_drain()
                    if session.bytes_to_send:
                        continue  # our closing GOAWAY goes out before we stop
                break
            if not self._closed:
                return
        except TransportClosed:
            self._closed = True
        done.set_result(None)
        transport.start_close()

    def _dispatch(self, event: Event) -> None:
        # The events of every request first (data, the relay's responses), the rare ones last.
        if isinstance(event, DataReceived):
            stream = self._streams.get(event.stream_id)
            if stream is None:
                self.session.acknowledge_received_data(event.stream_id, len(event.data))
            else:
                stream._feed(event.data, event.end_stream)
                if event.end_stream:
                    self._maybe_forget(event.stream_id)
        elif isinstance(event, ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                if not stream.response.done():
                    stream.response.set_result(event.head)
                if event.end_stream:
                    stream._feed(b"", True)
                    self._maybe_forget(event.stream_id)
        elif isinstance(event, WindowUpdated):
            if event.stream_id == 0:
                for stream in list(self._blocked):
                    stream._wake_writer()
            else:
                stream = self._streams.get(event.stream_id)
                if stream is not None:
                    stream._wake_writer()
        elif isinstance(event, StreamOpened):
            stream = MuxStream(self, event.stream_id, event.head)
            self._streams[event.stream_id] = stream
            if event.end_stream:
                stream._eof = True
            if self._on_stream is not None:
                self._on_stream(stream)
        elif isinstance(event, StreamReset):
            stream = self._streams.pop(event.stream_id, None)
            if stream is not None:
                stream._fail(StreamError(event.code, event.reason), remote=True, reset=True)
            if self._drain_reason is not None:
                self._wake_writer()
        elif isinstance(event, PingAcknowledged):
            waiter = self._pongs.pop(event.payload, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif isinstance(event, PeerDraining):
            self._start_drain(event.reason or "peer is going away")
            if self.on_peer_draining is not None:
                self.on_peer_draining(event.reason)
        elif isinstance(event, (GoAwayReceived, ConnectionClosed)):
            self.close_code, self.close_reason = event.code, event.reason
            self._closed = True
            if isinstance(event, ConnectionClosed):
                log.warning("protocol error from peer: %s", event.reason)

    # ----------------------------------------------------------------- API
    def open_stream(self, head: RequestHead, end_stream: bool = False) -> MuxStream:
        """Relay side: start a stream for a public request."""
        if self._closed:
            raise StreamError(ErrorCode.GOING_AWAY, "tunnel connection closed")
        stream_id = self.session.open_stream(head, end_stream)
        stream = MuxStream(self, stream_id, head)
        self._streams[stream_id] = stream
        self._wake_writer()
        return stream

    def send_response(self, stream: MuxStream, head: ResponseHead, end_stream: bool = False) -> None:
        """Agent side: send the response head for a stream."""
        if stream._error is not None:
            raise stream._error
        self.session.send_response(stream.id, head, end_stream)
        self._after_send(stream.id)

    async def ping(self, timeout: float) -> float:
        """Round-trip time of a PING in seconds; TimeoutError if none comes back."""
        loop = asyncio.get_running_loop()
        self._ping_seq += 1
        payload = self._ping_seq.to_bytes(8, "big")
        waiter: asyncio.Future[None] = loop.create_future()
        self._pongs[payload] = waiter
        start = loop.time()
        self.session.ping(payload)
        self._wake_writer()
        try:
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._pongs.pop(payload, None)
        return loop.time() - start

    def close(self, code: ErrorCode = ErrorCode.GOING_AWAY, reason: str = "") -> None:
        """Say GOAWAY and stop; ``run`` returns once the frame is out."""
        if not self._closed:
            self.close_code, self.close_reason = code, reason
            self.closed_locally = True
            self.session.goaway(code, reason)
            self._closed = True
            self._wake_writer()

    def drain(self, reason: str = "") -> None:
        """Say GOAWAY(NO_ERROR): no new streams; close by ourselves once the open ones are done.

        Open streams run on untouched (``close`` cuts them off if they take too long).
        """
        if self._closed:
            return
        self.session.drain(reason)
        self._start_drain(reason or "going away")
        self._wake_writer()

    def _start_drain(self, reason: str) -> None:
        if self._drain_reason is None:
            self._drain_reason = reason
            self._wake_writer()  # the writer closes at once if no stream is open

    # ----------------------------------------------------------------- internals
    def _acknowledge(self, stream_id: int, n: int) -> None:
        self.session.acknowledge_received_data(stream_id, n)
        if self.session.bytes_to_send:
            self._wake_writer()

    def _after_send(self, stream_id: int) -> None:
        self._maybe_forget(stream_id)
        self._wake_writer()

    def _maybe_forget(self, stream_id: int) -> None:
        """Drop our routing entry once the session has closed the stream both ways."""
        if not self.session.is_open(stream_id):
            self._streams.pop(stream_id, None)
            if self._drain_reason is not None:
                self._wake_writer()  # maybe the last one: the writer checks once flushed

    def _finish_drain(self) -> None:
        """Draining, every stream done and every byte sent: end the connection cleanly."""
        if not self._streams and not self.session.open_streams and not self.session.bytes_to_send:
            self.close(ErrorCode.GOING_AWAY, self._drain_reason or "drained")

    def _wake_writer(self) -> None:
        if self._attached and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop().call_soon(self._flush)

    def _pending_too_high(self) -> bool:
        return self.session.bytes_to_send >= SEND_HIGH_WATER

    async def _wait_for_space(self) -> None:
        if self._closed:
            raise StreamError(ErrorCode.GOING_AWAY, self.close_reason or "tunnel connection closed")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._space_waiters.append(waiter)
        self._wake_writer()
        await waiter

    def _release_space(self) -> None:
        while self._space_waiters and not self._pending_too_high():
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def _fail_all(self, code: ErrorCode, reason: str) -> None:
        error = StreamError(code, reason)
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            stream._fail(error, remote=True)
        while self._space_waiters:
            waiter = self._space_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

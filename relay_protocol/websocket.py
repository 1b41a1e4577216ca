"""An open websocket as a ``PushTransport``: websockets' sans-I/O protocol under our own asyncio protocol.

Each side does its opening handshake with its own library (the agent with
``websockets.asyncio.client.connect``, the relay with aiohttp's
``WebSocketResponse.prepare``), then a subclass takes the socket over.  From
then on a message reaches the multiplexer inside ``data_received`` and goes
out with one ``writelines``: no task hop on the way in, no lock or awaited
drain on the way out.  Whole final binary frames (every tunnel message) are cut
out of the received bytes by ``relay_protocol.wsframes`` without websockets'
two copies; anything else, ping/pong, the close handshake and every refusal
stay websockets' (its ``Protocol``), which reads on from where that reader
stops.  What an asyncio
connection did besides is kept here: the keepalive ping with its pong
deadline, the close deadline, and write flow control.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections import deque
from collections.abc import Iterable, Sequence

from websockets.frames import Frame, Opcode
from websockets.protocol import CLOSED, OPEN, Protocol, Side

from relay_protocol.driver import MessageReceiver, TransportClosed
from relay_protocol.wsframes import BinaryFrameReader, Piece

log = logging.getLogger(__name__)

_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_TEXT = Opcode.TEXT
_PONG = Opcode.PONG

#: Close code for a text message (this protocol is binary only); the reason sent with it.
UNSUPPORTED_DATA = 1003
_TEXT_REFUSED = "binary frames only"

#: Close code when no pong came back in time (websockets' own choice).
_INTERNAL_ERROR = 1011


class PushWebsocket(asyncio.Protocol):
    """Binary messages over an open websocket, delivered by callback; subclasses take the socket over."""

    def __init__(
        self,
        protocol: Protocol,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        self.protocol = protocol
        self.loop = loop
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.transport = transport
        self._receiver: MessageReceiver | None = None
        #: Messages that arrived before ``attach`` (the handshake reads them with ``recv``).
        self._inbox: deque[bytes] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        #: Pieces of a fragmented binary message; None when no message is in progress.
        self._fragments: list[bytes] | None = None
        self._in_text = False
        #: A text message came: we are closing, and nothing more goes up.
        self._refused = False
        self._paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] = loop.create_future()
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent_at = 0.0
        #: Whole binary frames are read here without websockets' copies, until anything else comes.
        limit = getattr(protocol, "max_message_size", getattr(protocol, "max_size", None))  # named max_size before websockets 15
        self._frames = BinaryFrameReader(masked=protocol.side is Side.SERVER, max_size=limit)

    def _take_over(self, frames: Iterable[Frame] = (), *, paused: bool = False) -> None:
        """Become the socket's protocol; ``frames`` arrived before, ``paused``: its writes are paused now."""
        self._paused = paused
        if getattr(getattr(self.protocol, "reader", None), "buffer", b"?"):
            self._frames.stop()  # websockets holds part of a frame already: it reads on from there
        self.transport.set_protocol(self)
        for frame in frames:
            self._frame(frame)
        self._schedule_ping(self.ping_interval)

    def _binary_frame(self, data: bytes) -> Sequence[bytes]:
        """The pieces of one final binary frame holding ``data``, as this side sends it."""
        raise NotImplementedError

    # ----------------------------------------------------------------- PushTransport
    @property
    def writable(self) -> bool:
        """False while the socket's write buffer is above its high-water mark."""
        return not self._paused or self._lost.done()

    def attach(self, receiver: MessageReceiver) -> None:
        """Hand every message to ``receiver`` from now on, starting with those already queued."""
        self._receiver = receiver
        inbox = self._inbox
        while inbox:
            receiver.message_received(inbox.popleft())
        if self._lost.done():
            receiver.transport_closed()

    def write_message(self, data: bytes) -> None:
        """Send one binary message now; TransportClosed once the websocket is closing or closed."""
        protocol = self.protocol
        if protocol.state is not OPEN:
            raise TransportClosed(str(protocol.close_exc) if protocol.state is CLOSED else "connection closing")
        if protocol.extensions:  # none is negotiated (compression is off); if one were, it frames the message
            protocol.send_binary(data)
            self._write_out()
            return
        if protocol.writes:
            self._write_out()  # control frames queued before (a pong) keep their place
        self.transport.writelines(self._binary_frame(data))

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once); the socket is dropped if the peer does not finish within the close timeout."""
        if self.protocol.state is OPEN and not self._lost.done():
            self.protocol.send_close(code, reason[:120])
            self._write_out()
        self._arm_close_deadline()

    # ----------------------------------------------------------------- Transport (the handshake, run's end)
    async def send(self, data: bytes) -> None:
        """Send one message, waiting while the socket's buffer is full."""
        self.write_message(data)
        if self._paused and not self._lost.done():
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self._lost.done():
                raise TransportClosed("connection lost")

    async def recv(self) -> bytes | None:
        """Next binary message before ``attach``; None once the connection closed."""
        while not self._inbox:
            if self._lost.done() or self._refused:
                return None
            self._recv_waiter = self.loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        return self._inbox.popleft()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close politely and wait for the socket to go (the close timeout bounds it); never raises."""
        self.start_close(code, reason)
        await asyncio.shield(self._lost)

    # ----------------------------------------------------------------- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        frames = self._frames
        if frames.active:
            frames.feed(data)
            data = self._read_frames(frames)
            if not data:
                return
        self._read_with_protocol(data)

    def _read_frames(self, frames: BinaryFrameReader) -> bytes:
        """Deliver whole binary frames; control frames go through websockets; return what websockets reads next."""
        protocol = self.protocol
        while (found := frames.next()) is not None:
            piece, chunk = found
            if piece is Piece.BINARY:
                self._deliver(chunk)  # a view into the received bytes: the multiplexer takes views
            elif piece is Piece.CONTROL:
                self._read_with_protocol(bytes(chunk))  # already bytes: no copy
            else:
                return bytes(chunk)
            if protocol.state is not OPEN or self._refused:
                return frames.stop()  # the close handshake is websockets' to finish
        return b""

    def _read_with_protocol(self, data: bytes) -> None:
        protocol = self.protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._write_out()  # pongs, the echo of a close frame
        if protocol.state is not OPEN:
            self._arm_close_deadline()
        for frame in events:
            self._frame(frame)

    def eof_received(self) -> None:
        self.protocol.receive_eof()
        self.protocol.events_received()
        self._write_out()

    def connection_lost(self, exc: Exception | None) -> None:
        self.protocol.receive_eof()  # idempotent: the protocol's state becomes CLOSED
        for timer in (self._close_timer, self._ping_timer, self._pong_timer):
            if timer is not None:
                timer.cancel()
        self._close_timer = self._ping_timer = self._pong_timer = None
        if not self._lost.done():
            self._lost.set_result(None)
        self._paused = False
        self._wake_drain_waiters()
        self._wake_recv()
        if self._receiver is not None:
            self._receiver.transport_closed()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_drain_waiters()
        if self._receiver is not None:
            self._receiver.transport_writable()

    # ----------------------------------------------------------------- internals
    def _frame(self, frame: Frame) -> None:
        """One data or pong frame from the protocol (it answered pings and close frames itself)."""
        opcode = frame.opcode
        data = frame.data
        fin = frame.fin
        if opcode is _BINARY:
            if fin:
                self._deliver(data)
            else:
                self._fragments = [data]
        elif opcode is _CONT:
            if self._in_text:
                self._in_text = not fin
            elif self._fragments is not None:
                self._fragments.append(data)
                if fin:
                    message, self._fragments = b"".join(self._fragments), None
                    self._deliver(message)
        elif opcode is _TEXT:
            self._in_text = not fin
            self._refused = True
            self.start_close(UNSUPPORTED_DATA, _TEXT_REFUSED)
        elif opcode is _PONG:
            self._pong(bytes(data))

    def _deliver(self, message: bytes | memoryview) -> None:
        if self._refused:
            return
        receiver = self._receiver
        if receiver is not None:
            receiver.message_received(message)
        else:
            self._inbox.append(bytes(message))  # the handshake decodes these: bytes, not a view
            self._wake_recv()

    def _write_out(self) -> None:
        """Write what the protocol queued; its empty item means: half-close (or close, under TLS)."""
        transport = self.transport
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except Exception:  # uvloop raises RuntimeError on a closing transport
                    pass
            else:
                transport.close()

    def _arm_close_deadline(self) -> None:
        """The closing handshake has begun: drop the socket if it is not over within the close timeout."""
        if self._close_timer is None and not self._lost.done() and self.protocol.state is not OPEN:
            self._close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def _schedule_ping(self, delay: float | None) -> None:
        if delay is not None and not self._lost.done():
            self._ping_timer = self.loop.call_later(delay, self._ping)

    def _ping(self) -> None:
        """Keepalive: a ping every interval; no pong within the timeout fails the connection."""
        self._ping_timer = None
        if self.protocol.state is not OPEN:
            return
        payload = struct.pack("!I", random.getrandbits(32))
        self._ping_payload = payload
        self._ping_sent_at = self.loop.time()
        self.protocol.send_ping(payload)
        self._write_out()
        if self.ping_timeout is not None:
            self._pong_timer = self.loop.call_later(self.ping_timeout, self._pong_overdue)

    def _pong(self, payload: bytes) -> None:
        if self._ping_payload is None or payload != self._ping_payload:
            return  # unsolicited
        self._ping_payload = None
        latency = self.loop.time() - self._ping_sent_at
        if self._pong_timer is not None:
            self._pong_timer.cancel()
            self._pong_timer = None
        if self.ping_interval is not None:
            self._schedule_ping(max(0.0, self.ping_interval - latency))

    def _pong_overdue(self) -> None:
        """No pong in time: the peer or the path to it is gone (websockets says 1011 and closes)."""
        self._pong_timer = None
        log.debug("no pong within %gs: closing the websocket", self.ping_timeout)
        if self.protocol.state is OPEN:
            self.protocol.fail(_INTERNAL_ERROR, "keepalive ping timeout")
            self._write_out()
        self._arm_close_deadline()

    def _wake_recv(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_drain_waiters(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def frame_head(length: int, *, masked: bool) -> bytes:
    """The first bytes of one final binary frame of ``length`` payload bytes (RFC 6455 section 5.2), before any mask."""
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return struct.pack("!BB", 0x82, mask_bit | length)
    if length < 65536:
        return struct.pack("!BBH", 0x82, mask_bit | 126, length)
    return struct.pack("!BBQ", 0x82, mask_bit | 127, length)

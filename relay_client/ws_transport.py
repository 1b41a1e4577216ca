"""The agent's websocket once open: websockets' sans-I/O protocol under our own asyncio protocol.

``websockets.asyncio.client.connect`` does the opening handshake (TLS,
proxies, redirects, its errors); then ``ClientWebsocket`` takes the socket
over.  Per message, websockets' asyncio ``Connection`` costs a task hop on
the way in (``recv``) and an async context manager with locks on the way out
(``send``); here a message reaches the multiplexer inside ``data_received``
and goes out with one ``transport.write``.  Framing, masking, ping/pong, the
close handshake and size limits stay websockets' own (its ``ClientProtocol``);
what the asyncio ``Connection`` did besides is kept: the keepalive ping with
its pong deadline, the close deadline, and write flow control.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import struct
from collections import deque

from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode, apply_mask  # the C speedup, when websockets has it built
from websockets.protocol import CLOSED, OPEN

from relay_protocol.driver import MessageReceiver, TransportClosed

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


class ClientWebsocket(asyncio.Protocol):
    """Binary messages over an open client websocket, delivered by callback (a ``PushTransport``)."""

    def __init__(
        self,
        ws: ClientConnection,
        *,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float,
    ) -> None:
        #: Kept: the handshake's request and response, and the referent of the protocol's logger.
        self.ws = ws
        self.protocol = ws.protocol
        self.loop = ws.loop
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self._receiver: MessageReceiver | None = None
        #: Messages that arrived before ``attach`` (the handshake reads them with ``recv``).
        self._inbox: deque[bytes] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        #: Pieces of a fragmented binary message; None when no message is in progress.
        self._fragments: list[bytes] | None = None
        self._in_text = False
        #: A text message came: we are closing, and nothing more goes up.
        self._refused = False
        self._paused = ws.paused
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._lost: asyncio.Future[None] = self.loop.create_future()
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._pong_timer: asyncio.TimerHandle | None = None
        self._ping_payload: bytes | None = None
        self._ping_sent_at = 0.0
        # Take the socket over from websockets' asyncio connection.
        if ws.keepalive_task is not None:
            ws.keepalive_task.cancel()
            ws.keepalive_task = None
        transport = ws.transport
        self.transport = transport
        queued = ws.recv_messages.frames.queue  # frames it received after the handshake (the relay sends none)
        if ws.connection_lost_waiter.done():
            self._lost.set_result(None)
            return
        transport.set_protocol(self)
        for frame in queued:
            self._frame(frame)
        queued.clear()
        if ws.recv_messages.paused:
            transport.resume_reading()
        self._schedule_ping(ping_interval)

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
        self.transport.writelines(masked_binary_frame(data))

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once); the socket is dropped if the relay does not finish within the close timeout."""
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
    def _frame(self, frame: object) -> None:
        """One data or pong frame from the protocol (it answered pings and close frames itself)."""
        opcode = frame.opcode  # type: ignore[attr-defined]
        data = frame.data  # type: ignore[attr-defined]
        fin = frame.fin  # type: ignore[attr-defined]
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

    def _deliver(self, message: bytes) -> None:
        if self._refused:
            return
        receiver = self._receiver
        if receiver is not None:
            receiver.message_received(message)
        else:
            self._inbox.append(message)
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
        """No pong in time: the relay or the path to it is gone (websockets says 1011 and closes)."""
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


def masked_binary_frame(data: bytes | memoryview) -> tuple[bytes, bytes]:
    """Head and masked payload of one final binary frame from a client (RFC 6455 section 5.2).

    What ``websockets.frames.Frame.serialize`` makes for a message with no
    extension, in two pieces for ``writelines``: it assembles the frame in a
    ``BytesIO`` and copies the payload twice more (into it, then out), which
    was a tenth of the agent's CPU on a download.  The mask still comes from
    ``secrets`` and the masking is websockets' own ``apply_mask``.
    """
    length = len(data)
    mask = secrets.token_bytes(4)
    if length < 126:
        head = struct.pack("!BB", 0x82, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x82, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x82, 0x80 | 127, length)
    return head + mask, apply_mask(data, mask)

"""An agent written by hand for the tests, so it can break the protocol on purpose.

It connects to ``/_relay/connect`` like the real agent, does the HELLO/WELCOME
handshake with a ``relay_protocol.Session`` (agent role), then lets the test
either answer requests politely (``serve``: every request gets 200 and a JSON
body naming this agent) or send raw frames the protocol forbids.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import aiohttp

from relay_protocol import ErrorCode, Hello, ResponseHead, Role, Session
from relay_protocol.events import ConnectionClosed, GoAwayReceived, StreamOpened, WelcomeReceived
from relay_protocol.frames import Flag, FrameDecoder, FrameType, decode_code_reason, encode_frame
from support.ports import LOOPBACK

#: Seconds any single step of the rogue agent may take.
STEP_TIMEOUT = 20.0


@dataclass
class Closure:
    """How the relay ended the connection: the GOAWAY it sent (if any) and the websocket close."""

    goaway_code: ErrorCode | int | None
    goaway_reason: str
    ws_close_code: int | None


@dataclass
class RogueAgent:
    """One hand-driven agent connection."""

    name: str
    ws: aiohttp.ClientWebSocketResponse
    http: aiohttp.ClientSession
    session: Session
    #: Streams the relay opened for us, with their request heads, in order.
    opened: list[StreamOpened] = field(default_factory=list)
    _server: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, relay_port: int, subdomain: str, token: str | None = None) -> RogueAgent:
        """Open the websocket, send HELLO, wait for WELCOME."""
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=STEP_TIMEOUT))
        headers = {"Host": f"localhost:{relay_port}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await http.ws_connect(
                f"http://{LOOPBACK}:{relay_port}/_relay/connect", headers=headers, autoping=True, max_msg_size=0
            )
        except BaseException:
            await http.close()
            raise
        session = Session(Role.AGENT)
        session.send_hello(Hello(subdomain=subdomain, client="rogue-agent/1"))
        agent = cls(subdomain, ws, http, session)
        await agent._flush()
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                events = await agent._receive()
                welcome = [e for e in events if isinstance(e, WelcomeReceived)]
                if welcome:
                    agent.name = welcome[0].welcome.name
                    return agent
                if any(isinstance(e, (ConnectionClosed, GoAwayReceived)) for e in events):
                    raise AssertionError(f"the relay refused the rogue agent: {events}")

    async def _flush(self) -> None:
        if self.session.bytes_to_send:
            await self.ws.send_bytes(self.session.data_to_send())

    async def _receive(self) -> list:
        msg = await self.ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"the relay closed the websocket: {msg}")
        events = self.session.receive_data(msg.data)
        await self._flush()
        return events

    async def next_open(self) -> StreamOpened:
        """Wait for the relay to open a stream toward us (a public request)."""
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                for event in await self._receive():
                    if isinstance(event, StreamOpened):
                        self.opened.append(event)
                        return event

    def serve(self) -> None:
        """Answer every request from now on: 200, JSON naming this agent, the target and the Host."""
        self._server = asyncio.create_task(self._serve())

    async def _serve(self) -> None:
        try:
            while True:
                opened = await self.next_open()
                host = next((v for k, v in opened.head.headers if k.lower() == "host"), None)
                body = json.dumps({"agent": self.name, "target": opened.head.target, "host": host}).encode()
                self.session.send_response(
                    opened.stream_id,
                    ResponseHead(200, "OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]),
                )
                self.session.send_data(opened.stream_id, body, end_stream=True)
                await self._flush()
        except (AssertionError, TimeoutError, ConnectionError):
            return

    async def send_frame(self, frame_type: FrameType, stream_id: int, payload: bytes = b"", flags: int = 0) -> None:
        """Send one frame exactly as given, bypassing the session's rules."""
        await self.ws.send_bytes(encode_frame(frame_type, flags, stream_id, payload))

    async def send_response_payload(self, stream_id: int, payload: bytes, end_stream: bool = True) -> None:
        """A RESPONSE frame with a hand-written head payload."""
        await self.send_frame(FrameType.RESPONSE, stream_id, payload, Flag.END_STREAM if end_stream else 0)

    async def closed_by_relay(self) -> Closure:
        """Read until the relay closes the websocket; the GOAWAY it sent on the way."""
        decoder = FrameDecoder()
        goaway: tuple[ErrorCode | int, str] | None = None
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                msg = await self.ws.receive()
                if msg.type is aiohttp.WSMsgType.BINARY:
                    for frame in decoder.feed(msg.data):
                        if frame.type is FrameType.GOAWAY:
                            goaway = decode_code_reason(bytes(frame.payload))
                    continue
                break
        return Closure(goaway[0] if goaway else None, goaway[1] if goaway else "", self.ws.close_code)

    async def close(self) -> None:
        """Leave (idempotent)."""
        if self._server is not None:
            self._server.cancel()
            await asyncio.gather(self._server, return_exceptions=True)
        await self.ws.close()
        await self.http.close()

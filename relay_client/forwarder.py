"""One stream <-> one request to the local server.

The agent only ever talks to its configured origin: the relay sends a path
(``/...`` or ``*``), never a URL, and anything else is refused, so a
compromised relay cannot make the agent fetch other hosts (no SSRF).
Bodies stream both ways and are never decompressed or re-encoded.
Observers (console log, inspector) see each exchange as it happens.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence

from relay_client.cors import add_cors_headers, is_preflight, preflight_answer
from relay_client.exchange import DEFAULT_CAPTURE_LIMIT, Exchange, Observer
from relay_client.localhttp import (
    LOCAL_CONNECTION_LIMIT,
    LocalHttpPool,
    LocalResponse,
    LocalServerError,
    LocalUnreachable,
    unreachable_reason,
)
from relay_client.localsession import LazyLocalSession
from relay_client.rewrite import MAX_REWRITE_BODY, REWRITTEN_HEADERS, UrlRewriter
from relay_client.target import LocalTarget
from relay_protocol.driver import MuxStream, StreamError
from relay_protocol.errors import ErrorCode, LocalProtocolError
from relay_protocol.heads import ResponseHead
from relay_protocol.httpheaders import WEBSOCKET_HANDSHAKE, header_tokens, strip_hop_by_hop
from relay_protocol.wsbridge import bridge
from relay_protocol.wsmessages import MAX_WS_MESSAGE

log = logging.getLogger("relay_client.forward")

#: Responses that never have a body, whatever their headers say.
_BODYLESS = frozenset({204, 304})


class Forwarder:
    """Turns streams into local requests; one per agent process."""

    def __init__(
        self,
        target: LocalTarget,
        session: LazyLocalSession,
        observers: Sequence[Observer] = (),
        host_header: str = "preserve",
        capture_limit: int = DEFAULT_CAPTURE_LIMIT,
        rewrite_urls: bool = False,
        cors: bool = False,
        public_url: Callable[[], str | None] = lambda: None,
        local_connections: int = LOCAL_CONNECTION_LIMIT,
    ) -> None:
        self.target = target
        #: Websocket upgrades (and the inspector's replay) use the aiohttp session, opened on the first.
        self.session = session
        #: Every other request goes through the lean keep-alive pool.
        self.local = LocalHttpPool(target, limit=local_connections)
        self.observers = list(observers)
        self.host_header = host_header
        self.capture_limit = capture_limit
        self.rewriter = UrlRewriter(target) if rewrite_urls else None
        self.cors = cors
        self.public_url = public_url
        self._tasks: set[asyncio.Task[None]] = set()
        #: The loop streams arrive on, looked up once (``asyncio.create_task`` costs a getpid() syscall on 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, stream: MuxStream) -> None:
        """Handle a new stream in its own task; a reset from the relay cancels it."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self.handle(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        stream.on_reset(lambda _error: task.cancel())

    async def close(self) -> None:
        """Cancel streams still in flight."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.local.close()

    def _local_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The pairs the local server gets (aiohttp makes its one multidict of them; Host goes first)."""
        out = strip_hop_by_hop(headers)
        if self.host_header != "preserve":
            value = self.target.host_port if self.host_header == "rewrite" else self.host_header
            out = [(k, v) for k, v in out if k.lower() != "host"]
            out.append(("Host", value))
        return out

    async def handle(self, stream: MuxStream) -> None:
        """Forward one request and stream its answer back."""
        head = stream.request
        assert head is not None
        if not (head.target.startswith("/") or head.target == "*"):
            stream.reset(ErrorCode.PROTOCOL_ERROR, "request target must be a path")
            log.warning("refused request target %r: not a path", head.target[:200])
            return
        exchange = Exchange(
            head.method, head.target, head.headers, head.remote_addr, capture_limit=self.capture_limit
        )
        exchange.websocket = head.upgrade == "websocket"
        exchange.request_complete = stream.at_eof and not exchange.websocket
        self._notify("request_started", exchange)
        try:
            await self._forward(stream, exchange)
        except StreamError as exc:
            exchange.finish(f"public client went away ({exc})")
        except LocalUnreachable as exc:
            reason = exc.reason
            message = f"The agent could not reach the local server at {self.target.origin}: {reason}. Is it running?"
            stream.reset(ErrorCode.LOCAL_UNREACHABLE, message)
            exchange.finish(f"local server unreachable: {reason}")
        except LocalProtocolError as exc:
            # The local server's response head cannot cross the tunnel (too many or too large headers).
            stream.reset(ErrorCode.LOCAL_ERROR, f"The local server's response cannot be relayed: {exc}")
            exchange.finish(f"response not relayable: {exc}")
        except (TimeoutError, LocalServerError, OSError) as exc:
            message = str(exc) or type(exc).__name__
            stream.reset(ErrorCode.LOCAL_ERROR, f"The local server at {self.target.origin} failed: {message}")
            exchange.finish(f"local server failed: {message}")
        except asyncio.CancelledError:
            # The relay reset the stream (public client gone) or the agent is stopping.
            # Leaving the request context closes the local connection, which tells
            # the local server its request was abandoned.
            reset_by_relay = stream.error is not None
            stream.release(ErrorCode.CANCEL, "agent shutting down")
            exchange.finish("cancelled: public client went away" if reset_by_relay else "cancelled: agent stopping")
            self._notify("finished", exchange)
            if not reset_by_relay:
                raise
            return
        finally:
            stream.release(ErrorCode.CANCEL, "request abandoned")
        exchange.finish()
        self._notify("finished", exchange)

    async def _forward(self, stream: MuxStream, exchange: Exchange) -> None:
        head = stream.request
        assert head is not None
        headers = self._local_headers(head.headers)
        if exchange.websocket:
            await self._websocket(stream, exchange, headers)
            return
        if self.cors and is_preflight(head.method, head.headers):
            answer = preflight_answer(head.headers)
            exchange.status, exchange.reason, exchange.response_headers = 204, "No Content", answer
            self._notify("response_started", exchange)
            stream.send_response(ResponseHead(204, "No Content", answer), end_stream=True)
            return
        body = None if stream.at_eof else _body(stream, exchange)
        local = await self.local.request(head.method, head.target, headers, body)
        try:
            response = local.response
            assert response is not None
            await self._relay_response(stream, exchange, response)
        finally:
            local.close()

    async def _relay_response(self, stream: MuxStream, exchange: Exchange, response: LocalResponse) -> None:
        """Send the local server's response head, then its body as it arrives (rewritten if asked)."""
        head = stream.request
        assert head is not None
        status = response.status
        pairs = strip_hop_by_hop(response.headers)
        public = self.public_url()
        if self.rewriter is not None and public:
            rewriter = self.rewriter
            pairs = [(k, rewriter.rewrite_header(v, public) if k.lower() in REWRITTEN_HEADERS else v) for k, v in pairs]
        if self.cors:
            pairs = add_cors_headers(head.headers, pairs)
        exchange.status, exchange.reason, exchange.response_headers = status, response.reason, pairs
        empty = head.method == "HEAD" or status in _BODYLESS or 100 <= status < 200
        if empty:
            self._notify("response_started", exchange)
            stream.send_response(ResponseHead(status, exchange.reason, pairs), end_stream=True)
            return
        prefix = b""
        if self.rewriter is not None and public and self.rewriter.applies_to(head.target) and _identity(pairs):
            prefix, complete = await _read_up_to(response, MAX_REWRITE_BODY)
            if complete:
                document = self.rewriter.rewrite_body(head.target, prefix, public)
                pairs = [(k, v) for k, v in pairs if k.lower() != "content-length"]
                pairs.append(("Content-Length", str(len(document))))
                exchange.response_headers = pairs
                exchange.add_response_body(document)
                self._notify("response_started", exchange)
                stream.send_response(ResponseHead(status, exchange.reason, pairs))
                await stream.write(document, end=True)
                return
        self._notify("response_started", exchange)
        if not prefix and response.complete:
            # The whole body came with the head (most small answers): one frame, END on it.
            body = response.take_all()
            if not body:
                stream.send_response(ResponseHead(status, exchange.reason, pairs), end_stream=True)
                return
            exchange.add_response_body(body)
            stream.send_response(ResponseHead(status, exchange.reason, pairs))
            if not stream.write_now(body, end=True):
                await stream.write(body, end=True)
            return
        stream.send_response(ResponseHead(status, exchange.reason, pairs))
        if prefix:  # too big to rewrite: what we read goes out untouched
            exchange.add_response_body(prefix)
            await stream.write(prefix)
        ended = False
        while chunk := await response.read():
            exchange.add_response_body(chunk)
            ended = response.at_eof()  # last chunk: carry END_STREAM on it, saving a frame
            await stream.write(chunk, end=ended)
        if not ended:
            stream.end()

    async def _websocket(self, stream: MuxStream, exchange: Exchange, pairs: list[tuple[str, str]]) -> None:
        """Forward a websocket upgrade; aiohttp's errors become the pool's, which ``handle`` answers.

        aiohttp (its websocket client) is imported here, not with the module: an
        agent that never forwards a websocket or replays never loads it.
        """
        import aiohttp

        try:
            await self._bridge_websocket(stream, exchange, pairs)
        except aiohttp.ClientConnectorError as exc:
            raise LocalUnreachable(unreachable_reason(exc)) from exc  # an OSError with aiohttp's errno
        except aiohttp.ClientError as exc:
            raise LocalServerError(str(exc) or type(exc).__name__) from exc

    async def _bridge_websocket(self, stream: MuxStream, exchange: Exchange, pairs: list[tuple[str, str]]) -> None:
        """Open the local websocket with the public client's offer; answer 101 only if it accepts."""
        import aiohttp
        from multidict import CIMultiDict
        from yarl import URL

        head = stream.request
        assert head is not None
        url = URL(self.target.origin + head.target, encoded=True)
        headers: CIMultiDict[str] = CIMultiDict(pairs)
        protocols = header_tokens(pairs, "Sec-WebSocket-Protocol")
        deflate = any(t.startswith("permessage-deflate") for t in header_tokens(pairs, "Sec-WebSocket-Extensions"))
        for name in WEBSOCKET_HANDSHAKE:
            headers.popall(name, None)
        try:
            ws = await self.session.get().ws_connect(
                url,
                protocols=protocols,
                headers=headers,
                autoping=False,
                autoclose=True,
                compress=15 if deflate else 0,
                max_msg_size=MAX_WS_MESSAGE,
            )
        except aiohttp.WSServerHandshakeError:
            # Refused (403, 404, no websocket support). aiohttp's error has no body, so ask
            # once more as a plain request carrying the same upgrade offer: the public client
            # gets the local server's whole answer (status, reason, headers and body).
            offer = [(k, v) for k, v in headers.items()]
            offer += [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Version", "13"),
                ("Sec-WebSocket-Key", base64.b64encode(os.urandom(16)).decode()),
            ]
            if protocols:
                offer.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
            async with await self.local.request("GET", head.target, offer) as response:
                if response.status == 101:
                    raise LocalServerError("the local server refused the websocket, then accepted it") from None
                await self._relay_response(stream, exchange, response)
            return
        try:
            answer = []
            if ws.protocol:
                answer.append(("Sec-WebSocket-Protocol", ws.protocol))
            if ws.compress:
                answer.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
            exchange.status, exchange.reason, exchange.response_headers = 101, "Switching Protocols", answer
            self._notify("response_started", exchange)
            stream.send_response(ResponseHead(101, "Switching Protocols", answer))
            await bridge(ws, stream)
        finally:
            await ws.close()

    def _notify(self, event: str, exchange: Exchange) -> None:
        for observer in self.observers:
            try:
                getattr(observer, event)(exchange)
            except Exception:  # an observer bug must never break forwarding
                log.exception("observer %r failed on %s", observer, event)


def _identity(headers: list[tuple[str, str]]) -> bool:
    """The body is not content-encoded (we never decompress, so only these are rewritten)."""
    encoding = next((v for k, v in headers if k.lower() == "content-encoding"), "identity")
    return encoding.strip().lower() in ("", "identity")


async def _read_up_to(response: LocalResponse, limit: int) -> tuple[bytes, bool]:
    """Read the body until its end or past ``limit``; True when it ended within the limit."""
    parts: list[bytes] = []
    size = 0
    while chunk := await response.read():
        parts.append(bytes(chunk))
        size += len(chunk)
        if size > limit:
            return b"".join(parts), False
    return b"".join(parts), True


async def _body(stream: MuxStream, exchange: Exchange) -> AsyncIterator[bytes | memoryview]:
    """The public request body, chunk by chunk, as the relay delivers it."""
    while chunk := await stream.read():
        exchange.add_request_body(chunk)
        yield chunk
    exchange.request_complete = True

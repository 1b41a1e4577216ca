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
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import Any

from relay_client.cors import add_cors_headers, is_preflight, preflight_answer
from relay_client.exchange import DEFAULT_CAPTURE_LIMIT, Exchange, Observer
from relay_client.localhttp import (
    LOCAL_CONNECTION_LIMIT,
    LocalExchange,
    LocalHttpPool,
    LocalResponse,
    LocalServerError,
    LocalUnreachable,
    may_send_again,
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
        #: Requests sent at once (``_send_at_once``) still waiting for their answer: stream and exchange of each.
        self._at_once: dict[LocalExchange, tuple[MuxStream, Exchange]] = {}
        self._queued: list[tuple[MuxStream, Exchange]] = []
        #: The loop streams arrive on, looked up once (``asyncio.create_task`` costs a getpid() syscall on 3.11).
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, stream: MuxStream) -> None:
        """Forward a new stream; a reset from the relay abandons the local request.

        A bodiless request with an idle local connection to go on is sent
        without a task and answered from callbacks (``_send_at_once``): most
        requests.  Anything else runs in a task of its own.
        """
        exchange = self._begin(stream)
        if exchange is None:
            return
        if not exchange.request_complete:
            self._spawn(stream, exchange, self._forward(stream, exchange))
            return
        # Sent in the next loop pass, every request of the relay's message together: writing
        # each one to the local server as its OPEN is read cost 5-8% of throughput at 32
        # connections in an A/B (the agent answered in larger, later batches).
        if not self._queued:
            self._running_loop().call_soon(self._send_queued)
        self._queued.append((stream, exchange))

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _send_queued(self) -> None:
        queued, self._queued = self._queued, []
        for stream, exchange in queued:
            if stream.cut_off:  # reset by the relay before it went out
                self._ended(stream, exchange, "cancelled: public client went away")
            elif not self._send_at_once(stream, exchange):
                self._spawn(stream, exchange, self._forward(stream, exchange))

    def _ended(self, stream: MuxStream, exchange: Exchange, given_up: str | None = None) -> None:
        """The exchange is over: the stream released (reset if still open), the observers told.

        ``given_up``: why the agent gave the request up (the exchange's error).
        """
        stream.release(ErrorCode.CANCEL, "agent shutting down" if given_up else "request abandoned")
        exchange.finish(given_up)
        self._notify("finished", exchange)

    def _spawn(self, stream: MuxStream, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        task = self._running_loop().create_task(self._guarded(stream, exchange, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        stream.on_reset(lambda _error: task.cancel())

    async def close(self) -> None:
        """Cancel streams still in flight."""
        queued, self._queued = self._queued, []
        for stream, exchange in queued:
            self._ended(stream, exchange, "cancelled: agent stopping")
        for local, (stream, exchange) in list(self._at_once.items()):
            self._abandon(stream, exchange, local, "cancelled: agent stopping")
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

    def _begin(self, stream: MuxStream) -> Exchange | None:
        """The exchange observers see from now on; None (the stream refused) for a target that is no path."""
        head = stream.request
        assert head is not None
        if not (head.target.startswith("/") or head.target == "*"):
            stream.reset(ErrorCode.PROTOCOL_ERROR, "request target must be a path")
            log.warning("refused request target %r: not a path", head.target[:200])
            return None
        exchange = Exchange(
            head.method, head.target, head.headers, head.remote_addr, capture_limit=self.capture_limit
        )
        exchange.websocket = head.upgrade == "websocket"
        exchange.request_complete = stream.at_eof and not exchange.websocket
        self._notify("request_started", exchange)
        return exchange

    async def _guarded(self, stream: MuxStream, exchange: Exchange, work: Coroutine[Any, Any, None]) -> None:
        """Run a stream's ``work``; whatever ends it, the relay gets an answer and the observers the end."""
        try:
            await work
        except asyncio.CancelledError:
            # The relay reset the stream (public client gone) or the agent is stopping.
            # Leaving the request context closes the local connection, which tells
            # the local server its request was abandoned.
            reset_by_relay = stream.cut_off
            why = "cancelled: public client went away" if reset_by_relay else "cancelled: agent stopping"
            self._ended(stream, exchange, why)
            if not reset_by_relay:
                raise
            return
        except Exception as exc:
            if not self._answer_failure(stream, exchange, exc):
                raise
        finally:
            stream.release(ErrorCode.CANCEL, "request abandoned")
        exchange.finish()
        self._notify("finished", exchange)

    def _answer_failure(self, stream: MuxStream, exchange: Exchange, exc: Exception) -> bool:
        """Reset the stream with the code and words the relay shows for ``exc``; False for an unexpected error."""
        if isinstance(exc, StreamError):
            exchange.finish(f"public client went away ({exc})")
        elif isinstance(exc, LocalUnreachable):
            reason = exc.reason
            message = f"The agent could not reach the local server at {self.target.origin}: {reason}. Is it running?"
            stream.reset(ErrorCode.LOCAL_UNREACHABLE, message)
            exchange.finish(f"local server unreachable: {reason}")
        elif isinstance(exc, LocalProtocolError):
            # The local server's response head cannot cross the tunnel (too many or too large headers).
            stream.reset(ErrorCode.LOCAL_ERROR, f"The local server's response cannot be relayed: {exc}")
            exchange.finish(f"response not relayable: {exc}")
        elif isinstance(exc, (TimeoutError, LocalServerError, OSError)):
            message = str(exc) or type(exc).__name__
            stream.reset(ErrorCode.LOCAL_ERROR, f"The local server at {self.target.origin} failed: {message}")
            exchange.finish(f"local server failed: {message}")
        else:
            return False
        return True

    # ------------------------------------------------------------ the task-free path
    def _send_at_once(self, stream: MuxStream, exchange: Exchange) -> bool:
        """Send a bodiless request now on an idle local connection; False where the task path must take it."""
        head = stream.request
        assert head is not None
        if self.cors and is_preflight(head.method, head.headers):
            return False
        local = self.local.send_now(head.method, head.target, self._local_headers(head.headers))
        if local is None:
            return False
        assert local.head is not None
        self._at_once[local] = (stream, exchange)
        stream.on_reset(lambda _error: self._abandon(stream, exchange, local, "cancelled: public client went away"))
        local.head.add_done_callback(lambda future: self._on_local_head(stream, exchange, local, future))
        return True

    def _on_local_head(
        self, stream: MuxStream, exchange: Exchange, local: LocalExchange, future: asyncio.Future[LocalResponse]
    ) -> None:
        """The local server answered a request sent at once (or failed to): relay it, in a task only if it must wait."""
        error = None if future.cancelled() else future.exception()
        if local.closed:
            return  # abandoned first (the public client went away, or the agent is stopping)
        del self._at_once[local]
        stream.on_reset(None)
        method = exchange.method
        if error is not None:
            local.close()
            if may_send_again(error, method):  # the idle connection had closed: ask again on another
                self._spawn(stream, exchange, self._forward(stream, exchange))
                return
            self._answer_any_failure(stream, exchange, error)
        else:
            response = local.response = future.result()
            try:
                pairs = self._response_pairs(stream, exchange, response)
                sent = self._answer_whole(stream, exchange, response, pairs)
            except Exception as exc:
                local.close()
                self._answer_any_failure(stream, exchange, exc)
            else:
                if not sent:  # a body still coming, or one to rewrite: the task path relays it
                    self._spawn(stream, exchange, self._respond(stream, exchange, local, pairs))
                    return
                local.close()
        self._ended(stream, exchange)

    def _answer_any_failure(self, stream: MuxStream, exchange: Exchange, error: BaseException) -> None:
        """``_answer_failure``; an error it does not expect (a bug) gets a logged reset, not a raise in a callback."""
        if isinstance(error, Exception) and self._answer_failure(stream, exchange, error):
            return
        log.error("forwarding %s %s failed", exchange.method, exchange.target[:200], exc_info=error)
        stream.reset(ErrorCode.LOCAL_ERROR, "The agent failed to forward the request (see its log)")
        exchange.finish(f"agent error: {error!r}")

    def _abandon(self, stream: MuxStream, exchange: Exchange, local: LocalExchange, why: str) -> None:
        """Give up a request sent at once: its local connection closes, which tells the local server."""
        if local.closed:
            return
        self._at_once.pop(local, None)
        local.close()
        self._ended(stream, exchange, why)

    # ------------------------------------------------------------ the task path
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
        await self._respond(stream, exchange, await self.local.request(head.method, head.target, headers, body))

    async def _respond(
        self, stream: MuxStream, exchange: Exchange, local: LocalExchange, pairs: list[tuple[str, str]] | None = None
    ) -> None:
        """Relay the local response (``pairs``: its headers, if worked out already); then free the connection."""
        try:
            response = local.response
            assert response is not None
            await self._relay_response(stream, exchange, response, pairs)
        finally:
            local.close()

    def _response_pairs(self, stream: MuxStream, exchange: Exchange, response: LocalResponse) -> list[tuple[str, str]]:
        """The local response's headers as the public client gets them (noted on the exchange)."""
        head = stream.request
        assert head is not None
        pairs = strip_hop_by_hop(response.headers)
        rewriter = self.rewriter
        if rewriter is not None:
            public = self.public_url()
            if public:
                rewritten = REWRITTEN_HEADERS
                pairs = [(k, rewriter.rewrite_header(v, public) if k.lower() in rewritten else v) for k, v in pairs]
        if self.cors:
            pairs = add_cors_headers(head.headers, pairs)
        exchange.status, exchange.reason, exchange.response_headers = response.status, response.reason, pairs
        return pairs

    def _answer_whole(
        self, stream: MuxStream, exchange: Exchange, response: LocalResponse, pairs: list[tuple[str, str]]
    ) -> bool:
        """Send a response that needs no waiting (no body, or all of it here and within credit): True if sent.

        False, with nothing sent: a body still arriving, one too big for the
        credit now, or one the URL rewriter must see.
        """
        head = stream.request
        assert head is not None
        status = response.status
        if head.method == "HEAD" or status in _BODYLESS or 100 <= status < 200:
            self._notify("response_started", exchange)
            stream.send_response(ResponseHead(status, exchange.reason, pairs), end_stream=True)
            return True
        if not response.complete or self._body_rewrite(head.target, pairs) is not None:
            return False
        if not stream.can_write_now(response.buffered):
            return False
        # The whole body came with the head (most small answers): one frame, END on it.
        self._notify("response_started", exchange)
        body = response.take_all()
        if not body:
            stream.send_response(ResponseHead(status, exchange.reason, pairs), end_stream=True)
            return True
        exchange.add_response_body(body)
        stream.send_response(ResponseHead(status, exchange.reason, pairs))
        stream.write_now(body, end=True)
        return True

    def _body_rewrite(self, target: str, pairs: list[tuple[str, str]]) -> tuple[UrlRewriter, str] | None:
        """The URL rewriter and the public URL, if the rewriter wants this response's body (not content-encoded)."""
        rewriter = self.rewriter
        if rewriter is None or not rewriter.applies_to(target) or not _identity(pairs):
            return None
        public = self.public_url()
        return (rewriter, public) if public else None

    async def _relay_response(
        self,
        stream: MuxStream,
        exchange: Exchange,
        response: LocalResponse,
        pairs: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send the local server's response head, then its body as it arrives (rewritten if asked)."""
        if pairs is None:
            pairs = self._response_pairs(stream, exchange, response)
        if self._answer_whole(stream, exchange, response, pairs):
            return
        head = stream.request
        assert head is not None
        status = response.status
        prefix = b""
        rewrite = self._body_rewrite(head.target, pairs)
        if rewrite is not None:
            rewriter, public = rewrite
            prefix, complete = await _read_up_to(response, MAX_REWRITE_BODY)
            if complete:
                document = rewriter.rewrite_body(head.target, prefix, public)
                pairs = [(k, v) for k, v in pairs if k.lower() != "content-length"]
                pairs.append(("Content-Length", str(len(document))))
                exchange.response_headers = pairs
                exchange.add_response_body(document)
                self._notify("response_started", exchange)
                stream.send_response(ResponseHead(status, exchange.reason, pairs))
                await stream.write(document, end=True)
                return
        self._notify("response_started", exchange)
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
        """Forward a websocket upgrade; aiohttp's errors become the pool's, which ``_answer_failure`` answers.

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

"""One stream <-> one request to the local server.

The agent only ever talks to its configured origin: the relay sends a path
(``/...`` or ``*``), never a URL, and anything else is refused, so a
compromised relay cannot make the agent fetch other hosts (no SSRF).
Bodies stream both ways and are never decompressed or re-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from relay_client.target import LocalTarget
from relay_protocol.driver import MuxStream, StreamError
from relay_protocol.errors import ErrorCode
from relay_protocol.heads import ResponseHead
from relay_protocol.httpheaders import WEBSOCKET_HANDSHAKE, header_tokens, strip_hop_by_hop
from relay_protocol.wsbridge import bridge
from relay_protocol.wsmessages import MAX_WS_MESSAGE

log = logging.getLogger("relay_client.forward")

#: Headers aiohttp adds on its own that the public client did not send.
_NO_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})

#: Connections kept open to the local server (0 would mean unlimited).
LOCAL_CONNECTION_LIMIT = 256


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def make_local_session(resolver: aiohttp.abc.AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The one HTTP client session every stream shares (keep-alive to the local server)."""
    connector = aiohttp.TCPConnector(limit=LOCAL_CONNECTION_LIMIT, resolver=resolver, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=tuple(_NO_AUTO_HEADERS),
        read_bufsize=2**18,
    )


class Forwarder:
    """Turns streams into local requests; one per agent process."""

    def __init__(self, target: LocalTarget, session: aiohttp.ClientSession) -> None:
        self.target = target
        self.session = session
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, stream: MuxStream) -> None:
        """Handle a new stream in its own task; a reset from the relay cancels it."""
        task = asyncio.create_task(self.handle(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        stream.on_reset(lambda _error: task.cancel())

    async def close(self) -> None:
        """Cancel streams still in flight."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def handle(self, stream: MuxStream) -> None:
        """Forward one request and stream its answer back."""
        head = stream.request
        assert head is not None
        started = time.monotonic()
        if not (head.target.startswith("/") or head.target == "*"):
            stream.reset(ErrorCode.PROTOCOL_ERROR, "request target must be a path")
            log.warning("refused request target %r: not a path", head.target[:200])
            return
        url = URL(self.target.origin + head.target, encoded=True)
        headers: CIMultiDict[str] = CIMultiDict(strip_hop_by_hop(head.headers))
        body = None if stream.at_eof or head.upgrade else _body(stream)
        status = 0
        try:
            if head.upgrade == "websocket":
                await self._websocket(stream, url, headers)
                return
            async with self.session.request(
                head.method, url, headers=headers, data=body, allow_redirects=False, compress=None
            ) as response:
                status = response.status
                pairs = strip_hop_by_hop((_decode(k), _decode(v)) for k, v in response.raw_headers)
                empty = head.method == "HEAD" or status in (204, 304) or 100 <= status < 200
                stream.send_response(ResponseHead(status, response.reason or "", pairs), end_stream=empty)
                if not empty:
                    async for chunk in response.content.iter_any():
                        await stream.write(chunk)
                    stream.end()
        except StreamError as exc:
            log.debug("stream %s ended by relay: %s", stream.id, exc)
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else str(exc)
            stream.reset(
                ErrorCode.LOCAL_UNREACHABLE,
                f"The agent could not reach the local server at {self.target.origin}: {reason}. Is it running?",
            )
            log.warning("local server %s unreachable: %s", self.target.origin, reason)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            message = str(exc) or type(exc).__name__
            stream.reset(ErrorCode.LOCAL_ERROR, f"The local server at {self.target.origin} failed: {message}")
            log.warning("%s %s: local server failed: %s", head.method, head.target[:200], message)
        except asyncio.CancelledError:
            # The relay reset the stream (public client gone) or the agent is stopping:
            # leaving the request context closes the local connection, which tells
            # the local server its request was abandoned.
            reset_by_relay = stream.error is not None
            stream.release(ErrorCode.CANCEL, "agent shutting down")
            if not reset_by_relay:
                raise
            log.debug("stream %s cancelled by the relay: %s", stream.id, stream.error)
        else:
            log.debug(
                "%s %s -> %d in %.1f ms", head.method, head.target[:200], status, (time.monotonic() - started) * 1000
            )
        finally:
            stream.release(ErrorCode.CANCEL, "request abandoned")


    async def _websocket(self, stream: MuxStream, url: URL, headers: CIMultiDict[str]) -> None:
        """Open the local websocket with the public client's offer; answer 101 only if it accepts."""
        pairs = list(headers.items())
        protocols = header_tokens(pairs, "Sec-WebSocket-Protocol")
        deflate = any(t.startswith("permessage-deflate") for t in header_tokens(pairs, "Sec-WebSocket-Extensions"))
        for name in WEBSOCKET_HANDSHAKE:
            headers.popall(name, None)
        try:
            ws = await self.session.ws_connect(
                url,
                protocols=protocols,
                headers=headers,
                autoping=False,
                autoclose=True,
                compress=15 if deflate else 0,
                max_msg_size=MAX_WS_MESSAGE,
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Refused (404, 403, no upgrade support): the public client gets that answer.
            answer = [(k, v) for k, v in (exc.headers or {}).items() if k.lower() not in WEBSOCKET_HANDSHAKE]
            stream.send_response(ResponseHead(exc.status or 502, exc.message or "", strip_hop_by_hop(answer)), True)
            return
        try:
            answer = []
            if ws.protocol:
                answer.append(("Sec-WebSocket-Protocol", ws.protocol))
            if ws.compress:
                answer.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
            stream.send_response(ResponseHead(101, "Switching Protocols", answer))
            await bridge(ws, stream)
        finally:
            await ws.close()


async def _body(stream: MuxStream) -> AsyncIterator[bytes]:
    """The public request body, chunk by chunk, as the relay delivers it."""
    while chunk := await stream.read():
        yield chunk

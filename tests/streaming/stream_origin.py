"""The local server for the streaming tests, run as its own process: ``python stream_origin.py --port P``.

It serves everything ``tests/support/origin.py`` serves (``/_o/...`` and the
describe-anything fallback, here with request bodies left compressed), plus
the ``/s/...`` endpoints streaming needs: a websocket echo that records the
close it receives, timestamped event streams (SSE, ndjson, untyped chunked),
a streamed gzip body, a huge body that counts the bytes it has handed to its
socket, requests that record being cancelled, and bodies cut off mid-way.
``/s/state?id=`` reports what the origin saw for an id.
Prints ``origin listening on 127.0.0.1:P`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import sys
import time
from pathlib import Path

from aiohttp import WSMsgType, hdrs, web

# tests/ on the path: this file runs as a script, next to (not inside) the support package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support import origin as base_origin  # noqa: E402
from support.payloads import chunks  # noqa: E402

#: Subprotocols the websocket endpoint speaks, in its order of preference.
WS_PROTOCOLS = ("chat.v2", "chat.v3")

#: Text a client sends to ask the origin to close: ``close:CODE:REASON``.
WS_CLOSE_COMMAND = "close:"

#: Longest any ``/s/hold`` may hold, and most events one ``/s/events`` sends.
MAX_HOLD = 30.0
MAX_EVENTS = 100

#: The plain text behind ``/s/gzip-stream``, its compressed form, and the piece size it is sent in.
GZIP_STREAM_TEXT = b"".join(f"line {i:05d} of the streamed gzip body\n".encode() for i in range(20000))
GZIP_STREAM_BODY = gzip.compress(GZIP_STREAM_TEXT, mtime=0)
GZIP_STREAM_PIECE = 4096

#: What the origin saw, by the ``id`` a test chose: written bytes, outcome, close codes.
STATE: dict[str, dict] = {}


def _state(ident: str) -> dict:
    return STATE.setdefault(ident, {"written": 0, "outcome": None, "started": time.time()})


def _headers(request: web.Request) -> dict[str, str]:
    return {"X-Origin-Path": request.raw_path}


class UntypedStreamResponse(web.StreamResponse):
    """A streamed response without the Content-Type aiohttp adds to every body by default."""

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self._headers.popall(hdrs.CONTENT_TYPE, None)


async def websocket_echo(request: web.Request) -> web.StreamResponse:
    """Echo text and binary; ``close:CODE:REASON`` makes us close; record the close the client sends."""
    state = _state(request.query.get("id", ""))
    ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, autoping=True, autoclose=False)
    await ws.prepare(request)
    state["protocol"] = ws.ws_protocol
    try:
        while True:
            msg = await ws.receive()
            if msg.type is WSMsgType.TEXT:
                if msg.data.startswith(WS_CLOSE_COMMAND):
                    _, code, reason = msg.data.split(":", 2)
                    state["outcome"] = "origin-closed"
                    await ws.close(code=int(code), message=reason.encode())
                    break
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.CLOSE:
                state["close_code"], state["close_reason"] = msg.data, msg.extra
                state["outcome"] = "client-closed"
                await ws.close()
                break
            else:  # CLOSING, CLOSED, ERROR: gone without a close frame
                state["outcome"] = f"lost:{msg.type.name}"
                break
    except asyncio.CancelledError:
        state["outcome"] = "cancelled"
        raise
    return ws


async def websocket_refuse(request: web.Request) -> web.StreamResponse:
    """A local server that will not upgrade."""
    return web.Response(status=403, text="no websockets for you", headers=_headers(request))


def _event(kind: str, index: int, total: int) -> bytes:
    line = json.dumps({"i": index, "n": total, "t": time.time()})
    return f"event: tick\nid: {index}\ndata: {line}\n\n".encode() if kind == "sse" else f"{line}\n".encode()


async def events(request: web.Request) -> web.StreamResponse:
    """``n`` events ``interval`` seconds apart, each stamped with the time it was written."""
    kind = request.query.get("kind", "sse")
    count = min(int(request.query.get("n", "10")), MAX_EVENTS)
    interval = float(request.query.get("interval", "0.1"))
    if kind == "untyped":
        response: web.StreamResponse = UntypedStreamResponse(headers=_headers(request))
    else:
        ctype = {"sse": "text/event-stream", "ndjson": "application/x-ndjson"}[kind]
        response = web.StreamResponse(headers={**_headers(request), "Content-Type": ctype, "Cache-Control": "no-cache"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    for index in range(count):
        if index:
            await asyncio.sleep(interval)
        await response.write(_event(kind, index, count))
    await response.write_eof()
    return response


async def gzip_stream(request: web.Request) -> web.StreamResponse:
    """A gzip body sent chunked, piece by piece, still compressed (its hash in a header)."""
    response = web.StreamResponse(
        headers={
            **_headers(request),
            "Content-Type": "text/plain",
            "Content-Encoding": "gzip",
            "X-Body-Sha256": hashlib.sha256(GZIP_STREAM_BODY).hexdigest(),
        }
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    for start in range(0, len(GZIP_STREAM_BODY), GZIP_STREAM_PIECE):
        await response.write(GZIP_STREAM_BODY[start : start + GZIP_STREAM_PIECE])
        await asyncio.sleep(0.001)
    await response.write_eof()
    return response


async def big(request: web.Request) -> web.StreamResponse:
    """``size`` deterministic bytes (seed 5) with a Content-Length; counts what the socket has taken."""
    state = _state(request.query["id"])
    size = int(request.query["size"])
    response = web.StreamResponse(headers={**_headers(request), "Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    try:
        for chunk in chunks(5, size):
            await response.write(chunk)  # returns once the socket buffer is below aiohttp's high-water mark
            state["written"] += len(chunk)
        await response.write_eof()
        state["outcome"] = "finished"
    except asyncio.CancelledError:
        state["outcome"] = "cancelled"
        raise
    except ConnectionError as exc:
        state["outcome"] = f"disconnected:{type(exc).__name__}"
        raise
    return response


async def hold(request: web.Request) -> web.StreamResponse:
    """Answer after ``s`` seconds; with ``stream=1`` send a line every 100 ms meanwhile. Records cancellation."""
    state = _state(request.query["id"])
    seconds = min(float(request.query.get("s", "5")), MAX_HOLD)
    state["outcome"] = "running"
    try:
        if request.query.get("stream") == "1":
            response = web.StreamResponse(headers={**_headers(request), "Content-Type": "application/x-ndjson"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                line = b'{"tick":%d}\n' % state["written"]
                await response.write(line)
                state["written"] += len(line)
                await asyncio.sleep(0.1)
            await response.write_eof()
        else:
            await asyncio.sleep(seconds)
            response = web.Response(text=f"held {seconds:g}", headers=_headers(request))
        state["outcome"] = "finished"
        return response
    except asyncio.CancelledError:
        state["outcome"] = "cancelled"
        raise
    except ConnectionError as exc:
        state["outcome"] = f"disconnected:{type(exc).__name__}"
        raise


async def cut(request: web.Request) -> web.StreamResponse:
    """Send ``sent`` of ``size`` bytes (Content-Length, or chunked with ``mode=chunked``), then drop the connection."""
    state = _state(request.query["id"])
    size, sent = int(request.query.get("size", "100000")), int(request.query.get("sent", "30000"))
    response = web.StreamResponse(headers={**_headers(request), "Content-Type": "application/octet-stream"})
    if request.query.get("mode") == "chunked":
        response.enable_chunked_encoding()
    else:
        response.content_length = size
    await response.prepare(request)
    body = b"".join(chunks(9, sent))
    await response.write(body)
    state["written"] = sent
    await asyncio.sleep(0.3)  # let the part reach the client before the cut
    assert request.transport is not None
    request.transport.abort()
    state["outcome"] = "cut"
    raise asyncio.CancelledError  # nothing more can be said on this connection


async def report(request: web.Request) -> web.StreamResponse:
    """What the origin saw for ``id`` (``{}`` if nothing)."""
    return web.json_response(STATE.get(request.query.get("id", ""), {}))


async def echo(request: web.Request) -> web.StreamResponse:
    """Full duplex: the response starts at once and each request chunk comes back as it arrives."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    async for chunk in request.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


ROUTES = {
    "ws": websocket_echo,
    "ws-refuse": websocket_refuse,
    "events": events,
    "gzip-stream": gzip_stream,
    "big": big,
    "hold": hold,
    "cut": cut,
    "state": report,
    "echo": echo,
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    """``/s/NAME`` to its endpoint; anything else to the shared e2e origin."""
    raw = request.raw_path
    if raw.startswith("/s/"):
        handler = ROUTES.get(raw[3:].split("?", 1)[0])
        if handler is not None:
            return await handler(request)
    return await base_origin.dispatch(request)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    # auto_decompress=False: a gzip request body is described exactly as it arrived.
    # handler_cancellation=True: a dropped connection cancels its handler, which we record.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"origin listening on 127.0.0.1:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    try:
        asyncio.run(main(parser.parse_args().port))
    except KeyboardInterrupt:
        pass

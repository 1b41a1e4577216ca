"""Local server for the security tests, run as its own process: ``python guard_origin.py --port P``.

- ``/upload?id=``: reads the request body and records how it ended (``complete``
  with its length, or ``aborted``), so a test can see the relay reset a stream;
- ``/state?id=``: that record as JSON (asked directly, not through the tunnel);
- ``/slow?s=``: an event stream trickling for s seconds;
- ``/hop``: a response full of hop-by-hop and connection-specific headers;
- anything else: the request described back as JSON (method, raw path, raw headers, body length).

Prints ``origin listening on 127.0.0.1:P`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

#: What /upload saw, by the id the test chose.
STATE: dict[str, dict] = {}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


async def upload(request: web.Request) -> web.StreamResponse:
    """Read the whole body, recording progress and whether it ended cleanly (``early=1``: answer first)."""
    record = STATE.setdefault(request.query.get("id", ""), {"outcome": "reading", "received": 0})
    early = None
    if request.query.get("early"):
        early = web.StreamResponse()
        early.enable_chunked_encoding()
        await early.prepare(request)
        await early.write(b"answering before the body is read\n")
    try:
        async for chunk in request.content.iter_any():
            record["received"] += len(chunk)
    except (ConnectionError, asyncio.CancelledError, Exception) as exc:  # noqa: BLE001 - any end but EOF is an abort
        record["outcome"] = "aborted"
        record["error"] = type(exc).__name__
        raise
    if request.content.is_eof() and request.protocol.transport is not None:
        record["outcome"] = "complete"
    else:
        record["outcome"] = "aborted"
    if early is not None:
        await early.write_eof()
        return early
    return web.json_response(record)


async def slow(request: web.Request) -> web.StreamResponse:
    """A response body trickling for ``s`` seconds (one line every 0.25 s), like an event stream."""
    seconds = min(float(request.query.get("s", "3")), 30.0)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    deadline = asyncio.get_running_loop().time() + seconds
    n = 0
    while asyncio.get_running_loop().time() < deadline:
        await response.write(f"data: {n}\n\n".encode())
        n += 1
        await asyncio.sleep(0.25)
    await response.write(b"data: end\n\n")
    await response.write_eof()
    return response


async def state(request: web.Request) -> web.StreamResponse:
    """The record of one /upload id (or null)."""
    return web.json_response(STATE.get(request.query.get("id", "")))


async def hop(request: web.Request) -> web.StreamResponse:
    """A response carrying every kind of header a proxy must not pass on."""
    response = web.Response(text="hop")
    for name, value in [
        ("Connection", "X-Named-By-Connection, close"),
        ("X-Named-By-Connection", "secret"),
        ("Keep-Alive", "timeout=99"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authenticate", 'Basic realm="x"'),
        ("Proxy-Connection", "keep-alive"),
        ("X-End-To-End", "kept"),
    ]:
        response.headers.add(name, value)
    return response


async def describe(request: web.Request) -> web.StreamResponse:
    """What arrived: method, raw path, raw headers in order, body length."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "raw_path": request.raw_path,
            "headers": [[_text(k), _text(v)] for k, v in request.raw_headers],
            "body_length": len(body),
        }
    )


ROUTES = {"/upload": upload, "/state": state, "/hop": hop, "/slow": slow}


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Route by path; everything unknown is described."""
    handler = ROUTES.get(request.path, describe)
    return await handler(request)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
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

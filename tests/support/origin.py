"""The local HTTP server behind the tunnel, run as its own process: ``python origin.py --port P``.

Every path not under ``/_o/`` is described back as JSON (method, raw path,
raw headers in order, body), so tests can see exactly what arrived.  The
``/_o/...`` endpoints produce the responses the tests need: exact bodies,
large and chunked streams, odd statuses, repeated headers, gzip, delays.
Prints ``origin listening on 127.0.0.1:P`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from payloads import GZIP_TEXT, chunks, payload  # noqa: E402  (sibling module; this file runs as a script)

#: Longest a ``/_o/drip`` response waits for its release before finishing anyway.
DRIP_GATE_TIMEOUT = 30.0

#: Longest ``/_o/sleep`` may be asked to sleep.
MAX_SLEEP = 30.0

STARTED: set[str] = set()
GATES: dict[str, asyncio.Event] = {}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape").encode("utf-8", "backslashreplace").decode()


def _raw_headers(request: web.BaseRequest) -> list[list[str]]:
    return [[_text(k), _text(v)] for k, v in request.raw_headers]


def _origin_headers(request: web.BaseRequest) -> dict[str, str]:
    return {"X-Origin-Method": request.method, "X-Origin-Raw-Path": request.raw_path.encode("utf-8", "surrogateescape").hex()}


async def describe(request: web.Request) -> web.StreamResponse:
    """JSON: everything the request carried."""
    body = await request.read()
    info = {
        "method": request.method,
        "raw_path": request.raw_path,
        "version": f"{request.version.major}.{request.version.minor}",
        "headers": _raw_headers(request),
        "body_b64": base64.b64encode(body).decode(),
        "body_length": len(body),
        "body_sha256": hashlib.sha256(body).hexdigest(),
    }
    return web.json_response(info, headers=_origin_headers(request))


async def mirror(request: web.Request) -> web.StreamResponse:
    """The request body back, byte for byte, tagged with the method."""
    body = await request.read()
    return web.Response(body=body, content_type="application/octet-stream", headers=_origin_headers(request))


async def fixed_bytes(request: web.Request) -> web.StreamResponse:
    """``n`` deterministic bytes (a known Content-Length for HEAD checks)."""
    n = int(request.query.get("n", "1234"))
    headers = {**_origin_headers(request), "ETag": f'"bytes-{n}"'}
    return web.Response(body=payload(7, n), content_type="application/octet-stream", headers=headers)


async def download(request: web.Request) -> web.StreamResponse:
    """``size`` pseudo-random bytes for ``seed``, streamed with a Content-Length."""
    size, seed = int(request.query["size"]), int(request.query.get("seed", "1"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    for chunk in chunks(seed, size):
        await response.write(chunk)
    await response.write_eof()
    return response


async def chunked(request: web.Request) -> web.StreamResponse:
    """``size`` pseudo-random bytes in uneven pieces, chunked (no Content-Length)."""
    size, seed = int(request.query["size"]), int(request.query.get("seed", "1"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    pieces = (1, 1000, 65537, 3)
    turn = 0
    for chunk in chunks(seed, size):
        view = memoryview(chunk)
        while view:
            n = pieces[turn % len(pieces)]
            turn += 1
            await response.write(bytes(view[:n]))
            view = view[n:]
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.StreamResponse:
    """Hash the request body as it streams in; report what framing it came with."""
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_chunked(1 << 16):
        digest.update(chunk)
        length += len(chunk)
    info = {
        "method": request.method,
        "sha256": digest.hexdigest(),
        "length": length,
        "content_length": request.headers.get("Content-Length"),
        "transfer_encoding": request.headers.get("Transfer-Encoding"),
        "expect": request.headers.get("Expect"),
    }
    return web.json_response(info, headers=_origin_headers(request))


async def status(request: web.Request) -> web.StreamResponse:
    """Any status with any reason phrase."""
    code = int(request.query.get("code", "299"))
    reason = request.query.get("reason", "Custom Reason")
    if code in (204, 304):  # these never carry a body
        return web.Response(status=code, reason=reason, headers={**_origin_headers(request), "ETag": '"v1"'})
    return web.Response(status=code, reason=reason, text=f"status {code}", headers=_origin_headers(request))


async def cookies(request: web.Request) -> web.StreamResponse:
    """Three Set-Cookie headers (one with a comma inside its Expires date)."""
    response = web.Response(text="cookies", headers=_origin_headers(request))
    response.headers.add("Set-Cookie", "first=1; Path=/")
    response.headers.add("Set-Cookie", "second=2; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly")
    response.headers.add("Set-Cookie", "third=3; Path=/x; SameSite=Lax")
    return response


async def gzipped(request: web.Request) -> web.StreamResponse:
    """A gzip-encoded body that must reach the client still compressed."""
    body = gzip.compress(GZIP_TEXT, mtime=0)
    headers = {
        **_origin_headers(request),
        "Content-Encoding": "gzip",
        "Vary": "Accept-Encoding",
        "X-Origin-Sha256": hashlib.sha256(body).hexdigest(),
    }
    return web.Response(body=body, content_type="text/plain", headers=headers)


async def sleep(request: web.Request) -> web.StreamResponse:
    """Answer after ``s`` seconds; ``id`` is recorded as started right away."""
    seconds = min(float(request.query.get("s", "3")), MAX_SLEEP)
    STARTED.add(request.query.get("id", ""))
    await asyncio.sleep(seconds)
    return web.Response(text=f"slept {seconds:g}", headers=_origin_headers(request))


async def seen(request: web.Request) -> web.StreamResponse:
    """Whether a ``/_o/sleep`` or ``/_o/drip`` with this id has started."""
    return web.json_response({"started": request.query.get("id", "") in STARTED})


async def drip(request: web.Request) -> web.StreamResponse:
    """Send ``first``, wait for ``/_o/release?id=``, then send ``second`` (unknown length)."""
    ident = request.query["id"]
    gate = GATES.setdefault(ident, asyncio.Event())
    STARTED.add(ident)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"part":"first"}\n')
    try:
        await asyncio.wait_for(gate.wait(), DRIP_GATE_TIMEOUT)
        await response.write(b'{"part":"second"}\n')
    except asyncio.TimeoutError:
        await response.write(b'{"part":"timed-out"}\n')
    await response.write_eof()
    return response


async def release(request: web.Request) -> web.StreamResponse:
    """Let the ``/_o/drip`` with this id finish."""
    GATES.setdefault(request.query["id"], asyncio.Event()).set()
    return web.Response(text="released")


async def hop_response(request: web.Request) -> web.StreamResponse:
    """A response carrying hop-by-hop headers the relay must not pass on."""
    response = web.Response(text="hop", headers=_origin_headers(request))
    response.headers["Connection"] = "X-Resp-Hop"
    response.headers["X-Resp-Hop"] = "must-not-arrive"
    response.headers["Keep-Alive"] = "timeout=99"
    response.headers["Proxy-Authenticate"] = 'Basic realm="x"'
    response.headers["X-Resp-Kept"] = "kept"
    return response


ROUTES = {
    "mirror": mirror,
    "bytes": fixed_bytes,
    "download": download,
    "chunked": chunked,
    "upload": upload,
    "status": status,
    "cookies": cookies,
    "gzip": gzipped,
    "sleep": sleep,
    "seen": seen,
    "drip": drip,
    "release": release,
    "hop-response": hop_response,
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    """``/_o/NAME`` to its endpoint; every other path is described."""
    raw = request.raw_path
    if raw.startswith("/_o/"):
        handler = ROUTES.get(raw[4:].split("?", 1)[0])
        if handler is not None:
            return await handler(request)
    return await describe(request)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, access_log=None)
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

"""Replay a captured request against the local server, optionally edited.

A replay goes only to the agent's configured origin (the path is appended to
it and the result is checked to still be that origin), through the agent's
own session, with the same ``--host-header`` policy as live traffic. It is
recorded as a new ``Exchange`` with ``replay=True`` and announced to every
observer, so it shows in the history and on the console. A request whose
captured body was truncated cannot be replayed as captured: the caller must
supply a body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from relay_client.exchange import Exchange, Observer
from relay_client.inspector.host import InspectorHost
from relay_protocol.httpheaders import strip_hop_by_hop

log = logging.getLogger("relay_client.inspector")

#: Seconds the API waits for a replay to finish before answering anyway (it goes on in the background).
REPLAY_WAIT = 30.0

#: Seconds a replay may take in all; a longer (streaming) answer is cut there.
REPLAY_TIMEOUT = 300.0

#: Seconds to connect to the local server.
REPLAY_CONNECT_TIMEOUT = 10.0

#: Longest edited path accepted.
MAX_PATH = 8192

#: Largest edited body accepted (bytes, after decoding).
MAX_OVERRIDE_BODY = 16 * 1024 * 1024

_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")

#: Headers recomputed for the replayed body rather than copied.
_FRAMING = frozenset({"content-length", "transfer-encoding", "expect"})


def _text(raw: bytes) -> str:
    """Header bytes as the forwarder decodes them (UTF-8, else Latin-1)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class ReplayError(Exception):
    """A replay request the inspector refuses; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Overrides:
    """Edits to apply to the captured request (None: keep the captured value)."""

    method: str | None = None
    path: str | None = None
    headers: list[tuple[str, str]] | None = None
    body: bytes | None = None


def _parse_headers(value: Any) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for name, values in value.items():
            for item in values if isinstance(values, list) else [values]:
                pairs.append((name, item))
    elif isinstance(value, list):
        for item in value:
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise ReplayError(400, "headers: give {Name: [values]} or a list of [name, value] pairs")
            pairs.append((item[0], item[1]))
    else:
        raise ReplayError(400, "headers: give {Name: [values]} or a list of [name, value] pairs")
    for name, item in pairs:
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise ReplayError(400, f"headers: {name!r} is not a valid header name")
        if not isinstance(item, str) or any(c in item for c in "\r\n\0"):
            raise ReplayError(400, f"headers: the value of {name} must be text on one line")
    return pairs


def parse_overrides(payload: dict[str, Any]) -> Overrides:
    """Edits from the replay request's JSON (``method``, ``path``, ``headers``, ``body`` or ``body_base64``)."""
    out = Overrides()
    method = payload.get("method")
    if method is not None:
        if not isinstance(method, str) or not _METHOD.match(method):
            raise ReplayError(400, f"method: {method!r} is not an HTTP method")
        out.method = method
    path = payload.get("path")
    if path is not None:
        if not isinstance(path, str) or not path.startswith("/") or len(path) > MAX_PATH:
            raise ReplayError(400, "path: give a path starting with '/' (replays only go to the local server)")
        if any(ord(c) <= 0x20 or ord(c) == 0x7F or c == "#" for c in path):
            raise ReplayError(400, "path: spaces, control characters and '#' must be percent-encoded")
        out.path = path
    if payload.get("headers") is not None:
        out.headers = _parse_headers(payload["headers"])
    if payload.get("body_base64") is not None:
        try:
            out.body = base64.b64decode(str(payload["body_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise ReplayError(400, "body_base64: not valid base64") from None
    elif payload.get("body") is not None:
        if not isinstance(payload["body"], str):
            raise ReplayError(400, "body: give text (or body_base64 for bytes)")
        out.body = payload["body"].encode("utf-8")
    if out.body is not None and len(out.body) > MAX_OVERRIDE_BODY:
        raise ReplayError(413, f"body: at most {MAX_OVERRIDE_BODY} bytes")
    return out


def _outgoing_headers(headers: list[tuple[str, str]], policy: str, host_port: str, body: bytes) -> list[tuple[str, str]]:
    """The captured headers minus hop-by-hop and framing, with the Host policy and a fresh Content-Length."""
    out = [(k, v) for k, v in strip_hop_by_hop(headers) if k.lower() not in _FRAMING]
    if policy != "preserve":
        out = [(k, v) for k, v in out if k.lower() != "host"]
        out.insert(0, ("Host", host_port if policy == "rewrite" else policy))
    if body:
        out.append(("Content-Length", str(len(body))))
    return out


class Replayer:
    """Runs replays for one agent and records them."""

    def __init__(self, host: InspectorHost, recorder: Observer) -> None:
        self.host = host
        self.recorder = recorder
        self._tasks: set[asyncio.Task[None]] = set()

    def prepare(self, original: Exchange, overrides: Overrides) -> tuple[Exchange, bytes]:
        """The new exchange and the body to send; ReplayError if it cannot be replayed."""
        if original.websocket:
            raise ReplayError(400, "websocket sessions cannot be replayed")
        if not (overrides.path or original.target).startswith("/"):
            raise ReplayError(400, f"only requests for a path can be replayed, not {original.target[:100]!r}")
        if overrides.body is None and not original.request_complete and original.duration is None:
            raise ReplayError(409, "the request body is still arriving; replay it once it has been received")
        if overrides.body is None and original.request_truncated:
            raise ReplayError(
                400,
                f"the captured request body is truncated ({len(original.request_body)} of "
                f"{original.request_bytes} bytes kept), so it cannot be replayed as captured; "
                "replay it with an edited body instead",
            )
        body = overrides.body if overrides.body is not None else bytes(original.request_body)
        config = self.host.config
        headers = overrides.headers if overrides.headers is not None else original.request_headers
        exchange = Exchange(
            overrides.method or original.method,
            overrides.path or original.target,
            _outgoing_headers(headers, config.host_header, config.target.host_port, body),
            original.remote_addr,
            capture_limit=original.capture_limit,
        )
        exchange.replay = True
        exchange.add_request_body(body)
        return exchange, body

    async def replay(self, original: Exchange, overrides: Overrides) -> Exchange:
        """Send the replay; return once it finished or after REPLAY_WAIT (it then goes on)."""
        exchange, body = self.prepare(original, overrides)
        session = self.host.local_session
        if session is None or session.closed:
            raise ReplayError(503, "the agent is not running, so there is no local session to replay through")
        origin = URL(self.host.config.target.origin)
        url = URL(self.host.config.target.origin + exchange.target, encoded=True)
        if url.origin() != origin.origin():
            raise ReplayError(400, "path: replays only go to the local server")
        self._notify("request_started", exchange)
        task = asyncio.create_task(self._send(session, url, exchange, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            await asyncio.wait_for(asyncio.shield(task), REPLAY_WAIT)
        except TimeoutError:
            pass
        return exchange

    async def _send(self, session: aiohttp.ClientSession, url: URL, exchange: Exchange, body: bytes) -> None:
        timeout = aiohttp.ClientTimeout(total=REPLAY_TIMEOUT, sock_connect=REPLAY_CONNECT_TIMEOUT)
        try:
            async with session.request(
                exchange.method,
                url,
                headers=CIMultiDict(exchange.request_headers),
                data=body or None,
                allow_redirects=False,
                compress=None,
                timeout=timeout,
            ) as response:
                exchange.status, exchange.reason = response.status, response.reason or ""
                exchange.response_headers = strip_hop_by_hop((_text(k), _text(v)) for k, v in response.raw_headers)
                self._notify("response_started", exchange)
                async for chunk in response.content.iter_any():
                    exchange.add_response_body(chunk)
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else str(exc)
            exchange.finish(f"local server unreachable: {reason}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            exchange.finish(f"local server failed: {str(exc) or type(exc).__name__}")
        except asyncio.CancelledError:
            exchange.finish("cancelled: inspector stopping")
            self._notify("finished", exchange)
            raise
        exchange.finish()
        self._notify("finished", exchange)

    async def close(self) -> None:
        """Cancel replays still running."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _observers(self) -> Sequence[Observer]:
        observers = list(self.host.observers)
        if not any(o is self.recorder for o in observers):
            observers.append(self.recorder)
        return observers

    def _notify(self, event: str, exchange: Exchange) -> None:
        for observer in self._observers():
            try:
                getattr(observer, event)(exchange)
            except Exception:  # an observer bug must not break the replay
                log.exception("observer %r failed on %s", observer, event)

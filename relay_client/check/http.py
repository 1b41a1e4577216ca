"""The one HTTP client of ``check``: loopback-aware resolving, a timeout and a size bound on every read.

aiohttp's exceptions are translated here, once, into ``FetchError`` whose
message is the line the report shows ("cannot connect to ...: connection
refused", "no answer within 10s"), so a dead URL is a clear failure, never a
traceback.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Self
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from relay_client import __version__
from relay_client.check.limits import CONNECT_TIMEOUT, MAX_REDIRECTS
from relay_client.resolver import LoopbackResolver

#: What ``check`` calls itself on the wire.
USER_AGENT = f"localrelay-check/{__version__}"

#: aiohttp 3.11+ tells a failed name lookup apart from a refused connection.
_DNS_ERROR: type[aiohttp.ClientConnectorError] | None = getattr(aiohttp, "ClientConnectorDNSError", None)

_DOWN_FIX = "make sure the tunnel is up (relay-client http PORT) and the local server answers"


class FetchError(Exception):
    """No usable HTTP answer; ``str()`` is one line for the report, ``fix`` says what to try."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.fix = fix


class TooLarge(FetchError):
    """The answer was bigger than the bound for what was asked."""


@dataclass
class Answer:
    """A complete HTTP answer, body read (within its bound)."""

    method: str
    url: str
    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes
    elapsed: float

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters."""
        return media_type(self.headers.get("Content-Type", ""))

    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.body.decode("utf-8", "replace")


def media_type(header: str) -> str:
    """``application/json`` out of ``Application/JSON; charset=utf-8``."""
    return header.split(";", 1)[0].strip().lower()


@dataclass
class Stream:
    """An HTTP answer whose body is read chunk by chunk, each chunk stamped with its arrival time."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    #: ``time.monotonic()`` when the request was sent and when the head arrived.
    sent_at: float
    head_at: float
    _response: aiohttp.ClientResponse
    _limit: int
    _deadline: float
    _describe: str
    received: int = field(default=0)

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters."""
        return media_type(self.headers.get("Content-Type", ""))

    async def next_chunk(self, until: float | None = None) -> tuple[float, bytes] | None:
        """The next ``(arrival time, bytes)``; ``bytes`` is empty at the end of the body.

        None when ``until`` (a ``time.monotonic()`` value) passes first; the
        request's own deadline passing is a ``FetchError``.
        """
        while True:
            now = time.monotonic()
            if until is not None and now >= until:
                return None
            if now >= self._deadline:
                raise FetchError(f"{self._describe}: the body did not finish within the timeout", _DOWN_FIX)
            stop = self._deadline if until is None else min(until, self._deadline)
            try:
                chunk = await asyncio.wait_for(self._response.content.readany(), stop - now)
            except TimeoutError:
                continue
            except aiohttp.ClientError as exc:
                raise translate(exc, self._describe) from None
            self.received += len(chunk)
            if self.received > self._limit:
                raise TooLarge(f"{self._describe}: the answer passed {self._limit} bytes; stopped reading")
            return time.monotonic(), chunk

    async def read(self) -> bytes:
        """The rest of the body (within the bound and the deadline)."""
        parts: list[bytes] = []
        while True:
            item = await self.next_chunk()
            if item is None or not item[1]:
                return b"".join(parts)
            parts.append(item[1])


class Fetcher:
    """An aiohttp session for one ``check`` run: *.localhost to loopback, ``--cacert``, bounded everything."""

    def __init__(self, timeout: float, cacert: str | None = None) -> None:
        self.timeout = timeout
        self.cacert = cacert
        self._session: aiohttp.ClientSession | None = None

    def _ssl_context(self) -> ssl.SSLContext:
        # The default context honours SSL_CERT_FILE; --cacert adds one private CA.
        context = ssl.create_default_context()
        if self.cacert:
            try:
                context.load_verify_locations(cafile=self.cacert)
            except (OSError, ssl.SSLError) as exc:
                raise FetchError(f"--cacert {self.cacert}: {exc}", "pass a readable PEM file with the CA certificate") from None
        return context

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=self._ssl_context(), limit=8)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=min(CONNECT_TIMEOUT, self.timeout)),
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open session (inside ``async with``)."""
        if self._session is None:
            raise RuntimeError("Fetcher used outside 'async with'")
        return self._session

    async def fetch(
        self,
        method: str,
        url: str,
        *,
        limit: int,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        follow_redirects: bool = True,
    ) -> Answer:
        """One request, its whole body read within ``limit`` bytes and ``self.timeout`` seconds."""
        started = time.monotonic()
        async with self.open(method, url, limit=limit, headers=headers, body=body, follow_redirects=follow_redirects) as stream:
            data = await stream.read()
            return Answer(method, url, stream.status, stream.reason, stream.headers, data, time.monotonic() - started)

    @asynccontextmanager
    async def open(
        self,
        method: str,
        url: str,
        *,
        limit: int,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        follow_redirects: bool = True,
    ) -> AsyncIterator[Stream]:
        """Send a request and hand back its head; the body is read through ``Stream.next_chunk``."""
        describe = f"{method} {url}"
        sent_at = time.monotonic()
        deadline = sent_at + self.timeout
        try:
            response = await asyncio.wait_for(
                self.session.request(
                    method,
                    url,
                    headers=CIMultiDict(headers or {}),
                    data=body,
                    allow_redirects=follow_redirects,
                    max_redirects=MAX_REDIRECTS,
                ),
                self.timeout,
            )
        except TimeoutError:
            raise FetchError(f"{describe}: no answer within {self.timeout:g}s", _DOWN_FIX) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise translate(exc, describe) from None
        try:
            yield Stream(
                status=response.status,
                reason=response.reason or "",
                headers=response.headers,
                sent_at=sent_at,
                head_at=time.monotonic(),
                _response=response,
                _limit=limit,
                _deadline=deadline,
                _describe=describe,
            )
        finally:
            response.close()


def translate(exc: BaseException, describe: str) -> FetchError:
    """An aiohttp or socket exception as one report line."""
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or str(exc.certificate_error)
        return FetchError(
            f"{describe}: the server's certificate is not trusted ({reason})",
            "use a certificate from a public CA, or pass --cacert FILE for a private one",
        )
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError | ssl.SSLError):
        return FetchError(f"{describe}: TLS handshake failed ({exc})", "check the server's TLS setup (or use http://)")
    if _DNS_ERROR is not None and isinstance(exc, _DNS_ERROR):
        return FetchError(f"{describe}: cannot resolve {exc.host}", "check the host name (and its DNS record)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        reason = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
        return FetchError(f"{describe}: cannot connect to {exc.host}:{exc.port} ({reason.lower()})", _DOWN_FIX)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return FetchError(f"{describe}: more than {MAX_REDIRECTS} redirects", "point the URL at the final location")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return FetchError(f"{describe}: the server closed the connection without answering", _DOWN_FIX)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return FetchError(f"{describe}: the answer's body was cut short ({exc})", "check the server's logs")
    if isinstance(exc, aiohttp.InvalidURL):
        return FetchError(f"{describe}: invalid URL", "give an absolute http(s) URL")
    if isinstance(exc, aiohttp.ClientResponseError):
        return FetchError(f"{describe}: malformed answer ({exc.message})", "check the server's logs")
    if isinstance(exc, asyncio.TimeoutError):
        return FetchError(f"{describe}: no answer in time", _DOWN_FIX)
    return FetchError(f"{describe}: {type(exc).__name__}: {exc}", _DOWN_FIX)


def explain_status(answer_status: int, headers: Mapping[str, str], body: bytes, url: str) -> str:
    """Why an error status probably happened, and what to do (empty when nothing specific is known)."""
    relay_error = headers.get("X-Relay-Error", "")
    if relay_error == "tunnel-offline":
        return "the relay has no agent for this name: start one with relay-client http PORT --subdomain NAME"
    if relay_error in ("local-unreachable", "local-error"):
        return "the agent is up but your local server did not answer: start it (or check the port given to relay-client http)"
    if relay_error == "auth-required":
        return "the tunnel has --basic-auth; the plugin host cannot log in there, so remove it for registration"
    if relay_error == "ip-not-allowed":
        return "the tunnel has --allow-ip; allow the plugin host's addresses or remove the restriction"
    if answer_status in (401, 407):
        return "the host fetches this without credentials: serve it publicly (keep auth on the API calls only)"
    text = body[:512].decode("utf-8", "replace").lower()
    if answer_status == 421 or (answer_status in (400, 403) and "host" in text and "invalid" in text):
        return (
            "your local server rejects the public Host header "
            f"({urlsplit(url).netloc}): run the agent with --host-header rewrite, or allow that host in the server"
        )
    return ""

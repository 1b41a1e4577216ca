"""RFC 8555 over aiohttp: directory, nonces, signed POSTs, problem documents, polling.

Every request is a signed POST (resources are read with POST-as-GET).  Nonces
come from the previous response's ``Replay-Nonce`` or ``newNonce``; a
``badNonce`` problem is retried with the fresh nonce it carries.  Network and
TLS failures and problem documents all become ``AcmeError`` with one readable
sentence, translated here once.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from relay_server import __version__
from relay_server.tls.acme.jws import AccountKey
from relay_server.tls.ondemand import IssueError

log = logging.getLogger("relay_server.tls.acme")

#: Seconds for one HTTP exchange with the ACME server.
REQUEST_TIMEOUT = 30.0

#: Times a request is re-sent after a ``badNonce`` problem.
BAD_NONCE_RETRIES = 5

#: Largest response body read from the ACME server (a certificate chain is a few KB).
MAX_RESPONSE = 1024 * 1024

#: Poll interval when the server gives no Retry-After, and the most we honour.
POLL_INTERVAL = 1.0
MAX_RETRY_AFTER = 30.0

_PROBLEM = "urn:ietf:params:acme:error:"


class AcmeError(IssueError):
    """The ACME server refused or could not be reached; ``problem`` is its error type, if any."""

    def __init__(self, message: str, problem: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.status = status


@dataclass(slots=True)
class Reply:
    """One response from the ACME server."""

    status: int
    headers: dict[str, str]
    body: bytes
    links: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        """The body as a JSON object."""
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            raise AcmeError(f"ACME server sent invalid JSON (HTTP {self.status})") from None
        if not isinstance(value, dict):
            raise AcmeError("ACME server sent a JSON value that is not an object")
        return value

    @property
    def location(self) -> str | None:
        """The Location header (account and order URLs)."""
        return self.headers.get("location")

    def retry_after(self, default: float = POLL_INTERVAL) -> float:
        """Seconds the server asks us to wait before polling again (bounded)."""
        value = self.headers.get("retry-after")
        if not value:
            return default
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
            seconds = parsed.timestamp() - time.time() if parsed else default
        return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _problem_text(reply: Reply) -> tuple[str, str | None]:
    try:
        doc = json.loads(reply.body or b"{}")
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    kind = str(doc.get("type", "")) or None
    detail = str(doc.get("detail", "")) or reply.body[:200].decode("utf-8", "replace")
    for sub in doc.get("subproblems") or []:
        if isinstance(sub, dict) and sub.get("detail"):
            detail += f"; {sub.get('identifier', {}).get('value', '')}: {sub['detail']}"
    short = kind.removeprefix(_PROBLEM) if kind else f"HTTP {reply.status}"
    return f"{short}: {detail}", kind


class AcmeClient:
    """One ACME account at one directory URL."""

    def __init__(
        self,
        directory_url: str,
        key: AccountKey,
        *,
        ssl_context: ssl.SSLContext,
        email: str | None = None,
        account_url: str | None = None,
        on_account: Callable[[str], None] | None = None,
    ) -> None:
        self.directory_url = directory_url
        self.key = key
        self.email = email
        self.account_url = account_url
        self._on_account = on_account
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._directory: dict[str, Any] | None = None
        self._nonces: list[str] = []
        self._account_lock = asyncio.Lock()

    # ------------------------------------------------------------- transport
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=4),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                headers={"User-Agent": f"localrelay/{__version__} (acme)"},
            )
        return self._session

    async def _request(self, method: str, url: str, body: bytes | None = None, accept: str | None = None) -> Reply:
        headers = {"Content-Type": "application/jose+json"} if body is not None else {}
        if accept:
            headers["Accept"] = accept
        try:
            async with self._http().request(method, url, data=body, headers=headers, allow_redirects=False) as response:
                data = await response.content.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise AcmeError(f"ACME server response from {url} is larger than {MAX_RESPONSE} bytes")
                reply = Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, data)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise AcmeError(
                f"ACME server {url} presented a certificate we do not trust ({exc.certificate_error}); "
                "pass --acme-ca FILE for a private CA"
            ) from None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise AcmeError(f"cannot reach ACME server at {url}: {exc or type(exc).__name__}") from None
        nonce = reply.headers.get("replay-nonce")
        if nonce:
            self._nonces.append(nonce)
        return reply

    async def directory(self) -> dict[str, Any]:
        """The directory object (fetched once)."""
        if self._directory is None:
            reply = await self._request("GET", self.directory_url)
            if reply.status != 200:
                raise AcmeError(f"ACME directory {self.directory_url} answered HTTP {reply.status}")
            directory = reply.json()
            for needed in ("newNonce", "newAccount", "newOrder"):
                if not isinstance(directory.get(needed), str):
                    raise AcmeError(f"{self.directory_url} is not an ACME directory (no {needed})")
            self._directory = directory
        return self._directory

    async def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        url = (await self.directory())["newNonce"]
        reply = await self._request("HEAD", url)
        if not self._nonces:
            raise AcmeError(f"ACME server gave no Replay-Nonce at {url} (HTTP {reply.status})")
        return self._nonces.pop()

    async def post(self, url: str, payload: Any | None, *, use_kid: bool = True, accept: str | None = None) -> Reply:
        """A signed POST (``payload`` None: POST-as-GET); AcmeError for any problem document."""
        kid = None
        if use_kid:
            kid = await self.ensure_account()
        reregistered = False
        for _ in range(BAD_NONCE_RETRIES + 1):
            body = self.key.sign(url, await self._nonce(), payload, kid)
            reply = await self._request("POST", url, body, accept)
            if reply.status < 400:
                return reply
            message, kind = _problem_text(reply)
            if kind == _PROBLEM + "badNonce":
                log.debug("ACME: bad nonce at %s; retrying", url)
                continue
            if kind == _PROBLEM + "accountDoesNotExist" and use_kid and not reregistered:
                # The server forgot us (a test CA restarted, an account deleted): register again, once.
                log.warning("ACME account %s is unknown to the server; registering again", kid)
                self.account_url = None
                kid = await self.ensure_account()
                reregistered = True
                continue
            raise AcmeError(message, kind, reply.status)
        raise AcmeError(f"ACME server kept rejecting our nonces at {url}", _PROBLEM + "badNonce")

    # ------------------------------------------------------------- resources
    async def ensure_account(self) -> str:
        """The account URL, registering the key (agreeing to the terms of service) on first use."""
        if self.account_url:
            return self.account_url
        async with self._account_lock:
            if self.account_url:
                return self.account_url
            directory = await self.directory()
            payload: dict[str, Any] = {"termsOfServiceAgreed": True}
            if self.email:
                payload["contact"] = [f"mailto:{self.email}"]
            reply = await self.post(directory["newAccount"], payload, use_kid=False)
            if not reply.location:
                raise AcmeError("ACME server created an account but sent no Location")
            status = reply.json().get("status", "valid")
            if status != "valid":
                raise AcmeError(f"ACME account {reply.location} is {status}")
            self.account_url = reply.location
            if self._on_account is not None:
                self._on_account(reply.location)
            log.info("ACME account %s at %s", "created" if reply.status == 201 else "found", self.account_url)
            return self.account_url

    async def fetch(self, url: str) -> dict[str, Any]:
        """POST-as-GET of a JSON resource (order, authorization, challenge)."""
        return (await self.post(url, None)).json()

    async def new_order(self, hostnames: list[str]) -> tuple[str, dict[str, Any]]:
        """Create an order; its URL and body."""
        directory = await self.directory()
        reply = await self.post(directory["newOrder"], {"identifiers": [{"type": "dns", "value": h} for h in hostnames]})
        if not reply.location:
            raise AcmeError("ACME server created an order but sent no Location")
        return reply.location, reply.json()

    async def poll(self, url: str, pending: tuple[str, ...], deadline: float) -> dict[str, Any]:
        """POST-as-GET ``url`` until its status leaves ``pending`` (honouring Retry-After) or the deadline passes."""
        delay = POLL_INTERVAL
        while True:
            reply = await self.post(url, None)
            body = reply.json()
            if body.get("status") not in pending:
                return body
            wait = reply.retry_after(delay)
            if time.monotonic() + wait > deadline:
                raise AcmeError(f"ACME server left {url} {body.get('status')} for too long")
            await asyncio.sleep(wait)
            delay = min(delay * 1.5, 5.0)

    async def download(self, url: str) -> bytes:
        """The certificate chain (leaf first) in PEM."""
        reply = await self.post(url, None, accept="application/pem-certificate-chain")
        if b"-----BEGIN CERTIFICATE-----" not in reply.body:
            raise AcmeError(f"ACME server sent no PEM certificate chain at {url}")
        return reply.body

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()

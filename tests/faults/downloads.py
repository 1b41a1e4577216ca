"""Large downloads held in flight through a tunnel while a test breaks something, and how they ended.

Every fault test starts the same four downloads before it strikes: a body
with a Content-Length and a chunked one, each read once over a raw socket
(so the test sees the exact bytes the relay put on the wire, including
whether it ever sent the ``0\\r\\n\\r\\n`` that makes a chunked body look
complete) and once with aiohttp (what an ordinary HTTP client reports).
Each has read some of its body, then waits; after the fault it reads on and
``assert_cut_off`` checks that the body ended in an error, never in
something a client could take for a whole response.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp

from support.clients import build_request, make_client, read_head
from support.localrelay import Agent
from support.payloads import payload
from support.ports import LOOPBACK

#: Declared size of the big bodies: far more than flow control lets through before the fault.
BIG_BODY = 1 << 30

#: Body bytes each download reads before the fault (proves the body was flowing).
READ_BEFORE_FAULT = 256 * 1024

#: Seconds any download may take to reach a point (first bytes in, or its end after the fault).
DOWNLOAD_TIMEOUT = 20.0

#: Seed of the pseudo-random bodies (see support/payloads.py).
SEED = 3

#: Errors an HTTP client may legitimately report for a body that broke off.
CUT_OFF_ERRORS = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)


def target(mode: str, size: int = BIG_BODY) -> str:
    """Origin path of a streamed body: ``length`` (Content-Length) or ``chunked``."""
    kind = "download" if mode == "length" else "chunked"
    return f"/_o/{kind}?size={size}&seed={SEED}"


@dataclass
class RawDownload:
    """A GET on its own socket: the head, then the body's wire bytes as they came."""

    mode: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    wire: bytearray = field(default_factory=bytearray)
    #: How the connection ended after the fault: "eof" or the error's name.
    ending: str = ""

    @classmethod
    async def start(cls, port: int, agent: Agent, mode: str) -> RawDownload:
        """Send the request and read the head and the first READ_BEFORE_FAULT bytes of body."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), DOWNLOAD_TIMEOUT)
        download = cls(mode, reader, writer)
        writer.write(build_request("GET", target(mode), agent.host))
        await writer.drain()
        download.status, _, download.headers = await asyncio.wait_for(read_head(reader), DOWNLOAD_TIMEOUT)
        assert download.status == 200, f"{mode}: answered {download.status} {download.headers} before any fault"
        while len(download.wire) < READ_BEFORE_FAULT:
            chunk = await asyncio.wait_for(reader.read(65536), DOWNLOAD_TIMEOUT)
            assert chunk, f"{mode}: the body ended after {len(download.wire)} bytes, before any fault"
            download.wire += chunk
        return download

    def header(self, name: str) -> str | None:
        """First value of header ``name``."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    async def finish(self) -> None:
        """Read until the relay closes or resets the connection (bounded)."""
        try:
            while chunk := await asyncio.wait_for(self.reader.read(1 << 20), DOWNLOAD_TIMEOUT):
                self.wire += chunk
            self.ending = "eof"
        except (ConnectionError, OSError) as exc:
            self.ending = type(exc).__name__
        except TimeoutError:
            raise AssertionError(
                f"{self.mode}: the connection neither ended nor sent a byte for {DOWNLOAD_TIMEOUT:g}s after the fault"
            ) from None
        finally:
            self.writer.transport.abort()

    def assert_cut_off(self) -> None:
        """The body on the wire is visibly incomplete, and what did arrive is the right data."""
        assert self.status == 200, f"{self.mode}: status {self.status}"
        if self.mode == "length":
            assert self.header("Content-Length") == str(BIG_BODY), self.headers
            body = bytes(self.wire)
            assert len(body) < BIG_BODY, f"the whole {BIG_BODY}-byte body arrived: there was no fault"
        else:
            assert self.header("Transfer-Encoding") == "chunked", self.headers
            assert self.header("Content-Length") is None, self.headers
            body, complete = parse_chunked(bytes(self.wire))
            assert not complete, (
                f"the relay ended a cut-off chunked body with the terminating zero chunk after {len(body)} bytes: "
                "a client would take it for the whole response"
            )
        assert body == payload(SEED, len(body)), f"{self.mode}: the {len(body)} bytes that arrived are not the body's start"


def parse_chunked(wire: bytes) -> tuple[bytes, bool]:
    """Decode chunked framing strictly: (the data, whether the terminating chunk and final CRLF arrived)."""
    data = bytearray()
    pos = 0
    while True:
        end = wire.find(b"\r\n", pos)
        if end < 0:
            return bytes(data), False
        size_field = wire[pos:end].split(b";", 1)[0].strip()
        size = int(size_field, 16)  # anything else is a framing error the test should see
        pos = end + 2
        if size == 0:
            # Trailer section: header lines, then an empty line; complete only once that arrived.
            while True:
                end = wire.find(b"\r\n", pos)
                if end < 0:
                    return bytes(data), False
                if end == pos:
                    return bytes(data), True
                pos = end + 2
        if len(wire) < pos + size + 2:
            data += wire[pos : pos + size]
            return bytes(data), False
        data += wire[pos : pos + size]
        assert wire[pos + size : pos + size + 2] == b"\r\n", f"chunk at {pos} not followed by CRLF"
        pos += size + 2


@dataclass
class ClientDownload:
    """The same GET through aiohttp, paused after its first bytes until the fault has happened."""

    mode: str
    received: int = 0
    status: int = 0
    error: BaseException | None = None
    #: Set once the first READ_BEFORE_FAULT bytes are in.
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set by the test once the fault has happened: the download then reads on.
    go_on: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, agent: Agent, mode: str) -> ClientDownload:
        """Start reading in a task; return once the body is flowing."""
        download = cls(mode)
        download.task = asyncio.create_task(download._run(agent.public_url + target(mode)))
        flowing = asyncio.create_task(download.flowing.wait())
        await asyncio.wait({download.task, flowing}, timeout=DOWNLOAD_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        flowing.cancel()
        if not download.flowing.is_set():
            download.task.cancel()
            raise AssertionError(f"aiohttp {mode}: body not flowing ({download.received} bytes, error {download.error!r})")
        return download

    async def _run(self, url: str) -> None:
        async with make_client() as session:
            try:
                async with session.get(url) as response:
                    self.status = response.status
                    while chunk := await response.content.read(65536):
                        self.received += len(chunk)
                        if self.received >= READ_BEFORE_FAULT and not self.flowing.is_set():
                            self.flowing.set()
                            await self.go_on.wait()
            except Exception as exc:  # recorded: the test asserts which one
                self.error = exc

    async def finish(self) -> None:
        """Let it read on until its end (bounded)."""
        self.go_on.set()
        assert self.task is not None
        try:
            await asyncio.wait_for(self.task, DOWNLOAD_TIMEOUT)
        except TimeoutError:
            raise AssertionError(
                f"aiohttp {self.mode}: still reading {DOWNLOAD_TIMEOUT:g}s after the fault ({self.received} bytes)"
            ) from None

    def assert_cut_off(self) -> None:
        """aiohttp reported a broken body, never a clean end."""
        assert self.status == 200, f"aiohttp {self.mode}: status {self.status}"
        assert self.error is not None, (
            f"aiohttp {self.mode}: the body ended cleanly after {self.received} bytes: a truncated body passed off as complete"
        )
        assert isinstance(self.error, CUT_OFF_ERRORS), f"aiohttp {self.mode}: unexpected {self.error!r}"
        assert self.received < BIG_BODY


class InFlight:
    """The four downloads of one fault: raw and aiohttp, Content-Length and chunked."""

    def __init__(self, raw: list[RawDownload], client: list[ClientDownload]) -> None:
        self.raw = raw
        self.client = client

    @classmethod
    async def start(cls, relay_port: int, agent: Agent) -> InFlight:
        """All four flowing (each has read its first bytes)."""
        raw = [await RawDownload.start(relay_port, agent, mode) for mode in ("length", "chunked")]
        client = [await ClientDownload.start(agent, mode) for mode in ("length", "chunked")]
        return cls(raw, client)

    async def finish_and_assert_cut_off(self) -> None:
        """After the fault: read each to its end; every one must have broken off visibly."""
        await asyncio.gather(*(d.finish() for d in self.raw), *(d.finish() for d in self.client))
        for raw in self.raw:
            raw.assert_cut_off()
        for client in self.client:
            client.assert_cut_off()

    async def abort(self) -> None:
        """Drop everything (a test failing half-way must not leave sockets behind)."""
        for raw in self.raw:
            raw.writer.transport.abort()
        for client in self.client:
            if client.task is not None:
                client.task.cancel()
                await asyncio.gather(client.task, return_exceptions=True)

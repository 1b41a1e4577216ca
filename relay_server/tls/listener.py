"""The TLS listener: accept, peek at the ClientHello, await a context, then hand over to aiohttp.

``ssl.SSLContext.sni_callback`` must answer synchronously, inside the
handshake, so it cannot wait for a certificate that is being ordered.  This
site accepts connections itself, *peeks* (``MSG_PEEK``) at the first TLS
record without consuming it, asks ``resolve`` for a context (which may take
an ACME order's few seconds), and only then gives the socket to the event
loop's TLS transport with that context, so the handshake reads the same bytes
again.  Until the hand-over nothing is sent, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web

from relay_server.proxied import HEADER_TIMEOUT as PROXY_HEADER_TIMEOUT
from relay_server.proxyheader import V2_MAX, ProxyHeaderError
from relay_server.proxyheader import parse as parse_proxy_header
from relay_server.tls.clienthello import MAX_RECORD, RECORD_HEADER, ClientHello, NotTLS, parse_client_hello, record_size

log = logging.getLogger("relay_server.tls")

#: Seconds a client has to send its whole first TLS record.
HELLO_TIMEOUT = 10.0

#: Seconds for the TLS handshake once the context is chosen.
HANDSHAKE_TIMEOUT = 15.0

#: Pause between peeks at a partial ClientHello where the kernel has no receive low-water mark.
PEEK_RETRY = 0.01

#: Pause before retrying ``accept`` after a resource error (EMFILE), so it does not spin.
ACCEPT_ERROR_PAUSE = 0.5

#: Context picker: the ClientHello -> the context to handshake with, or None to refuse it.
Resolver = Callable[[ClientHello], Awaitable[ssl.SSLContext | None]]

#: Alert descriptions (RFC 8446 section 6): no certificate for that name / none for a nameless hello.
ALERT_UNRECOGNIZED_NAME = 112
ALERT_HANDSHAKE_FAILURE = 40

_PLAIN_HTTP_BODY = b"This port speaks HTTPS: use an https:// URL.\n"

#: What a plain-HTTP request to the TLS port gets instead of a silent reset.
PLAIN_HTTP_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_PLAIN_HTTP_BODY), _PLAIN_HTTP_BODY)
)

#: Most bytes read and thrown away from a refused connection before closing it.
REFUSE_DRAIN = 64 * 1024


def alert_record(description: int) -> bytes:
    """A plaintext fatal TLS alert record (sent before any handshake, as RFC 8446 allows)."""
    return bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description])


def _refuse(conn: socket.socket, answer: bytes) -> None:
    """Consume what the client sent, send ``answer``, and close with FIN (not RST, so the answer arrives)."""
    with contextlib.suppress(OSError):
        conn.recv(REFUSE_DRAIN)
    with contextlib.suppress(OSError):
        conn.send(answer)
        conn.shutdown(socket.SHUT_WR)


class ListenError(Exception):
    """The listening socket cannot be opened; the message is the one line the user sees."""


def open_listeners(host: str, port: int, backlog: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address ``host`` resolves to.

    ``reuse_port``: SO_REUSEPORT, so the workers of ``--workers`` all listen on
    the port and the kernel spreads new connections over them.
    """
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _wait_readable(loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout: float) -> None:
    """Wait until ``sock`` has bytes (or EOF) to read, at most ``timeout`` seconds."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = sock.fileno()
    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, max(timeout, 0.0))
    finally:
        loop.remove_reader(fd)


async def read_proxy_header(sock: socket.socket, timeout: float = PROXY_HEADER_TIMEOUT) -> tuple[str, int] | None:
    """Consume a balancer's PROXY header, ahead of the TLS hello; the client it names (None: its own connection).

    Raises ProxyHeaderError (malformed or missing), TimeoutError or ConnectionError.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await _wait_readable(loop, sock, deadline - loop.time())
        try:
            data = sock.recv(V2_MAX, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            continue
        if not data:
            raise ConnectionResetError("closed before the PROXY header")
        header = parse_proxy_header(data)
        if header is not None:
            sock.recv(header.size)  # exactly the header: the TLS hello stays for the peek after
            return header.client
        await asyncio.sleep(PEEK_RETRY)  # part of the header: wait for the rest (a balancer sends it at once)


def _set_low_water(sock: socket.socket, size: int) -> bool:
    """Ask the kernel to report readable only once ``size`` bytes wait; False where unsupported."""
    option = getattr(socket, "SO_RCVLOWAT", None)
    if option is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    except OSError:
        return False
    return True


async def peek_client_hello(sock: socket.socket, timeout: float = HELLO_TIMEOUT) -> ClientHello:
    """Read the first TLS record without consuming it; raise NotTLS, TimeoutError or ConnectionError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    need = RECORD_HEADER
    lowered = False
    seen = 0
    try:
        while True:
            await _wait_readable(loop, sock, deadline - loop.time())
            try:
                data = sock.recv(RECORD_HEADER + MAX_RECORD, socket.MSG_PEEK)
            except (BlockingIOError, InterruptedError):
                continue
            if not data:
                raise ConnectionResetError("closed before the TLS handshake")
            if lowered and len(data) == seen:
                # Readable below the low-water mark with nothing new: the peer closed mid-record.
                raise ConnectionResetError("closed in the middle of the ClientHello")
            seen = len(data)
            if len(data) >= RECORD_HEADER:
                need = record_size(data)
            if len(data) >= need:
                return parse_client_hello(data[:need])
            # Part of the record is here: wait for the rest without spinning on the peeked bytes.
            lowered = _set_low_water(sock, need)
            if not lowered:
                await asyncio.sleep(PEEK_RETRY)
    finally:
        if lowered:
            _set_low_water(sock, 1)


class _Listening:
    """The listening sockets and their accept tasks (what aiohttp's ``BaseSite.stop`` closes)."""

    def __init__(self, sockets: list[socket.socket], tasks: list[asyncio.Task]) -> None:
        self.sockets = sockets
        self.tasks = tasks

    async def stop_accepting(self) -> None:
        """Cancel the accept loops and wait for them, so no socket is closed under a pending accept."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def close(self) -> None:
        """Close the listening sockets."""
        for task in self.tasks:
            task.cancel()
        for sock in self.sockets:
            sock.close()


class TLSSite(web.BaseSite):
    """An aiohttp site speaking TLS with a context chosen per connection by ``resolve``."""

    __slots__ = ("_bound_port", "_host", "_pending", "_port", "_proxy_from", "_resolve", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        resolve: Resolver,
        *,
        backlog: int = 1024,
        proxy_from: Callable[[str], bool] | None = None,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._reuse_port = reuse_port
        #: With --proxy-protocol: which peers may connect (each opens with a PROXY header before TLS).
        self._proxy_from = proxy_from
        self._host = host
        self._port = port
        self._resolve = resolve
        self._pending: set[asyncio.Task] = set()
        self._bound_port: int | None = None

    @property
    def name(self) -> str:
        """``https://host:port``, as aiohttp names sites."""
        return f"https://{self._host or '0.0.0.0'}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the asked one before start)."""
        return self._bound_port if self._bound_port is not None else self._port

    async def start(self) -> None:
        """Bind (raising ListenError) and start accepting."""
        await super().start()
        try:
            sockets = open_listeners(self._host, self._port, self._backlog, reuse_port=self._reuse_port)
        except ListenError:
            self._runner._unreg_site(self)
            raise
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
        tasks = [asyncio.create_task(self._accept_loop(sock)) for sock in sockets]
        self._server = _Listening(sockets, tasks)  # type: ignore[assignment]

    async def stop(self) -> None:
        """Stop accepting; connections still choosing a certificate are closed."""
        if isinstance(self._server, _Listening):
            await self._server.stop_accepting()
        pending = list(self._pending)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await super().stop()

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError as exc:
                log.warning("TLS accept failed: %s", exc)
                await asyncio.sleep(ACCEPT_ERROR_PAUSE)
                continue
            conn.setblocking(False)
            task = asyncio.create_task(self._serve_connection(conn))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _serve_connection(self, conn: socket.socket) -> None:
        """Peek, resolve, hand over; any failure before the hand-over just closes the socket."""
        peer = _peer(conn)
        handed_over = False
        client: tuple[str, int] | None = None
        try:
            if self._proxy_from is not None:  # a TCP balancer in front: its PROXY header comes before TLS
                if not self._proxy_from(peer.rsplit(":", 1)[0]):
                    log.info("closed a connection from %s: --proxy-protocol takes connections from --trusted-proxy only", peer)
                    return
                try:
                    client = await read_proxy_header(conn)
                except (ProxyHeaderError, TimeoutError, OSError) as exc:
                    log.info("closed a connection from %s: %s", peer, exc or type(exc).__name__)
                    return
            try:
                hello = await peek_client_hello(conn)
            except NotTLS as exc:
                log.debug("TLS port: %s sent no TLS (%s)", peer, exc)
                _refuse(conn, PLAIN_HTTP_ANSWER)
                return
            except (TimeoutError, asyncio.TimeoutError, OSError) as exc:
                log.debug("TLS port: %s gave no ClientHello (%s)", peer, exc or type(exc).__name__)
                return
            context = await self._resolve(hello)
            if context is None:
                log.debug("TLS port: no certificate for %s (from %s); refused", hello.server_name or "a hello without SNI", peer)
                _refuse(conn, alert_record(ALERT_UNRECOGNIZED_NAME if hello.server_name else ALERT_HANDSHAKE_FAILURE))
                return
            server = self._runner.server
            if server is None:  # shutting down
                return
            server = getattr(server, "tls_protocol", server)  # the relay's server (GuardedRunner) has one
            if client is not None:
                from relay_server.proxied import addressed

                server = addressed(server, client)  # its protocols see the client the balancer named
            loop = asyncio.get_running_loop()
            handed_over = True
            try:
                await loop.connect_accepted_socket(
                    server, conn, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
            except (ssl.SSLError, OSError, asyncio.TimeoutError, TimeoutError) as exc:
                log.debug("TLS handshake with %s (%s) failed: %s", peer, hello.server_name or "no SNI", exc)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in choosing a certificate must not take the listener down
            log.exception("TLS connection from %s failed", peer)
        finally:
            if not handed_over:
                with contextlib.suppress(OSError):
                    conn.close()


def _peer(conn: socket.socket) -> str:
    try:
        address = conn.getpeername()
    except OSError:
        return "?"
    return f"{address[0]}:{address[1]}"

"""One running agent: connect, serve, reconnect; forward streams to the local server."""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from relay_client.connection import AgentConnection, open_connection
from relay_client.errors import AgentError, FatalError, RelayBusyError, RetryableError
from relay_client.exchange import Observer
from relay_client.forwarder import Forwarder
from relay_client.localsession import LazyLocalSession
from relay_client.reconnect import Backoff
from relay_client.settings import AgentConfig

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("relay_client")

@dataclass(slots=True)
class TunnelState:
    """What the agent knows about its tunnel right now."""

    public_url: str | None = None
    name: str | None = None
    connected: bool = False
    reconnects: int = 0
    connected_since: float | None = None


@dataclass
class Agent:
    """Keeps one tunnel up until stopped or a fatal error."""

    config: AgentConfig
    #: Called with the public URL each time the tunnel is (re)established.
    on_ready: Callable[[str], None] | None = None
    #: Called with the reason each time an established tunnel is lost (before reconnecting).
    on_lost: Callable[[str], None] | None = None
    observers: list[Observer] = field(default_factory=list)
    state: TunnelState = field(default_factory=TunnelState)

    def __post_init__(self) -> None:
        self.config.check()
        #: The forwarder's aiohttp session while running, opened on first use (see ``local_session``).
        self._local: LazyLocalSession | None = None
        self._agent_key = secrets.token_hex(16)
        self._stopping = asyncio.Event()
        #: Every connection still running: the current one, and older ones whose relay is
        #: going away and that are finishing their requests.
        self._connections: set[AgentConnection] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._deadline: asyncio.TimerHandle | None = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.cacert:
            return None
        try:
            return ssl.create_default_context(cafile=self.config.cacert)
        except (OSError, ssl.SSLError) as exc:
            raise FatalError(f"--cacert {self.config.cacert}: {exc}") from None

    async def run(self) -> None:
        """Serve until ``stop()``; raise FatalError (or RetryableError before the first connect)."""
        ssl_context = self._ssl_context()
        http = self._local = LazyLocalSession(limit=self.config.local_connections)
        try:
            forwarder = Forwarder(
                self.config.target,
                http,
                observers=self.observers,
                host_header=self.config.host_header,
                capture_limit=self.config.capture_limit,
                rewrite_urls=self.config.rewrite_urls,
                cors=self.config.cors,
                public_url=lambda: self.state.public_url,
                local_connections=self.config.local_connections,
            )
            try:
                await self._loop(forwarder, ssl_context)
                if self._retiring:  # older connections finishing their last requests
                    await asyncio.gather(*self._retiring, return_exceptions=True)
            finally:
                self._cut("agent stopped")
                for task in self._retiring:
                    task.cancel()
                if self._deadline is not None:
                    self._deadline.cancel()
                await forwarder.close()
        finally:
            self._local = None
            await http.close()

    @property
    def local_session(self) -> aiohttp.ClientSession | None:
        """The session to the local server the inspector replays through; None while the agent is not running.

        Opened (and aiohttp imported) on the first call, as a websocket upgrade would.
        """
        return self._local.get() if self._local is not None else None

    @property
    def in_flight(self) -> int:
        """Requests being served right now, on every connection."""
        return sum(conn.mux.open_streams for conn in self._connections)

    def stop(self) -> None:
        """Stop gracefully, and make ``run`` return.

        The first call takes no new requests (the relay hears GOAWAY NO_ERROR and
        answers 502 at once) and lets those in flight finish for up to
        ``config.shutdown_grace`` seconds; a second call cuts them off at once.
        """
        if self._stopping.is_set():
            self._cut("agent stopping now")
            return
        self._stopping.set()
        busy = self.in_flight
        for conn in list(self._connections):
            conn.mux.drain("agent stopping")
        if busy:
            log.info(
                "stopping: waiting up to %gs for %d request(s) in flight (stop again to quit now)",
                self.config.shutdown_grace, busy,
            )
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called off the loop: the caller enforces its own deadline
                return
            self._deadline = loop.call_later(self.config.shutdown_grace, self._cut, "agent stopping: grace period over")

    def _cut(self, reason: str) -> None:
        """Close every connection now; requests still running end with an error at the relay."""
        for conn in list(self._connections):
            conn.mux.close(reason=reason)

    async def _loop(self, forwarder: Forwarder, ssl_context: ssl.SSLContext | None) -> None:
        backoff = Backoff()
        server_index = 0
        subdomain = self.config.subdomain
        ever_connected = False
        failures_this_round = 0
        while not self._stopping.is_set():
            server = self.config.servers[server_index % len(self.config.servers)]
            try:
                conn = await open_connection(
                    server,
                    token=self.config.token,
                    subdomain=subdomain,
                    agent_key=self._agent_key,
                    on_stream=forwarder.start,
                    ssl_context=ssl_context,
                    options=self.config.relay_options(),
                    stream_window=self.config.stream_window,
                    connection_window=self.config.connection_window,
                )
            except RetryableError as exc:
                failures_this_round += 1
                server_index += 1
                busy = isinstance(exc, RelayBusyError)  # the relay is there, only not ready: keep trying
                if not ever_connected and not busy and failures_this_round >= len(self.config.servers):
                    raise
                delay = backoff.next_delay()
                log.warning("%s; retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            failures_this_round = 0
            self._connections.add(conn)
            ever_connected = True
            subdomain = conn.welcome.name  # come back under the same name
            self.state.public_url, self.state.name = conn.welcome.public_url, conn.welcome.name
            self.state.connected, self.state.connected_since = True, time.time()
            if self.on_ready is not None:
                self.on_ready(conn.welcome.public_url)
            started = time.monotonic()
            if self._stopping.is_set():
                conn.mux.drain("agent stopping")
            relay_leaving = asyncio.Event()
            conn.mux.on_peer_draining = lambda _reason: relay_leaving.set()
            running = asyncio.create_task(conn.run())
            await _first_of(running, relay_leaving)
            self.state.connected = False
            if relay_leaving.is_set() and not self._stopping.is_set():
                # The relay is going away (a restart, a deploy): connect again at once while
                # the requests on this connection finish; it closes by itself after them.
                self._retire(conn, running)
                reason = "relay is going away"
                log.warning(
                    "relay at %s is going away; reconnecting now (%d request(s) finishing on the old connection)",
                    conn.server, conn.mux.open_streams,
                )
                if self.on_lost is not None:
                    self.on_lost(reason)
                self.state.reconnects += 1
                backoff.reset()
                continue
            await running  # done, or finishing its drain because we are stopping
            self._connections.discard(conn)
            fatal = conn.fatal_close()
            if fatal is not None:
                raise fatal
            if self._stopping.is_set():
                return
            backoff.connected_for(time.monotonic() - started)
            self.state.reconnects += 1
            if self.on_lost is not None:
                self.on_lost(conn.mux.close_reason or "connection lost")
            delay = backoff.next_delay()
            log.warning("tunnel connection lost (%s); reconnecting in %.1fs", conn.mux.close_reason or "closed", delay)
            await self._sleep(delay)

    def _retire(self, conn: AgentConnection, running: asyncio.Task[None]) -> None:
        """Let ``conn`` finish its requests in the background; forget it once it has closed."""
        self._retiring.add(running)

        def done(task: asyncio.Task[None]) -> None:
            self._retiring.discard(task)
            self._connections.discard(conn)
            if not task.cancelled() and task.exception() is not None:
                log.debug("old connection ended with %r", task.exception())

        running.add_done_callback(done)

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
        except asyncio.TimeoutError:
            pass


async def _first_of(task: asyncio.Task[None], event: asyncio.Event) -> None:
    """Wait until ``task`` is done or ``event`` is set (whichever comes first)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


__all__ = ["Agent", "AgentConfig", "AgentError", "TunnelState"]

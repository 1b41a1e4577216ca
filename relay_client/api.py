"""The library face: a tunnel for the length of a ``with`` or ``async with`` block.

    async with relay_client.Tunnel(local="http://127.0.0.1:5003",
                                   server="http://localhost:8080", token=tok) as t:
        print(t.public_url)

    with relay_client.Tunnel(local="http://127.0.0.1:5003") as t:   # blocking code
        requests.get(t.public_url)

The blocking form runs the agent on its own event loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from relay_client.agent import Agent, AgentConfig
from relay_client.errors import AgentError
from relay_client.target import parse_target

#: Seconds ``Tunnel`` waits for the first connection before giving up.
OPEN_TIMEOUT = 30.0

#: Seconds closing waits for the agent to stop.
CLOSE_TIMEOUT = 10.0


class Tunnel:
    """A tunnel that lives for the duration of a ``with`` / ``async with`` block."""

    def __init__(
        self,
        local: str,
        server: str = "http://localhost:8080",
        token: str | None = None,
        subdomain: str | None = None,
        cacert: str | None = None,
        **options: object,
    ) -> None:
        config = AgentConfig(
            target=parse_target(local), servers=[server], token=token, subdomain=subdomain, cacert=cacert
        )
        # Any AgentConfig field: host_header, rewrite_urls, cors, basic_auth, allow_ip, stream_window...
        for key, value in options.items():
            if not hasattr(config, key) or key in ("target", "servers"):
                raise TypeError(f"Tunnel() got an unexpected option {key!r}")
            setattr(config, key, value)
        self._agent = Agent(config, on_ready=self._ready)
        self._task: asyncio.Task[None] | None = None
        self._up: asyncio.Future[str] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def public_url(self) -> str:
        """The public URL (``http://NAME.domain:port``)."""
        url = self._agent.state.public_url
        if url is None:
            raise RuntimeError("the tunnel is not open; use 'with Tunnel(...)' or 'async with Tunnel(...)'")
        return url

    @property
    def connected(self) -> bool:
        """Whether the websocket to the relay is up right now."""
        return self._agent.state.connected

    def _ready(self, url: str) -> None:
        if self._up is not None and not self._up.done():
            self._up.set_result(url)

    # ------------------------------------------------------------------ async
    async def open(self) -> Tunnel:
        """Connect; returns once the public URL answers, or raises AgentError."""
        self._up = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._agent.run())
        done, _ = await asyncio.wait({self._task, self._up}, timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if self._up in done:
            return self
        await self.aclose()
        if self._task.done() and not self._task.cancelled() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]
        raise AgentError(f"tunnel not established within {OPEN_TIMEOUT:g}s")

    async def aclose(self) -> None:
        """Disconnect and wait for the agent to stop."""
        self._agent.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, CLOSE_TIMEOUT)
            except (AgentError, asyncio.TimeoutError, asyncio.CancelledError):
                pass

    async def __aenter__(self) -> Tunnel:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ blocking
    def start(self) -> Tunnel:
        """Blocking: run the agent on a background thread; returns once connected."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        outcome: list[BaseException | None] = [None]

        async def main() -> None:
            try:
                await self.open()
            except BaseException as exc:  # handed to the calling thread
                outcome[0] = exc
                ready.set()
                return
            ready.set()
            assert self._task is not None
            await asyncio.gather(self._task, return_exceptions=True)

        self._loop = loop
        self._thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True, name="localrelay")
        self._thread.start()
        if not ready.wait(OPEN_TIMEOUT + CLOSE_TIMEOUT):
            raise AgentError(f"tunnel not established within {OPEN_TIMEOUT:g}s")
        if outcome[0] is not None:
            self._thread.join(CLOSE_TIMEOUT)
            raise outcome[0]
        return self

    def stop(self) -> None:
        """Blocking: disconnect and join the background thread."""
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._agent.stop)
        self._thread.join(CLOSE_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()
        self._thread = None

    def __enter__(self) -> Tunnel:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

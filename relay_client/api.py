"""The library face: ``async with relay_client.Tunnel(...) as t: t.public_url``."""

from __future__ import annotations

import asyncio
from types import TracebackType

from relay_client.agent import Agent, AgentConfig
from relay_client.errors import AgentError
from relay_client.target import parse_target

#: Seconds ``Tunnel`` waits for the first connection before giving up.
OPEN_TIMEOUT = 30.0


class Tunnel:
    """A tunnel that lives for the duration of an ``async with`` block."""

    def __init__(
        self,
        local: str,
        server: str = "http://localhost:8080",
        token: str | None = None,
        subdomain: str | None = None,
        cacert: str | None = None,
    ) -> None:
        self._agent = Agent(
            AgentConfig(target=parse_target(local), servers=[server], token=token, subdomain=subdomain, cacert=cacert),
            on_ready=self._ready,
        )
        self._task: asyncio.Task[None] | None = None
        self._up: asyncio.Future[str] | None = None

    @property
    def public_url(self) -> str:
        """The public URL (``http://NAME.domain:port``)."""
        url = self._agent.state.public_url
        if url is None:
            raise RuntimeError("the tunnel is not open; use 'async with Tunnel(...)'")
        return url

    @property
    def connected(self) -> bool:
        """Whether the websocket to the relay is up right now."""
        return self._agent.state.connected

    def _ready(self, url: str) -> None:
        if self._up is not None and not self._up.done():
            self._up.set_result(url)

    async def __aenter__(self) -> Tunnel:
        self._up = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._agent.run())
        done, _ = await asyncio.wait({self._task, self._up}, timeout=OPEN_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if self._up in done:
            return self
        await self._close()
        if self._task.done() and self._task.exception() is not None:
            raise self._task.exception()  # type: ignore[misc]
        raise AgentError(f"tunnel not established within {OPEN_TIMEOUT:g}s")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        self._agent.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10)
            except (AgentError, asyncio.TimeoutError, asyncio.CancelledError):
                pass

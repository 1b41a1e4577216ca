"""A real tunnel with the inspector on: relay and origin processes, an in-process agent.

The agent runs in the test's event loop with a ``Recorder`` among its
observers and the inspector started beside it, as the CLI will wire them.
Until ``Agent`` exposes ``local_session`` itself, ``AgentHost`` lends the
inspector a session of its own for replays (same settings as the agent's).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from relay_client.agent import Agent, AgentConfig
from relay_client.exchange import DEFAULT_CAPTURE_LIMIT, Exchange, Observer
from relay_client.localsession import make_local_session
from relay_client.inspector import InspectorServer, Recorder, start_inspector
from relay_client.resolver import LoopbackResolver
from relay_client.target import parse_target

#: Seconds the in-process agent gets to open its tunnel.
TUNNEL_TIMEOUT = 20.0

#: Seconds any "until the inspector shows it" wait may take.
SETTLE_TIMEOUT = 10.0


class AgentHost:
    """``InspectorHost`` over a running ``Agent`` (its own ``local_session`` once it has one)."""

    def __init__(self, agent: Agent, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self._session = session

    @property
    def state(self) -> Any:
        """The agent's tunnel state."""
        return self.agent.state

    @property
    def config(self) -> AgentConfig:
        """The agent's settings."""
        return self.agent.config

    @property
    def observers(self) -> Sequence[Observer]:
        """The agent's observers."""
        return self.agent.observers

    @property
    def local_session(self) -> aiohttp.ClientSession | None:
        """The agent's session if it exposes one, else ours."""
        return getattr(self.agent, "local_session", None) or self._session


@dataclass
class LiveTunnel:
    """A tunnel that is up, with its recorder and inspector."""

    agent: Agent
    recorder: Recorder
    inspector: InspectorServer
    public_url: str


@asynccontextmanager
async def live_tunnel(
    relay_url: str, origin_url: str, *, history: int = 500, capture_limit: int = DEFAULT_CAPTURE_LIMIT
) -> AsyncIterator[LiveTunnel]:
    """Run an agent for ``origin_url`` through ``relay_url`` with the inspector on 127.0.0.1:0."""
    recorder = Recorder(limit=history)
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    config = AgentConfig(target=parse_target(origin_url), servers=[relay_url], capture_limit=capture_limit)
    agent = Agent(config, on_ready=lambda url: ready.done() or ready.set_result(url), observers=[recorder])
    async with make_local_session(LoopbackResolver()) as session:
        inspector = await start_inspector("127.0.0.1", 0, recorder, AgentHost(agent, session))
        task = asyncio.create_task(agent.run())
        try:
            done, _ = await asyncio.wait({task, ready}, timeout=TUNNEL_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if ready not in done:
                raise AssertionError(f"tunnel not up within {TUNNEL_TIMEOUT:g}s: {task.exception() if task.done() else 'still trying'}")
            yield LiveTunnel(agent, recorder, inspector, ready.result())
        finally:
            agent.stop()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 10)
            await inspector.stop()


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = SETTLE_TIMEOUT) -> None:
    """Poll ``predicate`` on the event loop until true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:g}s")
        await asyncio.sleep(0.02)


def all_done(recorder: Recorder) -> bool:
    """Every recorded exchange has finished."""
    return all(e.duration is not None for e in recorder.newest_first())


def newest(recorder: Recorder) -> Exchange:
    """The most recent exchange."""
    return next(recorder.newest_first())

"""What the inspector needs from the running agent, as structural types.

``relay_client.agent.Agent`` already has ``state``, ``config`` and
``observers``; to allow replay it must also expose ``local_session``: the
aiohttp session its forwarder uses (``None`` while the agent is not running).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import aiohttp

from relay_client.exchange import Observer


class TunnelView(Protocol):
    """The tunnel as it is right now (``relay_client.agent.TunnelState``)."""

    @property
    def public_url(self) -> str | None:
        """``http(s)://NAME.domain[:port]`` once connected."""

    @property
    def name(self) -> str | None:
        """The tunnel's name (its subdomain)."""

    @property
    def connected(self) -> bool:
        """Whether the websocket to the relay is up."""

    @property
    def reconnects(self) -> int:
        """How many times the tunnel came back after a loss."""


class TargetView(Protocol):
    """The local server (``relay_client.target.LocalTarget``)."""

    @property
    def origin(self) -> str:
        """``http://host:port``: the only place replays go."""

    @property
    def host_port(self) -> str:
        """``host:port`` as a Host header names it."""


class ConfigView(Protocol):
    """The agent's settings (``relay_client.agent.AgentConfig``)."""

    @property
    def target(self) -> TargetView:
        """The local server."""

    @property
    def host_header(self) -> str:
        """``preserve``, ``rewrite`` or a literal Host value, applied to replays as to live traffic."""


class InspectorHost(Protocol):
    """The agent as the inspector sees it."""

    @property
    def state(self) -> TunnelView:
        """Live tunnel state."""

    @property
    def config(self) -> ConfigView:
        """Settings."""

    @property
    def observers(self) -> Sequence[Observer]:
        """Everyone told about exchanges (console log, recorder); replays are announced to them too."""

    @property
    def local_session(self) -> aiohttp.ClientSession | None:
        """The forwarder's session to the local server, or None while the agent is not running."""

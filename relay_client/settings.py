"""What ``relay-client http`` was told to do: light enough for the option parser to import.

The CLI builds an ``AgentConfig`` before it re-executes a fresh interpreter for the
agent (``relay_protocol.relaunch``); keeping it apart from ``agent`` means the
parsing process never imports aiohttp or websockets only to throw them away.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from relay_client.exchange import DEFAULT_CAPTURE_LIMIT
from relay_client.target import LocalTarget
from relay_protocol.limits import DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, MAX_WINDOW, MIN_WINDOW, is_valid_window

#: Seconds requests in flight get to finish after Ctrl-C / SIGTERM before the agent cuts them off.
SHUTDOWN_GRACE = 10.0

#: Connections the agent keeps open to the local server at most (``--local-connections``);
#: requests past this wait for one.  Each request in flight holds one, a long one (an SSE
#: stream, a websocket) for as long as it lasts.
LOCAL_CONNECTION_LIMIT = 256


@dataclass(slots=True)
class AgentConfig:
    """What the agent was told to do."""

    target: LocalTarget
    servers: list[str]
    token: str | None = None
    subdomain: str | None = None
    cacert: str | None = None
    #: "preserve", "rewrite" (to the local host:port) or a literal Host value.
    host_header: str = "preserve"
    capture_limit: int = DEFAULT_CAPTURE_LIMIT
    rewrite_urls: bool = False
    cors: bool = False
    #: "user:password" the relay demands from public callers (sent to it hashed).
    basic_auth: str | None = None
    #: CIDRs of public callers the relay lets through (empty: anyone).
    allow_ip: list[str] = field(default_factory=list)
    #: Seconds ``stop()`` lets requests in flight finish before cutting them off.
    shutdown_grace: float = SHUTDOWN_GRACE
    #: Connections to the local server at most (plain requests and websockets each).
    local_connections: int = LOCAL_CONNECTION_LIMIT
    #: Request body bytes the relay may send ahead of the local server, per stream and over
    #: all streams (the agent's receive windows, announced in HELLO): what uploads can make
    #: the agent hold in memory.
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW

    def check(self) -> None:
        """ValueError for a setting the relay would refuse in HELLO (the library sets fields directly)."""
        for name in ("stream_window", "connection_window"):
            value = getattr(self, name)
            if not is_valid_window(value):
                raise ValueError(f"{name} must be an integer between {MIN_WINDOW} and {MAX_WINDOW}, not {value!r}")

    def relay_options(self) -> dict:
        """Access rules for the relay to enforce, as HELLO options."""
        options: dict = {}
        if self.basic_auth is not None:
            options["basic_auth"] = hashlib.sha256(self.basic_auth.encode("utf-8")).hexdigest()
        if self.allow_ip:
            options["allow_ip"] = list(self.allow_ip)
        return options

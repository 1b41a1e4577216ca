"""The versioned handshake: the agent's HELLO and the relay's WELCOME.

The agent speaks first and lists the versions it can speak; the relay picks
the highest it shares or refuses with GOAWAY(UNSUPPORTED_VERSION) and a
sentence naming both sides' versions.  Each side announces its receive windows
here, so flow control is agreed before the first stream opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from relay_protocol.errors import ErrorCode, RemoteProtocolError
from relay_protocol.limits import (
    DEFAULT_CONNECTION_WINDOW,
    DEFAULT_STREAM_WINDOW,
    MAX_CONTROL_PAYLOAD,
    MAX_WINDOW,
    MIN_WINDOW,
    is_valid_window,
)

#: The version this code speaks.
PROTOCOL_VERSION = 1

#: Every version this code can speak, newest first.
SUPPORTED_VERSIONS = (1,)


@dataclass(slots=True)
class Hello:
    """Agent -> relay, first frame: who I am and what I want."""

    versions: list[int] = field(default_factory=lambda: list(SUPPORTED_VERSIONS))
    subdomain: str | None = None
    #: Random per-agent-process key: lets the same agent reclaim its name after a
    #: reconnect while its old connection is still being torn down.
    agent_key: str = ""
    client: str = ""
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    #: Free-form options the relay enforces for this tunnel (basic auth, allowed IPs...).
    options: dict = field(default_factory=dict)

    def encode(self) -> bytes:
        """JSON payload of the HELLO frame."""
        return json.dumps(
            {
                "versions": self.versions,
                "subdomain": self.subdomain,
                "agent_key": self.agent_key,
                "client": self.client,
                "stream_window": self.stream_window,
                "connection_window": self.connection_window,
                "options": self.options,
            }
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Parse and validate a HELLO payload."""
        obj = _load(payload, "HELLO")
        versions = obj.get("versions")
        if not isinstance(versions, list) or not versions or not all(type(v) is int for v in versions):
            raise RemoteProtocolError("HELLO must list the protocol versions it speaks")
        subdomain = obj.get("subdomain")
        if subdomain is not None and not isinstance(subdomain, str):
            raise RemoteProtocolError("HELLO subdomain must be a string")
        options = obj.get("options", {})
        if not isinstance(options, dict):
            raise RemoteProtocolError("HELLO options must be an object")
        return cls(
            versions=versions,
            subdomain=subdomain,
            agent_key=_string(obj, "agent_key"),
            client=_string(obj, "client"),
            stream_window=_window(obj, "stream_window", DEFAULT_STREAM_WINDOW),
            connection_window=_window(obj, "connection_window", DEFAULT_CONNECTION_WINDOW),
            options=options,
        )


@dataclass(slots=True)
class Welcome:
    """Relay -> agent: the tunnel is registered; here is its public URL."""

    version: int
    name: str
    public_url: str
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    max_streams: int = 0

    def encode(self) -> bytes:
        """JSON payload of the WELCOME frame."""
        return json.dumps(
            {
                "version": self.version,
                "name": self.name,
                "public_url": self.public_url,
                "stream_window": self.stream_window,
                "connection_window": self.connection_window,
                "max_streams": self.max_streams,
            }
        ).encode()

    @classmethod
    def decode(cls, payload: bytes) -> Welcome:
        """Parse and validate a WELCOME payload."""
        obj = _load(payload, "WELCOME")
        version = obj.get("version")
        if type(version) is not int:
            raise RemoteProtocolError("WELCOME must name the chosen version")
        max_streams = obj.get("max_streams", 0)
        if type(max_streams) is not int or max_streams < 0:
            raise RemoteProtocolError("WELCOME max_streams must be a non-negative integer")
        return cls(
            version=version,
            name=_string(obj, "name"),
            public_url=_string(obj, "public_url"),
            stream_window=_window(obj, "stream_window", DEFAULT_STREAM_WINDOW),
            connection_window=_window(obj, "connection_window", DEFAULT_CONNECTION_WINDOW),
            max_streams=max_streams,
        )


def choose_version(offered: list[int]) -> int:
    """The highest version both sides speak, or a refusal that names both lists."""
    common = set(offered) & set(SUPPORTED_VERSIONS)
    if not common:
        raise RemoteProtocolError(
            f"agent speaks protocol versions {sorted(offered)}, this relay speaks {list(SUPPORTED_VERSIONS)}; "
            "upgrade the older side",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    return max(common)


def _load(payload: bytes, what: str) -> dict:
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise RemoteProtocolError(f"{what} payload too large")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RemoteProtocolError(f"{what} payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"{what} payload must be a JSON object")
    return obj


def _string(obj: dict, key: str) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{key} must be a string")
    return value


def _window(obj: dict, key: str, default: int) -> int:
    value = obj.get(key, default)
    if not is_valid_window(value):
        raise RemoteProtocolError(f"{key} must be an integer between {MIN_WINDOW} and {MAX_WINDOW}")
    return value

"""localrelay agent: keeps a tunnel to the relay up and forwards it to a local server.

``cli`` parses options into an ``AgentConfig`` (``agent_main`` runs it, in a
fresh interpreter from the console script); ``agent`` owns one running
agent (local HTTP session, forwarder, reconnect loop); ``connection`` opens
one websocket and does the handshake; ``forwarder`` turns each stream into a
local request; ``reconnect`` holds the backoff policy; ``api`` is the library
face (``relay_client.Tunnel``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from relay_client.api import Tunnel

__all__ = ["Tunnel", "__version__"]


def __getattr__(name: str) -> Any:
    """``relay_client.Tunnel`` loads the agent on first use: the CLI's own imports stay light."""
    if name == "Tunnel":
        from relay_client.api import Tunnel

        return Tunnel
    raise AttributeError(f"module 'relay_client' has no attribute {name!r}")

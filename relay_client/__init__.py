"""localrelay agent: keeps a tunnel to the relay up and forwards it to a local server.

``cli`` parses options into an ``AgentConfig`` (``agent_main`` runs it, in a
fresh interpreter from the console script); ``agent`` owns one running
agent (local HTTP session, forwarder, reconnect loop); ``connection`` opens
one websocket and does the handshake; ``forwarder`` turns each stream into a
local request; ``reconnect`` holds the backoff policy; ``api`` is the library
face (``relay_client.Tunnel``).
"""

__version__ = "0.1.0"

from relay_client.api import Tunnel  # noqa: E402  (needs __version__ above)

__all__ = ["Tunnel", "__version__"]

"""localrelay's public relay: accepts agents and routes public HTTP to them by Host.

``cli`` parses options into a ``RelayConfig`` (``serve_main`` runs it in a fresh
interpreter, without the parser's imports); ``app`` builds the aiohttp
application; ``agent_endpoint`` authenticates agents and runs one protocol
session per websocket; ``front`` turns each public request into a stream;
``registry`` maps names to live tunnels (replaceable by a shared one);
``tokens`` keeps hashed agent tokens on disk; ``access`` enforces a tunnel's
basic auth and address list; ``tls`` serves HTTPS (certificate per SNI name
from files, a local CA, or its own ACME client).
"""

__version__ = "0.1.0"

"""A real MCP server built with the official SDK (``mcp`` 2.x, ``MCPServer``), Streamable HTTP on 127.0.0.1.

``python mcp_sdk.py --port P [--json-response | --sse]``; prints ``mcp listening on 127.0.0.1:P`` when up.
``--sse`` serves the legacy HTTP+SSE transport of 2024-11-05 (GET /sse, POST /messages/) instead.
Its default transport security accepts only local Host headers, so behind a
tunnel it needs the agent's ``--host-header rewrite``.
"""

from __future__ import annotations

import argparse
import socket
import time

from mcp.server.mcpserver import MCPServer

#: Seconds to wait for uvicorn to start listening.
START_TIMEOUT = 20.0

server = MCPServer("sdk-sample")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echo a text."""
    return text


def _announce_when_listening(port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                print(f"mcp listening on 127.0.0.1:{port}", flush=True)
                return
        except OSError:
            time.sleep(0.05)


def main() -> None:
    """Serve until stopped."""
    import threading

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--json-response", action="store_true")
    parser.add_argument("--sse", action="store_true")
    options = parser.parse_args()
    threading.Thread(target=_announce_when_listening, args=(options.port,), daemon=True).start()
    if options.sse:
        server.run(transport="sse", host="127.0.0.1", port=options.port)
    else:
        server.run(transport="streamable-http", host="127.0.0.1", port=options.port, json_response=options.json_response)


if __name__ == "__main__":
    main()

"""Raw asyncio servers on loopback, scripted byte by byte by a test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from support.ports import LOOPBACK

#: What a raw server runs for each connection it accepts.
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServers:
    """Servers started by one test; ``close`` stops every one and closes every connection."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, handler: Handler) -> int:
        """Listen on a free loopback port, running ``handler`` per connection; the port."""

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(run, LOOPBACK, 0)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()

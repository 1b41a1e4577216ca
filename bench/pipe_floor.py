#!/usr/bin/env python3
"""One hop of the floor: a byte pipe on uvloop, the least any Python tunnel process can do.

``cpu_per_request.py --floor`` runs two of these in a chain in front of the
origin (public port -> front pipe -> back pipe -> origin), the shape of a
relay and an agent: four wake-ups of two Python processes per request, each
one ``recv`` and one ``send``, no framing, no parsing, no bookkeeping.  What
our relay and agent cost per request above what these two cost is what our
code adds; what these cost is what Python and the kernel charge any design.

    python bench/pipe_floor.py LISTEN_PORT TARGET_PORT
"""

from __future__ import annotations

import asyncio
import socket
import sys


class Half(asyncio.Protocol):
    """One side of a piped connection: whatever it reads, its peer writes."""

    def __init__(self) -> None:
        self.peer: Half | None = None
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)  # the far side is still connecting

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def serve(listen: int, target: int) -> None:
    loop = asyncio.get_running_loop()

    def accepted() -> Half:
        near = Half()

        async def dial() -> None:
            _, far = await loop.create_connection(Half, "127.0.0.1", target)
            near.peer, far.peer = far, near
            for data in near.early:
                far.transport.write(data)  # type: ignore[union-attr]
            near.early.clear()

        loop.create_task(dial())
        return near

    server = await loop.create_server(accepted, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))

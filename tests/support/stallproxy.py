"""A loopback TCP proxy that can stop forwarding without closing: a half-open network on demand.

Put it between an agent and a relay (the agent's ``--server`` names the
proxy's port) and call ``stall()``: from then on no byte passes in either
direction, but no socket is closed either, so neither side sees a FIN or RST,
exactly as when a NAT box forgets the flow or a cable is pulled.  ``resume()``
lets the held bytes through again; ``close()`` stops everything.

The proxy runs its own asyncio loop on a daemon thread, so sync tests (and
async ones) drive it through plain method calls::

    proxy = stallproxy.start(0, relay.port)      # 0: pick a free port
    agent = ... --server http://localhost:{proxy.port} ...
    proxy.stall()
    ...
    proxy.close()

Stalling stops *reading* as well as writing, so the kernel buffers fill up and
the senders block, as on a real dead path.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

#: Bytes read from one side per turn.
CHUNK = 64 * 1024

#: Seconds ``start`` and ``close`` wait for the proxy's thread.
THREAD_TIMEOUT = 10.0

LOOPBACK = "127.0.0.1"


class StallProxy:
    """A running proxy from 127.0.0.1:``port`` to 127.0.0.1:``target_port``."""

    def __init__(self, listen_port: int, target_port: int) -> None:
        self.target_port = target_port
        self.port = listen_port
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Connections accepted so far (each agent reconnect is one more).
        self.accepted = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"stallproxy:{listen_port}", daemon=True)
        self._thread.start()
        self.port = self._call(self._start(listen_port))

    # ------------------------------------------------------------- public API
    def stall(self) -> None:
        """Stop forwarding in both directions; keep every socket open."""
        self._call(self._set_flowing(False))

    def resume(self) -> None:
        """Forward again, held bytes first."""
        self._call(self._set_flowing(True))

    @property
    def stalled(self) -> bool:
        """Whether the proxy is holding traffic."""
        return self._flowing is not None and not self._flowing.is_set()

    @property
    def open_connections(self) -> int:
        """Sockets (both sides counted) the proxy holds right now."""
        return len(self._writers)

    def close(self) -> None:
        """Stop listening and drop every connection (abortively); stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(THREAD_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> StallProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- internals
    def _call(self, coro):
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(THREAD_TIMEOUT)

    async def _start(self, listen_port: int) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, LOOPBACK, listen_port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_r, upstream_w = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers.update((client_w, upstream_w))
        pumps = [
            asyncio.create_task(self._pump(client_r, upstream_w, client_w)),
            asyncio.create_task(self._pump(upstream_r, client_w, upstream_w)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self._tasks.difference_update(pumps)
            for writer in (client_w, upstream_w):
                self._writers.discard(writer)
                writer.transport.abort()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: asyncio.StreamWriter
    ) -> None:
        """Copy one direction; wait at the gate before reading and before writing.

        A reset on either socket resets the other (a live path passes RSTs on).
        """
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                await self._flowing.wait()  # bytes read just before a stall are held, not sent
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            writer.transport.abort()
            source.transport.abort()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await asyncio.sleep(0)


def start(listen_port: int, target_port: int) -> StallProxy:
    """Start a proxy on 127.0.0.1:``listen_port`` (0: any free port) to 127.0.0.1:``target_port``."""
    return StallProxy(listen_port, target_port)


__all__ = ["StallProxy", "start"]

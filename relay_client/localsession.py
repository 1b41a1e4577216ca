"""The agent's aiohttp session to the local server, made the first time something needs it.

Plain requests go through the lean keep-alive pool (``localhttp``); only
websocket upgrades and the inspector's replay use aiohttp's client.  Importing
aiohttp costs an agent about 10 MiB resident (its client, server and websocket
modules load together), so an agent that never sees either (``--no-inspect`` and no
websocket) should never import it: this holder imports aiohttp and opens the
session on the first ``get``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay_client.settings import LOCAL_CONNECTION_LIMIT

if TYPE_CHECKING:
    import aiohttp

#: Headers aiohttp adds on its own that the public client did not send.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def make_local_session(
    resolver: aiohttp.abc.AbstractResolver | None = None, limit: int = LOCAL_CONNECTION_LIMIT
) -> aiohttp.ClientSession:
    """An aiohttp session as the agent talks to its local server: no decompression, cookies or added headers."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=limit, resolver=resolver, ttl_dns_cache=60)
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10),
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        read_bufsize=2**18,
    )


class LazyLocalSession:
    """One agent run's aiohttp session (``*.localhost`` resolved to loopback), opened on first use."""

    def __init__(self, limit: int = LOCAL_CONNECTION_LIMIT) -> None:
        self.limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def get(self) -> aiohttp.ClientSession:
        """The session, opened now if this is the first call; RuntimeError once closed."""
        if self._closed:
            raise RuntimeError("the agent's local session is closed")
        if self._session is None:
            from relay_client.resolver import LoopbackResolver  # imports aiohttp

            self._session = make_local_session(LoopbackResolver(), limit=self.limit)
        return self._session

    async def close(self) -> None:
        """Close the session if it was ever opened; later ``get`` calls fail."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

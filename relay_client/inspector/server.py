"""Start and stop the inspector's web server (``--inspect``, default 127.0.0.1:4040)."""

from __future__ import annotations

import errno
import logging

from aiohttp import web

from relay_client.inspector.address import (
    DEFAULT_INSPECT_HOST,
    DEFAULT_INSPECT_PORT,
    is_loopback_name,
    parse_inspect_addr,
)
from relay_client.inspector.api import make_app
from relay_client.inspector.errors import InspectorAddressInUse, InspectorStartError
from relay_client.inspector.host import InspectorHost
from relay_client.inspector.recorder import Recorder

log = logging.getLogger("relay_client.inspector")

__all__ = [
    "DEFAULT_INSPECT_HOST",
    "DEFAULT_INSPECT_PORT",
    "InspectorServer",
    "parse_inspect_addr",
    "start_inspector",
]

#: Seconds open connections (live feeds, replays) get to end when the inspector stops.
SHUTDOWN_GRACE = 2.0

_ADDRESS_IN_USE = {errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", errno.EADDRINUSE)}


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class InspectorServer:
    """A running inspector; ``url`` is where to open it, ``stop()`` ends it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:4040`` (IPv6 bracketed)."""
        return f"http://{_authority(self.host, self.port)}"

    async def stop(self) -> None:
        """Close live feeds, cancel replays, stop listening."""
        await self.runner.cleanup()


async def start_inspector(host: str, port: int, recorder: Recorder, agent: InspectorHost) -> InspectorServer:
    """Listen on host:port (loopback only); InspectorAddressInUse / InspectorStartError (OSError) on failure."""
    if not is_loopback_name(host):
        raise InspectorStartError(f"the inspector is local only: {host!r} is not a loopback address")
    app = make_app(recorder, agent, extra_hosts=(host,))
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        where = _authority(host, port)
        if exc.errno in _ADDRESS_IN_USE:
            error: InspectorStartError = InspectorAddressInUse(
                f"inspector not started: {where} is already in use (another relay-client or ngrok?); "
                "pick another address with --inspect HOST:PORT, or turn it off with --no-inspect"
            )
        else:
            error = InspectorStartError(f"inspector not started: cannot listen on {where}: {exc.strerror or exc}")
        error.errno = exc.errno
        raise error from exc
    bound_port = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound_port = address[1]
            break
    server = InspectorServer(runner, host, bound_port)
    log.debug("inspector listening on %s", server.url)
    return server

"""Run the relay until a signal: listeners, first-start token, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from relay_server.app import Relay
from relay_server.config import SHUTDOWN_GRACE, RelayConfig

log = logging.getLogger("relay_server")

#: aiohttp's own hard limits sit above ours, so that our configured limits
#: answer with 414/431 and a clear page; past these aiohttp answers 400.
PARSER_SLACK = 1024


class StartupError(Exception):
    """The relay cannot start; the message is the one line the user sees."""


def first_start_token(relay: Relay) -> str | None:
    """On an empty store (and not --open), create a token and return the paste-ready line."""
    if relay.config.open or not relay.tokens.is_empty():
        return None
    token, _ = relay.tokens.create(label="created on first start")
    return f"relay-client http 3000 --server {relay.config.public_url()} --token {token}"


async def serve(config: RelayConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    relay = Relay(config)
    paste = first_start_token(relay)
    runner = web.AppRunner(
        relay.make_app(),
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=SHUTDOWN_GRACE,
        max_line_size=config.max_url_bytes + PARSER_SLACK,
        max_field_size=config.max_header_bytes + PARSER_SLACK,
    )
    await runner.setup()
    try:
        if config.http_port:
            site = web.TCPSite(runner, config.host, config.http_port, backlog=1024, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {config.host}:{config.http_port}: {exc.strerror or exc}") from None
        if config.open:
            log.warning("--open: any agent may connect without a token; use this for local development only")
        log.info("relay listening on %s:%s; tunnels at %s", config.host, config.http_port, config.public_url("NAME"))
        if paste:
            print("No tokens yet: created one. Connect an agent with:", file=sys.stderr)
            print(paste, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        if ready is not None:
            ready.set()
        await stop.wait()
        log.info("stopping")
    finally:
        await runner.cleanup()

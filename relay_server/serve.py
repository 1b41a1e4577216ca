"""Run the relay until a signal: listeners (HTTP and TLS), first-start token, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web

from relay_server.app import Relay
from relay_server.config import RelayConfig
from relay_server.tls.listener import ListenError
from relay_server.tls.setup import TLSRuntime, TLSSetupError, build_tls

log = logging.getLogger("relay_server")

#: aiohttp's own hard limits sit above ours, so that our configured limits
#: answer with 414/431 and a clear page; past these aiohttp answers 400.
PARSER_SLACK = 1024


class StartupError(Exception):
    """The relay cannot start; the message is the one line the user sees."""


def first_start_token(relay: Relay, tls: TLSRuntime | None = None) -> str | None:
    """On an empty store (and not --open), create a token and return the paste-ready line."""
    if relay.config.open or not relay.tokens.is_empty():
        return None
    token, _ = relay.tokens.create(label="created on first start")
    line = f"relay-client http 3000 --server {relay.config.public_url()} --token {token}"
    if tls is not None and tls.local_ca is not None and relay.config.url_scheme == "https":
        line += f" --cacert {tls.local_ca.ca_path}"
    return line


def _listening_summary(config: RelayConfig) -> str:
    parts = []
    if config.http_port:
        parts.append(f"http on {config.host}:{config.http_port}")
    if config.https_port:
        parts.append(f"https on {config.host}:{config.https_port}")
    return ", ".join(parts) or "no listener"


async def serve(config: RelayConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    relay = Relay(config)
    try:
        tls = build_tls(config, relay)
    except TLSSetupError as exc:
        raise StartupError(str(exc)) from None
    app = relay.make_app()
    if tls is not None and tls.middleware is not None:
        app.middlewares.append(tls.middleware)
    paste = first_start_token(relay, tls)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        auto_decompress=False,  # request bodies pass byte for byte (Content-Encoding untouched)
        shutdown_timeout=config.shutdown_grace,
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
        if tls is not None:
            try:
                await tls.site(runner).start()
            except ListenError as exc:
                raise StartupError(str(exc)) from None
            await tls.start()
        if config.open:
            log.warning("--open: any agent may connect without a token; use this for local development only")
        log.info("relay listening (%s); tunnels at %s", _listening_summary(config), config.public_url("NAME"))
        if tls is not None and tls.local_ca is not None:
            ca = tls.local_ca.ca_path
            print(f"Self-signed HTTPS: local CA {ca} (try: curl --cacert {ca} {config.public_url('NAME')}/)", flush=True)
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
        if tls is not None:
            await tls.close()
        await runner.cleanup()

"""Run the relay until a signal: listeners (HTTP and TLS), first-start token, graceful stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import TYPE_CHECKING

from aiohttp import web

from relay_server.app import Relay
from relay_server.config import RelayConfig
from relay_server.lean_front import LeanFront
from relay_server.logs import EventLog
from relay_server.metrics import RelayMetrics
from relay_server.observer import Observers
from relay_server.publiclimits import GuardedRunner

if TYPE_CHECKING:  # tls.setup pulls cryptography and the ACME client: imported only with --https-port
    from relay_server.tls.setup import TLSRuntime

log = logging.getLogger("relay_server")

#: Seconds, after the drain, that connections still open get before they are cancelled
#: (agent websockets saying goodbye, responses already cut off being torn down).
SHUTDOWN_TAIL = 5.0

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


async def _drain(runner: web.BaseRunner, relay: Relay, grace: float, hurry: asyncio.Event) -> None:
    """Graceful stop: refuse new work, let requests in flight finish for up to ``grace`` s, cut the rest.

    The listening sockets close first (a new process can bind the port at
    once); agents hear GOAWAY(NO_ERROR) and connect again, to the next process,
    while their streams here run on.  Whatever outlives the grace is cut off
    mid-body, so its caller sees an error, never a short response that looks whole.
    """
    for site in list(runner.sites):
        await site.stop()
    # Keep-alive connections stay open (aiohttp's pre_shutdown would cut responses in
    # progress); a new request on one gets 503 "restarting" and Connection: close.
    told = relay.begin_shutdown()
    log.info(
        "stopping: listeners closed, %d agent(s) told to reconnect, %d request(s) in flight (grace %gs)",
        told, relay.in_flight, grace,
    )
    if not await relay.wait_idle(grace, hurry):
        log.warning("stopping: %d request(s) still running: cutting them off", relay.in_flight)
    closed = relay.close_tunnels()
    log.info("stopped: %d agent connection(s) closed", closed)


async def serve(config: RelayConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGINT/SIGTERM (or cancellation)."""
    fleet = None
    if config.cluster:  # a fleet node: names and tokens live in Redis, other nodes reach us on --internal-port
        from relay_server.fleet.node import FleetNode, FleetStartError

        try:
            fleet = FleetNode(config)
        except FleetStartError as exc:
            raise StartupError(str(exc)) from None
    # Metrics for /_relay/metrics and the access/event log, fed by the relay's hooks.
    relay = Relay(
        config,
        observer=Observers([RelayMetrics(), EventLog(agent_events=config.log_format == "json")]),
        registry=fleet.registry if fleet is not None else None,
        tokens=fleet.tokens if fleet is not None else None,
    )
    relay.fleet = fleet
    tls: TLSRuntime | None = None
    if config.https_port:
        from relay_server.tls.setup import TLSSetupError, build_tls

        try:
            tls = build_tls(config, relay)
        except TLSSetupError as exc:
            raise StartupError(str(exc)) from None
    app = relay.make_app()
    if tls is not None and tls.middleware is not None:
        app.middlewares.append(tls.middleware)
    if fleet is not None:
        try:
            await fleet.start(relay)
        except FleetStartError as exc:
            raise StartupError(str(exc)) from None
    paste = first_start_token(relay, tls) if fleet is None or fleet.prints_token else None
    proxied = None
    if config.proxy_protocol:  # a TCP balancer in front: each connection opens with the client's address
        from relay_server.proxied import ProxyHeaderReader

        proxied = lambda inner: ProxyHeaderReader(inner, config)
    runner = GuardedRunner(  # web.AppRunner plus the request-head (slowloris) timeout
        app,
        header_timeout=config.header_timeout,
        observer=relay.observer,
        # Plain requests to tunnels skip aiohttp's request machinery; on the http listener only
        # when no middleware (the TLS setup's redirect and ACME answers) needs to see them.
        lean=lambda aiohttp_protocol: LeanFront(relay, aiohttp_protocol, plain=not app.middlewares),
        proxied=proxied,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        auto_decompress=False,  # request bodies pass byte for byte (Content-Encoding untouched)
        shutdown_timeout=SHUTDOWN_TAIL,  # the grace itself is spent in _drain, before cleanup
        max_line_size=config.max_url_bytes + PARSER_SLACK,
        max_field_size=config.max_header_bytes + PARSER_SLACK,
    )
    await runner.setup()
    try:
        if config.http_port:
            site = web.TCPSite(
                runner, config.host, config.http_port, backlog=1024, reuse_address=True,
                reuse_port=bool(config.cluster) or None,  # --workers: every worker listens on the same port
            )
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {config.host}:{config.http_port}: {exc.strerror or exc}") from None
        if tls is not None:
            from relay_server.tls.listener import ListenError

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
            if config.log_format == "json":  # stderr carries JSON lines only
                log.warning("no tokens yet: created one; connect an agent with the line printed on stdout")
            else:
                print("No tokens yet: created one. Connect an agent with:", file=sys.stderr)
            print(paste, flush=True)
        stop, hurry = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:  # the first signal drains, a second one cuts the grace short
            (hurry if stop.is_set() else stop).set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal)
            except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
                pass
        if ready is not None:
            ready.set()
        await stop.wait()
        await _drain(runner, relay, config.shutdown_grace, hurry)
    finally:
        if tls is not None:
            await tls.close()
        await runner.cleanup()
        if fleet is not None:
            await fleet.close()  # gives our names up: other nodes stop routing here at once

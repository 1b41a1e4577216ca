"""``relay-client``: options in, an ``Agent`` running, one clear line out."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Optional

import typer

from relay_client import __version__
from relay_client.settings import LOCAL_CONNECTION_LIMIT, SHUTDOWN_GRACE, AgentConfig
from relay_client.agent_main import RunSpec, configure_logging, run_agent
from relay_client.check import register as register_check
from relay_client.inspector.address import DEFAULT_INSPECT_HOST, DEFAULT_INSPECT_PORT, parse_inspect_addr
from relay_client.errors import AgentError
from relay_client.target import TargetError, parse_target
from relay_protocol.limits import DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, MAX_WINDOW, MIN_WINDOW
from relay_protocol.relaunch import allow as allow_relaunch, relaunch

app = typer.Typer(
    help="localrelay agent: exposes a local HTTP server through a relay.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"relay-client: error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relay-client {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """localrelay agent."""


@app.command()
def http(
    port_or_url: Annotated[str, typer.Argument(metavar="PORT_OR_URL", help="5003, localhost:5003, http://127.0.0.1:5003 or https://...")],
    server: Annotated[
        Optional[list[str]],
        typer.Option("--server", envvar="RELAY_SERVER", help="Relay base URL (https:// means wss://); repeat to list fallbacks."),
    ] = None,
    token: Annotated[Optional[str], typer.Option(envvar="RELAY_TOKEN", help="Agent token from 'relay-server token create'.")] = None,
    subdomain: Annotated[Optional[str], typer.Option(help="Requested name (default: assigned by the relay).")] = None,
    cacert: Annotated[Optional[str], typer.Option(help="Trust this CA file for the relay's certificate.")] = None,
    host_header: Annotated[
        str,
        typer.Option(help="Host sent to the local server: preserve, rewrite (to the local host:port) or a literal value."),
    ] = "preserve",
    rewrite_urls: Annotated[
        bool,
        typer.Option(help="Rewrite http://localhost:PORT to the public URL in plugin manifests, OpenAPI and OAuth documents."),
    ] = False,
    cors: Annotated[bool, typer.Option(help="Answer CORS preflights and add CORS headers for the local server.")] = False,
    basic_auth: Annotated[
        Optional[str], typer.Option(metavar="USER:PASS", help="Require these credentials at the relay for this tunnel.")
    ] = None,
    allow_ip: Annotated[
        Optional[list[str]], typer.Option(metavar="CIDR", help="Allow only these client addresses (repeatable).")
    ] = None,
    inspect: Annotated[
        str, typer.Option(metavar="ADDR", help="Local inspector (web page + ngrok-compatible JSON API), loopback only.")
    ] = f"{DEFAULT_INSPECT_HOST}:{DEFAULT_INSPECT_PORT}",
    no_inspect: Annotated[bool, typer.Option("--no-inspect", help="Do not start the inspector.")] = False,
    log_format: Annotated[str, typer.Option(help="Console format: text or json (one object a line).")] = "text",
    shutdown_grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds requests in flight get to finish on Ctrl-C/SIGTERM (a second Ctrl-C quits at once)."),
    ] = SHUTDOWN_GRACE,
    local_connections: Annotated[
        int,
        typer.Option(
            min=1,
            help="Most connections to the local server at once; each request in flight holds one, "
            "an SSE stream or websocket for as long as it lasts (raise it for many MCP clients).",
        ),
    ] = LOCAL_CONNECTION_LIMIT,
    stream_window: Annotated[
        int,
        typer.Option(
            min=MIN_WINDOW,
            max=MAX_WINDOW,
            help="Request body bytes the relay may send ahead of the local server, per stream "
            "(bounds what an upload can make the agent hold).",
        ),
    ] = DEFAULT_STREAM_WINDOW,
    connection_window: Annotated[
        int,
        typer.Option(min=MIN_WINDOW, max=MAX_WINDOW, help="The same over all streams of the tunnel at once."),
    ] = DEFAULT_CONNECTION_WINDOW,
    verbose: Annotated[
        bool, typer.Option("-v", "--verbose", help="Also print every request and response head.")
    ] = False,
) -> None:
    """Expose a local HTTP server at a public URL.

    Prints `Forwarding <public_url> -> <local_url>` once the tunnel is up, then
    one line per proxied request.
    """
    configure_logging(verbose)
    try:
        target = parse_target(port_or_url)
    except TargetError as exc:
        _fail(str(exc), 2)
    if log_format not in ("text", "json"):
        _fail(f"--log-format must be text or json, not {log_format!r}", 2)
    if not host_header.strip() or any(c in host_header for c in "\r\n"):
        _fail("--host-header must be preserve, rewrite or a host name", 2)
    if basic_auth is not None and (":" not in basic_auth or not basic_auth.split(":", 1)[0]):
        _fail("--basic-auth must be USER:PASS", 2)
    for cidr in allow_ip or []:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            _fail(f"--allow-ip: {exc}", 2)
    servers = server or ["http://localhost:8080"]
    config = AgentConfig(
        target=target,
        servers=servers,
        token=token,
        subdomain=subdomain,
        cacert=cacert,
        host_header=host_header,
        rewrite_urls=rewrite_urls,
        cors=cors,
        basic_auth=basic_auth,
        allow_ip=list(allow_ip or []),
        shutdown_grace=shutdown_grace,
        local_connections=local_connections,
        stream_window=stream_window,
        connection_window=connection_window,
    )

    inspect_at: tuple[str, int] | None = None
    if not no_inspect:
        try:
            inspect_at = parse_inspect_addr(inspect)
        except ValueError as exc:
            _fail(str(exc), 2)
    spec = RunSpec(config=config, inspect_at=inspect_at, log_format=log_format, verbose=verbose, host_header=host_header)
    relaunch("relay_client.agent_main", spec)  # from the console entry point: exec, this call does not return
    try:
        run_agent(spec)
    except AgentError as exc:
        _fail(str(exc), exc.exit_code)


register_check(app)


def main() -> None:
    """Console-script entry point."""
    allow_relaunch()  # ``http`` runs the agent in a fresh interpreter, without the option parser's imports
    app(prog_name="relay-client")

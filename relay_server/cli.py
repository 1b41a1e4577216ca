"""``relay-server``: options in, ``RelayConfig`` out, nothing else."""

from __future__ import annotations

import ipaddress
import logging
import time
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from relay_server import __version__
from relay_protocol.limits import DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, MAX_HEAD_SIZE, MAX_WINDOW, MIN_WINDOW
from relay_server.config import (
    DEFAULT_AUTH_FAILURES_PER_MINUTE,
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_TUNNELS_PER_TOKEN,
    DEFAULT_NAME_GRACE,
    MAX_AGENT_MESSAGE,
    SHUTDOWN_GRACE,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_URL_BYTES,
    DEFAULT_RESPONSE_TIMEOUT,
    LETS_ENCRYPT_DIRECTORY,
    RelayConfig,
    default_data_dir,
)
from relay_server.names import InvalidName, validate_name
from relay_server.tokens import TokenStore, TokenStoreError, format_time, parse_expiry
from relay_protocol.relaunch import allow as allow_relaunch, relaunch

app = typer.Typer(
    help="localrelay relay: puts agents' local servers on NAME.<domain>.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
token_app = typer.Typer(help="Create, list and revoke agent and admin tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"relay-server: error: {message}", err=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"relay-server {__version__}")
        raise typer.Exit()


def _load_config_file(ctx: typer.Context, value: Optional[Path]) -> Optional[Path]:
    """Make the TOML file's keys the defaults of the other options (the command line wins)."""
    if value is None:
        return None
    try:
        data: dict[str, Any] = tomllib.loads(value.read_text("utf-8"))
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {value}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise typer.BadParameter(f"{value} is not valid TOML: {exc}") from None
    # Keys are the options' names (``http-port`` or ``http_port``, ``open``, ``tls-cert``...).
    by_option: dict[str, str] = {}
    for param in ctx.command.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--") and param.name:
                by_option[opt[2:].replace("-", "_")] = param.name
    defaults: dict[str, Any] = {}
    for key, setting in data.items():
        name = by_option.get(key.replace("-", "_"))
        if name is None or name == "config_file":
            raise typer.BadParameter(f"{value}: unknown setting {key!r} (use the names of serve's options)")
        defaults[name] = setting
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """localrelay relay server."""


DataDir = Annotated[
    Path,
    typer.Option("--data-dir", envvar="RELAY_DATA_DIR", help="Token store, certificates and keys.", show_default=False),
]


@app.command()
def serve(
    config_file: Annotated[
        Optional[Path],
        typer.Option(
            "--config", envvar="RELAY_CONFIG", help="TOML file with the same keys as these options.",
            callback=_load_config_file, is_eager=True,
        ),
    ] = None,
    domain: Annotated[str, typer.Option(envvar="RELAY_DOMAIN", help="Base domain; tunnel NAME is NAME.<domain>.")] = "localhost",
    host: Annotated[str, typer.Option(envvar="RELAY_HOST", help="Listen address.")] = "0.0.0.0",
    http_port: Annotated[
        int, typer.Option(envvar="RELAY_HTTP_PORT", min=0, max=65535, help="Plain-HTTP listener (public traffic and agents); 0 disables.")
    ] = 8080,
    data_dir: DataDir = default_data_dir(),
    open_relay: Annotated[
        bool, typer.Option("--open", help="Accept agents without a token (local development only).")
    ] = False,
    response_timeout: Annotated[
        float, typer.Option(envvar="RELAY_RESPONSE_TIMEOUT", min=0.1, help="Seconds to wait for an agent's response head before 504.")
    ] = DEFAULT_RESPONSE_TIMEOUT,
    trusted_proxy: Annotated[
        Optional[list[str]],
        typer.Option("--trusted-proxy", help="CIDR of a proxy in front of the relay whose X-Forwarded-* to keep (repeatable)."),
    ] = None,
    proxy_protocol: Annotated[
        bool,
        typer.Option(
            "--proxy-protocol",
            envvar="RELAY_PROXY_PROTOCOL",
            help="A TCP load balancer (one of --trusted-proxy) opens every public connection with a PROXY header "
            "(v1 or v2) naming the client; connections without one are closed.",
        ),
    ] = False,
    public_port: Annotated[
        Optional[int], typer.Option(min=1, max=65535, help="Port shown in public URLs, if a proxy maps another port to ours.")
    ] = None,
    max_streams: Annotated[
        int, typer.Option(min=1, help="Requests in flight per tunnel; more are answered 503 at once.")
    ] = DEFAULT_MAX_STREAMS,
    max_url_bytes: Annotated[int, typer.Option(min=256, help="Longest request target; longer gets 414.")] = DEFAULT_MAX_URL_BYTES,
    max_header_bytes: Annotated[
        int, typer.Option(min=1024, max=MAX_HEAD_SIZE // 2, help="Most request header bytes; more gets 431.")
    ] = DEFAULT_MAX_HEADER_BYTES,
    stream_window: Annotated[
        int, typer.Option(min=MIN_WINDOW, max=MAX_WINDOW, help="Flow-control window per stream (bytes in flight).")
    ] = DEFAULT_STREAM_WINDOW,
    connection_window: Annotated[
        int, typer.Option(min=MIN_WINDOW, max=MAX_WINDOW, help="Flow-control window per agent connection.")
    ] = DEFAULT_CONNECTION_WINDOW,
    max_body_bytes: Annotated[
        int, typer.Option(min=0, help="Largest request body forwarded, in bytes (0: no limit); more gets 413.")
    ] = DEFAULT_MAX_BODY_BYTES,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client has to send a complete request head (slowloris defence).")
    ] = DEFAULT_HEADER_TIMEOUT,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request body may stall (no byte arriving) before 408.")
    ] = DEFAULT_BODY_TIMEOUT,
    max_tunnels_per_token: Annotated[
        int, typer.Option(min=0, help="Tunnels one token may hold at once (0: no limit).")
    ] = DEFAULT_MAX_TUNNELS_PER_TOKEN,
    auth_failures_per_minute: Annotated[
        int, typer.Option(min=1, help="Failed agent logins per source address per minute before 429.")
    ] = DEFAULT_AUTH_FAILURES_PER_MINUTE,
    max_agent_message_bytes: Annotated[
        int, typer.Option(min=64 * 1024, help="Largest websocket message accepted from an agent.")
    ] = MAX_AGENT_MESSAGE,
    shutdown_grace: Annotated[
        float, typer.Option(min=0, help="Seconds in-flight requests get to finish on SIGTERM before the relay exits.")
    ] = SHUTDOWN_GRACE,
    name_grace: Annotated[
        float, typer.Option(min=0, help="Seconds a lost agent's name stays held for the same token to reclaim.")
    ] = DEFAULT_NAME_GRACE,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[str, typer.Option(help="text or json (one JSON object a line).")] = "text",
    https_port: Annotated[
        Optional[int], typer.Option(envvar="RELAY_HTTPS_PORT", min=1, max=65535, help="TLS listener (public traffic and agents over wss://).")
    ] = None,
    tls_cert: Annotated[
        Optional[list[Path]], typer.Option("--tls-cert", help="PEM certificate chain (wildcard or per host; repeatable, reloaded when changed).")
    ] = None,
    tls_key: Annotated[
        Optional[list[Path]], typer.Option("--tls-key", help="PEM key of the --tls-cert in the same position (omit if the key is in that file).")
    ] = None,
    acme_email: Annotated[
        Optional[str], typer.Option(help="Get certificates automatically (ACME) per hostname; contact address for the CA.")
    ] = None,
    acme_directory: Annotated[str, typer.Option(help="ACME directory URL.")] = LETS_ENCRYPT_DIRECTORY,
    acme_ca: Annotated[Optional[Path], typer.Option(help="Extra CA file to trust for the ACME directory.")] = None,
    acme_challenge: Annotated[
        Optional[str], typer.Option(help="http-01 or tls-alpn-01 (default: http-01 when the HTTP listener is on).")
    ] = None,
    self_signed: Annotated[
        bool, typer.Option("--self-signed", help="Local development HTTPS from a CA made in the data dir (port 8443 by default).")
    ] = False,
    redirect_https: Annotated[
        bool, typer.Option("--redirect-https", help="Redirect plain-HTTP requests for tunnels to https://.")
    ] = False,
    public_scheme: Annotated[
        Optional[str], typer.Option(help="Scheme of public URLs when a proxy in front terminates TLS: https or http.")
    ] = None,
    cluster: Annotated[
        Optional[str],
        typer.Option(envvar="RELAY_CLUSTER", help="redis://HOST:PORT/DB: join a relay fleet that shares tunnels and tokens through Redis."),
    ] = None,
    advertise: Annotated[
        Optional[str],
        typer.Option(
            envvar="RELAY_ADVERTISE",
            help="URL where other nodes reach this node's internal listener (default http://127.0.0.1:<internal-port> "
            "on a wildcard or loopback --host, else http://<host>:<internal-port>).",
        ),
    ] = None,
    internal_port: Annotated[
        Optional[int],
        typer.Option(min=1, max=65535, help="Listener for node-to-node forwarding (fleet; authenticated with --cluster-secret)."),
    ] = None,
    cluster_secret: Annotated[
        Optional[str],
        typer.Option(envvar="RELAY_CLUSTER_SECRET", help="Secret shared by the fleet's nodes (authenticates node-to-node requests).", show_default=False),
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes sharing the public ports on this machine, each a fleet node (needs --cluster; TLS only with --tls-cert files).")
    ] = 1,
) -> None:
    """Run the public relay."""
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        _fail(f"--log-level must be debug, info, warning or error, not {log_level!r}", 2)
    if log_format not in ("text", "json"):
        _fail(f"--log-format must be text or json, not {log_format!r}", 2)
    from relay_server.logs import configure_logging

    configure_logging(level, log_format)  # every record on stderr, human or one JSON object a line
    try:
        proxies = [ipaddress.ip_network(c, strict=False) for c in trusted_proxy or []]
    except ValueError as exc:
        _fail(f"--trusted-proxy: {exc}", 2)
    if proxy_protocol and not proxies:
        _fail("--proxy-protocol needs --trusted-proxy naming the load balancer's addresses", 2)
    domain = domain.strip().lower().rstrip(".")
    if not domain or "/" in domain or ":" in domain:
        _fail(f"--domain must be a host name like example.com, not {domain!r}", 2)
    from relay_server.tls.options import TLSOptionError, TLSOptions

    try:
        tls_fields = TLSOptions(
            http_port, https_port, tls_cert, tls_key, acme_email, acme_directory, acme_ca, acme_challenge,
            self_signed, redirect_https, public_scheme,
        ).config_fields()
    except TLSOptionError as exc:
        _fail(str(exc), 2)
    fleet_fields: dict[str, Any] = {}
    if cluster or workers != 1 or internal_port is not None or advertise:
        from relay_server.fleet.options import MIN_SECRET_LENGTH, FleetOptionError, FleetOptions

        try:
            fleet_fields = FleetOptions(
                cluster, advertise, internal_port, cluster_secret, workers, host, http_port, tls_fields.get("https_port"),
                certificates="acme" if acme_email else "self-signed" if self_signed else "files" if tls_cert else None,
            ).config_fields()
        except FleetOptionError as exc:
            _fail(str(exc), 2)
        if cluster and len(cluster_secret or "") < MIN_SECRET_LENGTH:
            logging.getLogger("relay_server").warning(
                "--cluster-secret is shorter than %d characters: use a long random one (openssl rand -hex 32)",
                MIN_SECRET_LENGTH,
            )
    config = RelayConfig(
        domain=domain,
        host=host,
        http_port=http_port,
        data_dir=data_dir.expanduser(),
        open=open_relay,
        response_timeout=response_timeout,
        trusted_proxies=proxies,
        proxy_protocol=proxy_protocol,
        public_port=public_port,
        max_streams=max_streams,
        max_url_bytes=max_url_bytes,
        max_header_bytes=max_header_bytes,
        stream_window=stream_window,
        connection_window=connection_window,
        max_body_bytes=max_body_bytes,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_tunnels_per_token=max_tunnels_per_token,
        auth_failures_per_minute=auth_failures_per_minute,
        max_agent_message=max_agent_message_bytes,
        shutdown_grace=shutdown_grace,
        name_grace=name_grace,
        log_format=log_format,
        **tls_fields,
        **fleet_fields,
    )
    if config.workers > 1:  # this process only supervises; each worker is a full `serve`
        from relay_server.fleet.workers import supervise

        raise typer.Exit(supervise(config))
    # From the console entry point: exec a fresh interpreter for the relay (this call does not return).
    relaunch("relay_server.serve_main", (level, log_format, config))
    from relay_server.serve import StartupError, serve as run_relay
    from relay_protocol.eventloop import run

    try:
        run(run_relay(config))
    except StartupError as exc:
        _fail(str(exc))
    except TokenStoreError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        pass


ClusterOption = Annotated[
    Optional[str],
    typer.Option(envvar="RELAY_CLUSTER", help="redis://HOST:PORT/DB: the fleet's tokens in Redis (instead of --data-dir)."),
]


def _token_store(data_dir: Path, cluster: Optional[str]) -> TokenStore:
    """The data dir's token file, or with --cluster the fleet's tokens in Redis."""
    if not cluster:
        return TokenStore(data_dir.expanduser())
    from relay_server.fleet.options import FleetOptionError, check_redis_url
    from relay_server.fleet.tokens import RedisTokenStore

    try:
        check_redis_url(cluster)
    except FleetOptionError as exc:
        raise TokenStoreError(str(exc)) from None
    return RedisTokenStore(cluster)


@token_app.command("create")
def token_create(
    subdomain: Annotated[
        Optional[list[str]],
        typer.Option(help="Reserve this name for the token (repeatable); the token may then open tunnels under these names only."),
    ] = None,
    label: Annotated[str, typer.Option(help="A note to recognise the token by in 'token list'.")] = "",
    expires: Annotated[
        Optional[str],
        typer.Option(help="Expiry: a duration (30m, 12h, 7d, 2w) or an ISO date/datetime in UTC (2027-01-31, 2027-01-31T18:00)."),
    ] = None,
    admin: Annotated[
        bool, typer.Option("--admin", help="A token for the relay's admin endpoints (metrics), not for agents.")
    ] = False,
    data_dir: DataDir = default_data_dir(),
    cluster: ClusterOption = None,
) -> None:
    """Create a token and print it (it is shown only this once)."""
    try:
        names = [validate_name(name) for name in subdomain or []]
        expiry = parse_expiry(expires) if expires is not None else None
        token, _ = _token_store(data_dir, cluster).create(label=label, subdomains=names, expires=expiry, admin=admin)
    except (InvalidName, ValueError, TokenStoreError) as exc:
        _fail(str(exc))
    typer.echo(token)


@token_app.command("list")
def token_list(data_dir: DataDir = default_data_dir(), cluster: ClusterOption = None) -> None:
    """List tokens by id (the tokens themselves are never stored)."""
    try:
        records = _token_store(data_dir, cluster).records()
    except TokenStoreError as exc:
        _fail(str(exc))
    if not records:
        typer.echo("no tokens", err=True)
        return
    now = time.time()
    rows = [("ID", "SCOPE", "SUBDOMAINS", "CREATED", "EXPIRES", "LABEL")]
    for r in records:
        expires = r.expires_text() + (" (expired)" if r.expired(now) else "")
        rows.append((r.id, r.scope, ",".join(r.names) or "-", format_time(r.created), expires, r.label))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The id shown by 'token list'.")],
    data_dir: DataDir = default_data_dir(),
    cluster: ClusterOption = None,
) -> None:
    """Revoke a token by id; its live tunnels are disconnected within about a second."""
    try:
        removed = _token_store(data_dir, cluster).revoke(token_id)
    except TokenStoreError as exc:
        _fail(str(exc))
    if not removed:
        _fail(f"no token with id {token_id!r}")
    typer.echo(f"revoked {token_id}", err=True)


def main() -> None:
    """Console-script entry point."""
    allow_relaunch()  # ``serve`` runs the relay in a fresh interpreter, without the option parser's imports
    app(prog_name="relay-server")

"""Everything the relay can be told, in one typed object (the CLI only fills it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from relay_protocol.limits import DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, seconds_from_env

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Seconds the relay waits for an agent's first response byte before answering 504.
DEFAULT_RESPONSE_TIMEOUT = 60.0

#: Seconds an agent has to send HELLO after the websocket opens.
HANDSHAKE_TIMEOUT = 10.0

#: Seconds between websocket heartbeats to agents; no pong within half of it closes the
#: connection, so a vanished agent (no FIN, no RST) is noticed within 1.5x this.
#: ``RELAY_HEARTBEAT_INTERVAL`` overrides it (a test knob, not a feature).
HEARTBEAT_INTERVAL = seconds_from_env("RELAY_HEARTBEAT_INTERVAL", 20.0)

#: Largest websocket message accepted from an agent.
MAX_AGENT_MESSAGE = 4 * 1024 * 1024

#: Seconds in-flight requests get to finish when the relay stops (SIGTERM).
SHUTDOWN_GRACE = 20.0

#: Seconds a disconnected agent's name stays reserved for the same token to reclaim it.
DEFAULT_NAME_GRACE = 10.0

#: Tunnels one token may hold at once (0: no limit).
DEFAULT_MAX_TUNNELS_PER_TOKEN = 10

#: Failed agent authentications per source address per minute before 429.
DEFAULT_AUTH_FAILURES_PER_MINUTE = 10

#: Seconds a public client has to send a complete request head (slowloris defence).
DEFAULT_HEADER_TIMEOUT = 10.0

#: Seconds a request body may go without a byte arriving before 408 (slow-body defence).
DEFAULT_BODY_TIMEOUT = 60.0

#: Largest request body forwarded to a tunnel, in bytes (0: no limit; bodies stream, never buffered).
DEFAULT_MAX_BODY_BYTES = 0

#: Longest request target (path + query) forwarded; longer gets 414.
DEFAULT_MAX_URL_BYTES = 16 * 1024

#: Most header bytes (names + values) in one public request; more gets 431.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024

#: Requests in flight on one tunnel; more get 503 at once instead of queueing.
DEFAULT_MAX_STREAMS = 1000

#: ACME directory used unless --acme-directory names another (Let's Encrypt production).
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"


def default_data_dir() -> Path:
    """Where tokens live unless --data-dir says otherwise."""
    return Path.home() / ".local" / "share" / "relay-server"


@dataclass(slots=True)
class RelayConfig:
    """Settings of one relay process."""

    domain: str = "localhost"
    host: str = "0.0.0.0"
    http_port: int = 8080
    data_dir: Path = field(default_factory=default_data_dir)
    open: bool = False
    response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    #: Proxies whose X-Forwarded-For chain we extend instead of replacing.
    trusted_proxies: list[IPNetwork] = field(default_factory=list)
    #: Public connections come from a TCP balancer (one of ``trusted_proxies``) opening each with a PROXY header.
    proxy_protocol: bool = False
    #: Port shown in public URLs (when a proxy or NAT maps another port to ours).
    public_port: int | None = None
    max_streams: int = DEFAULT_MAX_STREAMS
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: Receive windows the relay announces to agents (bytes a stream/connection may have in flight).
    stream_window: int = DEFAULT_STREAM_WINDOW
    connection_window: int = DEFAULT_CONNECTION_WINDOW
    #: Largest websocket message accepted from an agent.
    max_agent_message: int = MAX_AGENT_MESSAGE
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_tunnels_per_token: int = DEFAULT_MAX_TUNNELS_PER_TOKEN
    auth_failures_per_minute: int = DEFAULT_AUTH_FAILURES_PER_MINUTE
    shutdown_grace: float = SHUTDOWN_GRACE
    name_grace: float = DEFAULT_NAME_GRACE
    #: ``text`` or ``json`` (one object a line): the relay's log lines.
    log_format: str = "text"
    #: TLS listener port (None: no HTTPS listener).
    https_port: int | None = None
    #: PEM files for the TLS listener: (certificate chain, its key or None when the key is in the chain file).
    tls_files: list[tuple[Path, Path | None]] = field(default_factory=list)
    #: Automatic certificates (ACME) when set: the account's contact address.
    acme_email: str | None = None
    acme_directory: str = LETS_ENCRYPT_DIRECTORY
    #: Extra CA file trusted for the ACME directory (besides the system store).
    acme_ca: Path | None = None
    #: "http-01" or "tls-alpn-01"; None: HTTP-01 when the HTTP listener is on, else TLS-ALPN-01.
    acme_challenge: str | None = None
    #: Issue certificates from a local development CA in the data dir.
    self_signed: bool = False
    #: Answer plain-HTTP requests for tunnels with a redirect to https://.
    redirect_https: bool = False
    #: Scheme of public URLs when a proxy in front terminates TLS (None: https exactly when https_port is set).
    public_scheme: str | None = None
    #: Fleet: ``redis://HOST:PORT/DB`` of the Redis the nodes share tunnels and tokens through (None: a lone relay).
    cluster: str | None = None
    #: Fleet: URL where other nodes reach this node's internal listener (``http://HOST:PORT``).
    advertise: str | None = None
    #: Fleet: port of the internal listener for node-to-node forwarding (None: off).
    internal_port: int | None = None
    #: Fleet: shared secret that authenticates node-to-node requests.
    cluster_secret: str | None = None
    #: Processes sharing the public ports on this machine (each one a fleet node).
    workers: int = 1

    @property
    def url_scheme(self) -> str:
        """``https`` or ``http``: the scheme public URLs use."""
        return self.public_scheme or ("https" if self.https_port else "http")

    @property
    def advertised_port(self) -> int:
        """The port public URLs name."""
        if self.public_port is not None:
            return self.public_port
        if self.url_scheme == "https":
            return self.https_port or 443
        return self.http_port

    def public_url(self, name: str | None = None) -> str:
        """``http(s)://NAME.domain[:port]``, or the relay's own base URL without a name."""
        host = f"{name}.{self.domain}" if name else self.domain
        port = self.advertised_port
        scheme = self.url_scheme
        default = 443 if scheme == "https" else 80
        return f"{scheme}://{host}" if port == default else f"{scheme}://{host}:{port}"

    def is_trusted_proxy(self, address: str | None) -> bool:
        """Whether the direct peer is a proxy allowed to tell us the client address."""
        if not address or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted_proxies)

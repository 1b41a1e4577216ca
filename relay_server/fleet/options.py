"""The fleet options of ``relay-server serve``, checked: one clear sentence for each mistake.

``--cluster redis://HOST:PORT/DB`` makes the relay a fleet node; a node needs
``--internal-port`` (where the other nodes forward requests to it) and
``--cluster-secret`` (what those requests are authenticated with); other nodes
reach it at ``--advertise`` (default ``http://127.0.0.1:<internal-port>`` when
listening on a wildcard or loopback address, else ``http://<host>:<internal-port>``).
``--workers N`` needs ``--cluster``: each worker is a node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Most worker processes ``--workers`` starts (more than cores helps nothing).
MAX_WORKERS = 64

#: Below this many characters a cluster secret is guessable: the relay warns.
MIN_SECRET_LENGTH = 16

_REDIS_SCHEMES = ("redis", "rediss", "unix")

#: Listen addresses whose node is reached on loopback unless --advertise says otherwise.
_LOCAL_HOSTS = frozenset({"", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost"})


class FleetOptionError(ValueError):
    """A fleet option is wrong; the message is the line the user sees."""


@dataclass(frozen=True, slots=True)
class FleetOptions:
    """The fleet options as typed (before checking)."""

    cluster: str | None
    advertise: str | None
    internal_port: int | None
    cluster_secret: str | None
    workers: int
    host: str
    http_port: int
    https_port: int | None
    #: Where the TLS listener's certificates come from: "files", "acme", "self-signed" (None: no TLS listener).
    certificates: str | None = None

    def config_fields(self) -> dict[str, object]:
        """RelayConfig's fleet fields, or FleetOptionError."""
        if self.workers < 1 or self.workers > MAX_WORKERS:
            raise FleetOptionError(f"--workers must be between 1 and {MAX_WORKERS}, not {self.workers}")
        if not self.cluster:
            if self.workers > 1:
                raise FleetOptionError(
                    "--workers needs --cluster: every worker is a fleet node sharing tunnels through Redis"
                )
            for value, option in ((self.internal_port, "--internal-port"), (self.advertise, "--advertise")):
                if value:
                    raise FleetOptionError(f"{option} is a fleet option: it needs --cluster redis://HOST:PORT/DB")
            return {"cluster": None, "advertise": None, "internal_port": None, "cluster_secret": None, "workers": 1}
        check_redis_url(self.cluster)
        if not self.cluster_secret:
            raise FleetOptionError(
                "--cluster needs --cluster-secret (or RELAY_CLUSTER_SECRET): nodes prove requests to each other with it"
            )
        if self.internal_port is None:
            raise FleetOptionError(
                "--cluster needs --internal-port: the port other nodes forward this node's tunnel traffic to"
            )
        if self.workers > 1 and self.https_port and self.certificates != "files":
            raise FleetOptionError(
                f"--workers with {'--acme-email' if self.certificates == 'acme' else '--self-signed'}: every worker "
                "would issue its own certificates; give the workers the same files with --tls-cert/--tls-key "
                "(from certbot or your CA), or run --workers 1"
            )
        internal = range(self.internal_port, self.internal_port + self.workers)
        if internal.stop - 1 > 65535:
            raise FleetOptionError(f"--internal-port {self.internal_port} + {self.workers} workers passes port 65535")
        for port, option in ((self.http_port, "--http-port"), (self.https_port, "--https-port")):
            if port and port in internal:
                which = "--internal-port" if self.workers == 1 else f"the workers' internal ports {internal.start}-{internal.stop - 1}"
                raise FleetOptionError(f"{which} and {option} are both {port}: they must differ")
        advertise = check_advertise(self.advertise) if self.advertise else default_advertise(self.host, self.internal_port)
        return {
            "cluster": self.cluster,
            "advertise": advertise,
            "internal_port": self.internal_port,
            "cluster_secret": self.cluster_secret,
            "workers": self.workers,
        }


def check_redis_url(url: str) -> None:
    """FleetOptionError unless ``url`` is a Redis URL the client can use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FleetOptionError(f"--cluster {url!r} is not a Redis URL (redis://HOST:PORT/DB): {exc}") from None
    if parts.scheme not in _REDIS_SCHEMES:
        raise FleetOptionError(f"--cluster must be a redis://HOST:PORT/DB URL (or rediss://, unix://), not {url!r}")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise FleetOptionError(f"--cluster {url!r} names no host: use redis://HOST:PORT/DB")
        if port == 0:
            raise FleetOptionError(f"--cluster {url!r}: port 0 is not a Redis port")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise FleetOptionError(f"--cluster {url!r}: the database after the port must be a number (redis://HOST:PORT/0)")
    elif not parts.path:
        raise FleetOptionError(f"--cluster {url!r} names no socket path: use unix:///path/to/redis.sock")


def check_advertise(url: str) -> str:
    """``http://HOST:PORT`` as given (without a trailing slash), or FleetOptionError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FleetOptionError(f"--advertise {url!r} is not a URL (http://HOST:PORT): {exc}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise FleetOptionError(
            f"--advertise must be http://HOST:PORT (the internal listener speaks plain HTTP), not {url!r}"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise FleetOptionError(f"--advertise must be just http://HOST:PORT, not {url!r}")
    if port is None:
        raise FleetOptionError(f"--advertise {url!r} needs the internal listener's port: http://HOST:PORT")
    return f"http://{parts.netloc}"


def default_advertise(host: str, internal_port: int) -> str:
    """Where other nodes reach us when --advertise is not given."""
    if host.strip().lower() in _LOCAL_HOSTS:
        return f"http://127.0.0.1:{internal_port}"
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"http://[{host}]:{internal_port}"
    except ValueError:
        pass
    return f"http://{host}:{internal_port}"


def shift_advertise(url: str, offset: int) -> str:
    """The advertise URL of worker ``offset``: the same host, the port plus ``offset``."""
    parts = urlsplit(url)
    assert parts.port is not None and parts.hostname is not None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{parts.port + offset}"

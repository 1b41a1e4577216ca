"""Check the TLS options of ``relay-server serve`` together and turn them into ``RelayConfig`` fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay_server.tls.acme.challenges import HTTP01, TLS_ALPN01

#: TLS port used by --self-signed when --https-port is not given.
SELF_SIGNED_PORT = 8443


class TLSOptionError(ValueError):
    """Options that do not fit together; the message names them."""


@dataclass(slots=True)
class TLSOptions:
    """The TLS options as typed on the command line."""

    http_port: int
    https_port: int | None = None
    tls_cert: list[Path] | None = None
    tls_key: list[Path] | None = None
    acme_email: str | None = None
    acme_directory: str = ""
    acme_ca: Path | None = None
    acme_challenge: str | None = None
    self_signed: bool = False
    redirect_https: bool = False
    public_scheme: str | None = None

    def config_fields(self) -> dict[str, Any]:
        """Keyword arguments for ``RelayConfig``; TLSOptionError if the options contradict each other."""
        certs = [p.expanduser() for p in self.tls_cert or []]
        keys = [p.expanduser() for p in self.tls_key or []]
        https_port = self.https_port
        if self.self_signed and self.acme_email:
            raise TLSOptionError("--self-signed and --acme-email exclude each other: pick one source of certificates")
        if len(keys) > len(certs):
            raise TLSOptionError("more --tls-key than --tls-cert options: give one key per certificate (in the same order)")
        if https_port is None:
            if self.self_signed:
                https_port = SELF_SIGNED_PORT
            elif certs or self.acme_email:
                raise TLSOptionError("--tls-cert and --acme-email need --https-port (the TLS listener's port, e.g. 443)")
            elif self.redirect_https:
                raise TLSOptionError("--redirect-https needs an HTTPS listener (--https-port)")
        elif not (certs or self.acme_email or self.self_signed):
            raise TLSOptionError("--https-port needs certificates: --tls-cert/--tls-key, --acme-email or --self-signed")
        if https_port is not None and https_port == self.http_port:
            raise TLSOptionError(f"--https-port and --http-port are both {https_port}")
        if self.acme_email is not None:
            email = self.acme_email.strip()
            if "@" not in email or any(c.isspace() for c in email) or email.startswith("mailto:"):
                raise TLSOptionError(f"--acme-email must be an address like you@example.com, not {self.acme_email!r}")
        if not self.acme_directory.startswith(("https://", "http://")):
            raise TLSOptionError(f"--acme-directory must be an https:// URL, not {self.acme_directory!r}")
        if self.acme_ca is not None and not self.acme_email:
            raise TLSOptionError("--acme-ca only applies with --acme-email")
        challenge = self.acme_challenge
        if challenge is not None and challenge not in (HTTP01, TLS_ALPN01):
            raise TLSOptionError(f"--acme-challenge must be {HTTP01} or {TLS_ALPN01}, not {challenge!r}")
        if challenge == HTTP01 and not self.http_port:
            raise TLSOptionError("--acme-challenge http-01 needs the HTTP listener (--http-port is 0)")
        if self.public_scheme is not None and self.public_scheme not in ("http", "https"):
            raise TLSOptionError(f"--public-scheme must be http or https, not {self.public_scheme!r}")
        return {
            "https_port": https_port,
            "tls_files": [(cert, keys[i] if i < len(keys) else None) for i, cert in enumerate(certs)],
            "acme_email": self.acme_email.strip() if self.acme_email else None,
            "acme_directory": self.acme_directory,
            "acme_ca": self.acme_ca.expanduser() if self.acme_ca else None,
            "acme_challenge": challenge,
            "self_signed": self.self_signed,
            "redirect_https": self.redirect_https,
            "public_scheme": self.public_scheme,
        }

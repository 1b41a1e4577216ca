"""Per-tunnel access control enforced at the relay: basic auth and client address lists.

The agent asks for them in its HELLO options; the password never travels
or rests in clear (the agent sends SHA-256 of ``user:password``), and the
check happens at the relay, so unauthorised requests never reach the laptop.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import ipaddress
from dataclasses import dataclass, field

from aiohttp import web

from relay_server.config import IPNetwork, RelayConfig
from relay_server.pages import error_response

#: Most CIDRs one tunnel may list.
MAX_ALLOWED_NETWORKS = 100


class InvalidAccessOptions(ValueError):
    """The agent's access options are malformed; the message says which."""


def credentials_hash(user_and_password: str) -> str:
    """What the agent sends for ``--basic-auth USER:PASS``."""
    return hashlib.sha256(user_and_password.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class AccessPolicy:
    """Who may use one tunnel."""

    basic_auth_hash: str | None = None
    allowed: list[IPNetwork] = field(default_factory=list)

    @classmethod
    def from_options(cls, options: dict) -> AccessPolicy:
        """Parse HELLO options ``basic_auth`` (hex SHA-256) and ``allow_ip`` (list of CIDRs)."""
        digest = options.get("basic_auth")
        if digest is not None and (not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest)):
            raise InvalidAccessOptions("basic_auth must be a hex SHA-256 of 'user:password'")
        cidrs = options.get("allow_ip", [])
        if not isinstance(cidrs, list) or len(cidrs) > MAX_ALLOWED_NETWORKS:
            raise InvalidAccessOptions(f"allow_ip must be a list of at most {MAX_ALLOWED_NETWORKS} CIDRs")
        try:
            networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        except (TypeError, ValueError) as exc:
            raise InvalidAccessOptions(f"allow_ip: {exc}") from None
        return cls(digest, networks)

    @property
    def open(self) -> bool:
        """No restriction configured."""
        return self.basic_auth_hash is None and not self.allowed

    def check(self, request: web.BaseRequest, config: RelayConfig, name: str) -> web.Response | None:
        """None if the request may pass; otherwise the 401/403 to answer."""
        if self.allowed:
            address = client_address(request, config)
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is None or not any(ip in net for net in self.allowed):
                return error_response(
                    request, 403, "ip-not-allowed", "Forbidden", f"Your address {address} may not use this tunnel."
                )
        if self.basic_auth_hash is not None and not _is_preflight(request) and not self._credentials_ok(request):
            response = error_response(
                request, 401, "auth-required", "Authentication required", "This tunnel needs a user name and password."
            )
            response.headers["WWW-Authenticate"] = f'Basic realm="localrelay tunnel {name}", charset="UTF-8"'
            return response
        return None

    def _credentials_ok(self, request: web.BaseRequest) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        assert self.basic_auth_hash is not None
        return hmac.compare_digest(credentials_hash(decoded), self.basic_auth_hash)


def client_address(request: web.BaseRequest, config: RelayConfig) -> str:
    """The caller's address: the socket peer, or from X-Forwarded-For behind a trusted proxy."""
    peer = request.remote or ""
    if not config.is_trusted_proxy(peer):
        return peer
    return forwarded_client(peer, request.headers.get("X-Forwarded-For", ""), config)


def peer_address(transport: asyncio.BaseTransport) -> str:
    """The connection's peer address as aiohttp's ``request.remote`` gives it ("" when unknown)."""
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (list, tuple)) and peer:
        return str(peer[0])
    return "" if peer is None else str(peer)


def forwarded_client(peer: str, forwarded_for: str, config: RelayConfig) -> str:
    """The rightmost address of a trusted proxy's X-Forwarded-For that is not itself a trusted proxy."""
    chain = [a.strip() for a in forwarded_for.split(",") if a.strip()]
    for address in reversed(chain):
        if not config.is_trusted_proxy(address):
            return address
    return peer


def _is_preflight(request: web.BaseRequest) -> bool:
    """Browsers never send credentials on a CORS preflight, so one must pass basic auth."""
    headers = request.headers
    return request.method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True

"""``GET /_relay/connect``: authenticate an agent, agree on a name, run its session.

Order of checks, cheapest first: a source address over its failed-login
budget gets 429 before its token is hashed; then the token (401 if missing,
unknown, revoked, expired or an admin token); then, after the websocket
upgrade and HELLO, the name (the token's scope, the naming rules, other
tokens' reservations, live holders) and the token's tunnel count.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass, field

from aiohttp import web

from relay_protocol.driver import Multiplexer
from relay_protocol.errors import ErrorCode
from relay_protocol.events import ConnectionClosed, HelloReceived
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.session import Role, Session
from relay_server.access import AccessPolicy, InvalidAccessOptions, client_address
from relay_server.config import HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, RelayConfig
from relay_server.fleet.errors import FleetUnavailable  # no Redis import: errors.py is plain
from relay_server.names import InvalidName, random_name, validate_name
from relay_server.observer import RelayObserver
from relay_server.ratelimit import FailureLimiter, retry_after_header
from relay_server.registry import NameTaken, Owner, TunnelRegistry
from relay_server.token_watch import TokenWatcher
from relay_server.tokens import TokenRecord, TokenStore, TokenStoreError, bearer_token
from relay_server.tunnel import Tunnel
from relay_server.ws_transport import ServerWebsocket, open_agent_websocket

log = logging.getLogger("relay_server.agents")

#: Names whose last holder is remembered, to tell a reconnect from a new agent.
MAX_REMEMBERED_NAMES = 10_000


class Refused(Exception):
    """The handshake is refused with this wire code and sentence."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(Refused):
    """The token is missing or not one that opens tunnels; ``reason`` is a short fixed word for metrics."""

    def __init__(self, reason: str, message: str, token_id: str | None = None) -> None:
        super().__init__(ErrorCode.UNAUTHORIZED, message)
        self.reason = reason
        #: The id of a known token refused anyway (expired, admin); None when the token is unknown.
        self.token_id = token_id


@dataclass(slots=True)
class AgentEndpoint:
    """Everything the endpoint needs, injected by the app."""

    config: RelayConfig
    registry: TunnelRegistry
    tokens: TokenStore
    observer: RelayObserver
    #: Failed logins per source address (429 past ``config.auth_failures_per_minute``).
    failures: FailureLimiter = field(init=False)
    #: Closes tunnels whose token was revoked or expired.
    watcher: TokenWatcher = field(init=False)
    _last_owner: OrderedDict[str, Owner] = field(init=False, default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.failures = FailureLimiter(self.config.auth_failures_per_minute)
        self.watcher = TokenWatcher(self.tokens, lambda: iter(self.registry))

    async def watch_tokens(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp ``cleanup_ctx``: run the revocation/expiry sweep while the app runs."""
        task = asyncio.create_task(self.watcher.run(), name="token-watch")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upgrade to a websocket and serve the agent until it leaves."""
        remote = client_address(request, self.config)
        wait = self.failures.retry_after(remote)
        if wait is not None:  # before the token is looked at: a scanner gets no hashing work
            self._notify("limit_hit", "auth_failures_per_minute", None, remote)
            log.debug("agent login from %s throttled for %.0fs", remote, wait)
            response = _json_error(
                429,
                "too-many-auth-failures",
                f"too many failed logins from {remote}; try again in {retry_after_header(wait)} s",
            )
            response.headers["Retry-After"] = retry_after_header(wait)
            return response
        try:
            record = self._authenticate(request)
        except Unauthorized as exc:
            self.failures.failure(remote)
            self._notify("auth_failed", remote, exc.reason, token_id=exc.token_id)
            log.info("agent login from %s failed: %s", remote, exc)
            return _json_error(401, "unauthorized", str(exc))
        except TokenStoreError as exc:
            log.error("%s", exc)
            return _json_error(503, "token-store", "the relay cannot read its token store")

        opened = await open_agent_websocket(request, max_message=self.config.max_agent_message, heartbeat=HEARTBEAT_INTERVAL)
        if opened is None:
            return _json_error(400, "websocket-required", "this endpoint takes a websocket upgrade")
        ws, transport = opened
        session = Session(
            Role.RELAY,
            stream_window=self.config.stream_window,
            connection_window=self.config.connection_window,
            max_streams=self.config.max_streams,
        )
        try:
            try:
                hello = await self._receive_hello(session, transport)
                tunnel = await self._register(remote, session, transport, hello, record)
            except TokenStoreError as exc:
                log.error("%s", exc)
                raise Refused(ErrorCode.INTERNAL_ERROR, "the relay cannot read its token store") from None
        except Refused as exc:
            log.info("agent from %s refused (%s): %s", remote, exc.code.name, exc)
            self._notify("agent_refused", remote, exc.code.name, str(exc), token_id=record.id if record else None)
            session.refuse(exc.code, str(exc))
            await _flush(session, transport)
            await transport.close(1008 if exc.code == ErrorCode.UNAUTHORIZED else 1000, exc.code.name)
            return ws
        reconnect = self._remember(tunnel)
        log.info(
            "tunnel %s connected from %s (%s, token %s)",
            tunnel.name, remote, tunnel.client or "unknown client", tunnel.owner.token_id or "none",
        )
        token_id = tunnel.owner.token_id
        self._notify("agent_connected", tunnel.name, remote, tunnel.client, reconnect, token_id=token_id)
        try:
            await tunnel.mux.run()
        finally:
            await self.registry.release(tunnel)
            reason = tunnel.mux.close_reason or "closed"
            log.info("tunnel %s disconnected: %s", tunnel.name, reason)
            self._notify("agent_disconnected", tunnel.name, remote, reason, token_id=token_id)
        return ws

    def _authenticate(self, request: web.BaseRequest) -> TokenRecord | None:
        header = request.headers.get("Authorization", "")
        if not header:
            if self.config.open:
                return None
            raise Unauthorized("missing", "this relay requires a token: pass --token or set RELAY_TOKEN")
        token = bearer_token(header)
        if token is None:
            raise Unauthorized("malformed", "malformed Authorization header: expected 'Bearer <token>'")
        record = self.tokens.find(token)
        if record is None:
            raise Unauthorized("unknown", "token rejected: unknown or revoked")
        if record.expired():
            raise Unauthorized(
                "expired", f"token expired at {record.expires_text()}; ask the relay's operator for a new one", record.id
            )
        if record.is_admin:
            raise Unauthorized(
                "admin_token",
                "this is an admin token (for the relay's admin endpoints such as metrics), "
                "not an agent token: create one with 'relay-server token create'",
                record.id,
            )
        return record

    async def _receive_hello(self, session: Session, transport: ServerWebsocket) -> Hello:
        try:
            first = await asyncio.wait_for(transport.recv(), HANDSHAKE_TIMEOUT)
        except asyncio.TimeoutError:
            raise Refused(ErrorCode.TIMEOUT, f"no HELLO within {HANDSHAKE_TIMEOUT:g} seconds") from None
        if first is None:
            raise Refused(ErrorCode.PROTOCOL_ERROR, "connection closed before HELLO")
        for event in session.receive_data(first):
            if isinstance(event, HelloReceived):
                return event.hello
            if isinstance(event, ConnectionClosed):
                code = ErrorCode.parse(event.code)
                raise Refused(code if isinstance(code, ErrorCode) else ErrorCode.PROTOCOL_ERROR, event.reason)
        raise Refused(ErrorCode.PROTOCOL_ERROR, "the first message must be HELLO")

    def _choose_name(self, hello: Hello, record: TokenRecord | None) -> str:
        """The name to claim: within the token's reservations if it has any, else any free valid one."""
        own = record.names if record is not None else []
        requested = hello.subdomain or (own[0] if own else None)
        if not requested:
            return random_name()
        try:
            name = validate_name(requested)
        except InvalidName as exc:
            raise Refused(ErrorCode.NAME_INVALID, str(exc)) from None
        if own and name not in own:
            raise Refused(
                ErrorCode.NAME_INVALID,
                f"this token may only open tunnels named {', '.join(own)}, not {name!r}",
            )
        holder = self.tokens.reserved_by(name)
        if holder is not None and (record is None or holder.id != record.id):
            raise Refused(ErrorCode.NAME_TAKEN, f"subdomain {name!r} is reserved by another token")
        return name

    def _check_tunnel_limit(self, record: TokenRecord, owner: Owner, name: str, remote: str) -> None:
        """Refuse a tunnel past ``max_tunnels_per_token``.

        Not counted: the same agent replacing its own connection, and connections
        closing or draining (an agent restarting must not be refused by its old self).
        """
        limit = self.config.max_tunnels_per_token
        if limit <= 0:
            return
        held = sum(
            1
            for t in self.registry
            if t.owner.token_id == record.id
            and getattr(t, "accepting", not t.mux.closed)
            and not (t.owner == owner and t.name == name)
        )
        elsewhere = getattr(self.registry, "remote_tunnels_of", None)  # a fleet node: the limit is fleet-wide
        if elsewhere is not None:
            held += elsewhere(record.id, name)
        if held >= limit:
            self._notify("limit_hit", "max_tunnels_per_token", name, remote)
            raise Refused(
                ErrorCode.TOO_MANY_TUNNELS,
                f"token {record.id} already has {held} tunnel(s) open, this relay's limit per token "
                f"(max_tunnels_per_token = {limit}); close one first",
            )

    async def _register(
        self,
        remote: str,
        session: Session,
        transport: ServerWebsocket,
        hello: Hello,
        record: TokenRecord | None,
    ) -> Tunnel:
        name = self._choose_name(hello, record)
        try:
            access = AccessPolicy.from_options(hello.options)
        except InvalidAccessOptions as exc:
            raise Refused(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
        owner = Owner(record.id if record else None, hello.agent_key or secrets.token_hex(8))
        if record is not None:
            current = self.tokens.get(record.id)  # revoked or expired while the agent sent HELLO
            if current is None or current.expired():
                raise Refused(ErrorCode.UNAUTHORIZED, f"token {record.id} was revoked or expired during the handshake")
            # Counted and claimed with no await in between, so two racing agents cannot both slip under the limit.
            self._check_tunnel_limit(record, owner, name, remote)
        mux = Multiplexer(session, transport)
        tunnel = Tunnel(
            name=name,
            public_url=self.config.public_url(name),
            owner=owner,
            mux=mux,
            remote_addr=remote,
            client=hello.client,
            access=access,
        )
        try:
            await self.registry.claim(tunnel)
        except NameTaken as exc:
            raise Refused(ErrorCode.NAME_TAKEN, str(exc)) from None
        except FleetUnavailable as exc:  # a fleet node without Redis: retryable, the agent backs off
            raise Refused(ErrorCode.INTERNAL_ERROR, str(exc)) from None
        session.accept(Welcome(version=session.version or 0, name=name, public_url=tunnel.public_url))
        return tunnel

    def _remember(self, tunnel: Tunnel) -> bool:
        """Record the name's holder; True if the same agent held it before (a reconnect)."""
        reconnect = self._last_owner.get(tunnel.name) == tunnel.owner
        self._last_owner[tunnel.name] = tunnel.owner
        self._last_owner.move_to_end(tunnel.name)
        while len(self._last_owner) > MAX_REMEMBERED_NAMES:
            self._last_owner.popitem(last=False)
        return reconnect

    def _notify(self, hook: str, *args: object, **kwargs: object) -> None:
        """Call an observer hook; a failing observer is logged, never breaks an agent's connection."""
        try:
            getattr(self.observer, hook)(*args, **kwargs)
        except Exception:
            log.exception("observer %s failed", hook)


async def _flush(session: Session, transport: ServerWebsocket) -> None:
    data = session.data_to_send()
    if data:
        try:
            await transport.send(data)
        except Exception:  # the agent is already gone; nothing to tell it
            pass


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)

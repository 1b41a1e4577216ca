"""``GET /_relay/connect``: authenticate an agent, agree on a name, run its session."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web

from relay_protocol.driver import Multiplexer
from relay_protocol.errors import ErrorCode
from relay_protocol.events import ConnectionClosed, HelloReceived
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.session import Role, Session
from relay_server.access import AccessPolicy, InvalidAccessOptions
from relay_server.config import HANDSHAKE_TIMEOUT, HEARTBEAT_INTERVAL, RelayConfig
from relay_server.observer import RelayObserver
from relay_server.names import InvalidName, random_name, validate_name
from relay_server.registry import NameTaken, Owner, TunnelRegistry
from relay_server.tokens import TokenRecord, TokenStore, TokenStoreError
from relay_server.tunnel import Tunnel
from relay_server.ws_transport import AiohttpTransport

log = logging.getLogger("relay_server.agents")


class Refused(Exception):
    """The handshake is refused with this wire code and sentence."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class AgentEndpoint:
    """Everything the endpoint needs, injected by the app."""

    config: RelayConfig
    registry: TunnelRegistry
    tokens: TokenStore
    observer: RelayObserver

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upgrade to a websocket and serve the agent until it leaves."""
        try:
            record = self._authenticate(request)
        except Refused as exc:
            return _json_error(401, "unauthorized", str(exc))
        except TokenStoreError as exc:
            log.error("%s", exc)
            return _json_error(503, "token-store", "the relay cannot read its token store")

        ws = web.WebSocketResponse(
            max_msg_size=self.config.max_agent_message, compress=False, heartbeat=HEARTBEAT_INTERVAL, autoping=True
        )
        if not ws.can_prepare(request).ok:
            return _json_error(400, "websocket-required", "this endpoint takes a websocket upgrade")
        await ws.prepare(request)
        transport = AiohttpTransport(ws)
        session = Session(
            Role.RELAY,
            stream_window=self.config.stream_window,
            connection_window=self.config.connection_window,
            max_streams=self.config.max_streams,
        )
        try:
            hello = await self._receive_hello(session, transport)
            tunnel = await self._register(request, session, transport, hello, record)
        except Refused as exc:
            log.info("agent from %s refused: %s", request.remote, exc)
            session.refuse(exc.code, str(exc))
            await _flush(session, transport)
            await transport.close(1008 if exc.code == ErrorCode.UNAUTHORIZED else 1000, exc.code.name)
            return ws
        log.info("tunnel %s connected from %s (%s)", tunnel.name, tunnel.remote_addr, tunnel.client or "unknown client")
        try:
            await tunnel.mux.run()
        finally:
            await self.registry.release(tunnel)
            log.info("tunnel %s disconnected: %s", tunnel.name, tunnel.mux.close_reason or "closed")
        return ws

    def _authenticate(self, request: web.BaseRequest) -> TokenRecord | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            if self.config.open:
                return None
            raise Refused(ErrorCode.UNAUTHORIZED, "this relay requires a token: pass --token or set RELAY_TOKEN")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(ErrorCode.UNAUTHORIZED, "malformed Authorization header: expected 'Bearer <token>'")
        record = self.tokens.authenticate(token.strip())
        if record is None:
            raise Refused(ErrorCode.UNAUTHORIZED, "token rejected: unknown or revoked")
        return record

    async def _receive_hello(self, session: Session, transport: AiohttpTransport) -> Hello:
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
                raise Refused(ErrorCode(event.code), event.reason)
        raise Refused(ErrorCode.PROTOCOL_ERROR, "the first message must be HELLO")

    def _choose_name(self, hello: Hello, record: TokenRecord | None) -> str:
        requested = hello.subdomain or (record.subdomain if record else None)
        if not requested:
            return random_name()
        try:
            name = validate_name(requested)
        except InvalidName as exc:
            raise Refused(ErrorCode.NAME_INVALID, str(exc)) from None
        holder = self.tokens.reserved_by(name)
        if holder is not None and (record is None or holder.id != record.id):
            raise Refused(ErrorCode.NAME_TAKEN, f"subdomain {name!r} is reserved by another token")
        return name

    async def _register(
        self,
        request: web.BaseRequest,
        session: Session,
        transport: AiohttpTransport,
        hello: Hello,
        record: TokenRecord | None,
    ) -> Tunnel:
        name = self._choose_name(hello, record)
        try:
            access = AccessPolicy.from_options(hello.options)
        except InvalidAccessOptions as exc:
            raise Refused(ErrorCode.PROTOCOL_ERROR, str(exc)) from None
        owner = Owner(record.id if record else None, hello.agent_key or secrets.token_hex(8))
        mux = Multiplexer(session, transport)
        tunnel = Tunnel(
            name=name,
            public_url=self.config.public_url(name),
            owner=owner,
            mux=mux,
            remote_addr=request.remote or "",
            client=hello.client,
            access=access,
        )
        try:
            await self.registry.claim(tunnel)
        except NameTaken as exc:
            raise Refused(ErrorCode.NAME_TAKEN, str(exc)) from None
        session.accept(Welcome(version=session.version or 0, name=name, public_url=tunnel.public_url))
        return tunnel


async def _flush(session: Session, transport: AiohttpTransport) -> None:
    data = session.data_to_send()
    if data:
        try:
            await transport.send(data)
        except Exception:  # the agent is already gone; nothing to tell it
            pass


def _json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)

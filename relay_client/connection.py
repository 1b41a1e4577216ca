"""One agent connection: websocket, handshake, then the multiplexed session.

``open_connection`` either returns a live ``AgentConnection`` or raises an
``AgentError`` saying in one sentence what went wrong and whether retrying
can help.  Library exceptions (websockets, OSError, ssl) are translated here.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI

from relay_client import __version__
from relay_client.errors import AgentError, AuthError, FatalError, NameError_, RelayBusyError, RetryableError
from relay_client.target import is_localhost
from relay_client.ws_transport import ClientWebsocket
from relay_protocol.driver import Multiplexer, MuxStream
from relay_protocol.errors import ErrorCode
from relay_protocol.events import ConnectionClosed, GoAwayReceived, WelcomeReceived
from relay_protocol.handshake import Hello, Welcome
from relay_protocol.limits import DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW, seconds_from_env
from relay_protocol.session import Role, Session

CONNECT_PATH = "/_relay/connect"

#: Seconds to open the websocket and complete the handshake.
CONNECT_TIMEOUT = 10.0

#: Websocket keepalive: a ping every PING_INTERVAL s (``RELAY_CLIENT_PING_INTERVAL`` overrides it).
PING_INTERVAL = seconds_from_env("RELAY_CLIENT_PING_INTERVAL", 20.0)

#: No pong within this many seconds of a ping: the relay (or the path to it) is gone, even
#: without a FIN or RST; the agent drops the connection and reconnects.
PING_TIMEOUT = PING_INTERVAL

#: Seconds the websocket closing handshake may take before the socket is dropped (a dead
#: relay never answers it): bounds half-open detection to PING_INTERVAL + PING_TIMEOUT + this.
CLOSE_TIMEOUT = min(5.0, PING_INTERVAL)

#: Largest websocket message accepted from the relay.
MAX_RELAY_MESSAGE = 4 * 1024 * 1024

#: Bytes the websocket may buffer before send() waits for the socket: room for a
#: few messages, so the writer keeps the pipe full.
WRITE_LIMIT = 1024 * 1024

#: GOAWAY codes that end the agent instead of starting a reconnect.
_FATAL_CODES = {
    ErrorCode.UNAUTHORIZED: AuthError,
    ErrorCode.NAME_TAKEN: NameError_,
    ErrorCode.NAME_INVALID: NameError_,
    ErrorCode.UNSUPPORTED_VERSION: FatalError,
    ErrorCode.TOO_MANY_TUNNELS: FatalError,
}


def websocket_url(server: str) -> str:
    """``http(s)://relay[:port][/prefix]`` -> ``ws(s)://relay[:port][/prefix]/_relay/connect``."""
    parts = urlsplit(server if "://" in server else "http://" + server)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.hostname:
        raise FatalError(f"--server {server!r} is not an http:// or https:// URL")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + CONNECT_PATH, "", ""))


@dataclass(slots=True, eq=False)
class AgentConnection:
    """A connected, registered agent."""

    welcome: Welcome
    mux: Multiplexer
    server: str

    async def run(self) -> None:
        """Serve streams until the connection ends."""
        await self.mux.run()

    def fatal_close(self) -> AgentError | None:
        """If the relay ended us for a reason retrying cannot fix, that reason."""
        kind = _FATAL_CODES.get(self.mux.close_code)  # type: ignore[call-overload]
        return kind(f"relay closed the tunnel: {self.mux.close_reason}") if kind else None


async def open_connection(
    server: str,
    *,
    token: str | None,
    subdomain: str | None,
    agent_key: str,
    on_stream: Callable[[MuxStream], None],
    ssl_context: ssl.SSLContext | None = None,
    options: dict | None = None,
    stream_window: int = DEFAULT_STREAM_WINDOW,
    connection_window: int = DEFAULT_CONNECTION_WINDOW,
) -> AgentConnection:
    """Connect to one relay and register; raise AgentError on any failure."""
    url = websocket_url(server)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    extra: dict = {}
    host = urlsplit(url).hostname or ""
    if is_localhost(host):
        # RFC 6761: NAME.localhost is loopback even where the system resolver disagrees.
        extra["host"] = "127.0.0.1" if host != "localhost" else "localhost"
        extra["family"] = socket.AF_INET if host != "localhost" else socket.AF_UNSPEC
    if url.startswith("wss:"):
        extra["ssl"] = ssl_context or ssl.create_default_context()
    try:
        ws = await asyncio.wait_for(
            connect(
                url,
                additional_headers=headers,
                compression=None,
                max_size=MAX_RELAY_MESSAGE,
                ping_interval=None,  # the keepalive is ClientWebsocket's, once it has the socket
                close_timeout=CLOSE_TIMEOUT,
                open_timeout=CONNECT_TIMEOUT,
                user_agent_header=f"localrelay-agent/{__version__}",
                write_limit=WRITE_LIMIT,
                **extra,
            ),
            CONNECT_TIMEOUT,
        )
    except InvalidStatus as exc:
        raise _refusal(server, exc) from None
    except InvalidURI as exc:
        raise FatalError(f"--server {server!r} is not a valid URL: {exc}") from None
    except ssl.SSLCertVerificationError as exc:
        raise FatalError(
            f"relay {server} presented a certificate we do not trust ({exc.verify_message}); pass --cacert FILE for a private CA"
        ) from None
    except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
        if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
            reason = "connection refused (is the relay running, and is the port right?)"
        elif isinstance(exc, asyncio.TimeoutError):
            reason = f"no answer within {CONNECT_TIMEOUT:g}s"
        else:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise RetryableError(f"cannot reach relay at {server}: {reason}") from None

    transport = ClientWebsocket(ws, ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, close_timeout=CLOSE_TIMEOUT)
    session = Session(Role.AGENT, stream_window=stream_window, connection_window=connection_window)
    session.send_hello(
        Hello(subdomain=subdomain, agent_key=agent_key, client=f"localrelay-agent/{__version__}", options=options or {})
    )
    try:
        welcome = await asyncio.wait_for(_handshake(session, transport), CONNECT_TIMEOUT)
    except asyncio.TimeoutError:
        await transport.close()
        raise RetryableError(f"relay at {server} did not answer the handshake in {CONNECT_TIMEOUT:g}s") from None
    except AgentError:
        await transport.close()
        raise
    return AgentConnection(welcome, Multiplexer(session, transport, on_stream), server)


async def _handshake(session: Session, transport: ClientWebsocket) -> Welcome:
    await transport.send(session.data_to_send())
    while True:
        message = await transport.recv()
        if message is None:
            raise RetryableError("relay closed the connection during the handshake")
        for event in session.receive_data(message):
            if isinstance(event, WelcomeReceived):
                return event.welcome
            if isinstance(event, (GoAwayReceived, ConnectionClosed)):
                kind = _FATAL_CODES.get(event.code, RetryableError)  # type: ignore[call-overload]
                if event.code == ErrorCode.INTERNAL_ERROR:  # the relay's own trouble (its fleet's Redis down)
                    kind = RelayBusyError
                raise kind(f"relay refused the tunnel: {event.reason}")


def _refusal(server: str, exc: InvalidStatus) -> AgentError:
    """Turn an HTTP refusal of the upgrade into the sentence the relay sent."""
    response = exc.response
    message = ""
    try:
        message = json.loads(response.body or b"{}").get("message", "")
    except (ValueError, AttributeError):
        pass
    status = response.status_code
    if status == 401:
        return AuthError(f"relay rejected the token: {message or 'unauthorized'}")
    if status == 404:
        return FatalError(f"{server} is not a localrelay relay (no {CONNECT_PATH} endpoint)")
    return RetryableError(f"relay at {server} answered HTTP {status}{': ' + message if message else ''}")

"""One node's link to the fleet's Redis: commands, the event subscription, and health.

Every Redis call of the fleet goes through ``FleetLink.call``, which turns the
client library's errors into ``FleetUnavailable`` (one clear sentence) and
marks the link degraded.  ``run()`` keeps the pub/sub subscription alive: when
it breaks, the link is degraded and retried every ``retry_interval`` seconds;
once subscribed again it awaits every ``on_restored`` callback (re-assert our
names, reload the mirrors) before it reports healthy, so no event sent after
the resubscription is lost and nothing sent before it is missed for long.
redis-py reconnects a broken subscription by itself (a Redis restarted in the
blink of an eye); the link notices through the connection's connect callback
and runs the same ``on_restored`` steps, since that Redis may have come back
empty.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from relay_server.fleet.errors import FleetUnavailable

log = logging.getLogger("relay_server.fleet")

#: Seconds to open a TCP connection to Redis before giving up on a command.
CONNECT_TIMEOUT = 2.0

#: Seconds one Redis command may take (a claim fails after this, never hangs).
COMMAND_TIMEOUT = 2.0

#: Seconds between attempts to get the subscription back while Redis is down.
RETRY_INTERVAL = 1.0

#: Seconds ``get_message`` waits before looping (bounds how late a cancel is noticed).
POLL_INTERVAL = 1.0

R = TypeVar("R")


def redact(url: str) -> str:
    """The Redis URL without its password (for logs and health)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + host).geturl()


async def cancel_tasks(tasks: list[asyncio.Task[Any]], timeout: float = 5.0) -> None:
    """Cancel background tasks and wait (bounded) until they have ended."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)


def describe(exc: BaseException) -> str:
    """A short reason for a Redis failure."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Reconnected(Exception):
    """The client library re-established the subscription's connection on its own."""


class FleetLink:
    """The fleet's Redis as one node sees it."""

    def __init__(
        self,
        url: str,
        channel: str,
        on_message: Callable[[str], None],
        *,
        retry_interval: float = RETRY_INTERVAL,
        command_timeout: float = COMMAND_TIMEOUT,
    ) -> None:
        self.url = url
        self.channel = channel
        self._on_message = on_message
        self.retry_interval = retry_interval
        try:
            # One immediate retry on a fresh connection hides a pooled socket that died with a
            # restarted Redis; a Redis that is really down fails the command after that.
            self.redis: aioredis.Redis = aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=CONNECT_TIMEOUT,
                socket_timeout=command_timeout,
                retry=Retry(NoBackoff(), 1),
                health_check_interval=10,
            )
        except ValueError as exc:
            raise ValueError(f"--cluster {redact(url)!r} is not a Redis URL (redis://HOST:PORT/DB): {exc}") from None
        #: Awaited (in order) each time the subscription is (re)established, before the link reports healthy.
        self.on_restored: list[Callable[[], Awaitable[None]]] = []
        self._subscribed = False
        self._command_error: str | None = None
        self._sub_error: str | None = "not connected yet"
        self._down_since: float | None = time.time()
        self._connected = asyncio.Event()
        self._reconnected = False

    # ---------------------------------------------------------------- health
    @property
    def degraded(self) -> bool:
        """Redis is unreachable (the subscription is down or the last command failed)."""
        return not self._subscribed or self._command_error is not None

    @property
    def last_error(self) -> str | None:
        """Why the link is degraded, if it is."""
        return self._sub_error or self._command_error if self.degraded else None

    def status(self) -> dict[str, Any]:
        """What health reports about the link."""
        return {
            "redis": redact(self.url),
            "degraded": self.degraded,
            "error": self.last_error,
            "degraded_since": round(self._down_since, 3) if self.degraded and self._down_since else None,
        }

    def _mark_down(self, reason: str, *, subscription: bool) -> None:
        if not self.degraded:
            self._down_since = time.time()
            log.warning("fleet Redis %s unreachable (%s): new tunnels cannot be registered", redact(self.url), reason)
        if subscription:
            self._subscribed, self._sub_error = False, reason
            self._connected.clear()
        else:
            self._command_error = reason

    def unavailable(self, reason: str | None = None) -> FleetUnavailable:
        """The error a caller sees while Redis is unreachable."""
        why = reason or self.last_error or "unreachable"
        return FleetUnavailable(
            f"the relay fleet's Redis ({redact(self.url)}) is unreachable ({why}); "
            "new tunnels cannot be registered right now, try again shortly"
        )

    # ---------------------------------------------------------------- commands
    async def call(self, func: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
        """Run one Redis command (or script); raise FleetUnavailable if Redis cannot answer."""
        try:
            result = await func(*args, **kwargs)
        except (RedisError, OSError, asyncio.TimeoutError) as exc:
            reason = describe(exc)
            self._mark_down(reason, subscription=False)
            raise self.unavailable(reason) from None
        if self._command_error is not None:
            self._command_error = None
            if not self.degraded:
                log.info("fleet Redis %s reachable again", redact(self.url))
        return result

    async def wait_connected(self, timeout: float) -> bool:
        """Wait until the subscription is up and every restore step ran; False after ``timeout``."""
        waiter = asyncio.ensure_future(self._connected.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()
        return self._connected.is_set()

    # ---------------------------------------------------------------- subscription
    async def run(self) -> None:
        """Keep the event subscription up until cancelled; restore state each time it comes back."""
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            connection = None
            try:
                await pubsub.subscribe(self.channel)
                connection = pubsub.connection
                self._reconnected = False
                if connection is not None:  # tells us when redis-py silently reconnects it
                    connection.register_connect_callback(self._on_reconnect)
                for restore in self.on_restored:
                    await restore()
                was_down = self.degraded
                self._subscribed, self._sub_error, self._command_error = True, None, None
                self._connected.set()
                if was_down:
                    log.info("fleet Redis %s connected; events subscribed", redact(self.url))
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_INTERVAL)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["data"])
                    if self._reconnected:
                        raise _Reconnected
            except asyncio.CancelledError:
                raise
            except _Reconnected:
                log.info("fleet Redis %s connection re-established; restoring this node's state", redact(self.url))
                continue  # (after the finally below) subscribe again and run every restore step, now
            except (RedisError, OSError, asyncio.TimeoutError, FleetUnavailable) as exc:
                reason = self._command_error or "restore failed" if isinstance(exc, FleetUnavailable) else describe(exc)
                self._mark_down(reason, subscription=True)
            except Exception as exc:  # our bug: log it, stay degraded, try again rather than stop for good
                log.exception("fleet event subscription failed")
                self._mark_down(describe(exc), subscription=True)
            finally:
                if connection is not None:  # back in the pool, it is no business of ours
                    connection.deregister_connect_callback(self._on_reconnect)
                with suppress(Exception):
                    await asyncio.shield(pubsub.aclose())
            await asyncio.sleep(self.retry_interval)

    def _on_reconnect(self, _connection: Any) -> None:
        """The subscription's connection came back by itself: the run loop restores state."""
        self._reconnected = True

    def _dispatch(self, data: str) -> None:
        try:
            self._on_message(data)
        except Exception:  # a bad event must not stop the subscription
            log.exception("fleet event %r could not be handled", data[:200])

    async def close(self) -> None:
        """Close every connection to Redis."""
        with suppress(Exception):
            await self.redis.aclose()

"""Disconnect live tunnels whose token stopped authenticating (revoked or expired).

``relay-server token revoke`` runs as another process and only rewrites the
store file; a token's expiry passes with no event at all.  So the relay looks
about once a second: the store is re-read only when its change stamp (inode,
mtime, ctime, size) moved, and every tunnel whose token is gone or past its
expiry gets GOAWAY(UNAUTHORIZED) with a sentence saying which, which the
agent treats as fatal (it prints it and exits with its auth exit code).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from relay_protocol.errors import ErrorCode
from relay_server.tokens import TokenRecord, TokenStore, TokenStoreError

log = logging.getLogger("relay_server.agents")

#: Seconds between two looks at the token store and the clock.
TOKEN_CHECK_INTERVAL = 1.0


def revocation_reason(token_id: str, record: TokenRecord | None, now: float) -> str | None:
    """Why a tunnel opened with ``token_id`` must go now, or None if its token is still good."""
    if record is None:
        return f"token {token_id} was revoked"
    if record.is_admin:  # the id now names an admin token: not one that opens tunnels
        return f"token {token_id} no longer opens tunnels"
    if record.expired(now):
        return f"token {token_id} expired at {record.expires_text()}"
    return None


class TokenWatcher:
    """The periodic sweep: close every tunnel whose token no longer authenticates."""

    def __init__(
        self,
        tokens: TokenStore,
        tunnels: Callable[[], Iterable],
        interval: float = TOKEN_CHECK_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = tokens
        self._tunnels = tunnels
        self.interval = interval
        self._clock = clock
        self._last_error = ""

    def sweep(self) -> int:
        """Close the tunnels of revoked or expired tokens now; how many were closed."""
        try:
            by_id = {record.id: record for record in self.tokens.records()}
        except TokenStoreError as exc:
            # Cannot tell who is still allowed: keep everyone, say it once (not every second).
            if str(exc) != self._last_error:
                log.error("%s; live tunnels are kept until the store is readable again", exc)
                self._last_error = str(exc)
            return 0
        self._last_error = ""
        now = self._clock()
        closed = 0
        for tunnel in self._tunnels():
            token_id = tunnel.owner.token_id
            if token_id is None or tunnel.mux.closed:
                continue
            reason = revocation_reason(token_id, by_id.get(token_id), now)
            if reason is not None:
                log.info("tunnel %s disconnected: %s", tunnel.name, reason)
                tunnel.mux.close(ErrorCode.UNAUTHORIZED, reason)
                closed += 1
        return closed

    async def run(self) -> None:
        """Sweep every ``interval`` seconds until cancelled; never dies of a bad sweep."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sweep()
            except Exception:  # a bug here must not stop revocation for good: log it, go on
                log.exception("token check failed")

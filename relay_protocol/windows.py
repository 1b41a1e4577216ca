"""Credit-based flow control, one object per direction and scope.

The receiver gives the sender a window; every DATA byte spends it; the
receiver gives credit back only after the application has *used* the bytes,
and batches it (once half the window is used) so CREDIT frames stay rare.
"""

from __future__ import annotations

from relay_protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from relay_protocol.limits import MAX_WINDOW


class ReceiveWindow:
    """How much the peer may still send us, and credit owed back to it."""

    __slots__ = ("size", "available", "unconsumed", "_consumed")

    def __init__(self, size: int) -> None:
        self.size = size
        self.available = size
        #: Bytes received that the application has not used yet.
        self.unconsumed = 0
        self._consumed = 0

    def receive(self, n: int) -> None:
        """Spend window on arriving bytes; more than granted is the peer's fault."""
        if n > self.available:
            raise RemoteProtocolError(
                f"peer sent {n} bytes with only {self.available} of window left", ErrorCode.FLOW_CONTROL_ERROR
            )
        self.available -= n
        self.unconsumed += n

    def consume(self, n: int) -> int:
        """Record bytes the application used; return credit to grant now (0: not yet)."""
        n = min(n, self.unconsumed)
        self.unconsumed -= n
        self._consumed += n
        if self._consumed * 2 >= self.size:
            credit, self._consumed = self._consumed, 0
            self.available += credit
            return credit
        return 0


class SendWindow:
    """How much we may still send the peer."""

    __slots__ = ("available",)

    def __init__(self, size: int) -> None:
        self.available = size

    def spend(self, n: int) -> None:
        """Spend window on bytes we send; overspending is our caller's bug."""
        if n > self.available:
            raise LocalProtocolError(f"cannot send {n} bytes with {self.available} of window", ErrorCode.FLOW_CONTROL_ERROR)
        self.available -= n

    def grant(self, n: int) -> None:
        """Add credit from the peer; zero or past the maximum is the peer's fault."""
        if n <= 0:
            raise RemoteProtocolError("CREDIT of zero bytes", ErrorCode.FLOW_CONTROL_ERROR)
        if self.available + n > MAX_WINDOW:
            raise RemoteProtocolError("CREDIT pushed the window past 2**31-1", ErrorCode.FLOW_CONTROL_ERROR)
        self.available += n

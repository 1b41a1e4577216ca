"""The cluster-secret proof that lets one fleet node's request into another's internal listener.

The forwarding node signs each hop request: ``X-Relay-Cluster-Auth: v1 <unix-time> <hex>``
where ``hex`` is HMAC-SHA256 of the version, the time, the method, the Host and the
request target under the cluster secret.  The secret itself never travels, a proof
only fits the request it was made for, and a captured one goes stale after
``PROOF_MAX_AGE`` seconds (the window also absorbs clock skew between machines).
The receiving node compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

#: Request header carrying the proof.
AUTH_HEADER = "X-Relay-Cluster-Auth"

#: Request header marking a request forwarded by a node (the owner never forwards it again).
HOP_HEADER = "X-Relay-Hop"

#: Headers only nodes may set: dropped from public requests, and before a hop request reaches a tunnel.
NODE_HEADERS = frozenset({AUTH_HEADER.lower(), HOP_HEADER.lower()})

#: Seconds a proof stays valid, either side of the receiver's clock (request latency plus clock skew).
PROOF_MAX_AGE = 30.0

_VERSION = "v1"


def _digest(secret: bytes, stamp: str, method: str, host: str, target: str) -> str:
    message = "\n".join((_VERSION, stamp, method.upper(), host.lower(), target)).encode("utf-8", "surrogateescape")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class ClusterProof:
    """Makes and checks proofs with one cluster secret."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time, max_age: float = PROOF_MAX_AGE) -> None:
        if not secret:
            raise ValueError("the cluster secret is empty")
        self._secret = secret.encode("utf-8")
        self._clock = clock
        self.max_age = max_age

    def sign(self, method: str, host: str, target: str) -> str:
        """The header value proving this node sent ``method host target`` just now."""
        stamp = str(int(self._clock()))
        return f"{_VERSION} {stamp} {_digest(self._secret, stamp, method, host, target)}"

    def verify(self, value: str | None, method: str, host: str, target: str) -> str | None:
        """None if ``value`` is a fresh, valid proof for this request; else why not (for the log, never the caller)."""
        if not value:
            return "no cluster proof"
        parts = value.split(" ")
        if len(parts) != 3 or parts[0] != _VERSION or not parts[1].isdigit():
            return "malformed cluster proof"
        _, stamp, given = parts
        expected = _digest(self._secret, stamp, method, host, target)
        # Compare before looking at the time, so a stale proof costs as much as a fresh one.
        valid = hmac.compare_digest(expected.encode("ascii"), given.encode("ascii", "replace"))
        if not valid:
            return "wrong cluster proof"
        if abs(self._clock() - int(stamp)) > self.max_age:
            return "stale cluster proof"
        return None

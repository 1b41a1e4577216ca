"""Where a tunnel held by another fleet node lives.

A lookup on a clustered node returns either a local Tunnel or a RemoteRoute; the
hop (fleet/hop.py) streams the public request to ``url``, the owner's internal
listener.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RemoteRoute:
    """The tunnel ``name`` lives on node ``node_id``, whose internal listener is at ``url`` (http://host:port)."""

    name: str
    node_id: str
    url: str

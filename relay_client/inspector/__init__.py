"""The local inspector: see every proxied request, replay it, from a page or ngrok's API.

Architecture (observer only; it never sits in the forwarding path):

- ``recorder``: ``Recorder`` is an ``Observer`` the forwarder notifies; it
  keeps a bounded history (count-bounded, with bodies already size-bounded by
  ``Exchange.capture_limit``) and pushes events to bounded subscriber queues.
- ``serialize``: an ``Exchange`` as ngrok's agent API writes a captured request.
- ``metrics``: ngrok's per-tunnel meters; ``agent_metrics``: the same traffic
  in Prometheus form for ``GET /metrics`` (own registry, bounded labels).
- ``api``: the aiohttp application: ngrok's paths, fields and status codes,
  plus a server-sent-events feed; ``guard`` keeps it local (Host and Origin
  checks); ``errors`` holds the error shapes.
- ``replay``: re-sends a captured (optionally edited) request to the agent's
  configured local server only, through the agent's session, recorded as a
  new exchange with ``replay=True``.
- ``page``: the single-page UI, inline (no external assets), built on the API.
- ``server``: ``start_inspector(...)`` binds loopback (default 127.0.0.1:4040).
- ``host``: the Protocol the agent satisfies (``state``, ``config``,
  ``observers``, ``local_session``).
"""

from typing import TYPE_CHECKING, Any

from relay_client.inspector.address import DEFAULT_INSPECT_HOST, DEFAULT_INSPECT_PORT, parse_inspect_addr

if TYPE_CHECKING:
    from relay_client.inspector.errors import InspectorAddressInUse, InspectorStartError
    from relay_client.inspector.host import InspectorHost
    from relay_client.inspector.recorder import DEFAULT_HISTORY, Recorder
    from relay_client.inspector.server import InspectorServer, start_inspector

#: Loaded on first use: ``relay-client http --no-inspect`` parses ``--inspect`` through this
#: package but never starts the inspector (aiohttp.web, the API, the page, prometheus_client).
_LAZY = {
    "InspectorAddressInUse": "errors",
    "InspectorStartError": "errors",
    "InspectorHost": "host",
    "DEFAULT_HISTORY": "recorder",
    "Recorder": "recorder",
    "InspectorServer": "server",
    "start_inspector": "server",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"relay_client.inspector.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_HISTORY",
    "DEFAULT_INSPECT_HOST",
    "DEFAULT_INSPECT_PORT",
    "InspectorAddressInUse",
    "InspectorHost",
    "InspectorServer",
    "InspectorStartError",
    "Recorder",
    "parse_inspect_addr",
    "start_inspector",
]

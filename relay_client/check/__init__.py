"""``relay-client check``: would the host accept this plugin, GPT Action or MCP server? Ask it as the host would.

Layout (each module one job; only ``http`` and the two drivers do I/O):

- ``cli``: the Typer command (``register(app)`` adds it; ``main()`` runs it alone).
- ``runner``: picks the mode and, for plugins and GPT Actions, fetches in the
  host's order: manifest, OpenAPI document, logo, CORS preflight.
- ``mcp``: the MCP driver (``server/discover``, ``initialize`` and the session,
  ``tools/list``, ``ping``, the GET stream, OAuth discovery on 401).
- ``manifest``, ``openapi``, ``logo``, ``cors``, ``oauth``, ``mcp_wire``, ``sse``:
  pure validators and parsers; bytes and documents in, report lines out.
- ``http``: the only HTTP client (loopback resolving for *.localhost, a
  timeout and a size bound on every read, aiohttp errors translated once).
- ``report``: PASS/FAIL/WARN lines with fixes, text or JSON; ``limits``: every bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay_client.check.cli import main, register

if TYPE_CHECKING:
    from relay_client.check.report import Report, Status
    from relay_client.check.runner import Options, run_check

#: Names loaded on first use: ``relay-client http`` imports this package (for ``register``)
#: but never runs a check, so the runner and its validators stay out of the agent's memory.
_LAZY = {"Report": "report", "Status": "report", "Options": "runner", "run_check": "runner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"relay_client.check.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Options", "Report", "Status", "main", "register", "run_check"]

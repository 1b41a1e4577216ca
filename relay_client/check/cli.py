"""The ``check`` command: options in, the report out, exit 0 only if nothing failed."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import typer

from relay_client.check.cors import DEFAULT_ORIGIN
from relay_client.check.limits import DEFAULT_TIMEOUT
from relay_client.check.urls import UrlError

# ``report`` and ``runner`` (and what they import) load when ``check`` runs, not at every
# ``relay-client`` start: the agent's ``http`` command never needs them.

#: Exit status for a command line that cannot be run (bad URL or option).
USAGE_EXIT = 2

#: Longest ``--timeout`` accepted, in seconds.
MAX_TIMEOUT = 300.0

HELP = (
    "Check a public URL the way ChatGPT does on registration.\n\n"
    "URL is the tunnel's public base URL (the plugin manifest is fetched from /.well-known/ai-plugin.json) "
    "or a GPT Action's OpenAPI document URL: the manifest, the OpenAPI document and the logo are validated "
    "and a CORS preflight is sent. With --mcp, URL is a remote MCP endpoint (e.g. https://NAME.example.com/mcp), "
    "checked over Streamable HTTP.\n\n"
    "Prints one PASS/FAIL/WARN line per check, with the fix for each failure; exits 1 if anything failed."
)


def _usage_error(message: str) -> None:
    typer.echo(f"relay-client check: error: {message}", err=True)
    raise typer.Exit(USAGE_EXIT)


def check(
    url: Annotated[str, typer.Argument(metavar="URL", help="Public base URL, OpenAPI document URL, or (with --mcp) MCP endpoint.")],
    mcp: Annotated[bool, typer.Option("--mcp", help="Check a remote MCP server (Streamable HTTP) instead of a plugin.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    origin: Annotated[
        str, typer.Option("--origin", help="Origin sent with the CORS preflight (e.g. https://chatgpt.com).")
    ] = DEFAULT_ORIGIN,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each network step may take.")] = DEFAULT_TIMEOUT,
    cacert: Annotated[str | None, typer.Option("--cacert", help="Also trust this CA file (PEM) for https:// URLs.")] = None,
) -> None:
    """Check a plugin, GPT Action or MCP server through its public URL."""
    if not 0 < timeout <= MAX_TIMEOUT:
        _usage_error(f"--timeout must be between 0 and {MAX_TIMEOUT:g} seconds")
    try:
        parts = urlsplit(origin)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.path in ("", "/") and not parts.query
    except ValueError:
        usable = False
    if not usable:
        _usage_error(f"--origin must be an origin such as https://chatgpt.com, not {origin!r}")
    from relay_client.check.report import render_json, render_text
    from relay_client.check.runner import Options, run_check
    from relay_protocol.eventloop import run

    options = Options(url=url, mcp=mcp, origin=origin.rstrip("/"), timeout=timeout, cacert=cacert)

    try:
        report = run(run_check(options))
    except UrlError as exc:
        _usage_error(str(exc))
        return
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    typer.echo(render_json(report) if as_json else render_text(report))
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add the ``check`` command to ``app`` (``relay-client check``)."""
    app.command("check", help=HELP)(check)


def main() -> None:
    """Run ``check`` on its own: ``python -m relay_client.check URL [OPTIONS]``."""
    app = typer.Typer(add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})
    register(app)
    app(prog_name="relay-client check")

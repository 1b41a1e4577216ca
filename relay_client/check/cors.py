"""CORS preflight: the request a browser on the plugin host's origin sends, and the Fetch standard's verdict on the answer."""

from __future__ import annotations

from collections.abc import Mapping

#: The plugin host's origin unless ``--origin`` names another.
DEFAULT_ORIGIN = "https://chat.openai.com"

#: Methods a preflight answer need not list (Fetch: CORS-safelisted methods).
SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})


def preflight_headers(origin: str, method: str, with_body: bool) -> dict[str, str]:
    """Headers of the ``OPTIONS`` a browser sends before ``method`` (JSON bodies add ``content-type``)."""
    headers = {"Origin": origin, "Access-Control-Request-Method": method.upper()}
    if with_body:
        headers["Access-Control-Request-Headers"] = "content-type"
    return headers


def _tokens(value: str | None) -> set[str]:
    return {part.strip() for part in (value or "").split(",") if part.strip()}


def judge(origin: str, method: str, with_body: bool, status: int, headers: Mapping[str, str]) -> str | None:
    """Why a browser would refuse this preflight answer, or None when it allows the call."""
    if not 200 <= status < 300:
        return f"the preflight answered {status}, not 2xx"
    allow_origin = headers.get("Access-Control-Allow-Origin")
    if allow_origin is None:
        return "no Access-Control-Allow-Origin in the answer"
    if allow_origin.strip() not in (origin, "*"):
        return f"Access-Control-Allow-Origin is {allow_origin!r}, not {origin!r}"
    method = method.upper()
    methods = {token.upper() for token in _tokens(headers.get("Access-Control-Allow-Methods"))}
    if method not in SAFELISTED_METHODS and method not in methods and "*" not in methods:
        listed = ", ".join(sorted(methods)) or "nothing"
        return f"Access-Control-Allow-Methods allows {listed}, not {method}"
    if with_body:
        allowed = {token.lower() for token in _tokens(headers.get("Access-Control-Allow-Headers"))}
        if "content-type" not in allowed and "*" not in allowed:
            return "Access-Control-Allow-Headers does not allow content-type (sent with JSON bodies)"
    return None


def fix(origin: str) -> str:
    """What to change when a preflight fails."""
    return (
        f"answer OPTIONS with 204, Access-Control-Allow-Origin: {origin}, the API's methods in "
        "Access-Control-Allow-Methods and content-type in Access-Control-Allow-Headers "
        "(or run the agent with --cors)"
    )

"""``--cors``: answer CORS preflights and add CORS headers for a local server without them."""

from __future__ import annotations

#: Seconds a browser may cache our preflight answer.
PREFLIGHT_MAX_AGE = 600

_ALL_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def is_preflight(method: str, headers: list[tuple[str, str]]) -> bool:
    """An OPTIONS request with Origin and Access-Control-Request-Method (Fetch standard)."""
    return method == "OPTIONS" and _get(headers, "Origin") is not None and (
        _get(headers, "Access-Control-Request-Method") is not None
    )


def preflight_answer(request_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers of a 204 that allows the origin, method and headers the preflight asked for."""
    origin = _get(request_headers, "Origin") or "*"
    method = _get(request_headers, "Access-Control-Request-Method") or ""
    wanted = _get(request_headers, "Access-Control-Request-Headers")
    headers = [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Methods", f"{_ALL_METHODS}{', ' + method if method and method not in _ALL_METHODS else ''}"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Access-Control-Max-Age", str(PREFLIGHT_MAX_AGE)),
        ("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        ("Content-Length", "0"),
    ]
    if wanted:
        headers.append(("Access-Control-Allow-Headers", wanted))
    return headers


def add_cors_headers(request_headers: list[tuple[str, str]], response_headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers plus CORS ones for the request's Origin, unless the server set its own."""
    origin = _get(request_headers, "Origin")
    if origin is None or _get(response_headers, "Access-Control-Allow-Origin") is not None:
        return response_headers
    return response_headers + [
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Allow-Credentials", "true"),
        ("Vary", "Origin"),
    ]

"""The inspector's errors: JSON error bodies (ngrok's shape) and start-up failures."""

from __future__ import annotations

from typing import Any

from aiohttp import web

#: ngrok-style error codes in error bodies, by HTTP status.
_ERROR_CODES = {400: 102, 403: 107, 404: 100, 405: 101, 409: 108, 413: 103, 415: 104, 502: 105, 503: 106}


def api_error(status: int, message: str, **details: Any) -> web.Response:
    """An error body shaped like ngrok's: ``error_code``, ``status_code``, ``msg``, ``details``."""
    body = {"error_code": _ERROR_CODES.get(status, 199), "status_code": status, "msg": message, "details": details}
    return web.json_response(body, status=status)


class InspectorStartError(OSError):
    """The inspector could not listen; the message is one line naming the address and a way out."""


class InspectorAddressInUse(InspectorStartError):
    """Something else (another agent, ngrok) already listens on the inspector's address."""

"""The relay's own answers (tunnel offline, timeout...): HTML for browsers, JSON for APIs.

Every such answer carries ``X-Relay-Error`` so a caller can tell a relay
error from one the local server returned.
"""

from __future__ import annotations

import html
import json

from aiohttp import web

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{status} {title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em;color:#222}}
h1{{font-size:1.4em}} code{{background:#f3f3f3;padding:.1em .3em;border-radius:3px}} .s{{color:#888}}</style>
</head><body><h1>{title}</h1><p>{message}</p><p class="s">{status} &middot; localrelay</p></body></html>
"""


def error_body(accept: str, status: int, code: str, title: str, message: str) -> tuple[str, str]:
    """(content type, text) of a relay-made error for a caller whose Accept header is ``accept``.

    Shared by aiohttp's path (``error_response``) and the lean front, which writes the bytes itself.
    """
    if "text/html" in accept:
        return "text/html", _PAGE.format(status=status, title=html.escape(title), message=html.escape(message))
    payload = {"error": code, "title": title, "message": message, "status": status}
    return "application/json", json.dumps(payload)


def error_response(request: web.BaseRequest, status: int, code: str, title: str, message: str) -> web.Response:
    """A relay-generated error in the format the caller can read."""
    headers = {"X-Relay-Error": code, "Cache-Control": "no-store"}
    content_type, body = error_body(request.headers.get("Accept", ""), status, code, title, message)
    return web.Response(status=status, text=body, content_type=content_type, headers=headers)

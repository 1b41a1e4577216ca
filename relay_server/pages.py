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


def wants_html(request: web.BaseRequest) -> bool:
    """Browsers ask for text/html; API callers and curl get JSON."""
    return "text/html" in request.headers.get("Accept", "")


def error_response(request: web.BaseRequest, status: int, code: str, title: str, message: str) -> web.Response:
    """A relay-generated error in the format the caller can read."""
    headers = {"X-Relay-Error": code, "Cache-Control": "no-store"}
    if wants_html(request):
        body = _PAGE.format(status=status, title=html.escape(title), message=html.escape(message))
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)
    payload = {"error": code, "title": title, "message": message, "status": status}
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)

"""``--rewrite-urls``: make documents written for localhost name the public URL.

Plugin manifests, OpenAPI documents and OAuth metadata written for local
development name ``http://localhost:PORT``, which a plugin host on the
internet cannot reach.  Documents are chosen by path (manifests are often
served as ``text/json`` or ``text/plain``); everything else passes untouched.
Bodies are rewritten only when small and not content-encoded.
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit

from relay_client.target import LocalTarget

#: Largest body buffered for rewriting; larger ones pass through as they are.
MAX_REWRITE_BODY = 2 * 1024 * 1024

#: Documents that name the server's own URL (plus the OpenAPI path a manifest names).
_DOCUMENT_PATHS = frozenset(
    {
        "/.well-known/ai-plugin.json",
        "/.well-known/openapi.json",
        "/.well-known/openapi.yaml",
        "/.well-known/openapi.yml",
        "/openapi.json",
        "/openapi.yaml",
        "/openapi.yml",
        "/swagger.json",
        "/.well-known/openid-configuration",
    }
)
_OAUTH_PREFIX = "/.well-known/oauth-"

#: Headers whose values may carry the local origin.
REWRITTEN_HEADERS = frozenset({"location", "content-location", "www-authenticate", "link"})


class UrlRewriter:
    """Replaces the local origin with the public URL in selected documents and headers."""

    def __init__(self, target: LocalTarget) -> None:
        self.target = target
        self._extra_paths: set[str] = set()
        hosts = {target.host, "localhost", "127.0.0.1", "[::1]", "0.0.0.0"}
        default_port = {"http": 80, "https": 443}[target.scheme]
        ports = [f":{target.port}"] + ([""] if target.port == default_port else [])
        names = sorted((re.escape(h) + re.escape(p) for h in hosts for p in ports), key=len, reverse=True)
        # http://localhost:3000 (not http://localhost:30001): the origin must end there.
        self._pattern = re.compile(rb"https?://(?:" + "|".join(names).encode() + rb")(?![0-9A-Za-z.-])")

    def applies_to(self, target: str) -> bool:
        """Whether the body at this request target is a document we rewrite."""
        path = target.split("?", 1)[0]
        return path in _DOCUMENT_PATHS or path in self._extra_paths or path.startswith(_OAUTH_PREFIX)

    def rewrite_body(self, target: str, body: bytes, public_url: str) -> bytes:
        """The body with every local origin replaced; learns the OpenAPI path from a manifest."""
        new = self._pattern.sub(public_url.rstrip("/").encode(), body)
        if target.split("?", 1)[0] == "/.well-known/ai-plugin.json":
            self._learn_api_path(new)
        return new

    def rewrite_header(self, value: str, public_url: str) -> str:
        """A header value with the local origin replaced."""
        return self._pattern.sub(public_url.rstrip("/").encode(), value.encode("utf-8", "surrogateescape")).decode(
            "utf-8", "surrogateescape"
        )

    def _learn_api_path(self, manifest: bytes) -> None:
        try:
            url = json.loads(manifest).get("api", {}).get("url", "")
        except (ValueError, AttributeError):
            return
        if isinstance(url, str) and url:
            path = urlsplit(url).path or url
            if path.startswith("/") and len(self._extra_paths) < 32:
                self._extra_paths.add(path)

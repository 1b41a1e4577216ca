"""The validators take whatever a server sends: arbitrary JSON documents and URLs never make them raise."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from relay_client.check import logo, manifest, oauth, openapi
from relay_client.check.report import Check
from relay_client.check.sse import SSEError, SSEParser
from relay_client.check.urls import UrlError, parse_target

URLISH = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["http://[::1", "http://host:abc/x", "https://:443", "http://h:99999/", "//x", "mailto:a@b", "http://localhost:5/"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), URLISH)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)

MANIFEST_KEYS = (*manifest.REQUIRED_FIELDS, "type", "url", "authorization_type", "client_url", "authorization_url", "verification_tokens")
OPENAPI_KEYS = ("openapi", "swagger", "info", "servers", "paths", "url", "variables", "default", "get", "post", "operationId",
                "summary", "description", "parameters", "$ref", "components", "requestBody", "title", "version")


def shaped(keys: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts using the keys the validator looks at, with arbitrary values (nested the same way)."""
    value = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(keys), inner, max_size=6), max_leaves=30)
    return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys))


@settings(max_examples=300, deadline=None)
@given(shaped(MANIFEST_KEYS), URLISH)
def test_manifest_validation_never_raises(doc: dict[str, Any], base: str) -> None:
    try:
        url = parse_target(base)
    except UrlError:
        url = "https://x.example/.well-known/ai-plugin.json"
    checks = manifest.validate(doc, url)
    assert all(isinstance(check, Check) for check in checks)
    manifest.info(doc, url)


@settings(max_examples=300, deadline=None)
@given(shaped(OPENAPI_KEYS))
def test_openapi_validation_never_raises(doc: dict[str, Any]) -> None:
    for limits in (openapi.PLUGIN_LIMITS, openapi.ACTION_LIMITS):
        assert all(isinstance(check, Check) for check in openapi.validate(doc, "https://x.example", limits))
    for op in openapi.operations(doc):
        op.concrete_path()


@settings(max_examples=200, deadline=None)
@given(JSON, st.text(max_size=60))
def test_oauth_metadata_and_challenges_never_raise(doc: Any, header: str) -> None:
    if isinstance(doc, dict):
        oauth.check_metadata(doc, "u", "https://x.example/mcp")
    oauth.check_challenge(header, "https://x.example/mcp")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.text(max_size=20))
def test_documents_logos_and_event_streams_of_any_bytes_never_raise(body: bytes, content_type: str) -> None:
    manifest.parse(body)
    openapi.parse(body, content_type)
    logo.judge("https://x.example/logo.png", 200, content_type, body)
    parser = SSEParser(max_event_bytes=64)
    try:
        for cut in range(0, len(body), 7):
            parser.feed(body[cut : cut + 7], float(cut))
    except SSEError:
        pass

"""Validate ``/.well-known/ai-plugin.json`` the way the plugin host does on registration (no I/O here).

Limits, from OpenAI's plugin documentation ("Getting started", plugin
manifest table), which the host enforced at registration:

- ``name_for_human``: 20 characters max.
- ``name_for_model``: 50 characters max, "no spaces allowed, only letters and
  numbers" (we also accept ``_``, which published manifests used widely).
- ``description_for_human``: 100 characters max.
- ``description_for_model``: 8,000 characters max.
- ``auth.type``: ``none``, ``user_http``, ``service_http`` or ``oauth``;
  ``user_http``/``service_http`` carry ``authorization_type`` (``bearer`` or
  ``basic``), ``service_http`` also ``verification_tokens``; ``oauth`` carries
  ``client_url``, ``scope``, ``authorization_url``,
  ``authorization_content_type`` and ``verification_tokens``.
- ``api.type`` is ``openapi``; ``logo_url`` "must be an image, no GIFs".
- The manifest is "hosted on the API's domain", and a remote plugin needs HTTPS.

(An earlier revision of that page allowed 50/50/120 characters for the first
three; we check the later, stricter numbers.)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay_client.check.limits import MAX_NAMED
from relay_client.check.report import Check, failed, passed, warned
from relay_client.check.urls import (
    host_of,
    is_absolute_http,
    is_dev_host,
    is_machine_local,
    origin,
    resolve,
    same_origin,
)

#: Where the plugin host looks for the manifest.
MANIFEST_PATH = "/.well-known/ai-plugin.json"

#: Every field the host requires, in the documented order.
REQUIRED_FIELDS = (
    "schema_version",
    "name_for_human",
    "name_for_model",
    "description_for_human",
    "description_for_model",
    "auth",
    "api",
    "logo_url",
    "contact_email",
    "legal_info_url",
)

#: Longest value the host accepts for each text field, in characters.
LENGTH_LIMITS = {
    "name_for_human": 20,
    "name_for_model": 50,
    "description_for_human": 100,
    "description_for_model": 8000,
}

NAME_FOR_MODEL = re.compile(r"^[A-Za-z0-9_]+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

AUTH_TYPES = ("none", "user_http", "service_http", "oauth")
HTTP_AUTHORIZATION_TYPES = ("bearer", "basic")

#: Sub-fields each auth type requires.
AUTH_FIELDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "user_http": ("authorization_type",),
    "service_http": ("authorization_type", "verification_tokens"),
    "oauth": ("client_url", "scope", "authorization_url", "authorization_content_type", "verification_tokens"),
}

#: Fields that are URLs the host or its users open, as dotted paths.
URL_FIELDS = ("api.url", "logo_url", "legal_info_url", "auth.client_url", "auth.authorization_url")

_REWRITE_HINT = "or run the agent with --rewrite-urls to rewrite it on the way out"


@dataclass(frozen=True)
class ManifestInfo:
    """What the later checks need from a manifest: where the API document and the logo are."""

    api_url: str | None
    logo_url: str | None
    auth_type: str | None


def parse(body: bytes) -> tuple[dict[str, Any] | None, Check]:
    """The manifest as a JSON object, and the check saying whether it is one."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, failed("manifest JSON", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the manifest as UTF-8 JSON")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, failed(
            "manifest JSON",
            f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
            "fix the JSON syntax (a validator such as python -m json.tool shows the spot)",
        )
    if not isinstance(document, dict):
        return None, failed("manifest JSON", f"the manifest is a JSON {_kind(document)}, not an object", "make the top level a JSON object {...}")
    return document, passed("manifest JSON", "valid JSON object")


def check_fields(doc: dict[str, Any]) -> Check:
    """Every required field is present."""
    missing = [name for name in REQUIRED_FIELDS if name not in doc or doc[name] is None]
    if missing:
        names = ", ".join(f'"{name}"' for name in missing)
        return failed(
            "manifest fields",
            f"missing required field{'s' if len(missing) > 1 else ''} {names}",
            f"add {names} to ai-plugin.json (every one of the {len(REQUIRED_FIELDS)} documented fields is required)",
        )
    return passed("manifest fields", f"all {len(REQUIRED_FIELDS)} required fields present")


def check_values(doc: dict[str, Any]) -> Check:
    """Types, lengths and formats of the text fields."""
    problems: list[str] = []
    for name in ("schema_version", *LENGTH_LIMITS, "contact_email"):
        value = doc.get(name)
        if value is None:
            continue  # reported by check_fields
        if not isinstance(value, str):
            problems.append(f"{name} must be a string, not a {_kind(value)}")
            continue
        if not value.strip():
            problems.append(f"{name} is empty")
            continue
        limit = LENGTH_LIMITS.get(name)
        if limit is not None and len(value) > limit:
            problems.append(f"{name} is {len(value)} characters (at most {limit})")
    name_for_model = doc.get("name_for_model")
    if isinstance(name_for_model, str) and name_for_model and not NAME_FOR_MODEL.match(name_for_model):
        problems.append(f"name_for_model {name_for_model!r} may only hold letters, digits and _ (no spaces)")
    email = doc.get("contact_email")
    if isinstance(email, str) and email.strip() and not EMAIL.match(email):
        problems.append(f"contact_email {email!r} is not an email address")
    if problems:
        return failed("manifest values", _join(problems), "shorten or correct these fields as the plugin host documents them")
    schema = doc.get("schema_version")
    if isinstance(schema, str) and schema != "v1":
        return warned("manifest values", f'schema_version is {schema!r}; the host documents only "v1"', 'set "schema_version": "v1"')
    return passed("manifest values", "names, descriptions and contact within the documented limits")


def check_auth(doc: dict[str, Any]) -> Check:
    """``auth.type`` is known and carries the sub-fields it needs."""
    auth = doc.get("auth")
    if auth is None:
        return failed("manifest auth", "no auth object", 'add "auth": {"type": "none"} (or the scheme your API uses)')
    if not isinstance(auth, dict):
        return failed("manifest auth", f"auth must be an object, not a {_kind(auth)}", 'use "auth": {"type": "none"}')
    kind = auth.get("type")
    if kind not in AUTH_TYPES:
        return failed(
            "manifest auth",
            f"auth.type is {kind!r}; the host knows {', '.join(AUTH_TYPES)}",
            "set auth.type to one of those",
        )
    missing = [name for name in AUTH_FIELDS[kind] if auth.get(name) in (None, "")]
    if missing:
        return failed(
            "manifest auth",
            f"auth.type {kind} needs {', '.join(missing)}",
            f"add {', '.join('auth.' + name for name in missing)}",
        )
    problems: list[str] = []
    if "authorization_type" in AUTH_FIELDS[kind] and str(auth.get("authorization_type")).lower() not in HTTP_AUTHORIZATION_TYPES:
        problems.append(f"auth.authorization_type is {auth.get('authorization_type')!r}, not bearer or basic")
    if "verification_tokens" in AUTH_FIELDS[kind] and not isinstance(auth.get("verification_tokens"), dict):
        problems.append("auth.verification_tokens must be an object such as {\"openai\": \"TOKEN\"}")
    for name in ("scope", "authorization_content_type"):
        if name in AUTH_FIELDS[kind] and not isinstance(auth.get(name), str):
            problems.append(f"auth.{name} must be a string")
    if problems:
        return failed("manifest auth", _join(problems), "correct the auth object as the plugin host documents it")
    return passed("manifest auth", f"auth.type {kind}" + (f" with {', '.join(AUTH_FIELDS[kind])}" if AUTH_FIELDS[kind] else ""))


def check_api(doc: dict[str, Any]) -> Check:
    """``api`` says ``openapi`` and names a document."""
    api = doc.get("api")
    if api is None:
        return failed("manifest api", "no api object", 'add "api": {"type": "openapi", "url": "https://.../openapi.yaml"}')
    if not isinstance(api, dict):
        return failed("manifest api", f"api must be an object, not a {_kind(api)}", 'use "api": {"type": "openapi", "url": ...}')
    problems = []
    if api.get("type") != "openapi":
        problems.append(f"api.type is {api.get('type')!r}, not \"openapi\"")
    if not isinstance(api.get("url"), str) or not api.get("url"):
        problems.append("api.url is missing")
    flag = api.get("is_user_authenticated")
    if flag is not None and not isinstance(flag, bool):
        problems.append("api.is_user_authenticated must be true or false")
    if problems:
        return failed("manifest api", _join(problems), 'set "api": {"type": "openapi", "url": "<public URL of your OpenAPI document>"}')
    return passed("manifest api", f"OpenAPI document at {api['url']}")


def check_urls(doc: dict[str, Any], manifest_url: str) -> list[Check]:
    """Every URL is absolute http(s), reachable from the internet, and the API is on the manifest's domain."""
    base_origin = origin(manifest_url)
    problems: list[str] = []
    fixes: list[str] = []
    warnings: list[str] = []
    local: dict[str, list[str]] = {}  # origin on this machine -> fields naming it
    for path in URL_FIELDS:
        value = _dig(doc, path)
        if value is None:
            continue
        if not isinstance(value, str) or not is_absolute_http(value):
            problems.append(f"{path} {value!r} is not an absolute http(s) URL")
            fixes.append(f"write {path} as a full URL on {base_origin}")
        elif is_machine_local(host_of(value)) and not same_origin(value, manifest_url):
            local.setdefault(origin(value), []).append(path)
        elif path == "api.url" and host_of(value) != host_of(manifest_url):
            problems.append(f"api.url is on {host_of(value)}, not on the manifest's domain {host_of(manifest_url)}")
            fixes.append("serve the OpenAPI document and the API from the manifest's domain")
        elif urlsplit(value).scheme == "http" and not is_dev_host(host_of(value)):
            warnings.append(f"{path} uses http://; the host requires HTTPS for a remote plugin")
    local_problems, local_fixes = [], []
    for local_origin, fields in local.items():
        names = ", ".join(fields)
        verb = "points" if len(fields) == 1 else "point"
        local_problems.append(f"{names} {verb} at {local_origin}, your machine, which the plugin host cannot reach")
        local_fixes.append(f"name {base_origin} instead of {local_origin} in {names} ({_REWRITE_HINT})")
    problems, fixes = local_problems + problems, local_fixes + fixes
    checks: list[Check] = []
    if problems:
        checks.append(failed("manifest URLs", _join(problems), _join(_unique(fixes))))
    else:
        checks.append(passed("manifest URLs", f"absolute, public, and the API on {host_of(manifest_url)}"))
    if warnings:
        checks.append(warned("manifest HTTPS", _join(warnings), "serve the plugin over https:// (relay-server --https-port)"))
    return checks


def info(doc: dict[str, Any], manifest_url: str) -> ManifestInfo:
    """Where to fetch the API document and logo (relative URLs resolved so later checks can go on)."""
    api = doc.get("api")
    api_url = api.get("url") if isinstance(api, dict) else None
    logo_url = doc.get("logo_url")
    auth = doc.get("auth")
    return ManifestInfo(
        api_url=resolve(manifest_url, api_url) if isinstance(api_url, str) and api_url else None,
        logo_url=resolve(manifest_url, logo_url) if isinstance(logo_url, str) and logo_url else None,
        auth_type=auth.get("type") if isinstance(auth, dict) else None,
    )


def validate(doc: dict[str, Any], manifest_url: str) -> list[Check]:
    """Every manifest check after parsing, in report order."""
    return [check_fields(doc), check_values(doc), check_auth(doc), check_api(doc), *check_urls(doc, manifest_url)]


def _dig(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _join(items: list[str]) -> str:
    shown = items[:MAX_NAMED]
    more = f"; and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else ""
    return "; ".join(shown) + more


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))

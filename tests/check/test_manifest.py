"""Manifest validation without sockets: the fields, limits, auth types and URLs the plugin host insists on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay_client.check import manifest
from relay_client.check.report import Status

PUBLIC = "https://todo.example.com/.well-known/ai-plugin.json"


def good() -> dict[str, Any]:
    """A manifest the host accepts."""
    return {
        "schema_version": "v1",
        "name_for_human": "TODO List",
        "name_for_model": "todo_list",
        "description_for_human": "Manage your TODOs.",
        "description_for_model": "Plugin for managing a TODO list.",
        "auth": {"type": "none"},
        "api": {"type": "openapi", "url": "https://todo.example.com/openapi.yaml", "is_user_authenticated": False},
        "logo_url": "https://todo.example.com/logo.png",
        "contact_email": "support@example.com",
        "legal_info_url": "https://example.com/legal",
    }


def statuses(doc: dict[str, Any], url: str = PUBLIC) -> dict[str, Status]:
    return {check.name: check.status for check in manifest.validate(doc, url)}


def test_a_documented_manifest_passes_every_check() -> None:
    checks = manifest.validate(good(), PUBLIC)
    assert [(c.name, c.status) for c in checks] == [
        ("manifest fields", Status.PASS),
        ("manifest values", Status.PASS),
        ("manifest auth", Status.PASS),
        ("manifest api", Status.PASS),
        ("manifest URLs", Status.PASS),
    ]


def test_parse_reports_line_and_column_of_a_syntax_error() -> None:
    document, check = manifest.parse(b'{\n  "a": 1\n  "b": 2\n}')
    assert document is None
    assert check.status is Status.FAIL
    assert check.message == "not valid JSON: Expecting ',' delimiter at line 3, column 3"


@pytest.mark.parametrize(("body", "kind"), [(b"[]", "array"), (b'"x"', "string"), (b"null", "null")])
def test_parse_wants_an_object_at_the_top(body: bytes, kind: str) -> None:
    document, check = manifest.parse(body)
    assert document is None and check.message == f"the manifest is a JSON {kind}, not an object"


def test_parse_accepts_a_byte_order_mark_and_rejects_other_encodings() -> None:
    assert manifest.parse(b"\xef\xbb\xbf" + json.dumps(good()).encode())[0] == good()
    document, check = manifest.parse(json.dumps(good()).encode("utf-16"))
    assert document is None and check.message.startswith("not UTF-8 text")


def test_every_missing_field_is_named() -> None:
    doc = good()
    del doc["legal_info_url"], doc["name_for_model"]
    check = manifest.check_fields(doc)
    assert check.status is Status.FAIL
    assert check.message == 'missing required fields "name_for_model", "legal_info_url"'


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name_for_human", "x" * 21, "name_for_human is 21 characters (at most 20)"),
        ("name_for_model", "x" * 51, "name_for_model is 51 characters (at most 50)"),
        ("description_for_human", "x" * 101, "description_for_human is 101 characters (at most 100)"),
        ("description_for_model", "x" * 8001, "description_for_model is 8001 characters (at most 8000)"),
        ("name_for_model", "todo list", "name_for_model 'todo list' may only hold letters, digits and _ (no spaces)"),
        ("contact_email", "nobody", "contact_email 'nobody' is not an email address"),
        ("name_for_human", 42, "name_for_human must be a string, not a number"),
        ("description_for_model", "   ", "description_for_model is empty"),
    ],
)
def test_values_outside_the_documented_limits_fail(field: str, value: Any, message: str) -> None:
    doc = good()
    doc[field] = value
    check = manifest.check_values(doc)
    assert check.status is Status.FAIL
    assert check.message == message


def test_values_at_the_limits_pass() -> None:
    doc = good()
    doc.update(name_for_human="x" * 20, name_for_model="A1_" * 16, description_for_human="y" * 100, description_for_model="z" * 8000)
    assert manifest.check_values(doc).status is Status.PASS


def test_an_unknown_schema_version_is_a_warning() -> None:
    doc = good()
    doc["schema_version"] = "v2"
    check = manifest.check_values(doc)
    assert check.status is Status.WARN and "v1" in check.message


@pytest.mark.parametrize(
    ("auth", "status", "message"),
    [
        ({"type": "none"}, Status.PASS, "auth.type none"),
        ({"type": "user_http", "authorization_type": "bearer"}, Status.PASS, "auth.type user_http with authorization_type"),
        (
            {"type": "service_http", "authorization_type": "bearer", "verification_tokens": {"openai": "t"}},
            Status.PASS,
            "auth.type service_http with authorization_type, verification_tokens",
        ),
        ({"type": "service_http", "authorization_type": "bearer"}, Status.FAIL, "auth.type service_http needs verification_tokens"),
        (
            {"type": "user_http", "authorization_type": "digest"},
            Status.FAIL,
            "auth.authorization_type is 'digest', not bearer or basic",
        ),
        (
            {"type": "oauth", "client_url": "https://a/x", "scope": "s", "authorization_url": "https://a/t"},
            Status.FAIL,
            "auth.type oauth needs authorization_content_type, verification_tokens",
        ),
        ({"type": "apikey"}, Status.FAIL, "auth.type is 'apikey'; the host knows none, user_http, service_http, oauth"),
        ("none", Status.FAIL, "auth must be an object, not a string"),
    ],
)
def test_auth_types_and_their_required_fields(auth: Any, status: Status, message: str) -> None:
    doc = good()
    doc["auth"] = auth
    check = manifest.check_auth(doc)
    assert (check.status, check.message) == (status, message)


def test_api_must_be_openapi_with_a_url() -> None:
    doc = good()
    doc["api"] = {"type": "graphql"}
    check = manifest.check_api(doc)
    assert check.status is Status.FAIL
    assert check.message == 'api.type is \'graphql\', not "openapi"; api.url is missing'


def test_localhost_urls_fail_with_the_public_origin_to_use_instead() -> None:
    doc = good()
    doc["api"]["url"] = "http://localhost:5003/openapi.yaml"
    doc["logo_url"] = "http://127.0.0.1:5003/logo.png"
    [check] = manifest.check_urls(doc, PUBLIC)
    assert check.status is Status.FAIL
    assert check.message == (
        "api.url points at http://localhost:5003, your machine, which the plugin host cannot reach; "
        "logo_url points at http://127.0.0.1:5003, your machine, which the plugin host cannot reach"
    )
    assert check.fix.startswith("name https://todo.example.com instead of http://localhost:5003 in api.url")


@pytest.mark.parametrize("host", ["10.0.0.5", "192.168.1.20", "[::1]", "169.254.1.1"])
def test_private_and_link_local_addresses_count_as_this_machine(host: str) -> None:
    doc = good()
    doc["api"]["url"] = f"http://{host}/openapi.yaml"
    [check] = manifest.check_urls(doc, PUBLIC)
    assert check.status is Status.FAIL and "your machine" in check.message


def test_relative_urls_and_an_api_on_another_domain_fail() -> None:
    doc = good()
    doc["logo_url"] = "/logo.png"
    doc["api"]["url"] = "https://api.other.example/openapi.yaml"
    [check] = manifest.check_urls(doc, PUBLIC)
    assert check.status is Status.FAIL
    assert check.message == (
        "api.url is on api.other.example, not on the manifest's domain todo.example.com; "
        "logo_url '/logo.png' is not an absolute http(s) URL"
    )


def test_plain_http_on_a_remote_host_warns_but_localhost_names_do_not() -> None:
    doc = good()
    doc["api"]["url"] = "http://todo.example.com/openapi.yaml"
    checks = manifest.check_urls(doc, "http://todo.example.com/.well-known/ai-plugin.json")
    assert [(c.name, c.status) for c in checks] == [("manifest URLs", Status.PASS), ("manifest HTTPS", Status.WARN)]
    dev = good()
    for field in ("logo_url", "legal_info_url"):
        dev[field] = f"http://todo.localhost:8080/{field}"
    dev["api"]["url"] = "http://todo.localhost:8080/openapi.yaml"
    assert [c.status for c in manifest.check_urls(dev, "http://todo.localhost:8080/.well-known/ai-plugin.json")] == [Status.PASS]


def test_checking_a_local_url_directly_accepts_urls_on_that_same_origin() -> None:
    doc = good()
    for field in ("logo_url", "legal_info_url"):
        doc[field] = f"http://localhost:5003/{field}"
    doc["api"]["url"] = "http://localhost:5003/openapi.yaml"
    assert statuses(doc, "http://localhost:5003/.well-known/ai-plugin.json")["manifest URLs"] is Status.PASS


def test_info_resolves_where_the_document_and_logo_are() -> None:
    doc = good()
    doc["logo_url"] = "/logo.png"
    info = manifest.info(doc, PUBLIC)
    assert info.api_url == "https://todo.example.com/openapi.yaml"
    assert info.logo_url == "https://todo.example.com/logo.png"
    assert info.auth_type == "none"

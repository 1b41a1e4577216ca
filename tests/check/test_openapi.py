"""OpenAPI parsing and validation without sockets: JSON or YAML, 3.x, servers, operationIds, description limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from relay_client.check import openapi
from relay_client.check.report import Status

PUBLIC = "https://todo.example.com"


def good() -> dict[str, Any]:
    """A document the host accepts."""
    return {
        "openapi": "3.0.1",
        "info": {"title": "TODO", "version": "v1"},
        "servers": [{"url": PUBLIC}],
        "paths": {
            "/todos": {
                "parameters": [{"name": "list", "in": "query", "description": "Which list."}],
                "get": {"operationId": "getTodos", "summary": "List TODOs"},
                "post": {"operationId": "addTodo", "requestBody": {"content": {}}},
            },
            "/todos/{id}": {"delete": {"operationId": "deleteTodo", "parameters": [{"$ref": "#/components/parameters/Id"}]}},
        },
        "components": {"parameters": {"Id": {"name": "id", "in": "path", "description": "The TODO's id."}}},
    }


YAML = """\
openapi: 3.1.0
info:
  title: TODO
  version: v1
servers:
  - url: https://todo.example.com
paths:
  /todos:
    get:
      operationId: getTodos
"""


def test_json_and_yaml_documents_both_parse() -> None:
    document, check = openapi.parse(json.dumps(good()).encode(), "application/json")
    assert document == good() and check.message == "valid JSON"
    document, check = openapi.parse(YAML.encode(), "text/yaml")
    assert document is not None and document["openapi"] == "3.1.0" and check.message == "valid YAML"


def test_json_served_with_a_yaml_type_still_parses_as_json() -> None:
    document, check = openapi.parse(json.dumps(good()).encode(), "text/plain", "https://x/openapi.yaml")
    assert document == good() and check.message == "valid JSON"


def test_broken_yaml_fails_naming_the_line() -> None:
    document, check = openapi.parse(b"openapi: 3.0.1\npaths:\n  /x: [unclosed\n  y: 1\n")
    assert document is None and check.status is Status.FAIL
    assert check.message.startswith("neither JSON nor valid YAML: ") and "at line 4, column" in check.message


def test_broken_json_fails_naming_line_and_column() -> None:
    document, check = openapi.parse(b'{"openapi": "3.0.1",\n "info": }', "application/json")
    assert document is None
    assert check.message == "not valid JSON: Expecting value at line 2, column 10"


def test_a_scalar_document_is_not_a_mapping() -> None:
    document, check = openapi.parse(b"just some text\n")
    assert document is None and check.message == "the document is a YAML str, not a mapping"


def test_a_yaml_alias_bomb_is_stopped_by_the_node_budget() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)]
    document, check = openapi.parse("\n".join(lines).encode())
    assert document is None and check.message.startswith("the document expands to more than")


@pytest.mark.parametrize(
    ("doc", "status", "message"),
    [
        ({"openapi": "3.0.1"}, Status.PASS, "OpenAPI 3.0.1"),
        ({"openapi": "3.1.0"}, Status.PASS, "OpenAPI 3.1.0"),
        ({"swagger": "2.0"}, Status.FAIL, "Swagger 2.0 document; the host reads OpenAPI 3.x only"),
        ({"openapi": "2.0"}, Status.FAIL, "openapi is '2.0'; the host reads 3.x"),
        ({"openapi": 3.0}, Status.WARN, "openapi: 3.0 is a number, not a string"),
        ({}, Status.FAIL, "no openapi version field"),
    ],
)
def test_only_openapi_3_is_accepted(doc: dict[str, Any], status: Status, message: str) -> None:
    check = openapi.check_version(doc)
    assert (check.status, check.message) == (status, message)


def test_structure_needs_info_and_paths() -> None:
    check = openapi.check_structure({"info": {"title": "x"}, "paths": {}})
    assert check.status is Status.FAIL and check.message == "info.version is missing; no paths"


@pytest.mark.parametrize(
    ("servers", "status", "message"),
    [
        ([{"url": PUBLIC}], Status.PASS, f"servers[0].url {PUBLIC} is the public origin"),
        ([{"url": PUBLIC + "/api/"}], Status.PASS, f"servers[0].url {PUBLIC}/api/ is the public origin"),
        (
            [{"url": "https://{host}", "variables": {"host": {"default": "todo.example.com"}}}],
            Status.PASS,
            f"servers[0].url {PUBLIC} is the public origin",
        ),
        (None, Status.FAIL, "no servers[0].url"),
        ([{"url": "/api"}], Status.FAIL, "servers[0].url '/api' is not an absolute http(s) URL"),
        (
            [{"url": "http://localhost:5003"}],
            Status.FAIL,
            "servers[0].url http://localhost:5003 points at your machine, which the host cannot reach",
        ),
        (
            [{"url": "https://api.example.com"}],
            Status.FAIL,
            f"servers[0].url https://api.example.com is not the public origin {PUBLIC}",
        ),
    ],
)
def test_servers_must_be_the_public_origin(servers: Any, status: Status, message: str) -> None:
    doc = good()
    if servers is None:
        del doc["servers"]
    else:
        doc["servers"] = servers
    check = openapi.check_servers(doc, PUBLIC + "/openapi.yaml")
    assert (check.status, check.message) == (status, message)


def test_operations_are_found_in_document_order_with_concrete_paths() -> None:
    ops = openapi.operations(good())
    assert [op.label for op in ops] == ["GET /todos", "POST /todos", "DELETE /todos/{id}"]
    assert ops[2].concrete_path() == "/todos/1"
    assert [op.has_body for op in ops] == [False, True, False]


def test_every_operation_needs_a_unique_operation_id() -> None:
    doc = good()
    del doc["paths"]["/todos"]["post"]["operationId"]
    check = openapi.check_operation_ids(openapi.operations(doc))
    assert check.status is Status.FAIL and check.message == "1 operation(s) without an operationId: POST /todos"
    doc = good()
    doc["paths"]["/todos/{id}"]["delete"]["operationId"] = "getTodos"
    check = openapi.check_operation_ids(openapi.operations(doc))
    assert check.message == "duplicate operationId: getTodos (GET /todos and DELETE /todos/{id})"
    assert openapi.check_operation_ids([]).message == "no operations under paths"


def test_description_limits_differ_for_plugins_and_actions() -> None:
    doc = good()
    doc["paths"]["/todos"]["get"]["description"] = "d" * 250
    ops = openapi.operations(doc)
    plugin = openapi.check_descriptions(ops, doc, openapi.PLUGIN_LIMITS)
    assert plugin.status is Status.FAIL
    assert plugin.message == "too long for a ChatGPT plugin: GET /todos description (250 > 200)"
    assert openapi.check_descriptions(ops, doc, openapi.ACTION_LIMITS).status is Status.PASS


def test_parameter_descriptions_are_measured_through_local_refs() -> None:
    doc = good()
    doc["components"]["parameters"]["Id"]["description"] = "p" * 701
    doc["paths"]["/todos"]["parameters"][0]["description"] = "q" * 201
    check = openapi.check_descriptions(openapi.operations(doc), doc, openapi.ACTION_LIMITS)
    assert check.message == "too long for a GPT Action: DELETE /todos/{id} parameter 'id' (701 > 700)"
    check = openapi.check_descriptions(openapi.operations(doc), doc, openapi.PLUGIN_LIMITS)
    assert check.message.startswith("too long for a ChatGPT plugin: GET /todos parameter 'list' (201 > 200)")


def test_a_good_document_passes_every_check() -> None:
    checks = openapi.validate(good(), PUBLIC, openapi.PLUGIN_LIMITS)
    assert [c.status for c in checks] == [Status.PASS] * 5

"""Parse and validate the OpenAPI document a plugin or GPT Action names (no I/O here).

Description limits, as OpenAI documented them (subject to change, they said):

- ChatGPT plugins ("Getting started", OpenAPI definition): 200 characters max
  for each endpoint description/summary and for each parameter description.
- GPT Actions ("Production notes on GPT Actions", OpenAPI specification
  limits): 300 characters max for each endpoint description/summary, 700 for
  each parameter description.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay_client.check.limits import MAX_DOCUMENT_NODES, MAX_NAMED
from relay_client.check.report import Check, failed, passed, warned
from relay_client.check.urls import host_of, is_absolute_http, is_machine_local, origin

#: HTTP methods an OpenAPI path item may hold operations for.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@dataclass(frozen=True)
class DescriptionLimits:
    """Longest endpoint and parameter descriptions the host accepts."""

    endpoint: int
    parameter: int
    source: str


PLUGIN_LIMITS = DescriptionLimits(endpoint=200, parameter=200, source="ChatGPT plugin")
ACTION_LIMITS = DescriptionLimits(endpoint=300, parameter=700, source="GPT Action")


@dataclass(frozen=True)
class Operation:
    """One API operation: method, path template, and its OpenAPI object."""

    method: str
    path: str
    spec: dict[str, Any]
    path_item: dict[str, Any]

    @property
    def label(self) -> str:
        """``GET /todos``."""
        return f"{self.method.upper()} {self.path}"

    def concrete_path(self) -> str:
        """The path with each ``{param}`` filled in with a placeholder value."""
        return re.sub(r"\{[^}/]*\}", "1", self.path)

    @property
    def has_body(self) -> bool:
        """Whether the operation takes a request body (so a browser would send Content-Type)."""
        return isinstance(self.spec.get("requestBody"), dict)


class _TooBig(Exception):
    pass


def parse(body: bytes, content_type: str = "", url: str = "") -> tuple[dict[str, Any] | None, Check]:
    """The document as a mapping (from JSON or YAML), and the check saying whether it parsed."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, failed("OpenAPI parse", f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the document as UTF-8")
    stripped = text.lstrip()
    looks_json = stripped.startswith(("{", "[")) or "json" in content_type or url.lower().endswith(".json")
    document: Any
    fmt = "JSON"
    if looks_json:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            if stripped.startswith(("{", "[")):
                return None, failed(
                    "OpenAPI parse",
                    f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}",
                    "fix the JSON syntax of the OpenAPI document",
                )
            looks_json = False
    if not looks_json:
        fmt = "YAML"
        parsed = _parse_yaml(text)
        if isinstance(parsed, Check):
            return None, parsed
        document = parsed
    if not isinstance(document, dict):
        return None, failed(
            "OpenAPI parse",
            f"the document is a {fmt} {type(document).__name__}, not a mapping",
            "serve an OpenAPI 3 document (a mapping with openapi, info, servers and paths)",
        )
    try:
        _count_nodes(document)
    except _TooBig:
        return None, failed(
            "OpenAPI parse", f"the document expands to more than {MAX_DOCUMENT_NODES} nodes", "simplify the document (YAML aliases?)"
        )
    return document, passed("OpenAPI parse", f"valid {fmt}")


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:  # pragma: no cover - pyyaml is a dependency
        return failed("OpenAPI parse", "YAML document, but PyYAML is not installed", "pip install pyyaml")
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return failed("OpenAPI parse", f"neither JSON nor valid YAML: {exc.problem}{where}", "fix the YAML syntax of the OpenAPI document")
    except (yaml.YAMLError, RecursionError) as exc:
        return failed("OpenAPI parse", f"neither JSON nor valid YAML: {exc}", "fix the syntax of the OpenAPI document")


def _count_nodes(document: Any) -> None:
    budget = MAX_DOCUMENT_NODES
    stack = [document]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise _TooBig
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def looks_like_openapi(document: dict[str, Any]) -> bool:
    """Whether a parsed document claims to be OpenAPI or Swagger at all."""
    return "openapi" in document or "swagger" in document


def check_version(doc: dict[str, Any]) -> Check:
    """``openapi`` is 3.x."""
    if "swagger" in doc and "openapi" not in doc:
        return failed(
            "OpenAPI version",
            f"Swagger {doc.get('swagger')} document; the host reads OpenAPI 3.x only",
            "convert it to OpenAPI 3 (e.g. with swagger2openapi or your framework's exporter)",
        )
    version = doc.get("openapi")
    if isinstance(version, (int, float)) and not isinstance(version, bool) and str(version).startswith("3"):
        return warned("OpenAPI version", f"openapi: {version} is a number, not a string", f'quote it: openapi: "{version}.0"')
    if not isinstance(version, str):
        return failed("OpenAPI version", "no openapi version field", 'start the document with openapi: "3.1.0"')
    if not re.match(r"^3\.\d+(\.\d+)?$", version):
        return failed("OpenAPI version", f"openapi is {version!r}; the host reads 3.x", 'declare openapi: "3.0.1" or "3.1.0"')
    return passed("OpenAPI version", f"OpenAPI {version}")


def check_structure(doc: dict[str, Any]) -> Check:
    """``info.title``, ``info.version`` and a non-empty ``paths``."""
    problems = []
    info = doc.get("info")
    if not isinstance(info, dict):
        problems.append("no info object")
    else:
        for name in ("title", "version"):
            if not isinstance(info.get(name), str) or not info.get(name):
                problems.append(f"info.{name} is missing")
    paths = doc.get("paths")
    if not isinstance(paths, dict) or not paths:
        problems.append("no paths")
    if problems or not isinstance(info, dict) or not isinstance(paths, dict):
        return failed("OpenAPI structure", "; ".join(problems), "add info (title, version) and at least one path")
    return passed("OpenAPI structure", f"{info['title']!r} version {info['version']}, {len(paths)} path(s)")


def server_url(doc: dict[str, Any]) -> str | None:
    """``servers[0].url`` with its variables at their defaults, or None."""
    servers = doc.get("servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], dict):
        return None
    url = servers[0].get("url")
    if not isinstance(url, str):
        return None
    variables = servers[0].get("variables")
    if isinstance(variables, dict):
        for name, spec in variables.items():
            if isinstance(spec, dict) and isinstance(spec.get("default"), str):
                url = url.replace("{" + str(name) + "}", spec["default"])
    return url


def check_servers(doc: dict[str, Any], public_url: str) -> Check:
    """``servers[0].url`` is absolute and on the public origin."""
    url = server_url(doc)
    expected = origin(public_url)
    if url is None:
        return failed("OpenAPI servers", "no servers[0].url", f"add servers: [{{url: {expected}}}]")
    if not is_absolute_http(url):
        return failed("OpenAPI servers", f"servers[0].url {url!r} is not an absolute http(s) URL", f"use url: {expected}")
    if origin(url) != expected:
        where = "points at your machine, which the host cannot reach" if is_machine_local(host_of(url)) else f"is not the public origin {expected}"
        return failed(
            "OpenAPI servers",
            f"servers[0].url {url} {where}",
            f"set servers[0].url to {expected}{urlsplit(url).path.rstrip('/')} (or run the agent with --rewrite-urls)",
        )
    return passed("OpenAPI servers", f"servers[0].url {url} is the public origin")


def operations(doc: dict[str, Any]) -> list[Operation]:
    """Every operation in ``paths``, in document order."""
    found: list[Operation] = []
    paths = doc.get("paths")
    if not isinstance(paths, dict):
        return found
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method in METHODS:
            spec = item.get(method)
            if isinstance(spec, dict):
                found.append(Operation(method, str(path), spec, item))
    return found


def check_operation_ids(ops: list[Operation]) -> Check:
    """Every operation has a unique ``operationId`` (the model calls operations by it)."""
    if not ops:
        return failed("OpenAPI operationIds", "no operations under paths", "describe at least one operation (e.g. get: under /todos)")
    missing = [op.label for op in ops if not isinstance(op.spec.get("operationId"), str) or not op.spec["operationId"].strip()]
    if missing:
        return failed(
            "OpenAPI operationIds",
            f"{len(missing)} operation(s) without an operationId: {_names(missing)}",
            "give every operation an operationId (e.g. operationId: getTodos)",
        )
    seen: dict[str, str] = {}
    duplicates = []
    for op in ops:
        op_id = op.spec["operationId"]
        if op_id in seen:
            duplicates.append(f"{op_id} ({seen[op_id]} and {op.label})")
        seen.setdefault(op_id, op.label)
    if duplicates:
        return failed("OpenAPI operationIds", f"duplicate operationId: {_names(duplicates)}", "make every operationId unique")
    return passed("OpenAPI operationIds", f"all {len(ops)} operation(s) have a unique operationId")


def check_descriptions(ops: list[Operation], doc: dict[str, Any], limits: DescriptionLimits) -> Check:
    """Endpoint and parameter descriptions within the host's limits."""
    long: list[str] = []
    for op in ops:
        for name in ("summary", "description"):
            text = op.spec.get(name)
            if isinstance(text, str) and len(text) > limits.endpoint:
                long.append(f"{op.label} {name} ({len(text)} > {limits.endpoint})")
        for param in [*_params(op.path_item, doc), *_params(op.spec, doc)]:
            text = param.get("description")
            if isinstance(text, str) and len(text) > limits.parameter:
                long.append(f"{op.label} parameter {param.get('name')!r} ({len(text)} > {limits.parameter})")
    if long:
        return failed(
            "OpenAPI descriptions",
            f"too long for a {limits.source}: {_names(long)}",
            f"keep endpoint summaries/descriptions within {limits.endpoint} and parameter descriptions within "
            f"{limits.parameter} characters",
        )
    return passed(
        "OpenAPI descriptions",
        f"within the {limits.source} limits ({limits.endpoint} per endpoint, {limits.parameter} per parameter)",
    )


def _params(holder: dict[str, Any], doc: dict[str, Any]) -> list[dict[str, Any]]:
    params = holder.get("parameters")
    if not isinstance(params, list):
        return []
    found = []
    for param in params:
        if isinstance(param, dict) and isinstance(param.get("$ref"), str):
            param = _local_ref(doc, param["$ref"])
        if isinstance(param, dict):
            found.append(param)
    return found


def _local_ref(doc: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        return None
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def validate(doc: dict[str, Any], public_url: str, limits: DescriptionLimits) -> list[Check]:
    """Every document check (version, structure, servers, operationIds, descriptions), in report order."""
    ops = operations(doc)
    return [
        check_version(doc),
        check_structure(doc),
        check_servers(doc, public_url),
        check_operation_ids(ops),
        check_descriptions(ops, doc, limits),
    ]


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMED])
    return shown + (f" and {len(items) - MAX_NAMED} more" if len(items) > MAX_NAMED else "")

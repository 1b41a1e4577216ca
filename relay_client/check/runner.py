"""Run the checks for one URL: pick the mode, do the fetches in the host's order, collect the report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from relay_client.check import cors, logo, manifest, openapi
from relay_client.check.http import Answer, Fetcher, FetchError, explain_status
from relay_client.check.limits import (
    DEFAULT_TIMEOUT,
    MAX_LOGO_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_OPENAPI_BYTES,
    MAX_PREFLIGHTS,
    MAX_SMALL_BYTES,
)
from relay_client.check.mcp import McpCheck
from relay_client.check.report import Report, Status, failed, passed, warned
from relay_client.check.urls import (
    host_of,
    is_dev_host,
    is_machine_local,
    origin,
    parse_target,
    same_origin,
    with_origin,
)


@dataclass(frozen=True)
class Options:
    """What the user asked for on the command line."""

    url: str
    mcp: bool = False
    origin: str = cors.DEFAULT_ORIGIN
    timeout: float = DEFAULT_TIMEOUT
    cacert: str | None = None


def mode_for(url: str, mcp: bool) -> str:
    """``mcp``, ``plugin`` (a base URL or the manifest's URL) or ``action`` (any other path: an OpenAPI document)."""
    if mcp:
        return "mcp"
    path = urlsplit(url).path
    if path in ("", "/") or path.endswith(manifest.MANIFEST_PATH):
        return "plugin"
    return "action"


async def run_check(options: Options) -> Report:
    """Every check for ``options.url``; raises ``UrlError`` for a URL that cannot be checked at all."""
    url = parse_target(options.url)
    report = Report(url, mode_for(url, options.mcp))
    try:
        async with Fetcher(options.timeout, options.cacert) as fetcher:
            if report.mode == "mcp":
                await McpCheck(fetcher, url, report).run()
            else:
                await PluginCheck(fetcher, url, report, options.origin).run()
    except FetchError as exc:  # set-up problems (an unreadable --cacert)
        report.add(failed("setup", str(exc), exc.fix))
    return report


class PluginCheck:
    """What the plugin host does on registration: manifest, OpenAPI document, logo, CORS preflight."""

    def __init__(self, fetcher: Fetcher, url: str, report: Report, cors_origin: str) -> None:
        self.fetcher = fetcher
        self.url = url
        self.report = report
        self.cors_origin = cors_origin
        self.public_origin = origin(url)

    async def run(self) -> None:
        """Every plugin (or GPT Action) check, in the host's order."""
        self._where()
        if self.report.mode == "plugin":
            info = await self._manifest()
            if info is None:
                return
            document = await self._openapi(info.api_url, openapi.PLUGIN_LIMITS) if info.api_url else None
            if info.logo_url:
                await self._logo(info.logo_url)
        else:
            document = await self._openapi(self.url, openapi.ACTION_LIMITS)
        if document is not None:
            await self._preflight(document)

    def _where(self) -> None:
        host = host_of(self.url)
        if is_machine_local(host):
            self.report.add(
                warned(
                    "public URL",
                    f"{self.url} is on your machine; the plugin host cannot reach it",
                    "check the public URL that relay-client http prints instead",
                )
            )
        elif urlsplit(self.url).scheme == "http" and not is_dev_host(host):
            self.report.add(
                warned("HTTPS", "the host requires https:// for a remote plugin or action", "serve it over TLS (relay-server --https-port)")
            )

    async def _get(self, name: str, url: str, limit: int, accept: str) -> Answer | None:
        """GET ``url``; a FAIL line (and None) when there is no usable answer."""
        try:
            return await self.fetcher.fetch("GET", url, limit=limit, headers={"Accept": accept})
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return None

    def _status_failure(self, name: str, answer: Answer, default_fix: str) -> bool:
        """A FAIL line if ``answer`` is not 200."""
        if answer.status == 200:
            return False
        fix = explain_status(answer.status, answer.headers, answer.body, answer.url) or default_fix
        self.report.add(failed(name, f"GET {answer.url} answered {answer.status} {answer.reason}".rstrip(), fix))
        return True

    async def _manifest(self) -> manifest.ManifestInfo | None:
        path = urlsplit(self.url).path
        manifest_url = self.url if path.endswith(manifest.MANIFEST_PATH) else self.public_origin + manifest.MANIFEST_PATH
        answer = await self._get("manifest", manifest_url, MAX_MANIFEST_BYTES, "application/json")
        if answer is None or self._status_failure("manifest", answer, f"serve ai-plugin.json at {manifest.MANIFEST_PATH}"):
            return None
        self.report.add(passed("manifest", f"GET {manifest_url} answered 200 ({answer.content_type or 'no type'}, {len(answer.body)} bytes)"))
        document, parsed = manifest.parse(answer.body)
        self.report.add(parsed)
        if document is None:
            return None
        self.report.extend(manifest.validate(document, manifest_url))
        return manifest.info(document, manifest_url)

    def _reachable_url(self, url: str) -> tuple[str, str]:
        """Where to fetch ``url`` from: itself, or its path on the public origin when it points at this machine."""
        if is_machine_local(host_of(url)) and not same_origin(url, self.url):
            return with_origin(url, self.public_origin), " (its path on the public URL; see the URL failure above)"
        return url, ""

    async def _openapi(self, url: str, limits: openapi.DescriptionLimits) -> dict[str, Any] | None:
        fetch_url, note = self._reachable_url(url)
        accept = "application/json, application/yaml, text/yaml, */*;q=0.5"
        answer = await self._get("OpenAPI document", fetch_url, MAX_OPENAPI_BYTES, accept)
        where = "api.url" if self.report.mode == "plugin" else "this URL"
        if answer is None or self._status_failure("OpenAPI document", answer, f"serve the OpenAPI document at {where}"):
            return None
        self.report.add(passed("OpenAPI document", f"GET {fetch_url} answered 200 ({len(answer.body)} bytes){note}"))
        document, parsed = openapi.parse(answer.body, answer.content_type, fetch_url)
        self.report.add(parsed)
        if document is None:
            return None
        if not openapi.looks_like_openapi(document):
            self.report.add(
                failed(
                    "OpenAPI version",
                    "the document has neither an openapi nor a swagger field",
                    "give a plugin's base URL (its manifest is at /.well-known/ai-plugin.json) or a GPT Action's OpenAPI URL",
                )
            )
            return None
        checks = openapi.validate(document, self.url, limits)
        self.report.extend(checks)
        servers = next(check for check in checks if check.name == "OpenAPI servers")
        if servers.status is Status.PASS:  # on the public origin; is it answering at all?
            await self._server_reachable(openapi.server_url(document) or self.public_origin)
        return document

    async def _server_reachable(self, server: str) -> None:
        name = "OpenAPI server reachable"
        try:
            answer = await self.fetcher.fetch("GET", server, limit=MAX_SMALL_BYTES, headers={"Accept": "*/*"})
        except FetchError as exc:
            self.report.add(failed(name, str(exc), exc.fix))
            return
        if answer.headers.get("X-Relay-Error") or answer.status in (502, 503, 504):
            fix = explain_status(answer.status, answer.headers, answer.body, server) or "start the API server"
            self.report.add(failed(name, f"GET {server} answered {answer.status}", fix))
            return
        self.report.add(passed(name, f"GET {server} answered {answer.status}"))

    async def _logo(self, url: str) -> None:
        fetch_url, note = self._reachable_url(url)
        try:
            answer = await self.fetcher.fetch("GET", fetch_url, limit=MAX_LOGO_BYTES, headers={"Accept": "image/*"})
        except FetchError as exc:
            self.report.add(failed("logo", str(exc), exc.fix))
            return
        fix = explain_status(answer.status, answer.headers, answer.body, fetch_url) if answer.status != 200 else ""
        checks = logo.judge(fetch_url, answer.status, answer.content_type, answer.body, fix)
        if note and checks and checks[0].status is Status.PASS:
            checks[0] = passed("logo", checks[0].message + note)
        self.report.extend(checks)

    async def _preflight(self, document: dict[str, Any]) -> None:
        """``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method`` for the first operations."""
        name = "CORS preflight"
        operations = openapi.operations(document)[:MAX_PREFLIGHTS]
        if not operations:
            return
        server = openapi.server_url(document)
        base = server if server and same_origin(server, self.url) else self.public_origin
        problems: list[str] = []
        for op in operations:
            target = base.rstrip("/") + op.concrete_path()
            headers = cors.preflight_headers(self.cors_origin, op.method, op.has_body)
            try:
                answer = await self.fetcher.fetch("OPTIONS", target, limit=MAX_SMALL_BYTES, headers=headers, follow_redirects=False)
            except FetchError as exc:
                problems.append(f"{op.label}: {exc}")
                continue
            verdict = cors.judge(self.cors_origin, op.method, op.has_body, answer.status, answer.headers)
            if verdict is not None:
                problems.append(f"{op.label}: {verdict}")
        if problems:
            self.report.add(failed(name, f"from {self.cors_origin}: " + "; ".join(problems), cors.fix(self.cors_origin)))
        else:
            labels = ", ".join(op.label for op in operations)
            self.report.add(passed(name, f"{self.cors_origin} may call {labels}"))

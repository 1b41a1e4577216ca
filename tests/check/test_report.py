"""The report's text and JSON forms and its exit status."""

from __future__ import annotations

import json

from relay_client.check.report import Report, failed, passed, render_json, render_text, warned


def test_text_report_has_a_line_per_check_fixes_under_failures_and_a_summary() -> None:
    report = Report("https://x.example", "plugin")
    report.add(passed("manifest", "answered 200"))
    report.add(failed("logo", "answered 404", "serve it"))
    report.add(warned("HTTPS", "plain http", "use TLS"))
    assert render_text(report).splitlines() == [
        "Checking https://x.example as a ChatGPT plugin",
        "PASS manifest: answered 200",
        "FAIL logo: answered 404",
        "     fix: serve it",
        "WARN HTTPS: plain http",
        "     fix: use TLS",
        "Summary: 3 checks, 1 passed, 1 failed, 1 warning; fix the failures above before registering.",
    ]
    assert report.exit_code == 1 and not report.ok


def test_warnings_alone_still_exit_zero() -> None:
    report = Report("https://x.example/mcp", "mcp")
    report.add(warned("SSE streaming", "not observable"))
    assert report.exit_code == 0
    assert report.summary() == "Summary: 1 check, 0 passed, 0 failed, 1 warning; ready, but read the warnings."


def test_json_report_carries_every_field() -> None:
    report = Report("https://x.example", "action")
    report.add(failed("OpenAPI servers", "no servers[0].url", "add servers"))
    data = json.loads(render_json(report))
    assert data == {
        "target": "https://x.example",
        "mode": "action",
        "ok": False,
        "checks": [{"name": "OpenAPI servers", "status": "FAIL", "message": "no servers[0].url", "fix": "add servers"}],
        "summary": {"checks": 1, "passed": 0, "failed": 1, "warnings": 0},
    }

"""The report: one result per check (PASS, FAIL or WARN, with the fix), as text or JSON."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    """Outcome of one check; only FAIL makes the command exit non-zero."""

    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"


@dataclass(frozen=True, slots=True)
class Check:
    """One thing checked: what, the outcome, what was seen, and how to fix it."""

    name: str
    status: Status
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        """The JSON form of this result."""
        result = {"name": self.name, "status": self.status.value, "message": self.message}
        if self.fix:
            result["fix"] = self.fix
        return result


def passed(name: str, message: str) -> Check:
    """A check that passed."""
    return Check(name, Status.PASS, message)


def failed(name: str, message: str, fix: str) -> Check:
    """A check that failed, with how to fix it."""
    return Check(name, Status.FAIL, message, fix)


def warned(name: str, message: str, fix: str = "") -> Check:
    """Worth knowing, but the host would still accept it."""
    return Check(name, Status.WARN, message, fix)


#: What each mode checks, as the report's first line names it.
MODE_TITLES = {
    "plugin": "ChatGPT plugin",
    "action": "GPT Action (OpenAPI document)",
    "mcp": "remote MCP server",
}


@dataclass
class Report:
    """Every check run against one URL, in order."""

    target: str
    mode: str
    checks: list[Check] = field(default_factory=list)

    def add(self, check: Check) -> Check:
        """Record a result (and return it, so callers can branch on it)."""
        self.checks.append(check)
        return check

    def extend(self, checks: list[Check]) -> None:
        """Record several results."""
        self.checks.extend(checks)

    def count(self, status: Status) -> int:
        """How many checks ended with ``status``."""
        return sum(1 for check in self.checks if check.status is status)

    @property
    def ok(self) -> bool:
        """True when nothing failed (warnings allowed)."""
        return self.count(Status.FAIL) == 0

    @property
    def exit_code(self) -> int:
        """0 only if every check passed or warned."""
        return 0 if self.ok else 1

    def summary(self) -> str:
        """The closing line."""
        total, fails, warns = len(self.checks), self.count(Status.FAIL), self.count(Status.WARN)
        counts = f"{total} check{'' if total == 1 else 's'}, {self.count(Status.PASS)} passed, {fails} failed, {warns} warning{'' if warns == 1 else 's'}"
        if fails:
            verdict = "fix the failures above" + (" before registering" if self.mode != "mcp" else "")
        elif warns:
            verdict = "ready, but read the warnings"
        else:
            verdict = "ready"
        return f"Summary: {counts}; {verdict}."

    def as_dict(self) -> dict[str, Any]:
        """The whole report as JSON-ready data."""
        return {
            "target": self.target,
            "mode": self.mode,
            "ok": self.ok,
            "checks": [check.as_dict() for check in self.checks],
            "summary": {
                "checks": len(self.checks),
                "passed": self.count(Status.PASS),
                "failed": self.count(Status.FAIL),
                "warnings": self.count(Status.WARN),
            },
        }


#: Width of the status column in text output.
_STATUS_WIDTH = 5


def render_text(report: Report) -> str:
    """Human output: a header, one line per check (plus its fix), a summary line."""
    lines = [f"Checking {report.target} as a {MODE_TITLES.get(report.mode, report.mode)}"]
    for check in report.checks:
        lines.append(f"{check.status.value:<{_STATUS_WIDTH}}{check.name}: {check.message}")
        if check.fix and check.status is not Status.PASS:
            lines.append(f"{'':<{_STATUS_WIDTH}}fix: {check.fix}")
    lines.append(report.summary())
    return "\n".join(lines)


def render_json(report: Report) -> str:
    """Machine output: the whole report as one JSON document."""
    return json.dumps(report.as_dict(), indent=2, ensure_ascii=False)

"""The CORS preflight verdict without sockets, as the Fetch standard decides it."""

from __future__ import annotations

import pytest

from relay_client.check import cors

ORIGIN = "https://chat.openai.com"


def test_the_preflight_asks_for_the_method_and_content_type_for_bodies() -> None:
    assert cors.preflight_headers(ORIGIN, "post", True) == {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    assert "Access-Control-Request-Headers" not in cors.preflight_headers(ORIGIN, "get", False)


@pytest.mark.parametrize(
    ("method", "body", "status", "headers", "verdict"),
    [
        ("GET", False, 204, {"Access-Control-Allow-Origin": ORIGIN}, None),
        ("DELETE", False, 200, {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, DELETE"}, None),
        ("PATCH", False, 204, {"Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Methods": "*"}, None),
        ("POST", True, 204, {"Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Headers": "Content-Type"}, None),
        ("GET", False, 405, {}, "the preflight answered 405, not 2xx"),
        ("GET", False, 204, {}, "no Access-Control-Allow-Origin in the answer"),
        (
            "GET",
            False,
            204,
            {"Access-Control-Allow-Origin": "https://chatgpt.com"},
            "Access-Control-Allow-Origin is 'https://chatgpt.com', not 'https://chat.openai.com'",
        ),
        (
            "DELETE",
            False,
            204,
            {"Access-Control-Allow-Origin": ORIGIN, "Access-Control-Allow-Methods": "GET, POST"},
            "Access-Control-Allow-Methods allows GET, POST, not DELETE",
        ),
        (
            "POST",
            True,
            204,
            {"Access-Control-Allow-Origin": ORIGIN},
            "Access-Control-Allow-Headers does not allow content-type (sent with JSON bodies)",
        ),
    ],
)
def test_preflight_answers_are_judged_as_a_browser_would(
    method: str, body: bool, status: int, headers: dict[str, str], verdict: str | None
) -> None:
    assert cors.judge(ORIGIN, method, body, status, headers) == verdict

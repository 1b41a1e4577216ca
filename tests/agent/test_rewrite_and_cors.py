"""--rewrite-urls, --cors and --host-header through a real relay and agent."""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest

from support.localrelay import Agent, Origin, Relay, start_agent
from support.processes import ProcessGroup


@pytest.fixture(scope="module")
def rewriting_agent(group: ProcessGroup, relay: Relay, doc_origin: Origin) -> Agent:
    """An agent with --rewrite-urls and --cors."""
    return start_agent(group, relay, str(doc_origin.port), None, "docs", extra=("--rewrite-urls", "--cors"))


async def test_manifest_urls_name_the_public_url_and_only_the_local_origin_is_rewritten(
    rewriting_agent: Agent, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    public = rewriting_agent.public_url
    async with client.get(f"{public}/.well-known/ai-plugin.json") as response:
        body = await response.read()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/json")  # chosen by path, not type
        assert response.headers["Content-Length"] == str(len(body))
    manifest = json.loads(body)
    assert manifest["api"]["url"] == f"{public}/specs/todo.yaml"
    assert manifest["logo_url"] == f"{public}/logo.png"
    assert manifest["legal_info_url"] == f"{public}/legal"
    # Another port that merely starts with ours is not the local origin.
    assert manifest["not_this_port"] == f"http://localhost:{doc_origin.port}1/x"


async def test_the_openapi_document_a_manifest_names_is_rewritten_and_gets_a_content_length(
    rewriting_agent: Agent, client: aiohttp.ClientSession
) -> None:
    public = rewriting_agent.public_url
    async with client.get(f"{public}/.well-known/ai-plugin.json") as response:
        assert response.status == 200  # teaches the agent the spec's path
    async with client.get(f"{public}/specs/todo.yaml") as response:
        body = await response.read()
        assert response.headers["Content-Length"] == str(len(body))
        assert "Transfer-Encoding" not in response.headers
    assert body == f"openapi: 3.1.0\nservers:\n  - url: {public}\npaths: {{}}\n".encode()


async def test_oauth_metadata_location_and_www_authenticate_are_rewritten(
    rewriting_agent: Agent, client: aiohttp.ClientSession
) -> None:
    public = rewriting_agent.public_url
    async with client.get(f"{public}/.well-known/oauth-protected-resource") as response:
        document = await response.json()
    assert document == {"resource": f"{public}/mcp", "authorization_servers": [f"{public}/auth"]}
    async with client.get(f"{public}/redirect", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == f"{public}/next?x=1"
    async with client.get(f"{public}/unauthorized") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == (
            f'Bearer resource_metadata="{public}/.well-known/oauth-protected-resource"'
        )


async def test_other_bodies_and_encoded_documents_pass_byte_for_byte(
    rewriting_agent: Agent, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    local = f"http://localhost:{doc_origin.port}"
    async with client.get(f"{rewriting_agent.public_url}/other.json") as response:
        assert await response.read() == f'{{"self": "{local}/other.json"}}'.encode()
    async with client.get(f"{rewriting_agent.public_url}/openapi.json") as response:
        raw = await response.read()
        assert response.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw) == f'{{"servers": [{{"url": "{local}"}}]}}'.encode()


async def test_cors_preflight_is_answered_by_the_agent_for_the_requested_origin_and_method(
    rewriting_agent: Agent, client: aiohttp.ClientSession
) -> None:
    headers = {
        "Origin": "https://chat.openai.com",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, openai-conversation-id",
    }
    async with client.options(f"{rewriting_agent.public_url}/plain", headers=headers) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://chat.openai.com"
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert response.headers["Access-Control-Allow-Headers"] == "content-type, openai-conversation-id"
    async with client.get(f"{rewriting_agent.public_url}/plain", headers={"Origin": "https://chatgpt.com"}) as response:
        assert await response.text() == "plain"
        assert response.headers["Access-Control-Allow-Origin"] == "https://chatgpt.com"
        assert "Origin" in response.headers["Vary"]


async def test_without_the_options_documents_and_preflights_reach_the_local_server_untouched(
    group: ProcessGroup, relay: Relay, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    plain = start_agent(group, relay, str(doc_origin.port), None, "untouched")
    async with client.get(f"{plain.public_url}/.well-known/ai-plugin.json") as response:
        manifest = json.loads(await response.read())
    assert manifest["api"]["url"] == f"http://localhost:{doc_origin.port}/specs/todo.yaml"
    headers = {"Origin": "https://chat.openai.com", "Access-Control-Request-Method": "POST"}
    async with client.options(f"{plain.public_url}/plain", headers=headers) as response:
        assert response.status == 200 and await response.text() == "plain"  # the origin answered
        assert "Access-Control-Allow-Origin" not in response.headers


async def test_host_header_rewrite_lets_a_strict_local_server_answer_and_the_console_suggests_it(
    group: ProcessGroup, relay: Relay, doc_origin: Origin, client: aiohttp.ClientSession
) -> None:
    preserve = start_agent(group, relay, str(doc_origin.port), None, "strict")
    async with client.get(f"{preserve.public_url}/strict") as response:
        assert response.status == 421
    preserve.process.wait_for_line(r"^hint: .*421.*--host-header rewrite", timeout=5, stream="stderr")

    rewrite = start_agent(group, relay, str(doc_origin.port), None, "strict2", extra=("--host-header", "rewrite"))
    async with client.get(f"{rewrite.public_url}/strict") as response:
        assert response.status == 200 and await response.text() == "ok"
    async with client.get(f"{rewrite.public_url}/host") as response:
        assert (await response.json())["host"] == f"localhost:{doc_origin.port}"

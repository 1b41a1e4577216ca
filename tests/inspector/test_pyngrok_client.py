"""A tool written for ngrok's agent API (pyngrok's own client code) works against the inspector unchanged."""

from __future__ import annotations

import asyncio

import pytest

from relay_client.inspector import InspectorServer, Recorder

from .conftest import finished_exchange, record

pyngrok_ngrok = pytest.importorskip("pyngrok.ngrok", reason="pyngrok is not installed (pip install -e '.[test]')")
pyngrok_agent = pytest.importorskip("pyngrok.agent")
pyngrok_conf = pytest.importorskip("pyngrok.conf")
pyngrok_exception = pytest.importorskip("pyngrok.exception")


async def test_pyngrok_reads_tunnels_and_refreshes_their_metrics(inspector: InspectorServer, recorder: Recorder) -> None:
    record(recorder, finished_exchange())
    data = await asyncio.to_thread(pyngrok_ngrok.api_request, f"{inspector.url}/api/tunnels")
    config = pyngrok_conf.PyngrokConfig(config_version="2")
    [tunnel] = [pyngrok_ngrok.NgrokTunnel(t, config, inspector.url) for t in data["tunnels"]]
    assert tunnel.public_url == "http://demo.localhost:8080"
    assert tunnel.proto == "http" and tunnel.name == "demo"
    assert tunnel.upstream["url"].startswith("http://127.0.0.1:")
    await asyncio.to_thread(tunnel.refresh_metrics)
    assert tunnel.metrics["http"]["count"] == 1


async def test_pyngrok_lists_reads_replays_and_deletes_captured_requests(inspector: InspectorServer, recorder: Recorder) -> None:
    original = record(recorder, finished_exchange(target="/webhook"))
    url = f"{inspector.url}/api/requests/http"
    listed = await asyncio.to_thread(pyngrok_ngrok.api_request, url, "GET", None, {"tunnel_name": "demo"})
    [captured] = [pyngrok_agent.CapturedRequest(r) for r in listed["requests"]]
    assert (captured.id, captured.tunnel_name, captured.request["uri"]) == (original.id, "demo", "/webhook")
    assert captured.response["status_code"] == 200

    one = await asyncio.to_thread(pyngrok_ngrok.api_request, f"{url}/{original.id}")
    assert pyngrok_agent.CapturedRequest(one).id == original.id

    answer = await asyncio.to_thread(pyngrok_ngrok.api_request, url, "POST", {"id": original.id, "tunnel_name": None})
    assert answer == {}
    assert len(recorder) == 2 and next(recorder.newest_first()).replay

    assert await asyncio.to_thread(pyngrok_ngrok.api_request, url, "DELETE") == {}
    assert len(recorder) == 0


async def test_pyngrok_sees_an_unknown_request_as_an_http_404(inspector: InspectorServer) -> None:
    with pytest.raises(pyngrok_exception.PyngrokNgrokHTTPError) as caught:
        await asyncio.to_thread(pyngrok_ngrok.api_request, f"{inspector.url}/api/requests/http/req_gone")
    assert caught.value.status_code == 404


async def test_pyngrok_reads_the_agent_status(inspector: InspectorServer) -> None:
    status = await asyncio.to_thread(pyngrok_ngrok.api_request, f"{inspector.url}/api/status")
    agent = pyngrok_agent.NgrokAgent(status)
    assert agent.status == "online" and agent.uri == "/api/status" and agent.agent_version

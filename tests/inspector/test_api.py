"""The inspector's JSON API against a recorder fed with real exchanges (no relay)."""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
from support.ports import free_port

from relay_client.exchange import Exchange
from relay_client.inspector import InspectorServer, Recorder
from relay_client.target import LocalTarget

from .conftest import FakeConfig, FakeHost, finished_exchange, record


async def _json(response: aiohttp.ClientResponse) -> dict:
    assert response.content_type == "application/json", await response.text()
    return await response.json()


async def test_tunnels_list_has_ngrok_shape(api: aiohttp.ClientSession, host: FakeHost) -> None:
    async with api.get("/api/tunnels") as response:
        assert response.status == 200
        data = await _json(response)
    assert data["uri"] == "/api/tunnels"
    [tunnel] = data["tunnels"]
    assert set(tunnel) == {"name", "uri", "public_url", "proto", "config", "metrics"}
    assert tunnel["name"] == "demo"
    assert tunnel["uri"] == "/api/tunnels/demo"
    assert tunnel["public_url"] == "http://demo.localhost:8080"
    assert tunnel["proto"] == "http"
    assert tunnel["config"] == {"addr": host.config.target.origin, "inspect": True}
    assert set(tunnel["metrics"]) == {"conns", "http"}


async def test_no_tunnel_is_listed_before_the_relay_gave_one(api: aiohttp.ClientSession, host: FakeHost) -> None:
    host.state.public_url, host.state.name = None, None
    async with api.get("/api/tunnels") as response:
        assert (await _json(response))["tunnels"] == []
    async with api.get("/api/tunnels/command_line") as response:
        assert response.status == 404


async def test_one_tunnel_is_found_by_name_or_as_command_line(api: aiohttp.ClientSession) -> None:
    for name in ("demo", "command_line"):
        async with api.get(f"/api/tunnels/{name}") as response:
            assert response.status == 200
            assert (await _json(response))["public_url"] == "http://demo.localhost:8080"
    async with api.get("/api/tunnels/other") as response:
        assert response.status == 404
        error = await _json(response)
    assert error["status_code"] == 404 and "other" in error["msg"]


async def test_requests_are_listed_newest_first_and_limit_caps_the_count(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    ids = [record(recorder, finished_exchange(target=f"/item/{i}")).id for i in range(6)]
    async with api.get("/api/requests/http") as response:
        data = await _json(response)
    assert data["uri"] == "/api/requests/http"
    assert [r["id"] for r in data["requests"]] == ids[::-1]
    async with api.get("/api/requests/http", params={"limit": "2"}) as response:
        limited = await _json(response)
    assert [r["request"]["uri"] for r in limited["requests"]] == ["/item/5", "/item/4"]


async def test_a_limit_that_is_not_a_number_is_a_400_json_error(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/requests/http", params={"limit": "many"}) as response:
        assert response.status == 400
        assert "limit" in (await _json(response))["msg"]


async def test_requests_can_be_filtered_by_path_method_status_and_tunnel(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    record(recorder, finished_exchange(target="/api/users", status=200))
    record(recorder, finished_exchange(method="POST", target="/api/users", status=201, reason="Created"))
    record(recorder, finished_exchange(target="/missing", status=404, reason="Not Found"))

    async def uris(**params: str) -> list[str]:
        async with api.get("/api/requests/http", params=params) as response:
            return [f"{r['request']['method']} {r['request']['uri']}" for r in (await _json(response))["requests"]]

    assert await uris(path="/api/") == ["POST /api/users", "GET /api/users"]
    assert await uris(method="post") == ["POST /api/users"]
    assert await uris(status="4xx") == ["GET /missing"]
    assert await uris(status="200,201") == ["POST /api/users", "GET /api/users"]
    assert await uris(tunnel_name="demo") == ["GET /missing", "POST /api/users", "GET /api/users"]
    assert await uris(tunnel_name="someone-else") == []


async def test_one_request_is_returned_by_id_and_an_unknown_id_is_a_404_json_error(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    exchange = record(recorder, finished_exchange(target="/one"))
    async with api.get(f"/api/requests/http/{exchange.id}") as response:
        assert response.status == 200
        data = await _json(response)
    assert data["id"] == exchange.id and data["request"]["uri"] == "/one"
    async with api.get("/api/requests/http/req_nope") as response:
        assert response.status == 404
        error = await _json(response)
    assert error["status_code"] == 404 and "req_nope" in error["msg"]


async def test_unknown_api_paths_answer_json_errors(api: aiohttp.ClientSession) -> None:
    async with api.get("/api/nothing-here") as response:
        assert response.status == 404
        assert (await _json(response))["status_code"] == 404
    async with api.put("/api/requests/http") as response:
        assert response.status == 405
        assert (await _json(response))["status_code"] == 405


async def test_delete_clears_the_history_with_204(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    for _ in range(3):
        record(recorder, finished_exchange())
    async with api.delete("/api/requests/http") as response:
        assert response.status == 204
        assert await response.read() == b""
    async with api.get("/api/requests/http") as response:
        assert (await _json(response))["requests"] == []


async def test_status_reports_online_and_the_agent_version(api: aiohttp.ClientSession, host: FakeHost) -> None:
    async with api.get("/api/status") as response:
        data = await _json(response)
    assert data["status"] == "online" and data["uri"] == "/api/status"
    assert data["agent_version"]
    host.state.connected = False
    async with api.get("/api/status") as response:
        assert (await _json(response))["status"] == "reconnecting"


async def test_replay_answers_204_and_records_a_new_entry_with_the_local_answer(
    api: aiohttp.ClientSession, recorder: Recorder
) -> None:
    original = record(recorder, finished_exchange(
        method="POST", target="/orders?x=1", headers=[("Host", "demo.localhost:8080"), ("Content-Type", "text/plain")],
        request_body=b"two apples",
    ))
    async with api.post("/api/requests/http", json={"id": original.id}) as response:
        assert response.status == 204, await response.text()
        replay_id = response.headers["X-Replay-Id"]
    async with api.get("/api/requests/http", params={"limit": "1"}) as response:
        [newest] = (await _json(response))["requests"]
    assert newest["id"] == replay_id != original.id
    assert newest["localrelay"]["replay"] is True
    assert newest["response"]["status_code"] == 200
    seen = json.loads(base64.b64decode(newest["response"]["raw"]).split(b"\r\n\r\n", 1)[1])
    assert seen["method"] == "POST" and seen["path"] == "/orders?x=1"
    assert base64.b64decode(seen["body_b64"]) == b"two apples"
    assert ["Host", "demo.localhost:8080"] in seen["headers"]
    assert len(recorder) == 2


async def test_replay_with_edits_sends_the_edited_method_path_headers_and_body(
    api: aiohttp.ClientSession, recorder: Recorder
) -> None:
    original = record(recorder, finished_exchange(method="GET", target="/a"))
    edits = {"id": original.id, "method": "PUT", "path": "/b?c=d", "headers": {"X-Edit": ["yes"]}, "body": "new body"}
    async with api.post("/api/requests/http", json=edits) as response:
        assert response.status == 204, await response.text()
        replay = recorder.get(response.headers["X-Replay-Id"])
    assert replay is not None and replay.replay
    seen = json.loads(bytes(replay.response_body))
    assert (seen["method"], seen["path"], base64.b64decode(seen["body_b64"])) == ("PUT", "/b?c=d", b"new body")
    assert ["X-Edit", "yes"] in seen["headers"]
    assert ["Content-Length", "8"] in seen["headers"]


async def test_replay_applies_the_host_header_rewrite_policy(api: aiohttp.ClientSession, recorder: Recorder, host: FakeHost) -> None:
    host.config.host_header = "rewrite"
    original = record(recorder, finished_exchange())
    async with api.post("/api/requests/http", json={"id": original.id}) as response:
        replay = recorder.get(response.headers["X-Replay-Id"])
    seen = json.loads(bytes(replay.response_body))
    assert ["Host", host.config.target.host_port] in seen["headers"]


async def test_a_request_whose_captured_body_was_truncated_is_not_replayed_without_a_new_body(
    api: aiohttp.ClientSession, recorder: Recorder
) -> None:
    original = record(recorder, finished_exchange(method="POST", request_body=b"z" * 4000, capture_limit=1000))
    async with api.post("/api/requests/http", json={"id": original.id}) as response:
        assert response.status == 400
        error = await _json(response)
    assert "truncated" in error["msg"] and "1000 of 4000" in error["msg"]
    assert len(recorder) == 1
    async with api.post("/api/requests/http", json={"id": original.id, "body": "short"}) as response:
        assert response.status == 204


async def test_replay_refuses_unknown_ids_other_tunnels_and_paths_that_leave_the_local_server(
    api: aiohttp.ClientSession, recorder: Recorder
) -> None:
    original = record(recorder, finished_exchange())
    cases = [
        ({"id": "req_missing"}, 404),
        ({"id": original.id, "tunnel_name": "another"}, 404),
        ({}, 400),
        ({"id": original.id, "path": "http://example.com/"}, 400),
        ({"id": original.id, "path": "/has space"}, 400),
        ({"id": original.id, "method": "GET /x"}, 400),
        ({"id": original.id, "headers": {"Bad\nName": "v"}}, 400),
    ]
    for payload, status in cases:
        async with api.post("/api/requests/http", json=payload) as response:
            assert response.status == status, payload
            assert (await _json(response))["status_code"] == status
    async with api.post("/api/requests/http", data="not json", headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
    assert len(recorder) == 1


async def test_replay_accepts_the_form_encoded_body_older_ngrok_clients_send(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    original = record(recorder, finished_exchange())
    async with api.post("/api/requests/http", data={"id": original.id}) as response:
        assert response.status == 204
    assert len(recorder) == 2


async def test_a_replay_the_local_server_cannot_take_is_recorded_and_answered_502(
    api: aiohttp.ClientSession, recorder: Recorder, host: FakeHost
) -> None:
    host.config = FakeConfig(LocalTarget("http", "127.0.0.1", free_port()))
    original = record(recorder, finished_exchange())
    async with api.post("/api/requests/http", json={"id": original.id}) as response:
        assert response.status == 502
        error = await _json(response)
    assert "unreachable" in error["msg"]
    replay = recorder.get(error["details"]["replay_id"])
    assert replay is not None and replay.error and replay.status is None


async def test_replay_is_refused_with_503_while_the_agent_is_not_running(
    api: aiohttp.ClientSession, recorder: Recorder, host: FakeHost
) -> None:
    host.local_session = None
    original = record(recorder, finished_exchange())
    async with api.post("/api/requests/http", json={"id": original.id}) as response:
        assert response.status == 503
        assert "not running" in (await _json(response))["msg"]


async def test_the_live_feed_streams_new_requests_as_server_sent_events(
    api: aiohttp.ClientSession, recorder: Recorder
) -> None:
    async with api.get("/api/requests/http/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5) == b"retry: 1000\nevent: hello\ndata: {}\n\n"
        exchange = record(recorder, finished_exchange(target="/live"))
        block = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
    event, data = block.decode().strip().split("\n")
    assert event == "event: request"
    payload = json.loads(data.removeprefix("data: "))
    assert payload["id"] == exchange.id and payload["request"]["uri"] == "/live"


async def test_stopping_the_inspector_ends_open_live_feeds_promptly(inspector: InspectorServer, recorder: Recorder) -> None:
    feed_url = f"{inspector.url}/api/requests/http/stream"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as client, client.get(feed_url) as response:
        await asyncio.wait_for(response.content.readuntil(b"\n\n"), 5)
        assert recorder.subscriber_count == 1
        await asyncio.wait_for(inspector.stop(), 5)
        rest = await asyncio.wait_for(response.content.read(), 5)
    assert rest == b""
    assert recorder.subscriber_count == 0


async def test_the_page_is_served_at_the_root_and_loads_nothing_from_elsewhere(api: aiohttp.ClientSession) -> None:
    async with api.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "<title>localrelay inspector</title>" in html
    assert "/api/requests/http/stream" in html
    assert "http://" not in html.replace("http://x", "") and "https://" not in html
    assert "default-src 'self'" in csp


async def test_websocket_sessions_and_asterisk_requests_are_not_replayed(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    websocket = finished_exchange(target="/ws", status=101, reason="Switching Protocols")
    websocket.websocket = True
    record(recorder, websocket)
    asterisk = record(recorder, finished_exchange(method="OPTIONS", target="*"))
    async with api.post("/api/requests/http", json={"id": websocket.id}) as response:
        assert response.status == 400
        assert "websocket" in (await _json(response))["msg"]
    async with api.post("/api/requests/http", json={"id": asterisk.id}) as response:
        assert response.status == 400
        assert "path" in (await _json(response))["msg"]
    assert len(recorder) == 2


async def test_a_head_request_for_the_live_feed_answers_at_once(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    async with api.head("/api/requests/http/stream") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
    assert recorder.subscriber_count == 0


async def test_a_request_still_arriving_is_replayed_only_with_a_body_of_its_own(api: aiohttp.ClientSession, recorder: Recorder) -> None:
    arriving = Exchange("POST", "/upload", [("Host", "h")])
    arriving.add_request_body(b"first part")
    recorder.request_started(arriving)
    async with api.post("/api/requests/http", json={"id": arriving.id}) as response:
        assert response.status == 409
        assert "still arriving" in (await _json(response))["msg"]
    async with api.post("/api/requests/http", json={"id": arriving.id, "body": "whole"}) as response:
        assert response.status == 204

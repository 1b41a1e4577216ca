"""``/_relay/health`` of a fleet node: status for everyone, the node's internals for loopback and admins only.

The public answer (``status``, ``version``, ``tunnels``, ``uptime``,
``cluster.degraded``) names nothing inside the fleet; the node id (it carries
the hostname), the internal advertise URL, the Redis address and the token
store's state are shown under the rule of ``/_relay/metrics``: a loopback
caller, or ``Authorization: Bearer <admin token>``.  The node trusts
127.0.0.1 as a proxy here, so an ``X-Forwarded-For`` makes a remote caller.
"""

from __future__ import annotations

import http.client
import json
import time

import pytest

from fleet.conftest import Fleet, create_cluster_token, start_fleet
from support.ports import LOOPBACK
from support.processes import ProcessGroup

#: What anyone may read on a fleet node's health.
PUBLIC_FIELDS = {"status", "version", "tunnels", "uptime", "cluster"}

#: A caller on the internet, as the trusted proxy (127.0.0.1) forwards it.
REMOTE = {"X-Forwarded-For": "203.0.113.9"}


def health(port: int, headers: dict[str, str]) -> dict:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/_relay/health", headers={"Host": f"localhost:{port}", **headers})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:300]
        return json.loads(body)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def node(fleet_processes: ProcessGroup, tmp_path_factory) -> Fleet:
    return start_fleet(fleet_processes, tmp_path_factory.mktemp("fleet"), 1, extra=("--trusted-proxy", "127.0.0.1/32"))


def test_a_remote_caller_sees_only_status_version_tunnels_uptime_and_whether_the_cluster_is_degraded(node) -> None:
    port = node.nodes[0].port

    seen = health(port, REMOTE)

    assert set(seen) == PUBLIC_FIELDS, seen
    assert seen["status"] == "ok" and seen["cluster"] == {"degraded": False}
    text = json.dumps(seen)
    for secret in ("127.0.0.1", str(node.nodes[0].internal_port), str(node.redis.port), "redis", "node"):
        assert secret not in text, (secret, text)


def test_a_loopback_caller_sees_the_node_id_advertise_url_redis_and_token_store(node) -> None:
    port = node.nodes[0].port

    seen = health(port, {})

    cluster = seen["cluster"]
    assert cluster["degraded"] is False and cluster["node"] and cluster["worker"] == 0
    assert cluster["advertise"] == f"http://127.0.0.1:{node.nodes[0].internal_port}"
    assert cluster["redis"] == node.redis.url
    assert cluster["token_store"]["degraded"] is False and cluster["token_store"]["epoch"]


def test_an_admin_token_shows_the_details_to_a_remote_caller_and_an_agent_token_does_not(node) -> None:
    port = node.nodes[0].port
    admin = create_cluster_token(node.cluster, "--admin")
    agent = create_cluster_token(node.cluster)

    def details_for(token: str) -> bool:
        return "node" in health(port, {**REMOTE, "Authorization": f"Bearer {token}"})["cluster"]

    # The token reaches this node's mirror through pub/sub; poll briefly (bounded).
    deadline = time.monotonic() + 15
    while not details_for(admin):
        assert time.monotonic() < deadline, "admin token never opened the health details"
        time.sleep(0.2)
    assert health(port, {**REMOTE, "Authorization": f"Bearer {admin}"})["cluster"]["redis"] == node.redis.url
    assert not details_for(agent)
    assert not details_for("lr_not-a-real-admin-token-0000000000")

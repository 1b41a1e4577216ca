"""The internal listener of real fleet nodes: only requests proven with the cluster secret get in.

Two nodes and a Redis as real processes; the agent holds its tunnel on node 1.
The tests speak to the nodes' internal ports directly with raw requests, signed
(or not) the way a node signs a hop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from fleet.conftest import Fleet, create_cluster_token, start_fleet, start_fleet_agent
from relay_server.fleet.proof import AUTH_HEADER, HOP_HEADER, ClusterProof
from support.clients import build_request, raw_request
from support.localrelay import Agent, Origin, start_origin
from support.processes import ProcessGroup

NAME = "inside"


@dataclass
class Stack:
    fleet: Fleet
    origin: Origin
    agent: Agent

    def host(self, name: str = NAME) -> str:
        """The public Host a first node would pass on (node 2's public port)."""
        return f"{name}.localhost:{self.fleet.nodes[1].port}"


@pytest.fixture(scope="module")
def stack(fleet_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    fleet = start_fleet(fleet_processes, tmp_path_factory.mktemp("fleet"), 2)
    origin = start_origin(fleet_processes)
    token = create_cluster_token(fleet.cluster)
    agent = start_fleet_agent(fleet_processes, fleet.nodes[:1], str(origin.port), token, NAME)
    yield Stack(fleet, origin, agent)


def _signed(secret: str, method: str, host: str, target: str, **kwargs) -> list[tuple[str, str]]:
    return [(AUTH_HEADER, ClusterProof(secret, **kwargs).sign(method, host, target)), (HOP_HEADER, "1")]


async def _ask(port: int, method: str, target: str, host: str, headers: list[tuple[str, str]]) -> tuple[int, dict]:
    answer = await raw_request(port, build_request(method, target, host, headers))
    try:
        return answer.status, json.loads(answer.body or b"{}")
    except ValueError:
        return answer.status, {"raw": answer.body[:200].decode("latin-1")}


async def test_a_request_proven_with_the_cluster_secret_reaches_the_tunnel_with_the_first_nodes_headers(
    stack: Stack,
) -> None:
    host = stack.host()
    headers = _signed(stack.fleet.secret, "GET", host, "/inside?x=1") + [
        ("X-Forwarded-For", "198.51.100.7, 203.0.113.5"), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", host),
    ]
    status, body = await _ask(stack.fleet.nodes[0].internal_port, "GET", "/inside?x=1", host, headers)
    assert status == 200, body
    seen: dict[str, list[str]] = {}
    for name, value in body["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen["x-forwarded-for"] == ["198.51.100.7, 203.0.113.5"], "the first node's chain is kept as it is"
    assert seen["x-forwarded-proto"] == ["https"] and seen["x-forwarded-host"] == [host]
    assert AUTH_HEADER.lower() not in seen and HOP_HEADER.lower() not in seen


async def test_anything_without_a_valid_fresh_proof_is_refused_with_403(stack: Stack) -> None:
    host, secret = stack.host(), stack.fleet.secret
    internal = stack.fleet.nodes[0].internal_port
    refused = {
        "no proof at all": [],
        "the hop mark alone": [(HOP_HEADER, "1")],
        "another secret": _signed("not-the-fleet-secret-at-all", "GET", host, "/a"),
        "a proof for another path": _signed(secret, "GET", host, "/b"),
        "a proof for another tunnel": _signed(secret, "GET", stack.host("other"), "/a"),
        "a proof from ten minutes ago": _signed(secret, "GET", host, "/a", clock=lambda: time.time() - 600),
        "the secret itself as the proof": [(AUTH_HEADER, secret), (HOP_HEADER, "1")],
    }
    for case, headers in refused.items():
        status, body = await _ask(internal, "GET", "/a", host, headers)
        assert (status, body.get("error")) == (403, "forbidden"), f"{case}: {status} {body}"
    base = f"localhost:{stack.fleet.nodes[0].port}"
    for path in ("/_relay/health", "/_relay/connect", "/_relay/metrics"):
        status, _ = await _ask(internal, "GET", path, base, [])
        assert status == 403, f"the internal listener answered {path} with {status}"


async def test_a_node_never_forwards_a_hop_request_again(stack: Stack) -> None:
    """Node 2 knows the tunnel is on node 1, but a proven hop request to node 2 is answered there, not passed on."""
    host = stack.host()
    status, body = await _ask(
        stack.fleet.nodes[1].internal_port, "GET", "/loop", host, _signed(stack.fleet.secret, "GET", host, "/loop")
    )
    assert (status, body.get("error")) == (502, "tunnel-not-on-node"), body
    # The same name through node 2's public port does hop to node 1.
    status, body = await _ask(stack.fleet.nodes[1].port, "GET", "/public", host, [])
    assert status == 200 and body["raw_path"] == "/public", body

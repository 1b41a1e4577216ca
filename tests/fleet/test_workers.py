"""``relay-server serve --workers 2``: two processes share the public port and both serve one tunnel.

The kernel spreads new connections over the workers (SO_REUSEPORT), so a
series of fresh connections reaches both: each worker's health names its own
fleet node; every tunnel request succeeds, whichever worker took it (the one
without the agent hops to the other).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support.localrelay import START_TIMEOUT, get_direct, start_agent, start_origin, start_relay, wait_until
from support.ports import LOOPBACK, free_port, free_port_pair
from support.processes import ProcessGroup, python_module
from support.redis import RedisServer
from tls.support.https import https_get
from tls.support.pki import DOMAIN, LocalPKI
from tls.support.relays import start_tls_agent, start_tls_relay

from fleet.conftest import node_argv_extra, node_env

SECRET = "workers-test-secret-0123456789abcdef"

#: Fresh connections tried, at most, before both workers must have answered.
MAX_TRIES = 200


def _children(pid: int) -> list[int]:
    """Child process ids of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _workers_extra(redis: RedisServer, internal: int) -> tuple[str, ...]:
    return (*node_argv_extra(redis.url, SECRET, internal), "--workers", "2")


def test_two_workers_share_the_public_port_and_both_serve_one_tunnel(
    redis_server: RedisServer, processes: ProcessGroup, tmp_path: Path
) -> None:
    internal = free_port_pair()
    relay = start_relay(processes, tmp_path / "data", extra=_workers_extra(redis_server, internal))
    supervisor = relay.process
    wait_until(lambda: len(_children(supervisor.pid)) == 2, START_TIMEOUT, message="two workers")
    workers = _children(supervisor.pid)
    origin = start_origin(processes)
    agent = start_agent(processes, relay, str(origin.port), relay.token, "shared")

    nodes: set[str] = set()
    served = 0
    for _ in range(MAX_TRIES):  # get_direct opens a fresh connection each time
        status, body = get_direct(relay.port, "/_relay/health", host=f"localhost:{relay.port}", timeout=5.0)
        assert status == 200, body
        health = json.loads(body)
        assert health["status"] == "ok", health
        nodes.add(health["cluster"]["node"])
        status, body = get_direct(relay.port, f"/via-worker/{served}", host=agent.host, timeout=10.0)
        assert status == 200, body
        assert json.loads(body)["raw_path"] == f"/via-worker/{served}"
        served += 1
        if len(nodes) == 2 and served >= 20:
            break
    assert len(nodes) == 2, f"only {nodes} answered on {served} fresh connections"
    assert {json.loads(get_direct(relay.port, "/_relay/health", host=f"localhost:{relay.port}")[1])["cluster"]["advertise"]
            for _ in range(40)} <= {f"http://127.0.0.1:{internal}", f"http://127.0.0.1:{internal + 1}"}
    time.sleep(0.5)
    assert supervisor.count(r"^relay-client http 3000 ") == 1, "the paste line is printed once, by worker 0"

    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait_exit(30.0) == 0, supervisor.output()
    assert not any(_alive(pid) for pid in workers), "every worker is gone with the supervisor"


def test_two_workers_share_the_tls_port_too_with_certificate_files(
    redis_server: RedisServer, processes: ProcessGroup, tmp_path: Path
) -> None:
    """HTTPS connections land on both workers; the agent on wss:// and every tunnel request over https work."""
    (tmp_path / "pki").mkdir()
    pki = LocalPKI(tmp_path / "pki")
    files = pki.issue(f"*.{DOMAIN}", DOMAIN)
    internal = free_port_pair()
    relay = start_tls_relay(
        processes, tmp_path / "data", "--domain", DOMAIN, "--tls-cert", str(files.chain), "--tls-key", str(files.key),
        "--cluster", redis_server.url, "--internal-port", str(internal), "--cluster-secret", SECRET, "--workers", "2",
    )
    wait_until(lambda: len(_children(relay.process.pid)) == 2, START_TIMEOUT, message="two workers")
    origin = start_origin(processes)
    agent = start_tls_agent(processes, relay.server_url, str(origin.port), relay.token, cacert=pki.root_file, subdomain="tls")
    assert agent.public_url == f"https://tls.{DOMAIN}:{relay.https_port}"
    nodes: set[str] = set()
    for i in range(MAX_TRIES):  # a fresh TLS connection each time
        health = json.loads(https_get(relay.https_port, DOMAIN, "/_relay/health", cafile=pki.root_file).body)
        nodes.add(health["cluster"]["node"])
        response = https_get(relay.https_port, f"tls.{DOMAIN}", f"/over-tls/{i}", cafile=pki.root_file)
        assert response.status == 200, response.body
        assert json.loads(response.body)["raw_path"] == f"/over-tls/{i}"
        assert response.certificate.serial_number == files.serial
        if len(nodes) == 2 and i >= 10:
            break
    assert len(nodes) == 2, f"only {nodes} answered on the TLS port"
    relay.process.signal(signal.SIGTERM)
    assert relay.process.wait_exit(30.0) == 0, relay.process.output()


def test_workers_refuse_certificates_each_would_issue_itself() -> None:
    for option in (("--self-signed",), ("--https-port", str(free_port()), "--acme-email", "ops@example.com")):
        argv = python_module(
            "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(free_port()), *option,
            "--cluster", "redis://127.0.0.1:6399/0", "--cluster-secret", SECRET, "--internal-port", str(free_port()),
            "--workers", "2",
        )
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=node_env(), check=False)
        assert done.returncode == 2, done.stderr
        assert "every worker would issue its own certificates" in done.stderr, done.stderr
        assert "--tls-cert/--tls-key" in done.stderr


def test_a_port_a_worker_needs_being_taken_stops_the_supervisor_before_any_worker_starts(
    redis_server: RedisServer, processes: ProcessGroup, tmp_path: Path
) -> None:
    internal = free_port_pair()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        try:
            squatter.bind((LOOPBACK, internal + 1))
        except OSError:
            pytest.skip(f"port {internal + 1} is busy; the test needs it for the squatter")
        squatter.listen()
        argv = python_module(
            "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(free_port()), "--data-dir", str(tmp_path),
            *_workers_extra(redis_server, internal),
        )
        supervisor = processes.start("supervisor", argv, node_env())
        code = supervisor.wait_exit(60.0)
    output = supervisor.output()
    assert code == 1, output
    errors = supervisor.lines["stderr"]
    assert errors == [f"relay-server: error: cannot listen on 127.0.0.1:{internal + 1} (--internal-port): Address already in use"], output
    assert supervisor.count("relay listening", stream="stderr") == 0, "no worker started"


def test_a_worker_that_dies_stops_the_others_and_the_supervisor_exits_non_zero_saying_which(
    redis_server: RedisServer, processes: ProcessGroup, tmp_path: Path
) -> None:
    internal = free_port_pair()
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(free_port()), "--data-dir", str(tmp_path),
        *_workers_extra(redis_server, internal),
    )
    supervisor = processes.start("supervisor", argv, node_env())
    wait_until(lambda: supervisor.count("relay listening", stream="stderr") == 2, START_TIMEOUT, message="both workers up")
    workers = _children(supervisor.pid)
    assert len(workers) == 2
    victim = max(workers)  # the second one started: worker 1
    os.kill(victim, signal.SIGKILL)
    code = supervisor.wait_exit(60.0)
    output = supervisor.output()
    assert code != 0, output
    assert f"(pid {victim}) exited with signal SIGKILL; stopping the other workers" in output, output
    assert not any(_alive(pid) for pid in workers), "the surviving worker is stopped too"
    assert "Traceback" not in output, output

"""The fleet options of ``relay-server serve``: each mistake is one clear line and a non-zero exit."""

from __future__ import annotations

import json
import subprocess

import pytest

from fleet.conftest import node_env
from support.localrelay import CLI_TIMEOUT, START_TIMEOUT, get_direct, wait_until
from support.ports import LOOPBACK, free_port
from support.processes import ProcessExited, ProcessGroup, child_env, python_module
from support.redis import RedisServer

SECRET = "cli-test-secret-0123456789abcdef"


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = python_module("relay_server", "serve", "--host", LOOPBACK, "--http-port", str(free_port()), *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env or child_env(), check=False)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, f"serve should have refused to start\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("relay-server: error:")]
    assert len(errors) == 1, f"expected one 'relay-server: error:' line\n{result.stderr}"
    return errors[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--cluster", "redis://127.0.0.1:6399/0", "--internal-port", "7001"), "needs --cluster-secret"),
        (("--cluster", "redis://127.0.0.1:6399/0", "--cluster-secret", SECRET), "needs --internal-port"),
        (("--workers", "2"), "--workers needs --cluster"),
        (("--internal-port", "7001"), "--internal-port is a fleet option"),
        (("--cluster", "http://127.0.0.1:6379", "--cluster-secret", SECRET, "--internal-port", "7001"),
         "must be a redis://HOST:PORT/DB URL"),
        (("--cluster", "redis://127.0.0.1:notaport/0", "--cluster-secret", SECRET, "--internal-port", "7001"),
         "is not a Redis URL"),
        (("--cluster", "redis://127.0.0.1:6379/zero", "--cluster-secret", SECRET, "--internal-port", "7001"),
         "must be a number"),
        (("--cluster", "redis://127.0.0.1:6379/0", "--cluster-secret", SECRET, "--internal-port", "7001",
          "--advertise", "https://node1:7001"), "--advertise must be http://HOST:PORT"),
        (("--cluster", "redis://127.0.0.1:6379/0", "--cluster-secret", SECRET, "--internal-port", "7001",
          "--advertise", "http://node1"), "needs the internal listener's port"),
    ],
    ids=[
        "cluster-without-secret", "cluster-without-internal-port", "workers-without-cluster",
        "internal-port-without-cluster", "not-a-redis-scheme", "bad-redis-port", "bad-redis-db",
        "https-advertise", "advertise-without-port",
    ],
)
def test_a_wrong_fleet_option_is_one_clear_line_and_a_non_zero_exit(args: tuple[str, ...], expected: str) -> None:
    line = _one_error_line(_serve(*args))
    assert expected in line, line


def test_the_internal_port_may_not_be_the_public_port() -> None:
    port = str(free_port())
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", port,
        "--cluster", "redis://127.0.0.1:6379/0", "--cluster-secret", SECRET, "--internal-port", port,
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=CLI_TIMEOUT, env=child_env(), check=False)
    line = _one_error_line(result)
    assert f"are both {port}" in line, line


def test_an_unreachable_redis_stops_the_node_at_start_with_a_line_naming_it() -> None:
    dead = free_port()
    result = _serve(
        "--cluster", f"redis://{LOOPBACK}:{dead}/0", "--cluster-secret", SECRET, "--internal-port", str(free_port()),
        "--data-dir", "/nonexistent-not-used",
    )
    line = _one_error_line(result)
    assert f"cannot reach the fleet's Redis at redis://{LOOPBACK}:{dead}/0" in line, line


def test_help_lists_every_fleet_option_with_its_environment_variable() -> None:
    result = subprocess.run(
        python_module("relay_server", "serve", "--help"), capture_output=True, text=True, timeout=CLI_TIMEOUT,
        env={**child_env(), "COLUMNS": "200"}, check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--cluster", "--advertise", "--internal-port", "--cluster-secret", "--workers"):
        assert option in result.stdout, option
    for variable in ("RELAY_CLUSTER", "RELAY_ADVERTISE", "RELAY_CLUSTER_SECRET"):
        assert variable in result.stdout, variable


def test_a_node_takes_cluster_and_secret_from_the_environment_and_advertises_loopback_by_default(
    redis_server: RedisServer, processes: ProcessGroup, tmp_path
) -> None:
    port, internal = free_port(), free_port()
    env = {**node_env(), "RELAY_CLUSTER": redis_server.url, "RELAY_CLUSTER_SECRET": SECRET}
    argv = python_module(
        "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(port), "--data-dir", str(tmp_path),
        "--internal-port", str(internal),
    )
    process = processes.start(f"node:{port}", argv, env)
    health: dict = {}

    def healthy() -> bool:
        nonlocal health
        if process.returncode is not None:
            raise ProcessExited(f"node exited\n{process.output()}")
        status, body = get_direct(port, "/_relay/health", host=f"localhost:{port}", timeout=1.0)
        if status == 200:
            health = json.loads(body)
        return status == 200

    wait_until(healthy, START_TIMEOUT, message="node healthy")
    assert health["status"] == "ok", health
    assert health["cluster"]["advertise"] == f"http://127.0.0.1:{internal}"
    assert health["cluster"]["redis"] == redis_server.url
    assert SECRET not in process.output(), "the cluster secret is never printed"

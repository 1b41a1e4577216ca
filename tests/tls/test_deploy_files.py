"""deploy/: the files parse, the systemd unit verifies, the image's health check and install steps work.

``docker`` itself is not needed: the image definition's commands are run the
way the image runs them (the install in a plain venv needs PyPI, so that one
runs only with ``LOCALRELAY_TEST_IMAGE_BUILD=1``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from support.localrelay import START_TIMEOUT, wait_until
from support.ports import LOOPBACK, free_port, port_is_open
from support.processes import REPO_ROOT, ProcessGroup, child_env, python_module

from tls.support.relays import start_tls_relay

DEPLOY = REPO_ROOT / "deploy"

#: Seconds for a venv creation plus ``pip install .`` (downloads the dependencies).
INSTALL_TIMEOUT = 600


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    joined: list[str] = []
    pending = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in joined]


def test_the_image_runs_as_a_non_root_user_with_a_data_volume_and_a_health_check() -> None:
    steps = dockerfile_instructions()
    final_stage = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    ops = dict(final_stage)

    assert ops["FROM"].endswith("-slim")
    assert ops["USER"] not in ("root", "0")
    assert json.loads(ops["VOLUME"]) == ["/data"]
    assert "RELAY_DATA_DIR=/data" in ops["ENV"]
    assert json.loads(ops["ENTRYPOINT"]) == ["relay-server"]
    assert "CMD" in ops["HEALTHCHECK"]


def _health_command() -> list[str]:
    args = dict(dockerfile_instructions())["HEALTHCHECK"]
    return json.loads(args[args.index("CMD") + len("CMD") :].strip())


def test_the_image_health_check_command_passes_on_a_running_relay_and_fails_on_a_stopped_one(
    processes: ProcessGroup, data_dir: Path
) -> None:
    relay = start_tls_relay(processes, data_dir, "--self-signed")
    command = _health_command()
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]

    healthy = subprocess.run(argv, env=child_env({"RELAY_HTTP_PORT": str(relay.http_port)}), timeout=20, check=False)
    relay.process.stop()
    stopped = subprocess.run(
        argv, env=child_env({"RELAY_HTTP_PORT": str(relay.http_port)}), capture_output=True, timeout=20, check=False
    )

    assert healthy.returncode == 0
    assert stopped.returncode != 0


def test_the_image_health_check_opens_with_a_proxy_header_when_the_relay_expects_one(
    processes: ProcessGroup, data_dir: Path
) -> None:
    """Behind the fleet's balancer every connection must start with a PROXY header, the container's own check too."""
    port = free_port()
    relay = processes.start(
        "relay:proxy-protocol",
        python_module(
            "relay_server", "serve", "--host", LOOPBACK, "--http-port", str(port), "--data-dir", str(data_dir),
            "--trusted-proxy", "127.0.0.1/32",
        ),
        child_env({"RELAY_PROXY_PROTOCOL": "1"}),  # what compose-fleet.yml sets, for the relay and its check alike
    )
    wait_until(lambda: port_is_open(port), START_TIMEOUT, message="relay listening")
    argv = [sys.executable, *_health_command()[1:]]

    with_header = subprocess.run(
        argv, env=child_env({"RELAY_HTTP_PORT": str(port), "RELAY_PROXY_PROTOCOL": "1"}), timeout=20, check=False
    )
    without = subprocess.run(
        argv, env=child_env({"RELAY_HTTP_PORT": str(port)}), capture_output=True, timeout=20, check=False
    )

    assert with_header.returncode == 0
    assert without.returncode != 0, "a relay expecting PROXY headers closes a connection without one"
    assert relay.returncode is None


def test_the_compose_file_parses_and_publishes_http_and_https_with_a_data_volume() -> None:
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())

    relay = compose["services"]["relay"]
    assert relay["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert {"80:8080", "443:8443"} <= {p.split("#")[0].strip() for p in relay["ports"]}
    assert "relay-data:/data" in relay["volumes"] and "relay-data" in compose["volumes"]
    assert relay["read_only"] is True and relay["cap_drop"] == ["ALL"]
    assert "--https-port=8443" in relay["command"] and "--public-port=443" in relay["command"]


def test_the_options_the_deploy_files_use_exist() -> None:
    help_text = subprocess.run(
        python_module("relay_server", "serve", "--help"), capture_output=True, text=True, timeout=30,
        env=child_env({"COLUMNS": "200"}), check=True,
    ).stdout
    yaml = pytest.importorskip("yaml")
    command = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["relay"]["command"]
    example = (DEPLOY / "relay.toml.example").read_text()
    toml_keys = list(tomllib.loads(example)) + re.findall(r"^# ([a-z-]+) = ", example, re.MULTILINE)
    assert "tls-cert" in toml_keys and "acme-email" in toml_keys
    for option in [c.split("=")[0] for c in command[1:]] + [f"--{k}" for k in toml_keys]:
        assert option in help_text, option


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "relay-server.service").read_text()
    relay_server = Path(sys.executable).parent / "relay-server"
    assert "ExecStart=/opt/localrelay/bin/relay-server serve" in unit
    local = tmp_path / "relay-server.service"
    local.write_text(unit.replace("/opt/localrelay/bin/relay-server", str(relay_server)))

    result = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == 0, result.stderr
    assert "relay-server.service" not in result.stderr, result.stderr


@pytest.mark.skipif(os.environ.get("LOCALRELAY_TEST_IMAGE_BUILD") != "1", reason="needs PyPI: set LOCALRELAY_TEST_IMAGE_BUILD=1")
def test_the_image_install_steps_work_in_a_plain_venv(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    copies = [args.split() for op, args in dockerfile_instructions() if op == "COPY" and "--from" not in args]
    for parts in copies:
        for name in parts[:-1]:
            origin = REPO_ROOT / name
            target = source / name
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)
    run = next(args for op, args in dockerfile_instructions() if op == "RUN" and "venv" in args)
    venv = tmp_path / "venv"
    script = run.replace("/opt/localrelay", str(venv)).replace("python -m venv", f"{shlex.quote(sys.executable)} -m venv")

    result = subprocess.run(["sh", "-c", script], cwd=source, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False)

    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1].startswith("relay-server "), result.stdout[-500:]
    installed = list(venv.glob("lib/python*/site-packages/relay_server/tls/acme/issuer.py"))
    assert installed, "the TLS package is missing from a non-editable install"


def _fleet_compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DEPLOY / "compose-fleet.yml").read_text())


def test_the_fleet_compose_file_has_redis_with_persistence_two_relays_and_a_tcp_balancer_in_front() -> None:
    compose = _fleet_compose()
    services = compose["services"]

    redis = services["redis"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "ports" not in redis, "Redis must not be published"

    relays = [name for name in services if name.startswith("relay")]
    assert relays == ["relay1", "relay2"]
    for name in relays:
        relay = services[name]
        assert relay["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert relay["environment"]["RELAY_CLUSTER"] == "redis://redis:6379/0"
        assert "RELAY_CLUSTER_SECRET" in relay["environment"]
        assert "ports" not in relay, "relays are reached through the balancer only; the internal port never"
        assert "--internal-port=9000" in relay["command"]
        assert f"--advertise=http://{name}:9000" in relay["command"]
        assert "--https-port=8443" in relay["command"] and "--tls-cert=/tls/fullchain.pem" in relay["command"]
        assert relay["read_only"] is True and relay["cap_drop"] == ["ALL"]
        assert relay["depends_on"]["redis"]["condition"] == "service_healthy"

    lb = services["lb"]
    assert {"80:8080", "443:8443"} <= {p.split("#")[0].strip() for p in lb["ports"]}
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]

    # PROXY headers: the relays expect them and trust exactly the balancer's fixed address and their own check.
    lb_address = lb["networks"]["fleet"]["ipv4_address"]
    subnet = compose["networks"]["fleet"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb_address) in ipaddress.ip_network(subnet)
    for name in relays:
        relay = services[name]
        assert relay["environment"]["RELAY_PROXY_PROTOCOL"] == "1"
        trusted = [c.split("=", 1)[1] for c in relay["command"] if c.startswith("--trusted-proxy=")]
        assert trusted == [f"{lb_address}/32", "127.0.0.1/32"], trusted
        assert relay["networks"] == ["fleet"]


def test_the_haproxy_config_passes_tcp_to_both_relays_and_checks_their_health() -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    assert re.search(r"^\s*mode tcp$", config, re.MULTILINE)
    assert not re.search(r"^\s*mode http$", config, re.MULTILINE), "TLS must pass through to the relays"
    for port in (8080, 8443):
        for relay in ("relay1", "relay2"):
            assert re.search(rf"^\s*server {relay} {relay}:{port}\b", config, re.MULTILINE), (relay, port)
    assert "uri /_relay/health" in config
    default_server = re.search(r"^\s*default-server (.*)$", config, re.MULTILINE)
    assert default_server and {"send-proxy-v2", "check-send-proxy"} <= set(default_server.group(1).split())
    assert re.search(r"^\s*timeout tunnel\s+\d+h", config, re.MULTILINE), "long-lived websockets need a tunnel timeout"


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed (apt-get install haproxy)")
def test_haproxy_accepts_the_fleet_config() -> None:
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_options_the_fleet_compose_file_uses_exist() -> None:
    help_text = subprocess.run(
        python_module("relay_server", "serve", "--help"), capture_output=True, text=True, timeout=30,
        env=child_env({"COLUMNS": "200"}), check=True,
    ).stdout
    compose = _fleet_compose()
    for name in ("relay1", "relay2"):
        for option in [c.split("=")[0] for c in compose["services"][name]["command"][1:]]:
            assert option in help_text, option
    for option in ("--cluster", "--cluster-secret"):  # given through RELAY_CLUSTER / RELAY_CLUSTER_SECRET
        assert re.search(rf"{option}(?![\w-])", help_text), option

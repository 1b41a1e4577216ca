"""relay-server serve --config FILE: TOML keys named like the options; the command line wins."""

from __future__ import annotations

from pathlib import Path

from support.localrelay import get_direct, relay_cli, start_relay
from support.ports import free_port
from support.processes import ProcessGroup


def test_a_config_file_sets_the_options_and_the_command_line_overrides_it(
    processes: ProcessGroup, tmp_path: Path, tmp_data_dir: Path
) -> None:
    port = free_port()
    config = tmp_path / "relay.toml"
    config.write_text('domain = "example.test"\nopen = true\nhttp-port = 1\nresponse_timeout = 7.5\n')
    relay = start_relay(
        processes, tmp_data_dir, port=port, extra=("--config", str(config)), expect_paste_line=False
    )
    # --open came from the file (no first-start token was printed), --http-port from the command line,
    # and the domain from the file: a tunnel host under example.test is routed as a tunnel.
    status, body = get_direct(relay.port, "/", host=f"nothing.example.test:{port}")
    assert status == 502 and b"tunnel-offline" in body
    status, _ = get_direct(relay.port, "/", host=f"nothing.localhost:{port}")
    assert status == 404  # not under the configured domain: the relay answers itself


def test_an_unknown_setting_in_the_config_file_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text("htp_port = 8080\n")
    result = relay_cli("serve", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 2
    assert "unknown setting 'htp_port'" in result.stderr
    assert "Traceback" not in result.stderr

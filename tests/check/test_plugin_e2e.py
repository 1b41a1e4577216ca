"""``relay-client check URL`` through a real relay and agent, against the sample plugin and broken copies of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from support.localrelay import Agent, Relay
from support.ports import free_port
from support.processes import ProcessGroup
from typer.testing import CliRunner

from check.helpers import public_url, run_check, start_plugin, tunnel
from relay_client.check import register

#: Every check a healthy plugin gets, in report order.
PLUGIN_CHECKS = [
    "manifest",
    "manifest JSON",
    "manifest fields",
    "manifest values",
    "manifest auth",
    "manifest api",
    "manifest URLs",
    "OpenAPI document",
    "OpenAPI parse",
    "OpenAPI version",
    "OpenAPI structure",
    "OpenAPI servers",
    "OpenAPI operationIds",
    "OpenAPI descriptions",
    "OpenAPI server reachable",
    "logo",
    "CORS preflight",
]


@pytest.fixture(scope="module")
def good_plugin(module_processes: ProcessGroup, relay: Relay) -> Agent:
    """The sample plugin, told its public URL, behind a tunnel named ``todo``."""
    port = start_plugin(module_processes, public_url=public_url(relay, "todo"))
    return tunnel(module_processes, relay, port, "todo")


def broken_plugin(processes: ProcessGroup, relay: Relay, files: Path, name: str, **options: object) -> str:
    """A plugin served from ``files`` behind a tunnel called ``name``; its public URL."""
    url = public_url(relay, name)
    port = start_plugin(processes, public_url=url, files=files, **options)  # type: ignore[arg-type]
    return tunnel(processes, relay, port, name).public_url


def test_check_passes_on_the_sample_plugin_through_the_tunnel(good_plugin: Agent) -> None:
    run = run_check(good_plugin.public_url)
    assert run.returncode == 0, run.describe()
    assert run.lines[0] == f"Checking {good_plugin.public_url} as a ChatGPT plugin"
    assert [line.split(":")[0] for line in run.results()] == [f"PASS {name}" for name in PLUGIN_CHECKS], run.describe()
    assert run.line("PASS", "manifest").startswith(
        f"PASS manifest: GET {good_plugin.public_url}/.well-known/ai-plugin.json answered 200 (application/json, "
    )
    assert run.line("PASS", "OpenAPI servers") == f"PASS OpenAPI servers: servers[0].url {good_plugin.public_url} is the public origin"
    assert run.line("PASS", "logo").startswith("PASS logo: image/png, ")
    assert run.line("PASS", "CORS preflight") == "PASS CORS preflight: https://chat.openai.com may call GET /todos, POST /todos"
    assert run.lines[-1] == f"Summary: {len(PLUGIN_CHECKS)} checks, {len(PLUGIN_CHECKS)} passed, 0 failed, 0 warnings; ready."


def test_check_sends_the_preflight_from_the_origin_given_with_origin(good_plugin: Agent) -> None:
    run = run_check(good_plugin.public_url, "--origin", "https://chatgpt.com")
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "CORS preflight") == "PASS CORS preflight: https://chatgpt.com may call GET /todos, POST /todos"


def test_json_report_holds_every_check_with_its_status(good_plugin: Agent) -> None:
    run = run_check(good_plugin.public_url, "--json")
    assert run.returncode == 0, run.describe()
    report = json.loads(run.stdout)
    assert report["target"] == good_plugin.public_url
    assert report["mode"] == "plugin"
    assert report["ok"] is True
    assert [check["name"] for check in report["checks"]] == PLUGIN_CHECKS
    assert {check["status"] for check in report["checks"]} == {"PASS"}
    assert report["summary"] == {"checks": len(PLUGIN_CHECKS), "passed": len(PLUGIN_CHECKS), "failed": 0, "warnings": 0}


def test_bare_openapi_url_is_checked_as_a_gpt_action_without_manifest_or_logo(good_plugin: Agent) -> None:
    run = run_check(f"{good_plugin.public_url}/openapi.yaml")
    assert run.returncode == 0, run.describe()
    assert run.lines[0].endswith("as a GPT Action (OpenAPI document)")
    names = [line.split(":")[0].removeprefix("PASS ") for line in run.results()]
    assert not any(name.startswith("manifest") or name == "logo" for name in names), run.describe()
    assert run.line("PASS", "OpenAPI descriptions").endswith("within the GPT Action limits (300 per endpoint, 700 per parameter)")
    assert "CORS preflight" in names


def test_invalid_json_manifest_fails_naming_where_the_syntax_breaks(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    manifest = plugin_files / ".well-known" / "ai-plugin.json"
    manifest.write_text(manifest.read_text().replace('"schema_version": "v1",', '"schema_version": "v1"'))
    run = run_check(broken_plugin(processes, relay, plugin_files, "badjson"))
    assert run.returncode == 1, run.describe()
    assert run.line("PASS", "manifest")
    assert run.line("FAIL", "manifest JSON") == "FAIL manifest JSON: not valid JSON: Expecting ',' delimiter at line 3, column 3"
    assert "fix the JSON syntax" in run.fix_after("FAIL", "manifest JSON")
    assert run.results() == [run.line("PASS", "manifest"), run.line("FAIL", "manifest JSON")], "nothing is checked past a broken manifest"


def test_missing_field_fails_naming_the_field(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    manifest_path = plugin_files / ".well-known" / "ai-plugin.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["contact_email"]
    manifest_path.write_text(json.dumps(manifest))
    run = run_check(broken_plugin(processes, relay, plugin_files, "nofield"))
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "manifest fields") == 'FAIL manifest fields: missing required field "contact_email"'
    assert run.fix_after("FAIL", "manifest fields").startswith('add "contact_email" to ai-plugin.json')
    assert len(run.results("FAIL")) == 1, run.describe()


def test_localhost_api_url_fails_and_names_the_public_url_to_use(processes: ProcessGroup, relay: Relay) -> None:
    port = start_plugin(processes)  # no --public-url: the manifest names http://localhost:PORT, as written for local dev
    url = tunnel(processes, relay, port, "devurls").public_url
    run = run_check(url)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "manifest URLs") == (
        f"FAIL manifest URLs: api.url, logo_url, legal_info_url point at http://localhost:{port}, your machine, "
        "which the plugin host cannot reach"
    )
    fix = run.fix_after("FAIL", "manifest URLs")
    assert fix.startswith(f"name {url} instead of http://localhost:{port} in api.url, logo_url, legal_info_url")
    assert "--rewrite-urls" in fix
    assert run.line("FAIL", "OpenAPI servers") == (
        f"FAIL OpenAPI servers: servers[0].url http://localhost:{port} points at your machine, which the host cannot reach"
    )
    # The document itself is still read (at its path on the public URL) so its other problems show up too.
    assert run.line("PASS", "OpenAPI document").endswith("(its path on the public URL; see the URL failure above)")
    assert run.line("PASS", "OpenAPI operationIds")


def test_unparsable_openapi_fails_with_the_yaml_error(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    (plugin_files / "openapi.yaml").write_text("openapi: 3.0.1\ninfo:\n  title: [unclosed\n  version: v1\npaths: {}\n")
    run = run_check(broken_plugin(processes, relay, plugin_files, "badyaml"))
    assert run.returncode == 1, run.describe()
    line = run.line("FAIL", "OpenAPI parse")
    assert line.startswith("FAIL OpenAPI parse: neither JSON nor valid YAML: "), line
    assert "at line 4, column" in line, line
    assert run.fix_after("FAIL", "OpenAPI parse") == "fix the YAML syntax of the OpenAPI document"
    assert run.line("PASS", "logo"), "the logo is still checked"


def test_missing_logo_fails_with_the_404(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    (plugin_files / "logo.png").unlink()
    url = broken_plugin(processes, relay, plugin_files, "nologo")
    run = run_check(url)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "logo") == f"FAIL logo: GET {url}/logo.png answered 404"
    assert run.fix_after("FAIL", "logo").startswith("serve the image at logo_url")
    assert run.results("FAIL") == [run.line("FAIL", "logo")]


def test_failing_preflight_fails_naming_origin_method_and_reason(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    url = broken_plugin(processes, relay, plugin_files, "nocors", cors_origins=("https://somewhere-else.example",))
    run = run_check(url)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "CORS preflight") == (
        "FAIL CORS preflight: from https://chat.openai.com: GET /todos: the preflight answered 403, not 2xx; "
        "POST /todos: the preflight answered 403, not 2xx"
    )
    fix = run.fix_after("FAIL", "CORS preflight")
    assert "Access-Control-Allow-Origin: https://chat.openai.com" in fix and "--cors" in fix
    assert run.results("FAIL") == [run.line("FAIL", "CORS preflight")]


def test_preflight_passes_for_an_origin_the_plugin_allows(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    url = broken_plugin(processes, relay, plugin_files, "othercors", cors_origins=("https://somewhere-else.example",))
    run = run_check(url, "--origin", "https://somewhere-else.example")
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "CORS preflight").startswith("PASS CORS preflight: https://somewhere-else.example may call")


def test_tunnel_without_agent_fails_with_the_relays_reason(relay: Relay) -> None:
    url = public_url(relay, "nobody-here")
    run = run_check(url)
    assert run.returncode == 1, run.describe()
    assert run.line("FAIL", "manifest") == f"FAIL manifest: GET {url}/.well-known/ai-plugin.json answered 502 Bad Gateway"
    assert run.fix_after("FAIL", "manifest").startswith("the relay has no agent for this name: start one with relay-client http")


def test_dead_port_is_a_clear_failure_not_a_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = run_check(url, "--timeout", "5")
    assert run.returncode == 1, run.describe()
    assert run.line("WARN", "public URL").startswith(f"WARN public URL: {url} is on your machine")
    assert run.line("FAIL", "manifest") == (
        f"FAIL manifest: GET {url}/.well-known/ai-plugin.json: cannot connect to 127.0.0.1:{url.rsplit(':', 1)[1]} (connection refused)"
    )
    assert run.lines[-1] == "Summary: 2 checks, 0 passed, 1 failed, 1 warning; fix the failures above before registering."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("not-a-url",), "'not-a-url' is not a URL"),
        (("ftp://example.com",), "only http:// and https:// URLs can be checked"),
        (("http://x.localhost", "--origin", "https://chatgpt.com/path"), "--origin must be an origin"),
        (("http://x.localhost", "--timeout", "0"), "--timeout must be between"),
    ],
)
def test_unusable_arguments_are_a_usage_error_on_stderr(args: tuple[str, ...], message: str) -> None:
    run = run_check(*args)
    assert run.returncode == 2, run.describe()
    assert run.stdout == ""
    assert run.stderr.startswith("relay-client check: error: ") and message in run.stderr, run.describe()


def test_main_entry_point_runs_the_check_command(good_plugin: Agent) -> None:
    run = run_check(good_plugin.public_url, "--json", entry=("-c", "from relay_client.check import main; main()"))
    assert run.returncode == 0, run.describe()
    assert json.loads(run.stdout)["ok"] is True


def test_register_adds_check_next_to_other_commands(good_plugin: Agent) -> None:
    app = typer.Typer()

    @app.command()
    def other() -> None:
        """Another command, so ``check`` must be named."""

    register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["check", good_plugin.public_url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["failed"] == 0
    assert "--origin" in runner.invoke(app, ["check", "--help"]).stdout


def test_the_suggested_rewrite_urls_fixes_a_manifest_written_for_localhost(processes: ProcessGroup, relay: Relay) -> None:
    port = start_plugin(processes)  # the manifest and OpenAPI document name http://localhost:PORT
    url = tunnel(processes, relay, port, "rewritten", "--rewrite-urls").public_url
    run = run_check(url)
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "manifest api") == f"PASS manifest api: OpenAPI document at {url}/openapi.yaml"
    assert run.line("PASS", "OpenAPI servers") == f"PASS OpenAPI servers: servers[0].url {url} is the public origin"


def test_the_suggested_agent_cors_fixes_a_server_without_cors(processes: ProcessGroup, relay: Relay, plugin_files: Path) -> None:
    port = start_plugin(processes, public_url=public_url(relay, "agentcors"), files=plugin_files, cors_origins=("https://nobody.example",))
    url = tunnel(processes, relay, port, "agentcors", "--cors").public_url
    run = run_check(url)
    assert run.returncode == 0, run.describe()
    assert run.line("PASS", "CORS preflight") == "PASS CORS preflight: https://chat.openai.com may call GET /todos, POST /todos"

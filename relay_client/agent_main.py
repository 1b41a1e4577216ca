"""The running part of ``relay-client http``: an ``Agent``, its console and (unless --no-inspect) the inspector.

``cli`` checks the options and builds a ``RunSpec``; this module runs it, either in the
CLI's own interpreter or, from the console entry point, in a fresh one the CLI execs
(``python -m relay_client.agent_main FD``, see ``relay_protocol.relaunch``) so that the
option parser's imports (typer, pydantic) do not stay resident for the agent's life.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from dataclasses import dataclass

from relay_client.console import ConsoleLog
from relay_client.settings import AgentConfig


@dataclass(frozen=True)
class RunSpec:
    """Everything ``http`` decided from its options."""

    config: AgentConfig
    inspect_at: tuple[str, int] | None
    log_format: str
    verbose: bool
    host_header: str


def configure_logging(verbose: bool) -> None:
    """Warnings and up on stderr, one short line each (websockets' chatter only with --verbose)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("websockets").setLevel(logging.WARNING)


def _echo_err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def fit_open_files(connections: int) -> str | None:
    """Raise the soft open-file limit to what ``connections`` local connections may need; a warning if it cannot.

    Plain requests and websocket upgrades each may hold up to ``connections``
    sockets to the local server, and the agent needs a few more of its own.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return None
    need = 2 * connections + 128
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    wanted = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        wanted = soft
    if wanted >= need:
        return None
    return (
        f"the open-file limit ({wanted}) is below the {need} that {connections} local connections may need; "
        "raise it (ulimit -n) or lower --local-connections"
    )


def run_agent(spec: RunSpec) -> None:
    """Run until SIGINT/SIGTERM; AgentError when the tunnel cannot be kept (the caller prints it)."""
    shortfall = fit_open_files(spec.config.local_connections)
    if shortfall is not None:
        _echo_err(f"relay-client: warning: {shortfall}")
    origin = spec.config.target.origin
    console = ConsoleLog(fmt=spec.log_format, verbose=spec.verbose, host_header=spec.host_header, local_url=origin)

    def announce(public_url: str) -> None:
        console.tunnel_up(public_url, origin)

    observers: list = [console]
    recorder = None
    if spec.inspect_at is not None:  # the inspector (aiohttp.web, its page, prometheus_client) loads only when used
        from relay_client.inspector import Recorder

        recorder = Recorder()
        observers.append(recorder)
    from relay_client.agent import Agent  # here, not at the top: the option parser imports this module too

    agent = Agent(spec.config, on_ready=announce, on_lost=console.tunnel_down, observers=observers)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, agent.stop)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C raises KeyboardInterrupt instead
                pass
        inspector = None
        if spec.inspect_at is not None and recorder is not None:
            from relay_client.inspector import InspectorStartError, start_inspector

            try:
                inspector = await start_inspector(spec.inspect_at[0], spec.inspect_at[1], recorder, agent)
                _echo_err(f"Inspector {inspector.url}")
            except InspectorStartError as exc:
                _echo_err(f"relay-client: warning: {exc}")
        console.start(inspector.url if inspector is not None else None)
        try:
            await agent.run()
        finally:
            console.stop()
            if inspector is not None:
                await inspector.stop()

    from relay_protocol.eventloop import fewer_young_collections, run

    try:
        with fewer_young_collections():  # the CLI's process only: a library user's collector is theirs
            run(main())
    except KeyboardInterrupt:
        pass


def main() -> None:
    """``python -m relay_client.agent_main FD``: run the spec ``relay-client http`` passed on pipe FD."""
    from relay_client.errors import AgentError
    from relay_protocol.relaunch import receive

    spec = receive("usage: relay-client http ... (this module is started by it)")
    if not isinstance(spec, RunSpec):
        raise SystemExit("relay-client: error: unexpected relaunch payload")
    configure_logging(spec.verbose)
    try:
        run_agent(spec)
    except AgentError as exc:
        _echo_err(f"relay-client: error: {exc}")
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":  # run the importable module's main, so the payload's RunSpec is that module's class
    from relay_client import agent_main  # noqa: PLW0406

    agent_main.main()

"""``python -m relay_server.serve_main FD``: the relay ``relay-server serve`` checked the options for.

The console entry point execs this module once the options are valid (see
``relay_protocol.relaunch``), so the option parser's imports (typer, pydantic, ~7 MiB)
are not resident for the relay's life.  Same PID, stdio and exit codes as ``serve``.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Read (level, log format, RelayConfig) from the pipe and serve until a signal."""
    from relay_protocol.relaunch import receive

    payload = receive("usage: relay-server serve ... (this module is started by it)")
    level, log_format, config = payload
    from relay_server.logs import configure_logging

    configure_logging(level, log_format)
    from relay_protocol.eventloop import run
    from relay_server.serve import StartupError, serve
    from relay_server.tokens import TokenStoreError

    try:
        run(serve(config))
    except (StartupError, TokenStoreError) as exc:
        print(f"relay-server: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

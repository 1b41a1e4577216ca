"""``relay-server serve --workers N``: N relay processes on one machine sharing the public ports.

This process only supervises.  It starts N children, each a complete
``relay-server serve`` with the same options (so the same --config file and
environment) and a fleet node of its own: worker ``i`` gets internal port
``P + i`` and the advertise URL's port plus ``i``, and ``RELAY_WORKER_INDEX=i``
in its environment.  The public listeners bind with SO_REUSEPORT, so the kernel
spreads new connections over the workers; a request landing on a worker without
the tunnel hops to the one holding it, as between machines.

Signals: SIGTERM/SIGINT are passed on to every worker (each then drains as a
lone relay would; a second signal cuts the grace short).  The workers run in
their own process group, so a terminal's Ctrl-C reaches them once, through us,
and they get SIGTERM if this process dies.  A worker that exits by itself (it
failed at start, or crashed) stops the others and this process exits non-zero
with a line saying which, so a service manager restarts the whole set; nothing
is restarted here.  Only worker 0 prints the first-start paste line.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence

from relay_server.config import RelayConfig

log = logging.getLogger("relay_server.workers")

#: Environment variable telling a worker its index (0 for a relay started without --workers).
WORKER_ENV = "RELAY_WORKER_INDEX"

#: Options the supervisor sets itself for each worker (dropped from the command line it was given).
_PER_WORKER_OPTIONS = ("--workers", "--internal-port", "--advertise")

_PR_SET_PDEATHSIG = 1


def worker_index() -> int:
    """This process's worker index (0 when not started by a supervisor)."""
    try:
        return max(0, int(os.environ.get(WORKER_ENV, "0")))
    except ValueError:
        return 0


def serve_arguments(argv: Sequence[str]) -> list[str]:
    """The options after ``serve`` in ``argv``, without the per-worker ones."""
    args = list(argv[1:])
    if "serve" in args:
        args = args[args.index("serve") + 1 :]
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in _PER_WORKER_OPTIONS:
            skip = "=" not in arg  # ``--workers 4`` takes the next word, ``--workers=4`` does not
            continue
        kept.append(arg)
    return kept


def worker_argv(config: RelayConfig, index: int, argv: Sequence[str]) -> list[str]:
    """The command line of worker ``index``."""
    from relay_server.fleet.options import shift_advertise

    assert config.internal_port is not None and config.advertise is not None
    return [
        sys.executable, "-m", "relay_server", "serve", *serve_arguments(argv),
        "--workers", "1",
        "--internal-port", str(config.internal_port + index),
        "--advertise", shift_advertise(config.advertise, index),
    ]


class PortReservationError(Exception):
    """A port the workers need is taken; the message is the line the user sees."""


def reserve_ports(config: RelayConfig) -> list[socket.socket]:
    """Bind (never listen) the public port and every worker's internal port, with SO_REUSEPORT.

    The workers bind the same ports next to these sockets.  Held from before the
    first worker starts until the last one ends, they keep the kernel from giving
    any of the ports to an outgoing connection (as its source port) meanwhile,
    and a port taken by something else is reported before any worker starts.
    """
    assert config.internal_port is not None
    wanted = [(config.http_port, "--http-port")] if config.http_port else []
    wanted += [(config.https_port, "--https-port")] if config.https_port else []
    wanted += [(config.internal_port + i, "--internal-port") for i in range(config.workers)]
    held: list[socket.socket] = []
    try:
        for port, option in wanted:
            try:
                infos = socket.getaddrinfo(config.host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                raise PortReservationError(f"cannot resolve --host {config.host!r}: {exc}") from None
            for family, kind, proto, _, address in {info[:3] + (None, info[4]) for info in infos}:
                sock = socket.socket(family, kind, proto)
                held.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    raise PortReservationError(
                        f"cannot listen on {config.host}:{port} ({option}): {exc.strerror or exc}"
                    ) from None
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return held


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux), so no worker is orphaned."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _status_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def supervise(config: RelayConfig, argv: Sequence[str] | None = None) -> int:
    """Run ``config.workers`` workers until they have all exited; the exit status for this process."""
    argv = list(sys.argv if argv is None else argv)
    if not hasattr(socket, "SO_REUSEPORT"):
        print("relay-server: error: --workers needs SO_REUSEPORT, which this platform lacks", file=sys.stderr)
        return 2
    try:
        reserved = reserve_ports(config)
    except PortReservationError as exc:
        print(f"relay-server: error: {exc}", file=sys.stderr, flush=True)
        return 1
    children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # pid -> (index, process)
    stopping = False

    def pass_on(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for _, child in children.values():
            if child.returncode is None:
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    pass

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for index in range(config.workers):
            if stopping:
                break
            env = {**os.environ, WORKER_ENV: str(index)}
            preexec = _die_with_parent if sys.platform.startswith("linux") else None
            child = subprocess.Popen(
                worker_argv(config, index, argv), env=env, process_group=0, preexec_fn=preexec  # noqa: PLW1509
            )
            children[child.pid] = (index, child)
        log.info(
            "supervising %d workers (pids %s) on the shared public port(s); internal ports %d-%d",
            len(children), ", ".join(str(pid) for pid in children),
            config.internal_port or 0, (config.internal_port or 0) + len(children) - 1,
        )
        return _wait_all(children, lambda: stopping, pass_on)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in reserved:
            sock.close()


def _wait_all(children: dict, is_stopping, pass_on) -> int:
    """Reap workers until none is left; the first unexpected exit stops the rest and sets the status."""
    status = 0
    while any(child.returncode is None for _, child in children.values()):
        try:
            pid, raw = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for clarity
            continue
        if pid not in children:
            continue
        index, child = children[pid]
        code = os.waitstatus_to_exitcode(raw)
        child.returncode = code
        if not is_stopping():
            print(
                f"relay-server: error: worker {index} (pid {pid}) exited with {_status_text(code)}; stopping the other workers",
                file=sys.stderr, flush=True,
            )
            status = status or (code if code > 0 else 1)
            pass_on(signal.SIGTERM, None)
        elif code not in (0, -signal.SIGTERM, -signal.SIGINT):
            status = status or (code if code > 0 else 1)
    return status

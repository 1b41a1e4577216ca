"""Start the long-running part of a command in a fresh interpreter, same PID: the CLI's memory stays behind.

Both CLIs parse their options with typer, which imports pydantic (~7 MiB resident) to
coerce option values; the relay and the agent then run for days with it loaded and
never use it again.  Once the options are checked, ``relaunch`` hands the resulting
settings (pickled, through an inherited pipe) to ``python -m MODULE FD`` with
``os.execv``: the same process (PID, stdio, environment, signal dispositions), a new
interpreter that imports only what running needs.  ``receive`` is the other half.

Only a command's console entry point relaunches (``allow()``); in-process callers (tests
driving the typer app, the library) run the same function directly.  Where exec is not
possible (not POSIX, a payload too big for one pipe write, ``LOCALRELAY_NO_RELAUNCH=1``)
``relaunch`` returns and the caller runs in place.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any

#: Set to 1 to run commands in the CLI's own interpreter (debugging, profiling the start).
DISABLE_ENV = "LOCALRELAY_NO_RELAUNCH"

#: The payload is written before exec, so it must fit in the pipe's buffer (64 KiB on Linux).
MAX_PAYLOAD = 60_000

_allowed = False


def allow() -> None:
    """Let ``relaunch`` exec: called by console entry points only, never by in-process callers."""
    global _allowed
    _allowed = True


def _interpreter_options() -> list[str]:
    """The options this interpreter was started with (``-X importtime``, ``-W``, ``-u``...), for the new one."""
    argv = list(getattr(sys, "orig_argv", []))
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m" or not arg.startswith("-") or arg == "-":  # the module, or the script's path
            return argv[1:i]
        if arg == "-c":
            break
        i += 2 if arg in ("-X", "-W", "-Q") else 1
    return subprocess._args_from_interpreter_flags()  # type: ignore[attr-defined]  # what multiprocessing uses


def relaunch(module: str, payload: Any) -> None:
    """Replace this process with ``python -m module FD`` reading ``payload``; returns only if it cannot."""
    if not _allowed or os.name != "posix" or os.environ.get(DISABLE_ENV) == "1":
        return
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    if len(data) > MAX_PAYLOAD:
        return
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    os.set_inheritable(read_fd, True)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    argv = [sys.executable, *_interpreter_options(), "-m", module, str(read_fd)]
    try:
        os.execv(sys.executable, argv)
    except OSError:
        os.close(read_fd)  # run in place instead


def receive(usage: str) -> Any:
    """The payload ``relaunch`` passed (``sys.argv[1]`` is the pipe's fd); SystemExit(2) with ``usage`` otherwise."""
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        raise SystemExit(usage)
    fd = int(sys.argv[1])
    chunks = []
    try:
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        os.close(fd)
    except OSError as exc:
        raise SystemExit(f"{usage} ({exc.strerror})") from None
    sys.argv[1:] = []
    return pickle.loads(b"".join(chunks))

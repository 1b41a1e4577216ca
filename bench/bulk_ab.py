#!/usr/bin/env python3
"""A/B of 200 MiB downloads and uploads through two product trees: MiB/s and relay/agent CPU per MiB.

Starts an origin, a relay and an agent from each tree (as ``cpu_per_request.py``
does), then alternates rounds between the two stacks: ``curl`` downloads
``/bytes/N`` and uploads N zero bytes to ``/upload``, reading utime+stime of the
relay and the agent from ``/proc/PID/stat`` around each transfer.  Medians of the
rounds are printed.  CPU per MiB hardly moves with what else shares the cores;
MiB/s does.

    .venv/bin/python bench/bulk_ab.py /tmp/before /work/main --rounds 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cpu_per_request as stacks  # noqa: E402  (the same stack set-up and CPU reading)

MIB = 1 << 20


def _cpu(stack: stacks.Stack) -> dict[str, float]:
    return {"relay": stacks.cpu_secs(stack.relay.pid), "agent": stacks.cpu_secs(stack.agent.pid)}


def transfer(stack: stacks.Stack, kind: str, nbytes: int) -> tuple[float, dict[str, float]]:
    """One download or upload: (MiB/s, {role: CPU ms per MiB})."""
    before = _cpu(stack)
    started = time.monotonic()
    if kind == "download":
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "-H", f"Host: {stack.host}",
             f"{stack.url}/bytes/{nbytes}"],
            capture_output=True, text=True, timeout=600, check=True,
        ).stdout
        if int(out) != nbytes:
            raise RuntimeError(f"download got {out} bytes of {nbytes}")
    else:
        with tempfile.TemporaryFile() as body:
            body.truncate(nbytes)
            body.seek(0)
            code = subprocess.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "--data-binary", "@-",
                 "-H", f"Host: {stack.host}", f"{stack.url}/upload"],
                stdin=body, capture_output=True, text=True, timeout=600, check=True,
            ).stdout
        if code != "200":
            raise RuntimeError(f"upload answered {code}")
    seconds = time.monotonic() - started
    after = _cpu(stack)
    mib = nbytes / MIB
    return mib / seconds, {role: (after[role] - before[role]) * 1000 / mib for role in before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--mib", type=int, default=200)
    a = ap.parse_args()
    logs = tempfile.mkdtemp(prefix="bulk-ab-")
    running: list[stacks.Stack] = []
    try:
        for name, tree in (("A", a.tree_a), ("B", a.tree_b)):
            running.append(stacks.Stack(name, tree, tree, ["--no-inspect"], logs))
        rows: dict[tuple[str, str], list] = {(s.name, k): [] for s in running for k in ("download", "upload")}
        for i in range(a.rounds):
            for stack in running if i % 2 == 0 else running[::-1]:
                for kind in ("download", "upload"):
                    rows[(stack.name, kind)].append(transfer(stack, kind, a.mib * MIB))
        for (name, kind), got in rows.items():
            print(f"{name} {kind}: {statistics.median(r[0] for r in got):.0f} MiB/s, relay "
                  f"{statistics.median(r[1]['relay'] for r in got):.2f} ms/MiB, agent "
                  f"{statistics.median(r[1]['agent'] for r in got):.2f} ms/MiB "
                  f"(median of {len(got)}; tree {a.tree_a if name == 'A' else a.tree_b})")
    finally:
        for stack in running:
            stack.stop()


if __name__ == "__main__":
    main()

"""``--local-connections`` raises the agent's open-file limit to what the connections need, or says why not."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, resource
from relay_client.agent_main import fit_open_files
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (300, hard))
fits = fit_open_files(256)
after = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
too_many = fit_open_files(hard)  # needs 2 * hard + 128: more than the hard limit allows
print(json.dumps({"hard": hard, "fits": fits, "after": after, "too_many": too_many,
                  "final": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
"""


def test_the_soft_limit_is_raised_and_a_shortfall_is_named() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert (result["fits"] is None) == (result["hard"] >= 2 * 256 + 128)
    assert result["after"] == min(2 * 256 + 128, result["hard"])
    assert result["final"] == result["hard"]  # raised as far as allowed
    warning = result["too_many"]
    assert warning is not None and f"({result['hard']})" in warning and "--local-connections" in warning

"""The CLI writing to a pipe whose reader is gone (`bpfgen inspect DIR | head -1`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "examples" / "node.yaml"
SERVICES = ROOT / "examples" / "services.yaml"


def test_output_to_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    """`bpfgen inspect DIR | head -1`: the reader is gone before bpfgen writes; bpfgen
    ends quietly with 141 (128 + SIGPIPE), as a process killed by SIGPIPE would."""
    out = tmp_path / "b"
    env = {**os.environ, "BPFGEN_CACHE_DIR": str(tmp_path / "cache")}
    bpfgen = [sys.executable, "-m", "bpfgen"]
    subprocess.run([*bpfgen, "compile", "--node", str(NODE), "--services", str(SERVICES),
                    "--out", str(out), "--no-verify", "-q"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    for argv in (["inspect", str(out)], ["plan", "--node", str(NODE), "--services", str(SERVICES)]):
        r, w = os.pipe()
        os.close(r)
        try:
            done = subprocess.run([*bpfgen, *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                                  env=env)  # fmt: skip
        finally:
            os.close(w)
        assert done.returncode == 141, (argv, done.stderr)
        assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr

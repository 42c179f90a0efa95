"""Every test directory is collected by a plain `pytest` (as `make test` runs it)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_every_test_directory_is_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    collected = {line.split("/")[1] for line in out.splitlines() if line.startswith("tests/")}
    dirs = {p.name for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name[0] not in "._"}
    assert dirs <= collected, f"not collected: {sorted(dirs - collected)}"

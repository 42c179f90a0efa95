"""`python -m bench --quick --part agent`: the agent benchmark runs end to end, every
endpoint change goes through the fast path and the catch-up finds no drift (its
figures are printed, not judged: no timing claims in tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.root


def test_the_agent_part_measures_through_the_fast_path(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the bench makes namespaces and loads BPF programs: run it as root",
                    pytrace=False)  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--part", "agent", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = json.loads((tmp_path / "results.json").read_text())["parts"]["agent"]["result"]["rows"]
    assert [r["services"] for r in rows] == [10, 100]
    for r in rows:
        assert r["updates"] == r["changes"] and r["fallbacks"] == [], r
        assert r["burst_changes"] == r["services"] and r["burst_fallbacks"] == [], r
        assert r["burst_entries"] > 0 and r["catchup_ok"] and r["catchup_drift"] == [], r
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p99"] <= r["latency_ms_max"], r
        assert r["rss_mib_after_start"] > 0 and r["cold_start_s"] > 0, r
    assert "## agent" in proc.stdout and "change to map" in proc.stdout

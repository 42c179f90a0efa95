"""The compile's memory bound (docs/testing.md, "Memory"): peak RSS of `bpfgen compile`
in a child process, read from wait4, clang included (bench/memory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.memory import BOUND_MIB, Case, bound_mib, measure

#: A failing run stops here instead of taking the machine's memory: 4x the bound.
LIMIT_MIB = 4 * BOUND_MIB


def _compile(case: Case, tmp_path: Path) -> float:
    r = measure(case, tmp_path, limit_mib=LIMIT_MIB)
    assert r.exit_code == 0, r.stderr_tail
    return r.peak_rss_mib


def test_maglev_1k_services_stay_under_the_scaled_bound(tmp_path: Path) -> None:
    """1,000 Services x 4 endpoints, bpf mode, Maglev at M = 16381: every table in the
    map (16 M slots). Before the tables were streamed, this took over 6 GiB."""
    peak = _compile(Case("maglev-1k", 1_000), tmp_path)
    assert peak < bound_mib(1_000), f"{peak:.0f} MiB >= {bound_mib(1_000):.0f} MiB"


@pytest.mark.slow
def test_maglev_10k_services_stay_under_the_bound(tmp_path: Path) -> None:
    """The bound itself: 10,000 Services x 4 endpoints, Maglev at M = 16381 (minutes)."""
    peak = _compile(Case("maglev-10k", 10_000), tmp_path)
    assert peak < BOUND_MIB, f"{peak:.0f} MiB >= {BOUND_MIB} MiB"

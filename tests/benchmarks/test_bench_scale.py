"""Smoke test of `make bench`'s scale part (bench/scale.py), quick variant.

Asserts only that it ran and its figures are sane: every program ran and the
ingress hit was marked, every new flow through the DNAT chains was answered
by the backend (so the DNAT applied: the VIPs have no route otherwise), and
the table and plot are produced. No timing is compared.

Marked `slow` besides `kernel` so the VM's kernel suite ("kernel and not
slow") does not run it under emulation; it runs on the host with `make test`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import scale

pytestmark = [pytest.mark.kernel, pytest.mark.root, pytest.mark.slow]


def test_scale_quick(tmp_path: Path) -> None:
    lines: list[str] = []
    result = scale.run(tmp_path, quick=True, progress=lines.append)
    assert result["problems"] == [], result["problems"]
    sizes = result["settings"]["sizes"]
    rows = result["bpfgen"]
    assert [r["services"] for r in rows] == sizes
    assert {r["services"]: r["frontends_in_map"] for r in rows} == {10: False, 1000: True}
    for r in rows:
        assert r["compile_s"] > 0
        for case in ("ingress_hit", "ingress_miss", "egress_hit"):
            assert r[case]["median_ns"] > 0, (r["services"], case, r[case])
        assert r["counters"]["marked"] > 0, r["counters"]
    summary = result["nft_chain"]["summary"]
    assert [r["rules"] for r in summary] == [0, *sizes]
    for r in summary:
        assert r["ok"] > 0 and r["failed"] == 0 and r["mismatched"] == 0, r
        assert r["p99_us"] >= r["p50_us"] > 0, r
    text = scale.table(result)
    assert "| 1,000 | specialized | map |" in text and "baseline (no NAT)" in text
    (png,) = scale.plot(result, tmp_path)
    assert png.stat().st_size > 0

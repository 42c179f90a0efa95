"""Smoke tests of `make bench`'s connections part (bpfgen/bench/connections.py), quick.

Assert only that it ran and its figures are sane: every connection completed,
rates > 0, p99 >= p50, the backend saw the expected source (so the NAT
applied: the node's address behind NAT, the client's own otherwise), in
bpfgen's modes no conntrack entry and eBPF SNAT counted (bpf mode: redirected,
no fib fallback). No timing is compared.

The host test is marked `slow` besides `kernel` so the VM's kernel suite
("kernel and not slow") does not run it under emulation. The `vm` test boots
the 6.1 kernel once (about a minute on this host).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bpfgen.bench import connections


def _check_rows(rows: list[dict[str, Any]], modes: set[str]) -> None:
    assert {r["mode"] for r in rows} == modes
    for r in rows:
        assert r["ok"] > 0 and r["failed"] == 0 and r["mismatched"] == 0, r
        assert r["rate"]["median"] > 0 and r["cpu_us_per_conn"]["median"] > 0, r
        assert r["p99_us"]["median"] >= r["p50_us"]["median"] > 0, r


@pytest.mark.kernel
@pytest.mark.root
@pytest.mark.slow
def test_connections_host_quick(tmp_path: Path) -> None:
    result = connections.run(tmp_path, quick=True, progress=lambda _: None, vm=False)
    assert result["problems"] == [], result["problems"]
    _check_rows(result["host"]["summary"], {"direct", "conntrack_nat", "bpfgen_bpf"})
    peers = {b["mode"]: b["expect_peer"] for b in result["host"]["blocks"]}
    assert peers == {"direct": connections.CLIENT, "conntrack_nat": connections.BACKEND_GW,
                     "bpfgen_bpf": connections.BACKEND_GW}  # fmt: skip
    state = result["host"]["node_state"]
    assert state["conntrack_nat"]["conntrack_max"] > 0  # the NAT really went through conntrack
    assert state["bpfgen_bpf"]["conntrack_max"] == 0, state  # bpfgen's went around it
    counters = state["bpfgen_bpf"]["bpf_counters"]
    assert counters["fib_fallback"] == 0 and counters["redirect"] > 0, counters
    assert counters["dnat_new"] > 0 and counters["snat_new"] > 0, counters
    assert "skipped" in result["vm"]
    text = connections.table(result)
    assert "bpfgen_bpf" in text and "not built" not in text and "skipped" in text
    (png,) = connections.plot(result, tmp_path)
    assert png.stat().st_size > 0


@pytest.mark.vm
def test_connections_quick_with_vm(tmp_path: Path) -> None:
    if os.environ.get("BPFGEN_IN_VM"):
        pytest.fail("already inside the VM: run the vm tests on the host", pytrace=False)
    result = connections.run(tmp_path, quick=True, progress=lambda _: None, vm=True)
    assert result["problems"] == [], result["problems"]
    vm = result["vm"]
    assert vm["kernel"].startswith("6.1."), vm["kernel"]
    _check_rows(vm["summary"], {"direct", "ipvs_conntrack", "bpfgen_ipvs"})
    blocks = vm["blocks"]
    nodeport = [b for b in blocks if b["path"] == "nodeport"]
    assert nodeport and all(b["expect_peer"] == "198.18.0.2" for b in nodeport)
    for b in blocks:
        if b["mode"] == "bpfgen_ipvs":
            assert b["conntrack_entries"] == 0, b
        if b["mode"] == "ipvs_conntrack":
            assert b["conntrack_entries"] > 0, b  # the comparison really went through conntrack
    assert any(b["snat_new"] > 0 for b in nodeport if b["mode"] == "bpfgen_ipvs")
    assert "bpfgen_ipvs" in connections.table(result)

"""Smoke tests of `make bench`'s connections part (bench/connections.py), quick.

Assert only that it ran and its figures are sane, never how fast anything was:
every block's counts add up (per second, per cause, the histogram), latency
percentiles are ordered, the backend saw the expected source (so the NAT applied:
the node's address behind NAT, the client's own otherwise) from every backend of
the Service, in bpfgen's modes no conntrack entry, its programs' run statistics
were read and eBPF forwarding counted (redirected, no fib fallback), the targets
were judged, and BPF statistics were handed back. The direct and conntrack modes
must complete every connection (the lab works); a bpf mode's failures must be
explained by a drop counter (with the default timeouts the datapath of issue 12
stops after ~10,000 connections: the harness reports that, it does not hide it).

The host test is marked `slow` besides `kernel` so the VM's kernel suite
("kernel and not slow") does not run it under emulation. The `vm` test boots
the 6.1 kernel once (about a minute on this host). The report tests run on
synthetic blocks and need nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from bench import _conn_report as report
from bench import connections, readme_tables


def _check_rows(rows: list[dict[str, Any]], modes: set[str]) -> None:
    assert {r["mode"] for r in rows} == modes
    for r in rows:
        assert r["ok"] > 0 and r["failed"] == 0 and r["mismatched"] == 0, r
        assert r["rate"]["median"] > 0 and r["cpu_us_per_conn"]["median"] > 0, r
        assert r["p99_us"]["median"] >= r["p50_us"]["median"] > 0, r


def _check_block(b: dict[str, Any], s: dict[str, Any]) -> None:
    what = f"{b['mode']} {b['workload']} round {b['round']}"
    assert b["ok"] + b["failed"] > 0 and b["mismatched"] == 0, what
    assert sum(b["per_s_ok"]) == b["ok"] and sum(b["per_s_failed"]) == b["failed"], what
    assert sum(b["failed_by_cause"].values()) == b["failed"], what
    assert sum(b["over_200ms"].values()) <= b["ok"] + b["failed"], what
    assert sum(b["hist"]["count"]) == b["ok"], what
    assert len(b["hist"]["count"]) == len(b["hist"]["le_us"]) + 1, what
    if b["ok"]:
        figures = [b[k] for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")]
        assert figures[0] > 0 and figures == sorted(figures), what
        assert b["rr_us"]["max"] <= b["max_us"], what
    assert ("connect_us" in b) == (b["workload"] != "keepalive"), what
    for side in ("tcp_client", "tcp_backend"):
        assert set(b[side]) == set(report.TCP_COUNTERS), what
        assert all(v >= 0 for v in b[side].values()), what
    if b["workload"] == "sustained":
        assert len(b["windows"]) == int(s["sustained_s"] // s["window_s"]), what


@pytest.mark.kernel
@pytest.mark.root
@pytest.mark.slow
def test_connections_host_quick(tmp_path: Path) -> None:
    result = connections.run(tmp_path, quick=True, progress=lambda _: None, vm=False)
    host, s = result["host"], result["settings"]
    modes = {m.name: m for m in connections.MODES}
    assert {(r["mode"], r["workload"]) for r in host["summary"]} == {
        (m, w) for m in modes for w in ("short", "keepalive", "sustained")
    }
    _check_rows([r for r in host["summary"] if not report.is_bpf(r["mode"])],
                {"direct", "conntrack_nat"})  # fmt: skip
    for b in host["blocks"]:
        _check_block(b, s)
        mode = modes[b["mode"]]
        assert b["expect_peer"] == mode.expect_peer
        if b["workload"] != "keepalive" and b["ok"] >= 2000:  # all 64 answer w.h.p.
            assert b["backends_seen"] == mode.backends, (b["mode"], b["backends_seen"])
        if mode.kind != "bpf":
            continue
        names = {p["name"] for p in b["progs"]}
        want = {"bpfgen_svc_in", "bpfgen_svc_xdp"} if mode.hook == "xdp" else {"bpfgen_svc_in"}
        assert names == want, names
        if b["ok"]:
            assert all(p["runs"] > 0 and p["ns"] > 0 for p in b["progs"]), b["progs"]
    state = host["node_state"]
    assert state["conntrack_nat"]["conntrack_max"] > 0  # the NAT really went through conntrack
    for name in connections.BPF_MODES:
        assert state[name]["conntrack_max"] == 0, state  # bpfgen's went around it
        c = state[name]["bpf_counters"]
        assert c["fib_fallback"] == 0 and c["redirect"] > 0, c
        assert c["dnat_new"] > 0 and c["snat_new"] > 0, c
        failed = sum(r["failed"] for r in host["summary"] if r["mode"] == name)
        assert not failed or c["drop_exhausted"] + c["drop_map_full"] > 0, (name, c)
    # Problems are the bpf modes' failures only (wrong source, conntrack, fib: none).
    for p in result["problems"]:
        assert "failed (" in p and " bpfgen_bpf" in p, p
    judged = {(t["mode"], t["target"]) for t in host["targets"] if t["op"]}
    assert judged == {(m, t[0]) for m in connections.BPF_MODES for t in report.TARGETS}
    for t in (t for t in host["targets"] if t["op"]):  # judged, or no round to judge
        assert isinstance(t["pass"], bool) or t["rounds_judged"][0] == 0, t
    stats = host["bpf_stats"]
    assert stats["sysctl_after"] == stats["sysctl_before"], stats
    assert "skipped" in result["vm"]
    text = connections.table(result)
    assert "bpfgen_svc_in" in text and "syn_retransmit" in text and "skipped" in text
    assert "| failed connections | == 0 |" in connections.targets_table(result)
    pngs = connections.plot(result, tmp_path)
    assert [p.name for p in pngs] == ["connections.png", "connections_sustained.png"]
    assert all(p.stat().st_size > 0 for p in pngs)


@pytest.mark.vm
def test_connections_quick_with_vm(tmp_path: Path) -> None:
    if os.environ.get("BPFGEN_IN_VM"):
        pytest.fail("already inside the VM: run the vm tests on the host", pytrace=False)
    result = connections.run(tmp_path, quick=True, progress=lambda _: None, vm=True)
    vm = result["vm"]
    assert vm["kernel"].startswith("6.1."), vm["kernel"]
    assert not [p for p in result["problems"] if p.startswith("vm ")], result["problems"]
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


# --- the report on synthetic blocks (no kernel) ---------------------------------------------


def _block(mode: str, workload: str, rnd: int, ok: int, failed: int = 0) -> dict[str, Any]:
    per_s = [ok // 10] * 10
    return {
        "mode": mode, "workload": workload, "round": rnd, "path": "host", "ok": ok,
        "failed": failed, "mismatched": 0, "elapsed_s": 10.0, "expect_peer": "-",
        "first_error": "", "own_cpu_s": ok * 1e-4, "busy_s": ok * 1e-4,
        "p50_us": 100.0, "p90_us": 150.0, "p99_us": 300.0, "p999_us": 900.0, "max_us": 1e6,
        "over_200ms": {"syn_retransmit": failed, "rst": 0, "data_stall": 0, "other": 0},
        "failed_by_cause": {"timeout": failed, "rst": 0, "other": 0},
        "tcp_client": dict.fromkeys(report.TCP_COUNTERS, failed),
        "tcp_backend": dict.fromkeys(report.TCP_COUNTERS, 0),
        "backends_seen": 1, "conntrack_entries": 0, "per_s_ok": per_s,
        "windows": [{"t0": 5 * i, "cps": ok / 10, "failed_per_s": 0.0} for i in range(2)],
        **({"bpf_counters": {"redirect": 10 * ok, "fib_fallback": 0}, "map_entries": {},
            "progs": [{"prog_id": 7, "name": "bpfgen_svc_in", "hooks": ["c0 tc_ingress"],
                       "runs": 10 * ok, "ns": 10_000 * ok, "runs_per_conn": 10.0,
                       "ns_per_run": 1000.0, "ns_per_conn": 10_000.0}]}
           if mode.startswith("bpfgen_bpf") else {}),
    }  # fmt: skip


def _synthetic() -> dict[str, Any]:
    blocks = []
    for rnd in range(3):
        for workload in ("short", "keepalive"):
            blocks += [_block("direct", workload, rnd, 10_000),
                       _block("conntrack_nat", workload, rnd, 8_000),
                       _block("bpfgen_bpf", workload, rnd, 9_900 + 100 * rnd)]  # fmt: skip
    blocks += [_block("direct", "sustained", 0, 10_000), _block("conntrack_nat", "sustained", 0,
               8_000), _block("bpfgen_bpf", "sustained", 0, 5_000, failed=3)]  # fmt: skip
    host = {"kernel": "6.18.0", "kernel_version": "#1 SMP", "blocks": blocks,
            "summary": report.summarize(blocks, {"*": "direct"}),
            "node_state": report.node_state(blocks)}  # fmt: skip
    host["targets"] = report.targets(host)
    settings = {"rounds": 3, "sustained_s": 10.0, "window_s": 5, "vm": {}}
    return {"settings": settings, "host": host, "vm": {"skipped": "test"}, "quick": False}


def _target(ts: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (t,) = [t for t in ts if t["mode"] == "bpfgen_bpf" and t["target"] == name]
    return t


def test_targets_are_judged_on_per_round_medians() -> None:
    ts = _synthetic()["host"]["targets"]
    short = _target(ts, "short CPS vs direct")  # 0.99, 1.00, 1.01 of direct
    assert short["value"] == pytest.approx({"median": 1.0, "min": 0.99, "max": 1.01})
    assert short["pass"] is True
    assert _target(ts, "sustained CPS vs direct")["pass"] is False  # 0.5x
    assert _target(ts, "short CPS vs conntrack_nat (floor)")["pass"] is True
    assert _target(ts, "failed connections")["value"]["median"] == 3
    assert _target(ts, "connections over 200 ms")["pass"] is False
    assert _target(ts, "short p50 vs direct")["pass"] is True  # equal latency
    # Latency is judged only where nothing failed (percentiles cover completed ones).
    sustained_p50 = _target(ts, "sustained p50 vs direct")
    assert sustained_p50["value"] is None and sustained_p50["pass"] is None
    assert sustained_p50["rounds_judged"] == (0, 1)


def test_windows_are_whole_and_per_second() -> None:
    res = {"per_s_ok": [10, 10, 10, 10, 10, 0, 0, 0, 0, 0, 7], "per_s_failed": [0] * 11}
    wins = report.windows(res, 5, 10.0)
    assert [w["cps"] for w in wins] == [10.0, 0.0]  # the stop shows; the tail is left out


def test_readme_tables_name_kernel_date_and_spread(tmp_path: Path) -> None:
    results = {"machine": {"kernel": "6.18.0", "kernel_version": "#1 SMP PREEMPT",
                           "date": "2026-12-06T10:00:00+00:00", "cpu": "cpu", "nproc": 2},
               "quick": False, "parts": {"connections": {"result": _synthetic()}}}  # fmt: skip
    text = readme_tables.render(results)
    assert "`6.18.0 #1 SMP PREEMPT`, 2026-12-06" in text
    assert "median (min–max) over 3 interleaved rounds" in text
    assert "| short CPS vs direct | >= 0.98 | 1.00× (0.99–1.01) pass |" in text
    assert "bpfgen_svc_in (c0 tc_ingress)" in text
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    assert readme_tables.main([str(path)]) == 0
    assert readme_tables.main([str(tmp_path / "missing.json")]) == 2


# Every 50th SYN towards the server dropped in the client's own namespace: each costs
# a retransmission (1 s), which the client must count as a syn_retransmit stall.
DROP_SYNS = """\
table inet dropsyn {
  chain out {
    type filter hook output priority filter; policy accept;
    tcp dport 8080 tcp flags == syn numgen inc mod 50 == 0 drop
  }
}
"""


@pytest.mark.kernel
@pytest.mark.root
def test_loadgen_counts_stalls_by_cause() -> None:
    from bench._kstats import nstat
    from bench._netns import Lab, load, loadgen_binary

    binary = loadgen_binary()
    with Lab("bbt") as lab:
        ns = lab.ns("lg")
        lab.serve(ns, binary, 8080, threads=4)
        refused = load(binary, ns, "tcp-short", "127.0.0.1", 8081, threads=1, seconds=2.0,
                       max_requests=20)  # fmt: skip
        assert refused["failed"] == refused["failed_by_cause"]["rst"] == 20, refused
        assert sum(refused["over_200ms"].values()) == 0, refused  # refused at once
        lab.nft(ns, DROP_SYNS)
        before = nstat(lab.exec, ns)
        res = load(binary, ns, "tcp-short", "127.0.0.1", 8080, threads=4, seconds=3.0,
                   max_requests=5000)  # fmt: skip
        resent = nstat(lab.exec, ns)["TcpExtTCPSynRetrans"] - before["TcpExtTCPSynRetrans"]
    stalls = res["over_200ms"]
    assert res["ok"] > 0 and resent > 0, res
    assert 0 < stalls["syn_retransmit"] <= resent, (stalls, resent)
    assert stalls["rst"] == 0 and stalls["data_stall"] == 0, stalls

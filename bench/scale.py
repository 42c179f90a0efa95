"""Bench part "scale": per-packet cost and compile time as the service count grows.

bpfgen: for each size, a kubectl-shaped manifest (bench.compile: one
ClusterIP TCP port and 4 endpoints per service) is compiled cold (empty build
and object caches; parse, plan, render, clang, inspect, kernel verifier), then
its programs run under BPF_PROG_TEST_RUN with `repeat` (the kernel's own
ns/run, averaged over the repetitions; median over several calls) on:

- ingress hit: a TCP SYN from outside the pod CIDR to the *last* service's
  VIP:80 (frontend lookup hit, policy IF_OUTSIDE -> marked; packet unchanged);
- ingress miss: the same to a service-CIDR address that is no frontend;
- egress hit: IPVS's reply from the last VIP:80 (frontend lookup hit -> pass).

Specialized builds keep <= 64 frontends inline in the code, more in a hash
map; the generic build (always a map) is measured alongside.

Against it, iptables-mode kube-proxy's cost model on real packets: client ns
-> router ns -> server ns; the router has an nftables nat prerouting chain of N
DNAT rules, one per service, linear (no verdict map), and the client targets
the last rule's VIP. Every request is a new UDP flow (a new socket, so a new
source port: a new conntrack entry, so the chain is walked), answered by the
backend (bench/loadgen.c udp-new, one thread, source ports in turn; the
router's conntrack table is flushed before each block, so no flow of a block
finds an entry and skips the chain). A topology with no NAT
table, the client sending to the backend directly, is the baseline; the
chain's added cost is p50(N) - p50(baseline). All topologies exist at once
and blocks are interleaved: each round visits every one, in a rotated order.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bench._netns import Lab, load, loadgen_binary

SVC_BASE = int(IPv4Address("198.18.128.10"))  # bench.compile.services_manifest's first VIP
OUTSIDE_CLIENT = "198.18.0.10"
CLIENT, CLIENT_GW = "198.18.1.10", "198.18.1.1"
BACKEND, BACKEND_GW = "198.18.2.10", "198.18.2.1"
BACKEND_PORT = 8080
SK_BUFF_SIZE = 192


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"sizes": [10, 1000], "builds": ["specialized"], "repeat": 2000, "calls": 3,
                "rounds": 2, "block_s": 0.3, "block_max": 2000}  # fmt: skip
    return {"sizes": [10, 100, 1000, 10000], "builds": ["specialized", "generic"],
            "repeat": 200_000, "calls": 5, "rounds": 5, "block_s": 1.0,
            "block_max": 20_000}  # fmt: skip


def _frames(n: int) -> dict[str, tuple[str, bytes]]:
    from bpfgen.refmodel.frames import ethernet, ipv4, tcp

    last = IPv4Address(SVC_BASE + n - 1)
    nowhere = IPv4Address(SVC_BASE + n + 7)
    client = IPv4Address(OUTSIDE_CLIENT)

    def seg(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, flags: int) -> bytes:
        return ethernet(ipv4(src, dst, 6, tcp(src, dst, sport, dport, flags=flags)))

    return {
        "ingress_hit": ("ingress", seg(client, last, 40000, 80, 0x02)),
        "ingress_miss": ("ingress", seg(client, nowhere, 40000, 80, 0x02)),
        "egress_hit": ("egress", seg(last, client, 80, 40000, 0x12)),
    }


def _packet_costs(build_dir: Path, n: int, s: dict[str, Any]) -> dict[str, Any]:
    from bpfgen_runtime.loader import test_run
    from bpfgen_runtime.testrun import BuildUnderTest

    out: dict[str, Any] = {}
    with BuildUnderTest(build_dir) as build:
        for case, (program, frame) in _frames(n).items():
            prog = build.programs[program].loaded
            runs = []
            for _ in range(s["calls"]):
                res = test_run(prog, frame, repeat=s["repeat"], ctx_in=bytes(SK_BUFF_SIZE))
                if res.data != frame:
                    raise AssertionError(f"scale: {case} changed the packet (n={n})")
                runs.append(res.duration_ns)
            out[case] = {"ns": runs, "median_ns": statistics.median(runs), "retval": res.retval}
        counters = build.counters()
    out["counters"] = {k: v for k, v in counters.items() if v}
    return out


def _bpfgen_part(s: dict[str, Any], progress: Callable[[str], None]) -> list[dict[str, Any]]:
    from bench.compile import NODE_YAML, services_manifest
    from bpfgen.compiler import compile_build

    rows = []
    saved = os.environ.get("BPFGEN_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="bpfgen-bench-scale-") as tmp:
        root = Path(tmp)
        node = root / "node.yaml"
        node.write_text(NODE_YAML)
        try:
            for n in s["sizes"]:
                svc = root / f"services-{n}.yaml"
                svc.write_text(services_manifest(n))
                for kind in s["builds"]:
                    os.environ["BPFGEN_CACHE_DIR"] = str(root / f"cache-{n}-{kind}")
                    t0 = time.perf_counter()
                    res = compile_build(node, [svc], root / f"out-{n}-{kind}", build=kind)
                    compile_s = time.perf_counter() - t0
                    row: dict[str, Any] = {
                        "services": n,
                        "build": kind,
                        "frontends_in_map": res.frontends_in_map,
                        "compile_s": compile_s,
                        "insns": {p.name: p.insns for p in res.manifest.programs},
                        **_packet_costs(root / f"out-{n}-{kind}", n, s),
                    }
                    rows.append(row)
                    progress(
                        f"scale: {n:,} services {kind}: compile {compile_s:.2f} s, ingress hit "
                        f"{row['ingress_hit']['median_ns']} ns, egress hit "
                        f"{row['egress_hit']['median_ns']} ns"
                    )
        finally:
            if saved is None:
                os.environ.pop("BPFGEN_CACHE_DIR", None)
            else:
                os.environ["BPFGEN_CACHE_DIR"] = saved
    return rows


def dnat_chain(n: int) -> str:
    """iptables-mode kube-proxy's KUBE-SERVICES as nftables: n linear DNAT rules."""
    rules = "".join(
        f"    ip daddr {IPv4Address(SVC_BASE + i)} udp dport 80 dnat to {BACKEND}:{BACKEND_PORT}\n"
        for i in range(n)
    )
    return (
        "table ip kpchain {\n  chain prerouting {\n"
        "    type nat hook prerouting priority dstnat; policy accept;\n"
        f"{rules}  }}\n}}\n"
    )


def _chain_part(
    binary: Path, s: dict[str, Any], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    configs = [0, *s["sizes"]]  # 0: the baseline, no NAT table
    blocks: list[dict[str, Any]] = []
    with Lab("bbs") as lab:
        targets: dict[int, tuple[str, str, int, str]] = {}
        load_s = {}
        routers = {}
        for n in configs:
            client, router, server = lab.ns(f"c{n}"), lab.ns(f"r{n}"), lab.ns(f"s{n}")
            lab.veth(router, "c0", client, "eth0")
            lab.veth(router, "s0", server, "eth0")
            addrs = ((client, CLIENT, "eth0"), (server, BACKEND, "eth0"),
                     (router, CLIENT_GW, "c0"), (router, BACKEND_GW, "s0"))  # fmt: skip
            for ns, addr, dev in addrs:
                lab.exec(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            lab.exec(client, "ip", "route", "add", "198.18.0.0/15", "via", CLIENT_GW)
            lab.exec(server, "ip", "route", "add", "198.18.0.0/15", "via", BACKEND_GW)
            lab.sysctl(router, "net.ipv4.ip_forward=1")
            routers[n] = router
            lab.sysctl(client, "net.ipv4.ip_local_port_range=1024 65535")
            lab.serve(server, binary, BACKEND_PORT, threads=1)
            if n:
                t0 = time.perf_counter()
                lab.nft(router, dnat_chain(n))
                load_s[n] = time.perf_counter() - t0
                targets[n] = (client, str(IPv4Address(SVC_BASE + n - 1)), 80, CLIENT)
            else:
                targets[n] = (client, BACKEND, BACKEND_PORT, CLIENT)
        for rnd in range(s["rounds"]):
            k = rnd % len(configs)
            for n in configs[k:] + configs[:k]:
                client, addr, port, expect = targets[n]
                lab.exec(routers[n], "conntrack", "-F")  # every flow of the block is new
                res = load(binary, client, "udp-new", addr, port, threads=1,
                           seconds=s["block_s"], max_requests=s["block_max"],
                           expect=expect)  # fmt: skip
                res.update(round=rnd, rules=n, nft_load_s=load_s.get(n))
                blocks.append(res)
        for n in configs:
            progress(
                f"scale: nft chain {n:,} rules: new-flow p50 "
                f"{statistics.median(b['p50_us'] for b in blocks if b['rules'] == n):.1f} us"
            )
    return blocks


def _chain_summary(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    base = {b["round"]: b for b in blocks if b["rules"] == 0}
    rows = []
    for n in sorted({b["rules"] for b in blocks}):
        bs = [b for b in blocks if b["rules"] == n]
        added = [b["p50_us"] - base[b["round"]]["p50_us"] for b in bs if b["round"] in base]
        rows.append(
            {
                "rules": n,
                "ok": sum(b["ok"] for b in bs),
                "failed": sum(b["failed"] for b in bs),
                "mismatched": sum(b["mismatched"] for b in bs),
                "p50_us": statistics.median(b["p50_us"] for b in bs),
                "p99_us": statistics.median(b["p99_us"] for b in bs),
                "flows_per_s": statistics.median(b["ok"] / b["elapsed_s"] for b in bs),
                "added_p50_us": statistics.median(added),
                "added_p50_us_range": [min(added), max(added)],
                "nft_load_s": bs[0]["nft_load_s"],
            }
        )
    return rows


def run(out_dir: Path, *, quick: bool, progress: Callable[[str], None]) -> dict[str, Any]:
    s = _settings(quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = loadgen_binary()
    bpf = _bpfgen_part(s, progress)
    chain = _chain_part(binary, s, progress)
    problems = [
        f"bpfgen {r['services']} services {r['build']}: the ingress hit was not marked"
        for r in bpf
        if not r["counters"].get("marked")
    ] + [
        f"nft chain {b['rules']} rules round {b['round']}: {b['ok']} ok, {b['failed']} failed, "
        f"{b['mismatched']} wrong source ({b['first_error']})"
        for b in chain
        if b["failed"] or b["mismatched"] or not b["ok"]
    ]
    return {
        "quick": quick,
        "settings": s,
        "kernel": os.uname().release,
        "bpfgen": bpf,
        "nft_chain": {"blocks": chain, "summary": _chain_summary(chain)},
        "problems": problems,
    }


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"bpfgen, BPF_PROG_TEST_RUN (kernel {result['kernel']}; ns/packet, median of "
        f"{s['calls']} runs of {s['repeat']:,}; cold compile incl. verifier):",
        "",
        "| services | build | frontends | compile | ingress hit | ingress miss | egress hit |",
        "|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in result["bpfgen"]:
        lines.append(
            f"| {r['services']:,} | {r['build']} | {'map' if r['frontends_in_map'] else 'code'} "
            f"| {r['compile_s']:.2f} s | {r['ingress_hit']['median_ns']} ns "
            f"| {r['ingress_miss']['median_ns']} ns | {r['egress_hit']['median_ns']} ns |"
        )
    lines += [
        "",
        "nftables DNAT chain (iptables-mode model), new UDP flow to the last rule's VIP, "
        f"round trip through a router namespace (median over {s['rounds']} interleaved rounds):",
        "",
        "| DNAT rules | new-flow RTT p50 | p99 | added by the chain (p50, range) | new flows/s "
        "(1 client) | ok / failed / wrong source |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["nft_chain"]["summary"]:
        lo, hi = r["added_p50_us_range"]
        added = "baseline (no NAT)" if r["rules"] == 0 else (
            f"{r['added_p50_us']:+.1f} µs ({lo:+.1f}…{hi:+.1f})"
        )  # fmt: skip
        lines.append(
            f"| {r['rules']:,} | {r['p50_us']:.1f} µs | {r['p99_us']:.1f} µs | {added} "
            f"| {r['flows_per_s']:,.0f} | {r['ok']:,} / {r['failed']} / {r['mismatched']} |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind in result["settings"]["builds"]:
        rows = [r for r in result["bpfgen"] if r["build"] == kind]
        xs = [r["services"] for r in rows]
        for case in ("ingress_hit", "egress_hit"):
            ax1.plot(xs, [r[case]["median_ns"] for r in rows], marker="o",
                     label=f"bpfgen {kind} {case}")  # fmt: skip
    ax1.axvline(64.5, color="grey", linestyle=":", label="specialized: inline <= 64 frontends")
    ax1.set_xscale("log")
    ax1.set_ylim(bottom=0)
    ax1.set_xlabel("services (one frontend each)")
    ax1.set_ylabel("ns / packet (BPF_PROG_TEST_RUN)")
    ax1.set_title("bpfgen lookup cost")
    ax1.legend(fontsize=7)
    rows = [r for r in result["nft_chain"]["summary"] if r["rules"]]
    ax2.plot([r["rules"] for r in rows], [r["added_p50_us"] for r in rows], marker="o",
             color="tab:red", label="nft linear DNAT chain: added new-flow p50")  # fmt: skip
    ax2.set_xscale("log")
    ax2.set_ylim(bottom=0)
    ax2.set_xlabel("DNAT rules (services)")
    ax2.set_ylabel("µs per new flow over no-NAT baseline")
    ax2.set_title("iptables-mode model")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]

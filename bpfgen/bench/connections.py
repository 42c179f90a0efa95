"""Bench part "connections": real TCP through a node, by datapath mode.

Workloads (bpfgen/bench/loadgen.c, a C client with THREADS blocking threads):
`short` = connect, one request line, the answer, close (client first) per
connection; `keepalive` = request/answer on one open connection per thread.
Per block: connections (requests) per second, p50/p99 latency, and CPU per
connection: the client's, the backends' and ksoftirqd's CPU time (rusage,
/proc/PID/stat; both kernels account by ticks without IRQ_TIME_ACCOUNTING, so
the packet path's softirq work is charged to the process it interrupted or to
ksoftirqd), divided by the connections made. The
whole machine's busy time per connection (every process, so any unrelated load
too) is kept alongside.

Host kernel (no IPVS), one client/node/backend namespace triple per mode:
- direct: plain routing through the node namespace, no NAT, no conntrack;
- conntrack_nat: kube-proxy iptables-mode style nftables in the node:
  DNAT VIP:80 -> backend + mark, masquerade of marked packets, and the
  `ct state invalid drop` forward chain;
- bpfgen_bpf: bpfgen's bpf datapath mode (docs/datapath-bpf.md), run as the
  e2e tests run it (`bpfgen up` in the node namespace, its own bpffs mount):
  `bpfgen_svc_in` on tc ingress of both node devices DNATs VIP:80 -> backend
  and SNATs to the node address (the client is outside the pod CIDR), then
  forwards with bpf_fib_lookup + bpf_redirect_neigh, around netfilter; the
  same `ct state invalid drop` forward chain is loaded, so conntrack is
  registered in the node and would track anything that reached netfilter.

After every block: the node's `conntrack -C`, and in bpfgen_bpf the
movement of bpfgen's counters (`fib_fallback` must stay 0, `redirect` grow).

Debian's 6.1 kernel in the VM (one boot, bpfgen/bench/_vm_connections.py):
direct, ipvs_conntrack (kube-proxy IPVS mode) and bpfgen_ipvs (`bpfgen up`),
each over NodePort (external client, SNAT) and ClusterIP (pod client).

Blocks are interleaved in time: every round runs every (mode, workload) once,
the order rotated each round. Ratios are taken per round between blocks of
the same round, then the median and the range over rounds are reported.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpfgen.bench._netns import BenchError, Lab, load, loadgen_binary

if TYPE_CHECKING:
    from bpfgen_runtime.node import Options

VIP, VIP_PORT = "198.18.128.10", 80
BACKEND_PORT = 8080
CLIENT, CLIENT_GW = "198.18.1.10", "198.18.1.1"
BACKEND, BACKEND_GW = "198.18.2.10", "198.18.2.1"
HOST_MODES = ("direct", "conntrack_nat", "bpfgen_bpf")
VM_TIMEOUT = 600.0
# bpfgen's counters recorded per block in bpfgen_bpf (their movement over the block).
BPF_COUNTERS = (
    "dnat_new", "dnat_hit", "rdnat", "snat_new", "reclaimed", "redirect", "fib_fallback",
    "drop_exhausted", "drop_map_full", "drop_backend_gone", "reject_no_backend",
)  # fmt: skip

KUBE_PROXY_LIKE_FORWARD = """\
table inet kubeproxylike {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state invalid counter drop
  }
}
"""
CONNTRACK_NAT_NFT = f"""\
table ip kpnat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {VIP} tcp dport {VIP_PORT} meta mark set meta mark | 0x4000 \
dnat to {BACKEND}:{BACKEND_PORT}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade
  }}
}}
{KUBE_PROXY_LIKE_FORWARD}"""

# bpfgen_bpf's node: c0 (towards the client) is the uplink, s0 (the backend) the pods
# device; the node address is s0's, as masquerade picks in conntrack_nat, so the backend
# must see the same source in both. The backend is a pod (198.18.2.8/29: the pod CIDR
# may not hold the node address), the client outside the pod CIDR: SNAT (IF_OUTSIDE).
# SNAT ports above the NodePort range; a closed connection's session (and its SNAT port)
# lives tcpTransitory on, so 1 s keeps ~rate x 1 s of the 32,768 ports taken.
BPF_NODE_YAML = f"""\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {{name: bench-node, addresses: [{BACKEND_GW}], podCIDR: 198.18.2.8/29}}
cluster: {{podCIDR: 198.18.2.8/29, serviceCIDR: 198.18.128.0/17, nodePortRange: [30000, 32767]}}
interfaces:
  - {{name: c0, role: uplink, hook: tc}}
  - {{name: s0, role: pods}}
datapath: {{mode: bpf, scheduler: random}}
snat:
  portRange: [32768, 65535]
  maxSessions: 262144
  timeouts: {{tcpTransitory: 1s}}
"""


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rounds": 2,
            "workloads": {"short": 1.0, "keepalive": 0.5},
            "threads": 4,
            "max_requests": 200_000,
            "vm": {"rounds": 1, "workloads": {"short": 1.0, "keepalive": 0.5}},
        }
    return {
        "rounds": 5,
        "workloads": {"short": 3.0, "keepalive": 2.0},
        "threads": 4,
        "max_requests": 2_000_000,
        "vm": {"rounds": 6, "workloads": {"short": 2.0, "keepalive": 1.0}, "warmup_s": 0.5},
    }


def _host_topology(lab: Lab, mode: str) -> tuple[str, str, int]:
    """client --- node --- backend for one mode; returns (client ns, address, port)."""
    client, node, backend = lab.ns(f"c{mode[:2]}"), lab.ns(f"n{mode[:2]}"), lab.ns(f"s{mode[:2]}")
    lab.veth(node, "c0", client, "eth0")
    lab.veth(node, "s0", backend, "eth0")
    lab.exec(client, "ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
    lab.exec(client, "ip", "route", "add", "198.18.0.0/15", "via", CLIENT_GW)
    lab.exec(backend, "ip", "addr", "add", f"{BACKEND}/24", "dev", "eth0")
    lab.exec(backend, "ip", "route", "add", "198.18.0.0/15", "via", BACKEND_GW)
    lab.exec(node, "ip", "addr", "add", f"{CLIENT_GW}/24", "dev", "c0")
    lab.exec(node, "ip", "addr", "add", f"{BACKEND_GW}/24", "dev", "s0")
    lab.sysctl(node, "net.ipv4.ip_forward=1")
    lab.sysctl(client, "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
    if mode == "conntrack_nat":
        lab.nft(node, CONNTRACK_NAT_NFT)
        return client, VIP, VIP_PORT
    if mode == "bpfgen_bpf":
        lab.nft(node, KUBE_PROXY_LIKE_FORWARD)
        return client, VIP, VIP_PORT
    return client, BACKEND, BACKEND_PORT


def _expected_peer(mode: str) -> str:
    return CLIENT if mode == "direct" else BACKEND_GW


def bpf_build(out: Path) -> Path:
    """The bpf-mode build of bpfgen_bpf's node: one ClusterIP Service VIP:80 -> BACKEND:8080
    (the e2e suites' Service and EndpointSlice shape, tests/vm/guest_ipvs.py)."""
    from bpfgen.compiler import compile_build
    from tests.vm.guest_ipvs import _port, _service, _slice

    out.mkdir(parents=True, exist_ok=True)
    (out / "node.yaml").write_text(BPF_NODE_YAML)
    services = "apiVersion: v1\nkind: List\nitems:\n" + _service(
        "bench", VIP, _port("http", VIP_PORT, "TCP", BACKEND_PORT)
    ) + _slice("bench-http", "bench", [(BACKEND, True)],
               f"  - {{name: http, port: {BACKEND_PORT}, protocol: TCP}}\n")  # fmt: skip
    (out / "services.yaml").write_text(services)
    compile_build(out / "node.yaml", [out / "services.yaml"], out / "build", verify=False)
    return out / "build"


def _bpf_counters(opts: Options) -> dict[str, int]:
    from bpfgen_runtime.node import status

    counters: dict[str, int] = status(opts)["counters"]
    missing = [c for c in ("redirect", "fib_fallback") if c not in counters]
    if missing:
        raise BenchError(f"bpfgen_bpf: the build has no counter {missing}: {sorted(counters)}")
    return {c: int(counters.get(c, 0)) for c in BPF_COUNTERS}


def _host_part(
    binary: Path, s: dict[str, Any], progress: Callable[[str], None]
) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    with Lab("bbc") as lab:
        targets = {}
        for mode in HOST_MODES:
            client, addr, port = _host_topology(lab, mode)
            node, backend = lab.namespaces[-2:]
            pid = lab.serve(backend, binary, BACKEND_PORT)
            targets[mode] = (client, node, addr, port, pid)
        build = bpf_build(lab.workdir() / "bpf")
        progress("connections: bpfgen_bpf build compiled, `bpfgen up` in its node")
        opts = lab.bpfgen_up(targets["bpfgen_bpf"][1], build)
        counters = _bpf_counters(opts)
        items = [(m, w) for w in s["workloads"] for m in HOST_MODES]
        for rnd in range(s["rounds"]):
            k = rnd % len(items)
            for mode, workload in items[k:] + items[:k]:
                client, node, addr, port, pid = targets[mode]
                res = load(
                    binary, client, f"tcp-{workload}", addr, port,
                    threads=s["threads"], seconds=s["workloads"][workload],
                    max_requests=s["max_requests"], expect=_expected_peer(mode),
                    servers=[pid],
                )  # fmt: skip
                res.update(round=rnd, mode=mode, path="host", workload=workload,
                           expect_peer=_expected_peer(mode))  # fmt: skip
                res["conntrack_entries"] = int(lab.exec(node, "conntrack", "-C").strip() or 0)
                if mode == "bpfgen_bpf":
                    now = _bpf_counters(opts)
                    res["bpf_counters"] = {c: now[c] - counters[c] for c in BPF_COUNTERS}
                    counters = now
                blocks.append(res)
                progress(
                    f"connections: host round {rnd} {mode} {workload}: "
                    f"{res['ok'] / res['elapsed_s']:,.0f}/s, {res['failed']} failed"
                )
    return blocks


def _vm_part(
    binary: Path, s: dict[str, Any], out_dir: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    # The VM tooling and the e2e topology's builds live with the tests (the repository,
    # not the installed package): its "main" build (ClusterIP, NodePort 30080; rr).
    from tests.vm.guest_ipvs import compile_builds
    from tests.vm.run import VMError, new_results_dir, run_in_vm

    results = new_results_dir()
    try:
        build = compile_builds(results / "builds")["main"]
        vm_bin = results / "loadgen"
        shutil.copy2(binary, vm_bin)
        cfg = {
            "binary": str(vm_bin),
            "build": str(build),
            "results": str(results),
            "threads": s["threads"],
            "max_requests": s["max_requests"],
            **s["vm"],
        }
        (results / "config.json").write_text(json.dumps(cfg))
        progress("connections: booting Debian's 6.1 kernel (TCG) for the IPVS modes")
        cmd = ["python", "-m", "bpfgen.bench._vm_connections", str(results / "config.json")]
        try:
            vm = run_in_vm(cmd, VM_TIMEOUT, results=results, echo=False)
        except VMError as exc:
            raise BenchError(f"connections: the 6.1 VM could not run: {exc}") from exc
        out_file = results / "connections-vm.json"
        if vm.returncode != 0 or not out_file.exists():
            tail = "\n".join((vm.stdout + vm.stderr).strip().splitlines()[-30:])
            raise BenchError(f"connections: VM part exited {vm.returncode}:\n{tail}")
        for line in vm.stdout.splitlines():
            if line.startswith("vm: round"):
                progress(f"connections: {line}")
        data: dict[str, Any] = json.loads(out_file.read_text())
        data["boot_s"] = vm.boot_seconds
        data["total_s"] = vm.total_seconds
        (out_dir / "connections-vm.json").write_text(json.dumps(data, indent=1))
        return data
    finally:
        shutil.rmtree(results, ignore_errors=True)


# --- summaries ---------------------------------------------------------------------------------


def _rate(b: dict[str, Any]) -> float:
    return float(b["ok"]) / float(b["elapsed_s"])


def _cpu_us(b: dict[str, Any], key: str = "own_cpu_s") -> float:
    return 1e6 * float(b[key]) / max(1, int(b["ok"]))


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# Besides the rate: figures whose per-round ratio to the reference mode is summarized too.
RATIO_FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "p50": lambda b: float(b["p50_us"]),
    "p99": lambda b: float(b["p99_us"]),
    "cpu": _cpu_us,
}


def summarize(blocks: Iterable[dict[str, Any]], reference: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (path, mode, workload): medians and ranges over rounds, and the
    per-round ratios (rate, p50, p99, CPU per connection) against `reference[path]` (a
    mode) of the same workload."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for b in blocks:
        groups.setdefault((b["path"], b["mode"], b["workload"]), []).append(b)
    rows = []
    for (path, mode, workload), bs in groups.items():
        ref_mode = reference.get(path, reference.get("*", ""))
        ref = {
            b["round"]: b
            for b in blocks
            if b["mode"] == ref_mode and b["workload"] == workload
            and (b["path"] == path or path not in reference)
        }  # fmt: skip
        paired = [(b, ref[b["round"]]) for b in bs if b["round"] in ref]
        ratios = [_rate(b) / _rate(r) for b, r in paired]
        others = {
            name: [float(f(b)) / float(f(r)) for b, r in paired]
            for name, f in RATIO_FIGURES.items()
        }
        rows.append(
            {
                "path": path,
                "mode": mode,
                "workload": workload,
                "rounds": len(bs),
                "ok": sum(int(b["ok"]) for b in bs),
                "failed": sum(int(b["failed"]) for b in bs),
                "mismatched": sum(int(b["mismatched"]) for b in bs),
                "rate": _spread([_rate(b) for b in bs]),
                "p50_us": _spread([float(b["p50_us"]) for b in bs]),
                "p99_us": _spread([float(b["p99_us"]) for b in bs]),
                "cpu_us_per_conn": _spread([_cpu_us(b) for b in bs]),
                "machine_cpu_us_per_conn": _spread([_cpu_us(b, "busy_s") for b in bs]),
                "vs": ref_mode,
                "ratio": _spread(ratios) if ratios else None,
                **{f"{n}_ratio": _spread(v) if v else None for n, v in others.items()},
            }
        )
    return rows


def run(
    out_dir: Path, *, quick: bool, progress: Callable[[str], None], vm: bool | None = None
) -> dict[str, Any]:
    """Host modes, then the VM modes (one boot). `vm=False` (or BPFGEN_BENCH_NO_VM=1)
    skips the VM part, and the result says so; a VM that cannot run fails the part."""
    if vm is None:
        vm = os.environ.get("BPFGEN_BENCH_NO_VM", "") not in ("1", "yes", "true")
    s = _settings(quick)
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = loadgen_binary()
    load_before = {"loadavg": os.getloadavg(), "other_qemus": _qemus()}
    host = _host_part(binary, s, progress)
    result: dict[str, Any] = {
        "quick": quick,
        "settings": s,
        "machine_load_at_start": load_before,
        "cpu_method": "cpu_us_per_conn: (client process user+sys (rusage) + backend "
        "processes + ksoftirqd threads user+sys (/proc/PID/stat)) over the block / "
        "connections (requests) made; tick accounting without IRQ_TIME_ACCOUNTING charges "
        "softirq work (forwarding, conntrack, NAT, IPVS, eBPF) to the interrupted process or "
        "ksoftirqd; machine_cpu_us_per_conn: every process's busy time (/proc/stat, all "
        "CPUs, includes unrelated load) / connections",
        "host": {
            "kernel": os.uname().release,
            "blocks": host,
            "summary": summarize(host, {"*": "direct"}),
            "node_state": node_state(host),
        },
    }
    if vm:
        qemus = _qemus()
        data = _vm_part(binary, s, out_dir, progress)
        data["other_qemus_at_boot"] = qemus
        data["summary"] = summarize(
            data["blocks"], {"nodeport": "ipvs_conntrack", "clusterip": "ipvs_conntrack"}
        )
        result["vm"] = data
    else:
        result["vm"] = {"skipped": "--no-vm: the IPVS modes were not measured"}
    result["problems"] = problems(result)
    return result


def _qemus() -> int:
    """qemu processes running on the machine (other VMs share its CPUs with ours)."""
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            count += comm.read_text().startswith("qemu-system")
        except OSError:
            continue
    return count


def problems(result: dict[str, Any]) -> list[str]:
    """Failed connections, a backend that saw the wrong source, conntrack entries or no
    eBPF SNAT in bpfgen's mode."""
    out = []
    for where in ("host", "vm"):
        for b in result[where].get("blocks", []):
            what = f"{where} round {b['round']} {b['mode']} {b['path']} {b['workload']}"
            if b["failed"] or b["mismatched"] or not b["ok"]:
                out.append(
                    f"{what}: {b['ok']} ok, {b['failed']} failed, {b['mismatched']} saw "
                    f"another source than {b['expect_peer']} ({b['first_error']})"
                )
            if b["mode"] == "bpfgen_ipvs" and b["conntrack_entries"]:
                out.append(f"{what}: {b['conntrack_entries']} conntrack entries in the node")
            if b["mode"] == "bpfgen_ipvs" and b["path"] == "nodeport" and not b.get("snat_new"):
                out.append(f"{what}: bpfgen's snat_new counter did not move")
            if b["mode"] == "bpfgen_bpf":
                c = b["bpf_counters"]
                if b["conntrack_entries"]:
                    out.append(f"{what}: {b['conntrack_entries']} conntrack entries in the node")
                if c["fib_fallback"] or not c["redirect"]:
                    out.append(f"{what}: fib_fallback {c['fib_fallback']} (must be 0), "
                               f"redirect {c['redirect']} (must move)")  # fmt: skip
    return out


def node_state(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per host mode: the node's `conntrack -C` after its last block and the range over
    its blocks, and (bpfgen_bpf) bpfgen's counters summed over its blocks."""
    out: dict[str, dict[str, Any]] = {}
    for b in sorted(blocks, key=lambda b: int(b["round"])):
        m = out.setdefault(b["mode"], {"conntrack_min": b["conntrack_entries"],
                                       "conntrack_max": 0})  # fmt: skip
        m["conntrack_end"] = b["conntrack_entries"]
        m["conntrack_min"] = min(m["conntrack_min"], b["conntrack_entries"])
        m["conntrack_max"] = max(m["conntrack_max"], b["conntrack_entries"])
        for name, n in b.get("bpf_counters", {}).items():
            counters = m.setdefault("bpf_counters", {})
            counters[name] = counters.get(name, 0) + n
    return out


# --- table and plot ----------------------------------------------------------------------------


def _fmt(sp: dict[str, float] | None, digits: int = 0, suffix: str = "") -> str:
    if sp is None:
        return "—"
    f = f"{{:,.{digits}f}}"
    return f"{f.format(sp['median'])}{suffix} ({f.format(sp['min'])}–{f.format(sp['max'])})"


def _rows_md(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in sorted(rows, key=lambda r: (r["workload"], r["path"], r["mode"])):
        unit = "conn/s" if r["workload"] == "short" else "req/s"
        ratio = "1 (reference)" if r["mode"] == r["vs"] else _fmt(r["ratio"], 2, "×")
        ratio = f"{ratio} vs {r['vs']}" if r["vs"] else "—"
        out.append(
            f"| {r['workload']} | {r['path']} | {r['mode']} | {_fmt(r['rate'])} {unit} | "
            f"{_fmt(r['p50_us'])} | {_fmt(r['p99_us'])} | {_fmt(r['cpu_us_per_conn'])} | "
            f"{_fmt(r.get('machine_cpu_us_per_conn'))} | "
            f"{ratio} | {r['ok']:,} / {r['failed']} / {r['mismatched']} |"
        )
    return out


def _ratios_md(rows: list[dict[str, Any]]) -> list[str]:
    """Per-round ratios to the reference mode (median (min–max) over rounds)."""
    out = [
        "| workload | path | mode | vs | rate | p50 | p99 | CPU/conn |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["workload"], r["path"], r["mode"])):
        if r["ratio"] is None or r["mode"] == r["vs"]:
            continue
        figures = [r["ratio"], r.get("p50_ratio"), r.get("p99_ratio"), r.get("cpu_ratio")]
        cells = " | ".join(_fmt(f, 2, "×") for f in figures)
        out.append(f"| {r['workload']} | {r['path']} | {r['mode']} | {r['vs']} | {cells} |")
    return out


HEADER = [
    "| workload | path | mode | rate | p50 µs | p99 µs | CPU µs/conn | machine CPU µs/conn "
    "| rate ratio | ok / failed / wrong source |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
]


def table(result: dict[str, Any]) -> str:
    host = result["host"]
    lines = [
        f"Host kernel {host['kernel']} (median (min–max) over {result['settings']['rounds']} "
        "interleaved rounds; ratio per round):",
        "",
        *HEADER,
        *_rows_md(host["summary"]),
        "",
        "Ratios to direct, per round (median (min–max) over rounds):",
        "",
        *_ratios_md(host["summary"]),
    ]
    lines += ["", "Node namespace after each block: `conntrack -C` (after the last block; "
              "min–max over blocks), bpfgen's counters summed over its blocks:", "",
              "| mode | conntrack -C at end | over blocks | fib_fallback | redirect | "
              "dnat_new | snat_new |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for mode, st in host["node_state"].items():
        c = st.get("bpf_counters")
        bpf = [f"{c[k]:,}" if c else "—" for k in ("fib_fallback", "redirect", "dnat_new",
                                                    "snat_new")]  # fmt: skip
        lines.append(f"| {mode} | {st['conntrack_end']:,} | {st['conntrack_min']:,}–"
                     f"{st['conntrack_max']:,} | {' | '.join(bpf)} |")  # fmt: skip
    vm = result["vm"]
    lines.append("")
    if "skipped" in vm:
        lines.append(f"VM (6.1, IPVS): skipped ({vm['skipped']}).")
    else:
        lines += [
            f"Debian 6.1 in the VM (TCG, {vm['cpus']} vCPUs; "
            f"{result['settings']['vm']['rounds']} interleaved rounds; "
            f"{vm.get('other_qemus_at_boot', 0)} other qemu process(es) on the host at boot):",
            "",
            *HEADER,
            *_rows_md(vm["summary"]),
            "",
            "Ratios to ipvs_conntrack, per round (median (min–max) over rounds):",
            "",
            *_ratios_md(vm["summary"]),
        ]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = [("host", result["host"]["summary"])]
    if "summary" in result["vm"]:
        sections.append(("vm (6.1, TCG)", result["vm"]["summary"]))
    fig, axes = plt.subplots(1, len(sections), figsize=(6 * len(sections), 4), squeeze=False)
    for ax, (title, rows) in zip(axes[0], sections, strict=True):
        rows = sorted(
            (r for r in rows if r["workload"] == "short"), key=lambda r: (r["path"], r["mode"])
        )
        labels = [f"{r['path']}\n{r['mode']}" for r in rows]
        med = [r["rate"]["median"] for r in rows]
        err = [
            [m - r["rate"]["min"] for m, r in zip(med, rows, strict=True)],
            [r["rate"]["max"] - m for m, r in zip(med, rows, strict=True)],
        ]
        ax.bar(range(len(rows)), med, yerr=err, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("short connections / s (median, min–max)")
        ax.set_title(f"connections: {title}")
    fig.tight_layout()
    path = out_dir / "connections.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]

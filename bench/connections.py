"""Bench part "connections": real TCP through a node, by datapath mode.

Workloads (bench/loadgen.c, a C client with THREADS blocking threads):
`short` = connect, one request line, the answer, close (client first) per
connection; `keepalive` = request/answer on one open connection per thread;
`sustained` = `short` without a pause for SUSTAINED seconds (>= 60 s in the full
run) per mode, one mode after the other, its rate per window (5 s) kept, so a
decay or a stop shows. Per block: connections (requests) per second, latency
p50/p90/p99/p99.9/max of the whole request and of its connect() and
request/answer parts, a coarse histogram, requests over 200 ms by cause
(syn_retransmit, rst, data_stall, other), failures by cause, the client's and the
backend's TCP retransmission counters (`nstat`), and CPU per connection: the
client's, the backends' and ksoftirqd's CPU time (rusage, /proc/PID/stat; both
kernels account by ticks without IRQ_TIME_ACCOUNTING, so the packet path's
softirq work is charged to the process it interrupted or to ksoftirqd), divided
by the connections made. The whole machine's busy time per connection (every
process, so any unrelated load too) is kept alongside.

Host kernel (no IPVS), one client/node/backend namespace triple per mode:
- direct: plain routing through the node namespace, no NAT, no conntrack;
- conntrack_nat: kube-proxy iptables-mode style nftables in the node:
  DNAT VIP:80 -> backend + mark, masquerade of marked packets, and the
  `ct state invalid drop` forward chain;
- bpfgen_bpf: bpfgen's bpf datapath mode (docs/datapath-bpf.md) with the
  defaults a user gets (no snat section: ports 20000-29999, 65,536 sessions,
  tcpTransitory 240 s), run as the e2e tests run it (`bpfgen up` in the node
  namespace, its own bpffs mount): `bpfgen_svc_in` on tc ingress of both node
  devices DNATs VIP:80 -> backend and SNATs to the node address (the client is
  outside the pod CIDR), then forwards with bpf_fib_lookup + bpf_redirect_neigh,
  around netfilter; the same `ct state invalid drop` forward chain is loaded, so
  conntrack is registered in the node and would track anything that reached
  netfilter;
- bpfgen_bpf_b4, bpfgen_bpf_b64: the same with 4 and 64 endpoints behind the
  Service (the backend namespace holds them all as addresses, one server on
  0.0.0.0 answers for each; the answers say which one);
- bpfgen_bpf_xdp: one endpoint, `hook: xdp` on the uplink c0: bpfgen_svc_xdp runs
  before bpfgen_svc_in there, and passes to tc what leaves through another device.

After every block: the node's `conntrack -C`; in the bpf modes the movement of
bpfgen's counters (`fib_fallback` must stay 0, `redirect` grow), the fill of its
maps, and per attached program the kernel's run count and run time over the block
(BPF statistics on for the run: bench/_kstats.py), per connection.

Debian's 6.1 kernel in the VM (one boot, bench/_vm_connections.py):
direct, ipvs_conntrack (kube-proxy IPVS mode) and bpfgen_ipvs (`bpfgen up`),
each over NodePort (external client, SNAT) and ClusterIP (pod client).

Host order: the sustained phase first (the modes one after the other, from a fresh
node each: where a datapath stops after N connections, its windows show it), then
the interleaved rounds: every round runs every (mode, workload) once, the order
rotated each round. Ratios are taken per round between blocks of the same round,
then the median and the range over rounds are reported; the targets of issue 12
are judged on them (bench/_conn_report.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import _conn_report as report
from bench._kstats import bpf_run_stats, delta, nstat, prog_breakdown, prog_stats
from bench._netns import BenchError, Lab, load, loadgen_binary

if TYPE_CHECKING:
    from bpfgen_runtime.node import Options

# The part's interface (bench/__init__.py): run here, the rest in the report.
table, plot, summarize = report.table, report.plot, report.summarize
targets_table = report.targets_table

VIP, VIP_PORT = "198.18.128.10", 80
BACKEND_PORT = 8080
CLIENT, CLIENT_GW = "198.18.1.10", "198.18.1.1"
BACKEND_GW = "198.18.2.1"
# The backends: 198.18.2.130 and up, inside the bpf nodes' pod CIDR (which may not hold
# the node address BACKEND_GW).
POD_CIDR = "198.18.2.128/25"
BACKEND = "198.18.2.130"
VM_TIMEOUT = 600.0


@dataclass(frozen=True)
class Mode:
    """One host topology: `kind` direct | conntrack_nat | bpf; `tag` names its namespaces."""

    name: str
    tag: str
    kind: str
    backends: int = 1
    hook: str = "tc"

    def backend_addresses(self) -> list[str]:
        base = int(BACKEND.rsplit(".", 1)[1])
        return [f"198.18.2.{base + i}" for i in range(self.backends)]

    @property
    def expect_peer(self) -> str:
        """The source the backend must see: the client's own, or the node's (SNAT)."""
        return CLIENT if self.kind == "direct" else BACKEND_GW


MODES = (
    Mode("direct", "di", "direct"),
    Mode("conntrack_nat", "ct", "conntrack_nat"),
    Mode("bpfgen_bpf", "b1", "bpf"),
    Mode("bpfgen_bpf_b4", "b4", "bpf", backends=4),
    Mode("bpfgen_bpf_b64", "b64", "bpf", backends=64),
    Mode("bpfgen_bpf_xdp", "bx", "bpf", hook="xdp"),
)
HOST_MODES = tuple(m.name for m in MODES)
BPF_MODES = tuple(m.name for m in MODES if m.kind == "bpf")

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

# The bpf modes' node: c0 (towards the client) is the uplink, s0 (the backends) the pods
# device; the node address is s0's, as masquerade picks in conntrack_nat, so the backend
# must see the same source in both. The backends are pods, the client is outside the pod
# CIDR: SNAT (IF_OUTSIDE). No snat section: the defaults a user gets (config.py:
# portRange 20000-29999, maxSessions 65536, tcpTransitory 240 s, ...); the benchmark may
# not shorten them to make load pass (issue 12).
BPF_NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {{name: bench-node, addresses: [{node}], podCIDR: {pods}}}
cluster: {{podCIDR: {pods}, serviceCIDR: 198.18.128.0/17}}
interfaces:
  - {{name: c0, role: uplink, hook: {hook}}}
  - {{name: s0, role: pods}}
datapath: {{mode: bpf}}
"""


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rounds": 1,
            "workloads": {"short": 1.0, "keepalive": 0.5},
            "sustained_s": 3.0,
            "window_s": 1,
            "threads": 4,
            "max_requests": 200_000,
            "vm": {"rounds": 1, "workloads": {"short": 1.0, "keepalive": 0.5}},
        }
    return {
        "rounds": 5,
        "workloads": {"short": 3.0, "keepalive": 2.0},
        "sustained_s": 60.0,
        "window_s": 5,
        "threads": 4,
        "max_requests": 2_000_000,
        "vm": {"rounds": 6, "workloads": {"short": 2.0, "keepalive": 1.0}, "warmup_s": 0.5},
    }


@dataclass
class Topology:
    """One mode's namespaces, its target, its backend's pid; bpf modes: the runtime."""

    mode: Mode
    client: str
    node: str
    backend: str
    addr: str
    port: int
    server: int
    opts: Options | None = None
    # bpf modes: the attached programs' ids and where each is attached, and the last
    # counters and program statistics read (a block's movement is the difference).
    hooks: dict[int, list[str]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    progs: dict[int, dict[str, Any]] = field(default_factory=dict)


def _host_topology(lab: Lab, mode: Mode, binary: Path) -> Topology:
    """client --- node --- backend for one mode (the bpf runtime is started later)."""
    client, node, backend = (lab.ns(f"{r}{mode.tag}") for r in ("c", "n", "s"))
    lab.veth(node, "c0", client, "eth0")
    lab.veth(node, "s0", backend, "eth0")
    lab.exec(client, "ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
    lab.exec(client, "ip", "route", "add", "198.18.0.0/15", "via", CLIENT_GW)
    lab.exec(backend, "ip", "-batch", "-", input="".join(
        f"addr add {a}/24 dev eth0\n" for a in mode.backend_addresses()))  # fmt: skip
    lab.exec(backend, "ip", "route", "add", "198.18.0.0/15", "via", BACKEND_GW)
    lab.exec(node, "ip", "addr", "add", f"{CLIENT_GW}/24", "dev", "c0")
    lab.exec(node, "ip", "addr", "add", f"{BACKEND_GW}/24", "dev", "s0")
    lab.sysctl(node, "net.ipv4.ip_forward=1")
    # The client host's own settings, not bpfgen's: a load client opening ~20,000
    # connections/s needs the whole ephemeral range and TIME_WAIT reuse for itself.
    lab.sysctl(client, "net.ipv4.ip_local_port_range=1024 65535", "net.ipv4.tcp_tw_reuse=1")
    server = lab.serve(backend, binary, BACKEND_PORT)
    if mode.kind == "conntrack_nat":
        lab.nft(node, CONNTRACK_NAT_NFT)
    elif mode.kind == "bpf":
        lab.nft(node, KUBE_PROXY_LIKE_FORWARD)
    if mode.kind == "direct":
        return Topology(mode, client, node, backend, BACKEND, BACKEND_PORT, server)
    return Topology(mode, client, node, backend, VIP, VIP_PORT, server)


def bpf_build(out: Path, backends: list[str] | None = None, hook: str = "tc") -> Path:
    """A bpf-mode build of the bpf modes' node: one ClusterIP Service VIP:80 -> `backends`
    (default BACKEND alone):8080 (the e2e suites' Service and EndpointSlice shape,
    tests/vm/guest_ipvs.py), the uplink's ingress at `hook`."""
    from bpfgen.compiler import compile_build
    from tests.vm.guest_ipvs import _port, _service, _slice

    out.mkdir(parents=True, exist_ok=True)
    (out / "node.yaml").write_text(BPF_NODE_YAML.format(node=BACKEND_GW, pods=POD_CIDR,
                                                        hook=hook))  # fmt: skip
    endpoints = [(a, True) for a in backends or [BACKEND]]
    services = "apiVersion: v1\nkind: List\nitems:\n" + _service(
        "bench", VIP, _port("http", VIP_PORT, "TCP", BACKEND_PORT)
    ) + _slice("bench-http", "bench", endpoints,
               f"  - {{name: http, port: {BACKEND_PORT}, protocol: TCP}}\n")  # fmt: skip
    (out / "services.yaml").write_text(services)
    compile_build(out / "node.yaml", [out / "services.yaml"], out / "build", verify=False)
    return out / "build"


def _bpf_up(lab: Lab, t: Topology) -> None:
    """Compile t's build, `bpfgen up` in its node, note its programs and counters."""
    from bpfgen_runtime.node import status

    build = bpf_build(lab.workdir() / t.mode.name, t.mode.backend_addresses(), t.mode.hook)
    t.opts = lab.bpfgen_up(t.node, build)
    st = status(t.opts)
    for a in st["attached"]:
        if a["prog_id"] is None:
            raise BenchError(f"{t.mode.name}: {a['program']} on {a['device']} is not attached")
        t.hooks.setdefault(int(a["prog_id"]), []).append(f"{a['device']} {a['hook']}")
    missing = [c for c in ("redirect", "fib_fallback") if c not in st["counters"]]
    if missing:
        raise BenchError(f"{t.mode.name}: the build has no counter {missing}: "
                         f"{sorted(st['counters'])}")  # fmt: skip
    t.counters = {k: int(v) for k, v in st["counters"].items()}
    t.progs = prog_stats(t.hooks)


def _bpf_block(t: Topology, res: dict[str, Any]) -> None:
    """A bpf mode's block: counters' movement, map fill, programs' run time per connection."""
    from bpfgen_runtime.node import status

    assert t.opts is not None
    progs = prog_stats(t.hooks)
    st = status(t.opts)
    now = {k: int(v) for k, v in st["counters"].items()}
    res["bpf_counters"] = delta(t.counters, now)
    res["map_entries"] = {m["name"]: m.get("entries") for m in st["maps"] if m.get("pinned")}
    res["progs"] = prog_breakdown(t.progs, progs, int(res["ok"]), t.hooks)
    t.counters, t.progs = now, progs


def _block(
    lab: Lab, binary: Path, t: Topology, workload: str, seconds: float, s: dict[str, Any]
) -> dict[str, Any]:
    """One bounded loadgen run against t, with everything read around it."""
    tcp = {c: nstat(lab.exec, c) for c in (t.client, t.backend)}
    res = load(
        binary, t.client, "tcp-keepalive" if workload == "keepalive" else "tcp-short",
        t.addr, t.port, threads=s["threads"], seconds=seconds,
        max_requests=s["max_requests"], expect=t.mode.expect_peer, servers=[t.server],
    )  # fmt: skip
    res.update(mode=t.mode.name, path="host", workload=workload, expect_peer=t.mode.expect_peer,
               backends=t.mode.backends, hook=t.mode.hook)  # fmt: skip
    res["tcp_client"] = delta(tcp[t.client], nstat(lab.exec, t.client))
    res["tcp_backend"] = delta(tcp[t.backend], nstat(lab.exec, t.backend))
    res["conntrack_entries"] = int(lab.exec(t.node, "conntrack", "-C").strip() or 0)
    if t.mode.kind == "bpf":
        _bpf_block(t, res)
    if workload == "sustained":
        res["windows"] = report.windows(res, s["window_s"], seconds)
    return res


def _line(res: dict[str, Any]) -> str:
    over = sum(res["over_200ms"].values())
    return (f"{res['ok'] / res['elapsed_s']:,.0f}/s, {res['failed']} failed, "
            f"{over} over 200 ms, max {res['max_us'] / 1000:,.1f} ms")  # fmt: skip


def _host_part(
    binary: Path, s: dict[str, Any], progress: Callable[[str], None]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    with Lab("bbc") as lab, bpf_run_stats() as stats:
        topo = {m.name: _host_topology(lab, m, binary) for m in MODES}
        for t in topo.values():
            if t.mode.kind == "bpf":
                _bpf_up(lab, t)
        progress(f"connections: {len(topo)} topologies up, bpf programs "
                 f"{ {n: sorted(t.hooks) for n, t in topo.items() if t.hooks} }")  # fmt: skip
        # Sustained first: every node is fresh, so a datapath that stops after N
        # connections shows it in the windows. Order: the rounds' rotation, one on.
        order = HOST_MODES[1:] + HOST_MODES[:1]
        for name in order:
            res = _block(lab, binary, topo[name], "sustained", s["sustained_s"], s)
            res["round"] = 0
            blocks.append(res)
            progress(f"connections: sustained {name} {s['sustained_s']:.0f} s: {_line(res)}")
        items = [(m, w) for w in s["workloads"] for m in HOST_MODES]
        for rnd in range(s["rounds"]):
            k = rnd % len(items)
            for mode, workload in items[k:] + items[:k]:
                res = _block(lab, binary, topo[mode], workload, s["workloads"][workload], s)
                res["round"] = rnd
                blocks.append(res)
                progress(f"connections: host round {rnd} {mode} {workload}: {_line(res)}")
    return blocks, {**stats, "sustained_order": list(order)}


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
        cmd = ["python", "-m", "bench._vm_connections", str(results / "config.json")]
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
    host, stats = _host_part(binary, s, progress)
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
            "kernel_version": os.uname().version,
            "bpf_stats": stats,
            "modes": {
                m.name: {
                    "kind": m.kind,
                    "backends": m.backends,
                    "hook": m.hook,
                    "expect_peer": m.expect_peer,
                }
                for m in MODES
            },  # fmt: skip
            "blocks": host,
            "summary": summarize(host, {"*": "direct"}),
            "node_state": report.node_state(host),
        },
    }
    result["host"]["targets"] = report.targets(result["host"])
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
    result["problems"] = report.problems(result)
    for line in report.target_lines(result["host"]["targets"]):
        progress(f"connections: target {line}")
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

"""Part 1 of `make bench`: what one packet costs in each build kind.

The same node configuration is compiled in every build kind (plan.BUILD_KINDS):
specialized (node values are C constants), generic (read from a `.bss` struct
per packet), frozen (the generic C, the struct `const volatile` in `.rodata`:
constants to the verifier, not to clang) and image (frozen, with the values
every node shares as C constants). Each build is loaded whole with
`BuildUnderTest` (shared session maps, `map_init.json` written, the runtime
config set before load) and its programs run on crafted frames with
BPF_PROG_TEST_RUN: no device, nothing attached.

Two configurations: the bundled example (examples/node.yaml and
examples/services.yaml: a handful of services, frontends matched as code in
the specialized build) and a node with one ClusterIP service.

Packet classes, per program, and what each really measures (every class is
checked once per build before it is timed: verdict, mark and the one counter
docs/datapath.md says it bumps; a build that disagrees stops the bench):

ingress
  new          a client outside cluster.podCIDR to a ClusterIP VIP:port (TCP
               SYN): parse, frontend lookup (code or map), masquerade policy,
               `skb->mark |= mark`; counter `marked`.
  established  not measured separately: ingress keeps no forward state, so the
               next packet of the flow takes exactly the `new` path.
  reply        the backend's reply to the node's SNAT address and port, session
               present: reverse table lookup, forward session check and touch,
               rewrite of the destination, checksums; counter `rsnat`.
  miss         a client to a pod address (not a frontend, port outside the SNAT
               range): parse, frontend lookup that misses; counter `pass`.
egress
  new          the marked packet after IPVS's DNAT (client -> backend, TCP SYN),
               no session: port allocation (first candidate free: the session
               table holds only this flow's, deleted after every run), two map
               inserts, rewrite of the source; counter `snat_new`.
  established  the same flow with its session (TCP ACK): forward lookup, touch,
               rewrite; counter `snat_hit`.
  reply        the backend's reply after reverse SNAT and IPVS's un-DNAT,
               leaving from VIP:port to the client, unmarked: the source is in
               the service CIDR, so egress checks it is a frontend, then passes;
               counter `pass`.
  miss         a pod to an outside address, unmarked: not hairpin, not from the
               service CIDR; counter `pass`.

Timing. BPF_PROG_TEST_RUN with `repeat` runs the program again on the SAME skb:
from the second repetition on it sees its own output (the SNATed packet, the
cleared mark), so a repeated "new flow" would time a session creation once and
unrelated passes afterwards. Every class is therefore timed one packet per
call (`repeat=1`, the kernel's own ns for that run, which includes a constant
timer floor of two clock reads), many calls per round (state restored between
calls outside the timed region: egress/new deletes the session it created).
Those are the headline ns/packet. For the classes whose program leaves the
packet and mark unchanged (ingress new and miss, egress reply and miss) the
kernel's mean over `repeat` runs on the same packet is reported as well
("amortized": no per-call floor); the floor estimate is the difference on
egress/miss. The kernel's clock reads come in steps of about 10 ns here, so a
round's figure is the 10 %-trimmed mean of its single-packet times (a median
would be one of the steps; trimming drops interrupts). Rounds interleave the
builds, rotating their order each round; the figure is the median of the
per-round figures, the spread their min and max.

Instructions. Object instructions (program + bpf_loop callback) and the
instructions the kernel verifier processed (manifest, verified on this kernel
with the build's own runtime config) are per program: the verifier walks every
path, not a packet class, and this VM exposes no PMU to count executed
instructions per packet, so per-class cost is the measured ns only.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpfgen.plan import BUILD_KINDS
from bpfgen_runtime.contract.manifest import to_json

if TYPE_CHECKING:
    from bpfgen_runtime.testrun import BuildUnderTest

Progress = Callable[[str], None]

ROOT = Path(__file__).resolve().parents[1]
IPPROTO_TCP = 6
TCP_SYN, TCP_ACK = 0x02, 0x10
SEEN_REPLY = 0x01
CLIENT = IPv4Address("198.18.64.5")  # outside the pod, service CIDRs and node addresses
CLIENT_PORT = 40000
OUTSIDE = IPv4Address("198.18.96.7")  # where a pod's own egress goes (miss)
PROGRAMS = ("ingress", "egress")
CLASSES = ("new", "established", "reply", "miss")
#: (program, class) pairs the program leaves unchanged: `repeat` times the same packet.
IDEMPOTENT = {("ingress", "new"), ("ingress", "miss"), ("egress", "reply"), ("egress", "miss")}
#: The issue's target: specialized processed instructions <= 0.62x generic (TKE: -38 %).
TARGET_PROCESSED_RATIO = 0.62


@dataclass(frozen=True)
class Settings:
    samples: int  # repeat=1 calls per class, build and round
    rounds: int
    repeat: int  # repetitions per amortized call
    repeat_calls: int  # amortized calls per class, build and round

    @classmethod
    def of(cls, quick: bool) -> Settings:
        return cls(300, 3, 5_000, 3) if quick else cls(20_000, 9, 200_000, 5)


@dataclass(frozen=True)
class Case:
    """One timed packet class: the frame, the mark in, what must come out."""

    program: str
    cls: str
    frame: bytes
    mark: int
    counter: str  # the one counter the packet bumps
    mark_out: int
    session: bool  # the flow's session is present before the run


# ------------------------------------------------------------------ configurations


def _one_service_config(root: Path) -> tuple[Path, Path]:
    from bench.compile import NODE_YAML, services_manifest

    node, services = root / "node-1svc.yaml", root / "services-1svc.yaml"
    node.write_text(NODE_YAML)
    services.write_text(services_manifest(1))
    return node, services


def configs(root: Path) -> dict[str, tuple[Path, Path]]:
    """Name -> (node file, services file)."""
    return {
        "example": (ROOT / "examples/node.yaml", ROOT / "examples/services.yaml"),
        "1-service": _one_service_config(root),
    }


# ------------------------------------------------------------------ frames


@dataclass(frozen=True)
class Flow:
    """The addresses of one SNATed ClusterIP connection in a build's config."""

    node: IPv4Address
    vip: IPv4Address
    vip_port: int
    backend: IPv4Address
    backend_port: int
    nat_port: int
    mark: int
    pod: IPv4Address  # a pod of this node (miss)

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Flow:
        node = manifest["node"]
        # A ClusterIP of a pod backend (not, e.g., an API server on the node itself).
        frontend = next(
            f
            for f in manifest["specialization"]["frontends"]
            if f["kind"] == "ClusterIP"
            and f["protocol"] == "TCP"
            and f["backends"]
            and f["backends"][0]["address"] not in node["addresses"]
        )
        backend = frontend["backends"][0]
        addr = IPv4Address(node["addresses"][0])
        inside = [IPv4Network(node[k]) for k in ("cluster_pod_cidr", "service_cidr")]
        if any(a in n for n in inside for a in (CLIENT, OUTSIDE)) or addr in (CLIENT, OUTSIDE):
            raise ValueError(f"{CLIENT} or {OUTSIDE} is inside this node's cluster")
        return cls(
            node=addr,
            vip=IPv4Address(frontend["address"]),
            vip_port=frontend["port"],
            backend=IPv4Address(backend["address"]),
            backend_port=backend["port"],
            nat_port=node["snat_port_range"][0] + 7,
            mark=node["masquerade_mark"],
            pod=next(IPv4Network(node["pod_cidr"]).hosts()) + 9,
        )

    def cases(self) -> list[Case]:
        from bpfgen.refmodel.frames import ethernet, ipv4, tcp

        def frame(s: IPv4Address, d: IPv4Address, sp: int, dp: int, flags: int) -> bytes:
            return ethernet(ipv4(s, d, IPPROTO_TCP, tcp(s, d, sp, dp, flags=flags)))

        c, cp, m = CLIENT, CLIENT_PORT, self.mark
        to_backend = (c, self.backend, cp, self.backend_port)
        return [
            Case("ingress", "new", frame(c, self.vip, cp, self.vip_port, TCP_SYN), 0, "marked", m,
                 False),
            Case("ingress", "reply",
                 frame(self.backend, self.node, self.backend_port, self.nat_port, TCP_ACK),
                 0, "rsnat", 0, True),
            Case("ingress", "miss", frame(c, self.pod, cp, 8080, TCP_SYN), 0, "pass", 0, False),
            Case("egress", "new", frame(*to_backend, TCP_SYN), m, "snat_new", 0, False),
            Case("egress", "established", frame(*to_backend, TCP_ACK), m, "snat_hit", 0, True),
            Case("egress", "reply", frame(self.vip, c, self.vip_port, cp, TCP_ACK), 0, "pass", 0,
                 True),
            Case("egress", "miss", frame(self.pod, OUTSIDE, 5555, 443, TCP_SYN), 0, "pass", 0,
                 False),
        ]  # fmt: skip


# ------------------------------------------------------------------ one build


class Bench:
    """One loaded build and its flow: sessions set up and torn down per class."""

    def __init__(self, build: BuildUnderTest, flow: Flow) -> None:
        from bpfgen_runtime.testrun import ReverseEntry, SessionKey

        self.build = build
        self.flow = flow
        f = flow
        self.key = SessionKey(int(CLIENT), int(f.backend), CLIENT_PORT, f.backend_port, IPPROTO_TCP)
        self.reverse_key = SessionKey(
            int(f.backend), int(f.node), f.backend_port, f.nat_port, IPPROTO_TCP
        )
        self._origin = ReverseEntry(int(CLIENT), CLIENT_PORT)

    def prepare(self, case: Case) -> None:
        """Only this flow's session, live (last seen now, answered), when the class has one."""
        from bpfgen_runtime.testrun import SessionEntry

        self.build.clear_sessions()
        if case.session:
            entry = SessionEntry(time.monotonic_ns(), int(self.flow.node), self.flow.nat_port,
                                 SEEN_REPLY)  # fmt: skip
            self.build.put_session(self.key, entry)
            self.build.put_reverse_session(self.reverse_key, self._origin)

    def _forget_new_session(self) -> None:
        entry = self.build.session(self.key)
        if entry is not None:
            self.build.delete_session(self.key)
            self.build.delete_reverse_session(
                self.reverse_key._replace(daddr=entry.nat_addr, dport=entry.nat_port)
            )

    def check(self, case: Case) -> None:
        """One run: the class does what its docstring says, or the bench stops."""
        self.prepare(case)
        before = self.build.counters()
        r = self.build.timed_run(case.program, case.frame, case.mark)
        after = self.build.counters()
        delta = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        kind = self.build.manifest.build
        where = f"{kind} build, {case.program}/{case.cls}"
        if r.retval != 0 or delta != {case.counter: 1} or r.mark != case.mark_out:
            raise RuntimeError(
                f"{where}: expected TC_ACT_OK, counter {case.counter}, mark {case.mark_out:#x}; "
                f"got retval {r.retval}, counters {delta}, mark {r.mark:#x}"
            )
        if case.counter in ("snat_new", "snat_hit", "rsnat") and r.packet == case.frame:
            raise RuntimeError(f"{where}: the packet was not translated")
        if case.cls == "new" and case.program == "egress" and self.build.session(self.key) is None:
            raise RuntimeError(f"{where}: no session created")

    def per_packet(self, case: Case, samples: int) -> list[int]:
        """`samples` single-packet runs: the kernel's ns for each."""
        self.prepare(case)
        run = self.build.timed_run
        out = []
        forget = case.program == "egress" and case.cls == "new"
        for _ in range(samples):
            out.append(run(case.program, case.frame, case.mark).duration_ns)
            if forget:
                self._forget_new_session()
        return out

    def amortized(self, case: Case, repeat: int, calls: int) -> list[int]:
        """Mean ns per repetition over `repeat` runs on the same packet, `calls` times."""
        self.prepare(case)
        return [
            self.build.timed_run(case.program, case.frame, case.mark, repeat).duration_ns
            for _ in range(calls)
        ]


# ------------------------------------------------------------------ the part


def trimmed_mean(values: list[int], cut: float = 0.1) -> float:
    """The mean of `values` without the lowest and highest `cut` of them."""
    ordered = sorted(values)
    k = int(len(ordered) * cut)
    kept = ordered[k : len(ordered) - k] or ordered
    return sum(kept) / len(kept)


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _compile(
    root: Path, name: str, node: Path, services: Path, progress: Progress
) -> dict[str, dict[str, Any]]:
    from bpfgen.compiler import compile_build

    out = {}
    for kind in BUILD_KINDS:
        res = compile_build(node, [services], root / f"{name}-{kind}", build=kind)
        out[kind] = {"dir": res.out, "manifest": to_json(res.manifest)}
        progress(
            f"packets: {name}: {kind} build: "
            + ", ".join(
                f"{p.name} {p.insns} insns / "
                f"{p.verifier.processed_insns if p.verifier else '?'} processed"
                for p in res.manifest.programs
            )
        )
    return out


def _rotations(rounds: int) -> Iterator[tuple[int, tuple[str, ...]]]:
    kinds = BUILD_KINDS
    for r in range(rounds):
        k = r % len(kinds)
        yield r, kinds[k:] + kinds[:k]


def measure_config(
    name: str, node: Path, services: Path, root: Path, s: Settings, progress: Progress
) -> dict[str, Any]:
    from bpfgen_runtime.testrun import BuildUnderTest

    builds = _compile(root, name, node, services, progress)
    flow = Flow.of(builds["specialized"]["manifest"])
    cases = flow.cases()
    rounds: dict[str, dict[str, list[float]]] = {k: {} for k in BUILD_KINDS}
    amortized: dict[str, dict[str, list[float]]] = {k: {} for k in BUILD_KINDS}
    with ExitStack() as stack:
        benches = {
            k: Bench(stack.enter_context(BuildUnderTest(b["dir"])), flow) for k, b in builds.items()
        }
        for b in benches.values():
            for case in cases:
                b.check(case)
        for r, order in _rotations(s.rounds):
            t0 = time.perf_counter()
            for kind in order:
                for case in cases:
                    label = f"{case.program}/{case.cls}"
                    samples = benches[kind].per_packet(case, s.samples)
                    rounds[kind].setdefault(label, []).append(trimmed_mean(samples))
                    if (case.program, case.cls) in IDEMPOTENT:
                        means = benches[kind].amortized(case, s.repeat, s.repeat_calls)
                        amortized[kind].setdefault(label, []).append(statistics.median(means))
            progress(
                f"packets: {name}: round {r + 1}/{s.rounds} ({' '.join(order)}) "
                f"{time.perf_counter() - t0:.1f} s"
            )
    labels = [f"{c.program}/{c.cls}" for c in cases]
    ns = {k: {lb: _spread(rounds[k][lb]) for lb in labels} for k in BUILD_KINDS}
    ns_amortized = {k: {lb: _spread(v) for lb, v in amortized[k].items()} for k in BUILD_KINDS}
    floor = {
        k: ns[k]["egress/miss"]["median"] - ns_amortized[k]["egress/miss"]["median"]
        for k in BUILD_KINDS
    }
    insns = {
        k: {
            p["name"]: {"object": p["insns"], "processed": p["verifier"]["processed_insns"]}
            for p in b["manifest"]["programs"]
        }
        for k, b in builds.items()
    }
    return {
        "frontends": len(builds["specialized"]["manifest"]["specialization"]["frontends"]),
        "frontends_as_code": not builds["specialized"]["manifest"]["specialization"][
            "frontends_in_map"
        ],
        "classes": labels,
        "ns_per_packet": ns,
        "ns_per_packet_rounds": rounds,
        "ns_amortized": ns_amortized,
        "timer_floor_ns": floor,
        "insns": insns,
        "ratios": _ratios(labels, ns, insns),
    }


def _ratios(
    labels: list[str], ns: dict[str, dict[str, dict[str, float]]], insns: dict[str, Any]
) -> dict[str, Any]:
    spec = "specialized"
    out: dict[str, Any] = {"ns": {}, "processed": {}, "object": {}}
    for other in (k for k in BUILD_KINDS if k != spec):
        out["ns"][other] = {lb: ns[spec][lb]["median"] / ns[other][lb]["median"] for lb in labels}
        for what in ("processed", "object"):
            out[what][other] = {
                p: insns[spec][p][what] / insns[other][p][what] for p in insns[spec]
            }
    return out


def _targets(configs_: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, evaluated on the measurements (never assumed)."""
    processed, faster = [], []
    for name, c in configs_.items():
        for prog, ratio in c["ratios"]["processed"]["generic"].items():
            processed.append(
                {"config": name, "program": prog, "ratio": ratio,
                 "met": ratio <= TARGET_PROCESSED_RATIO}
            )  # fmt: skip
        for lb in c["classes"]:
            vs = {o: c["ratios"]["ns"][o][lb] for o in ("generic", "frozen")}
            faster.append(
                {"config": name, "class": lb, **vs, "met": all(v < 1 for v in vs.values())}
            )
    return {
        "processed_le_0.62_generic": processed,
        "faster_than_both": faster,
    }


def run(out_dir: Path, *, quick: bool, progress: Progress) -> dict[str, Any]:
    s = Settings.of(quick)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bpfgen-bench-packets-") as tmp:
        root = Path(tmp)
        for name, (node, services) in configs(root).items():
            results[name] = measure_config(name, node, services, root, s, progress)
    return {
        "settings": {**s.__dict__, "quick": quick},
        "configs": results,
        "targets": _targets(results),
        "target_processed_ratio": TARGET_PROCESSED_RATIO,
    }


# ------------------------------------------------------------------ table and plot


def _ns_cell(x: dict[str, float]) -> str:
    return f"{x['median']:.0f} [{x['min']:.0f}–{x['max']:.0f}]"


def table(result: dict[str, Any]) -> str:
    s = result["settings"]
    out = [
        f"ns/packet: kernel time of one BPF_PROG_TEST_RUN packet (repeat=1), median of "
        f"{s['rounds']} rounds, each the 10 %-trimmed mean of {s['samples']:,} packets "
        f"[min–max of the rounds]; amortized: mean over repeat={s['repeat']:,} on the same packet "
        "(classes the program leaves unchanged only). Ratio < 1: specialized is faster.",
        "",
    ]
    others = [k for k in BUILD_KINDS if k != "specialized"]
    for name, c in result["configs"].items():
        where = "code" if c["frontends_as_code"] else "map"
        floor = ", ".join(f"{k} {v:.0f}" for k, v in c["timer_floor_ns"].items())
        out += [
            f"**{name}** ({c['frontends']} frontends, specialized: {where}; timer floor per "
            f"call ≈ {floor} ns)",
            "",
            "| program/class | "
            + " | ".join(f"{k} ns" for k in BUILD_KINDS)
            + " | "
            + " | ".join(f"spec/{k}" for k in others)
            + " | amortized ns "
            + " / ".join(BUILD_KINDS)
            + " |",
            "|---|" + "---:|" * (len(BUILD_KINDS) + len(others) + 1),
        ]
        for lb in c["classes"]:
            ns = c["ns_per_packet"]
            am = c["ns_amortized"]
            amort = (
                " / ".join(f"{am[k][lb]['median']:.1f}" for k in BUILD_KINDS)
                if lb in am["specialized"]
                else "–"
            )
            cells = [_ns_cell(ns[k][lb]) for k in BUILD_KINDS]
            cells += [f"{c['ratios']['ns'][k][lb]:.2f}" for k in others]
            out.append(f"| {lb} | " + " | ".join(cells) + f" | {amort} |")
        out += [
            "| ingress/established | same path as ingress/new (ingress keeps no forward "
            "state) |" + " |" * (len(BUILD_KINDS) + len(others)),
            "",
            "| program | object insns "
            + " / ".join(BUILD_KINDS)
            + " | verifier processed "
            + " / ".join(BUILD_KINDS)
            + " | "
            + " | ".join(f"processed spec/{k}" for k in others)
            + " |",
            "|---|---:|---:|" + "---:|" * len(others),
        ]
        for prog in c["insns"]["specialized"]:
            i = c["insns"]
            objs = " / ".join(f"{i[k][prog]['object']:,}" for k in BUILD_KINDS)
            proc = " / ".join(f"{i[k][prog]['processed']:,}" for k in BUILD_KINDS)
            r = c["ratios"]["processed"]
            ratios = " | ".join(f"{r[k][prog]:.2f}" for k in others)
            out.append(f"| {prog} | {objs} | {proc} | {ratios} |")
        out.append("")
    t = result["targets"]
    proc = t["processed_le_0.62_generic"]
    missed = [f"{p['config']} {p['program']} {p['ratio']:.2f}" for p in proc if not p["met"]]
    out.append(
        f"Target: specialized ≤ {result['target_processed_ratio']}× generic verifier-processed "
        f"instructions (per program; the verifier does not count per packet class): "
        + (
            "**met** for every program."
            if not missed
            else f"**missed** for {len(missed)} of {len(proc)}: {', '.join(missed)}."
        )
    )
    fast = t["faster_than_both"]
    slow = [f"{f['config']} {f['class']}" for f in fast if not f["met"]]
    out.append(
        "Target: specialized faster per packet than generic and frozen: "
        + (
            f"**met** in all {len(fast)} measured classes."
            if not slow
            else f"**missed** in {len(slow)} of {len(fast)}: {', '.join(slow)}."
        )
    )
    return "\n".join(out) + "\n"


def plot(result: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs_ = result["configs"]
    fig, axes = plt.subplots(len(configs_), 1, figsize=(10, 4 * len(configs_)), squeeze=False)
    width = 0.27
    for ax, (name, c) in zip(axes[:, 0], configs_.items(), strict=True):
        labels = c["classes"]
        for j, kind in enumerate(BUILD_KINDS):
            ns = c["ns_per_packet"][kind]
            med = [ns[lb]["median"] for lb in labels]
            err = [
                [ns[lb]["median"] - ns[lb]["min"] for lb in labels],
                [ns[lb]["max"] - ns[lb]["median"] for lb in labels],
            ]
            xs = [i + (j - 1) * width for i in range(len(labels))]
            ax.bar(xs, med, width, yerr=err, capsize=2, label=kind)
        ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_ylabel("ns per packet (BPF_PROG_TEST_RUN)")
        ax.set_title(f"{name}: per-packet cost by build kind (median, min–max of rounds)")
        ax.legend()
    fig.tight_layout()
    ns_png = out_dir / "packets_ns.png"
    fig.savefig(ns_png, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    groups = [(name, prog) for name, c in configs_.items() for prog in c["insns"]["specialized"]]
    for j, kind in enumerate(BUILD_KINDS):
        vals = [configs_[n]["insns"][kind][p]["processed"] for n, p in groups]
        ax.bar([i + (j - 1) * width for i in range(len(groups))], vals, width, label=kind)
    ax.set_xticks(range(len(groups)), [f"{n}\n{p}" for n, p in groups])
    ax.set_ylabel("verifier-processed instructions")
    ax.set_title("Verifier-processed instructions per program")
    ax.legend()
    fig.tight_layout()
    insns_png = out_dir / "packets_insns.png"
    fig.savefig(insns_png, dpi=110)
    plt.close(fig)
    return [ns_png, insns_png]

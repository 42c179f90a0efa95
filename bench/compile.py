"""`make bench-compile`: end-to-end compile time, cold and cached, by service count.

Generates kubectl-shaped manifests (a v1 List of Services and EndpointSlices,
4 endpoints each by default) for each size, then times `compile_build` with an
empty object cache (cold: clang runs) and again with the warm cache (cached:
no clang). Every run includes parsing, planning, rendering, inspection and the
kernel verifier. Prints a table; --json for the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node:
  name: node-a
  addresses: [198.18.0.2]
  podCIDR: 198.19.1.0/24
cluster:
  podCIDR: 198.19.0.0/16
  serviceCIDR: 198.18.128.0/17
interfaces:
  - {name: eth0, role: uplink, hook: tc}
  - {name: "veth*", role: pods}
snat:
  portRange: [20000, 29999]
  maxSessions: 65536
"""


#: `--insns --mode bpf`: every bpf-mode program at once (svc_in at tc, svc_xdp on the
#: uplink, the socket programs of datapath.socketLB).
BPF_NODE_YAML = (
    NODE_YAML.replace("hook: tc", "hook: xdp")
    + """\
datapath: {mode: bpf, scheduler: maglev, socketLB: true}
"""
)


def services_manifest(n: int, endpoints: int = 4, *, ports: int = 1, padding: int = 0) -> str:
    """A `kubectl get svc,endpointslices -A -o yaml`-shaped List of n services.

    `ports` TCP ports per Service (80, 81, ...); `padding`: a last-applied-configuration
    annotation of that many bytes on every object, as `kubectl apply` leaves them.
    """
    svc_base = int(IPv4Address("198.18.128.10"))
    pod_base = int(IPv4Address("198.19.0.10"))
    names = ["http", *(f"http-{p}" for p in range(1, ports))]
    out = ["apiVersion: v1", "kind: List", "items:"]
    for i in range(n):
        name = f"svc-{i}"
        out += [
            "- apiVersion: v1",
            "  kind: Service",
            "  metadata:",
            f"    name: {name}",
            "    namespace: bench",
            f"    uid: 00000000-0000-0000-0000-{i:012d}",
            '    resourceVersion: "1"',
            *_annotations(f"svc-{i}", padding),
            "  spec:",
            "    type: ClusterIP",
            f"    clusterIP: {IPv4Address(svc_base + i)}",
            f"    clusterIPs: [{IPv4Address(svc_base + i)}]",
            "    ports:",
            *(
                f"    - {{name: {pn}, port: {80 + p}, protocol: TCP, targetPort: {8080 + p}}}"
                for p, pn in enumerate(names)
            ),
            "- apiVersion: discovery.k8s.io/v1",
            "  kind: EndpointSlice",
            "  metadata:",
            f"    name: {name}-abcde",
            "    namespace: bench",
            f"    labels: {{kubernetes.io/service-name: {name}}}",
            *_annotations(f"slice-{i}", padding),
            "  addressType: IPv4",
            "  ports:",
            *(f"  - {{name: {pn}, port: {8080 + p}, protocol: TCP}}" for p, pn in enumerate(names)),
            "  endpoints:",
        ]
        for e in range(endpoints):
            addr = IPv4Address(pod_base + (i * endpoints + e) % 60000)
            out.append(
                f"  - {{addresses: [{addr}], conditions: {{ready: true}}, nodeName: node-b}}"
            )
    return "\n".join(out) + "\n"


def _annotations(what: str, padding: int) -> list[str]:
    if not padding:
        return []
    return [
        "    annotations:",
        f"      kubectl.kubernetes.io/last-applied-configuration: '{what}-{'x' * padding}'",
    ]


def run(sizes: list[int], rounds: int, verify: bool) -> list[dict[str, Any]]:
    import os

    from bpfgen.compiler import compile_build

    results = []
    with tempfile.TemporaryDirectory(prefix="bpfgen-bench-") as tmp:
        root = Path(tmp)
        node = root / "node.yaml"
        node.write_text(NODE_YAML)
        for n in sizes:
            svc = root / f"services-{n}.yaml"
            svc.write_text(services_manifest(n))
            cold, cached = [], []
            for r in range(rounds):
                os.environ["BPFGEN_CACHE_DIR"] = str(root / f"cache-{n}-{r}")
                t0 = time.perf_counter()
                first = compile_build(node, [svc], root / f"out-{n}", verify=verify)
                t1 = time.perf_counter()
                second = compile_build(node, [svc], root / f"out-{n}", verify=verify)
                t2 = time.perf_counter()
                assert not first.build_cache_hit and first.clang_runs == len(first.objects)
                assert second.build_cache_hit and second.clang_runs == 0
                cold.append(t1 - t0)
                cached.append(t2 - t1)
            results.append(
                {
                    "services": n,
                    "endpoints_per_service": 4,
                    "manifest_bytes": svc.stat().st_size,
                    "frontends_in_map": first.frontends_in_map,
                    "cold_s": cold,
                    "cached_s": cached,
                    "cold_median_s": statistics.median(cold),
                    "cached_median_s": statistics.median(cached),
                }
            )
            print(
                f"  {n:>6} services: cold {statistics.median(cold):6.2f} s, "
                f"cached {statistics.median(cached):6.2f} s (median of {rounds})",
                file=sys.stderr,
                flush=True,
            )
    return results


def insns_table(sizes: list[int], mode: str = "ipvs") -> list[dict[str, Any]]:
    """Object and verifier-processed instructions of every build kind, by service count."""
    from bpfgen.compiler import compile_build
    from bpfgen.plan import BUILD_KINDS

    rows = []
    kinds = BUILD_KINDS
    with tempfile.TemporaryDirectory(prefix="bpfgen-insns-") as tmp:
        root = Path(tmp)
        node = root / "node.yaml"
        node.write_text(NODE_YAML if mode == "ipvs" else BPF_NODE_YAML)
        for n in sizes:
            svc = root / f"services-{n}.yaml"
            svc.write_text(services_manifest(n))
            for kind in kinds:
                res = compile_build(node, [svc], root / f"out-{n}-{kind}", build=kind)
                row: dict[str, Any] = {
                    "services": n,
                    "build": res.build_kind,
                    "frontends": "map" if res.frontends_in_map else "code",
                }
                for prog in res.manifest.programs:
                    assert prog.verifier is not None  # compiled with verify
                    row[prog.name] = {
                        "insns": prog.insns,
                        "processed": prog.verifier.processed_insns,
                        "xlated": prog.verifier.xlated_insns,
                    }
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compile", description=__doc__)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--insns",
        action="store_true",
        help="instruction counts instead of timing, every build kind (sizes 1 16 64 65)",
    )
    ap.add_argument(
        "--mode",
        choices=("ipvs", "bpf"),
        default="ipvs",
        help="--insns: the datapath mode (bpf: svc_in, svc_xdp, sock programs)",
    )
    args = ap.parse_args(argv)
    if args.insns:
        sizes = args.sizes if argv and "--sizes" in argv else [1, 16, 64, 65]
        rows = insns_table(sizes, args.mode)
        if args.json:
            json.dump(rows, sys.stdout, indent=2)
            print()
            return 0
        if args.mode == "bpf":
            progs = ("svc_in", "svc_xdp", "sock_connect4")
            print(
                "| services | build | frontends | "
                + " | ".join(f"{p} insns / processed" for p in progs)
                + " |"
            )
            print("|---:|---|---|" + "---|" * len(progs))
            for r in rows:
                cells = [f"{r[p]['insns']:,} / {r[p]['processed']:,}" for p in progs]
                print(
                    f"| {r['services']:,} | {r['build']} | {r['frontends']} | "
                    + " | ".join(cells)
                    + " |"
                )
            return 0
        print(
            "| services | build | frontends | ingress insns / processed "
            "| egress insns / processed |"
        )
        print("|---:|---|---|---|---|")
        for r in rows:
            cells = [f"{r[p]['insns']:,} / {r[p]['processed']:,}" for p in ("ingress", "egress")]
            print(
                f"| {r['services']:,} | {r['build']} | {r['frontends']} | {cells[0]} | {cells[1]} |"
            )
        return 0
    results = run(args.sizes, args.rounds, verify=not args.no_verify)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0
    print("| services | manifest | cold compile | cached compile |")
    print("|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['services']:,} | {r['manifest_bytes'] / 1e6:.1f} MB | "
            f"{r['cold_median_s']:.2f} s | {r['cached_median_s']:.2f} s |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

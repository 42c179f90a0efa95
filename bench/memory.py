"""`make bench-memory`: peak RSS and wall time of `bpfgen compile`, by input shape.

Each case writes its inputs (a node file and a kubectl-shaped List of Services
and EndpointSlices, addresses in 198.18.0.0/15), then runs `bpfgen compile` in
a child process with an empty build cache and an address-space limit, and reads
the child's peak RSS from `wait4` (the largest of bpfgen and the clang it ran).
Prints a table; --json for the raw figures; --case to pick cases.

The bound (docs/testing.md, "Memory"): a compile of 10,000 Services x 4
endpoints with Maglev at the default table size stays under BOUND_MIB; the
exit status is 1 when it does not, or when a compile fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import compile as compile_bench
from bench.compile import NODE_YAML

#: Peak RSS allowed for a compile of 10,000 Services x 4 endpoints, bpf mode, Maglev
#: (M = 16381), case maglev-10k (docs/testing.md, "Memory"): under a fifth of a 2 GiB
#: node. The other cases are measured, not bounded.
BOUND_MIB = 384
BOUND_SERVICES = 10_000
#: What any compile needs whatever its size: the interpreter, Jinja, pyelftools, clang.
FIXED_MIB = 160


def bound_mib(services: int) -> float:
    """The bound scaled to `services`: FIXED_MIB, plus the rest of BOUND_MIB per Service."""
    return FIXED_MIB + (BOUND_MIB - FIXED_MIB) * services / BOUND_SERVICES


#: The address-space limit a measured child runs under: a runaway case fails with
#: MemoryError instead of taking the machine's memory from everything else on it.
DEFAULT_LIMIT_MIB = 6144


@dataclass(frozen=True)
class Case:
    name: str
    services: int
    ports: int = 1  # per Service (frontends = services x ports)
    endpoints: int = 4  # per Service
    mode: str = "bpf"
    scheduler: str = "maglev"
    maglev_size: int | None = None  # None: the default (16381)
    build: str = "specialized"
    verify: bool = False
    padding: int = 0  # bytes of last-applied-configuration annotation per object


CASES = (
    Case("maglev-300-ports", 100, ports=3),
    Case("generic-65", 65, build="generic"),
    Case("maglev-131071-x100", 100, maglev_size=131071),
    Case("maglev-10k", 10_000),
    Case("maglev-10k-generic", 10_000, build="generic"),
    Case("ipvs-10k", 10_000, mode="ipvs", scheduler="rr"),
    # 20 MiB of YAML: endpoint addresses repeat after 60,000 (bench/compile.py).
    Case("manifest-20MB", 16_000, endpoints=10, mode="ipvs", scheduler="rr"),
    Case("maglev-1k-verified", 1_000, verify=True),
)


def node_yaml(case: Case) -> str:
    datapath = f"mode: {case.mode}, scheduler: {case.scheduler}"
    if case.maglev_size is not None:
        datapath += f", maglevTableSize: {case.maglev_size}"
    return NODE_YAML + f"datapath: {{{datapath}}}\n"


def services_manifest(case: Case) -> str:
    """bench/compile.py's kubectl-shaped List (addresses in 198.18.0.0/15)."""
    if case.services > 32_000:
        raise ValueError("more Services than serviceCIDR 198.18.128.0/17 holds")
    return compile_bench.services_manifest(
        case.services, case.endpoints, ports=case.ports, padding=case.padding
    )


def write_inputs(root: Path, case: Case) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    node, services = root / "node.yaml", root / "services.yaml"
    node.write_text(node_yaml(case))
    services.write_text(services_manifest(case))
    return node, services


@dataclass(frozen=True)
class Measured:
    case: str
    exit_code: int
    seconds: float
    peak_rss_mib: float
    manifest_mib: float
    build_dir_mib: float
    stderr_tail: str


#: Runs the compile as its own child and prints that child's peak RSS (KiB). A process's
#: ru_maxrss counts what it had before exec: a compile forked straight from a long test
#: session started at the session's RSS (347 MiB seen), so it is forked from this small
#: launcher instead, which sets the address-space limit in the child only.
_LAUNCHER = """
import os, resource, subprocess, sys
limit = int(sys.argv[1])
def preexec():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
child = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, preexec_fn=preexec)
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measure(case: Case, root: Path, limit_mib: int = DEFAULT_LIMIT_MIB) -> Measured:
    """Compile `case` in a child process under `limit_mib` of address space."""
    node, services = write_inputs(root / "in", case)
    out = root / "out"
    cmd = [
        sys.executable,
        "-m",
        "bpfgen",
        "compile",
        "-q",
        "--node",
        str(node),
        "--services",
        str(services),
        "--out",
        str(out),
        "--build",
        case.build,
    ]
    if not case.verify:
        cmd.append("--no-verify")
    env = dict(os.environ, BPFGEN_CACHE_DIR=str(root / "cache"))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(limit_mib << 20), *cmd],
                          env=env, capture_output=True, check=False)  # fmt: skip
    returncode = proc.returncode
    err = proc.stderr
    maxrss_kib = int(proc.stdout.split()[-1]) if proc.stdout.split() else 0
    seconds = time.perf_counter() - t0
    built = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.exists() else 0
    return Measured(
        case=case.name,
        exit_code=returncode,
        seconds=seconds,
        peak_rss_mib=maxrss_kib / 1024,  # KiB on Linux
        manifest_mib=services.stat().st_size / 2**20,
        build_dir_mib=built / 2**20,
        stderr_tail=err.decode(errors="replace")[-600:],
    )


def table(results: list[Measured]) -> str:
    lines = [
        "| case | manifest | exit | peak RSS | seconds | build dir |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.case} | {r.manifest_mib:.1f} MiB | {r.exit_code} | {r.peak_rss_mib:,.0f} MiB "
            f"| {r.seconds:.1f} | {r.build_dir_mib:,.1f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--case",
        action="append",
        choices=[c.name for c in CASES],
        help="run only these cases (repeatable); default: all",
    )
    ap.add_argument(
        "--limit-mib",
        type=int,
        default=DEFAULT_LIMIT_MIB,
        help=f"address-space limit per compile (default {DEFAULT_LIMIT_MIB})",
    )
    ap.add_argument("--keep", type=Path, help="keep inputs and build directories under here")
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.case or c.name in args.case]
    results = []
    for case in cases:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            r = measure(
                case, Path(tempfile.mkdtemp(prefix=f"{case.name}-", dir=args.keep)), args.limit_mib
            )
        else:
            with tempfile.TemporaryDirectory(prefix="bpfgen-mem-") as tmp:
                r = measure(case, Path(tmp), args.limit_mib)
        results.append(r)
        print(
            f"  {case.name}: exit {r.exit_code}, {r.peak_rss_mib:,.0f} MiB, {r.seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        if r.exit_code:
            print("    " + r.stderr_tail.strip().replace("\n", "\n    "), file=sys.stderr)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results))
    failed = [
        r
        for r in results
        if r.exit_code or (r.case == "maglev-10k" and r.peak_rss_mib >= BOUND_MIB)
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench [--quick] [--part NAME ...] [--out DIR] [--json]`.

Runs the parts (modules of this package, imported by name when asked for),
writes `DIR/results.json` (every raw figure of every part, plus the machine:
kernel, CPU, cores, clang, date), each part's PNGs under DIR, prints the
Markdown tables on stdout (or results.json with --json), then the targets of
the parts that judge any (`targets_table`) with pass/miss, and progress on
stderr. `python -m bench.readme_tables` renders README.md's tables from
results.json.
Exit status 1 when a part reports problems (a measurement that disagrees with
the spec), 2 when a requested part does not exist.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

PARTS = ("packets", "scale", "connections", "ports", "agent")
DEFAULT_OUT = Path("build/bench")


class MissingPart(Exception):
    pass


def load_part(name: str) -> ModuleType:
    """bench.<name>; a missing module is reported, not a traceback."""
    try:
        return importlib.import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.{name}":
            raise  # the part exists but something it imports does not
        raise MissingPart(
            f"part {name!r}: module bench/{name}.py does not exist (yet); "
            f"run the others with --part"
        ) from exc


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    from bpfgen.build import toolchain

    try:
        clang = toolchain().version
    except Exception as exc:  # a bench without clang still says why
        clang = f"unknown ({exc})"
    return {
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "cpu": _cpu_model(),
        "nproc": os.cpu_count(),
        "clang": clang,
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        # Other work on the machine skews every figure: the 1/5/15-minute load at the start.
        "loadavg": list(os.getloadavg()),
        "git": _git_head(),
    }


def _git_head() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return None
    return proc.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="smoke variant: few samples, seconds")
    ap.add_argument(
        "--part",
        action="append",
        choices=PARTS,
        dest="parts",
        help="run only this part (repeatable; default: all of " + ", ".join(PARTS) + ")",
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    ap.add_argument("--json", action="store_true", help="print results.json instead of tables")
    ap.add_argument(
        "--no-vm",
        action="store_true",
        help="connections: host modes only, skip the Debian 6.1 VM (the result says so)",
    )
    args = ap.parse_args(argv)
    if args.no_vm:
        os.environ["BPFGEN_BENCH_NO_VM"] = "1"  # read by bench.connections.run
    parts = list(dict.fromkeys(args.parts or PARTS))
    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        modules = {name: load_part(name) for name in parts}
    except MissingPart as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "parts": {},
    }
    tables: list[str] = []
    targets: list[str] = []
    problems: list[str] = []
    for name, mod in modules.items():
        progress(f"{name}: start")
        t0 = time.monotonic()
        result = mod.run(out, quick=args.quick, progress=progress)
        seconds = time.monotonic() - t0
        pngs = mod.plot(result, out)
        results["parts"][name] = {
            "seconds": round(seconds, 2),
            "plots": [str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in pngs],
            "result": result,
        }
        problems += [f"{name}: {p}" for p in result.get("problems", [])]
        tables.append(f"## {name}\n\n{mod.table(result)}")
        if hasattr(mod, "targets_table"):  # printed after every part's tables
            targets.append(f"### {name}\n\n{mod.targets_table(result)}")
        progress(f"{name}: done in {seconds:.1f} s, {', '.join(p.name for p in pngs)}")
        # Written after every part: an interrupted run keeps what it measured.
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    header = (
        f"# bpfgen bench{' (quick)' if args.quick else ''}: {m['date']}, kernel {m['kernel']}, "
        f"{m['cpu']} x {m['nproc']}, {m['clang']}, load {m['loadavg'][0]:.2f} at start\n"
    )
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        print(header + "\n" + "\n".join(tables))
        if targets:
            print("## Targets (pass when the median meets the goal)\n\n" + "\n".join(targets))
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    progress(f"wrote {out / 'results.json'}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""The runtime's subcommands: up, sync, status, down. It only parses and prints.

bpfgen/cli.py adds them with `add_subcommands(sub)` and hands their parsed
arguments to `dispatch(args)`. For `sync`, the compiler's CLI rebuilds DIR from
--services first, then calls `dispatch` with the same arguments.

Environment (tests): BPFGEN_BPFFS (default /sys/fs/bpf) and BPFGEN_RUN_DIR
(default /run/bpfgen) move the pins and the state files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .lock import EXIT_LOCKED
from .node import BPFFS, Options, Report, down, status, sync, up
from .state import RUN_DIR

RUNTIME_COMMANDS = ("up", "sync", "status", "down")
EXIT_DIFFERS = 3  # status: the live state is not what bpfgen's record and build say


def _netns(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--netns",
        metavar="NAME",
        default=None,
        help="network namespace (/run/netns/NAME; default: the current one)",
    )
    p.add_argument(
        "--wait",
        metavar="SECONDS",
        type=float,
        default=0.0,
        help="when another bpfgen command runs in the namespace, wait up to SECONDS for it "
        f"(default: exit {EXIT_LOCKED} at once)",
    )


def add_subcommands(sub: Any) -> None:
    """Add up/sync/status/down to an argparse subparsers object."""
    u = sub.add_parser("up", help="load, pin, attach; program IPVS, notrack, sysctls")
    u.add_argument("dir", type=Path, help="build directory (bpfgen compile --out)")
    _netns(u)
    u.add_argument(
        "--no-ipvs",
        action="store_true",
        help="TEST ONLY: skip IPVS (services, vs.* sysctls) on kernels without it",
    )
    _cgroup(u)
    u.add_argument("--json", action="store_true", help="print what changed as JSON")

    s = sub.add_parser("sync", help="apply service changes; sessions survive")
    s.add_argument("dir", type=Path, help="build directory, rebuilt from --services first")
    s.add_argument(
        "--services",
        type=Path,
        nargs="+",
        action="extend",
        default=None,
        help="Service/EndpointSlice manifests to rebuild DIR from (read by bpfgen's CLI)",
    )
    s.add_argument(
        "--node",
        type=Path,
        default=None,
        help="node config for the rebuild (default: the one DIR was built from)",
    )
    _netns(s)
    s.add_argument(
        "--reset-sessions",
        action="store_true",
        help="recreate maps whose definition changed (e.g. maxSessions); sessions are lost",
    )
    _cgroup(s)
    s.add_argument("--json", action="store_true")

    st = sub.add_parser("status", help="attached programs, map fill, counters, IPVS")
    _netns(st)
    st.add_argument("--json", action="store_true")

    d = sub.add_parser("down", help="remove everything up created, nothing else")
    _netns(d)
    d.add_argument("--json", action="store_true")


def _cgroup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cgroup",
        default=None,
        help="bpf mode, datapath.socketLB: the cgroup v2 directory the sock_addr programs "
        "attach to instead of the build's datapath.cgroup (kept once up)",
    )


def runtime_options(args: argparse.Namespace) -> Options:
    return Options(
        netns=args.netns,
        bpffs=os.environ.get("BPFGEN_BPFFS", BPFFS),
        run_dir=os.environ.get("BPFGEN_RUN_DIR", RUN_DIR),
        ipvs=not getattr(args, "no_ipvs", False),
        reset_sessions=getattr(args, "reset_sessions", False),
        cgroup=getattr(args, "cgroup", None),
        lock_wait=getattr(args, "wait", 0.0),
    )


def _print_report(command: str, report: Report, as_json: bool, where: str) -> None:
    if as_json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        print()
        return
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.changes:
        print(f"{command} {where}: nothing to change")
    for change in report.changes:
        print(f"  {change}")


def _print_status(info: dict[str, Any]) -> None:
    where = info["netns"] or "root"
    for note in info.get("record_notes", []):
        print(f"note: {note}", file=sys.stderr)
    if not info["up"]:
        print(f"{where}: bpfgen is not up")
        for d in info.get("differences", []):
            print(f"  {d}")
        return
    origin = {"journal": " [state file lost: recovered from its bpffs copy]",
              "none": " [no state record: found in the kernel]"}.get(info["record"], "")
    print(
        f"{where}: up from {info['build_dir'] or '(unknown build)'} (mode {info['mode']}, "
        f"config {info['config_sha256'][:12] or '?'}){origin}"
    )
    print("programs:")
    for a in info["attached"]:
        ok = "" if a["as_recorded"] else "  (NOT as recorded)"
        where = f"{a['device']:<16} {a['hook']:<10} {a['program']:<10}"
        print(f"  {where} id {a['prog_id']} tag {a['tag']}{ok}")
    print("maps:")
    for m in info["maps"]:
        if not m["pinned"]:
            print(f"  {m['name']:<18} NOT PINNED")
        else:
            print(f"  {m['name']:<18} {m['entries']:>8} / {m['max_entries']:<8} {m['type']}")
    print("counters:")
    for name, value in info["counters"].items():
        print(f"  {name:<16} {value}")
    if info["ipvs_services"]:
        print("IPVS services:")
        for s in info["ipvs_services"]:
            extra = f" persistent {s['persistence_timeout']}s" if s["persistence_timeout"] else ""
            print(
                f"  {s['service']:<28} {s['scheduler']}{extra}{'' if s['present'] else ' MISSING'}"
            )
            for r in s["real_servers"]:
                conns = f"active {r['active']} inactive {r['inactive']}"
                print(f"    -> {r['address']:<22} weight {r['weight']} {conns}")
    if info["nft_table"] is not None:  # None: bpf mode, no notrack table
        print(f"nftables table: {'present' if info['nft_table'] else 'MISSING'}")
    if info["in_sync"]:
        print("live state matches the build")
    else:
        print("live state differs from the build:")
        for d in info.get("differences", []):
            print(f"  {d}")
        if "build_problem" in info:
            print(f"  {info['build_problem']}")


def dispatch(args: argparse.Namespace) -> int:
    """Run a parsed runtime subcommand; RuntimeOpError (InputRefused: exit_code 2) propagates."""
    opts = runtime_options(args)
    where = f"in {opts.label}"
    if args.command == "up":
        _print_report("up", up(args.dir, opts), args.json, where)
    elif args.command == "sync":
        _print_report("sync", sync(args.dir, opts), args.json, where)
    elif args.command == "down":
        _print_report("down", down(opts), args.json, where)
    elif args.command == "status":
        info = status(opts)
        if args.json:
            json.dump(info, sys.stdout, indent=2)
            print()
        else:
            _print_status(info)
        return 0 if info["in_sync"] else EXIT_DIFFERS
    else:
        raise ValueError(f"not a runtime command: {args.command}")
    return 0


EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell shows for a process SIGPIPE killed


def closed_pipe_safe(run: Callable[[], int]) -> int:
    """Run a CLI body; stdout closed by its reader (`bpfgen status | head -1`) ends it
    quietly with 141, as SIGPIPE ends `cat`, instead of a BrokenPipeError traceback.
    stdout is flushed here, inside the guard, and then pointed at /dev/null so the
    interpreter's own flush at exit does not raise again. What the command did to the
    node is done by then (the report is printed after the work)."""
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def main(argv: list[str] | None = None) -> int:
    """`python -m bpfgen_runtime.cli` (no recompile for sync): what tests and nodes without
    the compiler use."""
    from .errors import RuntimeOpError

    ap = argparse.ArgumentParser(prog="bpfgen-runtime")
    add_subcommands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)

    def run() -> int:
        try:
            return dispatch(args)
        except RuntimeOpError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exc.exit_code

    return closed_pipe_safe(run)


if __name__ == "__main__":
    sys.exit(main())

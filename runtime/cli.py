"""The runtime's subcommands: up, sync, status, down, trace. It only parses and prints.

bpfgen/cli.py adds them with `add_subcommands(sub)` and hands their parsed
arguments to `dispatch(args)`. For `sync`, the compiler's CLI adds --services and
--node, rebuilds DIR from them first, then calls `dispatch` with the same arguments.

Environment: BPFGEN_BPFFS (default /sys/fs/bpf) and BPFGEN_RUN_DIR (default
/run/bpfgen) move the pins and the state files (tests use private ones);
BPFGEN_TEST_NO_IPVS=1, for tests on kernels without IPVS only, skips IPVS, its
sysctls and the dummy device (docs/testing.md, "Environment").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import drops, trace
from .builddir import InputRefused
from .lock import EXIT_LOCKED
from .node import BPFFS, Options, Report, down, status, sync, up
from .state import RUN_DIR

RUNTIME_COMMANDS = ("up", "sync", "status", "down", "trace")
EXIT_DIFFERS = 3  # status: not up, or the live state is not what the record and build say
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # what a shell shows for a process SIGPIPE killed
#: Test only (docs/testing.md): a non-empty value other than "0" runs the verbs as
#: Options(ipvs=False), for kernels without IPVS. Not a datapath mode.
NO_IPVS_ENV = "BPFGEN_TEST_NO_IPVS"

#: The runtime verbs' exit codes, for --help epilogs and the man page.
EXIT_CODES = (
    (0, "done; status: bpfgen is up and the live state matches the build"),
    (1, "any other failure (the message names the operation and the errno)"),
    (2, "bad input or usage, refused: nothing written, nothing on the node changed"),
    (EXIT_DIFFERS, "status only: bpfgen is not up, or the live state differs from the build"),
    (EXIT_LOCKED, "another bpfgen command is running in the namespace (see --wait)"),
    (EXIT_BROKEN_PIPE, "stdout closed by its reader (bpfgen status | head -1); the work is done"),
)


def exit_codes_epilog(codes: tuple[tuple[int, str], ...] = EXIT_CODES) -> str:
    """An argparse epilog listing exit codes, one a line (kept as is by HelpFormatter)."""
    return "exit status:\n" + "\n".join(f"  {code:<4} {text}" for code, text in codes)


class HelpFormatter(argparse.HelpFormatter):
    """Wraps a description or epilog that is one paragraph; keeps one with line breaks
    (the exit codes' table) as it is written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,  # `systemctl is-active` stays whole
        )


def add_netns(p: argparse.ArgumentParser) -> None:
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


def _report_json(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help='print the report as JSON on stdout: {"changes": [...], "notes": [...]}',
    )


def new_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """A top-level parser: wrapped description, the exit codes as its epilog."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=exit_codes_epilog(),
        formatter_class=HelpFormatter,
    )


def add_command(
    sub: Any,
    name: str,
    summary: str,
    description: str | None = None,
    codes: tuple[tuple[int, str], ...] = EXIT_CODES,
) -> argparse.ArgumentParser:
    """A subcommand: `summary` in the command list, `description` and the exit codes in
    its own --help."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=exit_codes_epilog(codes),
        formatter_class=HelpFormatter,
    )
    return parser


def add_build_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, metavar="DIR", help="build directory (bpfgen compile --out)")


def add_subcommands(sub: Any) -> dict[str, argparse.ArgumentParser]:
    """Add up/sync/status/down/trace to an argparse subparsers object; their parsers by name
    (bpfgen's CLI adds sync's rebuild inputs to its parser)."""
    u = add_command(
        sub,
        "up",
        "load, pin, attach; program IPVS, notrack, sysctls",
        "Make a build directory live: load and pin, attach to the configured hooks, program "
        "IPVS and the notrack table (ipvs mode), set sysctls. Idempotent; refused before any "
        "change on bad input; rolled back on failure.",
    )
    add_build_dir(u)
    add_netns(u)
    add_cgroup(u)
    _report_json(u)

    s = add_command(
        sub,
        "sync",
        "apply service changes; sessions survive",
        "Converge the node to DIR, keeping the pinned session maps: IPVS real servers, map "
        "entries, programs replaced atomically.",
    )
    add_build_dir(s)
    add_netns(s)
    s.add_argument(
        "--reset-sessions",
        action="store_true",
        help="recreate maps whose definition changed (e.g. maxSessions); sessions are lost",
    )
    add_cgroup(s)
    _report_json(s)

    st = add_command(
        sub,
        "status",
        "attached programs, map fill, counters, IPVS; exit 3 unless converged",
        "Show what is attached, map fill, counters by name, IPVS services, and what differs "
        "from the build recorded at the last up/sync. Like `systemctl is-active`, exits 0 "
        f"only when bpfgen is up and converged, {EXIT_DIFFERS} when it is not up or has "
        "drifted.",
    )
    add_netns(st)
    st.add_argument(
        "--json",
        action="store_true",
        help="print the status as JSON on stdout (up, in_sync, differences, attached, maps, "
        "counters, ipvs_services, nft_table, ...); with --drops, one JSON object a drop",
    )
    st.add_argument(
        "--drops",
        action="store_true",
        help="instead of the status, follow bpfgen's drop notifications: one line per "
        "dropped packet (time, program, reason, tuple) until --count, --seconds or Ctrl-C; "
        "exits 0",
    )
    st.add_argument("--count", type=int, metavar="N", help="--drops: stop after N drops")
    st.add_argument("--seconds", type=float, metavar="S", help="--drops: stop after S seconds")

    d = add_command(
        sub,
        "down",
        "remove everything up created, nothing else",
        "Remove every program, pin, rule, device and sysctl change that up created, and "
        "nothing else; restore the sysctls' previous values.",
    )
    add_netns(d)
    _report_json(d)

    t = add_command(
        sub,
        "trace",
        "follow a Service's packets through the kernel: drops, routes, bpfgen's verdicts",
        "Why a Service does not answer: each packet to or from a VIP or a backend that the "
        "kernel drops (the drop reason), fails to route or to resolve, and bpfgen's own drop "
        "reasons, one line each, from every namespace. Needs bcc (Debian: python3-bpfcc).",
        trace.EXIT_CODES,
    )
    trace.add_arguments(t)
    add_netns(t)
    return {"up": u, "sync": s, "status": st, "down": d, "trace": t}


def add_cgroup(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cgroup",
        default=None,
        metavar="PATH",
        help="bpf mode, datapath.socketLB: the cgroup v2 directory the sock_addr programs "
        "attach to instead of the build's datapath.cgroup (kept once up)",
    )


def runtime_options(args: argparse.Namespace) -> Options:
    return Options(
        netns=args.netns,
        bpffs=os.environ.get("BPFGEN_BPFFS", BPFFS),
        run_dir=os.environ.get("BPFGEN_RUN_DIR", RUN_DIR),
        ipvs=os.environ.get(NO_IPVS_ENV, "") in ("", "0"),
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
    origin = {
        "journal": " [state file lost: recovered from its bpffs copy]",
        "none": " [no state record: found in the kernel]",
    }.get(info["record"], "")
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
        elif m["type"] == "BPF_MAP_TYPE_RINGBUF":
            print(f"  {m['name']:<18} {'ring':>8}   {m['max_entries']} bytes (status --drops)")
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
    if info.get("skipped"):
        unsupported = sum(bool(k.get("unsupported")) for k in info["skipped"])
        print(f"not served: {len(info['skipped'])} objects or parts skipped by the compile "
              f"({unsupported} unsupported, the rest no proxy's):")  # fmt: skip
        for k in info["skipped"]:
            part = f": {k.get('part')}" if k.get("part") else ""
            print(f"  {k.get('source')}: {k.get('object')}{part}: {k.get('reason')}")
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
    elif args.command == "trace":
        return trace.run(args, opts)
    elif args.command == "status" and args.drops:
        return drops.stream(opts, args.count, args.seconds, args.json, sys.stdout)
    elif args.command == "status":
        if args.count is not None or args.seconds is not None:
            raise InputRefused("status", ["--count and --seconds go with --drops"])
        info = status(opts)
        if args.json:
            json.dump(info, sys.stdout, indent=2)
            print()
        else:
            _print_status(info)
        return 0 if info["up"] and info["in_sync"] else EXIT_DIFFERS
    else:
        raise ValueError(f"not a runtime command: {args.command}")
    return 0


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

    ap = new_parser(
        "bpfgen-runtime",
        "The node-side verbs of bpfgen without the compiler: sync takes a build directory "
        "that is already rebuilt.",
    )
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

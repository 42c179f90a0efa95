"""`bpfgen`: a thin CLI over the library. It parses arguments and prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bpfgen import __version__
from bpfgen.errors import BpfgenError, InputError
from bpfgen.plan import BUILD_KINDS
from bpfgen_runtime.cli import (
    EXIT_BROKEN_PIPE,
    RUNTIME_COMMANDS,
    add_build_dir,
    add_cgroup,
    add_command,
    add_netns,
    add_subcommands,
    closed_pipe_safe,
    dispatch,
    new_parser,
    runtime_options,
)
from bpfgen_runtime.contract.manifest import to_json
from bpfgen_runtime.errors import RuntimeOpError

#: The compiler's exit codes (the runtime verbs': bpfgen_runtime.cli.EXIT_CODES).
COMPILER_EXIT_CODES = (
    (0, "done"),
    (1, "any other failure (clang, the verifier, I/O)"),
    (2, "bad input or usage: every problem printed as error: FILE:LINE: ...; nothing written"),
    (EXIT_BROKEN_PIPE, "stdout closed by its reader (bpfgen inspect DIR | head -1)"),
)


def _add_services(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--services",
        type=Path,
        nargs="+",
        action="extend",
        required=True,
        metavar="FILE",
        help="Service/EndpointSlice manifests (YAML or JSON; repeatable)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 2) what bpfgen does not serve: an IPv6 address, an SCTP port, a "
        "ClusterIP outside cluster.serviceCIDR, an external address:port another Service "
        "holds (default: skip it, with a notice, and serve the rest)",
    )


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--node",
        type=Path,
        required=True,
        metavar="FILE",
        help="node config (bpfgen/v1 NodeConfig)",
    )
    _add_services(p)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--build",
        choices=BUILD_KINDS,
        default=None,
        help="specialized (default): node values are C constants; generic: read from a .bss "
        "struct per packet; frozen: a const volatile .rodata struct set before load "
        "(constants to the verifier only)",
    )
    kind.add_argument(
        "--generic",
        dest="build",
        action="store_const",
        const="generic",
        help="same as --build generic",
    )


def _host_port(text: str) -> tuple[str, int]:
    """HOST:PORT ([v6]:PORT for IPv6), for a listening socket."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:9440)")
    return host.strip("[]"), int(port)


def number(text: str) -> int:
    """An integer in any base Python reads: 16384, 0x4000."""
    return int(text, 0)


def get_parser() -> argparse.ArgumentParser:
    """The whole CLI's parser (also what completions and the man page are made from)."""
    ap = new_parser(
        "bpfgen",
        "Compile a node's Service and SNAT configuration into verified eBPF, and run it on "
        "the node (up, sync, status, down).",
    )
    ap.add_argument(
        "--version", action="version", version=f"bpfgen {__version__}", help="print the version"
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = add_command(
        sub,
        "compile",
        "config -> verified build directory",
        "Plan, render, build with clang, check the objects against the plan and have the "
        "kernel's verifier accept them, then write DIR (atomically).",
        COMPILER_EXIT_CODES,
    )
    _add_inputs(c)
    c.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="build directory to (re)create"
    )
    c.add_argument("--json", action="store_true", help="print the manifest as JSON on stdout")
    c.add_argument(
        "--no-verify",
        action="store_true",
        help="do not load the objects into the kernel verifier (no root needed)",
    )
    c.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")

    p = add_command(
        sub,
        "plan",
        "print every specialization decision",
        "Print the plan: every value the build specializes, and why.",
        COMPILER_EXIT_CODES,
    )
    _add_inputs(p)
    p.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")

    i = add_command(
        sub,
        "inspect",
        "programs, sections, maps, instruction counts of a build",
        codes=COMPILER_EXIT_CODES,
    )
    add_build_dir(i)
    i.add_argument(
        "--json",
        action="store_true",
        help='print {"manifest": ..., "objects": [...]} as JSON on stdout',
    )

    r = add_command(
        sub,
        "replay",
        "run hex packets or a pcap through a build's program (test run)",
        "Run packets one after the other through a program of DIR with BPF_PROG_TEST_RUN, "
        "with shared session maps on a private bpffs: nothing on the node is touched.",
        COMPILER_EXIT_CODES,
    )
    add_build_dir(r)
    r.add_argument(
        "--program",
        required=True,
        metavar="NAME",
        help="a program of DIR by its manifest name, as `bpfgen inspect DIR` lists them "
        "(e.g. egress, svc_in)",
    )
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--hex", nargs="+", action="extend", metavar="FRAME", help="Ethernet frames in hex"
    )
    src.add_argument(
        "--pcap", type=Path, metavar="FILE", help="classic pcap file, Ethernet link type"
    )
    r.add_argument(
        "--mark",
        type=number,
        default=0,
        help="skb->mark in (tc programs; e.g. 0x4000; default 0)",
    )
    r.add_argument(
        "--json",
        action="store_true",
        help='print {"steps": [...], "counters": {...}} as JSON on stdout',
    )

    sc = add_command(
        sub,
        "schema",
        "print the node file's JSON Schema (for editors)",
        "Print the JSON Schema (draft 2020-12) of the node file: completion and inline "
        "errors in an editor with a YAML language server (a first line "
        "`# yaml-language-server: $schema=FILE`). The compiler's own checks stay the "
        "authority: exact messages with file:line, and what a schema cannot say.",
        ((0, "printed"), (1, "FILE could not be written")),
    )
    sc.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE, not stdout")

    ag = add_command(
        sub,
        "agent",
        "follow the cluster: converge the node on every Service change",
        "List and watch Services and EndpointSlices from the Kubernetes API (kubeconfig, "
        "or the in-cluster service account), and on every change (bursts settled) rebuild "
        "DIR from them and converge the node as `sync` does (`up` the first time). A bad "
        "object leaves the node as it was; the agent goes on. One line per convergence "
        "on stderr, or JSON lines on stdout with --json. Runs until SIGTERM or Ctrl-C.",
        ((0, "stopped by a signal; --once: converged"), (1, "--once: did not converge"),
         (2, "bad usage or kubeconfig")),
    )  # fmt: skip
    add_build_dir(ag)
    ag.add_argument("--node", type=Path, required=True, metavar="FILE",
                    help="node config (bpfgen/v1 NodeConfig)")  # fmt: skip
    ag.add_argument("--kubeconfig", type=Path, metavar="FILE", help="default: the in-cluster "
                    "service account, else $KUBECONFIG, else ~/.kube/config")  # fmt: skip
    ag.add_argument("--context", metavar="NAME", help="kubeconfig context (default: current)")
    ag.add_argument("--build", choices=BUILD_KINDS, default=None, help="build kind of DIR")
    ag.add_argument("--state-dir", type=Path, metavar="DIR",
                    help="where the agent keeps the manifest it compiles (default: "
                    "DIR.agent beside DIR)")  # fmt: skip
    ag.add_argument(
        "--debounce",
        type=float,
        default=0.2,
        metavar="SECONDS",
        help="a burst of changes ends after SECONDS without one (default 0.2)",
    )
    ag.add_argument(
        "--max-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="a change waits at most SECONDS for its burst to end (default 2)",
    )
    ag.add_argument(
        "--catchup",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="after endpoint changes written in place, compile and sync once the cluster "
        "has been quiet SECONDS (default 10)",
    )
    ag.add_argument(
        "--no-fast-path",
        dest="fast",
        action="store_false",
        help="every change takes the full path (compile, then sync), as with a specialized build",
    )
    ag.add_argument(
        "--resync",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="list everything again every SECONDS (default 600)",
    )
    ag.add_argument(
        "--once",
        action="store_true",
        help="converge once from a full list, then exit (node boot, scripts)",
    )
    ag.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    ag.add_argument("--metrics", type=_host_port, metavar="HOST:PORT",
                    help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. "
                    "127.0.0.1:9440; port 0: any, said in the first record)")  # fmt: skip
    add_netns(ag)
    add_cgroup(ag)

    runtime = add_subcommands(sub)  # up, sync, status, down: the node-side runtime
    # bpfgen sync rebuilds DIR from these first (bpfgen-runtime's sync takes DIR as built).
    sync = runtime["sync"]
    sync.description = (sync.description or "") + " bpfgen rebuilds DIR from --services first."
    _add_services(sync)
    sync.add_argument(
        "--node",
        type=Path,
        default=None,
        metavar="FILE",
        help="node config for the rebuild (default: the one DIR was built from; one that "
        "was read from a pipe is kept as DIR/node.yaml)",
    )
    return ap


def _cmd_compile(args: argparse.Namespace) -> int:
    from bpfgen.compiler import compile_build

    start = time.monotonic()

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.monotonic() - start:5.2f}s] {msg}", file=sys.stderr, flush=True)

    res = compile_build(
        args.node,
        args.services,
        args.out,
        build=args.build,
        verify=not args.no_verify,
        progress=progress,
        strict=args.strict,
    )
    if args.json:
        json.dump(to_json(res.manifest), sys.stdout, indent=2)
        print()
        return 0
    print(f"{res.out}: {res.build_kind} build for node {res.node_name}")
    for prog in res.manifest.programs:
        v = prog.verifier
        checked = f", verifier {v.processed_insns} processed" if v else ", not verified"
        at = ", ".join(f"{a.hook}:{a.interface}" for a in prog.attach)
        print(f"  {prog.object:<20} {prog.section:<4} {prog.insns:>5} insns{checked}  [{at}]")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from bpfgen.inputs import load_inputs
    from bpfgen.plan import make_plan

    inputs = load_inputs(args.node, args.services, args.strict)
    for notice in inputs.notices:
        print(f"notice: {notice}", file=sys.stderr)
    plan = make_plan(inputs, build=args.build)
    if args.json:
        json.dump(plan.to_dict(), sys.stdout, indent=2)
        print()
    else:
        sys.stdout.write(plan.to_text())
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from bpfgen.compiler import read_manifest
    from bpfgen.inspect import inspect_object

    model = read_manifest(args.dir / "manifest.json")
    manifest: dict[str, Any] = to_json(model)
    # One entry per object (an object may hold several programs: bpf mode's sock.bpf.o),
    # each program with its own verifier numbers; "verifier" is the first program's.
    verifier = {p["function"]: p["verifier"] for p in manifest["programs"]}
    objects = []
    for name in dict.fromkeys(p.object for p in model.programs):
        o = inspect_object(args.dir / name).to_dict()
        o["object"] = name
        for prog in o["programs"]:
            prog["verifier"] = verifier.get(prog["name"])
        o["verifier"] = o["programs"][0]["verifier"] if o["programs"] else None
        objects.append(o)
    if args.json:
        json.dump({"manifest": manifest, "objects": objects}, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"{args.dir}: bpfgen {manifest['bpfgen_version']}, {manifest['build']} build, mode "
        f"{manifest['mode']}, config {manifest['config_sha256'][:12]}, "
        f"{manifest['toolchain']['clang']}"
    )
    for o in objects:
        print(f"  {o['object']}")
        for prog in o["programs"]:
            v = prog["verifier"]
            extra = (
                f", verifier: {v['processed_insns']} processed, {v['xlated_insns']} xlated"
                if v
                else ""
            )
            print(
                f"    program {prog['name']:<22} sec {prog['section']:<4} "
                f"{prog['insns']:>5} insns{extra}"
            )
        for prog in o["subprograms"]:
            print(f"    subprog {prog['name']:<22} sec .text {prog['insns']:>5} insns")
    for g in objects[0]["globals"] if objects else []:
        if g["name"] == "bpfgen_cfg":
            print(
                f"  config: bpfgen_cfg in {g['section']} ({g['size']} bytes), "
                + ("constants to the verifier" if g["section"] == ".rodata" else "read per packet")
                + "; the runtime sets it before load"
            )
    print("  maps:")
    for m in objects[0]["maps"] if objects else []:
        print(
            f"    {m['name']:<18} type {m['type']:<2} key {m['key_size']:>2} "
            f"value {m['value_size']:>3} "
            f"max_entries {m['max_entries']}{' pinned' if m['pinned'] else ''}"
        )
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from bpfgen_runtime.replay import parse_hex, read_pcap, replay

    frames = read_pcap(args.pcap) if args.pcap else parse_hex(args.hex)
    steps, counters = replay(args.dir, args.program, frames, mark=args.mark)
    if args.json:
        json.dump(
            {"steps": [s.to_dict() for s in steps], "counters": counters}, sys.stdout, indent=2
        )
        print()
        return 0
    for s in steps:
        d = s.to_dict()
        mark = f" mark {s.mark_in:#x}->{s.mark_out:#x}" if s.mark_in != s.mark_out else ""
        out = f" -> {d['out']}" if d["changed"] else " (unchanged)"
        print(f"#{s.index} {args.program} {s.verdict}{mark}: {d['in']}{out}")
    print("counters: " + ", ".join(f"{k} {v}" for k, v in counters.items() if v))
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from bpfgen.inputs.node_schema import node_file_schema

    text = json.dumps(node_file_schema(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out.write_text(text)
    except OSError as exc:
        print(f"error: write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_runtime(args: argparse.Namespace) -> int:
    """up/status/down go straight to the runtime; sync first rebuilds DIR."""
    if args.command == "sync":
        from bpfgen.compiler import compile_build, read_manifest_inputs
        from bpfgen_runtime.node import locked

        node_file, build = read_manifest_inputs(args.dir / "manifest.json")
        node = args.node or node_file
        # Atomic: bad input exits 2 and leaves DIR and the node as they were. The
        # namespace's lock is held from the rebuild to the end of the sync, so two syncs
        # do not apply each other's builds.
        with locked(runtime_options(args), "sync"):  # refuses a bad --netns first
            compile_build(node, args.services, args.dir, build=build, strict=args.strict,
                          progress=_notices_only)  # fmt: skip
            return dispatch(args)
    return dispatch(args)


def _notices_only(message: str) -> None:
    """sync's rebuild says what it skipped, and nothing else."""
    if message.startswith("notice: "):
        print(message, file=sys.stderr, flush=True)


def _cmd_agent(args: argparse.Namespace) -> int:
    from bpfgen.agent import AgentConfig, run_agent
    from bpfgen.kube import ApiRefused

    build_dir = Path(args.dir).absolute()
    config = AgentConfig(
        node=args.node,
        build_dir=build_dir,
        state_dir=args.state_dir or build_dir.with_name(f"{build_dir.name}.agent"),
        # A `status` or `sync` by hand holds the lock for moments: wait for it.
        opts=dataclasses.replace(runtime_options(args), lock_wait=max(args.wait, 30.0)),
        build=args.build,
        debounce=args.debounce,
        max_delay=max(args.max_delay, args.debounce),
        resync=args.resync,
        catchup=args.catchup,
        fast=args.fast,
        once=args.once,
        ready_timeout=60.0 if args.once else 1e9,
    )
    try:
        return run_agent(config, args.kubeconfig, args.context, args.json, args.metrics)
    except ApiRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


COMMANDS = {
    "agent": _cmd_agent,
    "compile": _cmd_compile,
    "plan": _cmd_plan,
    "inspect": _cmd_inspect,
    "replay": _cmd_replay,
    "schema": _cmd_schema,
}
COMMANDS.update({name: _cmd_runtime for name in RUNTIME_COMMANDS})


def main(argv: Sequence[str] | None = None) -> int:
    args = get_parser().parse_args(argv)

    def run() -> int:
        try:
            return COMMANDS[args.command](args)
        except InputError as e:
            for problem in e.problems:
                print(f"error: {problem}", file=sys.stderr)
            return e.exit_code
        except BpfgenError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code
        except RuntimeOpError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.exit_code  # 2 when the runtime refused bad input, else 1

    return closed_pipe_safe(run)


if __name__ == "__main__":
    sys.exit(main())

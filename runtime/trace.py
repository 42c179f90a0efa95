"""`bpfgen trace`: why does my Service not answer? Its packets followed through the kernel.

    bpfgen trace --netns node1 --vip 198.18.128.10 [--port 80] [--count N] [--seconds S] [--json]
    bpfgen trace --backend 198.19.1.21 ...

The addresses followed: the VIP and, when bpfgen is up in the namespace, the backends
of its frontends at that address (so a packet is seen before and after DNAT), or a
backend and the frontends it serves; with --port, the frontend and backend ports
of those frontends. One line per event, from every network namespace (a backend pod
is in its own):

- `drop`: the kernel freed the packet (skb:kfree_skb), with the kernel function and
  the drop reason by its name in the running kernel's BTF (`enum skb_drop_reason`);
  a packet bpfgen's tc program dropped is a TC_INGRESS drop on a bpfgen device, and
  carries the program's own reason (`bpfgen: {"drop_...": 1}`);
- `fib`: a route lookup for the packet failed (fib:fib_table_lookup, errno name);
- `neigh`: a next hop's neighbour entry failed (no ARP answer);
- `bpfgen`: a drop counter of bpfgen's programs moved (names starting `drop_` or
  `reject_` in the build's counters) with no drop above to carry it: the program
  answered itself (a RST or ICMP for a Service without endpoints) or dropped at XDP,
  where the kernel frees no skb. The counters carry no tuple: any packet may have
  moved them.

The kernel side is bcc (tracer.py, optional: python3-bpfcc); the counters are the
pinned `bpfgen_counters`, read as `status` reads them.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

from . import netns, pins
from .builddir import POD_SHORTCUT, Build, Frontend, InputRefused, read_build
from .contract import Counter
from .kbtf import KernelBtf
from .node import COUNTERS_MAP, Options, status
from .tracer import OP, RawEvent, Tracer

#: What the tracer looks at per poll, and how long a counter delta waits for the drop
#: that carries it (polls) before it is reported on its own.
POLL_MS = 100
CARRY_POLLS = 2
#: The kernel's drop reasons when a tc program returns TC_ACT_SHOT.
TC_DROP_REASONS = ("TC_INGRESS", "TC_EGRESS")
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp"}
REASON_PREFIX = "SKB_DROP_REASON_"

EXIT_INTERRUPTED = 130  # Ctrl-C before the tracer was attached, as a shell shows SIGINT
EXIT_CODES = (
    (0, "done: --count events, --seconds elapsed, or Ctrl-C"),
    (1, "any other failure (the message names the operation and the errno)"),
    (2, "bad input, or bcc or the kernel's support missing (the message says what to install)"),
    (EXIT_INTERRUPTED, "Ctrl-C while the tracer was being compiled and attached"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--vip", metavar="ADDR", help="a Service address (ClusterIP, external, "
                      "LoadBalancer IP, or a node address for its NodePorts)")  # fmt: skip
    what.add_argument("--backend", metavar="ADDR", help="a backend (endpoint) address")
    p.add_argument("--port", type=int, metavar="PORT",
                   help="only this port (and its frontends' other ports): TCP and UDP")  # fmt: skip
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")
    p.add_argument("--seconds", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--json", action="store_true",
                   help="one JSON object a line: time, kind, netns, device, where, reason, "
                   "bpfgen, protocol, src, dst, count")  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What to follow, and bpfgen's side of it."""

    label: str  # what the user asked for, for the progress line
    addresses: tuple[str, ...]
    ports: tuple[int, ...]
    netns_inode: int | None  # bpfgen's namespace
    counters_pin: str | None
    counter_names: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass
class TraceEvent:
    time: float  # seconds since the epoch
    kind: str  # drop | fib | neigh | bpfgen
    netns: str | None
    device: str | None
    where: str
    reason: str
    protocol: str | None = None
    src: str | None = None
    dst: str | None = None
    bpfgen: dict[str, int] | None = None
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.time, UTC).isoformat(timespec="microseconds")
        return {"time": stamp, "kind": self.kind, "netns": self.netns, "device": self.device,
                "where": self.where, "reason": self.reason, "bpfgen": self.bpfgen,
                "protocol": self.protocol, "src": self.src, "dst": self.dst,
                "count": self.count}  # fmt: skip

    def line(self) -> str:
        clock = datetime.fromtimestamp(self.time).strftime("%H:%M:%S.%f")
        at = "/".join(x for x in (self.netns, self.device) if x) or "-"
        reason = self.reason
        if self.bpfgen:
            reason += " (bpfgen: " + ", ".join(f"{k} +{v}" for k, v in self.bpfgen.items()) + ")"
        if self.kind == "bpfgen":
            reason += f" +{self.count}"
            tuple_ = "(counters carry no tuple)"
        else:
            tuple_ = f"{self.protocol or 'ip'} {self.src or '*'} > {self.dst}"
        return f"{clock} {self.kind:<6} {at:<28} {self.where:<24} {reason}  {tuple_}"


def _address(flag: str, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise InputRefused(OP, [f"{flag} {text!r} is not an IPv4 address"]) from None


def _frontends_for(build: Build, vip: str | None, backend: str | None,
                   port: int | None) -> list[Frontend]:  # fmt: skip
    out = []
    for f in build.frontends:
        if f.kind == POD_SHORTCUT:  # no address of its own: found as its Service's
            continue
        at = [f.address] if f.address is not None else list(build.node.addresses)
        if vip is not None and vip in at and port in (None, f.port):
            out.append(f)
        if backend is not None and any(
            b.address == backend and port in (None, b.port, f.port) for b in f.backends
        ):
            out.append(f)
    return out


def resolve(opts: Options, vip: str | None, backend: str | None, port: int | None) -> Target:
    """The addresses and ports to follow; refused (exit 2) on bad input, including a VIP
    that bpfgen is up without."""
    flag, addr = ("--vip", vip) if vip is not None else ("--backend", backend)
    assert addr is not None  # argparse: one of the two is required
    addr = _address(flag, addr)
    if port is not None and not 1 <= port <= 65535:
        raise InputRefused(OP, [f"--port {port} is not a port (1-65535)"])
    label = f"{flag} {addr}" + (f" --port {port}" if port is not None else "")
    where = opts.label
    info = status(opts)  # refuses a missing namespace; takes the lock only to read
    notes = [f"bpfgen is not up in {where}: kernel events only, no backends, no counters"]
    if not info["up"] or not info.get("build_dir"):
        return Target(label, (addr,), (port,) if port else (), None, None, notes=tuple(notes))
    try:
        build = read_build(info["build_dir"])
    except InputRefused as exc:
        notes = [f"{exc}: kernel events only for {addr}"]
        return Target(label, (addr,), (port,) if port else (), None, None, notes=tuple(notes))
    frontends = _frontends_for(build, addr if vip else None, addr if backend else None, port)
    if not frontends:
        known = ", ".join(build.frontend_addresses()) or "none"
        what = "a frontend" if vip else "a backend"
        raise InputRefused(OP, [
            f"{flag} {addr}" + (f" --port {port}" if port else "") + f" is not {what} of the "
            f"build up in {where} ({info['build_dir']}); its VIPs: {known}"
        ])  # fmt: skip
    addresses = {addr}
    ports: set[int] = set()
    for f in frontends:
        addresses |= {f.address} if f.address else set(build.node.addresses)
        addresses |= {b.address for b in f.backends}
        ports |= {f.port} | {b.port for b in f.backends}
    counters_pin = os.path.join(info["pin_dir"], COUNTERS_MAP)
    return Target(
        label, tuple(sorted(addresses, key=ipaddress.IPv4Address)),
        tuple(sorted(ports)) if port is not None else (),
        _inode(opts.netns), counters_pin if os.path.exists(counters_pin) else None,
        build.manifest.counters,
    )  # fmt: skip


def _inode(name: str | None) -> int:
    path = os.path.join(netns.NETNS_DIR, name) if name else "/proc/thread-self/ns/net"
    return os.stat(path).st_ino


class NetnsNames:
    """Namespace inode -> name (/run/netns/NAME, "root"), looked up again for a new one."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}
        self._scan()

    def _scan(self) -> None:
        names = {_inode(None): "root"}
        try:
            for name in os.listdir(netns.NETNS_DIR):
                try:
                    names[_inode(name)] = name
                except OSError:
                    continue  # deleted meanwhile
        except FileNotFoundError:
            pass
        self._names = names

    def __call__(self, inode: int) -> str | None:
        if not inode:
            return None
        if inode not in self._names:
            self._scan()
            self._names.setdefault(inode, f"netns:{inode}")
        return self._names[inode]


def _drop_or_reject(name: str) -> bool:
    """A counter that says a packet was dropped (a drop reason) or answered instead."""
    try:
        counter = Counter(name)
    except ValueError:  # a counter this runtime does not know: a newer build's
        return name.startswith(("drop_", "reject_"))
    return counter.is_drop or counter.is_reject


class Counters:
    """bpfgen's drop counters (summed over CPUs); `moved()` gives what changed since the
    last call."""

    def __init__(self, pin: str, names: Iterable[str]) -> None:
        self._map = pins.PinnedMap(pin)
        self._names = [(i, n) for i, n in enumerate(names) if _drop_or_reject(n)]
        self._last = self._read()

    def _read(self) -> dict[str, int]:
        out = {}
        for i, name in self._names:
            values = self._map.lookup_percpu(i.to_bytes(4, "little")) or []
            out[name] = sum(int.from_bytes(v[:8], "little") for v in values)
        return out

    def moved(self) -> dict[str, int]:
        now = self._read()
        delta = {n: v - self._last.get(n, 0) for n, v in now.items() if v != self._last.get(n, 0)}
        self._last = now
        return delta

    def close(self) -> None:
        self._map.close()


class Decoder:
    """RawEvent -> TraceEvent: names for reasons, places and namespaces."""

    def __init__(self, tracer: Tracer, reasons: dict[int, str]) -> None:
        self._tracer = tracer
        self._reasons = reasons
        self._netns = NetnsNames()
        self._offset = time.time() - time.monotonic()

    def __call__(self, e: RawEvent) -> TraceEvent:
        proto = PROTOCOLS.get(e.proto, str(e.proto)) if e.proto else None
        ports = e.proto in (6, 17)
        src = (f"{e.saddr}:{e.sport}" if ports else e.saddr) or None
        dst = f"{e.daddr}:{e.dport}" if ports else e.daddr
        stamp = self._offset + e.ts_ns / 1e9
        if e.kind == "drop":
            reason = self._reasons.get(e.reason, str(e.reason)).removeprefix(REASON_PREFIX)
            return TraceEvent(stamp, "drop", self._netns(e.netns), e.device or None,
                              self._tracer.ksym(e.location), reason, proto, src, dst)  # fmt: skip
        if e.kind == "fib":
            reason = errno.errorcode.get(-e.reason, str(e.reason))
            return TraceEvent(stamp, "fib", None, None, f"fib_table_lookup table {e.location}",
                              reason, proto, src, dst)  # fmt: skip
        return TraceEvent(stamp, "neigh", None, e.device or None, f"neighbour {e.daddr}",
                          "NUD_FAILED", None, None, e.daddr)  # fmt: skip


class Attribution:
    """bpfgen's counter deltas onto the drops of its own tc programs: a delta waits up to
    CARRY_POLLS polls for such a drop, then is reported on its own."""

    def __init__(self, netns_name: str | None) -> None:
        self._netns = netns_name
        self._waiting: list[tuple[int, dict[str, int]]] = []  # (age, delta)

    def __call__(self, events: list[TraceEvent], moved: dict[str, int]) -> list[TraceEvent]:
        if moved:
            self._waiting.append((0, moved))
        ours = [e for e in events if e.kind == "drop" and e.reason in TC_DROP_REASONS
                and e.netns == self._netns]  # fmt: skip
        if ours and self._waiting:
            total: dict[str, int] = {}
            for _, delta in self._waiting:
                for name, n in delta.items():
                    total[name] = total.get(name, 0) + n
            for e in ours:
                e.bpfgen = total
            self._waiting = []
        out = list(events)
        keep = []
        for age, delta in self._waiting:
            if age + 1 < CARRY_POLLS:
                keep.append((age + 1, delta))
                continue
            now = time.time()
            out += [TraceEvent(now, "bpfgen", self._netns, None, COUNTERS_MAP, name, count=n)
                    for name, n in delta.items()]  # fmt: skip
        self._waiting = keep
        return out


@dataclass
class Limits:
    count: int | None
    seconds: float | None
    printed: int = 0
    start: float = field(default_factory=time.monotonic)

    def done(self) -> bool:
        if self.count is not None and self.printed >= self.count:
            return True
        return self.seconds is not None and time.monotonic() - self.start >= self.seconds


def _print(event: TraceEvent, as_json: bool, out: TextIO) -> None:
    out.write((json.dumps(event.to_dict()) if as_json else event.line()) + "\n")
    out.flush()


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, opts: Options) -> int:
    """The verb: resolve, load the tracer, print events until a limit, Ctrl-C or SIGTERM
    (`timeout 60 bpfgen trace ...` ends as cleanly as Ctrl-C).

    SIGINT is caught here too, not left to Python's default: a process started with
    SIGINT ignored (a non-interactive shell's `cmd &`, some CI runners) inherits SIG_IGN
    and Python keeps it, so `kill -INT` would never stop the trace (as tcpdump, we stop)."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, opts)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args: argparse.Namespace, opts: Options) -> int:
    if args.count is not None and args.count < 1:
        raise InputRefused(OP, [f"--count {args.count}: give 1 or more"])
    if args.seconds is not None and args.seconds <= 0:
        raise InputRefused(OP, [f"--seconds {args.seconds}: give a positive duration"])
    err = sys.stderr
    target = resolve(opts, args.vip, args.backend, args.port)
    notes = list(target.notes)
    try:
        tracer = Tracer(target.addresses, target.ports, notes)
    except KeyboardInterrupt:
        print("bpfgen trace: interrupted while loading the tracer", file=err)
        return EXIT_INTERRUPTED
    counters = Counters(target.counters_pin, target.counter_names) if target.counters_pin else None
    try:
        with KernelBtf() as btf:
            reasons = btf.enum("skb_drop_reason")
        decode = Decoder(tracer, reasons)
        attribute = Attribution(NetnsNames()(target.netns_inode or 0))
        for note in notes:
            print(f"note: {note}", file=err)
        ports = f" ports {','.join(map(str, target.ports))}" if target.ports else ""
        ours = f"; bpfgen's counters in {opts.label}" if counters else ""
        what = f"{', '.join(target.addresses)}{ports}"
        print(f"bpfgen trace {target.label}: following {what} in every namespace (drops, "
              f"failed route lookups, neighbours{ours})", file=err)  # fmt: skip
        limits = Limits(args.count, args.seconds)
        try:
            # The readiness line is inside the try: a Ctrl-C sent as soon as it is
            # read can arrive before the loop starts (seen in CI).
            print("waiting for packets (Ctrl-C to stop)", file=err, flush=True)
            while not limits.done():
                events = [decode(e) for e in tracer.poll(POLL_MS)]
                moved = counters.moved() if counters else {}
                for event in attribute(events, moved):
                    _print(event, args.json, sys.stdout)
                    limits.printed += 1
                    if limits.done():
                        break
        except KeyboardInterrupt:
            pass
        lost = f", {tracer.lost} lost (the tracer's buffer was full)" if tracer.lost else ""
        elapsed = time.monotonic() - limits.start
        print(f"bpfgen trace: {limits.printed} events in {elapsed:.1f} s{lost}", file=err)
    except KeyboardInterrupt:
        print("bpfgen trace: interrupted before tracing started", file=err)
        return EXIT_INTERRUPTED
    finally:
        tracer.close()
        if counters:
            counters.close()
    return 0

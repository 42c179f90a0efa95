"""`python -m bench.port_alloc`: SNAT port-allocation quality, measured in the kernel.

For each SNAT range size, compiles a node config whose `snat.portRange` has that
many ports, loads its egress program (BPF_PROG_TEST_RUN, no device, nothing
pinned) and, for each target occupancy o, measures how new flows towards ONE
remote endpoint get a port:

1. Occupy: the session maps are emptied, then round(o * ports) ports, chosen at
   random, are taken for that remote endpoint by writing live sessions straight
   into the maps: a reverse entry (remote addr, nat addr, remote port, nat port)
   and its forward entry, `last_seen` = now (CLOCK_MONOTONIC, as
   bpf_ktime_get_ns), flags SEEN_REPLY (established timeout), so none is stale.
   Mapping is endpoint-dependent, so occupancy is per remote addr:port: the
   same ports towards another remote would not count.
2. Measure: N new flows, each a TCP SYN that egress must SNAT without a mark
   (BPF_PROG_TEST_RUN here cannot set skb->mark): a hairpin packet, source ==
   destination == the remote pod, a new source port per flow; so every flow has
   the same reply endpoint. Success: TC_ACT_OK and the source rewritten to a
   node address and a port of the range; failure: TC_ACT_SHOT, counted as
   `drop_exhausted`. Probes: 1 + the index i of the allocated port among the
   spec's candidates `portMin + mix32(h + i) mod portCount` (docs/datapath.md,
   "Hashing"), recomputed here; 1 means the first candidate was free.
3. Each measured flow's session is deleted right after it is checked, so every
   flow sees exactly the target occupancy (flows do not fill the range).

Every attempt is also checked against the spec: the kernel must take exactly
the first candidate that is not occupied (so the Python hash reproduces the
kernel's bit for bit), fail exactly when all 128 are occupied, leave a dropped
packet untouched, emit valid checksums and index the session both ways. Any
disagreement is reported and the exit status is 1.

With independent uniform candidates, a new flow fails with probability o^128
(the theory columns); the expected probes of a success are
sum(k (1-o) o^(k-1), k = 1..128) / (1 - o^128).

Prints one Markdown table per range; --json for the raw figures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import random
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from bpfgen.compiler import compile_build
from bpfgen.plan import COUNTER_NAMES
from bpfgen_runtime import BPF_NOEXIST, LoadedObject, open_object, test_run
from bpfgen_runtime.contract import layouts

SNAT_PROBES = 128  # BPFGEN_SNAT_PROBES (templates/include/bpfgen_nat.h); spec: i = 0 .. 127
SESSION_SEEN_REPLY = 0x01  # BPFGEN_SESSION_SEEN_REPLY (templates/include/bpfgen_types.h)
TC_ACT_OK = 0
TC_ACT_SHOT = 2
ETH_P_IP = 0x0800
IPPROTO_TCP = 6
TCP_SYN = 0x02
ETH_HLEN = 14
IP_HLEN = 20

NODE_ADDRESS = IPv4Address("198.18.0.2")
REMOTE = IPv4Address("198.19.1.10")  # the one remote endpoint: a pod reaching itself (hairpin)
REMOTE_PORT = 8080
PREFILL_BASE = IPv4Address("198.19.64.0")  # sources of the pre-filled sessions (cluster pods)
PREFILL_SPORT = 40000
MAX_PORTS = 32768
DEFAULT_RANGES = (1024, 10000)
DEFAULT_OCCUPANCIES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.99)
DEFAULT_FLOWS = 10000

NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node:
  name: node-bench
  addresses: [{node_address}]
  podCIDR: 198.19.1.0/24
cluster:
  podCIDR: 198.19.0.0/16
  serviceCIDR: 198.18.128.0/17
  nodePortRange: [30000, 32767]
interfaces:
  - {{name: eth0, role: uplink, hook: tc}}
  - {{name: "veth*", role: pods}}
snat:
  portRange: [{first}, {last}]
  maxSessions: 65536
"""

# One TCP service, so that the TCP path is compiled in.
SERVICES_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: bench}
spec:
  type: ClusterIP
  clusterIP: 198.18.128.20
  clusterIPs: [198.18.128.20]
  ports:
  - {name: http, port: 80, protocol: TCP, targetPort: 8080}
"""


# ----------------------------------------------------------------------------- the spec's hash


def mix32(h: int) -> int:
    """murmur3's 32-bit finalizer (docs/datapath.md, "Hashing")."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def _le(addr: IPv4Address) -> int:
    return int.from_bytes(addr.packed, "little")


def _le16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


@dataclass(frozen=True)
class Flow:
    """An original (pre-SNAT) tuple, host-order ports."""

    saddr: IPv4Address
    daddr: IPv4Address
    sport: int
    dport: int
    proto: int = IPPROTO_TCP

    def hash(self, seed: int) -> int:
        """tuple_hash: addresses and ports as a little-endian CPU loads them from the packet."""
        h = mix32(seed ^ _le(self.saddr))
        h = mix32(h ^ _le(self.daddr))
        h = mix32(h ^ ((_le16(self.sport) << 16) | _le16(self.dport)))
        return mix32(h ^ self.proto)

    def key(self) -> bytes:
        """The forward (bpfgen_snat_v4) key."""
        return _tuple4(self.saddr, self.daddr, self.sport, self.dport, self.proto)

    def reply_key(self, nat_addr: IPv4Address, nat_port: int) -> bytes:
        """The reverse (bpfgen_rsnat_v4) key of this flow translated to nat_addr:nat_port."""
        return _tuple4(self.daddr, nat_addr, self.dport, nat_port, self.proto)


def _tuple4(saddr: IPv4Address, daddr: IPv4Address, sport: int, dport: int, proto: int) -> bytes:
    return layouts.to_bytes(
        layouts.Tuple4(
            saddr=layouts.be32(saddr),
            daddr=layouts.be32(daddr),
            sport=layouts.be16(sport),
            dport=layouts.be16(dport),
            proto=proto,
        )
    )


@dataclass(frozen=True)
class PortRange:
    first: int
    count: int

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def candidates(self, h: int) -> list[int]:
        """The ports a new flow of hash h tries, in order (repeats possible)."""
        return [self.first + mix32(h + i) % self.count for i in range(SNAT_PROBES)]

    @classmethod
    def of_size(cls, count: int) -> PortRange:
        """A range of `count` ports clear of the NodePort range 30000-32767."""
        if not 16 <= count <= MAX_PORTS:
            raise ValueError(f"a SNAT range of {count} ports: 16 to {MAX_PORTS} are supported")
        return cls(20000 if count <= 10000 else 65536 - MAX_PORTS, count)


def failure_odds(occupancy: float) -> float:
    """P(all SNAT_PROBES independent uniform candidates are taken)."""
    return float(occupancy**SNAT_PROBES)


def expected_probes(occupancy: float) -> float:
    """E[probes | success] for independent uniform candidates."""
    o = occupancy
    if o >= 1.0:
        return math.nan
    total = sum(k * (1 - o) * o ** (k - 1) for k in range(1, SNAT_PROBES + 1))
    return float(total / (1 - o**SNAT_PROBES))


# ----------------------------------------------------------------------------- packets


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _l4_csum(ip: bytes, l4: bytes) -> int:
    pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
    return _csum(pseudo + l4)


def tcp_syn(flow: Flow, ident: int = 1) -> bytes:
    """An Ethernet frame carrying a bare TCP SYN of `flow`, checksums valid."""
    eth = bytes.fromhex("020000000001020000000002") + struct.pack("!H", ETH_P_IP)
    tcp = struct.pack("!HHIIBBHHH", flow.sport, flow.dport, 1, 0, 5 << 4, TCP_SYN, 64240, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, IP_HLEN + len(tcp), ident & 0xFFFF, 0x4000, 64, flow.proto, 0,
        flow.saddr.packed, flow.daddr.packed,
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", ~_csum(ip) & 0xFFFF) + ip[12:]
    tcp = tcp[:16] + struct.pack("!H", ~_l4_csum(ip, tcp) & 0xFFFF) + tcp[18:]
    return eth + ip + tcp


def checksum_problems(frame: bytes) -> list[str]:
    """What is wrong with the IPv4 and TCP checksums of an Ethernet frame from tcp_syn."""
    ip = frame[ETH_HLEN : ETH_HLEN + IP_HLEN]
    tcp = frame[ETH_HLEN + IP_HLEN :]
    problems = []
    if _csum(ip) != 0xFFFF:
        problems.append("bad IPv4 header checksum")
    if _l4_csum(ip, tcp) != 0xFFFF:
        problems.append("bad TCP checksum")
    return problems


def frame_source(frame: bytes) -> tuple[IPv4Address, int]:
    off = ETH_HLEN + IP_HLEN
    return IPv4Address(frame[ETH_HLEN + 12 : ETH_HLEN + 16]), int.from_bytes(
        frame[off : off + 2], "big"
    )


def _without_source(frame: bytes) -> bytes:
    """The frame with the fields SNAT may change (source addr/port, checksums) blanked."""
    ip, l4 = ETH_HLEN, ETH_HLEN + IP_HLEN
    b = bytearray(frame)
    for start, end in ((ip + 10, ip + 16), (l4, l4 + 2), (l4 + 16, l4 + 18)):
        b[start:end] = bytes(end - start)
    return bytes(b)


# ----------------------------------------------------------------------------- the harness


@dataclass(frozen=True)
class Attempt:
    """One new flow sent through egress, and what the spec predicts for it."""

    flow: Flow
    retval: int
    frame_in: bytes
    frame_out: bytes
    duration_ns: int
    candidates: tuple[int, ...]
    nat_addr_expected: IPv4Address
    predicted_port: int | None  # the first candidate not occupied; None: all are
    nat: tuple[IPv4Address, int] | None  # the translated source, None when dropped

    @property
    def success(self) -> bool:
        return self.nat is not None

    @property
    def probes(self) -> int:
        """Candidates tried: 1 + index of the allocated port; SNAT_PROBES for a failure."""
        if self.nat is None:
            return SNAT_PROBES
        port = self.nat[1]
        return self.candidates.index(port) + 1 if port in self.candidates else 0


class PortAllocHarness:
    """The maps and egress program of one loaded build, and the spec's view of them."""

    def __init__(
        self,
        obj: LoadedObject,
        ports: PortRange,
        seed: int,
        node_addrs: Sequence[IPv4Address],
        build_dir: Path,
    ) -> None:
        self.obj = obj
        self.program = obj.programs["bpfgen_egress"]
        self.snat = obj.maps["bpfgen_snat_v4"]
        self.rsnat = obj.maps["bpfgen_rsnat_v4"]
        self.counters_map = obj.maps["bpfgen_counters"]
        self.ports = ports
        self.seed = seed
        self.node_addrs = tuple(node_addrs)
        self.build_dir = build_dir
        self.remote = REMOTE
        self.remote_port = REMOTE_PORT
        self._ident = 0

    # -- state

    def clear(self) -> None:
        """Empty both session maps."""
        for m in (self.snat, self.rsnat):
            while keys := list(m.keys()):
                for k in keys:
                    m.delete(k)

    def occupy(self, ports: Iterable[int]) -> None:
        """Live sessions holding `ports` on every node address towards the remote endpoint.

        Each session's source is a distinct pod address from PREFILL_BASE on (call it
        on empty maps: see clear).
        """
        j = 0
        now = time.monotonic_ns()
        for port in ports:
            for addr in self.node_addrs:
                orig = Flow(PREFILL_BASE + j, self.remote, PREFILL_SPORT, self.remote_port)
                j += 1
                rval = layouts.RsnatEntry(
                    addr=layouts.be32(orig.saddr), port=layouts.be16(orig.sport)
                )
                fval = layouts.SnatEntry(
                    last_seen_ns=now,
                    nat_addr=layouts.be32(addr),
                    nat_port=layouts.be16(port),
                    flags=SESSION_SEEN_REPLY,
                )
                self.rsnat.update(orig.reply_key(addr, port), layouts.to_bytes(rval), BPF_NOEXIST)
                self.snat.update(orig.key(), layouts.to_bytes(fval), BPF_NOEXIST)

    def counters(self) -> dict[str, int]:
        out = {}
        for i, name in enumerate(COUNTER_NAMES):
            values = self.counters_map.lookup_percpu(i.to_bytes(4, "little")) or []
            out[name] = sum(int.from_bytes(v, "little") for v in values)
        return out

    def flow(self, sport: int) -> Flow:
        """A new hairpin flow from source port `sport`: egress SNATs it unmarked."""
        return Flow(self.remote, self.remote, sport, self.remote_port)

    def taken_ports(self, nat_addr: IPv4Address) -> set[int]:
        """Ports of nat_addr held towards the remote endpoint, read from the reverse map."""
        taken = set()
        for k in self.rsnat.keys():  # noqa: SIM118  (a BPF map: no __iter__)
            t = layouts.Tuple4.from_buffer_copy(k)
            if (
                bytes(t.saddr) == self.remote.packed
                and bytes(t.daddr) == nat_addr.packed
                and int.from_bytes(bytes(t.sport), "big") == self.remote_port
                and t.proto == IPPROTO_TCP
            ):
                taken.add(int.from_bytes(bytes(t.dport), "big"))
        return taken

    # -- one flow

    def send(self, flow: Flow, occupied: set[int]) -> Attempt:
        """Send the flow's SYN; `occupied`: the ports held towards its remote endpoint."""
        self._ident += 1
        frame = tcp_syn(flow, self._ident)
        h = flow.hash(self.seed)
        # Port preservation first (docs/datapath.md): the flow's own port when in range and free.
        kept = (flow.sport,) if flow.sport in self.ports else ()
        candidates = kept + tuple(self.ports.candidates(h))
        predicted = next((p for p in candidates if p not in occupied), None)
        result = test_run(self.program, frame)
        nat = None
        if result.retval == TC_ACT_OK and result.data != frame:
            nat = frame_source(result.data)
        return Attempt(
            flow=flow,
            retval=result.retval,
            frame_in=frame,
            frame_out=result.data,
            duration_ns=result.duration_ns,
            candidates=candidates,
            nat_addr_expected=self.node_addrs[h % len(self.node_addrs)],
            predicted_port=predicted,
            nat=nat,
        )

    def check(self, a: Attempt) -> list[str]:
        """Every way the attempt disagrees with the spec; empty when it agrees."""
        problems: list[str] = []
        fwd = self.snat.lookup(a.flow.key())
        if a.nat is None:
            if a.retval != TC_ACT_SHOT:
                problems.append(f"retval {a.retval}, packet unchanged: neither SNAT nor drop")
            if a.frame_out != a.frame_in:
                problems.append("dropped packet was modified")
            if fwd is not None:
                problems.append("dropped flow has a forward entry")
            if a.predicted_port is not None:
                problems.append(f"dropped, but candidate {a.predicted_port} was free")
            return problems
        addr, port = a.nat
        if port not in self.ports:
            problems.append(f"port {port} outside the range {self.ports.first}-{self.ports.last}")
        if port not in a.candidates:
            problems.append(f"port {port} is not one of the {SNAT_PROBES} spec candidates")
        if port != a.predicted_port:
            problems.append(f"port {port}, the spec's first free candidate is {a.predicted_port}")
        if addr != a.nat_addr_expected:
            problems.append(f"nat address {addr}, the spec says {a.nat_addr_expected}")
        if _without_source(a.frame_out) != _without_source(a.frame_in):
            problems.append("fields other than the source and checksums changed")
        problems += checksum_problems(a.frame_out)
        rev = self.rsnat.lookup(a.flow.reply_key(addr, port))
        want = layouts.RsnatEntry(addr=layouts.be32(a.flow.saddr), port=layouts.be16(a.flow.sport))
        if rev is None or rev[:6] != layouts.to_bytes(want)[:6]:
            problems.append("reverse entry missing or not pointing at the flow")
        if fwd is None:
            problems.append("no forward entry")
        else:
            e = layouts.SnatEntry.from_buffer_copy(fwd)
            if bytes(e.nat_addr) != addr.packed or int.from_bytes(bytes(e.nat_port), "big") != port:
                problems.append("forward entry does not hold the translated source")
        return problems

    def forget(self, a: Attempt) -> None:
        """Delete the session an attempt created (no-op for a drop)."""
        if a.nat is not None:
            self.rsnat.delete(a.flow.reply_key(*a.nat))
        self.snat.delete(a.flow.key())


@contextlib.contextmanager
def open_harness(
    port_count: int, workdir: Path, *, generic: bool = False
) -> Iterator[PortAllocHarness]:
    """Compile a node config with a range of `port_count` ports and load its egress object."""
    ports = PortRange.of_size(port_count)
    tag = f"{port_count}{'-generic' if generic else ''}"
    node = workdir / f"node-{tag}.yaml"
    node.write_text(NODE_YAML.format(node_address=NODE_ADDRESS, first=ports.first, last=ports.last))
    services = workdir / "services.yaml"
    services.write_text(SERVICES_YAML)
    out = compile_build(node, [services], workdir / f"build-{tag}", generic=generic).out
    # What the runtime reads: the build directory (the compile result has no plan
    # when the build cache answered).
    manifest = json.loads((out / "manifest.json").read_text())
    # spec (docs/datapath.md "Hashing"): the first 32 bits of the node file's sha256
    seed = int(hashlib.sha256(node.read_bytes()).hexdigest()[:8], 16)
    initial = {}
    if manifest["runtime_config"] is not None:  # generic build: the config in .bss
        rc = manifest["runtime_config"]
        initial[rc["map"]] = bytes.fromhex(rc["hex"])
    map_init = json.loads((out / manifest["map_init"]).read_text()) if manifest["map_init"] else {}
    with open_object(out / "egress.bpf.o", initial_values=initial, log_level=0) as obj:
        for name, entries in sorted(map_init.items()):
            for k, v in entries:
                obj.maps[name].update(bytes.fromhex(k), bytes.fromhex(v))
        yield PortAllocHarness(obj, ports, seed, [NODE_ADDRESS], out)


# ----------------------------------------------------------------------------- the measurement


def failure_upper_bound(failures: int, attempts: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound of the failure rate (0 failures: 1 - a^(1/n))."""
    if attempts == 0 or failures >= attempts:
        return 1.0
    alpha = 1 - confidence

    def cdf(p: float) -> float:  # P(X <= failures), X ~ Binomial(attempts, p)
        log_p, log_q = math.log(p), math.log1p(-p)
        terms = [
            math.lgamma(attempts + 1)
            - math.lgamma(k + 1)
            - math.lgamma(attempts - k + 1)
            + k * log_p
            + (attempts - k) * log_q
            for k in range(failures + 1)
        ]
        top = max(terms)
        return math.exp(top) * sum(math.exp(t - top) for t in terms)

    lo, hi = failures / attempts, 1.0
    for _ in range(60):  # cdf falls as p grows: bisect for cdf(p) = alpha
        mid = (lo + hi) / 2
        if mid <= 0 or cdf(mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty sequence."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Level:
    """The figures of one occupancy level."""

    ports: int
    target: float
    occupied: int
    attempts: int = 0
    successes: int = 0
    probes: list[int] = field(default_factory=list)  # of successes
    durations_ns: list[int] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def occupancy(self) -> float:
        return self.occupied / self.ports

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else math.nan

    def to_dict(self) -> dict[str, Any]:
        s = sorted(self.probes)
        pr = PortRange.of_size(self.ports)
        return {
            "ports": self.ports,
            "port_range": [pr.first, pr.last],
            "remote": f"{REMOTE}:{REMOTE_PORT}/tcp",
            "target_occupancy": self.target,
            "occupied": self.occupied,
            "occupancy": self.occupancy,
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.attempts - self.successes,
            "success_rate": self.success_rate,
            "failure_rate_upper_95": failure_upper_bound(
                self.attempts - self.successes, self.attempts
            ),
            "mean_probes": sum(s) / len(s) if s else None,
            "p99_probes": _percentile(s, 0.99) if s else None,
            "max_probes": s[-1] if s else None,
            "probe_histogram": {str(k): v for k, v in sorted(Counter(s).items())},
            "theory_failure_odds": failure_odds(self.occupancy),
            "theory_mean_probes": expected_probes(self.occupancy),
            "mean_kernel_ns": sum(self.durations_ns) / len(self.durations_ns)
            if self.durations_ns
            else None,
            "counters": self.counters,
            "problems": self.problems,
        }


def measure_level(
    h: PortAllocHarness, target: float, flows: int, rng: random.Random, *, max_problems: int = 20
) -> Level:
    """Occupy `target` of the range towards the remote endpoint, then try `flows` new flows."""
    h.clear()
    n = h.ports.count
    occupied = set(rng.sample(range(h.ports.first, h.ports.last + 1), round(target * n)))
    h.occupy(occupied)
    level = Level(ports=n, target=target, occupied=len(occupied))
    before = h.counters()
    # Source ports outside the range: what is measured is the hash probing (a port inside
    # it would first be tried as itself, port preservation; send() predicts that too).
    outside = [p for p in range(1024, 65536) if p not in h.ports]
    for sport in rng.sample(outside, flows):
        a = h.send(h.flow(sport), occupied)
        level.attempts += 1
        if a.success:
            level.successes += 1
            level.probes.append(a.probes)
        level.durations_ns.append(a.duration_ns)
        for p in h.check(a):
            if len(level.problems) < max_problems:
                level.problems.append(f"sport {sport}: {p}")
        h.forget(a)
    after = h.counters()
    level.counters = {k: after[k] - before[k] for k in COUNTER_NAMES if after[k] != before[k]}
    if level.counters.get("snat_new", 0) != level.successes:
        level.problems.append(f"snat_new counted {level.counters.get('snat_new', 0)}")
    if level.counters.get("drop_exhausted", 0) != level.attempts - level.successes:
        level.problems.append(f"drop_exhausted counted {level.counters.get('drop_exhausted', 0)}")
    return level


def run(
    ranges: Sequence[int],
    occupancies: Sequence[float],
    flows: int,
    seed: int,
    *,
    generic: bool = False,
    progress: bool = True,
) -> list[Level]:
    levels = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="bpfgen-bench-ports-") as tmp:
        for count in ranges:
            with open_harness(count, Path(tmp), generic=generic) as h:
                for o in occupancies:
                    t0 = time.perf_counter()
                    level = measure_level(h, o, flows, rng)
                    levels.append(level)
                    if progress:
                        print(
                            f"  {count} ports, {level.occupancy:6.1%} occupied: "
                            f"{level.success_rate:8.3%} success "
                            f"({time.perf_counter() - t0:.1f} s)",
                            file=sys.stderr,
                            flush=True,
                        )
                h.clear()
    return levels


def _fmt_odds(p: float) -> str:
    return "0" if p == 0 else f"{p:.1e}"


def markdown(levels: Sequence[Level]) -> str:
    out: list[str] = []
    for count in dict.fromkeys(lv.ports for lv in levels):
        pr = PortRange.of_size(count)
        out += [
            f"SNAT range {pr.first}-{pr.last} ({count} ports), one remote endpoint "
            f"{REMOTE}:{REMOTE_PORT}/TCP, {SNAT_PROBES} probes max",
            "",
            "| occupancy | attempts | success % | failure rate, 95 % upper bound "
            "| mean probes | p99 probes | max probes "
            "| theory o^128 | theory mean probes | kernel ns/flow |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lv in (lv for lv in levels if lv.ports == count):
            d = lv.to_dict()
            mean = "-" if d["mean_probes"] is None else f"{d['mean_probes']:.2f}"
            theory_mean = d["theory_mean_probes"]
            out.append(
                f"| {lv.occupancy:.1%} ({lv.occupied}) | {lv.attempts} "
                f"| {100 * lv.success_rate:.2f} | {_fmt_odds(d['failure_rate_upper_95'])} "
                f"| {mean} | {d['p99_probes'] or '-'} "
                f"| {d['max_probes'] or '-'} | {_fmt_odds(d['theory_failure_odds'])} "
                f"| {'-' if math.isnan(theory_mean) else f'{theory_mean:.2f}'} "
                f"| {d['mean_kernel_ns']:.0f} |"
            )
        out.append("")
    return "\n".join(out)


def _occupancy(text: str) -> float:
    """An occupancy in percent ("90" or "90%") as a fraction."""
    try:
        value = float(text.removesuffix("%"))
    except ValueError:
        value = math.nan
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{text}: an occupancy is 0 to 100 (percent)")
    return value / 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.port_alloc",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--range", type=int, action="append", dest="ranges", metavar="PORTS",
        help=f"SNAT range size, repeatable (default: {', '.join(map(str, DEFAULT_RANGES))})",
    )  # fmt: skip
    ap.add_argument(
        "--occupancy", type=_occupancy, nargs="+", metavar="PCT",
        default=list(DEFAULT_OCCUPANCIES),
        help="occupancy levels in percent (default: 0 50 75 90 95 99)",
    )  # fmt: skip
    ap.add_argument("--flows", type=int, default=DEFAULT_FLOWS, help="new flows per level")
    ap.add_argument("--seed", type=int, default=1, help="random seed (ports occupied, sports)")
    ap.add_argument("--generic", action="store_true", help="measure the generic build")
    ap.add_argument("--json", action="store_true", help="raw figures as JSON")
    args = ap.parse_args(argv)
    ranges = args.ranges or list(DEFAULT_RANGES)
    for count in ranges:
        if not 16 <= count <= MAX_PORTS:
            ap.error(f"--range {count}: 16 to {MAX_PORTS} ports are supported")
    if not 1 <= args.flows <= 64512:
        ap.error("--flows: 1 to 64512 (one source port each)")
    levels = run(ranges, args.occupancy, args.flows, args.seed, generic=args.generic)
    if args.json:
        json.dump([lv.to_dict() for lv in levels], sys.stdout, indent=2)
        print()
    else:
        print(markdown(levels))
    bad = [(lv, p) for lv in levels for p in lv.problems]
    for lv, p in bad:
        print(f"error: {lv.ports} ports, {lv.occupancy:.1%}: {p}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The kernel and the model side by side: same packets, same state, every difference reported.

    with BuildUnderTest(build_dir) as build:
        diff = Differential(build, model_config(inputs, "generic"))
        diff.step("egress", frame, mark=0x4000)     # raises Mismatch on any difference

A step runs one frame through a program in the kernel (BPF_PROG_TEST_RUN) and in
the model, then compares the verdict, the frame out byte for byte, the mark, the
counter increments and the session tables. The kernel stamps sessions with its own
clock: a session the model touched must carry a kernel last_seen between the times
read just before and just after the run; the model then adopts that value, so the
two tables stay equal to the nanosecond and later expiry decisions see the same
ages. Tests keep ages far from the timeouts, so the few microseconds between the
model's clock and the kernel's never decide an expiry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from bpfgen.refmodel.ipvs_config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ModelConfig
from bpfgen.refmodel.ipvs_snat import COUNTER_NAMES, PROGRAMS, Result, Verdict, retval
from bpfgen.refmodel.packet import ETH_HLEN
from bpfgen.refmodel.state import FlowKey, Origin, Session, SessionState
from bpfgen_runtime.contract.layouts import IP_PROTOCOLS
from bpfgen_runtime.drops import Drop
from bpfgen_runtime.testrun import BuildUnderTest, ReverseEntry, RunResult, SessionEntry, SessionKey

__all__ = [
    "HISTORY",
    "Differential",
    "Mismatch",
    "Step",
    "counter_problems",
    "drop_event_problems",
    "describe",
    "differing_offsets",
    "hexdump",
    "outcome_problems",
    "report_head",
    "show_key",
    "stamp_problems",
    "state_lines",
    "table_problems",
]

HISTORY = 8  # steps shown before a failing one


class Mismatch(AssertionError):
    """The kernel and the model disagree; the message holds everything to reproduce it."""


@dataclass(frozen=True)
class Step:
    program: str
    packet: bytes
    mark: int
    kernel: RunResult
    model: Result
    t_before: int
    t_after: int


@dataclass
class Differential:
    build: BuildUnderTest
    config: ModelConfig
    check_state_every: int = 1  # full comparison of the session tables every n steps
    state: SessionState = field(init=False)
    packets: dict[str, int] = field(init=False)  # steps run, by program
    _counters: dict[str, int] = field(init=False)
    _history: deque[Step] = field(init=False)

    def __post_init__(self) -> None:
        self.state = SessionState.for_config(self.config)
        self.packets = {name: 0 for name in self.build.programs}
        self._history = deque(maxlen=HISTORY)
        self.build.clear_sessions()
        self._counters = self.build.counters()
        if tuple(self.build.counter_names) != COUNTER_NAMES:
            raise Mismatch(
                f"counters: the build has {self.build.counter_names}, the model {COUNTER_NAMES}"
            )

    # -- stepping

    def step(self, program: str, packet: bytes, mark: int = 0) -> Step:
        prog = self.build.programs[program]
        t_before = time.monotonic_ns()
        kernel = self.build.run(program, packet, mark)
        t_after = time.monotonic_ns()
        before = self.state.copy()
        try:
            model = PROGRAMS[program](self.config, packet, self.state, t_before, mark)
        except AssertionError as exc:  # the model disagrees with itself (checksums)
            raise Mismatch(self._report(program, packet, mark, kernel, None, [str(exc)])) from exc
        step = Step(program, packet, mark, kernel, model, t_before, t_after)
        self.packets[program] += 1

        problems = outcome_problems(
            kernel.retval, kernel.packet, model.verdict, model.packet, prog.is_xdp
        )
        if kernel.mark != model.mark:
            problems.append(f"mark: kernel {kernel.mark:#x}, model {model.mark:#x}")
        counters = self.build.counters()
        deltas = model.counter_deltas()
        problems += counter_problems(self._counters, counters, deltas)
        problems += drop_event_problems(self.build.drops(), deltas, program, packet)
        self._counters = counters
        problems += self._adopt_touched(model, t_before, t_after)
        if self.packets[program] % self.check_state_every == 0:
            problems += self.compare_state()
        if problems:
            self._history.append(step)
            raise Mismatch(self._report(program, packet, mark, kernel, model, problems, before))
        self._history.append(step)
        return step

    def _adopt_touched(self, model: Result, t_before: int, t_after: int) -> list[str]:
        problems = []
        for key in sorted(model.touched):
            if key not in self.state.forward:
                continue  # released by this packet: compare_state sees the kernel's
            entry = self.build.session(_kernel_key(key))
            if entry is None:
                problems.append(
                    f"session {show_key(key)}: touched by the model, missing in the kernel"
                )
                continue
            problems += stamp_problems(key, entry.last_seen_ns, t_before, t_after)
            self.state.forward[key] = self.state.forward[key]._replace(
                last_seen_ns=entry.last_seen_ns
            )
        return problems

    # -- state, on both sides

    def compare_state(self) -> list[str]:
        """Every difference between the kernel's session maps and the model's tables."""
        kernel_fwd = {_model_key(k): _model_session(v) for k, v in self.build.sessions().items()}
        kernel_rev = {_model_key(k): Origin(*v) for k, v in self.build.reverse_sessions().items()}
        return table_problems("forward", kernel_fwd, self.state.forward) + table_problems(
            "reverse", kernel_rev, self.state.reverse
        )

    def set_last_seen(self, key: FlowKey, last_seen_ns: int) -> None:
        """Age (or rejuvenate) one session, in the kernel and in the model alike."""
        self.build.set_last_seen(_kernel_key(key), last_seen_ns)
        self.state.forward[key] = self.state.forward[key]._replace(last_seen_ns=last_seen_ns)

    def put_session(self, key: FlowKey, session: Session, reverse: Origin | None = None) -> None:
        """Install a session directly (and its reverse entry), on both sides."""
        self.build.put_session(_kernel_key(key), SessionEntry(*session))
        self.state.forward[key] = session
        if reverse is not None:
            reverse_key = FlowKey(
                key.daddr, session.nat_addr, key.dport, session.nat_port, key.proto
            )
            self.build.put_reverse_session(_kernel_key(reverse_key), ReverseEntry(*reverse))
            self.state.reverse[reverse_key] = reverse

    def history(self) -> Iterator[Step]:
        return iter(self._history)

    # -- reporting

    def _report(
        self,
        program: str,
        packet: bytes,
        mark: int,
        kernel: RunResult,
        model: Result | None,
        problems: list[str],
        before: SessionState | None = None,
    ) -> str:
        lines = [
            *report_head(self.build, program, self.config.build_kind, problems),
            f"packet in (mark {mark:#x}): {describe(packet)}",
            hexdump(packet),
            f"kernel: retval {kernel.retval}, mark {kernel.mark:#x}: {describe(kernel.packet)}",
            hexdump(kernel.packet),
        ]
        if model is not None:
            lines += [
                f"model: {model.verdict.name}, mark {model.mark:#x}, counters "
                f"+{model.counter_deltas()}: {describe(model.packet)}",
                hexdump(model.packet),
            ]
        if before is not None:
            lines += state_lines(before.forward, before.reverse)
        if self._history:
            lines.append("previous steps, oldest first:")
            lines += [
                f"  {s.program} mark {s.mark:#x}: {describe(s.packet)}  [{s.packet.hex()}]"
                for s in self._history
            ]
        return "\n".join(lines)


def report_head(
    build: BuildUnderTest, program: str, build_kind: str, problems: list[str]
) -> list[str]:
    """The first lines of a Mismatch report: where, and every difference."""
    return [
        f"kernel and model disagree: program {program} ({build_kind} build {build.build_dir})",
        f"generated source: {build.programs[program].source}",
        *(f"  - {p}" for p in problems),
    ]


def state_lines(forward: Mapping[FlowKey, object], reverse: Mapping[FlowKey, object]) -> list[str]:
    """The model's tables, for a Mismatch report."""
    return [
        f"model state before: {len(forward)} sessions, {len(reverse)} reverse entries",
        *(f"  fwd {show_key(k)} -> {v}" for k, v in sorted(forward.items())),
        *(f"  rev {show_key(k)} -> {v}" for k, v in sorted(reverse.items())),
    ]


def outcome_problems(
    kernel_retval: int, kernel_packet: bytes, verdict: Verdict, model_packet: bytes, xdp: bool
) -> list[str]:
    """The differences in verdict and packet out of one run."""
    problems = []
    want = retval(verdict, xdp)
    if kernel_retval != want:
        problems.append(f"verdict: kernel returned {kernel_retval}, model {verdict.name} ({want})")
    if kernel_packet != model_packet:
        problems.append(
            "packet out differs at bytes " + differing_offsets(kernel_packet, model_packet)
        )
    return problems


def counter_problems(
    before: dict[str, int], after: dict[str, int], model: dict[str, int]
) -> list[str]:
    """The kernel's counter increments (after - before) against the model's."""
    kernel = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return [] if kernel == model else [f"counters: kernel +{kernel}, model +{model}"]


def drop_event_problems(
    drops: list[Drop], model: dict[str, int], program: str, packet: bytes
) -> list[str]:
    """Each drop the model counts is notified once (ring bpfgen_drops) with its reason,
    by this program, with the frame's addresses and protocol; nothing else is."""
    want = sorted(name for name, n in model.items() if name.startswith("drop_") for _ in range(n))
    got = sorted(d.reason for d in drops)
    problems = [] if got == want else [f"drop notifications: kernel {got}, model {want}"]
    if drops and len(packet) >= 34:  # Ethernet + IPv4: what a drop has parsed
        src, dst = str(IPv4Address(packet[26:30])), str(IPv4Address(packet[30:34]))
        proto = IP_PROTOCOLS.get(packet[23], str(packet[23]))
        for d in drops:
            if (d.program, d.source, d.destination, d.protocol) != (program, src, dst, proto):
                problems.append(f"drop notification {d}: not {program}, {proto} {src} -> {dst}")
    return problems


def stamp_problems(key: FlowKey, last_seen_ns: int, t_before: int, t_after: int) -> list[str]:
    """A session the model touched must carry a kernel last_seen within the run."""
    if t_before <= last_seen_ns <= t_after:
        return []
    return [
        f"session {show_key(key)}: kernel last_seen {last_seen_ns} is not within the run "
        f"[{t_before}, {t_after}]"
    ]


def table_problems(
    what: str, kernel: Mapping[FlowKey, object], model: Mapping[FlowKey, object]
) -> list[str]:
    """Every key whose entry differs between a kernel map and the model's table."""
    problems = []
    for key in sorted(kernel.keys() | model.keys()):
        k, m = kernel.get(key), model.get(key)
        if k != m:
            problems.append(f"{what} {show_key(key)}: kernel {k}, model {m}")
    return problems


def _kernel_key(key: FlowKey) -> SessionKey:
    return SessionKey(*key)


def _model_key(key: SessionKey) -> FlowKey:
    return FlowKey(*key)


def _model_session(entry: SessionEntry) -> Session:
    return Session(*entry)


def differing_offsets(a: bytes, b: bytes) -> str:
    offsets = [i for i in range(min(len(a), len(b))) if a[i] != b[i]]
    text = ", ".join(f"{i} ({a[i]:#04x} vs {b[i]:#04x})" for i in offsets[:16])
    if len(a) != len(b):
        text += f"{'; ' if text else ''}lengths {len(a)} vs {len(b)}"
    return text


def _ip(value: int) -> str:
    return ".".join(str(b) for b in value.to_bytes(4, "big"))


def show_key(key: FlowKey) -> str:
    proto = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp"}.get(
        key.proto, str(key.proto)
    )
    return f"{proto} {_ip(key.saddr)}:{key.sport} > {_ip(key.daddr)}:{key.dport}"


def describe(frame: bytes) -> str:
    """One line about a frame, for failure messages (no parsing decisions of the model)."""
    if len(frame) < ETH_HLEN:
        return f"{len(frame)} bytes (shorter than Ethernet)"
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype != 0x0800 or len(frame) < ETH_HLEN + 20:
        return f"{len(frame)} bytes, ethertype {ethertype:#06x}"
    ip = frame[ETH_HLEN:]
    ihl = ip[0] & 0x0F
    proto = ip[9]
    text = (
        f"{len(frame)} bytes IPv{ip[0] >> 4} ihl {ihl} tot_len {int.from_bytes(ip[2:4], 'big')}"
        f" frag {int.from_bytes(ip[6:8], 'big'):#06x} ttl {ip[8]} proto {proto} "
        f"{_ip(int.from_bytes(ip[12:16], 'big'))} > {_ip(int.from_bytes(ip[16:20], 'big'))}"
    )
    l4 = ip[4 * ihl :] if ihl >= 5 else b""
    if proto in (IPPROTO_TCP, IPPROTO_UDP) and len(l4) >= 4:
        text += f" ports {int.from_bytes(l4[0:2], 'big')} > {int.from_bytes(l4[2:4], 'big')}"
        if proto == IPPROTO_TCP and len(l4) >= 14:
            text += f" flags {l4[13]:#04x}"
    elif proto == IPPROTO_ICMP and len(l4) >= 8:
        text += f" icmp type {l4[0]} code {l4[1]} id {int.from_bytes(l4[4:6], 'big')}"
    return text


def hexdump(data: bytes) -> str:
    return "\n".join(f"    {i:04x}  {data[i : i + 16].hex(' ')}" for i in range(0, len(data), 16))

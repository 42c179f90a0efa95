"""The bpf mode's `bpfgen_svc_in` in the kernel and in the model, side by side.

    with BuildUnderTest(build_dir) as build:
        diff = SvcDifferential(build, svc_config(inputs, "generic"))
        diff.step(frame)            # raises Mismatch on any difference

As `differential.Differential` does for the ipvs mode: one frame through the
program in the kernel (BPF_PROG_TEST_RUN) and in the model, then the verdict, the
frame out, the counter increments and both session maps (bpfgen_nat_v4,
bpfgen_rnat_v4) compared in full; the sessions the model stamped adopt the
kernel's last_seen once it lies within the run.

The model's FIB (`svc.Fib`) must say what the kernel's answers where the test
runs: `svc.no_route` in a network namespace without routes.
"""

from __future__ import annotations

import struct
import time
from collections import deque
from dataclasses import dataclass, field

from bpfgen.refmodel.differential import (
    HISTORY,
    Mismatch,
    counter_problems,
    describe,
    hexdump,
    outcome_problems,
    report_head,
    show_key,
    stamp_problems,
    state_lines,
    table_problems,
)
from bpfgen.refmodel.programs import Result
from bpfgen.refmodel.state import FlowKey
from bpfgen.refmodel.svc import (
    SVC_COUNTER_NAMES,
    Fib,
    NatSession,
    Rnat,
    SvcState,
    no_route,
    svc_in,
)
from bpfgen.refmodel.svc_config import SvcConfig
from bpfgen_runtime.testrun import BuildUnderTest, SessionKey

__all__ = ["PROGRAM", "SvcDifferential", "SvcStep"]

PROGRAM = "svc_in"
NAT_MAP, RNAT_MAP = "bpfgen_nat_v4", "bpfgen_rnat_v4"
_NAT = struct.Struct("=Q4s2sBx4s2sH")  # struct bpfgen_nat_entry
_RNAT = struct.Struct("!4sH2x4sH2x")  # struct bpfgen_rnat_entry


def _addr(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def pack_nat(s: NatSession) -> bytes:
    return _NAT.pack(s.last_seen_ns, s.nat_addr.to_bytes(4, "big"), s.nat_port.to_bytes(2, "big"),
                     s.flags, s.backend_addr.to_bytes(4, "big"),
                     s.backend_port.to_bytes(2, "big"), s.backend_gen)


def unpack_nat(raw: bytes) -> NatSession:
    last_seen, na, np, flags, ba, bp, gen = _NAT.unpack(raw)
    return NatSession(last_seen, _addr(na), _addr(np), flags, _addr(ba), _addr(bp), gen)


def pack_rnat(r: Rnat) -> bytes:
    return _RNAT.pack(r.addr.to_bytes(4, "big"), r.port, r.vip.to_bytes(4, "big"), r.vip_port)


def unpack_rnat(raw: bytes) -> Rnat:
    a, p, vip, vp = _RNAT.unpack(raw)
    return Rnat(_addr(a), p, _addr(vip), vp)


@dataclass(frozen=True)
class SvcStep:
    packet: bytes
    retval: int
    out: bytes
    model: Result
    t_before: int
    t_after: int


@dataclass
class SvcDifferential:
    build: BuildUnderTest
    config: SvcConfig
    fib: Fib = no_route
    state: SvcState = field(init=False)
    packets: int = field(init=False, default=0)
    _counters: dict[str, int] = field(init=False)
    _history: deque[SvcStep] = field(init=False)

    def __post_init__(self) -> None:
        self.state = SvcState.for_config(self.config)
        self._history = deque(maxlen=HISTORY)
        for name in (NAT_MAP, RNAT_MAP):
            m = self.build.maps[name]
            for key in list(m.keys()):
                m.delete(key)
        self._counters = self.build.counters()
        if tuple(self.build.counter_names) != SVC_COUNTER_NAMES:
            raise Mismatch(f"counters: the build has {self.build.counter_names}, "
                           f"the model {SVC_COUNTER_NAMES}")

    # -- stepping

    def step(self, packet: bytes) -> SvcStep:
        t_before = time.monotonic_ns()
        kernel = self.build.run(PROGRAM, packet)
        t_after = time.monotonic_ns()
        before = self.state.copy()
        try:
            model = svc_in(self.config, packet, self.state, t_before, fib=self.fib)
        except AssertionError as exc:  # the model disagrees with itself (checksums)
            raise Mismatch(self._report(packet, kernel.retval, kernel.packet, None, [str(exc)],
                                        before)) from exc
        step = SvcStep(packet, kernel.retval, kernel.packet, model, t_before, t_after)
        self.packets += 1
        problems = outcome_problems(kernel.retval, kernel.packet, model.verdict, model.packet,
                                    xdp=False)
        counters = self.build.counters()
        problems += counter_problems(self._counters, counters, model.counter_deltas())
        self._counters = counters
        problems += self._adopt_touched(model, t_before, t_after)
        problems += self.compare_state()
        self._history.append(step)
        if problems:
            raise Mismatch(self._report(packet, kernel.retval, kernel.packet, model, problems,
                                        before))
        return step

    def _adopt_touched(self, model: Result, t_before: int, t_after: int) -> list[str]:
        problems = []
        for key in sorted(model.touched):
            raw = self.build.maps[NAT_MAP].lookup(SessionKey(*key).pack())
            if raw is None:
                problems.append(f"session {show_key(key)}: touched by the model, "
                                "missing in the kernel")
                continue
            last_seen = unpack_nat(raw).last_seen_ns
            problems += stamp_problems(key, last_seen, t_before, t_after)
            self.state.forward[key] = self.state.forward[key]._replace(last_seen_ns=last_seen)
        return problems

    # -- state, on both sides

    def kernel_tables(self) -> tuple[dict[FlowKey, NatSession], dict[FlowKey, Rnat]]:
        fwd = {FlowKey(*SessionKey.unpack(k)): unpack_nat(v)
               for k, v in self.build.maps[NAT_MAP].items()}
        rev = {FlowKey(*SessionKey.unpack(k)): unpack_rnat(v)
               for k, v in self.build.maps[RNAT_MAP].items()}
        return fwd, rev

    def compare_state(self) -> list[str]:
        """Every difference between the kernel's session maps and the model's."""
        kernel_fwd, kernel_rev = self.kernel_tables()
        return (table_problems("forward", kernel_fwd, self.state.forward)
                + table_problems("reverse", kernel_rev, self.state.reverse))

    def put_session(self, key: FlowKey, session: NatSession,
                    reverse: tuple[FlowKey, Rnat] | None = None) -> None:
        """Install a session (and a reverse entry), on both sides."""
        self.build.maps[NAT_MAP].update(SessionKey(*key).pack(), pack_nat(session))
        self.state.forward[key] = session
        if reverse is not None:
            rkey, value = reverse
            self.build.maps[RNAT_MAP].update(SessionKey(*rkey).pack(), pack_rnat(value))
            self.state.reverse[rkey] = value

    def set_last_seen(self, key: FlowKey, last_seen_ns: int) -> None:
        """Age (or rejuvenate) one session, in the kernel and in the model alike."""
        self.put_session(key, self.state.forward[key]._replace(last_seen_ns=last_seen_ns))

    # -- reporting

    def _report(self, packet: bytes, kernel_retval: int, kernel_out: bytes,
                model: Result | None, problems: list[str], before: SvcState) -> str:
        lines = [
            *report_head(self.build, PROGRAM, self.config.build_kind, problems),
            f"packet in: {describe(packet)}",
            hexdump(packet),
            f"kernel: retval {kernel_retval}: {describe(kernel_out)}",
            hexdump(kernel_out),
        ]
        if model is not None:
            lines += [f"model: {model.verdict.name}, counters +{model.counter_deltas()}: "
                      f"{describe(model.packet)}", hexdump(model.packet)]
        lines += state_lines(before.forward, before.reverse)
        history = list(self._history)[:-1] if model is not None else list(self._history)
        if history:
            lines.append("previous steps, oldest first:")
            lines += [f"  {describe(s.packet)}  [{s.packet.hex()}]" for s in history]
        return "\n".join(lines)

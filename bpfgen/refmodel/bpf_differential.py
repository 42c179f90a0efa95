"""The bpf mode's `bpfgen_svc_in` and `bpfgen_svc_xdp` in the kernel and in the model,
side by side.

    with BuildUnderTest(build_dir) as build:
        diff = SvcDifferential(build, svc_config(inputs, "generic"))
        diff.step(frame)            # raises Mismatch on any difference

As `differential.Differential` does for the ipvs mode: one frame through the
program in the kernel (BPF_PROG_TEST_RUN) and in the model, then the verdict, the
frame out, the counter increments, both session maps (bpfgen_nat_v4,
bpfgen_rnat_v4) and the ClientIP affinity map (bpfgen_affinity_v4, when the build
has one) compared in full; the sessions and affinity entries the model stamped
adopt the kernel's last_seen once it lies within the run.

With `program="svc_xdp"` a step is what an uplink with `hook: xdp` does to the
frame: svc_xdp, then, when it passes the frame (XDP_PASS), svc_in at tc on it,
each run compared on its own (`SvcStep.then` is the tc run).

The model's FIB (`svc.Fib`, `svc.XdpRoute`) must say what the kernel's answers where
the test runs: `svc.no_route` / `svc.no_xdp_route` in a network namespace without
routes.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from bpfgen.refmodel.bpf_config import SvcConfig
from bpfgen.refmodel.bpf_svc import (
    SVC_COUNTER_NAMES,
    Affinity,
    AffinityKey,
    Fib,
    NatSession,
    Rnat,
    SvcState,
    XdpRoute,
    no_route,
    no_xdp_route,
    svc_in,
    svc_xdp,
)
from bpfgen.refmodel.ipvs_differential import (
    HISTORY,
    Mismatch,
    counter_problems,
    describe,
    drop_event_problems,
    hexdump,
    outcome_problems,
    report_head,
    show_key,
    stamp_problems,
    state_lines,
    table_problems,
)
from bpfgen.refmodel.ipvs_snat import XDP_PASS, Result
from bpfgen.refmodel.state import FlowKey
from bpfgen_runtime.contract.layouts import (
    AffinityEntry,
    NatEntry,
    RnatEntry,
    be16,
    be32,
    from_be,
    from_net_int,
    net_int,
    to_bytes,
)
from bpfgen_runtime.contract.layouts import AffinityKey as AffinityKeyLayout
from bpfgen_runtime.testrun import BuildUnderTest, SessionKey

__all__ = ["PROGRAM", "XDP_PROGRAM", "SvcDifferential", "SvcStep"]

PROGRAM, XDP_PROGRAM = "svc_in", "svc_xdp"
NAT_MAP, RNAT_MAP, AFFINITY_MAP = "bpfgen_nat_v4", "bpfgen_rnat_v4", "bpfgen_affinity_v4"


# The maps' values in the C structs' layouts (bpfgen_runtime.contract.layouts).


def pack_nat(s: NatSession) -> bytes:
    return to_bytes(NatEntry(
        last_seen_ns=s.last_seen_ns, nat_addr=be32(s.nat_addr), nat_port=be16(s.nat_port),
        flags=s.flags, fin_ack=s.fin_ack, backend_addr=be32(s.backend_addr),
        backend_port=be16(s.backend_port), backend_gen=s.backend_gen,
    ))  # fmt: skip


def unpack_nat(raw: bytes) -> NatSession:
    e = NatEntry.from_buffer_copy(raw)
    return NatSession(
        e.last_seen_ns,
        from_be(e.nat_addr),
        from_be(e.nat_port),
        e.flags,
        from_be(e.backend_addr),
        from_be(e.backend_port),
        e.backend_gen,
        e.fin_ack,
    )


def pack_rnat(r: Rnat) -> bytes:
    return to_bytes(
        RnatEntry(addr=be32(r.addr), port=be16(r.port), vip=be32(r.vip), vip_port=be16(r.vip_port))
    )


def unpack_rnat(raw: bytes) -> Rnat:
    e = RnatEntry.from_buffer_copy(raw)
    return Rnat(from_be(e.addr), from_be(e.port), from_be(e.vip), from_be(e.vip_port))


def pack_affinity_key(k: AffinityKey) -> bytes:
    return to_bytes(AffinityKeyLayout(client=net_int(k.client, 4), affinity_id=k.affinity_id))


def unpack_affinity_key(raw: bytes) -> AffinityKey:
    key = AffinityKeyLayout.from_buffer_copy(raw)
    return AffinityKey(from_net_int(key.client, 4), key.affinity_id)


def pack_affinity(a: Affinity) -> bytes:
    return to_bytes(
        AffinityEntry(last_seen_ns=a.last_seen_ns, addr=net_int(a.addr, 4), port=net_int(a.port, 2))
    )


def unpack_affinity(raw: bytes) -> Affinity:
    e = AffinityEntry.from_buffer_copy(raw)
    return Affinity(e.last_seen_ns, from_net_int(e.addr, 4), from_net_int(e.port, 2))


@dataclass(frozen=True)
class SvcStep:
    program: str
    packet: bytes
    retval: int
    out: bytes
    model: Result
    t_before: int
    t_after: int
    then: SvcStep | None = None  # svc_xdp passed the frame: svc_in's run at tc

    @property
    def last(self) -> SvcStep:
        """The run whose frame leaves the device (tc's, after an XDP pass)."""
        return self.then.last if self.then is not None else self

    def device_deltas(self) -> dict[str, int]:
        """The counts of one pass through the device, as at tc alone: for a frame svc_xdp
        passed after its session work (xdp_to_tc), tc's repeat of dnat_hit or rdnat and
        xdp_to_tc are left out; for one it passed as not its own, its own counts."""
        xdp = self.model.counter_deltas()
        if self.then is None:
            return xdp
        tc = self.then.device_deltas()
        if "xdp_to_tc" not in xdp:
            return tc
        del xdp["xdp_to_tc"]
        for name in ("dnat_hit", "rdnat"):
            if tc.get(name):
                tc[name] -= 1
        merged = {k: xdp.get(k, 0) + tc.get(k, 0) for k in xdp.keys() | tc.keys()}
        return {k: v for k, v in merged.items() if v}


@dataclass
class SvcDifferential:
    build: BuildUnderTest
    config: SvcConfig
    fib: Fib = no_route
    program: str = PROGRAM  # or XDP_PROGRAM: svc_xdp, then svc_in for what it passes
    route: XdpRoute = no_xdp_route
    ingress_ifindex: int = 0  # svc_xdp's ingress device (0: the loopback device)
    check_state_every: int = 1  # full comparison of the session tables every n runs
    state: SvcState = field(init=False)
    packets: int = field(init=False, default=0)
    _counters: dict[str, int] = field(init=False)
    _history: deque[SvcStep] = field(init=False)

    def __post_init__(self) -> None:
        self.state = SvcState.for_config(self.config)
        self._history = deque(maxlen=HISTORY)
        for name in (NAT_MAP, RNAT_MAP, AFFINITY_MAP):
            if name not in self.build.maps:
                continue  # no affinity map: no Service has ClientIP affinity
            m = self.build.maps[name]
            for key in list(m.keys()):
                m.delete(key)
        self._counters = self.build.counters()
        if tuple(self.build.counter_names) != SVC_COUNTER_NAMES:
            raise Mismatch(
                f"counters: the build has {self.build.counter_names}, the model {SVC_COUNTER_NAMES}"
            )

    # -- stepping

    def step(self, packet: bytes) -> SvcStep:
        """One frame through the device: svc_in, or svc_xdp and svc_in for what it passes."""
        if self.program == PROGRAM:
            return self._run(PROGRAM, packet)
        step = self._run(XDP_PROGRAM, packet)
        if step.retval != XDP_PASS:
            return step
        return replace(step, then=self._run(PROGRAM, step.out))

    def _run(self, program: str, packet: bytes) -> SvcStep:
        xdp = program == XDP_PROGRAM
        t_before = time.monotonic_ns()
        kernel = self.build.run(program, packet, ingress_ifindex=self.ingress_ifindex if xdp else 0)
        t_after = time.monotonic_ns()
        before = self.state.copy()
        try:
            if xdp:
                model = svc_xdp(self.config, packet, self.state, t_before, route=self.route)
            else:
                model = svc_in(self.config, packet, self.state, t_before, fib=self.fib)
        except AssertionError as exc:  # the model disagrees with itself (checksums)
            raise Mismatch(
                self._report(
                    program, packet, kernel.retval, kernel.packet, None, [str(exc)], before
                )
            ) from exc
        step = SvcStep(program, packet, kernel.retval, kernel.packet, model, t_before, t_after)
        self.packets += 1
        problems = outcome_problems(
            kernel.retval, kernel.packet, model.verdict, model.packet, xdp=xdp
        )
        counters = self.build.counters()
        deltas = model.counter_deltas()
        problems += counter_problems(self._counters, counters, deltas)
        problems += drop_event_problems(self.build.drops(), deltas, program, packet)
        self._counters = counters
        problems += self._adopt_touched(model, t_before, t_after)
        problems += self._adopt_stamped(t_before, t_after)
        if self.packets % self.check_state_every == 0:
            problems += self.compare_state()
        self._history.append(step)
        if problems:
            raise Mismatch(
                self._report(program, packet, kernel.retval, kernel.packet, model, problems, before)
            )
        return step

    def _adopt_touched(self, model: Result, t_before: int, t_after: int) -> list[str]:
        problems = []
        for key in sorted(model.touched):
            if key not in self.state.forward:
                continue  # released by this packet: compare_state sees the kernel's
            raw = self.build.maps[NAT_MAP].lookup(SessionKey(*key).pack())
            if raw is None:
                problems.append(
                    f"session {show_key(key)}: touched by the model, missing in the kernel"
                )
                continue
            last_seen = unpack_nat(raw).last_seen_ns
            problems += stamp_problems(key, last_seen, t_before, t_after)
            self.state.forward[key] = self.state.forward[key]._replace(last_seen_ns=last_seen)
        return problems

    def _adopt_stamped(self, t_before: int, t_after: int) -> list[str]:
        """Affinity entries the model wrote or touched carry the kernel's stamp."""
        problems = []
        for key in sorted(self.state.stamped):
            raw = self.build.maps[AFFINITY_MAP].lookup(pack_affinity_key(key))
            if raw is None:
                problems.append(
                    f"affinity {_show_affinity_key(key)}: written by the model, "
                    "missing in the kernel"
                )
                continue
            last_seen = unpack_affinity(raw).last_seen_ns
            if not t_before <= last_seen <= t_after:
                problems.append(
                    f"affinity {_show_affinity_key(key)}: kernel last_seen "
                    f"{last_seen} is not within the run [{t_before}, {t_after}]"
                )
            self.state.affinity[key] = self.state.affinity[key]._replace(last_seen_ns=last_seen)
        return problems

    # -- state, on both sides

    def kernel_tables(self) -> tuple[dict[FlowKey, NatSession], dict[FlowKey, Rnat]]:
        fwd = {
            FlowKey(*SessionKey.unpack(k)): unpack_nat(v)
            for k, v in self.build.maps[NAT_MAP].items()
        }
        rev = {
            FlowKey(*SessionKey.unpack(k)): unpack_rnat(v)
            for k, v in self.build.maps[RNAT_MAP].items()
        }
        return fwd, rev

    def kernel_affinity(self) -> dict[AffinityKey, Affinity]:
        if AFFINITY_MAP not in self.build.maps:
            return {}
        return {
            unpack_affinity_key(k): unpack_affinity(v)
            for k, v in self.build.maps[AFFINITY_MAP].items()
        }

    def compare_state(self) -> list[str]:
        """Every difference between the kernel's maps and the model's."""
        kernel_fwd, kernel_rev = self.kernel_tables()
        kernel_aff = self.kernel_affinity()
        return (
            table_problems("forward", kernel_fwd, self.state.forward)
            + table_problems("reverse", kernel_rev, self.state.reverse)
            + [
                f"affinity {_show_affinity_key(k)}: kernel {kernel_aff.get(k)}, "
                f"model {self.state.affinity.get(k)}"
                for k in sorted(kernel_aff.keys() | self.state.affinity.keys())
                if kernel_aff.get(k) != self.state.affinity.get(k)
            ]
        )

    def put_session(
        self, key: FlowKey, session: NatSession, reverse: tuple[FlowKey, Rnat] | None = None
    ) -> None:
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

    def put_affinity(self, key: AffinityKey, entry: Affinity) -> None:
        """Install (or age) a ClientIP affinity entry, on both sides."""
        self.build.maps[AFFINITY_MAP].update(pack_affinity_key(key), pack_affinity(entry))
        self.state.affinity[key] = entry

    # -- reporting

    def _report(
        self,
        program: str,
        packet: bytes,
        kernel_retval: int,
        kernel_out: bytes,
        model: Result | None,
        problems: list[str],
        before: SvcState,
    ) -> str:
        lines = [
            *report_head(self.build, program, self.config.build_kind, problems),
            f"packet in: {describe(packet)}",
            hexdump(packet),
            f"kernel: retval {kernel_retval}: {describe(kernel_out)}",
            hexdump(kernel_out),
        ]
        if model is not None:
            lines += [
                f"model: {model.verdict.name}, counters +{model.counter_deltas()}: "
                f"{describe(model.packet)}",
                hexdump(model.packet),
            ]
        lines += state_lines(before.forward, before.reverse)
        lines += [
            f"  affinity {_show_affinity_key(k)} -> {v}" for k, v in sorted(before.affinity.items())
        ]
        history = list(self._history)[:-1] if model is not None else list(self._history)
        if history:
            lines.append("previous steps, oldest first:")
            lines += [f"  {s.program}: {describe(s.packet)}  [{s.packet.hex()}]" for s in history]
        return "\n".join(lines)


def _show_affinity_key(key: AffinityKey) -> str:
    return f"{IPv4Address(key.client)} of affinity id {key.affinity_id}"

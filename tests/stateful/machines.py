"""What the state machines of both modes share (test_snat_machine: ipvs, test_svc_machine:
bpf): the SNAT timeouts, TCP flags, the aging rules, the kernel-equals-model invariant and
the exhaustion check.

A machine sets `self.diff` (a `Differential` or an `SvcDifferential`: both keep the model's
tables in `state`, age a session with `set_last_seen` and compare with `compare_state`)
and puts `Conn`-like objects (`.key`: the session's original tuple) into `conns`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar
from unittest import TestCase

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from bpfgen.refmodel import FlowKey, ModelConfig, expired
from bpfgen.refmodel.hashing import candidate_port
from bpfgen.refmodel.programs import PROBE_LIMIT
from bpfgen.refmodel.state import SessionLike

NS = 1_000_000_000
TIMEOUTS = {"tcpEstablished": 90, "tcpTransitory": 20, "udp": 40, "icmp": 30}  # seconds
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
FORWARD_FLAGS = (ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN)  # SYN: the tuple reused
REPLY_FLAGS = (SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK)
CLOSE_FLAGS = (FIN | ACK, RST, RST | ACK)


def snat_section(ports: tuple[int, int], max_sessions: int, **extra: Any) -> dict[str, Any]:
    """The node file's `snat`: a small port range, few sessions, the machines' timeouts."""
    return {"portRange": list(ports), "maxSessions": max_sessions, **extra,
            "timeouts": {k: f"{v}s" for k, v in TIMEOUTS.items()}}


def assert_ports_held(config: ModelConfig, flow: object, key: FlowKey, h: int, now: int,
                      holder: Callable[[int], SessionLike | None]) -> None:
    """A drop for exhaustion: every port the flow (`key`, hash `h`) may probe is held by a
    live session (`holder(port)`: the session translated to it, None when there is none)."""
    for attempt in range(PROBE_LIMIT):
        port = candidate_port(h, attempt, config.port_min, config.port_count)
        session = holder(port)
        assert session is not None, f"port {port} was free, yet {flow} was dropped"
        assert session.nat_port == port and not expired(config, key.proto, session, now), (
            f"port {port} was stale, yet {flow} was dropped")


class AgingMachine(RuleBasedStateMachine):
    """Sessions idle past their timeouts, in the kernel and the model alike."""

    kind: ClassVar[str] = "specialized"
    conns = Bundle("conns")
    diff: Any  # Differential | SvcDifferential

    @initialize()
    def fresh_tables(self) -> None:
        assert not self.diff.state.forward

    @rule(conn=conns, how=st.sampled_from(["transitory", "established", "udp", "icmp", "a bit"]))
    def idle(self, conn: Any, how: str) -> None:
        """Let one session idle: its last_seen moves back, in the kernel and the model."""
        session = self.diff.state.forward.get(conn.key)
        if session is None:
            return
        seconds = {"transitory": TIMEOUTS["tcpTransitory"] + 1,
                   "established": TIMEOUTS["tcpEstablished"] + 1,
                   "udp": TIMEOUTS["udp"] + 1, "icmp": TIMEOUTS["icmp"] + 1, "a bit": 5}[how]
        self.diff.set_last_seen(conn.key, max(0, session.last_seen_ns - seconds * NS))

    @rule()
    def idle_everything(self) -> None:
        """Everything idles past the longest timeout: every port is free to reclaim."""
        for key, session in sorted(self.diff.state.forward.items()):
            longest = max(TIMEOUTS.values()) + 1
            self.diff.set_last_seen(key, max(0, session.last_seen_ns - longest * NS))

    @invariant()
    def kernel_equals_model(self) -> None:
        problems = self.diff.compare_state()
        assert not problems, "\n".join(problems)

    @invariant()
    def within_capacity(self) -> None:
        assert len(self.diff.state.forward) <= self.diff.state.capacity
        assert len(self.diff.state.reverse) <= self.diff.state.capacity


def build_kind_cases(machine: type[AgingMachine], steps: int = 60) -> tuple[type[TestCase], ...]:
    """The machine's test cases for the specialized build and (a subclass) the generic one."""
    generic: type[AgingMachine] = type(f"Generic{machine.__name__}", (machine,),
                                       {"kind": "generic"})
    cases = (machine.TestCase, generic.TestCase)
    for case in cases:
        case.settings = settings(stateful_step_count=steps)
    return cases

"""What the state machines of both modes share (test_snat_machine: ipvs, test_svc_machine:
bpf): the SNAT timeouts, TCP flags, the aging rules, the kernel-equals-model invariant and
the exhaustion check, and whole TCP closes (CLOSES, assert_closed).

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

from bpfgen.refmodel import IPPROTO_TCP, FlowKey, ModelConfig, expired
from bpfgen.refmodel.hashing import candidate_port
from bpfgen.refmodel.ipvs_snat import PROBE_LIMIT
from bpfgen.refmodel.state import CLOSED, SessionLike, timeout_ns

NS = 1_000_000_000
TIMEOUTS = {
    "tcpEstablished": 90,
    "tcpTransitory": 20,
    "tcpTimeWait": 30,
    "tcpClose": 15,
    "udp": 40,
    "icmp": 30,
}  # seconds
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
FORWARD_FLAGS = (ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, SYN)  # SYN: the tuple reused
REPLY_FLAGS = (SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK)
CLOSE_FLAGS = (FIN | ACK, RST, RST | ACK)


# A whole TCP close with coherent sequence numbers (docs/datapath.md "The TCP session
# lifecycle"), as (from the backend?, flags, seq, ack); the client's next sequence number
# is C_SEQ, the backend's B_SEQ. "simultaneous": the FINs cross, neither acknowledges the
# other's, then both are acknowledged.
C_SEQ, B_SEQ = 1000, 5000
CLOSES: dict[str, tuple[tuple[bool, int, int, int], ...]] = {
    "client first": (
        (False, FIN | ACK, C_SEQ, B_SEQ),
        (True, FIN | ACK, B_SEQ, C_SEQ + 1),
        (False, ACK, C_SEQ + 1, B_SEQ + 1),
    ),
    "backend first": (
        (True, FIN | ACK, B_SEQ, C_SEQ),
        (False, FIN | ACK, C_SEQ, B_SEQ + 1),
        (True, ACK, B_SEQ + 1, C_SEQ + 1),
    ),
    "simultaneous": (
        (False, FIN | ACK, C_SEQ, B_SEQ),
        (True, FIN | ACK, B_SEQ, C_SEQ),
        (False, ACK, C_SEQ + 1, B_SEQ + 1),
        (True, ACK, B_SEQ + 1, C_SEQ + 1),
    ),
}


def assert_closed(config: ModelConfig, order: str, snat: bool, after: SessionLike | None) -> None:
    """What a whole close leaves: nothing when the session is released (the client closed
    first, or no SNAT port to protect), else a CLOSED session that lives tcpTimeWait."""
    if order == "client first" or not snat:
        assert after is None, f"{order}: not released: {after}"
        return
    assert after is not None and after.flags & CLOSED, f"{order}: {after}"
    assert timeout_ns(config, IPPROTO_TCP, after.flags) == TIMEOUTS["tcpTimeWait"] * NS


def snat_section(ports: tuple[int, int], max_sessions: int, **extra: Any) -> dict[str, Any]:
    """The node file's `snat`: a small port range, few sessions, the machines' timeouts."""
    return {
        "portRange": list(ports),
        "maxSessions": max_sessions,
        **extra,
        "timeouts": {k: f"{v}s" for k, v in TIMEOUTS.items()},
    }


def assert_ports_held(
    config: ModelConfig,
    flow: object,
    key: FlowKey,
    h: int,
    now: int,
    holder: Callable[[int], SessionLike | None],
) -> None:
    """A drop for exhaustion: every port the flow (`key`, hash `h`) may probe is held by a
    live session (`holder(port)`: the session translated to it, None when there is none)."""
    for attempt in range(PROBE_LIMIT):
        port = candidate_port(h, attempt, config.port_min, config.port_count)
        session = holder(port)
        assert session is not None, f"port {port} was free, yet {flow} was dropped"
        assert session.nat_port == port and not expired(config, key.proto, session, now), (
            f"port {port} was stale, yet {flow} was dropped"
        )


class AgingMachine(RuleBasedStateMachine):
    """Sessions idle past their timeouts, in the kernel and the model alike."""

    kind: ClassVar[str] = "specialized"
    conns = Bundle("conns")
    diff: Any  # Differential | SvcDifferential

    @initialize()
    def fresh_tables(self) -> None:
        assert not self.diff.state.forward

    @rule(
        conn=conns,
        how=st.sampled_from(
            ["transitory", "established", "time_wait", "close", "udp", "icmp", "a bit"]
        ),
    )
    def idle(self, conn: Any, how: str) -> None:
        """Let one session idle: its last_seen moves back, in the kernel and the model."""
        session = self.diff.state.forward.get(conn.key)
        if session is None:
            return
        seconds = {
            "transitory": TIMEOUTS["tcpTransitory"] + 1,
            "established": TIMEOUTS["tcpEstablished"] + 1,
            "time_wait": TIMEOUTS["tcpTimeWait"] + 1,
            "close": TIMEOUTS["tcpClose"] + 1,
            "udp": TIMEOUTS["udp"] + 1,
            "icmp": TIMEOUTS["icmp"] + 1,
            "a bit": 5,
        }[how]
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
    generic: type[AgingMachine] = type(
        f"Generic{machine.__name__}", (machine,), {"kind": "generic"}
    )
    cases = (machine.TestCase, generic.TestCase)
    for case in cases:
        case.settings = settings(stateful_step_count=steps)
    return cases

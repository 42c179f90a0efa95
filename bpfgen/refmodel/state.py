"""Session state: the forward table (the sessions) and the reverse table, as dicts.

docs/datapath.md "Sessions and time". Addresses and ports are host-order integers.
The tables have the capacity of the kernel's hash maps (snat.maxSessions each): an
insert of a new key into a full table is refused, a replacement of an existing key
never is (as with BPF_MAP_TYPE_HASH).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from bpfgen.refmodel.config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ModelConfig

__all__ = [
    "CLOSING",
    "SEEN_REPLY",
    "FlowKey",
    "Origin",
    "Session",
    "SessionState",
    "expired",
    "timeout_ns",
]

# Session flags. The spec names them but does not give their bits; the C agrees
# (BPFGEN_SESSION_SEEN_REPLY, BPFGEN_SESSION_CLOSING in bpfgen_types.h).
SEEN_REPLY = 0x1
CLOSING = 0x2


class FlowKey(NamedTuple):
    """A tuple: forward key (original tuple) or reverse key (reply tuple)."""

    saddr: int
    daddr: int
    sport: int
    dport: int
    proto: int


class Origin(NamedTuple):
    """A reverse entry's value: the original source of the flow."""

    addr: int
    port: int


class Session(NamedTuple):
    """A forward entry: the session."""

    last_seen_ns: int
    nat_addr: int
    nat_port: int
    flags: int


@dataclass
class SessionState:
    """Both tables, mutated in place by the programs."""

    capacity: int
    forward: dict[FlowKey, Session] = field(default_factory=dict)
    reverse: dict[FlowKey, Origin] = field(default_factory=dict)

    @classmethod
    def for_config(cls, config: ModelConfig) -> SessionState:
        return cls(capacity=config.max_sessions)

    def insert_forward(self, key: FlowKey, session: Session) -> bool:
        """Create or replace; False (nothing changed) when a new key finds the table full."""
        if key not in self.forward and len(self.forward) >= self.capacity:
            return False
        self.forward[key] = session
        return True

    def insert_reverse_new(self, key: FlowKey, origin: Origin) -> bool | None:
        """Create only (BPF_NOEXIST). None: the key exists; False: the table is full."""
        if key in self.reverse:
            return None
        if len(self.reverse) >= self.capacity:
            return False
        self.reverse[key] = origin
        return True

    def copy(self) -> SessionState:
        return SessionState(self.capacity, dict(self.forward), dict(self.reverse))


def timeout_ns(config: ModelConfig, proto: int, flags: int) -> int:
    if proto == IPPROTO_TCP:
        if flags & SEEN_REPLY and not flags & CLOSING:
            return config.timeout_tcp_established_ns
        return config.timeout_tcp_transitory_ns
    if proto == IPPROTO_UDP:
        return config.timeout_udp_ns
    if proto == IPPROTO_ICMP:
        return config.timeout_icmp_ns
    raise ValueError(f"no session timeout for protocol {proto}")


def expired(config: ModelConfig, proto: int, session: Session, now_ns: int) -> bool:
    """now > last_seen and now - last_seen > timeout (a clock behind last_seen: not expired)."""
    idle = now_ns - session.last_seen_ns
    return idle > 0 and idle > timeout_ns(config, proto, session.flags)

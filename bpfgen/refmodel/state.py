"""Session state: the forward table (the sessions) and the reverse table, as dicts.

docs/datapath.md "Sessions and time". Addresses and ports are host-order integers.
The tables have the capacity of the kernel's hash maps (snat.maxSessions each): an
insert of a new key into a full table is refused, a replacement of an existing key
never is (as with BPF_MAP_TYPE_HASH).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, NamedTuple, Protocol, Self, TypeVar

from bpfgen.refmodel.ipvs_config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ModelConfig

__all__ = [
    "CLOSED",
    "CLOSING",
    "FIN_ACKED",
    "FIN_ORIG",
    "FIN_REPLY",
    "REPLY_FIRST",
    "RST",
    "SEEN_REPLY",
    "FlowKey",
    "Origin",
    "Session",
    "SessionLike",
    "SessionState",
    "Tables",
    "expired",
    "released",
    "timeout_ns",
]

# Session flags. The spec names them but does not give their bits; the C agrees
# (BPFGEN_SESSION_* in bpfgen_types.h). docs/datapath.md "The TCP session lifecycle".
SEEN_REPLY = 0x01  # a reply passed
CLOSING = 0x02  # TCP: a FIN or RST passed
FIN_ORIG = 0x04  # a FIN passed in the orig direction (client -> service)
FIN_REPLY = 0x08  # a FIN passed in the reply direction
REPLY_FIRST = 0x10  # the reply side sent the first FIN
FIN_ACKED = 0x20  # the second FIN acknowledged the first: its sender closed passively
CLOSED = 0x40  # the first closer acknowledged the second FIN
RST = 0x80  # a RST passed


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
    fin_ack: int = 0  # TCP: the acknowledgment number of the latest FIN


class SessionLike(Protocol):
    """What expiry and port probing read of a forward entry (either mode's)."""

    @property
    def last_seen_ns(self) -> int: ...
    @property
    def nat_addr(self) -> int: ...
    @property
    def nat_port(self) -> int: ...
    @property
    def flags(self) -> int: ...
    @property
    def fin_ack(self) -> int: ...


S = TypeVar("S", bound=SessionLike)
R = TypeVar("R")
V = TypeVar("V")


def _insert_any(table: dict[FlowKey, V], capacity: int, key: FlowKey, value: V) -> bool:
    """BPF_ANY into a hash map of `capacity`: a new key is refused when it is full."""
    if key not in table and len(table) >= capacity:
        return False
    table[key] = value
    return True


@dataclass
class Tables(Generic[S, R]):
    """A forward and a reverse table of one capacity each, mutated in place by the programs."""

    capacity: int
    forward: dict[FlowKey, S] = field(default_factory=dict)
    reverse: dict[FlowKey, R] = field(default_factory=dict)

    def insert_forward(self, key: FlowKey, session: S) -> bool:
        """Create or replace; False (nothing changed) when a new key finds the table full."""
        return _insert_any(self.forward, self.capacity, key, session)

    def insert_reverse(self, key: FlowKey, value: R) -> bool:
        """Create or replace (BPF_ANY); False when a new key finds the table full."""
        return _insert_any(self.reverse, self.capacity, key, value)

    def insert_reverse_new(self, key: FlowKey, value: R) -> bool | None:
        """Create only (BPF_NOEXIST). None: the key exists; False: the table is full."""
        if key in self.reverse:
            return None
        if len(self.reverse) >= self.capacity:
            return False
        self.reverse[key] = value
        return True

    def copy(self) -> Self:
        return type(self)(self.capacity, dict(self.forward), dict(self.reverse))


class SessionState(Tables[Session, Origin]):
    """The ipvs mode's tables: bpfgen_snat_v4 and bpfgen_rsnat_v4."""

    @classmethod
    def for_config(cls, config: ModelConfig) -> SessionState:
        return cls(capacity=config.max_sessions)


def timeout_ns(config: ModelConfig, proto: int, flags: int) -> int:
    """docs/datapath.md "The TCP session lifecycle": RST, then closed, then established."""
    if proto == IPPROTO_TCP:
        if flags & RST:
            return config.timeout_tcp_close_ns
        if flags & CLOSED:
            return config.timeout_tcp_time_wait_ns
        if flags & SEEN_REPLY and not flags & CLOSING:
            return config.timeout_tcp_established_ns
        return config.timeout_tcp_transitory_ns
    if proto == IPPROTO_UDP:
        return config.timeout_udp_ns
    if proto == IPPROTO_ICMP:
        return config.timeout_icmp_ns
    raise ValueError(f"no session timeout for protocol {proto}")


def expired(config: ModelConfig, proto: int, session: SessionLike, now_ns: int) -> bool:
    """now > last_seen and now - last_seen > timeout (a clock behind last_seen: not expired)."""
    idle = now_ns - session.last_seen_ns
    return idle > 0 and idle > timeout_ns(config, proto, session.flags)


def released(session: SessionLike) -> bool:
    """Closed, with nothing to protect: no SNAT port, or the reply side (the only one that
    sees the SNAT port) closed passively, so holds no TIME_WAIT on it. Deleted at once."""
    if not session.flags & CLOSED:
        return False
    return not session.nat_port or session.flags & (FIN_ACKED | REPLY_FIRST) == FIN_ACKED

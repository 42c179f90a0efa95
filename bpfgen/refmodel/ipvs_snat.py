"""The three programs of docs/datapath.md as Python functions.

    result = egress(config, frame, state, now_ns, mark)

Each takes the model's configuration, an Ethernet frame, the session state (mutated
in place), the time (`bpf_ktime_get_ns()`, CLOCK_MONOTONIC) and skb->mark, and
returns the verdict, the frame and mark as the program leaves them, the counter
increments and the sessions whose last_seen it set to `now_ns`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from bpfgen.refmodel.checksum import (
    ChecksumDisagreement,
    checksum,
    incremental,
    pseudo_header,
    valid,
    words,
)
from bpfgen.refmodel.hashing import candidate_port, tuple_hash
from bpfgen.refmodel.ipvs_config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ModelConfig, Policy
from bpfgen.refmodel.packet import (
    ETH_HLEN,
    ICMP_ECHO,
    ICMP_ECHOREPLY,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Kind,
    Parsed,
    parse,
)
from bpfgen.refmodel.state import (
    CLOSED,
    CLOSING,
    FIN_ACKED,
    FIN_ORIG,
    FIN_REPLY,
    REPLY_FIRST,
    RST,
    SEEN_REPLY,
    FlowKey,
    Origin,
    Session,
    SessionLike,
    SessionState,
    Tables,
    expired,
    released,
)

__all__ = [
    "COUNTER_NAMES",
    "PROGRAMS",
    "PROBE_LIMIT",
    "Allocation",
    "Counter",
    "Program",
    "Result",
    "Verdict",
    "allocate_port",
    "egress",
    "ingress",
    "ingress_xdp",
    "retval",
    "rewrite",
    "touched",
]

PROBE_LIMIT = 128  # SNAT ports tried per new flow


class Verdict(enum.Enum):
    PASS = "pass"
    DROP = "drop"
    REDIRECT = "redirect"  # bpf mode, tc: bpf_redirect / bpf_redirect_neigh; XDP: XDP_TX


TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
XDP_DROP, XDP_PASS, XDP_TX = 1, 2, 3


def retval(verdict: Verdict, xdp: bool) -> int:
    """The program's return code for a verdict (tc: TC_ACT_OK/SHOT/REDIRECT, XDP:
    XDP_PASS/DROP/TX: the bpf mode's svc_xdp sends back out of the ingress device)."""
    if xdp:
        return {Verdict.PASS: XDP_PASS, Verdict.DROP: XDP_DROP, Verdict.REDIRECT: XDP_TX}[verdict]
    return {Verdict.PASS: TC_ACT_OK, Verdict.DROP: TC_ACT_SHOT, Verdict.REDIRECT: TC_ACT_REDIRECT}[
        verdict
    ]


class Counter(enum.IntEnum):
    """Indices of the per-CPU array bpfgen_counters."""

    PASS = 0
    MALFORMED = 1
    MARKED = 2
    SNAT_NEW = 3
    SNAT_HIT = 4
    RSNAT = 5
    RSNAT_MISS = 6
    RECLAIMED = 7
    DROP_EXHAUSTED = 8
    DROP_MAP_FULL = 9
    DROP_FRAGMENT = 10
    DROP_REWRITE = 11
    DROP_SOURCE_RANGE = 12  # loadBalancerSourceRanges: both modes, before any translation
    DROP_NO_LOCAL_ENDPOINT = 13  # Local traffic policy, endpoints only on other nodes
    DROP_VIP_PORT = 14  # ipvs mode: TCP/UDP to a VIP, at no frontend's port


COUNTER_NAMES = tuple(c.name.lower() for c in Counter)


@dataclass(frozen=True)
class Result:
    verdict: Verdict
    packet: bytes
    mark: int
    counters: tuple[int, ...]  # increments, indexed by Counter (bpf mode: svc.SvcCounter)
    touched: frozenset[FlowKey]  # forward keys whose last_seen became now_ns
    names: tuple[str, ...] = COUNTER_NAMES  # of the counters, by index

    def counter_deltas(self) -> dict[str, int]:
        return {self.names[i]: n for i, n in enumerate(self.counters) if n}


def _result(
    verdict: Verdict,
    packet: bytes,
    mark: int,
    *counters: Counter,
    touched: frozenset[FlowKey] = frozenset(),
) -> Result:
    deltas = [0] * len(Counter)
    for c in counters:
        deltas[c] += 1
    return Result(verdict, packet, mark, tuple(deltas), touched)


# --------------------------------------------------------------------------- sessions


def _touch(session: Session, p: Parsed, now_ns: int, extra: int, forward: bool) -> Session:
    flags, fin_ack = touched(session.flags, session.fin_ack, p, extra, forward)
    return session._replace(last_seen_ns=now_ns, flags=flags, fin_ack=fin_ack)


def touched(flags: int, fin_ack: int, p: Parsed, extra: int, forward: bool) -> tuple[int, int]:
    """A session's flags and fin_ack after packet `p` (docs/datapath.md "The TCP session
    lifecycle"); `extra` is SEEN_REPLY for a reply. A bare SYN in the orig direction starts
    a new incarnation of the tuple (flags 0, fin_ack kept)."""
    flags |= extra
    if p.proto != IPPROTO_TCP:
        return flags, fin_ack
    if forward and p.tcp_flags & TCP_SYN and not p.tcp_flags & (TCP_ACK | TCP_FIN | TCP_RST):
        return 0, fin_ack
    mine = FIN_ORIG if forward else FIN_REPLY
    both = FIN_ORIG | FIN_REPLY
    acks = bool(p.tcp_flags & TCP_ACK) and p.tcp_ack == fin_ack
    if p.tcp_flags & TCP_RST:
        flags |= CLOSING | RST
    if p.tcp_flags & TCP_FIN and not flags & mine:
        if not flags & both:
            if not forward:
                flags |= REPLY_FIRST  # the first FIN: who sent it
        elif acks:
            flags |= FIN_ACKED  # the second FIN acknowledges the first
        return flags | mine | CLOSING, p.tcp_end
    first_closer_is_reply = bool(flags & REPLY_FIRST)
    if flags & both == both and acks and first_closer_is_reply == (not forward):
        flags |= CLOSED  # the first closer acknowledged the second FIN
    return flags, fin_ack


# --------------------------------------------------------------------------- rewriting


def _ip_total_end(frame: bytes, p: Parsed) -> int | None:
    """End of the L4 segment by the IP total length, when it is consistent with the frame."""
    end = ETH_HLEN + int.from_bytes(frame[ETH_HLEN + 2 : ETH_HLEN + 4], "big")
    if end > len(frame) or end < p.l4 + p.l4_header_len:
        return None
    return end


def _l4_checksum_offset(proto: int) -> int:
    return {IPPROTO_TCP: 16, IPPROTO_UDP: 6, IPPROTO_ICMP: 2}[proto]


def _l4_covered(frame: bytes, p: Parsed, end: int, zero_field: bool) -> bytes:
    """What the L4 checksum covers: pseudo-header (TCP, UDP) and segment."""
    segment = bytearray(frame[p.l4 : end])
    if zero_field:
        field = _l4_checksum_offset(p.proto)
        segment[field : field + 2] = b"\0\0"
    if p.proto == IPPROTO_ICMP:
        return bytes(segment)
    saddr = int.from_bytes(frame[ETH_HLEN + 12 : ETH_HLEN + 16], "big")
    daddr = int.from_bytes(frame[ETH_HLEN + 16 : ETH_HLEN + 20], "big")
    return pseudo_header(saddr, daddr, p.proto, end - p.l4) + bytes(segment)


def _l4_valid(frame: bytes, p: Parsed) -> bool:
    """The input's L4 checksum is right (UDP: or absent)."""
    end = _ip_total_end(frame, p)
    if end is None:
        return False  # the segment is not well defined: only the incremental rule applies
    field = p.l4 + _l4_checksum_offset(p.proto)
    if p.proto == IPPROTO_UDP and frame[field : field + 2] == b"\0\0":
        return True
    return valid(_l4_covered(frame, p, end, zero_field=False))


def rewrite(
    frame: bytes,
    p: Parsed,
    *,
    saddr: int | None = None,
    daddr: int | None = None,
    sport: int | None = None,
    dport: int | None = None,
) -> bytes:
    """Rewrite addresses and ports (ICMP: the identifier) and fix every checksum.

    For ICMP the identifier is the tuple's sport in an echo request and its dport in
    an echo reply; a new value for the other side has no field to go to.

    An address is always written, even with its own value, and the checksums that
    cover it are updated (the update may turn 0xffff into 0x0000: the same number);
    ICMP's checksum, which covers no address, is updated only when the identifier
    changes.
    """
    out = bytearray(frame)
    addr_changes: list[tuple[int, int]] = []
    port_changes: list[tuple[int, int]] = []
    if saddr is not None:
        addr_changes.append((p.saddr, saddr))
        out[ETH_HLEN + 12 : ETH_HLEN + 16] = saddr.to_bytes(4, "big")
    if daddr is not None:
        addr_changes.append((p.daddr, daddr))
        out[ETH_HLEN + 16 : ETH_HLEN + 20] = daddr.to_bytes(4, "big")
    if p.proto == IPPROTO_ICMP:
        ident = sport if p.icmp_type == ICMP_ECHO else dport
        old = p.sport if p.icmp_type == ICMP_ECHO else p.dport
        # Only ICMP's identifier is covered by its checksum: an unchanged identifier
        # leaves the checksum as it is (TCP and UDP always see an address update).
        if ident is not None and ident != old:
            port_changes.append((old, ident))
            out[p.l4 + 4 : p.l4 + 6] = ident.to_bytes(2, "big")
    else:
        if sport is not None:
            port_changes.append((p.sport, sport))
            out[p.l4 : p.l4 + 2] = sport.to_bytes(2, "big")
        if dport is not None:
            port_changes.append((p.dport, dport))
            out[p.l4 + 2 : p.l4 + 4] = dport.to_bytes(2, "big")

    old_addr_words = [w for old, _ in addr_changes for w in words(old, 4)]
    new_addr_words = [w for _, new in addr_changes for w in words(new, 4)]
    old_port_words = [old for old, _ in port_changes]
    new_port_words = [new for _, new in port_changes]

    # IPv4 header checksum: the addresses.
    ip_field = ETH_HLEN + 10
    header_end = ETH_HLEN + 4 * p.ihl
    if addr_changes:
        ip_valid = valid(frame[ETH_HLEN:header_end])
        old = int.from_bytes(frame[ip_field : ip_field + 2], "big")
        new = incremental(old, old_addr_words, new_addr_words)
        if ip_valid:
            zeroed = bytearray(out[ETH_HLEN:header_end])
            zeroed[10:12] = b"\0\0"
            scratch = checksum(bytes(zeroed))
            if scratch != new:
                raise ChecksumDisagreement(
                    f"IPv4 header: scratch {scratch:#06x}, incremental {new:#06x}"
                )
        out[ip_field : ip_field + 2] = new.to_bytes(2, "big")

    # L4 checksum: TCP and UDP cover the addresses (pseudo-header) and the ports,
    # ICMP only the identifier.
    l4_field = p.l4 + _l4_checksum_offset(p.proto)
    old_l4 = int.from_bytes(frame[l4_field : l4_field + 2], "big")
    if p.proto == IPPROTO_ICMP:
        old_words, new_words = old_port_words, new_port_words
    else:
        old_words = old_addr_words + old_port_words
        new_words = new_addr_words + new_port_words
    if not old_words or (p.proto == IPPROTO_UDP and old_l4 == 0):
        return bytes(out)  # nothing covered changed, or UDP without checksum
    l4_valid = _l4_valid(frame, p)
    # UDP: 0 would mean "no checksum". An ICMP echo reply (the one whose identifier
    # reverse SNAT rewrites) may become all zeros, valid only with 0xffff, which no
    # incremental update can tell; 0xffff is valid whenever 0x0000 is. An echo
    # request is never all zeros. (docs/testing.md, "Checksums")
    never_zero = p.proto == IPPROTO_UDP or (
        p.proto == IPPROTO_ICMP and p.icmp_type == ICMP_ECHOREPLY
    )
    new_l4 = incremental(old_l4, old_words, new_words)
    if never_zero and new_l4 == 0:
        new_l4 = 0xFFFF
    if l4_valid:
        end = _ip_total_end(frame, p)
        assert end is not None
        scratch = checksum(_l4_covered(bytes(out), p, end, zero_field=True))
        if never_zero and scratch == 0:
            scratch = 0xFFFF
        if scratch != new_l4:
            raise ChecksumDisagreement(
                f"L4 protocol {p.proto}: scratch {scratch:#06x}, incremental {new_l4:#06x}"
            )
    out[l4_field : l4_field + 2] = new_l4.to_bytes(2, "big")
    return bytes(out)


# --------------------------------------------------------------------------- SNAT ports

S = TypeVar("S", bound=SessionLike)
R = TypeVar("R")


@dataclass(frozen=True)
class Allocation:
    """The outcome of a port search: a reverse key now ours, or why there is none."""

    key: FlowKey | None
    reclaimed: bool = False
    drop: Counter | None = None  # DROP_EXHAUSTED, DROP_MAP_FULL


def allocate_port(
    config: ModelConfig,
    state: Tables[S, R],
    h: int,
    proto: int,
    now_ns: int,
    value: R,
    reverse_key: Callable[[int], FlowKey],
    owner: Callable[[R], FlowKey],
    keep: int,
) -> Allocation:
    """docs/datapath.md "SNAT", new flow: first `keep` (the flow's source port) when it is in
    the range and free; then for attempt 0..127, insert `reverse_key(port)`
    -> `value` unless it exists; a holder whose session (`owner` of its value) is gone,
    translated to another port or expired is reclaimed (an expired session deleted).
    Shared by both modes: only the reverse key and the owner differ."""
    if config.in_port_range(keep):
        # Port preservation: the flow's own source port, when no flow holds it.
        kept = reverse_key(keep)
        inserted = state.insert_reverse_new(kept, value)
        if inserted is not None:
            return Allocation(kept) if inserted else Allocation(None, drop=Counter.DROP_MAP_FULL)
    for attempt in range(PROBE_LIMIT):
        port = candidate_port(h, attempt, config.port_min, config.port_count)
        key = reverse_key(port)
        inserted = state.insert_reverse_new(key, value)
        if inserted is False:
            return Allocation(None, drop=Counter.DROP_MAP_FULL)
        if inserted:
            return Allocation(key)
        holder_key = owner(state.reverse[key])
        holder = state.forward.get(holder_key)
        holder_expired = holder is not None and expired(config, proto, holder, now_ns)
        stale = (
            holder is None
            or holder.nat_addr != key.daddr
            or holder.nat_port != port
            or holder_expired
        )
        if not stale:
            continue
        if holder_expired:
            del state.forward[holder_key]
        del state.reverse[key]
        state.reverse[key] = value
        return Allocation(key, reclaimed=True)
    return Allocation(None, drop=Counter.DROP_EXHAUSTED)


# --------------------------------------------------------------------------- programs


def _reverse_snat(
    config: ModelConfig, frame: bytes, p: Parsed, state: SessionState, now_ns: int, mark: int
) -> Result:
    """Ingress step 2, once the destination is a node address and an SNAT port."""
    origin = state.reverse.get(FlowKey(p.saddr, p.daddr, p.sport, p.dport, p.proto))
    if origin is None:
        return _result(Verdict.PASS, frame, mark, Counter.RSNAT_MISS)
    key = FlowKey(origin.addr, p.saddr, origin.port, p.sport, p.proto)
    session = state.forward.get(key)
    if (
        session is None
        or session.nat_addr != p.daddr
        or session.nat_port != p.dport
        or expired(config, p.proto, session, now_ns)
    ):
        return _result(Verdict.PASS, frame, mark, Counter.RSNAT_MISS)
    state.forward[key] = touched_session = _touch(session, p, now_ns, SEEN_REPLY, forward=False)
    if released(touched_session):
        del state.forward[key]
        del state.reverse[FlowKey(p.saddr, p.daddr, p.sport, p.dport, p.proto)]
    out = rewrite(frame, p, daddr=origin.addr, dport=origin.port)
    return _result(Verdict.PASS, out, mark, Counter.RSNAT, touched=frozenset([key]))


def _ingress_common(
    config: ModelConfig, frame: bytes, state: SessionState, now_ns: int, mark: int
) -> tuple[Parsed, Result | None]:
    """Steps 1 and 2 of tc ingress; None: go on to classify."""
    p = parse(config, frame)
    if p.kind is Kind.MALFORMED:
        return p, _result(Verdict.PASS, frame, mark, Counter.MALFORMED)
    if p.kind is not Kind.OURS:  # not ours, fragment
        return p, _result(Verdict.PASS, frame, mark, Counter.PASS)
    if config.in_port_range(p.dport) and config.is_node_addr(p.daddr):
        return p, _reverse_snat(config, frame, p, state, now_ns, mark)
    return p, None


def ingress(
    config: ModelConfig, frame: bytes, state: SessionState, now_ns: int, mark: int = 0
) -> Result:
    """bpfgen_ingress (tc): reverse SNAT of replies, then mark what needs SNAT at egress."""
    p, done = _ingress_common(config, frame, state, now_ns, mark)
    if done is not None:
        return done
    policy = config.lookup_frontend(p.daddr, p.dport, p.proto)
    if policy is None:
        if p.proto != IPPROTO_ICMP and p.daddr in config.vips:
            return _result(Verdict.DROP, frame, mark, Counter.DROP_VIP_PORT)
        return _result(Verdict.PASS, frame, mark, Counter.PASS)
    if not config.source_allowed(p.saddr, p.daddr, p.dport, p.proto):
        return _result(Verdict.DROP, frame, mark, Counter.DROP_SOURCE_RANGE)
    if policy is Policy.DROP:
        return _result(Verdict.DROP, frame, mark, Counter.DROP_NO_LOCAL_ENDPOINT)
    if policy is Policy.ALWAYS or (
        policy is Policy.IF_OUTSIDE and not config.in_cluster_pods(p.saddr)
    ):
        return _result(Verdict.PASS, frame, mark | config.mark, Counter.MARKED)
    return _result(Verdict.PASS, frame, mark, Counter.PASS)


def ingress_xdp(
    config: ModelConfig, frame: bytes, state: SessionState, now_ns: int, mark: int = 0
) -> Result:
    """bpfgen_ingress_xdp: reverse SNAT only; XDP has no mark (`mark` comes back as given)."""
    _, done = _ingress_common(config, frame, state, now_ns, mark)
    if done is not None:
        return done
    return _result(Verdict.PASS, frame, mark, Counter.PASS)


def egress(
    config: ModelConfig, frame: bytes, state: SessionState, now_ns: int, mark: int = 0
) -> Result:
    """bpfgen_egress (tc): SNAT of marked, hairpin and node-to-ClusterIP packets."""
    marked = bool(mark & config.mark)
    mark &= ~config.mark & 0xFFFFFFFF
    p = parse(config, frame)
    if p.kind is Kind.FRAGMENT:
        if marked:
            return _result(Verdict.DROP, frame, mark, Counter.DROP_FRAGMENT)
        return _result(Verdict.PASS, frame, mark, Counter.PASS)
    if p.kind is Kind.MALFORMED:
        return _result(Verdict.PASS, frame, mark, Counter.MALFORMED)
    if p.kind is Kind.NOT_OURS:
        return _result(Verdict.PASS, frame, mark, Counter.PASS)
    if not marked:
        if p.proto == IPPROTO_ICMP and p.icmp_type == ICMP_ECHOREPLY:
            return _result(Verdict.PASS, frame, mark, Counter.PASS)
        hairpin = p.saddr == p.daddr and config.in_cluster_pods(p.saddr)
        node_to_cluster_ip = (
            config.in_service_cidr(p.saddr)
            and config.lookup_frontend(p.saddr, p.sport, p.proto) is None
        )
        if not (hairpin or node_to_cluster_ip):
            return _result(Verdict.PASS, frame, mark, Counter.PASS)
    return _snat(config, frame, p, state, now_ns, mark)


def _forget_reverse(state: SessionState, key: FlowKey, session: Session) -> None:
    """Drop a session's reverse entry, unless another flow took it over."""
    reverse = FlowKey(key.daddr, session.nat_addr, key.dport, session.nat_port, key.proto)
    if state.reverse.get(reverse) == Origin(key.saddr, key.sport):
        del state.reverse[reverse]


def _sweep(config: ModelConfig, state: SessionState, now_ns: int) -> None:
    """docs/datapath.md "Sessions and time", the sweep: on a full map, every expired session
    goes, with its reverse entry when that still points back to it."""
    for key, session in list(state.forward.items()):
        if expired(config, key.proto, session, now_ns):
            _forget_reverse(state, key, session)
            del state.forward[key]


def _snat(
    config: ModelConfig, frame: bytes, p: Parsed, state: SessionState, now_ns: int, mark: int
) -> Result:
    key = FlowKey(p.saddr, p.daddr, p.sport, p.dport, p.proto)
    session = state.forward.get(key)
    if session is not None:
        if not expired(config, p.proto, session, now_ns):
            state.forward[key] = touched_session = _touch(session, p, now_ns, 0, forward=True)
            if released(touched_session):
                _forget_reverse(state, key, session)
                del state.forward[key]
            out = rewrite(frame, p, saddr=session.nat_addr, sport=session.nat_port)
            return _result(Verdict.PASS, out, mark, Counter.SNAT_HIT, touched=frozenset([key]))
        _forget_reverse(state, key, session)

    # A new flow: hash, then bounded probing of the port range.
    h = tuple_hash(config.hash_seed, p.saddr, p.daddr, p.sport, p.dport, p.proto)
    nat_addr = config.node_addrs[h % len(config.node_addrs)]
    got = allocate_port(
        config,
        state,
        h,
        p.proto,
        now_ns,
        Origin(p.saddr, p.sport),
        lambda port: FlowKey(p.daddr, nat_addr, p.dport, port, p.proto),
        lambda holder: FlowKey(holder.addr, p.daddr, holder.port, p.dport, p.proto),
        keep=p.sport,
    )
    if got.drop is not None:
        if got.drop is Counter.DROP_MAP_FULL:
            _sweep(config, state, now_ns)
        return _result(Verdict.DROP, frame, mark, got.drop)
    chosen, reclaimed = got.key, got.reclaimed
    assert chosen is not None

    new = _touch(Session(now_ns, nat_addr, chosen.dport, 0), p, now_ns, 0, forward=True)
    if not state.insert_forward(key, new):
        del state.reverse[chosen]
        _sweep(config, state, now_ns)
        return _result(Verdict.DROP, frame, mark, Counter.DROP_MAP_FULL)
    out = rewrite(frame, p, saddr=nat_addr, sport=chosen.dport)
    # "Counters": reclaimed comes in addition to snat_new, never with a drop.
    extra = (Counter.RECLAIMED,) if reclaimed else ()
    return _result(Verdict.PASS, out, mark, *extra, Counter.SNAT_NEW, touched=frozenset([key]))


Program = Callable[[ModelConfig, bytes, SessionState, int, int], Result]

# By the manifest's program names.
PROGRAMS: dict[str, Program] = {
    "ingress": ingress,
    "egress": egress,
    "ingress_xdp": ingress_xdp,
}

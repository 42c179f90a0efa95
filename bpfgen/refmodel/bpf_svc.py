"""The bpf mode's `bpfgen_svc_in` (tc ingress) and `bpfgen_svc_xdp` (XDP, uplink with
`hook: xdp`) as Python functions, from docs/datapath-bpf.md.

    result = svc_in(config, frame, state, now_ns, fib=no_route)
    result = svc_xdp(config, frame, state, now_ns, route=no_xdp_route)

`config` is `svc_config(inputs, kind)`, `state` the session maps and the ClientIP
affinity map (`SvcState`: bpfgen_nat_v4, bpfgen_rnat_v4 and bpfgen_affinity_v4,
mutated in place). Parsing, hashing, SNAT port allocation, expiry, touching and
checksum updates are the ipvs mode's (docs/datapath.md), shared with `ipvs_snat`.
Both programs are one code but for what happens to a translated packet ("XDP").

Forwarding depends on the FIB of the network namespace the program runs in:
`fib(daddr, saddr, proto)` says what `bpf_fib_lookup` answers for the translated
packet. The model cannot know a host's routes; the tests run the kernel side in a
network namespace of their own without routes, where every lookup fails
(`no_route`: the packet goes to the stack, counted `fib_fallback`, TTL kept). XDP
asks less: `route(daddr, saddr, proto)` gives the MACs when the FIB's route leaves
through the ingress device with a resolved neighbour, else None (`no_xdp_route`: the
packet is passed untranslated to tc, counted `xdp_to_tc`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import NamedTuple, Self

from bpfgen.refmodel import packet
from bpfgen.refmodel.bpf_config import Endpoint, SvcConfig, SvcFrontend
from bpfgen.refmodel.checksum import checksum, incremental, pseudo_header
from bpfgen.refmodel.hashing import tuple_hash
from bpfgen.refmodel.ipvs_config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Policy
from bpfgen.refmodel.ipvs_snat import (
    COUNTER_NAMES,
    Counter,
    Result,
    Verdict,
    allocate_port,
    rewrite,
    touched,
)
from bpfgen.refmodel.packet import ETH_HLEN, ICMP_ECHO, Kind, Parsed, parse
from bpfgen.refmodel.state import SEEN_REPLY, FlowKey, Tables, expired, released

__all__ = [
    "SVC_COUNTER_NAMES",
    "Affinity",
    "AffinityKey",
    "Fib",
    "FibResult",
    "NatSession",
    "Rnat",
    "SvcCounter",
    "SvcState",
    "XdpRoute",
    "affinity_live",
    "no_route",
    "no_xdp_route",
    "select_backend",
    "svc_in",
    "svc_xdp",
]


class SvcCounter(enum.IntEnum):
    """The counter indices of the bpf mode: the ipvs mode's fifteen, then enum
    bpfgen_svc_counter."""

    PASS = 0
    MALFORMED = 1
    SNAT_NEW = 3
    RECLAIMED = 7
    DROP_EXHAUSTED = 8
    DROP_MAP_FULL = 9
    DROP_SOURCE_RANGE = 12
    DROP_NO_LOCAL_ENDPOINT = 13
    DROP_VIP_PORT = 14  # the ipvs mode's slot: a VIP port's reject that has no answer
    DNAT_NEW = 15
    DNAT_HIT = 16
    RDNAT = 17
    REJECT_NO_BACKEND = 18
    DROP_BACKEND_GONE = 19
    FIB_FALLBACK = 20
    REDIRECT = 21
    ICMP_ECHO_VIP = 22
    AFFINITY_HIT = 23
    XDP_TO_TC = 24
    DROP_NO_BACKEND = 25
    REJECT_VIP_PORT = 26  # to a VIP in the service CIDR, at no frontend's port
    DROP_UNALLOCATED = 27  # to a service-CIDR address that is no VIP


SVC_COUNTER_NAMES = COUNTER_NAMES + (
    "dnat_new",
    "dnat_hit",
    "rdnat",
    "reject_no_backend",
    "drop_backend_gone",
    "fib_fallback",
    "redirect",
    "icmp_echo_vip",
    "affinity_hit",
    "xdp_to_tc",
    "drop_no_backend",
    "reject_vip_port",
    "drop_unallocated",
)


class NatSession(NamedTuple):
    """bpfgen_nat_v4 value (struct bpfgen_nat_entry); nat addr/port 0: no SNAT."""

    last_seen_ns: int
    nat_addr: int
    nat_port: int
    flags: int
    backend_addr: int
    backend_port: int
    backend_gen: int = 0  # reserved, always 0
    fin_ack: int = 0  # TCP: the acknowledgment number of the latest FIN (struct field 5)


class Rnat(NamedTuple):
    """bpfgen_rnat_v4 value (struct bpfgen_rnat_entry): the client and the frontend."""

    addr: int
    port: int
    vip: int
    vip_port: int


class AffinityKey(NamedTuple):
    """bpfgen_affinity_v4 key (struct bpfgen_affinity_key): a client and a Service port."""

    client: int
    affinity_id: int


class Affinity(NamedTuple):
    """bpfgen_affinity_v4 value (struct bpfgen_affinity_entry): the client's backend."""

    last_seen_ns: int
    addr: int
    port: int


@dataclass
class SvcState(Tables[NatSession, Rnat]):
    """bpfgen_nat_v4 (original tuple -> session), bpfgen_rnat_v4 (reply tuple -> client)
    and bpfgen_affinity_v4 ((client, affinity id) -> backend).

    The affinity map is an LRU hash of `capacity` entries: the model never evicts, so
    tests keep far fewer entries than that. `stamped`: the affinity entries the last
    packet wrote or touched (last_seen_ns = its now_ns).
    """

    affinity: dict[AffinityKey, Affinity] = field(default_factory=dict)
    stamped: set[AffinityKey] = field(default_factory=set)

    @classmethod
    def for_config(cls, config: SvcConfig) -> SvcState:
        return cls(capacity=config.base.max_sessions)

    def copy(self) -> Self:
        return type(self)(
            self.capacity,
            dict(self.forward),
            dict(self.reverse),
            dict(self.affinity),
            set(self.stamped),
        )


class FibResult(enum.Enum):
    SUCCESS = "success"  # route and neighbour: bpf_redirect_neigh to the next hop
    NO_NEIGH = "no_neigh"  # route, no neighbour entry: bpf_redirect_neigh resolves it
    OTHER = "other"  # no route, blackhole, forwarding disabled...: to the stack


Fib = Callable[[int, int, int], FibResult]  # (daddr, saddr, proto) of the translated packet


def no_route(daddr: int, saddr: int, proto: int) -> FibResult:
    """A network namespace without routes (the tests'): every lookup fails."""
    return FibResult.OTHER


# (daddr, saddr, proto) of the translated packet -> destination and source MAC (12 bytes)
# when the route leaves through the ingress device with a resolved neighbour, else None.
XdpRoute = Callable[[int, int, int], bytes | None]


def no_xdp_route(daddr: int, saddr: int, proto: int) -> bytes | None:
    """A network namespace without routes: XDP never sends a translated packet itself."""
    return None


# What becomes of a translated packet: (frame, parsed, new source, new destination,
# counters so far, the session touched) -> the program's result.
_Forward = Callable[[bytes, Parsed, Endpoint, Endpoint, tuple[SvcCounter, ...], FlowKey], Result]


def _result(
    verdict: Verdict,
    packet: bytes,
    *counters: SvcCounter,
    touched: frozenset[FlowKey] = frozenset(),
) -> Result:
    """svc_in's result: it never changes the mark (0 in, 0 out)."""
    deltas = [0] * len(SVC_COUNTER_NAMES)
    for c in counters:
        deltas[c] += 1
    return Result(verdict, packet, 0, tuple(deltas), touched, SVC_COUNTER_NAMES)


def _u16(frame: bytes, offset: int) -> int:
    return int.from_bytes(frame[offset : offset + 2], "big")


def _u32(frame: bytes, offset: int) -> int:
    return int.from_bytes(frame[offset : offset + 4], "big")


def _macs_swapped(frame: bytes) -> bytes:
    return frame[6:12] + frame[0:6] + frame[12:14]


# --------------------------------------------------------------------------- the program


def svc_in(
    config: SvcConfig,
    frame: bytes,
    state: SvcState,
    now_ns: int,
    mark: int = 0,
    fib: Fib = no_route,
) -> Result:
    """bpfgen_svc_in: echo to VIPs, replies reversed, DNAT (+ SNAT) of packets to frontends."""
    return _program(config, frame, state, now_ns, partial(_tc_forward, fib))


def svc_xdp(
    config: SvcConfig,
    frame: bytes,
    state: SvcState,
    now_ns: int,
    mark: int = 0,
    route: XdpRoute = no_xdp_route,
) -> Result:
    """bpfgen_svc_xdp: svc_in's session work; a translated packet leaves by XDP_TX (the
    verdict REDIRECT) only when it goes back out of the ingress device, else it is passed
    untranslated to svc_in at tc ("XDP"). Answers (echo, REJECT) are svc_in's bytes."""
    return _program(config, frame, state, now_ns, partial(_xdp_forward, route))


def _program(
    config: SvcConfig, frame: bytes, state: SvcState, now_ns: int, forward: _Forward
) -> Result:
    state.stamped.clear()
    p = parse(config.base, frame)
    if p.kind is Kind.MALFORMED:
        return _result(Verdict.PASS, frame, SvcCounter.MALFORMED)
    if p.kind is not Kind.OURS:  # not ours, fragment, a protocol compiled out
        return _result(Verdict.PASS, frame, SvcCounter.PASS)
    if p.proto == IPPROTO_ICMP:
        # ICMP: echo requests to a VIP are answered; nothing else is translated.
        if p.icmp_type == ICMP_ECHO and p.daddr in config.vips:
            return _echo_reply(frame, p)
        return _result(Verdict.PASS, frame, SvcCounter.PASS)
    done = _reply(config, frame, p, state, now_ns, forward)
    if done is not None:
        return done
    f = config.lookup(p.daddr, p.dport, p.proto)
    if f is None:
        # "A ClusterIP's other ports, and unallocated service addresses" (kube-proxy
        # nftables' cluster-ips-check): rejected at a VIP, dropped elsewhere in the CIDR.
        if not config.base.in_service_cidr(p.daddr):
            return _result(Verdict.PASS, frame, SvcCounter.PASS)
        if p.daddr in config.vips:
            return _reject(frame, p, SvcCounter.REJECT_VIP_PORT, SvcCounter.DROP_VIP_PORT)
        return _result(Verdict.DROP, frame, SvcCounter.DROP_UNALLOCATED)
    if not config.base.source_allowed(p.saddr, p.daddr, p.dport, p.proto):
        return _result(Verdict.DROP, frame, SvcCounter.DROP_SOURCE_RANGE)
    if f.pod_frontend is not None and config.base.in_cluster_pods(p.saddr):
        # "A pod's traffic under externalTrafficPolicy: Local goes to every endpoint (the
        # ClusterIP's frontend, or the Service port's hidden one when the internal policy
        # is Local too) and keeps its address."
        f = replace(f.pod_frontend, policy=Policy.NEVER)
    return _dnat(config, frame, p, f, state, now_ns, forward)


def _reply_key(key: FlowKey, s: NatSession) -> FlowKey:
    """The reply tuple of a session: (backend, SNAT addr or client, bport, SNAT port or cport)."""
    if s.nat_port:
        return FlowKey(s.backend_addr, s.nat_addr, s.backend_port, s.nat_port, key.proto)
    return FlowKey(s.backend_addr, key.saddr, s.backend_port, key.sport, key.proto)


def _owner(proto: int, r: Rnat) -> FlowKey:
    """The session (original tuple) a reverse entry points back to."""
    return FlowKey(r.addr, r.vip, r.port, r.vip_port, proto)


def _reply(
    config: SvcConfig, frame: bytes, p: Parsed, state: SvcState, now_ns: int, forward: _Forward
) -> Result | None:
    """A reply of a live session: to the client, from VIP:port. None: not a reply."""
    key = FlowKey(p.saddr, p.daddr, p.sport, p.dport, p.proto)
    r = state.reverse.get(key)
    if r is None:
        return None
    fkey = _owner(p.proto, r)
    s = state.forward.get(fkey)
    # The session must be alive and this must be its reply tuple (a stale index entry
    # whose session moved on is not ours).
    if s is None or _reply_key(fkey, s) != key or expired(config.base, p.proto, s, now_ns):
        return None
    flags, fin_ack = touched(s.flags, s.fin_ack, p, SEEN_REPLY, forward=False)
    state.forward[fkey] = s = s._replace(last_seen_ns=now_ns, flags=flags, fin_ack=fin_ack)
    result = forward(frame, p, (r.vip, r.vip_port), (r.addr, r.port), (SvcCounter.RDNAT,), fkey)
    if released(s) and _done(result):
        del state.forward[fkey]
        del state.reverse[key]
    return result


def _done(result: Result) -> bool:
    """Did the program finish with the packet? Only then is a session its packet released
    deleted: svc_xdp passes packets untranslated to svc_in (xdp_to_tc), which must still
    find the session (and releases it); a dropped packet comes again."""
    return result.verdict is not Verdict.DROP and not result.counters[SvcCounter.XDP_TO_TC]


def _forget(state: SvcState, key: FlowKey, s: NatSession) -> None:
    """Drop a session's reverse entry, unless another flow took it over."""
    rkey = _reply_key(key, s)
    if state.reverse.get(rkey) == Rnat(key.saddr, key.sport, key.daddr, key.dport):
        del state.reverse[rkey]


def _sweep(config: SvcConfig, state: SvcState, now_ns: int) -> None:
    """docs/datapath.md "Sessions and time", the sweep: on a full map, every expired session
    goes, with its reverse entry when that still points back to it."""
    for key, s in list(state.forward.items()):
        if expired(config.base, key.proto, s, now_ns):
            _forget(state, key, s)
            del state.forward[key]


def _bare_syn(p: Parsed) -> bool:
    return bool(p.tcp_flags & packet.TCP_SYN) and not p.tcp_flags & (
        packet.TCP_ACK | packet.TCP_FIN | packet.TCP_RST
    )


def select_backend(config: SvcConfig, f: SvcFrontend, key: FlowKey) -> Endpoint:
    """A new flow's backend: h % n (random) or table[h % M] (maglev), h under selectionSeed."""
    h = tuple_hash(config.selection_seed, *key)
    if config.scheduler == "maglev":
        return f.backends[f.table[h % config.maglev_size]]
    return f.backends[h % len(f.backends)]


def affinity_live(f: SvcFrontend, entry: Affinity, now_ns: int) -> bool:
    """An affinity entry is followed while now - last_seen < timeoutSeconds (u64, as the C
    computes it: a last_seen ahead of now is no younger) and its backend is selectable."""
    age = (now_ns - entry.last_seen_ns) % (1 << 64)
    return age < f.affinity_s * 1_000_000_000 and (entry.addr, entry.port) in f.backends


def _select(
    config: SvcConfig, f: SvcFrontend, key: FlowKey, state: SvcState, now_ns: int
) -> tuple[Endpoint, tuple[SvcCounter, ...]]:
    """A new flow's backend: the client's ClientIP-affinity backend (touched, counted
    affinity_hit), or the scheduler's (remembered when the frontend has affinity)."""
    if not f.affinity_s:
        return select_backend(config, f, key), ()
    akey = AffinityKey(key.saddr, f.affinity_id)
    entry = state.affinity.get(akey)
    state.stamped.add(akey)
    if entry is not None and affinity_live(f, entry, now_ns):
        state.affinity[akey] = entry._replace(last_seen_ns=now_ns)
        return (entry.addr, entry.port), (SvcCounter.AFFINITY_HIT,)
    backend = select_backend(config, f, key)
    state.affinity[akey] = Affinity(now_ns, *backend)
    return backend, ()


def _wants_snat(config: SvcConfig, f: SvcFrontend, p: Parsed, backend: Endpoint) -> bool:
    if p.saddr == backend[0]:
        return True  # hairpin: the backend would answer itself
    return f.policy is Policy.ALWAYS or (
        f.policy is Policy.IF_OUTSIDE and not config.base.in_cluster_pods(p.saddr)
    )


def _dnat(
    config: SvcConfig,
    frame: bytes,
    p: Parsed,
    f: SvcFrontend,
    state: SvcState,
    now_ns: int,
    forward: _Forward,
) -> Result:
    key = FlowKey(p.saddr, p.daddr, p.sport, p.dport, p.proto)
    s = state.forward.get(key)
    if s is not None and not expired(config.base, p.proto, s, now_ns):
        if (s.backend_addr, s.backend_port) in f.members:
            flags, fin_ack = touched(s.flags, s.fin_ack, p, 0, forward=True)
            state.forward[key] = s = s._replace(last_seen_ns=now_ns, flags=flags, fin_ack=fin_ack)
            source = (s.nat_addr, s.nat_port) if s.nat_port else (p.saddr, p.sport)
            result = forward(
                frame, p, source, (s.backend_addr, s.backend_port), (SvcCounter.DNAT_HIT,), key
            )
            if released(s) and _done(result):
                _forget(state, key, s)
                del state.forward[key]
            return result
        # Its backend is gone: forget the session. TCP other than a bare SYN cannot
        # start over at another backend; anything else is selected anew.
        _forget(state, key, s)
        del state.forward[key]
        if p.proto == IPPROTO_TCP and not _bare_syn(p):
            return _result(Verdict.DROP, frame, SvcCounter.DROP_BACKEND_GONE)
    elif s is not None:  # expired: a new flow
        _forget(state, key, s)

    if f.policy is Policy.DROP:  # no backend here, some on other nodes
        return _result(Verdict.DROP, frame, SvcCounter.DROP_NO_LOCAL_ENDPOINT)
    if not f.backends:
        return _reject(frame, p)
    backend, chosen = _select(config, f, key, state, now_ns)
    client = Rnat(p.saddr, p.sport, p.daddr, p.dport)
    counters: list[SvcCounter] = list(chosen)
    if _wants_snat(config, f, p, backend):
        base = config.base
        h = tuple_hash(base.hash_seed, *key)
        nat_addr = base.node_addrs[h % len(base.node_addrs)]
        got = allocate_port(
            base,
            state,
            h,
            p.proto,
            now_ns,
            client,
            lambda port: FlowKey(backend[0], nat_addr, backend[1], port, p.proto),
            lambda holder: _owner(p.proto, holder),
            keep=p.sport,
        )
        if got.drop is not None:
            if got.drop is Counter.DROP_MAP_FULL:
                _sweep(config, state, now_ns)
            return _result(Verdict.DROP, frame, *chosen, SvcCounter(got.drop))
        assert got.key is not None
        rkey, nat = got.key, (nat_addr, got.key.dport)
        counters.append(SvcCounter.SNAT_NEW)
        if got.reclaimed:
            counters.append(SvcCounter.RECLAIMED)
    else:
        rkey, nat = FlowKey(backend[0], p.saddr, backend[1], p.sport, p.proto), (0, 0)
        if not state.insert_reverse(rkey, client):
            _sweep(config, state, now_ns)
            return _result(Verdict.DROP, frame, *chosen, SvcCounter.DROP_MAP_FULL)
    flags, fin_ack = touched(0, 0, p, 0, forward=True)
    session = NatSession(now_ns, *nat, flags, *backend, fin_ack=fin_ack)
    if not state.insert_forward(key, session):
        del state.reverse[rkey]
        _sweep(config, state, now_ns)
        return _result(Verdict.DROP, frame, *chosen, SvcCounter.DROP_MAP_FULL)
    source = nat if nat[1] else (p.saddr, p.sport)
    return forward(frame, p, source, backend, (*counters, SvcCounter.DNAT_NEW), key)


# --------------------------------------------------------------------------- rewrite, forward


def _translate(frame: bytes, p: Parsed, source: Endpoint, dest: Endpoint) -> bytes:
    """Rewrite to source -> dest (each side only when it changes)."""
    changes: dict[str, int] = {}
    if dest != (p.daddr, p.dport):
        changes.update(daddr=dest[0], dport=dest[1])
    if source != (p.saddr, p.sport):
        changes.update(saddr=source[0], sport=source[1])
    return rewrite(frame, p, **changes)


def _ttl_down(frame: bytes) -> bytes:
    """Forwarded: the TTL goes down by one, the IPv4 checksum with it (RFC 1624)."""
    ttl, field = frame[ETH_HLEN + 8], ETH_HLEN + 10
    word = _u16(frame, ETH_HLEN + 8)
    check = incremental(_u16(frame, field), [word], [word - 0x100])
    return (
        frame[: ETH_HLEN + 8]
        + bytes([ttl - 1])
        + frame[ETH_HLEN + 9 : field]
        + check.to_bytes(2, "big")
        + frame[field + 2 :]
    )


def _tc_forward(
    fib: Fib,
    frame: bytes,
    p: Parsed,
    source: Endpoint,
    dest: Endpoint,
    counters: tuple[SvcCounter, ...],
    touched: FlowKey,
) -> Result:
    """tc: translated, then bpf_redirect_neigh when the FIB has a route (TTL - 1), else
    to the stack (fib_fallback, TTL kept)."""
    out = _translate(frame, p, source, dest)
    if fib(dest[0], source[0], p.proto) is FibResult.OTHER or out[ETH_HLEN + 8] <= 1:
        return _result(
            Verdict.PASS, out, *counters, SvcCounter.FIB_FALLBACK, touched=frozenset([touched])
        )
    return _result(
        Verdict.REDIRECT,
        _ttl_down(out),
        *counters,
        SvcCounter.REDIRECT,
        touched=frozenset([touched]),
    )


def _xdp_forward(
    route: XdpRoute,
    frame: bytes,
    p: Parsed,
    source: Endpoint,
    dest: Endpoint,
    counters: tuple[SvcCounter, ...],
    touched: FlowKey,
) -> Result:
    """XDP: back out of the ingress device (XDP_TX: translated, TTL - 1, the FIB's MACs)
    when the route leaves there with a resolved neighbour and TTL > 1; anything else is
    passed untranslated (xdp_to_tc), for svc_in to find the session at tc."""
    macs = route(dest[0], source[0], p.proto)
    if macs is None or frame[ETH_HLEN + 8] <= 1:
        return _result(
            Verdict.PASS, frame, *counters, SvcCounter.XDP_TO_TC, touched=frozenset([touched])
        )
    out = _ttl_down(_translate(frame, p, source, dest))
    return _result(
        Verdict.REDIRECT,
        macs + out[12:],
        *counters,
        SvcCounter.REDIRECT,
        touched=frozenset([touched]),
    )


def _echo_reply(frame: bytes, p: Parsed) -> Result:
    """MACs and addresses swapped, type 8 -> 0 (ICMP checksum updated), back out."""
    ip = ETH_HLEN
    l4 = p.l4
    check = incremental(_u16(frame, l4 + 2), [ICMP_ECHO << 8], [0])
    out = (
        _macs_swapped(frame)
        + frame[ip : ip + 12]
        + frame[ip + 16 : ip + 20]
        + frame[ip + 12 : ip + 16]
        + frame[ip + 20 : l4]
        + b"\0\0"
        + check.to_bytes(2, "big")
        + frame[l4 + 4 :]
    )
    return _result(Verdict.REDIRECT, out, SvcCounter.ICMP_ECHO_VIP)


def _ipv4_header(saddr: int, daddr: int, proto: int, total: int) -> bytes:
    """A fresh IPv4 header of the program's own answers: TTL 64, no options, id 0, no DF."""
    head = (
        bytes([0x45, 0])
        + total.to_bytes(2, "big")
        + bytes(4)
        + bytes([64, proto])
        + bytes(2)
        + saddr.to_bytes(4, "big")
        + daddr.to_bytes(4, "big")
    )
    return head[:10] + checksum(head).to_bytes(2, "big") + head[12:]


def _reject(
    frame: bytes,
    p: Parsed,
    answered: SvcCounter = SvcCounter.REJECT_NO_BACKEND,
    unanswered: SvcCounter = SvcCounter.DROP_NO_BACKEND,
) -> Result:
    """A frontend without backends, or a VIP's other port: kube-proxy's REJECT
    ("Implementation decisions"), counted `answered`, or `unanswered` when dropped."""
    if p.ihl != 5 or (p.proto == IPPROTO_TCP and p.tcp_flags & packet.TCP_RST):
        return _result(Verdict.DROP, frame, unanswered)  # no answer
    if p.proto == IPPROTO_UDP:
        message = bytes([3, 3, 0, 0]) + bytes(4) + frame[ETH_HLEN : ETH_HLEN + 28]
        message = message[:2] + checksum(message).to_bytes(2, "big") + message[4:]
        out = _macs_swapped(frame) + _ipv4_header(p.daddr, p.saddr, IPPROTO_ICMP, 56) + message
        return _result(Verdict.REDIRECT, out, answered)
    # TCP: to a segment with ACK, a RST with seq = its ack; otherwise a RST|ACK
    # acknowledging its SYN, FIN and payload (by the IP total length, not the frame's).
    l4 = p.l4
    if p.tcp_flags & packet.TCP_ACK:
        seq, ack, flags = _u32(frame, l4 + 8), 0, packet.TCP_RST
    else:
        end = min(ETH_HLEN + _u16(frame, ETH_HLEN + 2), len(frame))
        payload = max(0, end - (l4 + 4 * (frame[l4 + 12] >> 4)))
        syn_fin = bool(p.tcp_flags & packet.TCP_SYN) + bool(p.tcp_flags & packet.TCP_FIN)
        seq, ack = 0, (_u32(frame, l4 + 4) + payload + syn_fin) & 0xFFFFFFFF
        flags = packet.TCP_RST | packet.TCP_ACK
    segment = (
        p.dport.to_bytes(2, "big")
        + p.sport.to_bytes(2, "big")
        + seq.to_bytes(4, "big")
        + ack.to_bytes(4, "big")
        + bytes([0x50, flags])
        + bytes(6)
    )
    check = checksum(pseudo_header(p.daddr, p.saddr, IPPROTO_TCP, 20) + segment)
    segment = segment[:16] + check.to_bytes(2, "big") + segment[18:]
    out = _macs_swapped(frame) + _ipv4_header(p.daddr, p.saddr, IPPROTO_TCP, 40) + segment
    return _result(Verdict.REDIRECT, out, answered)

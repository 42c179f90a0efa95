"""bpf mode: connection lifecycles through `bpfgen_svc_in` (tc), kernel against the
reference model (docs/datapath-bpf.md), the counterpart of test_snat_machine.

A hypothesis RuleBasedStateMachine opens connections (TCP SYN, UDP) from pods of this
and other nodes, from backends (hairpin) and from outside clients to a ClusterIP, to a
NodePort and to a frontend without endpoints (REJECT); exchanges packets both ways
(backend replies, client follow-ups, a bare SYN on a used tuple); closes with FIN or
RST from either side, and whole closes with coherent numbers (client first, backend
first, simultaneous); lets sessions idle past their timeouts by rewriting last_seen in
the kernel and in the model alike; and floods one backend from outside until the 16
SNAT ports of its node address run out (and the 40-session maps fill).

After every step the kernel's maps equal the model's (`SvcDifferential` compares every
packet's verdict, bytes and counters too), and the spec's promises hold on those
tables: no two live sessions share a reply tuple (no two frontends of this config
reach one backend port without SNAT: the spec's one exception, "the last flow wins",
cannot arise), every live session's reverse entry points back to it, a reply of a
live session goes back to the original client tuple from the frontend, a new session
is SNATed exactly when the masquerade policy or hairpin says, a drop for exhaustion
happens only when every port the flow may probe is held by a live session, and FIN/RST
move TCP to the transitory timeout. The kernel side runs in a network namespace
without routes (the model's `no_route`): translated packets go to the stack.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

import machines
import pytest
from bpf_inputs import (
    BACKEND_PORT,
    BACKENDS,
    EMPTY_VIP,
    NODE1,
    NODEPORT,
    PORT_MAX,
    PORT_MIN,
    VIP,
    node_config,
    services,
)
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, multiple, precondition, rule
from kernel.model_pool import BuildPool, open_pool
from kernel.netns_private import private_netns
from machines import TIMEOUTS, AgingMachine, assert_ports_held, build_kind_cases, snat_section

from bpfgen.refmodel import (
    CLOSING,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    expired,
    timeout_ns,
    tuple_hash,
)
from bpfgen.refmodel.bpf_config import SvcConfig, svc_config
from bpfgen.refmodel.bpf_differential import SvcDifferential
from bpfgen.refmodel.bpf_svc import NatSession, Rnat, SvcState, select_backend
from bpfgen.refmodel.frames import ethernet, ipv4, tcp, udp
from bpfgen.refmodel.ipvs_differential import show_key
from bpfgen.refmodel.ipvs_snat import Result
from bpfgen.refmodel.state import CLOSED
from bpfgen.refmodel.state import RST as RST_SEEN

pytestmark = pytest.mark.kernel

MAX_SESSIONS = 40
POD_CIDR = IPv4Network("198.19.0.0/16")  # cluster.podCIDR of node_config


def documents(_: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """bpf_inputs' node with one address (16 SNAT ports per backend) and 40 sessions; its
    web (ClusterIP + NodePort, three backends, one draining) and empty (no endpoints)."""
    node = node_config()
    node["node"]["addresses"] = [NODE1]
    node["snat"] = snat_section((PORT_MIN, PORT_MAX), MAX_SESSIONS)
    doc = services()
    doc["items"] = [i for i in doc["items"] if "sticky" not in i["metadata"]["name"]]
    return node, doc


# (address, port, proto) a client opens a connection to
TARGETS = (
    (VIP, 80, IPPROTO_TCP),
    (VIP, 53, IPPROTO_UDP),
    (NODE1, NODEPORT, IPPROTO_TCP),
    (NODE1, NODEPORT, IPPROTO_UDP),
    (EMPTY_VIP, 80, IPPROTO_TCP),
)
PODS = ("198.19.1.9", "198.19.2.7", *BACKENDS[:2])  # a backend may select itself: hairpin
OUTSIDE = ("203.0.113.7", "192.0.2.1")
SPORTS = st.integers(40000, 40005)  # few: tuples are reused


_POOL: list[BuildPool[SvcConfig]] = []
PACKETS: Counter[tuple[str, str]] = Counter()  # (build kind, counters) -> packets


@pytest.fixture(scope="module", autouse=True)
def _builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The config compiled once per build kind; the module in a namespace without routes."""
    with (
        private_netns(),
        contextmanager(open_pool)(
            tmp_path_factory,
            "svc-machine",
            documents,
            lambda inputs, kind, _: svc_config(inputs, kind),
            "svc machine packets",
            PACKETS,
        ) as pool,
    ):
        _POOL.append(pool)
        yield
        _POOL.clear()


def A(text: str) -> int:
    return int(IPv4Address(text))


def reply_tuple(key: FlowKey, s: NatSession) -> FlowKey:
    """(backend, SNAT address or client, backend port, SNAT port or client port)."""
    if s.nat_port:
        return FlowKey(s.backend_addr, s.nat_addr, s.backend_port, s.nat_port, key.proto)
    return FlowKey(s.backend_addr, key.saddr, s.backend_port, key.sport, key.proto)


def l4_frame(
    saddr: int,
    daddr: int,
    sport: int,
    dport: int,
    proto: int,
    flags: int,
    seq: int = 1,
    ack: int = 0,
) -> bytes:
    l4 = (
        tcp(saddr, daddr, sport, dport, flags=flags, seq=seq, ack=ack)
        if proto == IPPROTO_TCP
        else udp(saddr, daddr, sport, dport, payload=b"q")
    )
    return ethernet(ipv4(saddr, daddr, proto, l4))


def out_tuple(frame: bytes) -> tuple[int, int, int, int]:
    """(saddr, sport, daddr, dport) of a frame out."""
    return (
        int.from_bytes(frame[26:30], "big"),
        int.from_bytes(frame[34:36], "big"),
        int.from_bytes(frame[30:34], "big"),
        int.from_bytes(frame[36:38], "big"),
    )


@dataclass(frozen=True)
class Conn:
    """One connection as its client sees it: client -> frontend (the session's key)."""

    key: FlowKey

    def __str__(self) -> str:
        return show_key(self.key)


class SvcMachine(AgingMachine):
    conns = Bundle("conns")
    diff: SvcDifferential

    def __init__(self) -> None:
        super().__init__()
        build, config = _POOL[0].get(0, self.kind)
        self.config, self.base = config, config.base
        self.diff = SvcDifferential(build, config)

    def live(self, key: FlowKey, s: NatSession | None, now: int | None = None) -> bool:
        now = time.monotonic_ns() if now is None else now
        return s is not None and not expired(self.base, key.proto, s, now)

    def live_sessions(self) -> list[tuple[FlowKey, NatSession]]:
        now = time.monotonic_ns()
        return [(k, s) for k, s in sorted(self.diff.state.forward.items()) if self.live(k, s, now)]

    def run(self, frame: bytes, what: str) -> Result:
        result = self.diff.step(frame).model
        outcome = " + ".join(sorted(result.counter_deltas()))
        PACKETS[(self.kind, outcome)] += 1
        event(f"{what}: {outcome}")
        return result

    # -- packets from clients

    def send_forward(self, conn: Conn, flags: int, seq: int = 1, ack: int = 0) -> Result:
        k = conn.key
        before = self.diff.state.copy()
        now = time.monotonic_ns()
        result = self.run(
            l4_frame(k.saddr, k.daddr, k.sport, k.dport, k.proto, flags, seq, ack), "client"
        )
        deltas = result.counter_deltas()
        if "drop_exhausted" in deltas:
            self.assert_exhausted(conn, before, now)
        if "drop_map_full" in deltas:
            assert len(before.forward) >= MAX_SESSIONS or len(before.reverse) >= MAX_SESSIONS, (
                f"map full with room: {conn}"
            )
        if result.verdict.name == "PASS":
            assert {"dnat_new", "dnat_hit"} & deltas.keys(), f"not translated: {conn} {deltas}"
            s = self.diff.state.forward.get(k) or before.forward[k]  # or released by it
            source = (s.nat_addr, s.nat_port) if s.nat_port else (k.saddr, k.sport)
            assert out_tuple(result.packet) == (*source, s.backend_addr, s.backend_port)
        if "dnat_new" in deltas:
            s = self.diff.state.forward[k]
            masquerade = (
                IPv4Address(k.saddr) not in POD_CIDR
                or k.dport == NODEPORT
                or k.saddr == s.backend_addr
            )  # ClusterIP from outside, NodePort, hairpin
            assert bool(s.nat_port) == masquerade, f"{conn}: SNAT {s.nat_port}"
            assert s.nat_addr == (A(NODE1) if masquerade else 0)
        return result

    def assert_exhausted(self, conn: Conn, before: SvcState, now: int) -> None:
        """Every port the flow may probe (to its backend, from its node address) is held."""
        key = conn.key
        frontend = self.config.lookup(key.daddr, key.dport, key.proto)
        assert frontend is not None
        backend = select_backend(self.config, frontend, key)
        h = tuple_hash(self.base.hash_seed, *key)
        nat_addr = self.base.node_addrs[h % len(self.base.node_addrs)]

        def holder(port: int) -> NatSession | None:
            r = before.reverse.get(FlowKey(backend[0], nat_addr, backend[1], port, key.proto))
            owner = r and FlowKey(r.addr, r.vip, r.port, r.vip_port, key.proto)
            s = owner and before.forward.get(owner)
            return (
                s
                if s and (s.nat_addr, s.backend_addr, s.backend_port) == (nat_addr, *backend)
                else None
            )

        assert_ports_held(self.base, conn, key, h, now, holder)

    # -- rules

    @rule(
        target=conns,
        client=st.sampled_from(PODS + OUTSIDE),
        target_=st.sampled_from(TARGETS),
        sport=SPORTS,
    )
    def open(self, client: str, target_: tuple[str, int, int], sport: int) -> Conn:
        daddr, dport, proto = target_
        conn = Conn(FlowKey(A(client), A(daddr), sport, dport, proto))
        self.send_forward(conn, machines.SYN)
        return conn

    @rule(
        target=conns,
        backend=st.sampled_from(BACKENDS),
        n=st.integers(1, 24),
        first=st.integers(1024, 60000),
    )
    def flood(self, backend: str, n: int, first: int) -> Any:
        """Outside clients to the NodePort, every flow to one backend: its ports run out,
        then the maps fill."""
        frontend = self.config.lookup(A(NODE1), NODEPORT, IPPROTO_TCP)
        assert frontend is not None
        opened: list[Conn] = []
        sport = first
        while len(opened) < n:
            key = FlowKey(A(OUTSIDE[sport % 2]), A(NODE1), sport, NODEPORT, IPPROTO_TCP)
            sport += 1
            if select_backend(self.config, frontend, key) == (A(backend), BACKEND_PORT):
                opened.append(Conn(key))
                self.send_forward(opened[-1], machines.SYN)
        return multiple(*opened)

    @rule(conn=conns, flags=st.sampled_from(machines.FORWARD_FLAGS))
    def follow_up(self, conn: Conn, flags: int) -> None:
        """The client's next packet (a bare SYN: the tuple reused)."""
        self.send_forward(conn, flags)

    @rule(conn=conns, flags=st.sampled_from(machines.REPLY_FLAGS))
    def reply(self, conn: Conn, flags: int) -> None:
        """The backend answers: to the client, from the frontend, when the session is live."""
        k = conn.key
        s = self.diff.state.forward.get(k)
        if s is None:  # none (REJECT, dropped, forgotten): a backend's stray packet
            frontend = self.config.lookup(k.daddr, k.dport, k.proto)
            if frontend is None or not frontend.backends:
                return
            s = NatSession(0, 0, 0, 0, *select_backend(self.config, frontend, k))
        live = self.live(k, self.diff.state.forward.get(k))
        r = reply_tuple(k, s)
        result = self.run(
            l4_frame(r.saddr, r.daddr, r.sport, r.dport, k.proto, flags),
            f"reply of a {'live' if live else 'gone'} session",
        )
        if live:
            assert result.counter_deltas() == {"rdnat": 1, "fib_fallback": 1}, conn
            assert out_tuple(result.packet) == (k.daddr, k.dport, k.saddr, k.sport)

    @precondition(lambda self: any(k.proto == IPPROTO_TCP for k, _ in self.live_sessions()))
    @rule(data=st.data(), flags=st.sampled_from(machines.CLOSE_FLAGS), from_backend=st.booleans())
    def close(self, data: st.DataObject, flags: int, from_backend: bool) -> None:
        """FIN or RST on a live TCP session, either way: it lives tcpTransitory."""
        key, s = data.draw(
            st.sampled_from([(k, s) for k, s in self.live_sessions() if k.proto == IPPROTO_TCP])
        )
        if from_backend:
            r = reply_tuple(key, s)
            self.run(l4_frame(r.saddr, r.daddr, r.sport, r.dport, key.proto, flags), "close")
        else:
            self.send_forward(Conn(key), flags)
        after = self.diff.state.forward[key]
        assert after.flags & CLOSING
        if flags & machines.RST or after.flags & RST_SEEN:
            assert timeout_ns(self.base, key.proto, after.flags) == TIMEOUTS["tcpClose"] * 10**9
        elif not after.flags & CLOSED:
            assert timeout_ns(self.base, key.proto, after.flags) == (
                TIMEOUTS["tcpTransitory"] * 10**9
            )

    @precondition(lambda self: any(k.proto == IPPROTO_TCP for k, _ in self.live_sessions()))
    @rule(data=st.data(), order=st.sampled_from(sorted(machines.CLOSES)))
    def close_whole(self, data: st.DataObject, order: str) -> None:
        """A whole close, numbers coherent, of a live TCP session that has not begun one:
        released when the client closed first or the flow has no SNAT port, else held
        CLOSED for tcpTimeWait."""
        open_ = [
            (k, s)
            for k, s in self.live_sessions()
            if k.proto == IPPROTO_TCP and not s.flags & CLOSING
        ]
        if not open_:
            return
        key, s = data.draw(st.sampled_from(open_))
        r = reply_tuple(key, s)
        for from_backend, flags, seq, ack in machines.CLOSES[order]:
            if from_backend:
                self.run(
                    l4_frame(r.saddr, r.daddr, r.sport, r.dport, key.proto, flags, seq, ack),
                    f"close ({order})",
                )
            else:
                self.send_forward(Conn(key), flags, seq, ack)
        machines.assert_closed(self.base, order, bool(s.nat_port), self.diff.state.forward.get(key))

    # -- invariants

    @invariant()
    def live_reply_tuples_unique_and_indexed(self) -> None:
        seen: dict[FlowKey, FlowKey] = {}
        for key, s in self.live_sessions():
            r = reply_tuple(key, s)
            assert r not in seen, f"{key} and {seen[r]} share the reply tuple {r}"
            seen[r] = key
            assert self.diff.state.reverse.get(r) == Rnat(
                key.saddr, key.sport, key.daddr, key.dport
            ), key


TestSvcSpecialized, TestSvcGeneric = build_kind_cases(SvcMachine)

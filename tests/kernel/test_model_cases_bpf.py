"""bpf mode: named cases of bpfgen_svc_in and bpfgen_svc_xdp against the reference
model, every build kind and both schedulers (docs/testing.md, "The bpf mode").

Each case is a short sequence of packets (and planted sessions and affinity entries)
run through `SvcDifferential`, which requires the kernel and the model to agree on
verdict, bytes, counters, both session maps and the ClientIP affinity map; the case
also states which counters the model must report, so that it really exercises what
its name says. The kernel side runs in a network namespace without routes (the
model's `no_route` FIB): translated packets go to the stack, counted fib_fallback.

The XDP builds (an uplink with `hook: xdp`) run every case through svc_xdp and, for
what it passes, svc_in at tc, as the device does; a case states the counts of one
pass through the device (`SvcStep.device_deltas`), the same as at tc. Without
routes XDP passes every translated flow untranslated (xdp_to_tc), after its
session work; `routed_through_the_ingress_device` gives it a route back out of its
ingress device (XDP_TX).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from bpf_inputs import (
    BACKEND_PORT,
    BACKENDS,
    DNS_PORT,
    DRAINING,
    EMPTY_VIP,
    NODE2,
    NODEPORT,
    PORT_MAX,
    PORT_MIN,
    STICKY_TIMEOUT,
    STICKY_VIP,
    VIP,
    node_config,
    on_this_kernel,
    services,
    write_inputs,
)
from netns_private import private_netns

from bpfgen.compiler import compile_build
from bpfgen.inputs import load_inputs
from bpfgen.refmodel import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, FlowKey
from bpfgen.refmodel.bpf_config import SvcConfig, svc_config
from bpfgen.refmodel.bpf_differential import (
    PROGRAM,
    XDP_PROGRAM,
    SvcDifferential,
    pack_affinity,
    pack_affinity_key,
    pack_nat,
    pack_rnat,
)
from bpfgen.refmodel.bpf_svc import (
    SVC_COUNTER_NAMES,
    Affinity,
    AffinityKey,
    FibResult,
    NatSession,
    Rnat,
    no_route,
    no_xdp_route,
    select_backend,
)
from bpfgen.refmodel.frames import ethernet, icmp, ipv4, tcp, udp
from bpfgen.refmodel.hashing import tuple_hash
from bpfgen.refmodel.state import CLOSED, FIN_ACKED, REPLY_FIRST, timeout_ns
from bpfgen_runtime.contract import layouts
from bpfgen_runtime.testrun import BuildUnderTest

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("no_routes")]

SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
CLIENT_POD = "198.19.1.9"  # a pod of this node, not a backend
OUTSIDE = "203.0.113.7"
GONE = "198.19.9.9"  # no endpoint of anything
MAX_SESSIONS = 64  # bpf_inputs.node_config's snat.maxSessions
TIMEOUT_S = 20  # every session timeout of the cases' node but these two:
TIME_WAIT_S, CLOSE_S = 30, 15
# sticky: ClientIP affinity (STICKY_TIMEOUT) on a ClusterIP and a NodePort, two ports.
STICKY_NP_VIP, STICKY_NODEPORT = "198.18.128.13", 30081


def A(text: str) -> int:
    return int(IPv4Address(text))


def case_services() -> dict[str, Any]:
    """bpf_inputs' web (three ready backends, DRAINING listed as terminating), empty (none)
    and web-sticky (ClientIP affinity, web's backends, ClusterIP :80/TCP), and sticky:
    ClientIP affinity on a NodePort Service, :80/TCP and :53/UDP, web's endpoints."""
    doc = services()
    web = [i for i in doc["items"] if i["metadata"]["name"] in ("web", "web-1")]
    sticky = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "sticky", "namespace": "default"},
        "spec": {
            **web[0]["spec"],
            "clusterIP": STICKY_NP_VIP,
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": STICKY_TIMEOUT}},
            "ports": [{**p, "nodePort": STICKY_NODEPORT} for p in web[0]["spec"]["ports"]],
        },
    }
    endpoints = {
        **web[1],
        "metadata": {
            "name": "sticky-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "sticky"},
        },
    }
    doc["items"] += [sticky, endpoints]
    return doc


@dataclass
class Case:
    diff: SvcDifferential
    config: SvcConfig

    @property
    def xdp(self) -> bool:
        return self.diff.program == XDP_PROGRAM

    def send(self, frame: bytes, **want: int) -> bytes:
        """Run `frame` through the device; the model must count exactly `want` in one pass
        (and the kernel agree with every run). The frame that leaves the device."""
        step = self.diff.step(frame)
        assert step.device_deltas() == want, step.device_deltas()
        return step.last.out

    def plant(
        self, client: str, sport: int, proto: int, backend: str, bport: int, flags: int = 0
    ) -> None:
        """A session of client:sport -> VIP:port (80 TCP, 53 UDP) with the given backend."""
        vport = 80 if proto == IPPROTO_TCP else 53
        key = FlowKey(A(client), A(VIP), sport, vport, proto)
        session = NatSession(time.monotonic_ns(), 0, 0, flags, A(backend), bport)
        rkey = FlowKey(A(backend), A(client), bport, sport, proto)
        self.diff.put_session(key, session, (rkey, Rnat(A(client), sport, A(VIP), vport)))

    def plant_affinity(
        self,
        client: str,
        daddr: str,
        dport: int,
        proto: int,
        backend: str,
        bport: int,
        age_s: float = 0,
    ) -> AffinityKey:
        """An affinity entry of client for the Service port of daddr:dport, `age_s` old."""
        f = self.config.lookup(A(daddr), dport, proto)
        assert f is not None and f.affinity_s
        key = AffinityKey(A(client), f.affinity_id)
        aged = time.monotonic_ns() - int(age_s * 10**9)
        if aged <= 0:
            pytest.fail(
                f"the clock (time since boot) is younger than {age_s} s: "
                "no affinity entry can be aged that far",
                pytrace=False,
            )
        self.diff.put_affinity(key, Affinity(aged, A(backend), bport))
        return key

    def affinity_of(self, client: str, daddr: str, dport: int, proto: int) -> str | None:
        f = self.config.lookup(A(daddr), dport, proto)
        assert f is not None
        entry = self.diff.state.affinity.get(AffinityKey(A(client), f.affinity_id))
        return None if entry is None else str(IPv4Address(entry.addr))

    def backend_of(self, client: str, daddr: str, sport: int, dport: int, proto: int) -> str:
        f = self.config.lookup(A(daddr), dport, proto)
        assert f is not None
        addr, _ = select_backend(self.config, f, FlowKey(A(client), A(daddr), sport, dport, proto))
        return str(IPv4Address(addr))


def seg(saddr: str, daddr: str, sport: int, dport: int, flags: int, **kw: Any) -> bytes:
    return ethernet(
        ipv4(
            A(saddr),
            A(daddr),
            IPPROTO_TCP,
            tcp(A(saddr), A(daddr), sport, dport, flags=flags, **kw),
        )
    )


def dgram(saddr: str, daddr: str, sport: int, dport: int, payload: bytes = b"q") -> bytes:
    return ethernet(
        ipv4(
            A(saddr), A(daddr), IPPROTO_UDP, udp(A(saddr), A(daddr), sport, dport, payload=payload)
        )
    )


def out_tuple(frame: bytes) -> tuple[str, int, str, int]:
    return (
        str(IPv4Address(frame[26:30])),
        int.from_bytes(frame[34:36], "big"),
        str(IPv4Address(frame[30:34])),
        int.from_bytes(frame[36:38], "big"),
    )


# ------------------------------------------------------------------------ the cases

NEW = {"dnat_new": 1, "fib_fallback": 1}
NEW_SNAT = {"dnat_new": 1, "snat_new": 1, "fib_fallback": 1}
HIT = {"dnat_hit": 1, "fib_fallback": 1}
REPLY = {"rdnat": 1, "fib_fallback": 1}


def new_flow_dnat(c: Case) -> None:
    """A pod to a ClusterIP keeps its source; the destination becomes the selected backend."""
    out = c.send(seg(CLIENT_POD, VIP, 40000, 80, SYN), **NEW)
    assert out_tuple(out) == (
        CLIENT_POD,
        40000,
        c.backend_of(CLIENT_POD, VIP, 40000, 80, IPPROTO_TCP),
        BACKEND_PORT,
    )


def hit(c: Case) -> None:
    first = c.send(seg(CLIENT_POD, VIP, 40001, 80, SYN), **NEW)
    second = c.send(seg(CLIENT_POD, VIP, 40001, 80, ACK | PSH, payload=b"GET /"), **HIT)
    assert out_tuple(first)[2:] == out_tuple(second)[2:]


def reply(c: Case) -> None:
    out = c.send(seg(CLIENT_POD, VIP, 40002, 80, SYN), **NEW)
    backend = out_tuple(out)[2]
    back = c.send(seg(backend, CLIENT_POD, BACKEND_PORT, 40002, SYN | ACK), **REPLY)
    assert out_tuple(back) == (VIP, 80, CLIENT_POD, 40002)


def snat_masq(c: Case) -> None:
    """An outside client to a NodePort (externalTrafficPolicy: Cluster): DNAT and SNAT;
    the backend's reply to the SNAT address and port goes back as NODE2:NodePort."""
    out = c.send(seg(OUTSIDE, NODE2, 51000, NODEPORT, SYN), **NEW_SNAT)
    saddr, sport, backend, _ = out_tuple(out)
    back = c.send(seg(backend, saddr, BACKEND_PORT, sport, SYN | ACK), **REPLY)
    assert out_tuple(back) == (NODE2, NODEPORT, OUTSIDE, 51000)


def udp_from_outside_masq(c: Case) -> None:
    """A ClusterIP from outside cluster.podCIDR is masqueraded."""
    c.send(dgram(OUTSIDE, VIP, 5353, 53), **NEW_SNAT)


def hairpin(c: Case) -> None:
    """A backend that selects itself is SNATed to a node address."""
    me = BACKENDS[0]
    sport = next(p for p in range(45000, 46000) if c.backend_of(me, VIP, p, 80, IPPROTO_TCP) == me)
    out = c.send(seg(me, VIP, sport, 80, SYN), **NEW_SNAT)
    saddr, nport, _, _ = out_tuple(out)
    back = c.send(seg(me, saddr, BACKEND_PORT, nport, SYN | ACK), **REPLY)
    assert out_tuple(back) == (VIP, 80, me, sport)


def reject_tcp(c: Case) -> None:
    """No backends: a RST|ACK to a SYN, a RST to an ACK, nothing to a RST."""
    c.send(
        seg(
            CLIENT_POD,
            EMPTY_VIP,
            40000,
            80,
            SYN,
            seq=1000,
            payload=b"hi",
            options=bytes.fromhex("020405b4"),
        ),
        reject_no_backend=1,
    )
    c.send(seg(CLIENT_POD, EMPTY_VIP, 40000, 80, ACK | PSH, ack=7777), reject_no_backend=1)
    c.send(seg(CLIENT_POD, EMPTY_VIP, 40000, 80, RST), drop_no_backend=1)


def reject_tcp_padded(c: Case) -> None:
    """A minimum-size Ethernet frame (a 54-byte SYN padded to 60): the RST acknowledges
    SYN and payload by the IP total length, not the 6 bytes of padding."""
    c.send(seg(OUTSIDE, EMPTY_VIP, 40000, 80, SYN, seq=5) + bytes(6), reject_no_backend=1)
    c.send(
        seg(OUTSIDE, EMPTY_VIP, 40000, 80, FIN, seq=9, payload=b"x") + bytes(5), reject_no_backend=1
    )


def reject_udp(c: Case) -> None:
    """No backends: ICMP port unreachable quoting the header and 8 bytes (grown, shrunk)."""
    c.send(dgram(CLIENT_POD, EMPTY_VIP, 5353, 53, payload=b""), reject_no_backend=1)
    c.send(dgram(CLIENT_POD, EMPTY_VIP, 5353, 53, payload=b"q" * 100), reject_no_backend=1)


def echo_vip(c: Case) -> None:
    c.send(
        ethernet(
            ipv4(A(CLIENT_POD), A(VIP), IPPROTO_ICMP, icmp(8, 0, 0x1234_0007, payload=b"ping"))
        ),
        icmp_echo_vip=1,
    )
    # A node address is local to the node, not a VIP; an echo reply is not answered.
    c.send(ethernet(ipv4(A(CLIENT_POD), A(NODE2), IPPROTO_ICMP, icmp(8, 0, 1))), **{"pass": 1})
    c.send(ethernet(ipv4(A(CLIENT_POD), A(VIP), IPPROTO_ICMP, icmp(0, 0, 1))), **{"pass": 1})


def backend_gone_drop(c: Case) -> None:
    """A session whose backend is no longer listed: a TCP non-SYN is dropped, the session
    and its reverse entry deleted."""
    c.plant(CLIENT_POD, 44000, IPPROTO_TCP, GONE, BACKEND_PORT)
    c.send(seg(CLIENT_POD, VIP, 44000, 80, ACK), drop_backend_gone=1)
    assert not c.diff.state.forward and not c.diff.state.reverse


def backend_gone_syn_fin(c: Case) -> None:
    """Only a bare SYN (ACK, FIN, RST clear) starts over: SYN|FIN and SYN|RST are dropped.
    (The C let any SYN without ACK through before: found by the equivalence test.)"""
    for port, flags in ((44001, SYN | FIN), (44002, SYN | RST)):
        c.plant(CLIENT_POD, port, IPPROTO_TCP, GONE, BACKEND_PORT)
        c.send(seg(CLIENT_POD, VIP, port, 80, flags), drop_backend_gone=1)
    c.plant(CLIENT_POD, 44003, IPPROTO_TCP, GONE, BACKEND_PORT)
    c.send(seg(CLIENT_POD, VIP, 44003, 80, SYN | PSH), **NEW)


def reselect_udp(c: Case) -> None:
    """UDP of a session whose backend is gone is selected anew."""
    c.plant(CLIENT_POD, 5353, IPPROTO_UDP, GONE, 5353)
    out = c.send(dgram(CLIENT_POD, VIP, 5353, 53), **NEW)
    assert out_tuple(out)[2] == c.backend_of(CLIENT_POD, VIP, 5353, 53, IPPROTO_UDP)


def draining_keeps_session(c: Case) -> None:
    """A session whose backend is listed but not ready (draining) keeps it; new flows never
    select it. Needs the draining-membership change of the C (see the report)."""
    c.plant(CLIENT_POD, 44100, IPPROTO_TCP, DRAINING, BACKEND_PORT, flags=0x01)
    out = c.send(seg(CLIENT_POD, VIP, 44100, 80, ACK), **HIT)
    assert out_tuple(out)[2] == DRAINING


def expired_session_reselected(c: Case) -> None:
    """An expired session is a new flow: its reverse entry is forgotten, a backend selected."""
    c.send(seg(CLIENT_POD, VIP, 44200, 80, SYN), **NEW)
    (key,) = c.diff.state.forward
    aged = time.monotonic_ns() - (TIMEOUT_S + 5) * 10**9
    if aged <= 0:
        pytest.fail(
            f"the clock (time since boot) is younger than {TIMEOUT_S + 5} s: "
            "no session can be aged past its timeout",
            pytrace=False,
        )
    c.diff.set_last_seen(key, aged)
    c.send(seg(CLIENT_POD, VIP, 44200, 80, ACK), **NEW)


def selection(c: Case) -> None:
    """Many flows: random h % n or Maglev table[h % M], as the model selects (maglev
    builds: the tables of bpfgen.maglev)."""
    chosen = set()
    for sport in range(42000, 42030):
        out = c.send(seg(CLIENT_POD, VIP, sport, 80, SYN), **NEW)
        chosen.add(out_tuple(out)[2])
    assert chosen == set(BACKENDS)  # 30 flows reach all three, never DRAINING


ROUTED = IPv4Network("198.18.0.0/15")  # connected in forwarded_with_a_route's namespace
SETUP = (
    "ip link add bg0 type veth peer name bg1",
    "ip link set bg0 up",
    "ip link set bg1 up",
    "ip addr add 198.18.0.2/15 dev bg0",
    "sysctl -qw net.ipv4.ip_forward=1",
    f"ip neigh add {BACKENDS[0]} lladdr 02:00:00:00:00:01 dev bg0 nud permanent",
)


def routed(daddr: int, saddr: int, proto: int) -> FibResult:
    """The FIB of forwarded_with_a_route's namespace, as far as svc_in can tell (SUCCESS
    and NO_NEIGH both end in bpf_redirect_neigh, which a test run does not perform)."""
    return FibResult.NO_NEIGH if IPv4Address(daddr) in ROUTED else FibResult.OTHER


def forwarded_with_a_route(c: Case) -> None:
    """In a namespace with a route to the backends and forwarding on: translated packets
    are redirected with the TTL decremented; TTL 1 and destinations without a route go
    to the stack (fib_fallback), their TTL kept."""
    with private_netns():
        for cmd in SETUP:
            subprocess.run(cmd.split(), check=True)
        c.diff.fib = routed
        out = c.send(seg(CLIENT_POD, VIP, 40000, 80, SYN), dnat_new=1, redirect=1)
        assert out[22] == 63
        back = c.send(
            seg(out_tuple(out)[2], CLIENT_POD, BACKEND_PORT, 40000, SYN | ACK), rdnat=1, redirect=1
        )
        assert back[22] == 63
        c.send(
            ethernet(
                ipv4(
                    A(CLIENT_POD),
                    A(VIP),
                    IPPROTO_TCP,
                    tcp(A(CLIENT_POD), A(VIP), 40001, 80, flags=SYN),
                    ttl=1,
                )
            ),
            **NEW,
        )
        c.send(seg(OUTSIDE, NODE2, 40002, NODEPORT, SYN), dnat_new=1, snat_new=1, redirect=1)
        c.send(seg(BACKENDS[1], NODE2, BACKEND_PORT, 40000, ACK), **{"pass": 1})
        c.diff.fib = no_route
    c.send(seg(CLIENT_POD, VIP, 40000, 80, ACK), **HIT)


AFFINE = {"dnat_new": 1, "affinity_hit": 1, "fib_fallback": 1}


def _other_sport(c: Case, start: int, daddr: str, not_to: str) -> int:
    """A source port from `start` on whose hash (CLIENT_POD -> daddr:80/TCP) selects
    another backend than `not_to`."""
    return next(
        p
        for p in range(start, start + 1000)
        if c.backend_of(CLIENT_POD, daddr, p, 80, IPPROTO_TCP) != not_to
    )


def affinity_followed(c: Case) -> None:
    """sessionAffinity ClientIP: a client's first new flow is selected by hash and
    remembered; its next new flows (other source ports) follow the entry, touching it,
    counted affinity_hit; another client is selected on its own."""
    first = c.send(seg(CLIENT_POD, STICKY_VIP, 40000, 80, SYN), **NEW)
    backend = out_tuple(first)[2]
    assert c.affinity_of(CLIENT_POD, STICKY_VIP, 80, IPPROTO_TCP) == backend
    hashed = set()
    for sport in range(40001, 40011):
        out = c.send(seg(CLIENT_POD, STICKY_VIP, sport, 80, SYN), **AFFINE)
        assert out_tuple(out)[2] == backend
        hashed.add(c.backend_of(CLIENT_POD, STICKY_VIP, sport, 80, IPPROTO_TCP))
    assert len(hashed) > 1  # without affinity these flows would have spread
    # The next packet of a flow is its session's, not affinity's.
    c.send(seg(CLIENT_POD, STICKY_VIP, 40003, 80, ACK), **HIT)
    out = c.send(seg(OUTSIDE, STICKY_VIP, 40000, 80, SYN), **NEW_SNAT)
    assert out_tuple(out)[2] == c.backend_of(OUTSIDE, STICKY_VIP, 40000, 80, IPPROTO_TCP)


def affinity_expired(c: Case) -> None:
    """An entry timeoutSeconds old or more is not followed, nor one stamped ahead of now
    (now - last_seen in u64 is no age); the flow is selected by hash and the entry
    rewritten. One just younger than the timeout is followed."""
    for start, age in ((41000, STICKY_TIMEOUT + 2), (42000, -5.0)):
        c.plant_affinity(
            CLIENT_POD, STICKY_VIP, 80, IPPROTO_TCP, BACKENDS[0], BACKEND_PORT, age_s=age
        )
        sport = _other_sport(c, start, STICKY_VIP, BACKENDS[0])
        out = c.send(seg(CLIENT_POD, STICKY_VIP, sport, 80, SYN), **NEW)
        assert out_tuple(out)[2] != BACKENDS[0]
        assert c.affinity_of(CLIENT_POD, STICKY_VIP, 80, IPPROTO_TCP) == out_tuple(out)[2]
    c.plant_affinity(
        CLIENT_POD, STICKY_VIP, 80, IPPROTO_TCP, BACKENDS[0], BACKEND_PORT, age_s=STICKY_TIMEOUT - 2
    )
    sport = _other_sport(c, 43000, STICKY_VIP, BACKENDS[0])
    out = c.send(seg(CLIENT_POD, STICKY_VIP, sport, 80, SYN), **AFFINE)
    assert out_tuple(out)[2] == BACKENDS[0]


def affinity_not_selectable(c: Case) -> None:
    """An entry whose backend is draining (listed, not ready) or no endpoint at all, or
    another port's backend (the UDP port's 5353 on the TCP port), is not followed."""
    for start, (backend, port) in zip(
        (41000, 42000, 43000),
        ((DRAINING, BACKEND_PORT), (GONE, BACKEND_PORT), (BACKENDS[0], DNS_PORT)),
        strict=True,
    ):
        c.plant_affinity(CLIENT_POD, STICKY_NP_VIP, 80, IPPROTO_TCP, backend, port)
        sport = _other_sport(c, start, STICKY_NP_VIP, BACKENDS[0])
        out = c.send(seg(CLIENT_POD, STICKY_NP_VIP, sport, 80, SYN), **NEW)
        assert out_tuple(out)[2] == c.backend_of(CLIENT_POD, STICKY_NP_VIP, sport, 80, IPPROTO_TCP)
    # A draining member keeps its session, though.
    c.plant(CLIENT_POD, 44100, IPPROTO_TCP, DRAINING, BACKEND_PORT, flags=0x01)
    c.send(seg(CLIENT_POD, VIP, 44100, 80, ACK), **HIT)


def affinity_per_service_port(c: Case) -> None:
    """One entry per client and Service port, whichever frontend the client uses: a flow to
    the ClusterIP writes it, one to the NodePort (on either node address) follows it; the
    Service's UDP port has an entry of its own."""
    first = c.send(seg(CLIENT_POD, STICKY_NP_VIP, 40000, 80, SYN), **NEW)
    backend = out_tuple(first)[2]
    for sport in range(40001, 40005):
        out = c.send(seg(CLIENT_POD, NODE2, sport, STICKY_NODEPORT, SYN), **AFFINE, snat_new=1)
        assert out_tuple(out)[2] == backend
    udp = c.send(dgram(CLIENT_POD, NODE2, 5353, STICKY_NODEPORT), **NEW_SNAT)
    assert out_tuple(udp)[2] == c.backend_of(CLIENT_POD, NODE2, 5353, STICKY_NODEPORT, IPPROTO_UDP)
    out = c.send(dgram(CLIENT_POD, STICKY_NP_VIP, 5354, 53), **AFFINE)
    assert out_tuple(out)[2] == out_tuple(udp)[2]
    tcp_id = c.config.lookup(A(STICKY_NP_VIP), 80, IPPROTO_TCP)
    udp_id = c.config.lookup(A(NODE2), STICKY_NODEPORT, IPPROTO_UDP)
    assert tcp_id is not None and udp_id is not None
    assert {k.affinity_id for k in c.diff.state.affinity} == {
        tcp_id.affinity_id,
        udp_id.affinity_id,
    }


XDP_MAC = "02:00:00:00:00:aa"  # bg0's, the source MAC of what XDP sends back
NEIGHBOUR_MAC = "02:00:00:00:00:01"  # BACKENDS[0]'s, the only neighbour


def routed_through_the_ingress_device(c: Case) -> None:
    """The route to the backends leaves through the device the packets came in on (bg0):
    at tc every translated packet is redirected; svc_xdp (bg0 its ingress device) sends
    one to a backend with a resolved neighbour back out itself (XDP_TX: translated,
    TTL - 1, MACs from the FIB), passes the others (no neighbour, TTL 1) untranslated to
    tc. Echo replies and REJECT answers leave as they always do."""
    with private_netns():
        for cmd in (f"ip link add bg0 address {XDP_MAC} type veth peer name bg1", *SETUP[1:]):
            subprocess.run(cmd.split(), check=True)
        c.diff.fib = routed
        c.diff.ingress_ifindex = socket.if_nametoindex("bg0")
        macs = bytes.fromhex(NEIGHBOUR_MAC.replace(":", "") + XDP_MAC.replace(":", ""))

        def route(daddr: int, saddr: int, proto: int) -> bytes | None:
            return macs if daddr == A(BACKENDS[0]) else None

        c.diff.route = route
        sport = next(
            p
            for p in range(40000, 41000)
            if c.backend_of(CLIENT_POD, VIP, p, 80, IPPROTO_TCP) == BACKENDS[0]
        )
        step = c.diff.step(seg(CLIENT_POD, VIP, sport, 80, SYN))
        out = step.last.out
        assert out_tuple(out)[2] == BACKENDS[0] and out[22] == 63
        if c.xdp:
            assert step.then is None and out[:12] == macs
        assert step.device_deltas() == {"dnat_new": 1, "redirect": 1}
        other = next(
            p
            for p in range(40000, 41000)
            if c.backend_of(CLIENT_POD, VIP, p, 80, IPPROTO_TCP) != BACKENDS[0]
        )
        step = c.diff.step(seg(CLIENT_POD, VIP, other, 80, SYN))
        assert step.last.out[22] == 63
        if c.xdp:
            assert step.then is not None and step.out == step.packet  # passed untranslated
        assert step.device_deltas() == {"dnat_new": 1, "redirect": 1}
        c.send(
            ethernet(
                ipv4(
                    A(CLIENT_POD),
                    A(VIP),
                    IPPROTO_TCP,
                    tcp(A(CLIENT_POD), A(VIP), sport, 80, flags=ACK),
                    ttl=1,
                )
            ),
            **HIT,
        )
        c.send(ethernet(ipv4(A(CLIENT_POD), A(VIP), IPPROTO_ICMP, icmp(8, 0, 7))), icmp_echo_vip=1)
        c.send(seg(CLIENT_POD, EMPTY_VIP, 40000, 80, SYN), reject_no_backend=1)
        c.diff.fib, c.diff.route, c.diff.ingress_ifindex = no_route, no_xdp_route, 0
    c.send(seg(CLIENT_POD, VIP, sport, 80, ACK), **HIT)


# The TCP session lifecycle (docs/datapath.md): closes with coherent sequence numbers.
C_ISN, B_ISN = 1000, 5000  # the next sequence numbers of the client and the backend


def _snat_open(c: Case, sport: int) -> tuple[FlowKey, str, int, str]:
    """An outside client to the NodePort (SNAT), answered: (session key, backend, nat
    port, nat addr)."""
    out = c.send(seg(OUTSIDE, NODE2, sport, NODEPORT, SYN, seq=C_ISN - 1), **NEW_SNAT)
    saddr, nport, backend, _ = out_tuple(out)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, SYN | ACK, seq=B_ISN - 1, ack=C_ISN), **REPLY)
    c.send(seg(OUTSIDE, NODE2, sport, NODEPORT, ACK, seq=C_ISN, ack=B_ISN), **HIT)
    return FlowKey(A(OUTSIDE), A(NODE2), sport, NODEPORT, IPPROTO_TCP), backend, nport, saddr


def closed_by_client_releases_the_port(c: Case) -> None:
    """FIN from the client, FIN+ACK of it from the backend, the client's last ACK: the
    backend closed passively (no TIME_WAIT there), so the session and its reverse entry
    are gone after that last ACK, which is still translated."""
    key, backend, nport, saddr = _snat_open(c, 52000)
    c.send(seg(OUTSIDE, NODE2, 52000, NODEPORT, FIN | ACK, seq=C_ISN, ack=B_ISN), **HIT)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, FIN | ACK, seq=B_ISN, ack=C_ISN + 1), **REPLY)
    flags = c.diff.state.forward[key].flags
    assert flags & FIN_ACKED and not flags & (REPLY_FIRST | CLOSED), hex(flags)
    out = c.send(seg(OUTSIDE, NODE2, 52000, NODEPORT, ACK, seq=C_ISN + 1, ack=B_ISN + 1), **HIT)
    assert out_tuple(out) == (saddr, nport, backend, BACKEND_PORT)
    forward, reverse = c.diff.kernel_tables()
    assert key not in forward and not any(
        r.addr == A(OUTSIDE) and r.port == 52000 for r in reverse.values()
    )


def closed_by_backend_holds_the_port(c: Case) -> None:
    """The backend closes first: it holds TIME_WAIT on the SNAT port, so the closed
    session stays (tcpTimeWait) and another client's flow cannot take that port; the
    same tuple's bare SYN reopens it with its port (RFC 6191's case)."""
    key, backend, nport, saddr = _snat_open(c, 52001)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, FIN | ACK, seq=B_ISN, ack=C_ISN), **REPLY)
    c.send(seg(OUTSIDE, NODE2, 52001, NODEPORT, FIN | ACK, seq=C_ISN, ack=B_ISN + 1), **HIT)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, ACK, seq=B_ISN + 1, ack=C_ISN + 1), **REPLY)
    s = c.diff.state.forward[key]
    assert s.flags & (CLOSED | REPLY_FIRST | FIN_ACKED) == CLOSED | REPLY_FIRST | FIN_ACKED
    assert timeout_ns(c.config.base, IPPROTO_TCP, s.flags) == TIME_WAIT_S * 10**9
    again = c.send(seg(OUTSIDE, NODE2, 52001, NODEPORT, SYN, seq=C_ISN + 99), **HIT)
    assert out_tuple(again) == (saddr, nport, backend, BACKEND_PORT)
    assert c.diff.state.forward[key].flags == 0


def simultaneous_close_holds_the_port(c: Case) -> None:
    """FINs that cross (the second does not acknowledge the first): both ends may hold
    TIME_WAIT, so the session is held as closed, never released."""
    key, backend, nport, saddr = _snat_open(c, 52002)
    c.send(seg(OUTSIDE, NODE2, 52002, NODEPORT, FIN | ACK, seq=C_ISN, ack=B_ISN), **HIT)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, FIN | ACK, seq=B_ISN, ack=C_ISN), **REPLY)
    c.send(seg(OUTSIDE, NODE2, 52002, NODEPORT, ACK, seq=C_ISN + 1, ack=B_ISN + 1), **HIT)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, ACK, seq=B_ISN + 1, ack=C_ISN + 1), **REPLY)
    flags = c.diff.state.forward[key].flags
    assert flags & CLOSED and not flags & (FIN_ACKED | REPLY_FIRST), hex(flags)


def reset_keeps_translating_for_tcp_close(c: Case) -> None:
    """A RST: the session lives tcpClose, and a packet after it is still translated."""
    key, backend, nport, saddr = _snat_open(c, 52003)
    c.send(seg(backend, saddr, BACKEND_PORT, nport, RST, seq=B_ISN), **REPLY)
    s = c.diff.state.forward[key]
    assert timeout_ns(c.config.base, IPPROTO_TCP, s.flags) == CLOSE_S * 10**9
    c.send(seg(OUTSIDE, NODE2, 52003, NODEPORT, ACK, seq=C_ISN, ack=B_ISN), **HIT)


def closed_pod_flow_without_snat_is_released(c: Case) -> None:
    """A flow without SNAT has no port to protect: released however it closed."""
    out = c.send(seg(CLIENT_POD, VIP, 40100, 80, SYN, seq=C_ISN - 1), **NEW)
    backend = out_tuple(out)[2]
    c.send(seg(backend, CLIENT_POD, BACKEND_PORT, 40100, FIN | ACK, seq=B_ISN, ack=C_ISN), **REPLY)
    c.send(seg(CLIENT_POD, VIP, 40100, 80, FIN | ACK, seq=C_ISN, ack=B_ISN + 1), **HIT)
    c.send(
        seg(backend, CLIENT_POD, BACKEND_PORT, 40100, ACK, seq=B_ISN + 1, ack=C_ISN + 1), **REPLY
    )
    assert FlowKey(A(CLIENT_POD), A(VIP), 40100, 80, IPPROTO_TCP) not in c.diff.kernel_tables()[0]


def port_preserved_when_free(c: Case) -> None:
    """A client port inside the SNAT range is kept when its reply tuple is free; a second
    client with the same port to the same backend gets another port."""
    first = next(
        p
        for p in range(PORT_MIN, PORT_MAX + 1)
        if c.backend_of(OUTSIDE, NODE2, p, NODEPORT, IPPROTO_TCP) == BACKENDS[0]
    )
    out = c.send(seg(OUTSIDE, NODE2, first, NODEPORT, SYN), **NEW_SNAT)
    assert out_tuple(out)[1] == first
    base = c.config.base

    def nat_addr(client: str) -> str:
        h = tuple_hash(base.hash_seed, A(client), A(NODE2), first, NODEPORT, IPPROTO_TCP)
        return str(IPv4Address(base.node_addrs[h % len(base.node_addrs)]))

    # Another client, same port, same backend, same node address: the same reply tuple.
    other = next(
        a
        for a in (f"203.0.113.{i}" for i in range(8, 250))
        if c.backend_of(a, NODE2, first, NODEPORT, IPPROTO_TCP) == BACKENDS[0]
        and nat_addr(a) == out_tuple(out)[0]
    )
    again = c.send(seg(other, NODE2, first, NODEPORT, SYN), **NEW_SNAT)
    assert out_tuple(again)[0] == out_tuple(out)[0] and out_tuple(again)[1] != first


def full_map_is_swept(c: Case) -> None:
    """Session maps full of expired flows without SNAT (which no port probe ever reclaims):
    the first new flow is dropped (drop_map_full) and sweeps every expired session with
    its reverse entry; its retransmission gets a session. A live session survives."""
    live_key = FlowKey(A(CLIENT_POD), A(VIP), 39999, 80, IPPROTO_TCP)
    c.plant(CLIENT_POD, 39999, IPPROTO_TCP, BACKENDS[0], BACKEND_PORT)
    old = time.monotonic_ns() - (TIMEOUT_S + 10) * 10**9
    if old <= 0:
        pytest.fail("the clock (time since boot) is too young to age a session", pytrace=False)
    for i in range(MAX_SESSIONS - 1):
        c.plant(OUTSIDE, 20000 + i, IPPROTO_UDP, BACKENDS[1], DNS_PORT)
        c.diff.set_last_seen(FlowKey(A(OUTSIDE), A(VIP), 20000 + i, 53, IPPROTO_UDP), old)
    c.send(seg(CLIENT_POD, VIP, 40200, 80, SYN), drop_map_full=1)
    forward, reverse = c.diff.kernel_tables()
    assert list(forward) == [live_key] and len(reverse) == 1
    c.send(seg(CLIENT_POD, VIP, 40200, 80, SYN), **NEW)


CASES: dict[str, Callable[[Case], None]] = {
    f.__name__: f
    for f in (
        new_flow_dnat,
        hit,
        reply,
        snat_masq,
        udp_from_outside_masq,
        hairpin,
        reject_tcp,
        reject_tcp_padded,
        reject_udp,
        echo_vip,
        backend_gone_drop,
        backend_gone_syn_fin,
        reselect_udp,
        draining_keeps_session,
        expired_session_reselected,
        selection,
        forwarded_with_a_route,
        affinity_followed,
        affinity_expired,
        affinity_not_selectable,
        affinity_per_service_port,
        routed_through_the_ingress_device,
        closed_by_client_releases_the_port,
        closed_by_backend_holds_the_port,
        simultaneous_close_holds_the_port,
        reset_keeps_translating_for_tcp_close,
        closed_pod_flow_without_snat_is_released,
        port_preserved_when_free,
        full_map_is_swept,
    )
}


# ------------------------------------------------------------------------ builds


@dataclass
class Built:
    build: BuildUnderTest
    config: SvcConfig

    program: str


KINDS = ("specialized", "generic", "frozen")
# tc: every kind and scheduler; XDP (uplink hook: xdp): every kind, schedulers alternating.
BUILDS = on_this_kernel(
    [(k, s, "tc") for s in ("random", "maglev") for k in KINDS]
    + [("specialized", "maglev", "xdp"), ("generic", "random", "xdp"), ("frozen", "maglev", "xdp")]
)


@pytest.fixture(
    scope="module",
    params=BUILDS,
    ids=[f"{k}-{s}" + ("-xdp" if h == "xdp" else "") for k, s, h in BUILDS],
)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    kind, scheduler, hook = request.param
    root = tmp_path_factory.mktemp(f"cases-bpf-{kind}-{scheduler}-{hook}")
    node = node_config(
        scheduler, maglev_size=251 if scheduler == "maglev" else None, uplink_hook=hook
    )
    node["snat"]["timeouts"] = {
        k: f"{TIMEOUT_S}s" for k in ("tcpEstablished", "tcpTransitory", "udp", "icmp")
    }
    node["snat"]["timeouts"] |= {"tcpTimeWait": f"{TIME_WAIT_S}s", "tcpClose": f"{CLOSE_S}s"}
    node_path, services_path = write_inputs(root, node, case_services())
    result = compile_build(node_path, [services_path], root / "build", build=kind, verify=False)
    config = svc_config(load_inputs(node_path, [services_path]), kind)
    with BuildUnderTest(result.out) as build:
        yield Built(build, config, XDP_PROGRAM if hook == "xdp" else PROGRAM)


@pytest.mark.parametrize("name", CASES)
def test_case(built: Built, name: str) -> None:
    case = Case(SvcDifferential(built.build, built.config, program=built.program), built.config)
    CASES[name](case)
    assert not case.diff.compare_state()


def _native(value: int, size: int) -> int:
    """The integer whose native-order bytes are `value` in network order."""
    return int.from_bytes(value.to_bytes(size, "big"), sys.byteorder)


def test_the_model_reads_the_maps_and_counters_as_the_c_lays_them_out(built: Built) -> None:
    """The differential's byte layouts of bpfgen_nat_v4/bpfgen_rnat_v4 values are
    the contract's layouts (the C structs), and the counters are the manifest's."""
    assert built.build.counter_names == SVC_COUNTER_NAMES
    nat = layouts.NatEntry(
        last_seen_ns=1,
        nat_addr=layouts.be32(2),
        nat_port=layouts.be16(3),
        flags=4,
        backend_addr=layouts.be32(5),
        backend_port=layouts.be16(6),
        backend_gen=7,
    )
    assert pack_nat(NatSession(1, 2, 3, 4, 5, 6, 7)) == layouts.to_bytes(nat)
    rnat = layouts.RnatEntry(
        addr=layouts.be32(1), port=layouts.be16(2), vip=layouts.be32(3), vip_port=layouts.be16(4)
    )
    assert pack_rnat(Rnat(1, 2, 3, 4)) == layouts.to_bytes(rnat)
    # The C keeps the affinity map's addresses and ports in network order in u32/u16 fields.
    akey = layouts.AffinityKey(client=_native(1, 4), affinity_id=2)
    assert pack_affinity_key(AffinityKey(1, 2)) == layouts.to_bytes(akey)
    entry = layouts.AffinityEntry(last_seen_ns=1, addr=_native(2, 4), port=_native(3, 2))
    assert pack_affinity(Affinity(1, 2, 3)) == layouts.to_bytes(entry)
    for name in ("bpfgen_nat_v4", "bpfgen_rnat_v4", "bpfgen_affinity_v4"):
        (m,) = [m for m in built.build.manifest.maps if m.name == name]
        assert m.max_entries == built.config.base.max_sessions


def test_cases_run_in_a_namespace_without_routes() -> None:
    """The premise of the model's no_route FIB: this thread's namespace has no routes."""
    routes = Path("/proc/thread-self/net/route").read_text().splitlines()[1:]
    assert routes == [], routes

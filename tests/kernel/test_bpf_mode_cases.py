"""bpf mode (docs/datapath-bpf.md): bpfgen_svc_in on concrete packets, through
BPF_PROG_TEST_RUN, for the specialized, generic and frozen builds and both
schedulers. Written from the spec, independently of the reference model (which
test_model_cases_bpf.py and test_model_equivalence_bpf.py compare with the
kernel): each case checks the rewritten bytes (addresses, ports, valid IPv4 and
L4 checksums), the verdict, both session maps and the counters.

BPF_PROG_TEST_RUN does not perform a redirect: a translated packet's verdict
is TC_ACT_REDIRECT when the test's network namespace has a route to its new
destination, TC_ACT_OK (counted fib_fallback) when not; either is accepted,
and the counters must say which.

The same cases run on an uplink with `hook: xdp`: bpfgen_svc_xdp, and, when it
passes the frame (XDP_PASS), svc_in at tc on the same frame, as the device runs
them; XDP's verdicts read as tc's: XDP_DROP/ABORTED as TC_ACT_SHOT, XDP_TX as
TC_ACT_REDIRECT (sent on without the stack).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from bpf_inputs import (
    BACKEND_PORT,
    BACKENDS,
    DNS_PORT,
    DRAINING,
    EMPTY_VIP,
    NODE1,
    NODE2,
    NODEPORT,
    PORT_MAX,
    PORT_MIN,
    SELECTION_SEED,
    STICKY_TIMEOUT,
    STICKY_VIP,
    VIP,
    node_config,
    on_this_kernel,
    services,
    write_inputs,
)
from kernel.bpf_redirect_netns import NEIGHBOURS

from bpfgen import maglev
from bpfgen.compiler import compile_build
from bpfgen.inputs import load_inputs
from bpfgen.model import Backend
from bpfgen.refmodel import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from bpfgen.refmodel.bpf_differential import (
    pack_affinity,
    pack_nat,
    pack_rnat,
    unpack_affinity,
    unpack_nat,
    unpack_rnat,
)
from bpfgen.refmodel.bpf_svc import NatSession, Rnat
from bpfgen.refmodel.checksum import ones_sum, pseudo_header
from bpfgen.refmodel.frames import ethernet, icmp, ipv4, tcp, udp
from bpfgen.refmodel.hashing import tuple_hash
from bpfgen_runtime.testrun import BuildUnderTest, SessionKey

pytestmark = pytest.mark.kernel

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
XDP_PASS, XDP_TX = 2, 3
XDP_AS_TC = {0: TC_ACT_SHOT, 1: TC_ACT_SHOT, XDP_TX: TC_ACT_REDIRECT}  # ABORTED, DROP, TX
SYN, ACK = 0x02, 0x10
CLIENT_POD = "198.19.1.9"  # a pod of this node, no backend
OUTSIDE = "203.0.113.7"  # an external client


def A(text: str) -> int:
    return int(IPv4Address(text))


class Nat(NamedTuple):
    nat_addr: int
    nat_port: int
    flags: int
    backend_addr: int
    backend_port: int


@dataclass(frozen=True)
class Out:
    verdict: int
    saddr: int
    daddr: int
    sport: int
    dport: int
    ttl: int


class Raw(NamedTuple):
    retval: int  # a tc verdict (XDP's translated: XDP_AS_TC)
    packet: bytes


@dataclass
class Bpf:
    build: BuildUnderTest
    kind: str
    scheduler: str
    backends: dict[int, tuple[Backend, ...]]  # web's backends by IP protocol, sorted
    program: str  # svc_in (tc) or svc_xdp
    # XDP uplink: what svc_in counted again for frames svc_xdp passed it (see raw()).
    repeated: Counter[str] = field(default_factory=Counter)

    @property
    def xdp(self) -> bool:
        return self.program == "svc_xdp"

    def raw(self, frame: bytes) -> Raw:
        """The device's verdict on a frame: tc, or XDP and then tc for what XDP passes.

        A frame svc_xdp passed after its session work (xdp_to_tc) finds that session
        at tc: tc counts a dnat_hit or rdnat that XDP counted already (as dnat_new,
        dnat_hit or rdnat). One it passed as not its own (pass, malformed) tc counts
        again. deltas() leaves those repeats and xdp_to_tc out, so every case states
        the counts of one pass through the datapath, as at tc alone."""
        if not self.xdp:
            result = self.build.run(self.program, frame)
            return Raw(result.retval, result.packet)
        start = self.build.counters()
        result = self.build.run(self.program, frame)
        if result.retval != XDP_PASS:
            return Raw(XDP_AS_TC[result.retval], result.packet)
        mid = self.build.counters()
        after = self.build.run("svc_in", result.packet)
        end = self.build.counters()
        at_xdp = Counter({k: v - start.get(k, 0) for k, v in mid.items()})
        at_tc = Counter({k: v - mid.get(k, 0) for k, v in end.items()})
        if at_xdp["xdp_to_tc"]:
            self.repeated["xdp_to_tc"] += 1
            for name in ("dnat_hit", "rdnat"):
                self.repeated[name] += min(at_tc[name], 1)
        else:
            self.repeated.update(+at_xdp)
        return Raw(after.retval, after.packet)

    def nat(self) -> dict[SessionKey, Nat]:
        return {
            SessionKey.unpack(k): Nat(*unpack_nat(v)[1:6])
            for k, v in self.build.maps["bpfgen_nat_v4"].items()
        }

    def rnat(self) -> dict[SessionKey, Rnat]:
        return {
            SessionKey.unpack(k): unpack_rnat(v)
            for k, v in self.build.maps["bpfgen_rnat_v4"].items()
        }

    def clear(self) -> None:
        for name in ("bpfgen_nat_v4", "bpfgen_rnat_v4", "bpfgen_affinity_v4"):
            m = self.build.maps[name]
            for k in list(m.keys()):
                m.delete(k)
        self.reset_counters()

    def reset_counters(self) -> None:
        self.build.reset_counters()
        self.repeated.clear()

    def run(self, frame: bytes) -> Out:
        result = self.raw(frame)
        return parse(result.retval, result.packet)

    def deltas(self) -> dict[str, int]:
        counts = {k: v - self.repeated[k] for k, v in self.build.counters().items()}
        return {k: v for k, v in counts.items() if v}

    def expected_backend(
        self, saddr: str, daddr: str, sport: int, dport: int, proto: int
    ) -> Backend:
        h = tuple_hash(SELECTION_SEED, A(saddr), A(daddr), sport, dport, proto)
        backends = self.backends[proto]
        if self.scheduler == "random":
            return backends[h % len(backends)]
        # The table of this frontend's backends (keys "address:port": per service port).
        table = maglev.build_table([maglev.Backend.of(b) for b in backends], 16381)
        return backends[table[h % 16381]]


def parse(verdict: int, pkt: bytes) -> Out:
    ip = pkt[14:34]
    assert ones_sum(ip) == 0xFFFF, f"IPv4 checksum wrong: {pkt.hex()}"
    proto, saddr, daddr = ip[9], int.from_bytes(ip[12:16], "big"), int.from_bytes(ip[16:20], "big")
    l4 = pkt[34:]
    check_at = 16 if proto == IPPROTO_TCP else 6
    if not (proto == IPPROTO_UDP and l4[check_at : check_at + 2] == b"\0\0"):
        assert ones_sum(pseudo_header(saddr, daddr, proto, len(l4)) + l4) == 0xFFFF, (
            f"L4 checksum wrong: {pkt.hex()}"
        )
    sport, dport = struct.unpack("!HH", l4[:4])
    return Out(verdict, saddr, daddr, sport, dport, ip[8])


def forwarded(out: Out, counters: dict[str, int]) -> None:
    """Translated and handed on: redirected (TTL 63), or to the stack (fib_fallback, TTL 64)."""
    if out.verdict == TC_ACT_REDIRECT:
        assert counters.get("redirect") == 1 and "fib_fallback" not in counters
        assert out.ttl == 63
    else:
        assert out.verdict == TC_ACT_OK, out
        assert counters.get("fib_fallback") == 1 and "redirect" not in counters
        assert out.ttl == 64


def syn(saddr: str, daddr: str, sport: int, dport: int, flags: int = SYN) -> bytes:
    return ethernet(
        ipv4(
            A(saddr),
            A(daddr),
            IPPROTO_TCP,
            tcp(A(saddr), A(daddr), sport, dport, flags=flags, payload=b"hi"),
        )
    )


XDP_BUILDS = on_this_kernel([("specialized", "random", "xdp"), ("frozen", "maglev", "xdp")])
BUILDS = on_this_kernel(
    [
        ("specialized", "random", "tc"),
        ("generic", "random", "tc"),
        ("frozen", "random", "tc"),
        ("specialized", "maglev", "tc"),
        ("generic", "maglev", "tc"),
        *XDP_BUILDS,
    ]
)


def _build_id(p: tuple[str, str, str]) -> str:
    return f"{p[0]}-{p[1]}" + ("-xdp" if p[2] == "xdp" else "")


@pytest.fixture(scope="module", params=BUILDS, ids=_build_id)
def bpf(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bpf]:
    yield from _open(*request.param, tmp_path_factory)


@pytest.fixture(scope="module", params=XDP_BUILDS, ids=_build_id)
def xdp_bpf(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bpf]:
    yield from _open(*request.param, tmp_path_factory)


def _open(
    kind: str, scheduler: str, hook: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Bpf]:
    root = tmp_path_factory.mktemp(f"bpf-{kind}-{scheduler}-{hook}")
    node_path, services_path = write_inputs(
        root, node_config(scheduler, uplink_hook=hook), services()
    )
    result = compile_build(node_path, [services_path], root / "build", build=kind, verify=False)
    inputs = load_inputs(node_path, [services_path])
    (web,) = [s for s in inputs.services if s.name == "web"]
    with BuildUnderTest(result.out) as build:
        yield Bpf(
            build,
            kind,
            scheduler,
            {IPPROTO_TCP: web.ports[0].backends, IPPROTO_UDP: web.ports[1].backends},
            "svc_xdp" if hook == "xdp" else "svc_in",
        )


def test_pod_to_cluster_ip_is_dnated_and_both_sessions_written(bpf: Bpf) -> None:
    bpf.clear()
    out = bpf.run(syn(CLIENT_POD, VIP, 40000, 80))
    want = bpf.expected_backend(CLIENT_POD, VIP, 40000, 80, IPPROTO_TCP)
    counters = bpf.deltas()
    # A pod of the cluster keeps its source (ClusterIP: masquerade only from outside).
    assert (out.saddr, out.sport) == (A(CLIENT_POD), 40000)
    assert (out.daddr, out.dport) == (int(want.address), BACKEND_PORT)
    assert str(want.address) in BACKENDS
    forwarded(out, counters)
    assert counters.get("dnat_new") == 1 and "snat_new" not in counters
    key = SessionKey(A(CLIENT_POD), A(VIP), 40000, 80, IPPROTO_TCP)
    assert bpf.nat() == {key: Nat(0, 0, 0, int(want.address), BACKEND_PORT)}
    rkey = SessionKey(int(want.address), A(CLIENT_POD), BACKEND_PORT, 40000, IPPROTO_TCP)
    assert bpf.rnat() == {rkey: Rnat(A(CLIENT_POD), 40000, A(VIP), 80)}


def test_second_packet_keeps_its_backend_and_reply_is_reversed(bpf: Bpf) -> None:
    bpf.clear()
    first = bpf.run(syn(CLIENT_POD, VIP, 40001, 80))
    bpf.reset_counters()
    second = bpf.run(syn(CLIENT_POD, VIP, 40001, 80, flags=ACK))
    assert (second.daddr, second.dport) == (first.daddr, first.dport)
    assert bpf.deltas().get("dnat_hit") == 1
    bpf.reset_counters()
    reply = bpf.run(
        syn(str(IPv4Address(first.daddr)), CLIENT_POD, BACKEND_PORT, 40001, flags=SYN | ACK)
    )
    counters = bpf.deltas()
    assert (reply.saddr, reply.sport, reply.daddr, reply.dport) == (
        A(VIP),
        80,
        A(CLIENT_POD),
        40001,
    )
    assert counters.get("rdnat") == 1
    forwarded(reply, counters)
    (session,) = bpf.nat().values()
    assert session.flags & 0x01  # BPFGEN_SESSION_SEEN_REPLY


def test_nodeport_from_outside_gets_dnat_and_snat(bpf: Bpf) -> None:
    bpf.clear()
    out = bpf.run(syn(OUTSIDE, NODE2, 51000, NODEPORT))
    counters = bpf.deltas()
    want = bpf.expected_backend(OUTSIDE, NODE2, 51000, NODEPORT, IPPROTO_TCP)
    assert (out.daddr, out.dport) == (int(want.address), BACKEND_PORT)
    assert out.saddr in (A(NODE1), A(NODE2))
    assert PORT_MIN <= out.sport <= PORT_MAX
    assert counters.get("dnat_new") == 1 and counters.get("snat_new") == 1
    forwarded(out, counters)
    key = SessionKey(A(OUTSIDE), A(NODE2), 51000, NODEPORT, IPPROTO_TCP)
    assert bpf.nat() == {key: Nat(out.saddr, out.sport, 0, int(want.address), BACKEND_PORT)}
    rkey = SessionKey(int(want.address), out.saddr, BACKEND_PORT, out.sport, IPPROTO_TCP)
    assert bpf.rnat() == {rkey: Rnat(A(OUTSIDE), 51000, A(NODE2), NODEPORT)}
    # The backend's reply, to the SNAT address and port, goes back as NODE2:NodePort.
    bpf.reset_counters()
    reply = bpf.run(
        syn(
            str(want.address), str(IPv4Address(out.saddr)), BACKEND_PORT, out.sport, flags=SYN | ACK
        )
    )
    assert (reply.saddr, reply.sport, reply.daddr, reply.dport) == (
        A(NODE2),
        NODEPORT,
        A(OUTSIDE),
        51000,
    )
    assert bpf.deltas().get("rdnat") == 1


def test_udp_cluster_ip_from_outside_the_cluster_is_masqueraded(bpf: Bpf) -> None:
    bpf.clear()
    frame = ethernet(
        ipv4(A(OUTSIDE), A(VIP), IPPROTO_UDP, udp(A(OUTSIDE), A(VIP), 5353, 53, payload=b"q"))
    )
    out = bpf.run(frame)
    want = bpf.expected_backend(OUTSIDE, VIP, 5353, 53, IPPROTO_UDP)
    assert (out.daddr, out.dport) == (int(want.address), DNS_PORT)
    assert out.saddr in (A(NODE1), A(NODE2)) and PORT_MIN <= out.sport <= PORT_MAX
    assert bpf.deltas().get("snat_new") == 1


@pytest.mark.parametrize("flags", [SYN, ACK | 0x08])
def test_tcp_to_a_frontend_without_backends_gets_a_reset(bpf: Bpf, flags: int) -> None:
    """kube-proxy's REJECT: the segment becomes a RST back to the client (seq = its
    ack when it has ACK, else ACK of seq + SYN + payload), out of the ingress device."""
    bpf.clear()
    frame = ethernet(
        ipv4(
            A(CLIENT_POD),
            A(EMPTY_VIP),
            IPPROTO_TCP,
            tcp(
                A(CLIENT_POD),
                A(EMPTY_VIP),
                40000,
                80,
                flags=flags,
                seq=1000,
                ack=7777,
                options=bytes.fromhex("020405b4"),
                payload=b"hi",
            ),
        )
    )
    result = bpf.raw(frame)
    out = parse(result.retval, result.packet)
    assert result.retval == TC_ACT_REDIRECT and len(result.packet) == 54
    assert result.packet[:6] == frame[6:12] and result.packet[6:12] == frame[:6]
    assert (out.saddr, out.sport, out.daddr, out.dport) == (A(EMPTY_VIP), 80, A(CLIENT_POD), 40000)
    seq, ack = struct.unpack("!II", result.packet[38:46])
    tcp_flags = result.packet[47]
    if flags & ACK:
        assert (tcp_flags, seq) == (0x04, 7777)
    else:
        assert (tcp_flags, ack) == (0x14, 1000 + 1 + 2)  # SYN + "hi"
    assert bpf.deltas() == {"reject_no_backend": 1}
    assert bpf.nat() == {} and bpf.rnat() == {}


def test_tcp_reset_to_a_frontend_without_backends_is_not_answered(bpf: Bpf) -> None:
    bpf.clear()
    result = bpf.raw(syn(CLIENT_POD, EMPTY_VIP, 40000, 80, flags=0x04))
    assert result.retval == TC_ACT_SHOT
    assert bpf.deltas() == {"drop_no_backend": 1}  # dropped, not answered


@pytest.mark.parametrize("payload", [0, 100])  # the packet grows, or shrinks
def test_udp_to_a_frontend_without_backends_gets_port_unreachable(bpf: Bpf, payload: int) -> None:
    """ICMP port unreachable from the frontend address, quoting the datagram's IPv4
    header and first 8 bytes, back out of the ingress device."""
    bpf.clear()
    frame = ethernet(
        ipv4(
            A(CLIENT_POD),
            A(EMPTY_VIP),
            IPPROTO_UDP,
            udp(A(CLIENT_POD), A(EMPTY_VIP), 5353, 53, payload=b"q" * payload),
        )
    )
    result = bpf.raw(frame)
    out = result.packet
    assert result.retval == TC_ACT_REDIRECT and len(out) == 14 + 20 + 8 + 28
    assert out[:6] == frame[6:12] and out[6:12] == frame[:6]
    assert ones_sum(out[14:34]) == 0xFFFF, out.hex()
    assert out[23] == IPPROTO_ICMP and (out[26:30], out[30:34]) == (frame[30:34], frame[26:30])
    assert (out[34], out[35]) == (3, 3)
    assert ones_sum(out[34:]) == 0xFFFF, f"ICMP checksum wrong: {out.hex()}"
    assert out[42:70] == frame[14:42]  # the quoted header and UDP ports, length, checksum
    assert bpf.deltas() == {"reject_no_backend": 1}


def test_other_traffic_passes_untouched(bpf: Bpf) -> None:
    """Outside the service CIDR, no frontend: not the Services' business."""
    bpf.clear()
    frame = syn(CLIENT_POD, "198.18.1.9", 40000, 81)
    result = bpf.raw(frame)
    assert (result.retval, result.packet) == (TC_ACT_OK, frame)
    assert bpf.deltas() == {"pass": 1}


def test_a_clusterips_other_port_is_rejected(bpf: Bpf) -> None:
    """issue 15, kube-proxy nftables' "Reject traffic to invalid ports of ClusterIPs": the
    VIP at a port that is no frontend gets a RST|ACK from VIP:port, counted
    reject_vip_port (a RST to it: dropped, drop_vip_port). Until then it went to the
    stack, which routed it out of the node."""
    bpf.clear()
    result = bpf.raw(syn(CLIENT_POD, VIP, 40000, 81))
    out = result.packet
    assert result.retval == TC_ACT_REDIRECT and len(out) == 54
    assert (out[26:30], out[30:34]) == (socket.inet_aton(VIP), socket.inet_aton(CLIENT_POD))
    assert struct.unpack("!HH", out[34:38]) == (81, 40000) and out[47] == 0x14  # RST|ACK
    assert bpf.deltas() == {"reject_vip_port": 1}
    bpf.clear()
    rst = ethernet(
        ipv4(A(CLIENT_POD), A(VIP), IPPROTO_TCP, tcp(A(CLIENT_POD), A(VIP), 40000, 81, flags=0x04))
    )
    assert bpf.raw(rst).retval == TC_ACT_SHOT
    assert bpf.deltas() == {"drop_vip_port": 1}


def test_an_unallocated_service_address_is_dropped(bpf: Bpf) -> None:
    """issue 15, kube-proxy nftables' "Drop traffic to unallocated ClusterIPs": in the
    service CIDR, no VIP: dropped, counted drop_unallocated; ICMP is left alone."""
    bpf.clear()
    assert bpf.raw(syn(CLIENT_POD, "198.18.200.1", 40000, 80)).retval == TC_ACT_SHOT
    assert bpf.deltas() == {"drop_unallocated": 1}
    bpf.clear()
    ping = ethernet(ipv4(A(CLIENT_POD), A("198.18.200.1"), IPPROTO_ICMP, icmp(8, 0, 7)))
    assert bpf.raw(ping).retval == TC_ACT_OK
    assert bpf.deltas() == {"pass": 1}


def test_selection_follows_the_scheduler_over_many_flows(bpf: Bpf) -> None:
    """random: backends[h % n]; maglev: backends[table[h % M]] of bpfgen.maglev,
    h the tuple hash under datapath.selectionSeed."""
    bpf.clear()
    chosen = set()
    for sport in range(42000, 42040):
        out = bpf.run(syn(CLIENT_POD, VIP, sport, 80))
        want = bpf.expected_backend(CLIENT_POD, VIP, sport, 80, IPPROTO_TCP)
        assert out.daddr == int(want.address), sport
        chosen.add(out.daddr)
    assert len(chosen) == len(BACKENDS)  # 40 flows reach all three
    assert bpf.deltas().get("dnat_new") == 40


def _in_routed_netns(
    bpf: Bpf, program: str, ingress: str, frames: list[bytes]
) -> tuple[list[tuple[int, bytes]], dict[str, int]]:
    """Run `program` on `frames` in a fresh namespace with routes to the backends
    (tests/kernel/bpf_redirect_netns.py): (verdict, packet) per frame, and counters."""
    proc = subprocess.run(
        [
            "unshare",
            "-n",
            sys.executable,
            str(Path(__file__).with_name("bpf_redirect_netns.py")),
            str(bpf.build.build_dir),
            program,
            ingress,
            *(f.hex() for f in frames),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    return [(v, bytes.fromhex(pkt)) for v, pkt in result["runs"]], result["counters"]


def test_translated_packets_are_redirected_with_a_route(bpf: Bpf) -> None:
    """In a namespace with routes to the backends: SUCCESS (neighbour known) and
    NO_NEIGH (the third backend) both end in bpf_redirect_neigh, TTL decremented
    (svc_in, also on an XDP uplink for what svc_xdp passes)."""
    frames = [syn(CLIENT_POD, VIP, sport, 80) for sport in range(43000, 43040)]
    runs, counters = _in_routed_netns(bpf, "svc_in", "-", frames)
    outs = [parse(verdict, pkt) for verdict, pkt in runs]
    assert all(o.verdict == TC_ACT_REDIRECT and o.ttl == 63 for o in outs), outs
    assert {o.daddr for o in outs} == {A(b) for b in BACKENDS}  # with and without neighbour
    assert counters == {"dnat_new": len(frames), "redirect": len(frames)}


def test_xdp_sends_back_out_of_the_uplink_or_passes_to_tc(xdp_bpf: Bpf) -> None:
    """svc_xdp with bg0 as the ingress device, the backends routed through bg0 too: with
    a known neighbour the frame is translated and sent back (XDP_TX), TTL decremented,
    MACs from the FIB; the third backend (no neighbour) is passed untouched to tc
    (xdp_to_tc), its session already written for svc_in to find."""
    frames = [syn(CLIENT_POD, VIP, sport, 80) for sport in range(43100, 43140)]
    runs, counters = _in_routed_netns(xdp_bpf, "svc_xdp", "bg0", frames)
    known = {A(a): mac for a, mac in NEIGHBOURS.items()}
    sent = 0
    for frame, (verdict, pkt) in zip(frames, runs, strict=True):
        if verdict == XDP_TX:
            o = parse(TC_ACT_REDIRECT, pkt)
            assert o.daddr in known and o.ttl == 63 and pkt[:6] == known[o.daddr], o
            sent += 1
        else:
            assert (verdict, pkt) == (XDP_PASS, frame)
    assert 0 < sent < len(frames)
    assert counters == {"dnat_new": len(frames), "redirect": sent, "xdp_to_tc": len(frames) - sent}


@pytest.mark.parametrize("flags", [ACK, SYN])
def test_a_session_whose_backend_is_gone_is_not_kept(bpf: Bpf, flags: int) -> None:
    """A session pointing at an address that is no backend of its frontend (removed
    by a sync) is deleted; a TCP non-SYN is dropped (drop_backend_gone), a SYN is
    selected anew among the current backends."""
    bpf.clear()
    gone, key = A("198.19.9.9"), SessionKey(A(CLIENT_POD), A(VIP), 44000, 80, IPPROTO_TCP)
    entry = pack_nat(NatSession(time.monotonic_ns(), 0, 0, 0, gone, BACKEND_PORT))
    bpf.build.maps["bpfgen_nat_v4"].update(key.pack(), entry)
    rkey = SessionKey(gone, A(CLIENT_POD), BACKEND_PORT, 44000, IPPROTO_TCP)
    bpf.build.maps["bpfgen_rnat_v4"].update(
        rkey.pack(), pack_rnat(Rnat(A(CLIENT_POD), 44000, A(VIP), 80))
    )
    result = bpf.raw(syn(CLIENT_POD, VIP, 44000, 80, flags=flags))
    counters = bpf.deltas()
    assert rkey not in bpf.rnat()
    if flags == ACK:
        assert result.retval == TC_ACT_SHOT and counters == {"drop_backend_gone": 1}
        assert bpf.nat() == {}
    else:
        out = parse(result.retval, result.packet)
        want = bpf.expected_backend(CLIENT_POD, VIP, 44000, 80, IPPROTO_TCP)
        assert out.daddr == int(want.address) and counters.get("dnat_new") == 1
        assert bpf.nat()[key].backend_addr == int(want.address)


@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP])
def test_a_session_to_a_terminating_endpoint_goes_on(bpf: Bpf, proto: int) -> None:
    """web lists DRAINING as terminating (not ready): no new flow selects it (the
    scheduler test above sees only BACKENDS), but a session already on it keeps it,
    as kube-proxy and IPVS (weight 0) let a terminating endpoint's connections finish."""
    bpf.clear()
    port = 80 if proto == IPPROTO_TCP else 53
    bport = BACKEND_PORT if proto == IPPROTO_TCP else DNS_PORT
    key = SessionKey(A(CLIENT_POD), A(VIP), 44001, port, proto)
    entry = pack_nat(NatSession(time.monotonic_ns(), 0, 0, 0, A(DRAINING), bport))
    bpf.build.maps["bpfgen_nat_v4"].update(key.pack(), entry)
    frame = (
        syn(CLIENT_POD, VIP, 44001, port, flags=ACK)
        if proto == IPPROTO_TCP
        else ethernet(
            ipv4(
                A(CLIENT_POD),
                A(VIP),
                IPPROTO_UDP,
                udp(A(CLIENT_POD), A(VIP), 44001, port, payload=b"q"),
            )
        )
    )
    out = bpf.run(frame)
    assert (out.daddr, out.dport) == (A(DRAINING), bport), out
    assert bpf.deltas().get("dnat_hit") == 1 and key in bpf.nat()


def _affinity(bpf: Bpf) -> dict[int, tuple[int, int, int]]:
    """bpfgen_affinity_v4: client -> (last_seen_ns, backend addr, backend port)."""
    out = {}
    for k, v in bpf.build.maps["bpfgen_affinity_v4"].items():
        out[int.from_bytes(k[:4], "big")] = unpack_affinity(v)
    return out


def test_client_ip_affinity_keeps_a_client_on_one_backend(bpf: Bpf) -> None:
    """web-sticky (sessionAffinity ClientIP, 60 s): the first new flow of a client is
    selected by hash and remembered; the client's next new flows (other source ports,
    which would hash elsewhere) go to the same backend, counted affinity_hit."""
    bpf.clear()
    first = bpf.expected_backend(CLIENT_POD, STICKY_VIP, 40000, 80, IPPROTO_TCP)
    outs = [bpf.run(syn(CLIENT_POD, STICKY_VIP, port, 80)) for port in range(40000, 40012)]
    assert {(o.daddr, o.dport) for o in outs} == {(int(first.address), BACKEND_PORT)}, outs
    hashed = {
        bpf.expected_backend(CLIENT_POD, STICKY_VIP, port, 80, IPPROTO_TCP).address
        for port in range(40000, 40012)
    }
    assert len(hashed) > 1  # without affinity these flows would have spread
    counters = bpf.deltas()
    assert counters.get("dnat_new") == 12 and counters.get("affinity_hit") == 11, counters
    assert _affinity(bpf)[A(CLIENT_POD)][1:] == (int(first.address), BACKEND_PORT)
    # Another client is selected on its own.
    other = bpf.run(syn(OUTSIDE, STICKY_VIP, 40000, 80))
    want = bpf.expected_backend(OUTSIDE, STICKY_VIP, 40000, 80, IPPROTO_TCP)
    assert other.daddr == int(want.address)


@pytest.mark.parametrize("stale", ["expired", "not a backend"])
def test_client_ip_affinity_entry_is_ignored_when_stale(bpf: Bpf, stale: str) -> None:
    """An entry older than timeoutSeconds, or naming an address that is no selectable
    backend of the Service port, is not followed: the flow is selected by hash and the
    entry rewritten."""
    bpf.clear()
    bpf.run(syn(CLIENT_POD, STICKY_VIP, 40000, 80))
    ((key, value),) = bpf.build.maps["bpfgen_affinity_v4"].items()
    entry = unpack_affinity(value)
    if stale == "expired":
        entry = entry._replace(last_seen_ns=entry.last_seen_ns - (STICKY_TIMEOUT + 1) * 10**9)
    else:
        entry = entry._replace(addr=A("198.19.9.9"))
    bpf.build.maps["bpfgen_affinity_v4"].update(key, pack_affinity(entry))
    # A source port whose hash picks another backend than the entry's did.
    first = A(str(bpf.expected_backend(CLIENT_POD, STICKY_VIP, 40000, 80, IPPROTO_TCP).address))
    sport = next(
        p
        for p in range(40001, 40100)
        if int(bpf.expected_backend(CLIENT_POD, STICKY_VIP, p, 80, IPPROTO_TCP).address) != first
    )
    bpf.reset_counters()
    out = bpf.run(syn(CLIENT_POD, STICKY_VIP, sport, 80))
    want = int(bpf.expected_backend(CLIENT_POD, STICKY_VIP, sport, 80, IPPROTO_TCP).address)
    assert out.daddr == want and "affinity_hit" not in bpf.deltas()
    assert _affinity(bpf)[A(CLIENT_POD)][1] == want


def test_echo_request_to_a_vip_is_answered(bpf: Bpf) -> None:
    bpf.clear()
    frame = ethernet(
        ipv4(A(CLIENT_POD), A(VIP), IPPROTO_ICMP, icmp(8, 0, 0x1234_0007, payload=b"ping"))
    )
    result = bpf.raw(frame)
    out = result.packet
    assert result.retval == TC_ACT_REDIRECT  # bpf_redirect back out of the ingress device
    assert out[:6] == frame[6:12] and out[6:12] == frame[:6]  # MACs swapped
    assert (out[26:30], out[30:34]) == (frame[30:34], frame[26:30])  # addresses swapped
    assert ones_sum(out[14:34]) == 0xFFFF, out.hex()
    assert out[34] == 0 and out[38:40] == frame[38:40]  # echo reply, same identifier
    assert ones_sum(out[34:]) == 0xFFFF, f"ICMP checksum wrong: {out.hex()}"
    assert out[42:] == frame[42:]
    assert bpf.deltas() == {"icmp_echo_vip": 1}


def test_echo_request_to_a_non_vip_passes(bpf: Bpf) -> None:
    bpf.clear()
    frame = ethernet(ipv4(A(CLIENT_POD), A(BACKENDS[1]), IPPROTO_ICMP, icmp(8, 0, 0x1234_0007)))
    result = bpf.raw(frame)
    assert (result.retval, result.packet) == (TC_ACT_OK, frame)
    assert bpf.deltas() == {"pass": 1}


def test_hairpin_is_snated_and_its_reply_reversed(bpf: Bpf) -> None:
    """A pod that is itself selected as the backend gets SNAT to a node address."""
    bpf.clear()
    me = BACKENDS[0]
    sport = next(
        p
        for p in range(45000, 46000)
        if str(bpf.expected_backend(me, VIP, p, 80, IPPROTO_TCP).address) == me
    )
    out = bpf.run(syn(me, VIP, sport, 80))
    assert (out.daddr, out.dport) == (A(me), BACKEND_PORT)
    assert out.saddr in (A(NODE1), A(NODE2)) and PORT_MIN <= out.sport <= PORT_MAX
    assert bpf.deltas().get("snat_new") == 1
    bpf.reset_counters()
    reply = bpf.run(syn(me, str(IPv4Address(out.saddr)), BACKEND_PORT, out.sport, flags=SYN | ACK))
    assert (reply.saddr, reply.sport, reply.daddr, reply.dport) == (A(VIP), 80, A(me), sport)
    assert bpf.deltas().get("rdnat") == 1


LB_VIP_MODE, LB_PROXY_MODE = "198.18.2.20", "198.18.2.21"


@pytest.mark.parametrize("kind", ["specialized", "generic"])
def test_lb_ip_with_proxy_ip_mode_is_not_captured(tmp_path: Path, kind: str) -> None:
    """issue 15, KEP-1860: kube-proxy serves a load balancer's ingress IP on the node only
    in `ipMode: VIP` (the default); with `Proxy` the load balancer proxies, and traffic
    to that IP must reach it untouched. The same frontends feed the ipvs mode's IPVS
    services (tests/unit/test_config_valid.py checks the inputs)."""
    svcs = services()
    lb = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    lb["spec"]["type"] = "LoadBalancer"
    lb["status"] = {
        "loadBalancer": {
            "ingress": [
                {"ip": LB_VIP_MODE, "ipMode": "VIP"},
                {"ip": LB_PROXY_MODE, "ipMode": "Proxy"},
            ]
        }
    }
    node_path, services_path = write_inputs(tmp_path, node_config(), svcs)
    result = compile_build(node_path, [services_path], tmp_path / "build", build=kind, verify=False)
    frontends = {(f.kind, f.address) for f in result.manifest.specialization.frontends}
    assert ("LoadBalancer", LB_VIP_MODE) in frontends
    assert not any(address == LB_PROXY_MODE for _, address in frontends)
    with BuildUnderTest(result.out) as build:
        bpf = Bpf(build, kind, "random", {}, "svc_in")
        bpf.clear()
        out = bpf.run(syn(OUTSIDE, LB_PROXY_MODE, 51000, 80))
        assert (out.verdict, out.daddr, out.dport, out.saddr) == (
            TC_ACT_OK,
            A(LB_PROXY_MODE),
            80,
            A(OUTSIDE),
        )
        assert bpf.deltas() == {"pass": 1} and bpf.nat() == {}
        out = bpf.run(syn(OUTSIDE, LB_VIP_MODE, 51000, 80))
        assert str(IPv4Address(out.daddr)) in BACKENDS and out.dport == BACKEND_PORT
        assert bpf.deltas().get("dnat_new") == 1


@contextmanager
def _svc_in(tmp_path: Path, svcs: dict[str, Any], kind: str) -> Iterator[Bpf]:
    """svc_in of a `kind` build of the test node and `svcs`, its maps cleared."""
    node_path, services_path = write_inputs(tmp_path, node_config(), svcs)
    result = compile_build(node_path, [services_path], tmp_path / "build", build=kind, verify=False)
    with BuildUnderTest(result.out) as build:
        bpf = Bpf(build, kind, "random", {}, "svc_in")
        bpf.clear()
        yield bpf


@pytest.mark.parametrize("kind", ["specialized", "generic"])
def test_load_balancer_source_ranges_drop_other_clients(tmp_path: Path, kind: str) -> None:
    """issue 15: spec.loadBalancerSourceRanges was accepted and not enforced. As kube-proxy
    (nftables firewall-ips): a client outside the ranges is dropped at the LB IP, before
    any translation, counted drop_source_range; one inside is served; the Service's
    NodePort and ClusterIP are not subject to the ranges. A range that holds a node
    address also admits the LB IP itself as a source (kube-proxy's allowFromNode)."""
    allowed_client = "203.0.113.70"
    svcs = services()
    lb = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    lb["spec"]["type"] = "LoadBalancer"
    lb["spec"]["loadBalancerSourceRanges"] = ["203.0.113.64/26", f"{NODE1}/32"]
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": LB_VIP_MODE}]}}
    with _svc_in(tmp_path, svcs, kind) as bpf:
        out = bpf.run(syn(OUTSIDE, LB_VIP_MODE, 51000, 80))
        assert out.verdict == TC_ACT_SHOT
        assert bpf.deltas() == {"drop_source_range": 1} and bpf.nat() == {}
        bpf.reset_counters()
        for client in (allowed_client, LB_VIP_MODE):  # in a range; the LB IP (node in range)
            out = bpf.run(syn(client, LB_VIP_MODE, 51000, 80))
            assert str(IPv4Address(out.daddr)) in BACKENDS and out.dport == BACKEND_PORT
            assert bpf.deltas().get("dnat_new") == 1, client
            bpf.reset_counters()
        for daddr, dport in ((NODE2, NODEPORT), (VIP, 80)):  # not the LB IP: no ranges
            out = bpf.run(syn(OUTSIDE, daddr, 52000, dport))
            assert str(IPv4Address(out.daddr)) in BACKENDS, (daddr, dport)
            assert "drop_source_range" not in bpf.deltas()
            bpf.reset_counters()


@pytest.mark.parametrize("kind", ["specialized", "frozen"])
def test_masquerade_all_leaves_external_traffic_policy_local_alone(
    tmp_path: Path, kind: str
) -> None:
    """issue 15: kube-proxy's --masquerade-all is the cluster IPs' (its iptables, nftables
    and ipvs proxiers alike). A NodePort with externalTrafficPolicy: Local still keeps
    the client's address under it; a ClusterIP is masqueraded even from a pod."""
    node = node_config()
    node["cluster"]["masqueradeAll"] = True
    svcs = services()
    web = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    node_path, services_path = write_inputs(tmp_path, node, svcs)
    result = compile_build(node_path, [services_path], tmp_path / "build", build=kind, verify=False)
    policies = {(f.kind, f.service): f.masquerade
                for f in result.manifest.specialization.frontends}  # fmt: skip
    assert policies[("NodePort", "default/web")] == "NEVER"
    assert policies[("ClusterIP", "default/web")] == "ALWAYS"
    with BuildUnderTest(result.out) as build:
        bpf = Bpf(build, kind, "random", {}, "svc_in")
        bpf.clear()
        out = bpf.run(syn(OUTSIDE, NODE2, 51000, NODEPORT))
        # the one local endpoint (BACKENDS[0] is on node-a), the client's address kept
        assert (out.saddr, out.sport) == (A(OUTSIDE), 51000)
        assert (out.daddr, out.dport) == (A(BACKENDS[0]), BACKEND_PORT)
        assert bpf.deltas().get("dnat_new") == 1 and "snat_new" not in bpf.deltas()
        bpf.reset_counters()
        out = bpf.run(syn(CLIENT_POD, VIP, 40000, 80))
        assert out.saddr in (A(NODE1), A(NODE2)) and PORT_MIN <= out.sport <= PORT_MAX
        assert bpf.deltas().get("snat_new") == 1


def test_local_policy_serves_this_nodes_terminating_endpoint(tmp_path: Path) -> None:
    """issue 15: under externalTrafficPolicy: Local, no ready endpoint on this node but
    ready ones elsewhere: kube-proxy serves this node's serving terminating endpoint;
    bpfgen rejected the connection (RST)."""
    svcs = services()
    web = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    web_slice = next(i for i in svcs["items"] if i["metadata"]["name"] == "web-1")
    local = next(e for e in web_slice["endpoints"] if e["addresses"] == [BACKENDS[0]])
    local["conditions"] = {"ready": False, "serving": True, "terminating": True}
    node_path, services_path = write_inputs(tmp_path, node_config(), svcs)
    result = compile_build(node_path, [services_path], tmp_path / "build", verify=False)
    with BuildUnderTest(result.out) as build:
        bpf = Bpf(build, "specialized", "random", {}, "svc_in")
        bpf.clear()
        out = bpf.run(syn(OUTSIDE, NODE2, 51000, NODEPORT))
        assert (out.saddr, out.daddr, out.dport) == (A(OUTSIDE), A(BACKENDS[0]), BACKEND_PORT)
        assert bpf.deltas().get("dnat_new") == 1 and "reject_no_backend" not in bpf.deltas()


@pytest.mark.parametrize("kind", ["specialized", "generic"])
def test_local_policy_with_endpoints_only_elsewhere_drops(tmp_path: Path, kind: str) -> None:
    """issue 15: kube-proxy rejects (RST) only a Service without any endpoint. Under
    externalTrafficPolicy: Local with this node's endpoint gone and ready ones elsewhere,
    a new flow is dropped, counted drop_no_local_endpoint; bpfgen sent a RST. The
    ClusterIP (policy Cluster) still serves the endpoints elsewhere."""
    svcs = services()
    web = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    web_slice = next(i for i in svcs["items"] if i["metadata"]["name"] == "web-1")
    web_slice["endpoints"] = [e for e in web_slice["endpoints"]
                              if e["addresses"] != [BACKENDS[0]]]  # fmt: skip
    with _svc_in(tmp_path, svcs, kind) as bpf:
        out = bpf.run(syn(OUTSIDE, NODE2, 51000, NODEPORT))
        assert out.verdict == TC_ACT_SHOT
        assert bpf.deltas() == {"drop_no_local_endpoint": 1} and bpf.nat() == {}
        bpf.reset_counters()
        out = bpf.run(syn(OUTSIDE, VIP, 51000, 80))
        assert str(IPv4Address(out.daddr)) in BACKENDS[1:], out
        assert bpf.deltas().get("dnat_new") == 1


@pytest.mark.parametrize("kind", ["specialized", "generic"])
def test_local_policy_sends_pods_to_every_endpoint(tmp_path: Path, kind: str) -> None:
    """issue 15: externalTrafficPolicy: Local protects external clients' addresses; kube-
    proxy (nftables, iptables) sends a pod's traffic to the NodePort/LB IP to every
    endpoint, unmasqueraded ("short-circuit pod traffic"). bpfgen sent pods to this
    node's endpoint only, and dropped them when it had none."""
    svcs = services()
    web = next(i for i in svcs["items"] if i["metadata"]["name"] == "web")
    web["spec"]["externalTrafficPolicy"] = "Local"
    with _svc_in(tmp_path, svcs, kind) as bpf:
        seen = set()
        for sport in range(40000, 40032):
            out = bpf.run(syn(CLIENT_POD, NODE2, sport, NODEPORT))
            assert (out.saddr, out.sport) == (A(CLIENT_POD), sport), out  # not masqueraded
            seen.add(str(IPv4Address(out.daddr)))
        assert seen <= set(BACKENDS) and len(seen) > 1, seen  # not only the local one
        for sport in range(41000, 41008):  # an outside client: this node's endpoint only
            out = bpf.run(syn(OUTSIDE, NODE2, sport, NODEPORT))
            assert (out.daddr, out.saddr) == (A(BACKENDS[0]), A(OUTSIDE)), out

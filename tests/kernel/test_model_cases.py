"""Kernel against model on named cases: a table of {name, sessions, program, packet in,
mark, counters, what the packet out must show}, run on the specialized, generic and frozen
build of one fixed node. Each row also pins a spec promise independently of the model
(expected counters and fields), and the rows that found bugs in the C are kept here
as regression tests. The harness itself (maps as Python values, marks through the
__sk_buff context, counters) is checked against bpfgen_runtime.contract.layouts first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address

import pytest

from bpfgen.compiler import compile_build
from bpfgen.inputs import load_inputs
from bpfgen.refmodel import (
    BUILD_KINDS,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ModelConfig,
    Origin,
    Session,
    model_config,
)
from bpfgen.refmodel.checksum import ones_sum, pseudo_header
from bpfgen.refmodel.frames import ethernet, icmp, ipv4, tcp, udp
from bpfgen.refmodel.ipvs_differential import Differential
from bpfgen_runtime.contract import layouts
from bpfgen_runtime.testrun import (
    BuildUnderTest,
    ReverseEntry,
    SessionEntry,
    SessionKey,
    tc_accepts,
)
from tests.shared_inputs import shared_inputs

pytestmark = pytest.mark.kernel


def A(text: str) -> int:
    return int(IPv4Address(text))


NODE1, NODE2 = "198.18.0.2", "198.18.0.3"
VIP, NODEPORT = "198.18.128.10", 30080
CLIENT, POD, BACKEND = "203.0.113.7", "198.19.1.5", "198.19.2.13"
MARK = 0x4000
GUARDED_VIP, LB_IP, GUARDED_NODEPORT = "198.18.128.20", "198.18.2.30", 30443
ALLOWED_RANGE, ALLOWED_CLIENT = "203.0.113.64/26", "203.0.113.70"
REMOTE_VIP, REMOTE_NODEPORT = "198.18.128.21", 30081
PORT_MIN, PORT_MAX = 65520, 65535

NODE = {
    "apiVersion": "bpfgen/v1",
    "kind": "NodeConfig",
    "node": {"name": "node-a", "addresses": [NODE1, NODE2], "podCIDR": "198.19.1.0/24"},
    "cluster": {"podCIDR": "198.19.0.0/16", "serviceCIDR": "198.18.128.0/17"},
    "interfaces": [
        {"name": "eth0", "role": "uplink", "hook": "xdp"},
        {"name": "veth*", "role": "pods"},
    ],
    "snat": {"portRange": [PORT_MIN, PORT_MAX], "maxSessions": 64, "mark": MARK},
    "features": {"icmpEcho": True},
}
SERVICES = {
    "apiVersion": "v1",
    "kind": "List",
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "clusterIP": VIP,
                "clusterIPs": [VIP],
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "nodePort": NODEPORT},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": NODEPORT},
                ],
            },
        },
        {
            # issue 15: loadBalancerSourceRanges, enforced at the LB IP only; NODE1 is in a
            # range, so the LB IP itself is an allowed source too (kube-proxy's allowFromNode)
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "guarded", "namespace": "default"},
            "spec": {
                "type": "LoadBalancer",
                "clusterIP": GUARDED_VIP,
                "loadBalancerSourceRanges": [ALLOWED_RANGE, f"{NODE1}/32"],
                "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "nodePort": GUARDED_NODEPORT}
                ],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": LB_IP}]}},
        },
        {
            # issue 15: both traffic policies Local, the one endpoint on another node
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "remote", "namespace": "default"},
            "spec": {
                "type": "NodePort",
                "clusterIP": REMOTE_VIP,
                "externalTrafficPolicy": "Local",
                "internalTrafficPolicy": "Local",
                "ports": [
                    {"name": "http", "port": 80, "protocol": "TCP", "nodePort": REMOTE_NODEPORT}
                ],
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "remote-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "remote"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [BACKEND], "nodeName": "node-b"}],
        },
    ],
}


@pytest.fixture(scope="module", params=BUILD_KINDS)
def case_build(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BuildUnderTest, ModelConfig]]:
    kind: str = request.param
    root = tmp_path_factory.mktemp(f"cases-{kind}")
    node, services = shared_inputs(json.dumps(NODE), json.dumps(SERVICES))
    result = compile_build(node, [services], root / "build", build=kind, verify=False)
    with BuildUnderTest(result.out) as build:
        yield build, model_config(load_inputs(node, [services]), kind)


# --------------------------------------------------------------------- the harness itself


def test_harness_layouts_match_bpfgen_layouts() -> None:
    """testrun's session records pack as bpfgen_runtime.contract.layouts' mirrors."""
    key = SessionKey(A("1.2.3.4"), A("5.6.7.8"), 0x1234, 0xABCD, 6)
    mirror = layouts.Tuple4(
        layouts.be32(key.saddr),
        layouts.be32(key.daddr),
        layouts.be16(key.sport),
        layouts.be16(key.dport),
        key.proto,
    )
    assert key.pack() == layouts.to_bytes(mirror)
    entry = SessionEntry(0x0102030405060708, A("9.9.9.9"), 0x4242, 3)
    mirror_entry = layouts.SnatEntry(
        entry.last_seen_ns, layouts.be32(entry.nat_addr), layouts.be16(entry.nat_port), entry.flags
    )
    assert entry.pack() == layouts.to_bytes(mirror_entry)
    reverse = ReverseEntry(A("10.0.0.1"), 8080)
    mirror_reverse = layouts.RsnatEntry(layouts.be32(reverse.addr), layouts.be16(reverse.port))
    assert reverse.pack() == layouts.to_bytes(mirror_reverse)
    assert SessionKey.unpack(key.pack()) == key
    assert SessionEntry.unpack(entry.pack()) == entry
    assert ReverseEntry.unpack(reverse.pack()) == reverse


def test_harness_maps_marks_and_counters(
    case_build: tuple[BuildUnderTest, ModelConfig],
) -> None:
    build, _ = case_build
    build.clear_sessions()
    key = SessionKey(A(CLIENT), A(BACKEND), 40000, 8080, IPPROTO_TCP)
    build.put_session(key, SessionEntry(1000, A(NODE1), PORT_MIN, 1))
    assert build.sessions() == {key: SessionEntry(1000, A(NODE1), PORT_MIN, 1)}
    assert build.set_last_seen(key, 5).last_seen_ns == 5
    build.age_sessions(2)
    assert build.session(key) == SessionEntry(3, A(NODE1), PORT_MIN, 1)
    assert build.delete_session(key) and build.session(key) is None
    # The mark goes in through __sk_buff and comes back: ingress ORs the SNAT bit in.
    frame = ethernet(
        ipv4(A(CLIENT), A(VIP), IPPROTO_TCP, tcp(A(CLIENT), A(VIP), 40000, 80, flags=0x02))
    )
    before = build.counters()["marked"]
    assert build.run("ingress", frame, mark=0x10).mark == 0x10 | MARK
    assert build.counters()["marked"] == before + 1
    assert build.run("egress", frame[:30] + bytes(4), mark=MARK | 0x10).mark == 0x10
    assert not tc_accepts(frame[:33]) and tc_accepts(frame[:34]) and tc_accepts(bytes(14))


# --------------------------------------------------------------------- the table


def _udp_payload_for_checksum(
    saddr: int, daddr: int, sport: int, dport: int, target_sum: int
) -> bytes:
    """Two payload bytes that make the datagram (checksum field 0) sum to `target_sum`."""
    base = udp(saddr, daddr, sport, dport, payload=b"\0\0", checksum_value=0)
    partial = ones_sum(pseudo_header(saddr, daddr, IPPROTO_UDP, len(base)) + base)
    word = (target_sum - partial) % 0xFFFF
    return word.to_bytes(2, "big")


@dataclass(frozen=True)
class Case:
    name: str
    program: str
    frame: Callable[[], bytes]
    counters: dict[str, int]
    mark: int = 0
    sessions: tuple[tuple[FlowKey, Session, Origin], ...] = ()  # installed before the run
    check: Callable[[bytes], None] = lambda out: None
    marks: tuple[int, int] | None = None  # (mark in, mark out) when it matters
    kinds: tuple[str, ...] = field(default=BUILD_KINDS)


def _now() -> int:
    return time.monotonic_ns()


def _echo_reply_to_node(checksum_value: int) -> Callable[[], bytes]:
    """An echo reply to NODE1 with identifier 0xffff, sequence 0, the given checksum."""
    return lambda: ethernet(
        ipv4(
            A(BACKEND),
            A(NODE1),
            IPPROTO_ICMP,
            icmp(0, 0, 0xFFFF_0000, checksum_value=checksum_value),
        )
    )


ICMP_KEY = FlowKey(A(CLIENT), A(BACKEND), 0, 0, IPPROTO_ICMP)  # echo request, identifier 0
ICMP_SESSION = (ICMP_KEY, Session(0, A(NODE1), 0xFFFF, 0), Origin(A(CLIENT), 0))
UDP_KEY = FlowKey(A(CLIENT), A(BACKEND), 5353, 53, IPPROTO_UDP)
UDP_SESSION = (UDP_KEY, Session(0, A(NODE2), PORT_MIN + 3, 0), Origin(A(CLIENT), 5353))


def _icmp_valid(out: bytes, ident: int) -> None:
    assert int.from_bytes(out[38:40], "big") == ident, out.hex()
    assert ones_sum(out[34:]) == 0xFFFF, f"ICMP checksum wrong: {out.hex()}"


def _field(offset: int, size: int, value: int) -> Callable[[bytes], None]:
    def check(out: bytes) -> None:
        assert int.from_bytes(out[offset : offset + size], "big") == value, out.hex()

    return check


CASES = [
    Case(
        # C bug 1: egress overwrote an echo reply's identifier (its destination side)
        # with the SNAT port, updating the checksum from 0: a wrong ICMP checksum.
        "egress SNAT of a marked ICMP echo reply keeps the identifier",
        "egress",
        lambda: ethernet(ipv4(A(VIP), A(BACKEND), IPPROTO_ICMP, icmp(0, 0, 0x1234_0001))),
        {"snat_new": 1},
        mark=MARK,
        check=lambda out: _icmp_valid(out, ident=0x1234),
    ),
    Case(
        # C bug 4 (6.1 VM): the node's answer to a ping of a VIP leaves from the VIP,
        # which is in the service CIDR: it was SNATed as node -> ClusterIP, so the
        # pinger got a reply from the node address and ignored it.
        "an unmarked ICMP echo reply from a VIP leaves untouched",
        "egress",
        lambda: ethernet(ipv4(A(VIP), A(BACKEND), IPPROTO_ICMP, icmp(0, 0, 0x1234_0001))),
        {"pass": 1},
        check=lambda out: _icmp_valid(out, ident=0x1234),
    ),
    Case(
        # C bug 2 (generic build): NodePorts sit in the frontend map under address 0,
        # which an exact lookup of 0.0.0.0 found: the packet was marked.
        "a packet to 0.0.0.0:<NodePort> is no frontend",
        "ingress",
        lambda: ethernet(
            ipv4(A(CLIENT), 0, IPPROTO_TCP, tcp(A(CLIENT), 0, 40000, NODEPORT, flags=0x02))
        ),
        {"pass": 1},
        marks=(0, 0),
    ),
    Case(
        "a NodePort on the second node address is marked",
        "ingress",
        lambda: ethernet(
            ipv4(A(CLIENT), A(NODE2), IPPROTO_UDP, udp(A(CLIENT), A(NODE2), 40000, NODEPORT))
        ),
        {"marked": 1},
        marks=(0, MARK),
    ),
    *(
        # C bug 3: an echo reply translated to all zeros (identifier 0, sequence 0, no
        # payload) is valid only with checksum 0xffff; the kernel's csum helpers (tc)
        # wrote 0x0000, and so did XDP's RFC 1624 update when the input had 0x0000.
        Case(
            f"reverse SNAT of an echo reply to all zeros, input checksum {value:#06x} ({prog})",
            prog,
            _echo_reply_to_node(value),
            {"rsnat": 1},
            sessions=(ICMP_SESSION,),
            check=lambda out: _icmp_valid(out, ident=0),
        )
        for prog in ("ingress", "ingress_xdp")
        for value in (0xFFFF, 0x0000)  # both are valid for identifier 0xffff, sequence 0
    ),
    Case(
        "a UDP reply without checksum keeps checksum 0",
        "ingress_xdp",
        lambda: ethernet(
            ipv4(
                A(BACKEND),
                A(NODE2),
                IPPROTO_UDP,
                udp(A(BACKEND), A(NODE2), 53, PORT_MIN + 3, payload=b"ab", checksum_value=0),
            )
        ),
        {"rsnat": 1},
        sessions=(UDP_SESSION,),
        check=_field(40, 2, 0),
    ),
    *(
        Case(
            f"a UDP reply whose new checksum computes to 0 is sent as 0xffff ({prog})",
            prog,
            lambda: ethernet(
                ipv4(
                    A(BACKEND),
                    A(NODE2),
                    IPPROTO_UDP,
                    udp(
                        A(BACKEND),
                        A(NODE2),
                        53,
                        PORT_MIN + 3,
                        # after the rewrite the datagram sums to 0xffff: its checksum is 0
                        payload=_udp_payload_for_checksum(A(BACKEND), A(CLIENT), 53, 5353, 0xFFFF),
                    ),
                )
            ),
            {"rsnat": 1},
            sessions=(UDP_SESSION,),
            check=_field(40, 2, 0xFFFF),
        )
        for prog in ("ingress", "ingress_xdp")
    ),
    Case(
        "a marked first fragment is dropped, the mark cleared",
        "egress",
        lambda: ethernet(
            ipv4(
                A(CLIENT),
                A(BACKEND),
                IPPROTO_TCP,
                tcp(A(CLIENT), A(BACKEND), 1, 2, flags=0x02),
                frag=0x2000,
            )
        ),
        {"drop_fragment": 1},
        marks=(MARK | 1, 1),
    ),
    Case(
        "IP options: the L4 header is found after them and the SNAT is right",
        "egress",
        lambda: ethernet(
            ipv4(
                A(CLIENT),
                A(BACKEND),
                IPPROTO_TCP,
                tcp(A(CLIENT), A(BACKEND), 40000, 8080, flags=0x02),
                options=bytes.fromhex("94040000 01010100"),
            )
        ),
        {"snat_new": 1},
        mark=MARK,
    ),
    Case(
        "a hairpin packet is translated without a mark",
        "egress",
        lambda: ethernet(ipv4(A(POD), A(POD), IPPROTO_UDP, udp(A(POD), A(POD), 5000, 53))),
        {"snat_new": 1},
    ),
    *(
        Case(
            f"loadBalancerSourceRanges: {what} to the LB IP is {fate}",
            "ingress",
            lambda src=src: ethernet(
                ipv4(A(src), A(LB_IP), IPPROTO_TCP, tcp(A(src), A(LB_IP), 40000, 443, flags=0x02))
            ),
            counters,
            marks=(0, 0 if fate == "dropped" else MARK),
        )
        for what, src, fate, counters in (
            ("a client outside the ranges", CLIENT, "dropped", {"drop_source_range": 1}),
            ("a pod outside the ranges", POD, "dropped", {"drop_source_range": 1}),
            ("a client inside a range", ALLOWED_CLIENT, "marked", {"marked": 1}),
            ("the LB IP itself (a node address is in a range)", LB_IP, "marked", {"marked": 1}),
        )
    ),
    Case(
        "loadBalancerSourceRanges: the Service's NodePort is not subject to them",
        "ingress",
        lambda: ethernet(
            ipv4(
                A(CLIENT),
                A(NODE2),
                IPPROTO_TCP,
                tcp(A(CLIENT), A(NODE2), 40000, GUARDED_NODEPORT, flags=0x02),
            )
        ),
        {"marked": 1},
        marks=(0, MARK),
    ),
    *(
        Case(
            f"Local traffic policy, the endpoint on another node: {what} is dropped",
            "ingress",
            lambda src=src, daddr=daddr, dport=dport: ethernet(
                ipv4(A(src), A(daddr), IPPROTO_TCP, tcp(A(src), A(daddr), 40000, dport, flags=0x02))
            ),
            {"drop_no_local_endpoint": 1},
        )
        for what, src, daddr, dport in (
            ("a client to the NodePort", CLIENT, NODE1, REMOTE_NODEPORT),
            ("a pod to the ClusterIP", POD, REMOTE_VIP, 80),
        )
    ),
    *(
        # issue 15 (Kubernetes #72236): the VIPs are local addresses on IPVS's dummy
        # device, so their other ports would reach the node's own sockets
        Case(
            f"{what}: {fate}",
            "ingress",
            lambda daddr=daddr, dport=dport, proto=proto: ethernet(
                ipv4(
                    A(CLIENT),
                    A(daddr),
                    proto,
                    tcp(A(CLIENT), A(daddr), 40000, dport, flags=0x02)
                    if proto == IPPROTO_TCP
                    else udp(A(CLIENT), A(daddr), 40000, dport),
                )
            ),
            counters,
            marks=(0, 0),
        )
        for what, daddr, dport, proto, fate, counters in (
            (
                "TCP to a ClusterIP at no Service's port (22)",
                VIP,
                22,
                IPPROTO_TCP,
                "dropped",
                {"drop_vip_port": 1},
            ),
            (
                "UDP to a ClusterIP at a TCP-only Service port",
                VIP,
                80,
                IPPROTO_UDP,
                "dropped",
                {"drop_vip_port": 1},
            ),
            (
                "TCP to an LB IP at no Service's port",
                LB_IP,
                8443,
                IPPROTO_TCP,
                "dropped",
                {"drop_vip_port": 1},
            ),
            (
                "TCP to a node address at a port of no NodePort",
                NODE1,
                22,
                IPPROTO_TCP,
                "left to the node",
                {"pass": 1},
            ),
        )
    ),
    Case(
        "an IPVS reply from VIP:80 is not translated",
        "egress",
        lambda: ethernet(
            ipv4(A(VIP), A(CLIENT), IPPROTO_TCP, tcp(A(VIP), A(CLIENT), 80, 40000, flags=0x12))
        ),
        {"pass": 1},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case_build: tuple[BuildUnderTest, ModelConfig], case: Case) -> None:
    build, config = case_build
    diff = Differential(build, config)
    for key, session, origin in case.sessions:
        diff.put_session(key, session._replace(last_seen_ns=_now()), origin)
    mark = case.marks[0] if case.marks else case.mark
    step = diff.step(case.program, case.frame(), mark)  # kernel == model, or Mismatch
    assert step.model.counter_deltas() == case.counters
    if case.marks:
        assert step.kernel.mark == case.marks[1]
    case.check(step.kernel.packet)

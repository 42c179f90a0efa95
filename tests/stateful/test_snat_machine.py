"""Connection lifecycles through the SNAT, kernel against the reference model (zarr-style).

A hypothesis RuleBasedStateMachine opens connections (TCP SYN, UDP, ICMP echo)
from outside clients (marked by ingress), hairpin pods and node processes behind
a VIP; exchanges packets both ways (replies through tc or XDP ingress);
half-closes (FIN) and resets (RST); lets sessions idle past their timeouts by
rewriting last_seen in the kernel and in the model alike; reuses tuples; and
floods one remote until its 16 SNAT ports or the 40-session maps run out.

After every step the kernel's maps equal the model's tables (Differential), and
the spec's promises hold on those tables: no two live sessions share a
translated tuple, every live session is reachable from its reverse entry, a
reply of a live session goes back to its original tuple, a drop for exhaustion
happens only when every port the flow may probe is held by a live session, an
expired session's port is reclaimed, a FIN moves TCP to the transitory timeout and a
RST to tcpClose, and a whole close with coherent numbers (client first, backend first,
simultaneous: docs/datapath.md "The TCP session lifecycle") releases the session or
holds it CLOSED for tcpTimeWait.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, invariant, multiple, precondition, rule
from machines import (
    ACK,
    CLOSES,
    FIN,
    FORWARD_FLAGS,
    NS,
    REPLY_FLAGS,
    RST,
    SYN,
    TIMEOUTS,
    AgingMachine,
    assert_closed,
    assert_ports_held,
    build_kind_cases,
    snat_section,
)

from bpfgen.compiler import compile_build
from bpfgen.inputs import load_inputs
from bpfgen.refmodel import (
    CLOSING,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ModelConfig,
    Origin,
    Result,
    Session,
    SessionState,
    expired,
    model_config,
    timeout_ns,
    tuple_hash,
)
from bpfgen.refmodel.frames import ethernet, icmp, ipv4, tcp, udp
from bpfgen.refmodel.ipvs_differential import Differential
from bpfgen.refmodel.state import CLOSED
from bpfgen.refmodel.state import RST as RST_SEEN
from bpfgen_runtime.testrun import BuildUnderTest

pytestmark = pytest.mark.kernel

NODE_ADDR = "198.18.0.2"
PORTS = (40000, 40015)  # 16 SNAT ports
MAX_SESSIONS = 40
MARK = 0x4000
VIP = "198.18.128.10"

NODE = {
    "apiVersion": "bpfgen/v1",
    "kind": "NodeConfig",
    "node": {"name": "node-a", "addresses": [NODE_ADDR], "podCIDR": "198.19.1.0/24"},
    "cluster": {"podCIDR": "198.19.0.0/16", "serviceCIDR": "198.18.128.0/17"},
    "interfaces": [
        {"name": "eth0", "role": "uplink", "hook": "xdp"},
        {"name": "veth*", "role": "pods"},
    ],
    "snat": snat_section(PORTS, MAX_SESSIONS, mark=MARK),
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
                    {"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                ],
            },
        }
    ],
}

CLIENTS = ("203.0.113.7", "192.0.2.1", "198.18.64.9", "198.19.1.5", "198.19.2.7")
REMOTES = (("198.19.1.21", 8080), ("198.19.2.13", 8080), ("198.19.3.3", 53))


_BUILDS: dict[str, tuple[BuildUnderTest, ModelConfig]] = {}
_WORKDIR: list[Path] = []


def build_for(kind: str) -> tuple[BuildUnderTest, ModelConfig]:
    """The one config, compiled and loaded once per module and build kind."""
    if kind not in _BUILDS:
        if not _WORKDIR:
            _WORKDIR.append(Path(tempfile.mkdtemp(prefix="bpfgen-stateful-")))
        root = _WORKDIR[0]
        node, services = root / "node.yaml", root / "services.yaml"
        node.write_text(json.dumps(NODE))
        services.write_text(json.dumps(SERVICES))
        result = compile_build(node, [services], root / kind, build=kind, verify=False)
        _BUILDS[kind] = (
            BuildUnderTest(result.out),
            model_config(load_inputs(node, [services]), kind),
        )
    return _BUILDS[kind]


@pytest.fixture(scope="module", autouse=True)
def _close_builds() -> Iterator[None]:
    yield
    for build, _ in _BUILDS.values():
        build.close()
    _BUILDS.clear()
    for workdir in _WORKDIR:  # the builds' sources and objects (it leaked one per run)
        shutil.rmtree(workdir, ignore_errors=True)
    _WORKDIR.clear()


def _addr(text: str) -> int:
    return int(IPv4Address(text))


@dataclass(frozen=True)
class Conn:
    """One connection as its client sees it: the original tuple, and how it leaves."""

    key: FlowKey  # client -> remote; ICMP: sport = identifier, dport = 0
    mark: int  # what ingress left on its packets (MARK for outside clients)

    def __str__(self) -> str:
        k = self.key
        return (
            f"{IPv4Address(k.saddr)}:{k.sport} > {IPv4Address(k.daddr)}:{k.dport} "
            f"proto {k.proto} mark {self.mark:#x}"
        )


class SnatMachine(AgingMachine):
    conns = Bundle("conns")
    diff: Differential

    def __init__(self) -> None:
        super().__init__()
        build, config = build_for(self.kind)
        self.config = config
        self.diff = Differential(build, config)

    # -- packets

    def forward_frame(self, conn: Conn, flags: int, seq: int = 1, ack: int = 0) -> bytes:
        k = conn.key
        if k.proto == IPPROTO_TCP:
            l4 = tcp(k.saddr, k.daddr, k.sport, k.dport, flags=flags, seq=seq, ack=ack)
        elif k.proto == IPPROTO_UDP:
            l4 = udp(k.saddr, k.daddr, k.sport, k.dport, payload=b"q")
        else:
            l4 = icmp(8, 0, k.sport << 16 | 1)
        return ethernet(ipv4(k.saddr, k.daddr, k.proto, l4))

    def send_forward(self, conn: Conn, flags: int, seq: int = 1, ack: int = 0) -> Result:
        before = self.diff.state.copy()
        now = time.monotonic_ns()
        frame = self.forward_frame(conn, flags, seq, ack)
        result = self.diff.step("egress", frame, conn.mark).model
        deltas = result.counter_deltas()
        event("egress: " + " + ".join(sorted(deltas)))
        if "drop_exhausted" in deltas:
            self.assert_exhausted(conn.key, before, now)
        if "drop_map_full" in deltas:
            assert (
                len(before.forward) >= self.config.max_sessions
                or len(before.reverse) >= self.config.max_sessions
            ), f"map full with room: {conn}"
        if result.verdict.name == "PASS":
            assert {"snat_new", "snat_hit"} & deltas.keys(), f"not translated: {conn} {deltas}"
        return result

    def assert_exhausted(self, key: FlowKey, before: SessionState, now: int) -> None:
        """A drop for exhaustion: every port the flow may probe is held by a live session."""
        h = tuple_hash(self.config.hash_seed, *key)
        nat_addr = self.config.node_addrs[h % len(self.config.node_addrs)]

        def holder(port: int) -> Session | None:
            origin = before.reverse.get(FlowKey(key.daddr, nat_addr, key.dport, port, key.proto))
            session = origin and before.forward.get(
                FlowKey(origin.addr, key.daddr, origin.port, key.dport, key.proto)
            )
            return session if session and session.nat_addr == nat_addr else None

        assert_ports_held(self.config, key, key, h, now, holder)

    # -- rules

    @rule(
        target=conns,
        client=st.sampled_from(CLIENTS),
        remote=st.sampled_from(REMOTES),
        proto=st.sampled_from([IPPROTO_TCP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]),
        sport=st.integers(1, 65535),
        path=st.sampled_from(["marked", "hairpin", "vip"]),
    )
    def open(self, client: str, remote: tuple[str, int], proto: int, sport: int, path: str) -> Conn:
        daddr, dport = _addr(remote[0]), remote[1]
        saddr, mark = _addr(client), MARK
        if path == "hairpin":  # a pod reached itself through a service
            saddr, mark = daddr, 0
        elif path == "vip":  # a node process reached a ClusterIP; the VIP is its source
            saddr, mark = _addr(VIP), 0
            sport = sport if sport not in (80, 53) else sport + 1
        if proto == IPPROTO_ICMP:
            dport = 0
        conn = Conn(FlowKey(saddr, daddr, sport, dport, proto), mark)
        self.send_forward(conn, SYN)
        return conn

    @rule(
        target=conns,
        remote=st.sampled_from(REMOTES),
        n=st.integers(1, 24),
        first=st.integers(1024, 60000),
    )
    def flood(self, remote: tuple[str, int], n: int, first: int) -> Any:
        """Many clients to one remote: its ports run out, then the maps fill."""
        opened = []
        for i in range(n):
            conn = Conn(
                FlowKey(
                    _addr(CLIENTS[i % len(CLIENTS)]),
                    _addr(remote[0]),
                    first + i,
                    remote[1],
                    IPPROTO_TCP,
                ),
                MARK,
            )
            self.send_forward(conn, SYN)
            opened.append(conn)
        return multiple(*opened)

    @rule(conn=conns, flags=st.sampled_from(FORWARD_FLAGS))
    def send(self, conn: Conn, flags: int) -> None:
        self.send_forward(conn, flags)

    @rule(conn=conns, flags=st.sampled_from(REPLY_FLAGS), xdp=st.booleans())
    def reply(self, conn: Conn, flags: int, xdp: bool) -> None:
        self.send_reply(conn, flags, xdp)

    def send_reply(self, conn: Conn, flags: int, xdp: bool, seq: int = 1, ack: int = 0) -> None:
        k = conn.key
        session = self.diff.state.forward.get(k)
        nat_addr = session.nat_addr if session else self.config.node_addrs[0]
        nat_port = session.nat_port if session else self.config.port_min
        live = session is not None and not expired(
            self.config, k.proto, session, time.monotonic_ns()
        )
        if k.proto == IPPROTO_TCP:
            l4 = tcp(k.daddr, nat_addr, k.dport, nat_port, flags=flags, seq=seq, ack=ack)
        elif k.proto == IPPROTO_UDP:
            l4 = udp(k.daddr, nat_addr, k.dport, nat_port, payload=b"a")
        else:
            l4 = icmp(0, 0, nat_port << 16 | 1)
        frame = ethernet(ipv4(k.daddr, nat_addr, k.proto, l4))
        result = self.diff.step("ingress_xdp" if xdp else "ingress", frame).model
        event(
            f"reply of a {'live' if live else 'gone'} session: "
            + " + ".join(sorted(result.counter_deltas()))
        )
        if live:  # the reverse entry of a live session is its own (see the invariant)
            assert result.counter_deltas() == {"rsnat": 1}, f"{conn}: {result.counter_deltas()}"
            out = result.packet
            assert _addr(str(IPv4Address(out[30:34]))) == k.saddr
            if k.proto == IPPROTO_ICMP:
                assert int.from_bytes(out[38:40], "big") == k.sport
            else:
                assert int.from_bytes(out[36:38], "big") == k.sport

    @precondition(lambda self: bool(self.diff.state.forward))
    @rule(data=st.data())
    def fin_shortens_life(self, data: st.DataObject) -> None:
        """FIN or RST on a TCP session: it lives tcpTransitory, not tcpEstablished."""
        tcp_keys = sorted(k for k in self.diff.state.forward if k.proto == IPPROTO_TCP)
        if not tcp_keys:
            return
        key = data.draw(st.sampled_from(tcp_keys))
        session = self.diff.state.forward[key]
        if expired(self.config, key.proto, session, time.monotonic_ns()):
            return
        mark = (
            MARK
            if key.saddr != key.daddr and IPv4Address(key.saddr) not in self.config.service_cidr
            else 0
        )
        flags = data.draw(st.sampled_from([FIN | ACK, RST]))
        self.send_forward(Conn(key, mark), flags)
        after = self.diff.state.forward[key]
        assert after.flags & CLOSING
        if flags & RST or after.flags & RST_SEEN:
            assert timeout_ns(self.config, key.proto, after.flags) == TIMEOUTS["tcpClose"] * NS
        elif not after.flags & CLOSED:
            assert timeout_ns(self.config, key.proto, after.flags) == (
                TIMEOUTS["tcpTransitory"] * NS
            )

    @precondition(lambda self: bool(self.diff.state.forward))
    @rule(data=st.data(), order=st.sampled_from(sorted(CLOSES)), xdp=st.booleans())
    def close_whole(self, data: st.DataObject, order: str, xdp: bool) -> None:
        """A whole close, numbers coherent, of a live TCP session that has not begun one:
        released when the client closed first, else held CLOSED for tcpTimeWait."""
        now = time.monotonic_ns()
        keys = sorted(
            k
            for k, s in self.diff.state.forward.items()
            if k.proto == IPPROTO_TCP
            and not s.flags & CLOSING
            and not expired(self.config, k.proto, s, now)
        )
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        mark = (
            MARK
            if key.saddr != key.daddr and IPv4Address(key.saddr) not in self.config.service_cidr
            else 0
        )
        for from_backend, flags, seq, ack in CLOSES[order]:
            if from_backend:
                self.send_reply(Conn(key, mark), flags, xdp, seq=seq, ack=ack)
            else:
                self.send_forward(Conn(key, mark), flags, seq=seq, ack=ack)
        assert_closed(self.config, order, True, self.diff.state.forward.get(key))

    # -- invariants

    @invariant()
    def live_translations_unique(self) -> None:
        now = time.monotonic_ns()
        seen: dict[tuple[int, int, int, int, int], FlowKey] = {}
        for key, s in self.diff.state.forward.items():
            if expired(self.config, key.proto, s, now):
                continue
            translated = (s.nat_addr, s.nat_port, key.daddr, key.dport, key.proto)
            assert translated not in seen, f"{key} and {seen[translated]} share {translated}"
            seen[translated] = key

    @invariant()
    def live_sessions_indexed(self) -> None:
        now = time.monotonic_ns()
        for key, s in self.diff.state.forward.items():
            if expired(self.config, key.proto, s, now):
                continue
            rkey = FlowKey(key.daddr, s.nat_addr, key.dport, s.nat_port, key.proto)
            assert self.diff.state.reverse.get(rkey) == Origin(key.saddr, key.sport), key


TestSnatSpecialized, TestSnatGeneric = build_kind_cases(SnatMachine)

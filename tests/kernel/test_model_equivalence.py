"""The kernel and the reference model agree on every packet (docs/testing.md).

Each hypothesis example picks one node configuration from a small pool of random
valid ones (compiled once per session, specialized, generic and frozen) and runs a
sequence of rounds against it; every round sends one packet through each program
(tc ingress, tc egress, XDP ingress) in a drawn order, and sometimes ages a
session. Packets are drawn as (kind, seed) pairs and built from the seed against
the live model state, so they can aim at frontends, NodePorts, the SNAT range of
node addresses, replies of existing sessions, hairpin and VIP sources; about a
third are then mutated (IP options, fragments, TTL 0/1, bad checksums, padding,
truncation at every length, VLAN tags, other ethertypes and protocols, bytes).

For every packet, `Differential.step` checks verdict, bytes, mark, counter
increments and both session tables; this module also checks, independently of
the model and with scapy, that a packet that came in with valid checksums and was
translated leaves with valid IPv4 and L4 checksums, and that a packet the model
does not translate leaves the kernel unchanged.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from model_packets import frame_for, mutate, scapy_checksums_valid
from model_pool import NODE_PORT_RANGE, BuildPool, PortClaims, max_entries, open_pool, source_ranges

from bpfgen.model import Inputs
from bpfgen.refmodel import (
    BUILD_KINDS,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    FlowKey,
    ModelConfig,
    SessionState,
    model_config,
    timeout_ns,
)
from bpfgen.refmodel.frames import ethernet, icmp, ipv4
from bpfgen.refmodel.ipvs_differential import Differential, Step, describe, hexdump
from bpfgen_runtime.testrun import tc_accepts

pytestmark = pytest.mark.kernel

ROUNDS = 84  # per example: 84 packets per program; 25 examples (ci) -> 2,100 per program and kind
POOL_SIZE = int(os.environ.get("BPFGEN_MODEL_CONFIGS", "5"))
PROGRAM_NAMES = ("ingress", "egress", "ingress_xdp")
NS = 1_000_000_000

PACKETS: Counter[tuple[str, str]] = Counter()  # (build kind, program) -> packets run


# ------------------------------------------------------------------------ configurations


def config_documents(seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random valid node file and Service list (as JSON documents) for one pool entry.

    Two entries are tight, so that one example gets there: entry 0 has one node
    address and 16 SNAT ports (ports run out, stale ones are reclaimed), entry 2
    has 24 sessions (the maps fill up). Entry 4 has so many services that even the
    specialized build keeps its frontends in a map.
    """
    rng = random.Random(seed)
    tight = seed == 0
    n_addrs = 1 if tight else rng.choice([1, 1, 2, 3])
    node_addrs = [f"198.18.0.{a}" for a in sorted(rng.sample(range(2, 250), n_addrs))]
    cluster_pods = IPv4Network(rng.choice(["198.19.0.0/16", "198.19.0.0/17", "198.19.128.0/18"]))
    node_pods = list(cluster_pods.subnets(new_prefix=24))[rng.randrange(8)]
    service_cidr = IPv4Network(
        rng.choice(["198.18.128.0/17", "198.18.192.0/20", "198.18.128.0/24"])
    )
    count = 16 if tight else rng.choice([16, 17, 64, 1000, 10000])
    low = rng.choice([1024, 20000 - count, 33000, 65536 - count])
    # Sessions are aged by rewriting last_seen, which cannot go below 0: timeouts stay
    # short enough for a machine (or VM) up for a couple of minutes; entry 1 keeps
    # the defaults (2h4m established), aged only where the clock allows.
    timeouts = {
        k: f"{rng.randrange(20, 121)}s" for k in ("tcpEstablished", "tcpTransitory", "udp", "icmp")
    }
    if seed == 1:
        timeouts = {"tcpEstablished": "2h4m", "tcpTransitory": "4m", "udp": "5m", "icmp": "1m"}
    node = {
        "apiVersion": "bpfgen/v1",
        "kind": "NodeConfig",
        "node": {"name": "node-a", "addresses": node_addrs, "podCIDR": str(node_pods)},
        "cluster": {
            "podCIDR": str(cluster_pods),
            "serviceCIDR": str(service_cidr),
            "masqueradeAll": (not tight) and rng.random() < 0.3,
            "nodePortRange": list(NODE_PORT_RANGE),
        },
        "interfaces": [
            {"name": "eth0", "role": "uplink", "hook": "xdp"},
            {"name": "veth*", "role": "pods"},
        ],
        "datapath": {"mode": "ipvs", "scheduler": "rr"},
        "snat": {
            "portRange": [low, low + count - 1],
            "maxSessions": {0: 256, 2: 24}.get(seed, rng.choice([64, 1000, 65536])),
            "timeouts": timeouts,
            "mark": 1 << rng.choice([14, 14, 0, 5, 31]),
        },
        "features": {"icmpEcho": tight or rng.random() < 0.7},
    }
    services = []
    claims = PortClaims()
    n_services = 80 if seed == 4 else rng.randint(1, 4)
    vips = [str(a) for a in rng.sample(list(service_cidr.hosts())[1:250], n_services + 2)]
    externals = [f"198.18.64.{i}" for i in rng.sample(range(1, 250), 6)]
    protocols = ["TCP"] if (not tight and rng.random() < 0.25) else ["TCP", "UDP"]
    for i in range(n_services):
        kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        cluster_ip = vips[i]
        external_ips = rng.sample(externals, rng.choice([0, 0, 1, 2]))
        # Not one of its own externalIPs: the plan then emits that frontend twice and
        # the specialized build does not compile (a plan bug, reported).
        lb_ips = (
            [rng.choice([e for e in externals if e not in external_ips])]
            if kind == "LoadBalancer"
            else []
        )
        ports = []
        for j in range(rng.randint(1, 3)):
            proto = rng.choice(protocols)
            port = rng.choice([53, 80, 443, 8080, rng.randrange(1, 65536), low, low + 1])
            entry = claims.port(
                rng, f"p{j}", port, proto, {cluster_ip, *external_ips, *lb_ips}, kind
            )
            if entry is None:
                continue
            ports.append(entry)
        if not ports:
            continue
        spec: dict[str, Any] = {
            "type": kind,
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ports": ports,
        }
        if external_ips:
            spec["externalIPs"] = external_ips
        if kind != "ClusterIP":
            spec["externalTrafficPolicy"] = rng.choice(["Cluster", "Local"])
        service: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": "default"},
            "spec": spec,
        }
        if lb_ips:
            service["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in lb_ips]}}
            ranges = source_ranges(seed, i, node_addrs[0], str(cluster_pods))
            if ranges:
                spec["loadBalancerSourceRanges"] = ranges
        services.append(service)
    return node, {"apiVersion": "v1", "kind": "List", "items": services}


# ------------------------------------------------------------------------ where packets go


@dataclass(frozen=True)
class Env:
    """Addresses and ports worth aiming at, for one configuration."""

    config: ModelConfig
    node_addrs: tuple[int, ...]
    pods: tuple[int, ...]
    service_addrs: tuple[int, ...]  # VIPs of the service CIDR and some that are not
    externals: tuple[int, ...]  # external/LB frontends and addresses outside everything
    frontends: tuple[tuple[int, int, int], ...]
    node_ports: tuple[tuple[int, int], ...]
    remotes: tuple[tuple[int, int], ...]  # a few backends many flows go to

    @classmethod
    def of(cls, config: ModelConfig) -> Env:
        rng = random.Random(config.hash_seed)
        pods_net = config.cluster_pod_cidr
        pods = tuple(
            int(pods_net.network_address) + rng.randrange(1, pods_net.num_addresses - 1)
            for _ in range(6)
        )
        svc = config.service_cidr
        fe_addrs = sorted({a for a, _, _ in config.frontends})
        service_addrs = tuple(a for a in fe_addrs if IPv4Address(a) in svc) + tuple(
            int(svc.network_address) + rng.randrange(1, svc.num_addresses - 1) for _ in range(2)
        )
        externals = tuple(a for a in fe_addrs if IPv4Address(a) not in svc) + tuple(
            int(IPv4Address(a))
            for a in ("203.0.113.7", "192.0.2.1", "198.18.64.250", "0.0.0.0", "255.255.255.255")
        )
        remotes = ((pods[0], 8080), (pods[1], 53), (pods[2], 443))
        return cls(
            config,
            config.node_addrs,
            pods,
            service_addrs,
            externals,
            tuple(sorted(config.frontends)),
            tuple(sorted(config.node_ports)),
            remotes,
        )

    def any_addr(self, rng: random.Random) -> int:
        pool = rng.choice([self.node_addrs, self.pods, self.service_addrs, self.externals])
        return rng.choice(pool) if rng.random() < 0.9 else rng.getrandbits(32)

    def any_port(self, rng: random.Random) -> int:
        c = self.config
        return rng.choice(
            [
                rng.randrange(65536),
                rng.randrange(65536),
                0,
                65535,
                80,
                53,
                c.port_min,
                c.port_max,
                c.port_min - 1,
                (c.port_max + 1) & 0xFFFF,
                rng.randint(c.port_min, c.port_max),
                rng.randrange(*NODE_PORT_RANGE),
            ]
        )

    def protocol(self, rng: random.Random) -> int:
        c = self.config
        enabled = [
            p
            for p, on in (
                (IPPROTO_TCP, c.proto_tcp),
                (IPPROTO_UDP, c.proto_udp),
                (IPPROTO_ICMP, c.proto_icmp),
            )
            if on
        ]
        if enabled and rng.random() < 0.9:
            return rng.choice(enabled)
        return rng.choice([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP])


# ------------------------------------------------------------------------ kinds of packets

Builder = Callable[[random.Random, Env, SessionState], tuple[bytes, int]]


def _tuple_frame(rng: random.Random, key: FlowKey) -> bytes:
    return frame_for(rng, key.proto, key.saddr, key.daddr, key.sport, key.dport)


def _pick(rng: random.Random, keys: list[FlowKey]) -> FlowKey | None:
    return keys[rng.randrange(len(keys))] if keys else None


def to_frontend(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """A client's packet to a ClusterIP/externalIP/LB frontend or to a NodePort."""
    if env.node_ports and (not env.frontends or rng.random() < 0.35):
        port, proto = rng.choice(env.node_ports)
        daddr = rng.choice(env.node_addrs) if rng.random() < 0.9 else env.any_addr(rng)
    elif env.frontends:
        daddr, port, proto = rng.choice(env.frontends)
    else:
        daddr, port, proto = env.any_addr(rng), env.any_port(rng), env.protocol(rng)
    saddr = env.any_addr(rng)
    mark = rng.choice([0, 0, 0, env.config.mark, 0x100])
    return frame_for(rng, proto, saddr, daddr, rng.randrange(1024, 65536), port), mark


def reply(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """A reply of an existing session, to its nat address and port; sometimes a near miss."""
    key = _pick(rng, sorted(state.reverse))
    if key is None:
        return to_node_range(rng, env, state)
    saddr, daddr, sport, dport = key.saddr, key.daddr, key.sport, key.dport
    near = rng.randrange(8)
    if near == 0:
        sport = (sport + 1) & 0xFFFF
    elif near == 1:
        dport = rng.randint(env.config.port_min, env.config.port_max)
    elif near == 2:
        daddr = rng.choice(env.node_addrs)
    elif near == 3:
        saddr = env.any_addr(rng)
    if key.proto == IPPROTO_ICMP:  # an echo reply carries the nat port as identifier
        l4 = icmp(0, 0, dport << 16 | rng.randrange(65536))
        return ethernet(ipv4(saddr, daddr, IPPROTO_ICMP, l4)), 0
    return frame_for(rng, key.proto, saddr, daddr, sport, dport), 0


def to_node_range(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """To a node address and a port of the SNAT range that probably is no session."""
    c = env.config
    daddr = rng.choice(env.node_addrs)
    dport = rng.choice([c.port_min, c.port_max, rng.randint(c.port_min, c.port_max)])
    proto = env.protocol(rng)
    if proto == IPPROTO_ICMP:
        return ethernet(ipv4(env.any_addr(rng), daddr, proto, icmp(0, 0, dport << 16))), 0
    return frame_for(rng, proto, env.any_addr(rng), daddr, env.any_port(rng), dport), 0


def anything(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    proto = env.protocol(rng)
    frame = frame_for(
        rng, proto, env.any_addr(rng), env.any_addr(rng), env.any_port(rng), env.any_port(rng)
    )
    return frame, rng.choice([0, env.config.mark, rng.getrandbits(32)])


def marked_new(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """Egress: a packet ingress marked, after IPVS: client -> backend."""
    proto = env.protocol(rng)
    if rng.random() < 0.5:  # many flows to one remote: the port range fills up
        daddr, dport = rng.choice(env.remotes)
    else:
        daddr, dport = rng.choice(env.pods), env.any_port(rng)
    saddr = env.any_addr(rng)
    sport = rng.randrange(1, 65536)
    if proto == IPPROTO_ICMP:
        dport = 0 if rng.random() < 0.8 else dport  # mostly echo requests
        sport = sport if dport == 0 else 0
    other_bits = rng.choice([0, 0, 0x10, rng.getrandbits(32)])
    return frame_for(rng, proto, saddr, daddr, sport, dport), env.config.mark | other_bits


def same_remote(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """Egress: a new flow to the one busiest remote endpoint, until its ports run out."""
    daddr, dport = env.remotes[0]
    proto = IPPROTO_TCP if env.config.proto_tcp else env.protocol(rng)
    if proto == IPPROTO_ICMP:
        dport = 0
    saddr = rng.choice(env.externals[:2] + env.pods[3:])
    return frame_for(rng, proto, saddr, daddr, rng.randrange(1, 65536), dport), env.config.mark


def existing_flow(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """Egress: the next packet of a flow that has a session (FIN, RST, SYN again...)."""
    key = _pick(rng, sorted(state.forward))
    if key is None:
        return marked_new(rng, env, state)
    return _tuple_frame(rng, key), rng.choice([env.config.mark, env.config.mark, 0])


def hairpin(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    addr = rng.choice(env.pods) if rng.random() < 0.85 else env.any_addr(rng)
    proto = env.protocol(rng)
    return frame_for(rng, proto, addr, addr, rng.randrange(65536), env.any_port(rng)), 0


def vip_source(rng: random.Random, env: Env, state: SessionState) -> tuple[bytes, int]:
    """Egress from a service address: IPVS replies (frontend port) or a node process."""
    matching = [f for f in env.frontends if IPv4Address(f[0]) in env.config.service_cidr]
    if matching and rng.random() < 0.5:
        saddr, sport, proto = rng.choice(matching)
    else:
        saddr, sport, proto = rng.choice(env.service_addrs), env.any_port(rng), env.protocol(rng)
    daddr = rng.choice(env.pods + env.externals)
    dport = env.any_port(rng)
    if proto == IPPROTO_ICMP:
        sport, dport = (sport, 0) if rng.random() < 0.7 else (0, dport)
    return frame_for(rng, proto, saddr, daddr, sport, dport), rng.choice([0, 0, 0x2])


# Eight weighted slots per program: a drawn kind index 0-7 picks one.
INGRESS_KINDS: tuple[Builder, ...] = (
    to_frontend,
    to_frontend,
    reply,
    reply,
    reply,
    to_node_range,
    anything,
    anything,
)
EGRESS_KINDS: tuple[Builder, ...] = (
    marked_new,
    marked_new,
    same_remote,
    same_remote,
    existing_flow,
    hairpin,
    vip_source,
    anything,
)
KINDS = {"ingress": INGRESS_KINDS, "egress": EGRESS_KINDS, "ingress_xdp": INGRESS_KINDS}
ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def build_packet(
    program: str, kind: int, seed: int, env: Env, state: SessionState
) -> tuple[bytes, int]:
    rng = random.Random(seed)
    frame, mark = KINDS[program][kind](rng, env, state)
    if rng.random() < 0.35:
        frame = mutate(rng, frame)
    if program != "ingress_xdp" and not tc_accepts(frame):
        # tc test runs refuse these (see tc_accepts); XDP covers every length from 14.
        frame = frame.ljust(34 if len(frame) >= 14 else 14, b"\0")
    return frame, mark


# ------------------------------------------------------------------------ checks of our own


TRANSLATED = {"snat_new", "snat_hit", "rsnat"}


def check_step(step: Step, source: Path) -> None:
    """What holds whatever the model says: untranslated packets are untouched, translated
    ones keep valid checksums."""
    translated = bool(TRANSLATED & step.model.counter_deltas().keys())
    context = (
        f"program {step.program}, source {source}\nin  {describe(step.packet)}\n"
        f"{hexdump(step.packet)}\nout {describe(step.kernel.packet)}\n"
        f"{hexdump(step.kernel.packet)}"
    )
    if not translated:
        assert step.kernel.packet == step.packet, f"an untranslated packet changed:\n{context}"
        return
    if scapy_checksums_valid(step.packet):
        assert scapy_checksums_valid(step.kernel.packet), f"checksums broken:\n{context}"


# ------------------------------------------------------------------------ the builds


def model_view(inputs: Inputs, kind: str, manifest: dict[str, Any]) -> tuple[ModelConfig, Env]:
    config = model_config(inputs, kind)
    assert max_entries(manifest, "bpfgen_snat_v4", "bpfgen_rsnat_v4") == {config.max_sessions}
    return config, Env.of(config)


@pytest.fixture(scope="module")
def build_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BuildPool[tuple[ModelConfig, Env]]]:
    yield from open_pool(
        tmp_path_factory,
        "model-builds",
        config_documents,
        model_view,
        "packets run, by build kind and program",
        PACKETS,
    )


# ------------------------------------------------------------------------ the property

packet_choice = st.tuples(st.integers(0, 7), st.integers(0, 2**32 - 1))
rounds = st.lists(
    st.tuples(packet_choice, packet_choice, packet_choice, st.integers(0, 5), st.integers(0, 15)),
    min_size=ROUNDS,
    max_size=ROUNDS,
)


def age_one(diff: Differential, rng: random.Random, how: int) -> None:
    """Move one session's last_seen: past its timeout, just short of it, or ahead of now."""
    key = _pick(rng, sorted(diff.state.forward))
    if key is None:
        return
    session = diff.state.forward[key]
    timeout = timeout_ns(diff.config, key.proto, session.flags)
    now = time.monotonic_ns()
    # Far from the boundary (timeouts are >= 20 s, an example takes well under a
    # second): the decision never depends on the microseconds between the model's
    # clock and the kernel's. A clock younger than the timeout cannot express an
    # expired session: the oldest last_seen it can (0) is used instead.
    expired, young, ahead = now - timeout - 1 * NS, now - timeout + 10 * NS, now + 5 * NS
    last_seen = {11: expired, 12: expired, 13: expired, 14: young, 15: ahead}[how]
    diff.set_last_seen(key, max(last_seen, 0))


@pytest.mark.parametrize("kind", BUILD_KINDS)
# No shrinking: a plan has a fixed number of rounds, so hypothesis could only
# simplify them one by one, minutes of kernel runs; the Mismatch message already
# holds the packet, the state before it and the packets that led there.
@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(config_index=st.integers(0, POOL_SIZE - 1), plan=rounds)
def test_kernel_matches_model(
    build_pool: BuildPool[tuple[ModelConfig, Env]],
    kind: str,
    config_index: int,
    plan: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int], int, int]],
) -> None:
    build, (config, env) = build_pool.get(config_index, kind)
    diff = Differential(build, config)
    for ingress_choice, egress_choice, xdp_choice, order, age in plan:
        choices = (
            ("ingress", ingress_choice),
            ("egress", egress_choice),
            ("ingress_xdp", xdp_choice),
        )
        for i in ORDERS[order]:
            program, (kind_index, seed) = choices[i]
            frame, mark = build_packet(program, kind_index, seed, env, diff.state)
            step = diff.step(program, frame, mark)
            check_step(step, build.programs[program].source)
            PACKETS[(kind, program)] += 1
        if age >= 11:
            age_one(diff, random.Random(ingress_choice[1]), age)
    assert not diff.compare_state()

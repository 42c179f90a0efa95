"""bpf mode: the kernel's bpfgen_svc_in and bpfgen_svc_xdp and the reference model agree
on every packet (docs/testing.md, "The bpf mode").

Each hypothesis example picks one node configuration from a small pool of random
valid bpf-mode ones (random and Maglev selection, traffic policies, ClientIP
affinity, services without endpoints, not-ready and terminating endpoints that are
listed but not selectable; an uplink with `hook: xdp`; compiled once per session
and build kind) and sends a sequence of packets through svc_in, or through svc_xdp
and then svc_in for what it passes (as the uplink runs them): to frontends and
NodePorts (new flows, hairpin, REJECT), the next packets of existing flows, replies
(and near misses), echo requests, anything; sessions planted with a backend that
is selectable, draining or gone, affinity entries planted likewise (fresh, expired,
stamped ahead of now); sometimes a session or an affinity entry aged. About a third
of the packets are mutated as in the ipvs mode's test.

`SvcDifferential.step` compares verdict, bytes, counters, both session maps and the
affinity map. The kernel side runs in a network namespace without routes, where
the model's `no_route` FIB holds: every translated packet goes to the stack
(fib_fallback) at tc, and is passed untranslated to tc (xdp_to_tc) at XDP.
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
from model_packets import FIN_ACKS, frame_for, mutate, scapy_checksums_valid
from model_pool import NODE_PORT_RANGE, BuildPool, PortClaims, max_entries, open_pool, source_ranges

from bpfgen.model import Inputs
from bpfgen.refmodel import BUILD_KINDS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, FlowKey, Policy
from bpfgen.refmodel import timeout_ns as session_timeout
from bpfgen.refmodel.bpf_config import SvcConfig, SvcFrontend, svc_config
from bpfgen.refmodel.bpf_differential import PROGRAM, XDP_PROGRAM, SvcDifferential, SvcStep
from bpfgen.refmodel.bpf_svc import Affinity, AffinityKey, NatSession, Rnat, SvcState
from bpfgen.refmodel.frames import ethernet, icmp, ipv4
from bpfgen.refmodel.ipvs_differential import describe, hexdump
from bpfgen.refmodel.ipvs_snat import Verdict
from bpfgen_runtime.testrun import tc_accepts

pytestmark = [pytest.mark.kernel, pytest.mark.usefixtures("no_routes")]

ROUNDS = 100  # packets per example; 25 examples (ci) -> 2,500 packets per build kind
POOL_SIZE = int(os.environ.get("BPFGEN_MODEL_CONFIGS", "5"))
NS = 1_000_000_000
NODE = "node-a"

PACKETS: Counter[tuple[str, str]] = Counter()  # (build kind, outcome) -> packets


# ------------------------------------------------------------------------ configurations


def _endpoint(rng: random.Random, address: str, node: str | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"addresses": [address]}
    if node is not None:
        endpoint["nodeName"] = node
    state = rng.random()
    if state < 0.15:  # not ready: listed, not selectable (draining)
        endpoint["conditions"] = {"ready": False}
    elif state < 0.3:  # terminating (selectable only when nothing is ready)
        endpoint["conditions"] = {"ready": False, "serving": True, "terminating": True}
    return endpoint


def config_documents(seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A random valid bpf-mode node file and Service/EndpointSlice list for one pool entry.

    Entry 0 is tight (one node address, 16 SNAT ports, and more flows from one client
    in build_packet: exhaustion, reclaiming);
    entry 2 has 24 sessions (the maps fill up); entry 3 has so many services that
    the specialized build keeps its frontends in maps. Odd entries use Maglev. Services
    get ClientIP affinity only where the affinity map (an LRU hash of maxSessions
    entries, which the model never evicts) is many times larger than a run's entries.
    """
    rng = random.Random(seed)
    tight = seed == 0
    n_addrs = 1 if tight else rng.choice([1, 2, 3])
    node_addrs = [f"198.18.0.{a}" for a in sorted(rng.sample(range(2, 250), n_addrs))]
    cluster_pods = IPv4Network(rng.choice(["198.19.0.0/16", "198.19.0.0/17"]))
    subnets = list(cluster_pods.subnets(new_prefix=24))[:8]
    node_pods = subnets[rng.randrange(8)]
    service_cidr = IPv4Network(rng.choice(["198.18.128.0/17", "198.18.192.0/20"]))
    count = 16 if tight else rng.choice([16, 64, 1000])
    low = rng.choice([1024, 20000, 33000, 65536 - count])
    timeouts = {
        k: f"{rng.randrange(20, 121)}s" for k in ("tcpEstablished", "tcpTransitory", "udp", "icmp")
    }
    scheduler = "maglev" if seed % 2 else "random"
    datapath: dict[str, Any] = {
        "mode": "bpf",
        "scheduler": scheduler,
        "selectionSeed": rng.getrandbits(32),
    }
    if scheduler == "maglev":
        datapath["maglevTableSize"] = rng.choice([251, 1021, 16381])
    max_sessions = {0: 256, 2: 24}.get(seed, rng.choice([64, 1000]))
    node = {
        "apiVersion": "bpfgen/v1",
        "kind": "NodeConfig",
        "node": {"name": NODE, "addresses": node_addrs, "podCIDR": str(node_pods)},
        "cluster": {
            "podCIDR": str(cluster_pods),
            "serviceCIDR": str(service_cidr),
            "masqueradeAll": (not tight) and rng.random() < 0.2,
            "nodePortRange": list(NODE_PORT_RANGE),
        },
        "interfaces": [
            {"name": "eth0", "role": "uplink", "hook": "xdp"},
            {"name": "veth*", "role": "pods"},
        ],
        "datapath": datapath,
        "snat": {
            "portRange": [low, low + count - 1],
            "maxSessions": max_sessions,
            "timeouts": timeouts,
        },
        "features": {"icmpEcho": tight or rng.random() < 0.7},
    }
    items: list[dict[str, Any]] = []
    claims = PortClaims()
    n_services = 70 if seed == 3 else rng.randint(2, 5)
    vips = [str(a) for a in rng.sample(list(service_cidr.hosts())[1:250], n_services)]
    externals = [f"198.18.64.{i}" for i in rng.sample(range(1, 250), 6)]
    for i in range(n_services):
        kind = rng.choice(["ClusterIP", "NodePort", "LoadBalancer"])
        external_ips = rng.sample(externals, rng.choice([0, 0, 1]))
        lb_ips = (
            [rng.choice([e for e in externals if e not in external_ips])]
            if kind == "LoadBalancer"
            else []
        )
        ports, slice_ports = [], []
        for j in range(rng.randint(1, 2)):
            proto = rng.choice(["TCP", "UDP"])
            port = rng.choice([53, 80, 443, rng.randrange(1, 65536)])
            entry = claims.port(rng, f"p{j}", port, proto, {vips[i], *external_ips, *lb_ips}, kind)
            if entry is None:
                continue
            ports.append(entry)
            slice_ports.append(
                {"name": f"p{j}", "port": rng.choice([8080, 53, port]), "protocol": proto}
            )
        if not ports:
            continue
        spec: dict[str, Any] = {"type": kind, "clusterIP": vips[i], "ports": ports}
        if external_ips:
            spec["externalIPs"] = external_ips
        if kind != "ClusterIP":
            spec["externalTrafficPolicy"] = rng.choice(["Cluster", "Local"])
        if rng.random() < 0.2:
            spec["internalTrafficPolicy"] = "Local"
        if max_sessions >= 256 and rng.random() < 0.4:
            # Timeouts far longer than a run: entries age only when the test ages them.
            spec["sessionAffinity"] = "ClientIP"
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": rng.choice([15, 30, 10800])}
            }
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
        items.append(service)
        if rng.random() < 0.15:
            continue  # no endpoints: REJECT
        endpoints = []
        for host in rng.sample(range(2, 250), rng.randint(1, 5)):
            subnet = node_pods if rng.random() < 0.4 else rng.choice(subnets)
            address = str(subnet.network_address + host)
            local = subnet == node_pods
            node_name = rng.choice([NODE, None] if local else ["node-b", "node-c", NODE, None])
            endpoints.append(_endpoint(rng, address, node_name))
        items.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"svc-{i}-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": f"svc-{i}"},
                },
                "addressType": "IPv4",
                "ports": slice_ports,
                "endpoints": endpoints,
            }
        )
    return node, {"apiVersion": "v1", "kind": "List", "items": items}


# ------------------------------------------------------------------------ where packets go

Target = tuple[int, int, int]  # (address, port, protocol) a client sends to


@dataclass(frozen=True)
class Env:
    """Addresses and ports worth aiming at, for one configuration."""

    config: SvcConfig
    targets: tuple[Target, ...]  # frontends, NodePorts on every node address
    clients: tuple[int, ...]  # pods (backends among them: hairpin), outsiders, node addresses
    vips: tuple[int, ...]
    backends: tuple[int, ...]  # every selectable and draining backend address
    busiest: Target | None  # a frontend that SNATs outsiders, with the fewest backends
    sticky: tuple[Target, ...]  # targets of frontends with ClientIP affinity

    @classmethod
    def of(cls, config: SvcConfig) -> Env:
        base = config.base
        targets = sorted(config.frontends) + sorted(
            (a, port, proto) for port, proto in config.node_ports for a in base.node_addrs
        )
        members = sorted(
            {
                a
                for f in (*config.frontends.values(), *config.node_ports.values())
                for a, _ in f.members
            }
        )
        rng = random.Random(base.hash_seed)
        pods = base.cluster_pod_cidr
        others = [
            int(pods.network_address) + rng.randrange(1, pods.num_addresses - 1) for _ in range(3)
        ]
        outside = [int(IPv4Address(a)) for a in ("203.0.113.7", "192.0.2.1", "198.18.64.250")]
        clients = (*members, *others, *outside, *base.node_addrs)
        # SNATed for an outside client (not externalTrafficPolicy: Local), fewest backends.
        # (Not one whose loadBalancerSourceRanges drop that client: same_client's flows
        # must reach the SNAT ports.)
        served = [
            (len(f.backends), t)
            for t in targets
            if (f := config.lookup(*t)) is not None
            and f.backends
            and f.policy is not Policy.NEVER
            and base.source_allowed(outside[0], *t)
        ]
        sticky = tuple(t for t in targets if (f := config.lookup(*t)) is not None and f.affinity_s)
        return cls(
            config,
            tuple(targets),
            tuple(clients),
            tuple(sorted(config.vips)),
            tuple(members),
            min(served)[1] if served else None,
            sticky,
        )

    def affinity_timeout_s(self, affinity_id: int) -> int:
        """timeoutSeconds of the Service port whose affinity id this is."""
        (timeout,) = {
            f.affinity_s
            for t in self.sticky
            if (f := self.config.lookup(*t)) is not None and f.affinity_id == affinity_id
        }
        return timeout

    def any_addr(self, rng: random.Random) -> int:
        if rng.random() < 0.1:
            return rng.getrandbits(32)
        return rng.choice([*self.clients, *self.vips, *self.backends] or [1])

    def any_port(self, rng: random.Random) -> int:
        c = self.config.base
        return rng.choice(
            [
                rng.randrange(65536),
                0,
                80,
                53,
                8080,
                c.port_min,
                c.port_max,
                rng.randint(c.port_min, c.port_max),
                rng.randrange(*NODE_PORT_RANGE),
            ]
        )

    def target(self, rng: random.Random) -> Target:
        if self.targets:
            return rng.choice(self.targets)
        return self.any_addr(rng), self.any_port(rng), rng.choice([IPPROTO_TCP, IPPROTO_UDP])


# ------------------------------------------------------------------------ kinds of packets

Builder = Callable[[random.Random, Env, SvcState, SvcDifferential], bytes]


def to_frontend(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """A client's packet to a frontend: a new flow, hairpin, REJECT."""
    daddr, dport, proto = env.target(rng)
    saddr = rng.choice(env.clients) if rng.random() < 0.9 else env.any_addr(rng)
    return frame_for(rng, proto, saddr, daddr, rng.randrange(1024, 65536), dport)


def same_client(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """Many new flows from one outside client (SNATed) to the frontend with the fewest
    backends: the SNAT ports of its backend run out, stale ones are reclaimed."""
    daddr, dport, proto = env.busiest if env.busiest is not None else env.target(rng)
    saddr = int(IPv4Address("203.0.113.7"))
    return frame_for(rng, proto, saddr, daddr, rng.randrange(1024, 65536), dport)


def existing_flow(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """The next packet of a flow that has a session (any TCP flags)."""
    keys = sorted(state.forward)
    if not keys:
        return to_frontend(rng, env, state, diff)
    key = rng.choice(keys)
    return frame_for(rng, key.proto, key.saddr, key.daddr, key.sport, key.dport)


def reply(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """A backend's reply, by a reverse entry; sometimes a near miss."""
    keys = sorted(state.reverse)
    if not keys:
        return to_frontend(rng, env, state, diff)
    key = rng.choice(keys)
    saddr, daddr, sport, dport = key.saddr, key.daddr, key.sport, key.dport
    near = rng.randrange(8)
    if near == 0:
        sport = (sport + 1) & 0xFFFF
    elif near == 1:
        dport = rng.randint(env.config.base.port_min, env.config.base.port_max)
    elif near == 2:
        saddr = env.any_addr(rng)
    return frame_for(rng, key.proto, saddr, daddr, sport, dport)


def planted(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """A session planted with a backend that is selectable, only draining or gone (removed
    by a sync), then a packet of its flow."""
    capacity = env.config.base.max_sessions
    candidates = [t for t in env.targets if env.config.lookup(*t) is not None]
    if not candidates or len(state.forward) >= capacity - 1 or len(state.reverse) >= capacity - 1:
        return existing_flow(rng, env, state, diff)
    daddr, dport, proto = rng.choice(candidates)
    f = env.config.lookup(daddr, dport, proto)
    assert f is not None
    draining = sorted(f.members - set(f.backends))
    port = rng.choice([8080, 53, dport])
    gone = (rng.choice([a for a in env.clients if (a, port) not in f.members]), port)
    choices = [list(f.backends), draining, [gone]]
    backend = rng.choice(rng.choice([c for c in choices if c]))
    key = FlowKey(rng.choice(env.clients), daddr, rng.randrange(1024, 65536), dport, proto)
    base = env.config.base
    if rng.random() < 0.5:  # SNATed
        nat = (rng.choice(base.node_addrs), rng.randint(base.port_min, base.port_max))
        rkey = FlowKey(backend[0], nat[0], backend[1], nat[1], proto)
    else:
        nat = (0, 0)
        rkey = FlowKey(backend[0], key.saddr, backend[1], key.sport, proto)
    flags = rng.choice([0, 1, 2, 3, rng.randrange(256)])  # any close state too
    session = NatSession(time.monotonic_ns(), *nat, flags, *backend, fin_ack=rng.choice(FIN_ACKS))
    diff.put_session(key, session, (rkey, Rnat(key.saddr, key.sport, daddr, dport)))
    return frame_for(rng, proto, key.saddr, daddr, key.sport, dport)


def _sticky(env: Env, target: Target) -> SvcFrontend:
    f = env.config.lookup(*target)
    assert f is not None
    return f


def planted_affinity(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """An affinity entry planted for a client and a Service port with ClientIP affinity,
    naming a backend that is selectable, draining or no endpoint of it, fresh, expired or
    stamped ahead of now; then a new flow of that client to a frontend of that Service
    port (maybe another one than the entry was written through)."""
    if not env.sticky:
        return to_frontend(rng, env, state, diff)
    f = _sticky(env, rng.choice(env.sticky))
    draining = sorted(f.members - set(f.backends))
    port = rng.choice([8080, 53, *(p for _, p in f.backends)])
    gone = (rng.choice(env.clients), port)
    choices = [list(f.backends), list(f.backends), draining, [gone]]
    backend = rng.choice(rng.choice([c for c in choices if c]))
    client = rng.choice(env.clients)
    now, timeout = time.monotonic_ns(), f.affinity_s * NS
    # Far from the boundary, as sessions are aged (age_one).
    last_seen = rng.choice([now, now - timeout // 2, now - timeout - NS, now + 5 * NS])
    diff.put_affinity(AffinityKey(client, f.affinity_id), Affinity(max(last_seen, 0), *backend))
    daddr, dport, proto = rng.choice(
        [t for t in env.sticky if _sticky(env, t).affinity_id == f.affinity_id]
    )
    return frame_for(rng, proto, client, daddr, rng.randrange(1024, 65536), dport)


def echo(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    """An echo request (to a VIP, mostly) or reply."""
    daddr = rng.choice(env.vips) if env.vips and rng.random() < 0.7 else env.any_addr(rng)
    kind = 8 if rng.random() < 0.85 else 0
    message = icmp(kind, 0, rng.getrandbits(32), payload=rng.randbytes(rng.choice([0, 8, 56])))
    return ethernet(
        ipv4(rng.choice(env.clients), daddr, IPPROTO_ICMP, message, ttl=rng.choice([64, 1, 0]))
    )


def anything(rng: random.Random, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    proto = rng.choice([IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP])
    return frame_for(
        rng, proto, env.any_addr(rng), env.any_addr(rng), env.any_port(rng), env.any_port(rng)
    )


# Ten weighted slots: a drawn kind index 0-9 picks one.
KINDS: tuple[Builder, ...] = (
    to_frontend,
    to_frontend,
    to_frontend,
    same_client,
    existing_flow,
    existing_flow,
    reply,
    reply,
    planted,
    echo,
)
EXTRA_KINDS: tuple[Builder, ...] = (anything, planted_affinity)


def build_packet(kind: int, seed: int, env: Env, state: SvcState, diff: SvcDifferential) -> bytes:
    rng = random.Random(seed)
    builders = KINDS + EXTRA_KINDS
    builder = builders[kind % len(builders)]
    if builder is to_frontend and env.config.base.port_count == 16 and rng.random() < 0.9:
        builder = same_client  # the tight entry: more flows to one backend, ports run out
    frame = builder(rng, env, state, diff)
    if rng.random() < 0.35:
        frame = mutate(rng, frame)
    if not tc_accepts(frame):  # tc test runs refuse these (see tc_accepts)
        frame = frame.ljust(34 if len(frame) >= 14 else 14, b"\0")
    return frame


# ------------------------------------------------------------------------ checks of our own

TRANSLATED = {"dnat_new", "dnat_hit", "rdnat"}


def check_step(step: SvcStep, source: Path) -> None:
    """Whatever the model says: a packet passed untranslated is untouched, a translated one
    keeps valid checksums, an answer (RST, port unreachable, echo reply) has valid ones.
    svc_xdp passes a frame it does not send itself untranslated, whatever it did."""
    if step.then is not None:
        assert step.out == step.packet, f"svc_xdp passed a changed frame:\n{step.out.hex()}"
        check_step(step.then, source)
        return
    deltas = step.model.counter_deltas()
    context = (
        f"source {source}\nin  {describe(step.packet)}\n{hexdump(step.packet)}\n"
        f"out {describe(step.out)}\n{hexdump(step.out)}"
    )
    rejects = deltas.keys() & {"reject_no_backend", "reject_vip_port"}
    if (rejects or "icmp_echo_vip" in deltas) and step.model.verdict is Verdict.REDIRECT:
        if rejects or scapy_checksums_valid(step.packet):
            assert scapy_checksums_valid(step.out), f"answer with bad checksums:\n{context}"
        return
    if not TRANSLATED & deltas.keys():
        assert step.out == step.packet, f"an untranslated packet changed:\n{context}"
        return
    if scapy_checksums_valid(step.packet):
        assert scapy_checksums_valid(step.out), f"checksums broken:\n{context}"


# ------------------------------------------------------------------------ the builds


def svc_view(inputs: Inputs, kind: str, manifest: dict[str, Any]) -> tuple[SvcConfig, Env]:
    config = svc_config(inputs, kind)
    assert max_entries(manifest, "bpfgen_nat_v4", "bpfgen_rnat_v4") == {config.base.max_sessions}
    return config, Env.of(config)


@pytest.fixture(scope="module")
def build_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[BuildPool[tuple[SvcConfig, Env]]]:
    yield from open_pool(
        tmp_path_factory,
        "model-builds-bpf",
        config_documents,
        svc_view,
        "svc_in packets, by build kind and outcome",
        PACKETS,
    )


# ------------------------------------------------------------------------ the property

rounds = st.lists(
    st.tuples(
        st.integers(0, len(KINDS) + len(EXTRA_KINDS) - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 15),
    ),
    min_size=ROUNDS,
    max_size=ROUNDS,
)


def age_affinity(env: Env, diff: SvcDifferential, rng: random.Random, how: int) -> None:
    """Move one affinity entry's last_seen: past its timeout, to half of it, or ahead."""
    keys = sorted(diff.state.affinity)
    if not keys:
        return
    key = rng.choice(keys)
    timeout = env.affinity_timeout_s(key.affinity_id) * NS
    now = time.monotonic_ns()
    last_seen = {10: now - timeout - NS, 11: now - timeout // 2, 12: now + 5 * NS}[how]
    diff.put_affinity(key, diff.state.affinity[key]._replace(last_seen_ns=max(last_seen, 0)))


def age_one(diff: SvcDifferential, rng: random.Random, how: int) -> None:
    """Move one session's last_seen: past its timeout, just short of it, or ahead of now."""
    keys = sorted(diff.state.forward)
    if not keys:
        return
    key = rng.choice(keys)
    session = diff.state.forward[key]
    timeout = session_timeout(diff.config.base, key.proto, session.flags)
    now = time.monotonic_ns()
    # Far from the boundary: the microseconds between the model's clock and the
    # kernel's never decide. A clock younger than the timeout ages as far as it can.
    last_seen = {13: now - timeout - NS, 14: now - timeout + 10 * NS, 15: now + 5 * NS}[how]
    diff.set_last_seen(key, max(last_seen, 0))


@pytest.mark.parametrize("program", [PROGRAM, XDP_PROGRAM])
@pytest.mark.parametrize("kind", BUILD_KINDS)
# No shrinking (as in the ipvs mode's test): the Mismatch message is the reproduction.
@settings(phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(config_index=st.integers(0, POOL_SIZE - 1), plan=rounds)
def test_svc_matches_model(
    build_pool: BuildPool[tuple[SvcConfig, Env]],
    kind: str,
    program: str,
    config_index: int,
    plan: list[tuple[int, int, int]],
) -> None:
    build, (config, env) = build_pool.get(config_index, kind)
    diff = SvcDifferential(build, config, program=program)
    source = build.programs[program].source
    for packet_kind, seed, age in plan:
        frame = build_packet(packet_kind, seed, env, diff.state, diff)
        step = diff.step(frame)
        check_step(step, source)
        outcome = ",".join(sorted(step.device_deltas())) or "none"
        PACKETS[(f"{kind}/{program}", outcome)] += 1
        if age >= 13:
            age_one(diff, random.Random(seed), age)
        elif age >= 10:
            age_affinity(env, diff, random.Random(seed), age)
    assert not diff.compare_state()

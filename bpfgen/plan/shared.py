"""The planning both modes share: frontends, the node's decisions, session maps.

`PlanBasis` is where a mode's planner starts (the inputs, the build kind, the
frontends and whether they are matched as code or in a map), and `PlanBasis.plan`
is where it ends: the fields every plan has, filled in the same way for both
modes. `node_decisions` is the decision table of the node file's values (SNAT
ports, CIDRs, timeouts, protocol paths) that both datapaths compile in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from bpfgen import __version__
from bpfgen.model import Backend, Inputs, Mode, Protocol, Service, ServiceType
from bpfgen.plan.ir import (
    CCase,
    Decision,
    Frontend,
    FrontendKind,
    InlineAddr,
    InlineProto,
    MapPlan,
    Masq,
    Plan,
    ProgramPlan,
    SourceRangeRule,
    Stage,
    SvcPlan,
    be16_expr,
    be32_expr,
    stage_of,
)
from bpfgen_runtime.contract import BuildKind, Scheduler, layouts
from bpfgen_runtime.contract.manifest import InterfaceEntry, NodeEntry, Timeouts

#: Frontends at or under this count are matched by generated code (nested
#: switches clang turns into binary searches over constants); above it, a
#: hash map lookup is cheaper than the comparison tree and keeps the program
#: small. Measured by `make bench` (issue: bench).
INLINE_FRONTEND_LIMIT = 64

IPPROTO = {Protocol.TCP: 6, Protocol.UDP: 17}
IPPROTO_ICMP = 1
IPPROTO_C = {Protocol.TCP: "IPPROTO_TCP", Protocol.UDP: "IPPROTO_UDP"}

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_RINGBUF = 27

#: bpfgen_drops, the drop notifications' ring: a power of two and a page multiple
#: (the kernel's rule); 40 bytes a record with the ring's header.
DROP_RING_BYTES = 256 * 1024


def ns_expr(seconds: int) -> str:
    return f"{seconds * 1_000_000_000}ULL"


def pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def frontends_of(inputs: Inputs) -> tuple[Frontend, ...]:
    node = inputs.node
    out: list[Frontend] = []

    def masq_for(kind: FrontendKind, svc: Service) -> tuple[Masq, str]:
        # kube-proxy (iptables, nftables and ipvs proxiers alike) applies masqueradeAll
        # to traffic to cluster IPs only; a NodePort, externalIP or LB IP follows its
        # externalTrafficPolicy, so Local keeps the client's address (issue 15).
        if kind is FrontendKind.POD_SHORTCUT:
            return Masq.NEVER, "a pod's traffic to an external address keeps its source"
        if kind is FrontendKind.CLUSTER_IP:
            if node.masquerade_all:
                return Masq.ALWAYS, "ClusterIP with cluster.masqueradeAll"
            return Masq.IF_OUTSIDE, "ClusterIP: sources outside cluster.podCIDR"
        if svc.external_traffic_local:
            return Masq.NEVER, "externalTrafficPolicy: Local keeps the client address"
        return Masq.ALWAYS, f"{kind.value} with externalTrafficPolicy: Cluster"

    seen: set[tuple[IPv4Address | None, int, Protocol]] = set()
    affinity_ids: dict[tuple[str, str, Protocol], int] = {}

    def is_local(b: Backend) -> bool:
        # ipvs mode: the endpoint's nodeName; bpf mode also node.podCIDR, as
        # docs/datapath-bpf.md says (an endpoint without nodeName is local there).
        return b.local or (node.mode is Mode.BPF and b.address in node.pod_cidr)

    def add(svc: Service, kind: FrontendKind, addr: IPv4Address | None, port: int, sp: Any) -> None:
        # One Service may list an address in two roles (its ClusterIP also in
        # externalIPs; an externalIP that is also its LB ingress IP). The first
        # role wins, in kube-proxy's rule order: ClusterIP, NodePort,
        # externalIP, LoadBalancer. (Across Services, config gives it to one: ServicePort.shadowed.)
        if (addr, port, sp.protocol) in seen:
            return
        seen.add((addr, port, sp.protocol))
        local_only = (
            svc.internal_traffic_local
            if kind is FrontendKind.CLUSTER_IP
            else kind is not FrontendKind.POD_SHORTCUT and svc.external_traffic_local
        )
        # A Local policy falls back to this node's serving terminating endpoints when
        # it has no ready one here, whatever other nodes have (kube-proxy, issue 15).
        held = sp.draining
        if local_only:
            backends = sp.local_backends(is_local)
        elif sp.zone_backends is not None:
            # Topology hints (kube-proxy's rules, in inputs/endpoints.py): this zone's
            # endpoints are selected; the other ready ones keep their sessions.
            backends, held = sp.zone_backends, (*sp.draining, *sp.backends)
        else:
            backends = sp.backends
        draining = tuple(sorted({b for b in held if (not local_only or is_local(b))
                                 and b not in backends},
                                key=lambda b: (b.address, b.port)))  # fmt: skip
        masq, reason = masq_for(kind, svc)
        if local_only and not backends and sp.backends:
            # kube-proxy rejects only when the Service has no endpoint at all; a Local
            # policy that leaves none here while other nodes have some drops (issue 15).
            policy = "internal" if kind is FrontendKind.CLUSTER_IP else "external"
            masq, reason = (
                Masq.DROP,
                (
                    f"{policy}TrafficPolicy: Local, no endpoint on this node, "
                    f"{len(sp.backends)} elsewhere: new flows dropped (kube-proxy)"
                ),
            )
        affinity_id = affinity_ids.setdefault((svc.key, sp.name, sp.protocol), len(out))
        # kube-proxy (nftables, iptables) sends a pod's traffic to an external address
        # under externalTrafficPolicy: Local to every endpoint ("short-circuit pod
        # traffic"): the bpf mode through the ClusterIP's frontend when that one is
        # policy Cluster, else through a hidden frontend with the Cluster policy's
        # endpoints (pod_shortcut). (The ipvs mode has one IPVS service per address.)
        pod_twin = None
        if (
            node.mode is Mode.BPF
            and local_only
            and kind is not FrontendKind.CLUSTER_IP
            and svc.cluster_ips
        ):
            if svc.internal_traffic_local:
                pod_twin = pod_shortcut(svc, sp)
            else:
                pod_twin = (svc.cluster_ips[0], sp.port)
        out.append(
            Frontend(
                index=len(out),
                kind=kind,
                service=svc.key,
                port_name=sp.name,
                addr=addr,
                port=port,
                protocol=sp.protocol,
                masq=masq,
                masq_reason=reason,
                backends=backends,
                affinity_timeout=svc.session_affinity_timeout,
                draining=draining if node.mode is Mode.BPF else (),
                affinity_id=affinity_id,
                pod_twin=pod_twin,
            )
        )

    # Hidden frontends (bpf mode), after every real one so that adding one moves no id.
    shortcuts: dict[tuple[str, str, Protocol], tuple[Service, Any, IPv4Address]] = {}

    def pod_shortcut(svc: Service, sp: Any) -> tuple[IPv4Address, int]:
        """The key of the Service port's hidden frontend for its pods, when both policies
        are Local: kube-proxy short-circuits a pod's traffic to an external address to
        the Cluster policy's endpoints even then (its UsesClusterEndpoints), and the
        ClusterIP's frontend has only this node's. Keyed by an address of 0.0.0.0/8,
        which is never a destination: svc_in and the socket programs look no packet's
        or connect()'s address up there (bpfgen_svc_hidden), only this key."""
        key = (svc.key, sp.name, sp.protocol)
        if key not in shortcuts:
            shortcuts[key] = (svc, sp, IPv4Address(len(shortcuts) + 1))
        return shortcuts[key][2], sp.port

    for svc in inputs.services:
        for sp in svc.ports:
            for ip in svc.cluster_ips:
                add(svc, FrontendKind.CLUSTER_IP, ip, sp.port, sp)
            if sp.node_port is not None and svc.type is not ServiceType.CLUSTER_IP:
                add(svc, FrontendKind.NODE_PORT, None, sp.node_port, sp)
            # An external address another Service holds is that one's (sp.shadowed).
            for ip in filter(sp.serves, svc.external_ips):
                add(svc, FrontendKind.EXTERNAL_IP, ip, sp.port, sp)
            for ip in filter(sp.serves, svc.load_balancer_ips):
                add(svc, FrontendKind.LOAD_BALANCER, ip, sp.port, sp)
    for svc, sp, addr in shortcuts.values():
        add(svc, FrontendKind.POD_SHORTCUT, addr, sp.port, sp)
    return tuple(out)


def source_range_rules(inputs: Inputs) -> tuple[SourceRangeRule, ...]:
    """spec.loadBalancerSourceRanges, per LB IP:port/proto of a LoadBalancer Service, as
    kube-proxy's nftables proxier applies them (its firewall-ips map): to the LB IPs
    only (never NodePorts or externalIPs), whatever other role the address has. When a
    range holds a node address, the LB IPs are allowed as sources too: a node reaching
    an LB IP that is local to it may use the LB IP as its source (kube-proxy's
    allowFromNode, with its one node IP; here any node address)."""
    rules: list[SourceRangeRule] = []
    for svc in inputs.services:
        if svc.source_ranges is None or svc.type is not ServiceType.LOAD_BALANCER:
            continue
        allowed = svc.source_ranges
        reason = ""
        holder = next((a for a in inputs.node.addresses
                       if any(a in r for r in svc.source_ranges)), None)  # fmt: skip
        if holder is not None:
            allowed += tuple(IPv4Network(ip) for ip in svc.load_balancer_ips
                             if IPv4Network(ip) not in allowed)  # fmt: skip
            reason = f"node address {holder} is in a range: the LB IPs are allowed as sources"
        for sp in svc.ports:
            for ip in filter(sp.serves, svc.load_balancer_ips):
                rules.append(SourceRangeRule(svc.key, ip, sp.port, sp.protocol, allowed, reason))
    return tuple(rules)


def source_range_maps(
    rules: tuple[SourceRangeRule, ...],
) -> tuple[list[MapPlan], dict[str, Sequence[tuple[bytes, bytes]]]]:
    """bpfgen_src_ranges and its entries, when some rule exists: per rule one entry of
    prefixlen 64 (any source: drop) and one of 64 + n per allowed range (pass)."""
    if not rules:
        return [], {}
    entries: list[tuple[bytes, bytes]] = []
    for r in rules:
        for net, allow in ((None, 0), *((n, 1) for n in r.allowed)):
            key = layouts.SrcRangeKey(
                prefixlen=64 + (net.prefixlen if net is not None else 0),
                vip=layouts.be32(r.addr),
                port=layouts.be16(r.port),
                proto=IPPROTO[r.protocol],
                saddr=layouts.be32(net.network_address if net is not None else 0),
            )
            entries.append((layouts.to_bytes(key),
                            layouts.to_bytes(layouts.SrcRangeValue(allow=allow))))  # fmt: skip
    size = source_ranges_max(rules)
    return [
        MapPlan("bpfgen_src_ranges", "BPF_MAP_TYPE_LPM_TRIE", BPF_MAP_TYPE_LPM_TRIE,
                ctypes_size(layouts.SrcRangeKey), ctypes_size(layouts.SrcRangeValue), size, True,
                "loadBalancerSourceRanges: (LB IP, port, proto, source prefix) -> pass or drop")
    ], {"bpfgen_src_ranges": tuple(entries)}  # fmt: skip


def source_ranges_max(rules: tuple[SourceRangeRule, ...]) -> int:
    """The trie's size: 2x its entries, a power of two, at least 64 (as the frontends map)."""
    return max(64, pow2_at_least(2 * sum(1 + len(r.allowed) for r in rules)))


def masq_result(f: Frontend) -> str:
    return f.masq.c_name


def id_result(f: Frontend) -> str:
    return str(f.index)


def inline_frontends(
    frontends: tuple[Frontend, ...], result: Callable[[Frontend], str] = masq_result
) -> tuple[InlineProto, ...]:
    """Group frontends protocol -> address -> port for nested switches; each case
    returns `result(frontend)` (ipvs mode: its masquerade policy, bpf mode: its id)."""
    protos: list[InlineProto] = []
    for proto in (Protocol.TCP, Protocol.UDP):
        mine = [f for f in frontends if f.protocol is proto]
        if not mine:
            continue
        by_addr: dict[IPv4Address, list[Frontend]] = {}
        node_ports: list[CCase] = []
        for f in sorted(mine, key=lambda f: (f.addr is None, int(f.addr or 0), f.port)):
            case = CCase(be16_expr(f.port), f"frontend #{f.index}: {f.label}", result(f))
            if f.addr is None:
                node_ports.append(case)
            else:
                by_addr.setdefault(f.addr, []).append(f)
        addrs = tuple(
            InlineAddr(
                CCase(be32_expr(a), str(a)),
                tuple(
                    CCase(be16_expr(f.port), f"frontend #{f.index}: {f.label}", result(f))
                    for f in fs
                ),
            )
            for a, fs in by_addr.items()
        )
        protos.append(InlineProto(IPPROTO_C[proto], addrs, tuple(node_ports), bool(node_ports)))
    return tuple(protos)


def net_exprs(n: IPv4Network) -> tuple[str, str]:
    return be32_expr(n.network_address), be32_expr(n.netmask)


@dataclass(frozen=True)
class PlanBasis:
    """What both modes' planners start from, and the fields every plan has."""

    inputs: Inputs
    kind: BuildKind
    frontends: tuple[Frontend, ...]
    in_map: bool  # frontends looked up in a map: generic and frozen builds, or too many
    source_ranges: tuple[SourceRangeRule, ...] = ()

    @classmethod
    def of(cls, inputs: Inputs, kind: BuildKind) -> PlanBasis:
        frontends = frontends_of(inputs)
        in_map = kind is not BuildKind.SPECIALIZED or len(frontends) > INLINE_FRONTEND_LIMIT
        return cls(inputs, kind, frontends, in_map, source_range_rules(inputs))

    @property
    def generic(self) -> bool:
        """generic and frozen builds render the same C reads."""
        return self.kind is not BuildKind.SPECIALIZED

    def at_load(self, source: str) -> bool:
        """Is the value from `source` read from bpfgen_cfg (else a C constant)? Generic
        and frozen builds: every node value; image builds: all but the image stage's."""
        if self.kind is BuildKind.IMAGE:
            return stage_of(source) is not Stage.IMAGE
        return self.generic

    @property
    def protocols(self) -> set[Protocol]:
        return {f.protocol for f in self.frontends}

    @property
    def frontends_max(self) -> int:
        """The frontends map's size: 2x the frontends, a power of two, at least 64."""
        return max(64, pow2_at_least(2 * len(self.frontends)))

    def plan(
        self,
        *,
        decisions: list[Decision],
        inline: tuple[InlineProto, ...],
        maps: list[MapPlan],
        map_init: dict[str, Sequence[tuple[bytes, bytes]]],
        programs: tuple[ProgramPlan, ...],
        counter_names: tuple[str, ...],
        svc: SvcPlan | None = None,
        vips: tuple[CCase, ...] = (),
    ) -> Plan:
        inputs, node = self.inputs, self.inputs.node
        return Plan(
            bpfgen_version=__version__,
            config_sha256=inputs.sha256,
            build=self.kind,
            mode=node.mode,
            node_name=node.name,
            scheduler=node.scheduler,
            decisions=tuple(decisions),
            node_addrs=tuple(
                CCase(be32_expr(a), f"node.addresses[{i}] {a}")
                for i, a in enumerate(node.addresses)
            ),
            frontends=self.frontends,
            frontends_in_map=self.in_map,
            inline_frontends=inline,
            maps=tuple(maps),
            programs=programs,
            runtime_config=(
                runtime_config(inputs, self.protocols, _hash_seed(inputs)) if self.generic else None
            ),
            map_init=map_init,
            node=node_info(inputs),
            counter_names=counter_names,
            svc=svc,
            source_ranges=self.source_ranges,
            vips=vips,
        )


def _hash_seed(inputs: Inputs) -> int:
    """The port-allocation hash seed: stable per node file (Inputs.hash_seed)."""
    return inputs.hash_seed


def node_decisions(
    basis: PlanBasis, *, icmp_reason: str, sessions_map: str, frontends_map: str
) -> list[Decision]:
    """The node's values as C constants (specialized) or bpfgen_cfg reads (generic,
    frozen), then where the frontends are matched; the mode names its own maps and
    what its ICMP switch does."""
    node, kind, generic = basis.inputs.node, basis.kind, basis.generic
    frontends, in_map, protocols = basis.frontends, basis.in_map, basis.protocols
    seed = _hash_seed(basis.inputs)
    port_min, port_max = node.snat_port_range
    t = node.timeouts

    pod_net, pod_mask = net_exprs(node.cluster_pod_cidr)
    svc_net, svc_mask = net_exprs(node.service_cidr)
    # (name, specialized value, generic read, source, reason)
    table: list[tuple[str, str, str | None, str, str]] = [
        (
            "BPFGEN_SNAT_PORT_MIN",
            str(port_min),
            "bpfgen_cfg.snat_port_min",
            "snat.portRange[0]",
            "first SNAT port",
        ),
        (
            "BPFGEN_SNAT_PORT_COUNT",
            str(port_max - port_min + 1),
            "bpfgen_cfg.snat_port_count",
            "snat.portRange",
            "ports in the SNAT range: the port search's modulus",
        ),
        (
            "BPFGEN_CLUSTER_POD_NET",
            pod_net,
            "bpfgen_cfg.cluster_pod_net",
            "cluster.podCIDR",
            f"{node.cluster_pod_cidr}: pods keep their source to ClusterIPs",
        ),
        (
            "BPFGEN_CLUSTER_POD_MASK",
            pod_mask,
            "bpfgen_cfg.cluster_pod_mask",
            "cluster.podCIDR",
            f"/{node.cluster_pod_cidr.prefixlen}",
        ),
        (
            "BPFGEN_SERVICE_NET",
            svc_net,
            "bpfgen_cfg.service_net",
            "cluster.serviceCIDR",
            f"{node.service_cidr}: VIP sources are node processes",
        ),
        (
            "BPFGEN_SERVICE_MASK",
            svc_mask,
            "bpfgen_cfg.service_mask",
            "cluster.serviceCIDR",
            f"/{node.service_cidr.prefixlen}",
        ),
        (
            "BPFGEN_MARK",
            f"0x{node.masquerade_mark:x}U",
            "bpfgen_cfg.mark",
            "snat.mark",
            "skb->mark bit: ingress asks egress to SNAT",
        ),
        (
            "BPFGEN_HASH_SEED",
            f"0x{seed:08x}U",
            "bpfgen_cfg.hash_seed",
            "node file sha256",
            "port-allocation hash seed, stable per node file (not per Service change)",
        ),
        (
            "BPFGEN_TIMEOUT_TCP_ESTABLISHED_NS",
            ns_expr(t.tcp_established),
            "bpfgen_cfg.timeout_tcp_established_ns",
            "snat.timeouts.tcpEstablished",
            f"{t.tcp_established}s idle",
        ),
        (
            "BPFGEN_TIMEOUT_TCP_TRANSITORY_NS",
            ns_expr(t.tcp_transitory),
            "bpfgen_cfg.timeout_tcp_transitory_ns",
            "snat.timeouts.tcpTransitory",
            f"{t.tcp_transitory}s idle (not yet answered, or half-closed)",
        ),
        (
            "BPFGEN_TIMEOUT_TCP_TIME_WAIT_NS",
            ns_expr(t.tcp_time_wait),
            "bpfgen_cfg.timeout_tcp_time_wait_ns",
            "snat.timeouts.tcpTimeWait",
            f"{t.tcp_time_wait}s idle (closed; the far side may hold TIME_WAIT)",
        ),
        (
            "BPFGEN_TIMEOUT_TCP_CLOSE_NS",
            ns_expr(t.tcp_close),
            "bpfgen_cfg.timeout_tcp_close_ns",
            "snat.timeouts.tcpClose",
            f"{t.tcp_close}s idle (after a RST)",
        ),
        (
            "BPFGEN_TIMEOUT_UDP_NS",
            ns_expr(t.udp),
            "bpfgen_cfg.timeout_udp_ns",
            "snat.timeouts.udp",
            f"{t.udp}s idle",
        ),
        (
            "BPFGEN_TIMEOUT_ICMP_NS",
            ns_expr(t.icmp),
            "bpfgen_cfg.timeout_icmp_ns",
            "snat.timeouts.icmp",
            f"{t.icmp}s idle",
        ),
        (
            "BPFGEN_PROTO_TCP",
            str(int(Protocol.TCP in protocols)),
            "bpfgen_cfg.proto_tcp",
            "services",
            "TCP path "
            + (
                "kept: a service uses TCP"
                if Protocol.TCP in protocols
                else "not taken: no TCP service (compiled out when specialized)"
            ),
        ),
        (
            "BPFGEN_PROTO_UDP",
            str(int(Protocol.UDP in protocols)),
            "bpfgen_cfg.proto_udp",
            "services",
            "UDP path "
            + (
                "kept: a service uses UDP"
                if Protocol.UDP in protocols
                else "not taken: no UDP service (compiled out when specialized)"
            ),
        ),
        (
            "BPFGEN_PROTO_ICMP",
            str(int(node.icmp_echo)),
            "bpfgen_cfg.proto_icmp",
            "features.icmpEcho",
            icmp_reason,
        ),
    ]
    # A value set at load is not in the C, and neither is why it has that value: the
    # C of a build that reads it must not change with the Services (build.py reuse).
    at_load_reasons = {
        "BPFGEN_PROTO_TCP": "TCP path: taken when a Service uses TCP (set at load)",
        "BPFGEN_PROTO_UDP": "UDP path: taken when a Service uses UDP (set at load)",
    }
    decisions = [
        Decision(
            name,
            f"({gen})" if gen and basis.at_load(source) else spec,
            source,
            at_load_reasons.get(name, reason) if gen and basis.at_load(source) else reason,
            runtime=gen is not None and basis.at_load(source),
        )
        for name, spec, gen, source, reason in table
    ]
    decisions += [
        Decision(
            "BPFGEN_SNAT_MAX_SESSIONS",
            str(node.max_sessions),
            "snat.maxSessions",
            f"size of {sessions_map}",
        ),
        Decision(
            "BPFGEN_FRONTENDS_IN_MAP",
            str(int(in_map)),
            "(fixed)" if generic else "services",  # generic builds: whatever the Services
            f"{kind} build: frontends always in a map"
            if generic
            else (
                f"{len(frontends)} frontends > {INLINE_FRONTEND_LIMIT}: hash map lookup"
                if in_map
                else f"{len(frontends)} frontends <= {INLINE_FRONTEND_LIMIT}: matched as code"
            ),
        ),
        Decision(
            "BPFGEN_SOURCE_RANGES",
            str(int(bool(basis.source_ranges))),
            "services[].spec.loadBalancerSourceRanges",
            ("LB IP:port/proto" if generic else f"{len(basis.source_ranges)} LB IP:port/proto")
            + " with source ranges: checked in bpfgen_src_ranges before any translation"
            if basis.source_ranges
            else "no Service has loadBalancerSourceRanges: the check is compiled out",
        ),
        Decision(
            "BPFGEN_SRC_RANGES_MAX",
            str(source_ranges_max(basis.source_ranges)),
            "services[].spec.loadBalancerSourceRanges",
            "bpfgen_src_ranges size: 2x its entries, power of two, at least 64"
            if basis.source_ranges
            else "unused: no bpfgen_src_ranges map",
        ),
        Decision(
            "BPFGEN_DROP_RING_BYTES",
            str(DROP_RING_BYTES),
            "(fixed)",
            "bpfgen_drops: drop notifications for `bpfgen status --drops`, "
            f"{DROP_RING_BYTES // 1024} KiB (about {DROP_RING_BYTES // 40} records)",
        ),
        Decision(
            "BPFGEN_FRONTENDS_MAX",
            str(basis.frontends_max),
            "services",
            f"{frontends_map} size: 2x the frontends, power of two, at least 64"
            if in_map
            else f"unused: frontends as code, no {frontends_map} map",
        ),
    ]
    return decisions


def node_info(inputs: Inputs) -> NodeEntry:
    """The node facts the runtime acts on (IPVS, sysctls, reserved ports, notrack)."""
    n = inputs.node
    t = n.timeouts
    return NodeEntry(
        name=n.name,
        addresses=tuple(str(a) for a in n.addresses),
        pod_cidr=str(n.pod_cidr),
        cluster_pod_cidr=str(n.cluster_pod_cidr),
        service_cidr=str(n.service_cidr),
        masquerade_all=n.masquerade_all,
        node_port_range=n.node_port_range,
        interfaces=tuple(InterfaceEntry(i.name, i.role.value, i.hook.value) for i in n.interfaces),
        scheduler=Scheduler(n.scheduler),
        mode=n.mode,
        maglev_table_size=n.maglev_table_size,
        selection_seed=n.selection_seed,
        snat_port_range=n.snat_port_range,
        max_sessions=n.max_sessions,
        masquerade_mark=n.masquerade_mark,
        timeouts=Timeouts(t.tcp_established, t.tcp_transitory, t.tcp_time_wait, t.tcp_close,
                          t.udp, t.icmp),
    )  # fmt: skip


def ctypes_size(struct: type) -> int:
    import ctypes

    return ctypes.sizeof(struct)


def frontend_entry(f: Frontend) -> tuple[bytes, bytes]:
    key = layouts.FrontendKey(
        addr=layouts.be32(f.addr if f.addr is not None else 0),
        port=layouts.be16(f.port),
        proto=IPPROTO[f.protocol],
    )
    return layouts.to_bytes(key), layouts.to_bytes(layouts.FrontendValue(masq=f.masq.value))


def runtime_config(inputs: Inputs, protocols: set[Protocol], seed: int) -> bytes:
    node = inputs.node
    cfg = layouts.Config()
    for i, a in enumerate(node.addresses):
        cfg.node_addrs[i] = layouts.be32(a)
    cfg.n_node_addrs = len(node.addresses)
    cfg.cluster_pod_net = layouts.be32(node.cluster_pod_cidr.network_address)
    cfg.cluster_pod_mask = layouts.be32(node.cluster_pod_cidr.netmask)
    cfg.service_net = layouts.be32(node.service_cidr.network_address)
    cfg.service_mask = layouts.be32(node.service_cidr.netmask)
    cfg.snat_port_min = node.snat_port_range[0]
    cfg.snat_port_count = node.snat_port_range[1] - node.snat_port_range[0] + 1
    cfg.mark = node.masquerade_mark
    cfg.hash_seed = seed
    cfg.proto_tcp = int(Protocol.TCP in protocols)
    cfg.proto_udp = int(Protocol.UDP in protocols)
    cfg.proto_icmp = int(node.icmp_echo)
    ns = 1_000_000_000
    cfg.timeout_tcp_established_ns = node.timeouts.tcp_established * ns
    cfg.timeout_tcp_transitory_ns = node.timeouts.tcp_transitory * ns
    cfg.timeout_udp_ns = node.timeouts.udp * ns
    cfg.timeout_icmp_ns = node.timeouts.icmp * ns
    cfg.timeout_tcp_time_wait_ns = node.timeouts.tcp_time_wait * ns
    cfg.timeout_tcp_close_ns = node.timeouts.tcp_close * ns
    cfg.selection_seed = node.selection_seed
    return layouts.to_bytes(cfg)


def session_maps(
    node_max: int, fwd: tuple[str, type, str], rev: tuple[str, type, str], counters: int
) -> list[MapPlan]:
    """The forward and reverse session maps and the counters (both modes)."""
    return [
        MapPlan(
            fwd[0],
            "BPF_MAP_TYPE_HASH",
            BPF_MAP_TYPE_HASH,
            ctypes_size(layouts.Tuple4),
            ctypes_size(fwd[1]),
            node_max,
            True,
            fwd[2],
        ),
        MapPlan(
            rev[0],
            "BPF_MAP_TYPE_HASH",
            BPF_MAP_TYPE_HASH,
            ctypes_size(layouts.Tuple4),
            ctypes_size(rev[1]),
            node_max,
            True,
            rev[2],
        ),
        MapPlan(
            "bpfgen_drops",
            "BPF_MAP_TYPE_RINGBUF",
            BPF_MAP_TYPE_RINGBUF,
            0,
            0,
            DROP_RING_BYTES,
            True,
            "drop notifications (struct bpfgen_drop_event), `bpfgen status --drops`",
        ),
        MapPlan(
            "bpfgen_counters",
            "BPF_MAP_TYPE_PERCPU_ARRAY",
            BPF_MAP_TYPE_PERCPU_ARRAY,
            4,
            8,
            counters,
            True,
            "per-CPU event and drop counters",
        ),
    ]

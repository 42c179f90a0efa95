"""What the model knows about a node: derived from `model.Inputs` per docs/datapath.md.

The frontends and their masquerade policies are computed here from the services,
by the table in "Frontends and the masquerade policy", not taken from the plan:
the model and the compiler derive them independently.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from types import MappingProxyType

from bpfgen.model import Backend, Inputs, Mode, Protocol, ServicePort, ServiceType

__all__ = [
    "BUILD_KINDS",
    "IPPROTO_ICMP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "ModelConfig",
    "Policy",
    "model_config",
]

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
_PROTO_NUMBERS = {Protocol.TCP: IPPROTO_TCP, Protocol.UDP: IPPROTO_UDP}
_NS = 1_000_000_000

BUILD_KINDS = ("specialized", "generic", "frozen", "image")


class Policy(enum.Enum):
    """When a packet to a frontend gets SNAT."""

    ALWAYS = "always"
    IF_OUTSIDE = "if_outside"  # the source is outside cluster.podCIDR
    NEVER = "never"  # the client address is kept (externalTrafficPolicy: Local)
    # A Local policy with no usable endpoint on this node while the Service has some
    # elsewhere: new flows are dropped, not rejected (docs/datapath.md).
    DROP = "drop"


@dataclass(frozen=True)
class ModelConfig:
    build_kind: str  # "specialized", "generic" or "frozen": the programs must behave the same
    node_addrs: tuple[int, ...]  # host order, in node.addresses order
    cluster_pod_cidr: IPv4Network
    service_cidr: IPv4Network
    port_min: int
    port_max: int
    mark: int
    hash_seed: int
    proto_tcp: bool
    proto_udp: bool
    proto_icmp: bool
    timeout_tcp_established_ns: int
    timeout_tcp_transitory_ns: int
    timeout_tcp_time_wait_ns: int
    timeout_tcp_close_ns: int
    timeout_udp_ns: int
    timeout_icmp_ns: int
    max_sessions: int  # capacity of each session map
    # (address, port, protocol number) -> policy
    frontends: Mapping[tuple[int, int, int], Policy]
    # (port, protocol number) -> policy: NodePorts, on every node address
    node_ports: Mapping[tuple[int, int], Policy]
    # (LB IP, port, protocol number) -> the sources allowed (loadBalancerSourceRanges)
    source_ranges: Mapping[tuple[int, int, int], tuple[IPv4Network, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # The ipvs mode's VIPs (ClusterIPs, externalIPs, LB IPs), less the node addresses:
    # "TCP or UDP to a VIP at a port that is no frontend is dropped" (docs/datapath.md).
    vips: frozenset[int] = frozenset()

    @property
    def port_count(self) -> int:
        return self.port_max - self.port_min + 1

    def in_port_range(self, port: int) -> bool:
        return self.port_min <= port <= self.port_max

    def is_node_addr(self, addr: int) -> bool:
        return addr in self.node_addrs

    def in_cluster_pods(self, addr: int) -> bool:
        return IPv4Address(addr) in self.cluster_pod_cidr

    def in_service_cidr(self, addr: int) -> bool:
        return IPv4Address(addr) in self.service_cidr

    def proto_enabled(self, proto: int) -> bool:
        return {
            IPPROTO_TCP: self.proto_tcp,
            IPPROTO_UDP: self.proto_udp,
            IPPROTO_ICMP: self.proto_icmp,
        }.get(proto, False)

    def source_allowed(self, saddr: int, daddr: int, dport: int, proto: int) -> bool:
        """docs/datapath.md "Source ranges": to an LB IP:port/proto with ranges, only a
        source inside one of them passes."""
        allowed = self.source_ranges.get((daddr, dport, proto))
        return allowed is None or any(IPv4Address(saddr) in n for n in allowed)

    def lookup_frontend(self, addr: int, port: int, proto: int) -> Policy | None:
        """An exact frontend first; otherwise, on a node address, a NodePort."""
        exact = self.frontends.get((addr, port, proto))
        if exact is not None:
            return exact
        if self.is_node_addr(addr):
            return self.node_ports.get((port, proto))
        return None


def source_ranges(inputs: Inputs) -> Mapping[tuple[int, int, int], tuple[IPv4Network, ...]]:
    """docs/datapath.md "Source ranges": a LoadBalancer Service's ranges guard each of its
    LB IPs at each of its ports; when one holds a node address, the LB IPs themselves
    are allowed sources too."""
    out: dict[tuple[int, int, int], tuple[IPv4Network, ...]] = {}
    for service in inputs.services:
        if service.type is not ServiceType.LOAD_BALANCER or service.source_ranges is None:
            continue
        allowed = service.source_ranges
        if any(a in n for a in inputs.node.addresses for n in allowed):
            allowed += tuple(IPv4Network(ip) for ip in service.load_balancer_ips)
        for port in service.ports:
            for ip in filter(port.serves, service.load_balancer_ips):
                out[(int(ip), port.port, _PROTO_NUMBERS[port.protocol])] = allowed
    return MappingProxyType(out)


def model_config(inputs: Inputs, build_kind: str = "specialized") -> ModelConfig:
    """The model's view of `inputs`; `build_kind` is recorded, it changes nothing."""
    if build_kind not in BUILD_KINDS:
        raise ValueError(f"build kind {build_kind!r} is not one of {', '.join(BUILD_KINDS)}")
    node = inputs.node
    frontends: dict[tuple[int, int, int], Policy] = {}
    node_ports: dict[tuple[int, int], Policy] = {}
    protocols: set[Protocol] = set()

    def external(local: bool) -> Policy:
        # masqueradeAll is the ClusterIP's (kube-proxy: the cluster IP's chain only);
        # external traffic follows its traffic policy with or without it.
        return Policy.NEVER if local else Policy.ALWAYS

    def here(b: Backend) -> bool:
        # The endpoint's nodeName; the bpf mode also node.podCIDR (docs/datapath-bpf.md).
        return b.local or (node.mode is Mode.BPF and b.address in node.pod_cidr)

    def dropping(local: bool, port: ServicePort, policy: Policy) -> Policy:
        """DROP when a Local policy finds no endpoint here (ready, else serving
        terminating) while the Service port has endpoints elsewhere."""
        if not local or not port.backends:
            return policy
        mine = [b for b in (*port.backends, *port.serving_terminating) if here(b)]
        return policy if mine else Policy.DROP

    for service in inputs.services:
        for port in service.ports:
            cluster_policy = dropping(
                service.internal_traffic_local,
                port,
                Policy.ALWAYS if node.masquerade_all else Policy.IF_OUTSIDE,
            )
            external_policy = dropping(
                service.external_traffic_local, port, external(service.external_traffic_local)
            )
            protocols.add(port.protocol)
            proto = _PROTO_NUMBERS[port.protocol]
            # The config stage gives each (address, port, protocol) to one Service
            # (an external address another holds is in port.shadowed); within one
            # Service the first role of an address wins.
            for addr in service.cluster_ips:
                frontends.setdefault((int(addr), port.port, proto), cluster_policy)
            for addr in filter(port.serves, (*service.external_ips, *service.load_balancer_ips)):
                frontends.setdefault((int(addr), port.port, proto), external_policy)
            node_port_service = service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
            if node_port_service and port.node_port is not None:
                node_ports.setdefault((port.node_port, proto), external_policy)

    timeouts = node.timeouts
    return ModelConfig(
        build_kind=build_kind,
        node_addrs=tuple(int(a) for a in node.addresses),
        cluster_pod_cidr=node.cluster_pod_cidr,
        service_cidr=node.service_cidr,
        port_min=node.snat_port_range[0],
        port_max=node.snat_port_range[1],
        mark=node.masquerade_mark,
        hash_seed=inputs.hash_seed,
        proto_tcp=Protocol.TCP in protocols,
        proto_udp=Protocol.UDP in protocols,
        proto_icmp=node.icmp_echo,
        timeout_tcp_established_ns=timeouts.tcp_established * _NS,
        timeout_tcp_transitory_ns=timeouts.tcp_transitory * _NS,
        timeout_tcp_time_wait_ns=timeouts.tcp_time_wait * _NS,
        timeout_tcp_close_ns=timeouts.tcp_close * _NS,
        timeout_udp_ns=timeouts.udp * _NS,
        timeout_icmp_ns=timeouts.icmp * _NS,
        max_sessions=node.max_sessions,
        frontends=MappingProxyType(frontends),
        node_ports=MappingProxyType(node_ports),
        source_ranges=source_ranges(inputs),
        vips=frozenset(a for a, _, _ in frontends) - {int(a) for a in node.addresses},
    )

"""What the model of the bpf mode knows about a node, from `model.Inputs` per
docs/datapath-bpf.md ("Service lookup", "Backend selection").

The frontends, their masquerade policies and backends (after the traffic policy)
are derived here from the services, not taken from the plan. The Maglev tables
are built with `bpfgen.maglev`, which the spec names as their definition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from ipaddress import IPv4Address
from types import MappingProxyType

from bpfgen import maglev
from bpfgen.model import Backend, Inputs, Mode, Protocol, Service, ServicePort, ServiceType
from bpfgen.refmodel.ipvs_config import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    ModelConfig,
    Policy,
    model_config,
)

__all__ = ["Endpoint", "SvcConfig", "SvcFrontend", "svc_config"]

_PROTO_NUMBERS = {Protocol.TCP: IPPROTO_TCP, Protocol.UDP: IPPROTO_UDP}

Endpoint = tuple[int, int]  # (address, port), host order

#: docs/datapath-bpf.md "Implementation decisions": the Maglev permutation seed S.
MAGLEV_SEED = 0


@dataclass(frozen=True)
class SvcFrontend:
    policy: Policy
    backends: tuple[Endpoint, ...]  # selectable, after the traffic policy, sorted
    members: frozenset[Endpoint]  # backends and draining endpoints: sessions keep these
    table: tuple[int, ...]  # Maglev: slot -> index into backends (empty: random, or none)
    # sessionAffinity ClientIP: timeoutSeconds (0: none) and the id of the first frontend
    # of the Service port, under which the port's bpfgen_affinity_v4 entries are kept.
    affinity_s: int = 0
    affinity_id: int = 0
    # externalTrafficPolicy: Local: the frontend that serves clients from
    # cluster.podCIDR, unmasqueraded ("short-circuit pod traffic"): the ClusterIP's
    # (internal policy Cluster), or the Cluster policy's endpoints (internal Local too).
    pod_frontend: SvcFrontend | None = None


@dataclass(frozen=True)
class SvcConfig:
    base: ModelConfig  # parsing, node addresses, SNAT ports, timeouts, sessions
    scheduler: str  # "random" | "maglev"
    maglev_size: int
    selection_seed: int
    frontends: Mapping[tuple[int, int, int], SvcFrontend]  # (addr, port, proto)
    node_ports: Mapping[tuple[int, int], SvcFrontend]  # (port, proto), on every node address
    vips: frozenset[int]  # ClusterIPs, externalIPs, LB IPs: echo requests answered

    @property
    def build_kind(self) -> str:
        return self.base.build_kind

    def lookup(self, addr: int, port: int, proto: int) -> SvcFrontend | None:
        """An exact frontend first (never address 0); otherwise, on a node address, a NodePort."""
        exact = self.frontends.get((addr, port, proto)) if addr else None
        if exact is not None:
            return exact
        if self.base.is_node_addr(addr):
            return self.node_ports.get((port, proto))
        return None


@dataclass
class _Ids:
    """Frontend ids: frontends are numbered as svc_config finds them (first role wins); a
    Service port's affinity id is the id of its first frontend (docs/datapath-bpf.md)."""

    next: int = 0
    first: int | None = None  # the current Service port's first frontend

    def take(self) -> int:
        """Number one more frontend of the current Service port; its affinity id."""
        if self.first is None:
            self.first = self.next
        self.next += 1
        return self.first


@cache
def _maglev_table(backends: tuple[Endpoint, ...], size: int) -> tuple[int, ...]:
    keys = [maglev.Backend(f"{IPv4Address(a)}:{p}") for a, p in backends]
    return maglev.build_table(keys, size, seed=MAGLEV_SEED)


def svc_config(inputs: Inputs, build_kind: str = "specialized") -> SvcConfig:
    """The model's view of a bpf-mode node; `build_kind` is recorded, it changes nothing."""
    node = inputs.node
    if node.mode is not Mode.BPF:
        raise ValueError("svc_config: datapath.mode is not bpf")
    base = model_config(inputs, build_kind)
    frontends: dict[tuple[int, int, int], SvcFrontend] = {}
    node_ports: dict[tuple[int, int], SvcFrontend] = {}
    ids = _Ids()

    def local(b: Backend) -> bool:
        # "Traffic policy Local keeps an endpoint when its nodeName is this node or its
        # address is in node.podCIDR".
        return b.local or b.address in node.pod_cidr

    def frontend(
        service: Service,
        port: ServicePort,
        cluster_ip: bool,
        policy: Policy,
        affinity_id: int,
        pods: bool = False,
    ) -> SvcFrontend:
        only_local = not pods and (
            service.internal_traffic_local if cluster_ip else service.external_traffic_local
        )

        def kept(endpoints: tuple[Backend, ...]) -> tuple[Endpoint, ...]:
            return tuple(
                sorted({(int(b.address), b.port) for b in endpoints if not only_local or local(b)})
            )

        backends = kept(port.backends)
        held = kept(port.draining)
        if only_local and not backends:
            # "A Local policy with no ready endpoint on this node falls back to this
            # node's serving terminating endpoints" (kube-proxy; docs/datapath-bpf.md).
            backends = kept(port.serving_terminating)
        elif not only_local and port.zone_backends is not None:
            # "Topology hints: the Cluster policy selects the endpoints hinted for this
            # node's zone; the other ready endpoints keep their sessions."
            held += backends
            backends = kept(port.zone_backends)
        table = (
            _maglev_table(backends, node.maglev_table_size)
            if node.scheduler == "maglev" and backends
            else ()
        )
        twin = None
        if not cluster_ip and only_local and service.cluster_ips:
            # "A pod's traffic under externalTrafficPolicy: Local goes to every endpoint
            # (the Cluster policy's, topology included), whatever the internal policy."
            if service.internal_traffic_local:
                twin = frontend(service, port, False, Policy.NEVER, affinity_id, pods=True)
            else:
                twin = frontends.get(
                    (int(service.cluster_ips[0]), port.port, _PROTO_NUMBERS[port.protocol])
                )
        return SvcFrontend(
            policy,
            backends,
            frozenset(backends + held),
            table,
            service.session_affinity_timeout or 0,
            affinity_id,
            twin,
        )

    for service in inputs.services:
        for port in service.ports:
            proto = _PROTO_NUMBERS[port.protocol]
            ids.first = None
            # The same policies as the ipvs mode (docs/datapath.md), hence the base's.
            # First role wins: ClusterIP, NodePort, externalIP, LoadBalancer.
            for addr in service.cluster_ips:
                key = (int(addr), port.port, proto)
                if key not in frontends:
                    frontends[key] = frontend(service, port, True, base.frontends[key], ids.take())
            node_port_service = service.type in (ServiceType.NODE_PORT, ServiceType.LOAD_BALANCER)
            if node_port_service and port.node_port is not None:
                nkey = (port.node_port, proto)
                if nkey not in node_ports:
                    node_ports[nkey] = frontend(
                        service, port, False, base.node_ports[nkey], ids.take()
                    )
            for addr in filter(port.serves, (*service.external_ips, *service.load_balancer_ips)):
                key = (int(addr), port.port, proto)
                if key not in frontends:
                    frontends[key] = frontend(service, port, False, base.frontends[key], ids.take())
    return SvcConfig(
        base=base,
        scheduler=node.scheduler,
        maglev_size=node.maglev_table_size,
        selection_seed=node.selection_seed,
        frontends=MappingProxyType(frontends),
        node_ports=MappingProxyType(node_ports),
        vips=frozenset(a for a, _, _ in frontends),
    )

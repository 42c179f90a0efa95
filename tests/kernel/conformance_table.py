"""The kube-proxy conformance table (issue 15): packet-flow cases and their expected fate.

Written from kube-proxy's documented behaviour and its nftables proxier (the current
backend; docs/kube-proxy.md), not from bpfgen's plan: each row is a Service set-up, a
client, a destination and a protocol, and what kube-proxy does with a new flow:

- serve(endpoints, masq): the flow may reach exactly these endpoints (over many
  flows, every one of them and no other), with the source masqueraded or kept;
  HAIRPIN: masqueraded exactly when the endpoint chosen is the client itself;
- drop(reason): dropped, counted under bpfgen's counter `reason`;
- REJECT: a TCP RST or ICMP port unreachable (a Service port without endpoints).

A row may carry an `ipvs=` override: where bpfgen's ipvs mode deliberately differs
from kube-proxy's nftables backend, with the reason in docs/kube-proxy.md ("Still
different, and why"). tests/kernel/test_conformance.py runs every row against every
build kind of both modes, the kernel and the reference model side by side.

Addresses are from 198.18.0.0/15 (nodes, Services, outside clients) and the cluster's
pod CIDR 198.19.0.0/16; none of them is ever on a wire (BPF_PROG_TEST_RUN only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NODE1, NODE2 = "198.18.0.2", "198.18.0.3"
POD_CIDR, CLUSTER_POD_CIDR, SERVICE_CIDR = "198.19.1.0/24", "198.19.0.0/16", "198.18.128.0/17"
ZONE = "zone-a"  # this node's zone

# Endpoints. This node (node-a) runs L1 and LT; node-b R1 and RT; node-c R2 and RT2.
L1, LT = "198.19.1.5", "198.19.1.6"  # LT: terminating, still serving
R1, R2 = "198.19.2.13", "198.19.3.7"
RT = "198.19.2.20"  # terminating, not serving: never chosen for a new flow
RT2 = "198.19.3.21"  # terminating, serving
NODE_OF = {L1: "node-a", LT: "node-a", R1: "node-b", RT: "node-b", R2: "node-c", RT2: "node-c"}
TCP_TARGET, UDP_TARGET = 8080, 5353  # the endpoints' ports for :80/TCP and :53/UDP

# Clients.
CLIENTS = {
    "pod": "198.19.1.9",  # a pod of this node, no endpoint of anything
    "remote-pod": "198.19.2.50",  # a pod of another node, arriving on the uplink
    "ext": "198.18.50.7",  # outside the cluster, inside the source ranges below
    "ext-denied": "198.18.51.9",  # outside the cluster and outside the source ranges
    "self": L1,  # an endpoint of the Service, on this node (hairpin)
}
ALLOWED_RANGE = "198.18.50.0/24"
UNALLOCATED = "198.18.200.1"  # in the service CIDR, no Service's address


@dataclass(frozen=True)
class Svc:
    """One Service: type LoadBalancer with an externalIP (so every kind of frontend
    exists), :80/TCP and :53/UDP, both on one nodePort number."""

    name: str
    index: int  # its addresses and nodePort
    endpoints: tuple[tuple[str, str], ...] = ()  # (address, condition): ready, serving, gone
    etp_local: bool = False
    itp_local: bool = False
    source_ranges: tuple[str, ...] | None = None
    hints: dict[str, str] | None = None  # address -> zone; an endpoint missing: no hint
    node_hints: dict[str, str] | None = None  # address -> node (hints.forNodes)

    @property
    def cluster_ip(self) -> str:
        return f"198.18.128.{10 + self.index}"

    @property
    def external_ip(self) -> str:
        return f"198.18.100.{10 + self.index}"

    @property
    def lb_ip(self) -> str:
        return f"198.18.101.{10 + self.index}"

    @property
    def node_port(self) -> int:
        return 30100 + self.index

    def target(self, kind: str) -> str:
        return {
            "clusterIP": self.cluster_ip,
            "nodePort": NODE2,
            "externalIP": self.external_ip,
            "lbIP": self.lb_ip,
            "clusterIP-other-port": self.cluster_ip,
            "externalIP-other-port": self.external_ip,
            "unallocated": UNALLOCATED,
        }[kind]

    def port(self, kind: str, proto: str) -> int:
        if kind == "nodePort":
            return self.node_port
        if kind.endswith("-other-port"):
            return 81 if proto == "TCP" else 54  # no port of any Service
        return 80 if proto == "TCP" else 53

    def documents(self) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {
            "type": "LoadBalancer",
            "clusterIP": self.cluster_ip,
            "externalIPs": [self.external_ip],
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "nodePort": self.node_port},
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": self.node_port},
            ],
        }
        if self.etp_local:
            spec["externalTrafficPolicy"] = "Local"
        if self.itp_local:
            spec["internalTrafficPolicy"] = "Local"
        if self.source_ranges is not None:
            spec["loadBalancerSourceRanges"] = list(self.source_ranges)
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": "default"},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": self.lb_ip}]}},
        }
        if not self.endpoints:
            return [service]
        conditions = {
            "ready": {"ready": True, "serving": True, "terminating": False},
            "serving": {"ready": False, "serving": True, "terminating": True},
            "gone": {"ready": False, "serving": False, "terminating": True},
        }
        endpoints = []
        for address, condition in self.endpoints:
            endpoint: dict[str, Any] = {
                "addresses": [address],
                "nodeName": NODE_OF[address],
                "conditions": conditions[condition],
            }
            if self.hints is not None and address in self.hints:
                endpoint.setdefault("hints", {})["forZones"] = [{"name": self.hints[address]}]
            if self.node_hints is not None and address in self.node_hints:
                endpoint.setdefault("hints", {})["forNodes"] = [{"name": self.node_hints[address]}]
            endpoints.append(endpoint)
        endpoint_slice = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{self.name}-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": TCP_TARGET, "protocol": "TCP"},
                {"name": "dns", "port": UDP_TARGET, "protocol": "UDP"},
            ],
            "endpoints": endpoints,
        }
        return [service, endpoint_slice]


READY3 = ((L1, "ready"), (R1, "ready"), (R2, "ready"))
SERVICES = {
    s.name: s
    for s in (
        Svc("cluster", 0, READY3),
        Svc("etp-local", 1, READY3, etp_local=True),
        Svc("etp-local-remote", 2, ((R1, "ready"), (R2, "ready")), etp_local=True),
        Svc("itp-local", 3, ((L1, "ready"), (R1, "ready")), itp_local=True),
        Svc("itp-local-remote", 4, ((R1, "ready"),), itp_local=True),
        Svc("local-terminating", 5, ((R1, "ready"), (LT, "serving")), etp_local=True),
        Svc("terminating-only", 6, ((LT, "serving"), (RT2, "serving"), (RT, "gone"))),
        Svc("empty", 7),
        Svc("ranges", 8, ((L1, "ready"), (R1, "ready")), source_ranges=(ALLOWED_RANGE,)),
        Svc("topology", 9, READY3, hints={L1: ZONE, R1: ZONE, R2: "zone-b"}),
        Svc("topology-partial", 10, READY3, hints={L1: ZONE, R1: ZONE}),
        Svc("not-serving", 11, ((R1, "ready"), (RT, "gone"))),
        Svc("both-local", 12, ((L1, "ready"), (R1, "ready")), etp_local=True, itp_local=True),
        Svc(
            "ranges-local",
            13,
            ((L1, "ready"), (R1, "ready")),
            etp_local=True,
            source_ranges=(ALLOWED_RANGE,),
        ),
        Svc(
            "same-node",
            14,
            READY3,
            hints={L1: ZONE, R1: ZONE, R2: "zone-b"},
            node_hints={L1: "node-a", R1: "node-b", R2: "node-c"},
        ),
    )
}
#: masqueradeAll's own node: these Services again, with cluster.masqueradeAll.
MASQ_ALL_SERVICES = ("cluster", "etp-local", "itp-local")


def node_file(mode: str, *, masquerade_all: bool = False) -> dict[str, Any]:
    datapath: dict[str, Any] = {"mode": mode}
    if mode == "bpf":
        datapath |= {"scheduler": "maglev", "maglevTableSize": 251}  # deterministic
    return {
        "apiVersion": "bpfgen/v1",
        "kind": "NodeConfig",
        "node": {"name": "node-a", "addresses": [NODE1, NODE2], "podCIDR": POD_CIDR, "zone": ZONE},
        "cluster": {
            "podCIDR": CLUSTER_POD_CIDR,
            "serviceCIDR": SERVICE_CIDR,
            "masqueradeAll": masquerade_all,
        },
        "interfaces": [{"name": "eth0", "role": "uplink"}, {"name": "veth*", "role": "pods"}],
        "datapath": datapath,
        "snat": {"maxSessions": 256},  # the default SNAT range; small maps: fast to dump
    }


def services_file(names: tuple[str, ...] | None = None) -> dict[str, Any]:
    chosen = [SERVICES[n] for n in names] if names else list(SERVICES.values())
    return {"apiVersion": "v1", "kind": "List", "items": [d for s in chosen for d in s.documents()]}


# ---------------------------------------------------------------------------- fates

HAIRPIN = "hairpin"


@dataclass(frozen=True)
class Fate:
    kind: str  # "serve", "drop", "reject", "pass" (to the stack, as any other packet)
    endpoints: frozenset[str] = frozenset()
    masq: bool | str = False  # serve: masqueraded; HAIRPIN: when the endpoint is the client
    reason: str = ""  # drop: bpfgen's counter

    def __str__(self) -> str:
        if self.kind == "serve":
            masq = {True: "masq", False: "keep", HAIRPIN: "hairpin"}[self.masq]
            return f"serve {sorted(self.endpoints)} {masq}"
        return f"drop {self.reason}" if self.kind == "drop" else self.kind


def serve(*endpoints: str, masq: bool | str) -> Fate:
    return Fate("serve", frozenset(endpoints), masq)


def drop(reason: str) -> Fate:
    return Fate("drop", reason=reason)


REJECT = Fate("reject")
PASS = Fate("pass")
NO_LOCAL = drop("drop_no_local_endpoint")
DENIED = drop("drop_source_range")


@dataclass(frozen=True)
class Row:
    service: str
    target: str  # clusterIP, nodePort (on NODE2), externalIP, lbIP, or one of OTHER_TARGETS
    client: str  # a key of CLIENTS
    proto: str  # TCP, UDP
    fate: Fate
    ipvs: Fate | None = None  # the ipvs mode's documented deviation, if any
    masquerade_all: bool = False  # run on masqueradeAll's node

    @property
    def id(self) -> str:
        node = "masqall-" if self.masquerade_all else ""
        return f"{node}{self.service}-{self.target}-{self.proto}-from-{self.client}"

    def expected(self, mode: str) -> Fate:
        if mode == "ipvs" and self.ipvs is not None:
            return self.ipvs
        return self.fate


ALL3 = (L1, R1, R2)


def _rows() -> list[Row]:
    rows: list[Row] = []

    def add(
        service: str,
        target: str,
        client: str,
        proto: str,
        fate: Fate,
        ipvs: Fate | None = None,
        masquerade_all: bool = False,
    ) -> None:
        rows.append(Row(service, target, client, proto, fate, ipvs, masquerade_all))

    # cluster: both policies Cluster. A ClusterIP masquerades what comes from outside
    # the cluster's pod CIDR and a hairpin; external frontends masquerade everything.
    for target in ("clusterIP",):
        add("cluster", target, "pod", "TCP", serve(*ALL3, masq=False))
        add("cluster", target, "pod", "UDP", serve(*ALL3, masq=False))
        add("cluster", target, "remote-pod", "TCP", serve(*ALL3, masq=False))
        add("cluster", target, "ext", "TCP", serve(*ALL3, masq=True))
        add("cluster", target, "ext", "UDP", serve(*ALL3, masq=True))
        add("cluster", target, "self", "TCP", serve(*ALL3, masq=HAIRPIN))
    for target in ("nodePort", "externalIP", "lbIP"):
        for client in ("ext", "pod", "remote-pod"):
            add("cluster", target, client, "TCP", serve(*ALL3, masq=True))
        add("cluster", target, "ext", "UDP", serve(*ALL3, masq=True))
        add("cluster", target, "self", "TCP", serve(*ALL3, masq=True))

    # etp-local: outsiders reach this node's endpoint with their address kept; pods (the
    # cluster's pod CIDR: kube-proxy's default detect-local mode) are short-circuited
    # to the ClusterIP's endpoints, unmasqueraded.
    add("etp-local", "clusterIP", "pod", "TCP", serve(*ALL3, masq=False))
    add("etp-local", "clusterIP", "ext", "TCP", serve(*ALL3, masq=True))
    add("etp-local", "clusterIP", "self", "TCP", serve(*ALL3, masq=HAIRPIN))
    for target in ("nodePort", "externalIP", "lbIP"):
        add("etp-local", target, "ext", "TCP", serve(L1, masq=False))
        add("etp-local", target, "ext", "UDP", serve(L1, masq=False))
        for client in ("pod", "remote-pod"):
            for proto in ("TCP", "UDP"):
                add(
                    "etp-local",
                    target,
                    client,
                    proto,
                    serve(*ALL3, masq=False),
                    ipvs=serve(L1, masq=False),
                )
        add(
            "etp-local",
            target,
            "self",
            "TCP",
            serve(*ALL3, masq=HAIRPIN),
            ipvs=serve(L1, masq=HAIRPIN),
        )

    # etp-local-remote: no endpoint here: outsiders dropped (not rejected); pods still
    # short-circuited to the ClusterIP's endpoints.
    add("etp-local-remote", "clusterIP", "pod", "TCP", serve(R1, R2, masq=False))
    add("etp-local-remote", "clusterIP", "ext", "UDP", serve(R1, R2, masq=True))
    for target in ("nodePort", "externalIP", "lbIP"):
        for proto in ("TCP", "UDP"):
            add("etp-local-remote", target, "ext", proto, NO_LOCAL)
            add("etp-local-remote", target, "pod", proto, serve(R1, R2, masq=False), ipvs=NO_LOCAL)
        add(
            "etp-local-remote",
            target,
            "remote-pod",
            "TCP",
            serve(R1, R2, masq=False),
            ipvs=NO_LOCAL,
        )

    # itp-local: the ClusterIP reaches this node's endpoints only, from any source;
    # external frontends (Cluster) every endpoint.
    for client, masq in (("pod", False), ("remote-pod", False), ("ext", True)):
        for proto in ("TCP", "UDP"):
            add("itp-local", "clusterIP", client, proto, serve(L1, masq=masq))
    add("itp-local", "clusterIP", "self", "TCP", serve(L1, masq=HAIRPIN))
    for target in ("nodePort", "externalIP", "lbIP"):
        add("itp-local", target, "ext", "TCP", serve(L1, R1, masq=True))
        add("itp-local", target, "pod", "TCP", serve(L1, R1, masq=True))

    # itp-local-remote: no endpoint here: the ClusterIP drops; external frontends serve.
    for client in ("pod", "remote-pod", "ext"):
        for proto in ("TCP", "UDP"):
            add("itp-local-remote", "clusterIP", client, proto, NO_LOCAL)
    for target in ("nodePort", "externalIP", "lbIP"):
        add("itp-local-remote", target, "ext", "TCP", serve(R1, masq=True))
        add("itp-local-remote", target, "pod", "UDP", serve(R1, masq=True))

    # local-terminating: no ready endpoint here, a serving terminating one: outsiders
    # reach it (kube-proxy's per-policy fallback), though node-b has a ready one.
    add("local-terminating", "clusterIP", "pod", "TCP", serve(R1, masq=False))
    add("local-terminating", "clusterIP", "ext", "TCP", serve(R1, masq=True))
    for target in ("nodePort", "externalIP", "lbIP"):
        for proto in ("TCP", "UDP"):
            add("local-terminating", target, "ext", proto, serve(LT, masq=False))
        add(
            "local-terminating",
            target,
            "pod",
            "TCP",
            serve(R1, masq=False),
            ipvs=serve(LT, masq=False),
        )

    # terminating-only: no ready endpoint anywhere: the serving terminating ones, never
    # the one that stopped serving.
    for target in ("clusterIP", "nodePort", "externalIP", "lbIP"):
        masq = target != "clusterIP"
        add("terminating-only", target, "pod", "TCP", serve(LT, RT2, masq=masq))
        add("terminating-only", target, "ext", "UDP", serve(LT, RT2, masq=True))

    # empty: no endpoint at all: rejected, on every frontend, both protocols.
    for target in ("clusterIP", "nodePort", "externalIP", "lbIP"):
        for client in ("pod", "ext"):
            for proto in ("TCP", "UDP"):
                add("empty", target, client, proto, REJECT)

    # ranges: only the LB IP is guarded; pods outside the ranges are dropped there too.
    add("ranges", "lbIP", "ext", "TCP", serve(L1, R1, masq=True))
    add("ranges", "lbIP", "ext", "UDP", serve(L1, R1, masq=True))
    for client in ("ext-denied", "pod", "remote-pod", "self"):
        for proto in ("TCP", "UDP"):
            add("ranges", "lbIP", client, proto, DENIED)
    for target in ("nodePort", "externalIP"):
        add("ranges", target, "ext-denied", "TCP", serve(L1, R1, masq=True))
        add("ranges", target, "ext-denied", "UDP", serve(L1, R1, masq=True))
    add("ranges", "clusterIP", "ext-denied", "TCP", serve(L1, R1, masq=True))
    add("ranges", "clusterIP", "pod", "TCP", serve(L1, R1, masq=False))

    # ranges-local: the range is checked first; inside it, the Local policy applies.
    add("ranges-local", "lbIP", "ext", "TCP", serve(L1, masq=False))
    add("ranges-local", "lbIP", "ext-denied", "TCP", DENIED)
    add("ranges-local", "lbIP", "pod", "TCP", DENIED)
    add("ranges-local", "nodePort", "ext-denied", "TCP", serve(L1, masq=False))

    # topology: every ready endpoint hinted, some for this zone: only those (Cluster
    # policies); topology-partial: one unhinted: hints ignored.
    for target in ("clusterIP", "nodePort", "lbIP"):
        masq = target != "clusterIP"
        add("topology", target, "pod", "TCP", serve(L1, R1, masq=masq))
        add("topology", target, "ext", "UDP", serve(L1, R1, masq=True))
        add("topology-partial", target, "pod", "TCP", serve(*ALL3, masq=masq))
        add("topology-partial", target, "ext", "UDP", serve(*ALL3, masq=True))

    # same-node: every ready endpoint hinted for a node, one for this one: PreferSameNode
    # wins over the zone hints (kube-proxy 1.33's topologyModeFromHints).
    for target in ("clusterIP", "nodePort", "lbIP"):
        masq = target != "clusterIP"
        add("same-node", target, "pod", "TCP", serve(L1, masq=masq))
        add("same-node", target, "ext", "UDP", serve(L1, masq=True))

    # not-serving: a terminating endpoint that no longer serves is never chosen.
    for target in ("clusterIP", "nodePort", "externalIP", "lbIP"):
        add("not-serving", target, "ext", "TCP", serve(R1, masq=True))

    # both-local: each policy with its own local endpoint set.
    add("both-local", "clusterIP", "pod", "TCP", serve(L1, masq=False))
    add("both-local", "clusterIP", "ext", "UDP", serve(L1, masq=True))
    for target in ("nodePort", "externalIP", "lbIP"):
        add("both-local", target, "ext", "TCP", serve(L1, masq=False))
        # kube-proxy short-circuits pods to the Cluster-policy endpoints even when the
        # internal policy is Local too (the bpf mode through the Service port's hidden
        # frontend); the ipvs mode's one IPVS service per address has this node's only.
        for client, proto in (("pod", "TCP"), ("pod", "UDP"), ("remote-pod", "TCP")):
            add(
                "both-local",
                target,
                client,
                proto,
                serve(L1, R1, masq=False),
                ipvs=serve(L1, masq=False),
            )
        add(
            "both-local",
            target,
            "self",
            "TCP",
            serve(L1, R1, masq=HAIRPIN),
            ipvs=serve(L1, masq=HAIRPIN),
        )

    # Not a Service's port (kube-proxy nftables' cluster-ips-check): a ClusterIP's other
    # ports are rejected, an unallocated address of the service CIDR dropped; other
    # addresses (an externalIP's other port) are no Service traffic. The ipvs mode
    # drops every VIP's other ports (the dummy device makes them local: Kubernetes
    # #72236, as issue 15 asked) and leaves unallocated addresses to routing.
    for client in ("pod", "ext"):
        for proto in ("TCP", "UDP"):
            add(
                "cluster", "clusterIP-other-port", client, proto, REJECT, ipvs=drop("drop_vip_port")
            )
            add("cluster", "unallocated", client, proto, drop("drop_unallocated"), ipvs=PASS)
        add("cluster", "externalIP-other-port", client, "TCP", PASS, ipvs=drop("drop_vip_port"))
    add("empty", "clusterIP-other-port", "pod", "TCP", REJECT, ipvs=drop("drop_vip_port"))

    # masqueradeAll: the ClusterIP masquerades every source; NodePort, externalIP and LB
    # keep their traffic policy (Local still keeps the client's address).
    for client in ("pod", "remote-pod", "ext", "self"):
        for proto in ("TCP", "UDP"):
            add("cluster", "clusterIP", client, proto, serve(*ALL3, masq=True), masquerade_all=True)
    add("itp-local", "clusterIP", "pod", "TCP", serve(L1, masq=True), masquerade_all=True)
    for target in ("nodePort", "externalIP", "lbIP"):
        add("cluster", target, "ext", "TCP", serve(*ALL3, masq=True), masquerade_all=True)
        add("etp-local", target, "ext", "TCP", serve(L1, masq=False), masquerade_all=True)
        add("etp-local", target, "ext", "UDP", serve(L1, masq=False), masquerade_all=True)
        # the short-circuit goes through the ClusterIP but keeps the pod's address
        add(
            "etp-local",
            target,
            "pod",
            "TCP",
            serve(*ALL3, masq=False),
            ipvs=serve(L1, masq=False),
            masquerade_all=True,
        )
    return rows


ROWS = _rows()

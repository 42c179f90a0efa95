"""The typed, validated input model: what `config` produces and `plan` reads.

Everything here is frozen and already validated: addresses are ipaddress
objects, ports are ints in range, names are Kubernetes DNS labels. Stages after
`config` never see raw YAML.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

# The choices the node shares with the compiler are the contract's (one definition).
from bpfgen_runtime.contract import BPF_SCHEDULERS as BPF_SCHEDULERS
from bpfgen_runtime.contract import IPVS_SCHEDULERS as IPVS_SCHEDULERS
from bpfgen_runtime.contract import Mode as Mode
from bpfgen_runtime.contract import Scheduler as Scheduler


class Role(enum.Enum):
    UPLINK = "uplink"  # towards other nodes and external clients
    PODS = "pods"  # host side of pod veths
    NODE = "node"  # the node's own processes (bpf mode's cgroup hooks), not an interface role


class Hook(enum.Enum):
    """Where a role's ingress program runs. Egress is always tc."""

    TC = "tc"
    XDP = "xdp"


class Protocol(enum.Enum):
    TCP = "TCP"
    UDP = "UDP"


class ServiceType(enum.Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


#: datapath.selectionSeed when the node file gives none: the same on every node,
#: so every node sends one flow to the same backend (docs/datapath-bpf.md).
DEFAULT_SELECTION_SEED = 0x62706667  # b"bpfg"
DEFAULT_MAGLEV_TABLE_SIZE = 16381
#: bpf mode: the most backends one frontend selects among. bpfgen_svc_value.n_backends
#: and every Maglev slot are __u16 (2 bytes a slot keeps a 131071-slot table at 256 KiB);
#: a Service port with more ready endpoints is refused, not wrapped.
MAX_BACKENDS_PER_FRONTEND = 0xFFFF
#: datapath.cgroup when the node file gives none: the node's root cgroup (cgroup v2).
DEFAULT_CGROUP = "/sys/fs/cgroup"


@dataclass(frozen=True)
class Interface:
    name: str  # a device name, or a glob such as "veth*"
    role: Role
    hook: Hook


@dataclass(frozen=True)
class Timeouts:
    """Session idle timeouts, in seconds."""

    tcp_established: int
    tcp_transitory: int
    udp: int
    icmp: int
    tcp_time_wait: int = 120  # after both FINs, when the far side may hold TIME_WAIT
    tcp_close: int = 10  # after a RST


@dataclass(frozen=True)
class NodeConfig:
    source: str  # the file it came from, for messages
    name: str
    addresses: tuple[IPv4Address, ...]  # SNAT sources; also what NodePorts listen on
    pod_cidr: IPv4Network  # this node's pods
    cluster_pod_cidr: IPv4Network
    service_cidr: IPv4Network
    masquerade_all: bool
    node_port_range: tuple[int, int]  # cluster.nodePortRange, inclusive
    interfaces: tuple[Interface, ...]
    mode: Mode
    scheduler: Scheduler
    snat_port_range: tuple[int, int]  # inclusive
    max_sessions: int
    timeouts: Timeouts
    masquerade_mark: int  # skb->mark bit that asks egress to SNAT (KUBE-MARK-MASQ)
    icmp_echo: bool  # features.icmpEcho: translate ICMP echo (identifier as port)
    maglev_table_size: int = DEFAULT_MAGLEV_TABLE_SIZE  # datapath.maglevTableSize (bpf mode)
    selection_seed: int = DEFAULT_SELECTION_SEED  # datapath.selectionSeed (bpf mode)
    socket_lb: bool = False  # datapath.socketLB: cgroup programs for node processes (bpf mode)
    cgroup: str = DEFAULT_CGROUP  # datapath.cgroup: where they attach
    zone: str | None = None  # node.zone: its topology.kubernetes.io/zone, for topology hints


@dataclass(frozen=True)
class Backend:
    """One ready (or fallback serving) endpoint address for one service port."""

    address: IPv4Address
    port: int
    node_name: str | None
    local: bool  # node_name is this node


@dataclass(frozen=True)
class ServicePort:
    name: str  # "" when the port is unnamed
    protocol: Protocol
    port: int
    node_port: int | None
    backends: tuple[Backend, ...]  # sorted by (address, port); policy filtering is the plan's
    # Listed for this port but not selectable (not ready, or terminating while ready ones
    # exist), sorted as backends. The bpf mode keeps their existing sessions
    # (docs/datapath-bpf.md, "Existing flows keep their backend"); the ipvs mode ignores them.
    draining: tuple[Backend, ...] = ()
    # The serving terminating endpoints, sorted as backends: kube-proxy falls back to them
    # per set of endpoints, so a Local policy with no ready endpoint on this node takes
    # this node's serving terminating ones (`local_backends`).
    serving_terminating: tuple[Backend, ...] = ()
    # Topology-aware routing (EndpointSlice hints.forNodes, else hints.forZones): the
    # ready endpoints hinted for this node, or for its zone, when kube-proxy's rules let
    # hints be used; None otherwise.
    # Only the Cluster policy takes them (docs/datapath-bpf.md, "Topology").
    zone_backends: tuple[Backend, ...] | None = None
    # Addresses of the Service at which this port is not served: another Service took
    # address:port/protocol first (inputs/manifests.py `Manifests.resolve_claims`).
    shadowed: tuple[IPv4Address, ...] = ()

    def serves(self, address: IPv4Address) -> bool:
        """Is this port served at `address`, one of its Service's addresses?"""
        return address not in self.shadowed

    def local_backends(self, is_local: Callable[[Backend], bool]) -> tuple[Backend, ...]:
        """The backends under a Local traffic policy: this node's ready endpoints, else its
        serving terminating ones (kube-proxy's CategorizeEndpoints)."""
        ready = tuple(b for b in self.backends if is_local(b))
        return ready or tuple(b for b in self.serving_terminating if is_local(b))


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    source: str  # "file:line" of the Service document
    type: ServiceType
    cluster_ips: tuple[IPv4Address, ...]
    external_ips: tuple[IPv4Address, ...]
    load_balancer_ips: tuple[IPv4Address, ...]
    ports: tuple[ServicePort, ...]
    session_affinity_timeout: int | None  # seconds when sessionAffinity is ClientIP
    external_traffic_local: bool  # externalTrafficPolicy: Local
    internal_traffic_local: bool  # internalTrafficPolicy: Local
    # spec.loadBalancerSourceRanges, IPv4 only, masked: None when not restricted (no field,
    # or a range of /0); () when ranges were given but none is IPv4 (every IPv4 client
    # refused, docs/datapath.md "Source ranges").
    source_ranges: tuple[IPv4Network, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Skipped:
    """A Kubernetes object, or part of one, that bpfgen does not serve.

    `unsupported`: valid Kubernetes that bpfgen cannot serve yet (an IPv6 address, an
    SCTP port, a frontend another Service holds...), refused by `compile --strict`;
    otherwise not a proxy's to serve (ExternalName, headless, another proxy's).
    """

    source: str  # "file:line"
    object: str  # "Service default/web", "EndpointSlice default/web-abc12"
    part: str  # the field path within it, "" for the whole object
    reason: str
    unsupported: bool


@dataclass(frozen=True)
class Inputs:
    """Everything `compile` reads, validated, plus notices for what was skipped."""

    node: NodeConfig
    services: tuple[Service, ...]  # sorted by (namespace, name)
    notices: tuple[str, ...]  # one line each: ignored kinds, skipped headless services...
    sha256: str  # over the raw bytes of every input file, in argument order
    skipped: tuple[Skipped, ...] = ()  # in file and line order; each also a notice
    node_sha256: str = ""  # over the node file's raw bytes

    @property
    def hash_seed(self) -> int:
        """The SNAT port-probing hash seed (BPFGEN_HASH_SEED): the node file's digest, so
        that a change of Services keeps it: a build's load-time config then stays the
        same, and an image build's programs are not reloaded for an endpoint."""
        return int((self.node_sha256 or self.sha256)[:8], 16)

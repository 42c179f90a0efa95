"""Hypothesis strategies for bpfgen inputs, shared by every test suite.

- `valid_configs(...)`: a node file and a services manifest that `load_inputs`
  accepts, as text, with the numbers that went into them (`GeneratedConfig`);
  in the datapath modes asked for (`modes`: the bpf mode with either scheduler,
  the default included, ClientIP affinity, socketLB), and in one of three
  backend shapes (`BACKEND_SHAPES`), so single-backend frontends and nodes
  where no frontend has more than one backend are drawn, not left to chance.
- `config_of(node, objects)`: a `GeneratedConfig` of given documents (for
  `@example`s of a shape that once failed).
- `invalid_configs()`: (node_yaml, services_yaml, expected_substring): a valid
  config with one thing broken; the substring names where (it is part of the
  `InputError` text).
- `hostile_names()`: strings carrying C / Jinja / shell metacharacters, none of
  which may ever be accepted as a name.

Every address is inside 198.18.0.0/15 (RFC 2544, the test range of the design).
The layout: one /16 of that range holds the cluster pod CIDR, the other holds
the service CIDR, and the node, external and load-balancer addresses outside it.

Speed: the node file and the first few services are drawn value by value (so
Hypothesis shrinks them); further services and all endpoints come from a
`random.Random` seeded by one draw, and the text is written by a small emitter
(`to_yaml`), so thousands of services take well under a second.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from hypothesis import strategies as st

from bpfgen.model import BPF_SCHEDULERS, IPVS_SCHEDULERS

TEST_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
_HALVES = (ipaddress.IPv4Network("198.18.0.0/16"), ipaddress.IPv4Network("198.19.0.0/16"))

_NAMESPACES = ("default", "kube-system", "shop", "team-a", "monitoring")
_PORT_NAMES = ("http", "https", "grpc", "metrics", "dns", "admin", "db")
_UPLINKS = ("eth0", "ens3", "enp1s0", "bond0.100", "eno1")
_POD_DEVICES = ("veth*", "cali*", "lxc*", "cni0")
_OTHER_NODES = ("node-b", "node-c", "worker-7.example")
_KEEP_FIRST = 4  # services drawn value by value; the rest from the seeded Random
#: Endpoints per service: "any" number (0..max_endpoints, exactly one a quarter of the
#: time), exactly "one" ready endpoint (every frontend has one backend), "at-most-one"
#: (no frontend has more than one backend). With the random scheduler the last two
#: make every h % n an h % 1 in the specialized build (issue 13: clang dropped the hash
#: argument of a global function, the verifier refused the call).
BACKEND_SHAPES = ("any", "one", "at-most-one")
#: datapath.maglevTableSize when drawn: small primes (the default, 16381, makes each
#: table 32 KiB of .rodata or map entries and slows every build without changing code).
_MAGLEV_SIZES = (251, 1021)

# Metacharacters of C, Jinja, YAML and shells: none is allowed in any name bpfgen accepts.
HOSTILE_PIECES = (
    '"',
    "'",
    ";",
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    "{",
    "}",
    "*/",
    "/*",
    "//",
    "\n",
    "\r",
    "\t",
    " ",
    "\\",
    "#",
    "`",
    "$(",
    ")",
    "<",
    ">",
    "&",
    "|",
    "%",
    "!",
    "@",
    ":",
    "=",
    "\u00e9",
    "\u202e",
)


# ----------------------------------------------------------------------------- text


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # double-quoted, escapes valid in YAML too
    raise TypeError(f"cannot emit {type(value).__name__}")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_YAML11_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def _key_text(key: str) -> str:
    if _PLAIN_KEY.fullmatch(key) and key.lower() not in _YAML11_WORDS:
        return key
    return json.dumps(key)


def to_yaml(value: object) -> str:
    """Block-style YAML for dicts, lists, str, int, bool and None (fast, always quoted)."""
    lines: list[str] = []
    _emit(value, 0, lines)
    return "\n".join(lines) + "\n"


def _emit(value: object, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            lines.append(pad + "{}")
        for key, item in value.items():
            head = f"{pad}{_key_text(str(key))}:"
            if isinstance(item, dict) and item:
                lines.append(head)
                _emit(item, indent + 2, lines)
            elif isinstance(item, list) and item:
                lines.append(head)
                _emit(item, indent, lines)  # kubectl style: "- " at the key's indent
            else:
                lines.append(f"{head} {_flow(item)}")
    elif isinstance(value, list):
        if not value:
            lines.append(pad + "[]")
        for item in value:
            if isinstance(item, dict | list) and item:
                start = len(lines)
                _emit(item, indent + 2, lines)
                lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
            else:
                lines.append(f"{pad}- {_flow(item)}")
    else:
        lines.append(pad + _flow(value))


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{}" if not value else json.dumps(value)
    if isinstance(value, list):
        return "[]" if not value else json.dumps(value)
    return _scalar(value)


def _serialize(objects: list[dict[str, Any]], form: str) -> str:
    if form == "multidoc":
        return "".join("---\n" + to_yaml(obj) for obj in objects)
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
        "metadata": {"resourceVersion": ""},
    }
    if form == "json":
        return json.dumps(listing, indent=2) + "\n"
    return to_yaml(listing)


# ----------------------------------------------------------------------------- choosers


class _Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def boolean(self) -> bool: ...
    def choice(self, options: Sequence[Any]) -> Any: ...


@dataclass
class _DrawChooser:
    draw: Callable[[st.SearchStrategy[Any]], Any]

    def integer(self, low: int, high: int) -> int:
        return int(self.draw(st.integers(low, high)))

    def boolean(self) -> bool:
        return bool(self.draw(st.booleans()))

    def choice(self, options: Sequence[Any]) -> Any:
        return self.draw(st.sampled_from(options))


@dataclass
class _RandomChooser:
    rnd: random.Random

    def integer(self, low: int, high: int) -> int:
        return self.rnd.randint(low, high)

    def boolean(self) -> bool:
        return self.rnd.random() < 0.5

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.rnd.randrange(len(options))]


# ----------------------------------------------------------------------------- valid configs


@dataclass(frozen=True)
class GeneratedConfig:
    """A valid node file and manifest, and what is in them."""

    node_yaml: str
    services_yaml: str
    node: dict[str, Any]  # the node document
    objects: list[dict[str, Any]]  # the manifest objects, in order
    form: str  # "list", "multidoc" or "json"
    node_name: str
    service_cidr: str
    cluster_pod_cidr: str
    node_pod_cidr: str
    node_addresses: tuple[str, ...]
    node_port_range: tuple[int, int]
    snat_port_range: tuple[int, int]
    masquerade_all: bool
    n_services: int  # Services that load into the model
    n_skipped: int  # headless / ExternalName Services and other kinds (notices)
    n_ports: int  # service ports over all loaded services
    n_endpoints: int  # endpoint entries written, all slices
    n_backends: int  # backends the model has, over all service ports
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # "ns/name" -> facts
    mode: str = "ipvs"  # datapath.mode
    scheduler: str | None = None  # datapath.scheduler; None: the mode's default
    backend_shape: str = "any"  # one of BACKEND_SHAPES


class _Addresses:
    """Unique addresses from one /16, outside the service CIDR."""

    def __init__(
        self, rnd: random.Random, half: ipaddress.IPv4Network, service_cidr: ipaddress.IPv4Network
    ) -> None:
        self.rnd, self.half, self.service_cidr = rnd, half, service_cidr
        self.used: set[ipaddress.IPv4Address] = set()

    def take(self) -> str:
        while True:
            address = self.half[self.rnd.randrange(1, self.half.num_addresses - 1)]
            if address in self.service_cidr:  # move to the sibling of the service CIDR
                address = ipaddress.IPv4Address(int(address) ^ self.service_cidr.num_addresses)
            if address not in self.used and address not in self.service_cidr:
                self.used.add(address)
                return str(address)


def _subnet(parent: ipaddress.IPv4Network, prefix: int, index: int) -> ipaddress.IPv4Network:
    size = 1 << (32 - prefix)
    return ipaddress.IPv4Network((int(parent.network_address) + index * size, prefix))


def _duration(c: _Chooser, seconds: int) -> int | str:
    if c.boolean():
        return seconds
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return text or "0s"


@st.composite
def _config_parts(
    draw: st.DrawFn,
    min_services: int,
    max_services: int,
    max_endpoints: int,
    forms: Sequence[str],
    extras: bool,
    modes: Sequence[str],
) -> GeneratedConfig:
    c = _DrawChooser(draw)
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    n_services = draw(st.integers(min_services, max_services))
    mode = c.choice(modes) if len(modes) > 1 else modes[0]
    backend_shape = c.choice(BACKEND_SHAPES)

    # Address plan.
    pods_half, other_half = _HALVES if c.boolean() else _HALVES[::-1]
    pod_prefix = c.integer(16, 20)
    cluster_pods = _subnet(pods_half, pod_prefix, c.integer(0, (1 << (pod_prefix - 16)) - 1))
    node_prefix = c.integer(max(pod_prefix, 22), 26)
    node_pods = _subnet(
        cluster_pods, node_prefix, c.integer(0, (1 << (node_prefix - pod_prefix)) - 1)
    )
    most_specific = 24
    while most_specific > 17 and (1 << (32 - most_specific)) - 2 < n_services + 2:
        most_specific -= 1
    service_prefix = c.integer(17, most_specific)
    service_cidr = _subnet(
        other_half, service_prefix, c.integer(0, (1 << (service_prefix - 16)) - 1)
    )
    outside = _Addresses(rnd, other_half, service_cidr)
    node_addresses = tuple(outside.take() for _ in range(c.integer(1, 3)))

    # Port plan: the NodePort range and the SNAT range, disjoint.
    node_lo = c.integer(1024, 50000)
    node_hi = min(65535, node_lo + c.integer(0, 12000))
    sides = []
    if node_lo - 1 >= 16:
        sides.append((1, node_lo - 1))
    if 65535 - node_hi >= 16:
        sides.append((node_hi + 1, 65535))
    side = c.choice(sides)
    snat_size = c.integer(16, side[1] - side[0] + 1)
    snat_lo = side[0] + c.integer(0, side[1] - side[0] + 1 - snat_size)
    snat_range = (snat_lo, snat_lo + snat_size - 1)
    node_ports = list(range(node_lo, node_hi + 1))
    rnd.shuffle(node_ports)

    node_name = c.choice(("node-a", "worker-1", "ip-198-18-0-2.example.internal"))
    masquerade_all = c.boolean()
    interfaces: list[dict[str, Any]] = [
        {"name": c.choice(_UPLINKS), "role": "uplink"},
        {"name": c.choice(_POD_DEVICES), "role": "pods"},
    ]
    if c.boolean():
        interfaces[0]["hook"] = c.choice(("tc", "xdp"))
    if c.boolean():
        interfaces[1]["hook"] = "tc"
    cluster: dict[str, Any] = {"podCIDR": str(cluster_pods), "serviceCIDR": str(service_cidr)}
    if masquerade_all or c.boolean():
        cluster["masqueradeAll"] = masquerade_all
    if (node_lo, node_hi) != (30000, 32767) or c.boolean():
        cluster["nodePortRange"] = c.choice(([node_lo, node_hi], f"{node_lo}-{node_hi}"))
    node: dict[str, Any] = {
        "apiVersion": "bpfgen/v1",
        "kind": "NodeConfig",
        "node": {"name": node_name, "addresses": list(node_addresses), "podCIDR": str(node_pods)},
        "cluster": cluster,
        "interfaces": interfaces,
    }
    scheduler = None
    if mode == "bpf":
        node["datapath"] = datapath = {"mode": "bpf"}
        if c.boolean():  # else the default, random
            datapath["scheduler"] = scheduler = c.choice(BPF_SCHEDULERS)
        if scheduler == "maglev":
            datapath["maglevTableSize"] = c.choice(_MAGLEV_SIZES)
        if c.boolean():
            datapath["socketLB"] = c.boolean()
        if c.boolean():
            datapath["selectionSeed"] = c.integer(0, 0xFFFFFFFF)
    elif c.boolean():
        scheduler = c.choice(IPVS_SCHEDULERS)
        node["datapath"] = {"mode": "ipvs", "scheduler": scheduler}
    snat: dict[str, Any] = {"portRange": c.choice((list(snat_range), f"{snat_lo}-{snat_range[1]}"))}
    if c.boolean():
        snat["maxSessions"] = c.integer(1, 1 << 24)
    if c.boolean():
        snat["timeouts"] = {
            key: _duration(c, c.integer(1, 7 * 86400))
            for key in ("tcpEstablished", "tcpTransitory", "udp", "icmp")
            if c.boolean()
        }
    if c.boolean():
        bit = 1 << c.integer(0, 31)
        snat["mark"] = c.choice((bit, hex(bit)))
    node["snat"] = snat
    if c.boolean():
        node["features"] = {"icmpEcho": c.boolean()}

    # Services, their EndpointSlices, and a few objects that are skipped with a notice.
    objects: list[dict[str, Any]] = []
    cluster_ip_offsets = rnd.sample(range(1, service_cidr.num_addresses - 1), n_services)
    facts: dict[str, dict[str, Any]] = {}
    counts = {"ports": 0, "endpoints": 0, "backends": 0}
    slow = _RandomChooser(rnd)
    for i in range(n_services):
        chooser: _Chooser = c if i < _KEEP_FIRST else slow
        _service(
            chooser,
            rnd,
            i,
            objects,
            facts,
            counts,
            cluster_ip=str(service_cidr[cluster_ip_offsets[i]]),
            node_name=node_name,
            node_ports=node_ports,
            outside=outside,
            cluster_pods=cluster_pods,
            max_endpoints=max_endpoints,
            backend_shape=backend_shape,
        )
    skipped = 0
    if extras and c.boolean():
        skipped = _extras(c, objects)
    if c.boolean():
        rnd.shuffle(objects)  # slices before their Service must work too
    form = c.choice(forms)
    return GeneratedConfig(
        node_yaml=to_yaml(node),
        services_yaml=_serialize(objects, form),
        node=node,
        objects=objects,
        form=form,
        node_name=node_name,
        service_cidr=str(service_cidr),
        cluster_pod_cidr=str(cluster_pods),
        node_pod_cidr=str(node_pods),
        node_addresses=node_addresses,
        node_port_range=(node_lo, node_hi),
        snat_port_range=snat_range,
        masquerade_all=masquerade_all,
        n_services=n_services,
        n_skipped=skipped,
        n_ports=counts["ports"],
        n_endpoints=counts["endpoints"],
        n_backends=counts["backends"],
        services=facts,
        mode=mode,
        scheduler=scheduler,
        backend_shape=backend_shape,
    )


def _service(
    c: _Chooser,
    rnd: random.Random,
    i: int,
    objects: list[dict[str, Any]],
    facts: dict[str, dict[str, Any]],
    counts: dict[str, int],
    *,
    cluster_ip: str,
    node_name: str,
    node_ports: list[int],
    outside: _Addresses,
    cluster_pods: ipaddress.IPv4Network,
    max_endpoints: int,
    backend_shape: str = "any",
) -> None:
    namespace = c.choice(_NAMESPACES)
    name = f"svc-{i}"
    n_ports = c.integer(1, 3)
    kind = c.choice(("ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"))
    if kind != "ClusterIP" and len(node_ports) < n_ports:
        kind = "ClusterIP"  # the NodePort range is used up
    allocate = kind != "LoadBalancer" or c.integer(0, 3) > 0
    ports: list[dict[str, Any]] = []
    taken: set[tuple[int, str]] = set()
    for j in range(n_ports):
        protocol = c.choice(("TCP", "TCP", "UDP"))
        number = c.integer(1, 65535)
        while (number, protocol) in taken:
            number = number % 65535 + 1
        taken.add((number, protocol))
        port: dict[str, Any] = {
            "port": number,
            "protocol": protocol,
            "targetPort": c.integer(1, 65535),
        }
        if n_ports > 1 or c.boolean():
            port["name"] = f"{c.choice(_PORT_NAMES)}-{j}"
        if kind != "ClusterIP" and allocate:
            port["nodePort"] = node_ports.pop()
        ports.append(port)
    spec: dict[str, Any] = {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports}
    if kind != "ClusterIP" or c.boolean():
        spec["type"] = kind
    if kind == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = allocate
    if c.integer(0, 3) == 0:
        spec["externalIPs"] = [outside.take() for _ in range(c.integer(1, 2))]
    affinity = None
    if c.boolean():
        spec["sessionAffinity"] = c.choice(("None", "ClientIP"))
        if spec["sessionAffinity"] == "ClientIP":
            affinity = 10800
            if c.boolean():
                affinity = c.integer(1, 86400)
                spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity}}
    external_local = internal_local = False
    if kind != "ClusterIP" and c.boolean():
        external_local = c.boolean()
        spec["externalTrafficPolicy"] = (
            "Local" if external_local else c.choice(("Cluster", "Global"))
        )
    if c.boolean():
        internal_local = c.boolean()
        spec["internalTrafficPolicy"] = "Local" if internal_local else "Cluster"
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"00000000-0000-4000-8000-{i:012d}",
            "resourceVersion": str(1000 + i),
            "labels": {"app": name},
        },
        "spec": spec,
    }
    if kind == "LoadBalancer":
        service["status"] = {"loadBalancer": {"ingress": [{"ip": outside.take()}]}}
    objects.append(service)

    # Endpoints: unique pod addresses, readiness mixed, in one or two slices.
    if backend_shape == "one":
        n_endpoints = 1
    elif backend_shape == "at-most-one":
        n_endpoints = c.integer(0, 1)
    else:
        n_endpoints = 1 if c.integer(0, 3) == 0 else c.integer(0, max_endpoints)
    n_endpoints = min(n_endpoints, max_endpoints)
    offsets = rnd.sample(range(1, cluster_pods.num_addresses - 1), n_endpoints)
    endpoints = []
    ready = fallback = 0
    for offset in offsets:
        endpoint: dict[str, Any] = {"addresses": [str(cluster_pods[offset])]}
        conditions: dict[str, Any] = {}
        is_ready = backend_shape == "one" or rnd.random() < 0.7
        serving, terminating = is_ready, False
        if not is_ready or rnd.random() < 0.8:  # absent means ready
            conditions["ready"] = is_ready
        if not is_ready and rnd.random() < 0.5:
            serving = terminating = True
        if serving != is_ready or rnd.random() < 0.5:
            conditions["serving"] = serving
        if terminating or rnd.random() < 0.5:
            conditions["terminating"] = terminating
        endpoint["conditions"] = conditions
        where = rnd.random()
        if where < 0.4:
            endpoint["nodeName"] = node_name
        elif where < 0.9:
            endpoint["nodeName"] = _OTHER_NODES[rnd.randrange(len(_OTHER_NODES))]
        endpoints.append(endpoint)
        ready += is_ready
        fallback += serving and terminating
    slice_ports = [
        {"name": p.get("name", ""), "port": p["targetPort"], "protocol": p["protocol"]}
        for p in ports
    ]
    parts = [endpoints]
    if len(endpoints) > 1 and rnd.random() < 0.3:
        cut = rnd.randrange(1, len(endpoints))
        parts = [endpoints[:cut], endpoints[cut:]]
    for k, part in enumerate(parts):
        objects.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-{k}x{i % 997}",
                    "namespace": namespace,
                    "labels": {
                        "kubernetes.io/service-name": name,
                        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                    },
                },
                "addressType": "IPv4",
                "ports": slice_ports,
                "endpoints": part,
            }
        )
    backends = ready if ready else fallback
    counts["ports"] += n_ports
    counts["endpoints"] += n_endpoints
    counts["backends"] += backends * n_ports
    facts[f"{namespace}/{name}"] = {
        "type": kind,
        "cluster_ip": cluster_ip,
        "ports": n_ports,
        "backends": backends,
        "affinity": affinity,
        "external_local": external_local,
        "internal_local": internal_local,
    }


def _extras(c: _Chooser, objects: list[dict[str, Any]]) -> int:
    """Objects that load as notices: a headless and an ExternalName Service, a ConfigMap."""
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]},
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "external", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"},
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
            "data": {"config.conf": "mode: ipvs\n"},
        }
    )
    return 3


def valid_configs(
    *,
    min_services: int = 0,
    max_services: int = 20,
    max_endpoints: int = 64,
    forms: Sequence[str] = ("list", "multidoc", "json"),
    extras: bool = True,
    modes: Sequence[str] = ("ipvs",),
) -> st.SearchStrategy[GeneratedConfig]:
    """Valid (node file, manifest) pairs; see `GeneratedConfig` for what comes with them.

    modes: the datapath modes drawn ("ipvs", "bpf"); the bpf mode draws its scheduler
    (or leaves the default), maglevTableSize, socketLB and selectionSeed."""
    return _config_parts(
        min_services, max_services, max_endpoints, tuple(forms), extras, tuple(modes)
    )


def config_of(node: dict[str, Any], objects: list[dict[str, Any]]) -> GeneratedConfig:
    """A `GeneratedConfig` of the given node document and manifest objects (a List), with
    what the property tests read of it; the counts are the documents' own (every listed
    endpoint taken as ready)."""
    services = [o for o in objects if o["kind"] == "Service"]
    slices = [o for o in objects if o["kind"] == "EndpointSlice"]
    cluster = node["cluster"]
    datapath = node.get("datapath", {})
    node_ports = cluster.get("nodePortRange", [30000, 32767])
    snat_ports = node["snat"]["portRange"]
    facts = {
        f"{s['metadata']['namespace']}/{s['metadata']['name']}": {
            "type": s["spec"].get("type", "ClusterIP"),
            "cluster_ip": s["spec"]["clusterIP"],
            "ports": len(s["spec"]["ports"]),
            "affinity": 10800 if s["spec"].get("sessionAffinity") == "ClientIP" else None,
        }
        for s in services
    }
    return GeneratedConfig(
        node_yaml=to_yaml(node),
        services_yaml=_serialize(objects, "list"),
        node=node,
        objects=objects,
        form="list",
        node_name=node["node"]["name"],
        service_cidr=cluster["serviceCIDR"],
        cluster_pod_cidr=cluster["podCIDR"],
        node_pod_cidr=node["node"]["podCIDR"],
        node_addresses=tuple(node["node"]["addresses"]),
        node_port_range=(node_ports[0], node_ports[1]),
        snat_port_range=(snat_ports[0], snat_ports[1]),
        masquerade_all=bool(cluster.get("masqueradeAll", False)),
        n_services=len(services),
        n_skipped=0,
        n_ports=sum(len(s["spec"]["ports"]) for s in services),
        n_endpoints=sum(len(s["endpoints"]) for s in slices),
        n_backends=sum(len(s["endpoints"]) * len(s["ports"]) for s in slices),
        services=facts,
        mode=datapath.get("mode", "ipvs"),
        scheduler=datapath.get("scheduler"),
    )


# ----------------------------------------------------------------------------- invalid configs


@st.composite
def hostile_names(draw: st.DrawFn) -> str:
    """A string with at least one metacharacter no bpfgen name may contain."""
    plain = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", max_size=8)
    pieces = draw(st.lists(st.sampled_from(HOSTILE_PIECES), min_size=1, max_size=3))
    words = [draw(plain) for _ in range(len(pieces) + 1)]
    return words[0] + "".join(p + w for p, w in zip(pieces, words[1:], strict=True))


def _services(cfg: GeneratedConfig) -> list[tuple[int, dict[str, Any]]]:
    return [
        (i, o)
        for i, o in enumerate(cfg.objects)
        if o["kind"] == "Service"
        and o["spec"].get("clusterIP") != "None"
        and o["spec"].get("type") != "ExternalName"
    ]


def _slices(cfg: GeneratedConfig) -> list[tuple[int, dict[str, Any]]]:
    return [(i, o) for i, o in enumerate(cfg.objects) if o["kind"] == "EndpointSlice"]


def _key(obj: dict[str, Any]) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _where(cfg: GeneratedConfig, index: int) -> str:
    return f"document {index + 1}" if cfg.form == "multidoc" else f"items[{index}]"


Mutation = Callable[[st.DrawFn, GeneratedConfig, dict[str, Any], list[dict[str, Any]]], str]


def _m_snat_port(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    bad = draw(st.sampled_from((0, 65536, 70000, -1)))
    node["snat"]["portRange"] = [cfg.snat_port_range[0], bad]
    return f"snat.portRange[1]: {bad} is not a port (1-65535)"


def _m_unknown_key(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    section = draw(st.sampled_from(("node", "cluster", "snat")))
    node[section]["prot"] = 6
    return f"{section}: unknown field 'prot'"


def _m_bad_cidr(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    bad = draw(st.sampled_from(("198.18.0.0/33", "198.18.0.0", "198.18.0/16", "cidr", "")))
    node["cluster"]["serviceCIDR"] = bad
    return "cluster.serviceCIDR: "


def _m_host_bits(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    network = ipaddress.IPv4Network(cfg.node_pod_cidr)
    node["node"]["podCIDR"] = f"{network.network_address + 1}/{network.prefixlen}"
    return "node.podCIDR: "


def _m_mark(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    node["snat"]["mark"] = draw(st.sampled_from((3, 0, 0x4001, "0x6000", 1 << 32)))
    return "snat.mark: "


def _m_duration(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    node["snat"].setdefault("timeouts", {})["udp"] = draw(
        st.sampled_from(("soon", "0s", "8d", 0, 10**9, "1.5h", True))
    )
    return "snat.timeouts.udp: "


def _m_bpf(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    node["datapath"] = {"mode": "bpf", "scheduler": "rr"}
    return "datapath.scheduler: 'rr' is not a bpf scheduler"


def _m_interface_name(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    node["interfaces"][1]["name"] = draw(hostile_names())
    return "interfaces[1].name: "


def _m_node_name(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    node["node"]["name"] = draw(hostile_names())
    return "node.name: "


def _pick_service(draw: st.DrawFn, cfg: GeneratedConfig) -> tuple[int, dict[str, Any]]:
    picked: tuple[int, dict[str, Any]] = draw(st.sampled_from(_services(cfg)))
    return picked


def _m_sctp(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    j = draw(st.integers(0, len(service["spec"]["ports"]) - 1))
    objects[index]["spec"]["ports"][j]["protocol"] = "SCTP"
    return f"Service {_key(service)}: spec.ports[{j}].protocol: SCTP is not supported (TCP, UDP)"


def _m_service_port(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    j = draw(st.integers(0, len(service["spec"]["ports"]) - 1))
    bad = draw(st.sampled_from((0, 65536, "80", None, True)))
    objects[index]["spec"]["ports"][j]["port"] = bad
    if bad is None:
        return f"Service {_key(service)}: spec.ports[{j}]: missing required field 'port'"
    return f"Service {_key(service)}: spec.ports[{j}].port: "


def _m_service_name(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, _ = _pick_service(draw, cfg)
    field_name = draw(st.sampled_from(("name", "namespace")))
    objects[index]["metadata"][field_name] = draw(hostile_names())
    return f"Service ({_where(cfg, index)}): metadata.{field_name}: "


def _m_port_name(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    j = draw(st.integers(0, len(service["spec"]["ports"]) - 1))
    objects[index]["spec"]["ports"][j]["name"] = draw(hostile_names())
    return f"Service {_key(service)}: spec.ports[{j}].name: "


def _m_cluster_ip(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    outside = str(ipaddress.IPv4Network(cfg.cluster_pod_cidr)[1])
    objects[index]["spec"]["clusterIP"] = outside
    objects[index]["spec"]["clusterIPs"] = [outside]
    return f"Service {_key(service)}: spec.clusterIPs[0]: {outside} is outside cluster.serviceCIDR"


def _m_ipv6_only(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    objects[index]["spec"]["clusterIP"] = "2001:db8::10"
    objects[index]["spec"]["clusterIPs"] = ["2001:db8::10"]
    return f"Service {_key(service)}: spec.clusterIPs: IPv6-only services are not supported yet"


def _m_duplicate(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = _pick_service(draw, cfg)
    objects.append(copy.deepcopy(service))
    return f"Service {_key(service)}: defined twice (first at "


def _node_port_services(cfg: GeneratedConfig) -> list[tuple[int, dict[str, Any]]]:
    return [(i, s) for i, s in _services(cfg) if "nodePort" in s["spec"]["ports"][0]]


def _m_node_port(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, service = draw(st.sampled_from(_node_port_services(cfg)))
    objects[index]["spec"]["ports"][0]["nodePort"] = cfg.snat_port_range[0]
    return (
        f"Service {_key(service)}: spec.ports[0].nodePort: {cfg.snat_port_range[0]} "
        "is outside cluster.nodePortRange"
    )


def _slices_with_endpoints(cfg: GeneratedConfig) -> list[tuple[int, dict[str, Any]]]:
    return [(i, s) for i, s in _slices(cfg) if s["endpoints"]]


def _m_endpoint_address(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, slice_ = draw(st.sampled_from(_slices_with_endpoints(cfg)))
    k = draw(st.integers(0, len(slice_["endpoints"]) - 1))
    bad = draw(st.sampled_from(("198.19.1.300", "2001:db8::1", "pod-a", "198.18.0.0/15", "")))
    objects[index]["endpoints"][k]["addresses"] = [bad]
    return f"EndpointSlice {_key(slice_)}: endpoints[{k}].addresses[0]: "


def _m_slice_label(
    draw: st.DrawFn, cfg: GeneratedConfig, node: dict[str, Any], objects: list[dict[str, Any]]
) -> str:
    index, slice_ = draw(st.sampled_from(_slices(cfg)))
    objects[index]["metadata"]["labels"]["kubernetes.io/service-name"] = draw(hostile_names())
    return f'EndpointSlice {_key(slice_)}: metadata.labels["kubernetes.io/service-name"]: '


_NODE_MUTATIONS: tuple[Mutation, ...] = (
    _m_snat_port,
    _m_unknown_key,
    _m_bad_cidr,
    _m_host_bits,
    _m_mark,
    _m_duration,
    _m_bpf,
    _m_interface_name,
    _m_node_name,
)
_SERVICE_MUTATIONS: tuple[Mutation, ...] = (
    _m_service_port,
    _m_service_name,
    _m_port_name,
    _m_duplicate,
)
# Valid Kubernetes that bpfgen does not serve: skipped, or a problem under --strict.
_UNSUPPORTED_MUTATIONS: tuple[Mutation, ...] = (_m_sctp, _m_cluster_ip, _m_ipv6_only)


@st.composite
def invalid_configs(
    draw: st.DrawFn, max_services: int = 6, max_endpoints: int = 8, strict: bool = False
) -> tuple[str, str, str]:
    """(node_yaml, services_yaml, expected substring of the InputError text).

    strict: also valid Kubernetes that bpfgen does not serve, which only `--strict`
    refuses (an SCTP port, a ClusterIP outside the serviceCIDR, an IPv6-only Service)."""
    cfg = draw(
        valid_configs(min_services=1, max_services=max_services, max_endpoints=max_endpoints)
    )
    mutations = list(_NODE_MUTATIONS + _SERVICE_MUTATIONS)
    if strict:
        mutations += _UNSUPPORTED_MUTATIONS
    if _node_port_services(cfg):
        mutations.append(_m_node_port)
    if _slices_with_endpoints(cfg):
        mutations.append(_m_endpoint_address)
    if _slices(cfg):
        mutations.append(_m_slice_label)
    mutation = draw(st.sampled_from(mutations))
    node = copy.deepcopy(cfg.node)
    objects = copy.deepcopy(cfg.objects)
    expected = mutation(draw, cfg, node, objects)
    return to_yaml(node), _serialize(objects, cfg.form), expected


# -- objects bpfgen does not serve, added to a valid config

#: What `unsupported_additions` adds, one kind per example.
UNSUPPORTED_KINDS = (
    "ipv6-only", "sctp-only", "other-service-cidr", "other-proxy", "external-conflict",
)  # fmt: skip


@dataclass(frozen=True)
class Addition:
    """Objects added to a valid config, each of which bpfgen skips (whole or in part)."""

    kind: str  # one of UNSUPPORTED_KINDS
    objects: tuple[dict[str, Any], ...]
    notice: str  # a substring of the notice that names the skip
    problem: str | None  # a substring of the problem under --strict (None: not refused)
    service: str  # "namespace/name" of the added Service
    served: bool  # the Service loads (served in part), not skipped whole


def unsupported_addition(cfg: GeneratedConfig, kind: str) -> Addition:
    """A Service (with its EndpointSlice) of `kind`, named to sort anywhere among the
    config's own, at a ClusterIP none of them has (offset 0 of the service CIDR)."""
    cidr = ipaddress.IPv4Network(cfg.service_cidr)
    cluster_ip = str(cidr[0])
    ports: list[dict[str, Any]] = [{"name": "a", "port": 7, "protocol": "TCP", "targetPort": 7}]
    spec: dict[str, Any] = {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports}
    meta: dict[str, Any] = {"name": "zz-added", "namespace": "default"}
    address_type, endpoint = "IPv4", "198.19.255.250"
    notice, problem, served = "", None, False
    if kind == "ipv6-only":
        spec["clusterIP"] = "2001:db8::7"
        spec["clusterIPs"] = ["2001:db8::7"]
        address_type, endpoint = "IPv6", "2001:db8:1::7"
        notice = "IPv6 only: not served yet (IPv4 only): Service skipped"
        problem = "IPv6-only services are not supported yet"
    elif kind == "sctp-only":
        ports[0]["protocol"] = "SCTP"
        notice = "SCTP is not served yet (TCP, UDP): port skipped"
        problem = "SCTP is not supported (TCP, UDP)"
    elif kind == "other-service-cidr":
        outside = str(ipaddress.IPv4Network(cfg.cluster_pod_cidr)[1])
        spec["clusterIP"] = outside
        spec["clusterIPs"] = [outside]
        notice = f"{outside} is outside cluster.serviceCIDR {cidr} (from another ServiceCIDR?)"
        problem = f"{outside} is outside cluster.serviceCIDR"
    elif kind == "other-proxy":
        meta["labels"] = {"service.kubernetes.io/service-proxy-name": "elsewhere"}
        notice = "labelled service.kubernetes.io/service-proxy-name"
    else:  # external-conflict: an externalIP at another Service's ClusterIP and port
        _, victim = _services(cfg)[0]
        port = victim["spec"]["ports"][0]
        ports[0].update(port=port["port"], protocol=port.get("protocol", "TCP"))
        spec["externalIPs"] = [victim["spec"]["clusterIP"]]
        taken = f"{victim['spec']['clusterIP']}:{port['port']}/{ports[0]['protocol']}"
        notice = f"{taken} is already taken by Service {_key(victim)} spec.ports[0]"
        problem = notice
        served = True
    service = {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "zz-added-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "zz-added", **meta.get("labels", {})},
        },
        "addressType": address_type,
        "ports": [{"name": "a", "port": 7, "protocol": ports[0]["protocol"]}],
        "endpoints": [{"addresses": [endpoint], "conditions": {"ready": True}}],
    }
    return Addition(kind, (service, slice_), notice, problem, "default/zz-added", served)


def with_objects(cfg: GeneratedConfig, extra: Sequence[dict[str, Any]]) -> str:
    """The config's manifest with `extra` objects appended, in the config's form."""
    return _serialize([*cfg.objects, *extra], cfg.form)

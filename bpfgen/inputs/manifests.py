"""Kubernetes manifests: Services and EndpointSlices, read leniently, joined to the model.

Objects come one document or List item at a time; other kinds are noticed and
skipped. Only the fields bpfgen uses are read, and those strictly. Services are
drafted as they come (frontends claimed, conflicts reported where they happen);
`finish` joins the EndpointSlices to the Service ports (`endpoints.backends_of`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

from bpfgen.inputs.endpoints import Slice, backends_of, read_endpoints, read_slice_ports
from bpfgen.inputs.fields import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    Run,
    Scope,
    describe,
    fields_of,
    is_null,
    quote,
    show_range,
)
from bpfgen.inputs.node_file import NodeFacts
from bpfgen.inputs.source import Map, Node, Scalar, Source
from bpfgen.maglev import recommended_size
from bpfgen.model import (
    MAX_BACKENDS_PER_FRONTEND,
    Mode,
    Protocol,
    Service,
    ServicePort,
    ServiceType,
)

_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_API_VERSION = re.compile(r"([a-z0-9][-a-z0-9.]{0,252}/)?[a-z0-9][-a-z0-9]{0,62}")
_SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_DEFAULT_AFFINITY_TIMEOUT = 10800
_MAX_AFFINITY_TIMEOUT = 86400
_SKIPPED_KINDS = "bpfgen reads Service and EndpointSlice"
# kube-proxy's informers list neither Services nor EndpointSlices with these labels
# (cmd/kube-proxy: a label selector "DoesNotExist" on each): another proxy's objects,
# and the endpoints of headless Services.
_NOT_PROXIED_LABELS = (
    ("service.kubernetes.io/service-proxy-name", "labelled service.kubernetes.io/"
     "service-proxy-name (another proxy serves it): skipped"),
    ("service.kubernetes.io/headless", "labelled service.kubernetes.io/headless "
     "(nothing to proxy): skipped"),
)  # fmt: skip
# metadata.creationTimestamp as the API server writes it (RFC 3339, UTC): the older of
# two Services that claim one external frontend keeps it (`Manifests.resolve_claims`).
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


@dataclass
class _PortDraft:
    name: str
    protocol: Protocol
    port: int
    node_port: int | None
    line: int
    index: int  # in spec.ports (skipped SCTP ports keep their places)


@dataclass
class _ServiceDraft:
    namespace: str
    name: str
    source: str
    type: ServiceType
    cluster_ips: tuple[IPv4Address, ...]
    external_ips: tuple[IPv4Address, ...]
    load_balancer_ips: tuple[IPv4Address, ...]
    ports: list[_PortDraft]
    session_affinity_timeout: int | None
    external_traffic_local: bool
    internal_traffic_local: bool
    source_ranges: tuple[IPv4Network, ...] | None
    scope: Scope  # where its problems go
    created: str | None  # metadata.creationTimestamp, when well-formed
    port_lines: list[int]  # line of each port's entry
    shadowed: list[list[IPv4Address]]  # per port: its addresses another Service holds

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Claim:
    """Who took a frontend first, for the conflict message."""

    service: str
    path: str
    source: str


_LIST_ITEM_KIND = {
    "ServiceList": ("Service", "v1"),
    "EndpointSliceList": ("EndpointSlice", "discovery.k8s.io/v1"),
}


class Manifests:
    def __init__(self, run: Run, facts: NodeFacts) -> None:
        self.run = run
        self.facts = facts
        self.services: list[_ServiceDraft] = []
        self.service_keys: dict[str, str] = {}  # every named Service seen -> "file:line"
        self.slices: list[tuple[Scope, int, str, Slice]] = []
        self.slice_keys: dict[str, str] = {}
        self.seen_objects: set[int] = set()  # id() of every object mapping read

    def read(self, index: int, source: Source) -> None:
        scope = Scope(self.run, index)
        for document in source.documents:
            if is_null(document.root):
                continue  # an empty document, e.g. between two `---`
            self.object(scope, document.root, f"document {document.index + 1}", None)

    def object(self, scope: Scope, node: Node, where: str, implied: tuple[str, str] | None) -> None:
        """One document or List item: dispatch on kind, notice what is skipped."""
        if not isinstance(node, Map):
            scope.error(
                node.line,
                where,
                f"{describe(node)} is not a Kubernetes object (a mapping with apiVersion and kind)",
            )
            return
        if id(node) in self.seen_objects:  # a YAML alias: Lists of aliased Lists would explode
            scope.error(node.line, where, "repeats an object through a YAML alias")
            return
        self.seen_objects.add(id(node))
        fields = scope.mapping(node, where)
        assert fields is not None
        kind, api = implied or (None, None)
        if "kind" in fields:
            kind = self.kind(scope, fields["kind"], where)
            if kind is None:
                return
        elif kind is None:
            scope.error(node.line, where, "missing required field 'kind'")
            return
        if "apiVersion" in fields:
            api = self.api_version(scope, fields["apiVersion"], where)
            if api is None:
                return
        if kind.endswith("List"):
            items = scope.sequence(fields["items"], f"{where}: items") if "items" in fields else ()
            for i, item in enumerate(items or ()):
                self.object(scope, item, f"items[{i}]", _LIST_ITEM_KIND.get(kind))
            return
        if api is None:
            scope.error(node.line, where, "missing required field 'apiVersion'")
            return
        if kind == "Service" and api == "v1":
            self.service(scope, node, fields, where)
        elif kind == "EndpointSlice" and api == "discovery.k8s.io/v1":
            self.endpoint_slice(scope, node, fields, where)
        elif kind == "EndpointSlice" and api.startswith("discovery.k8s.io/"):
            scope.error(
                fields["apiVersion"].line,
                f"{where}: apiVersion",
                f"{api} is not supported (discovery.k8s.io/v1)",
            )
        else:
            label = _object_label(fields)
            what = f"{kind} {label}" if label else f"{kind} ({where})"
            if kind in ("Service", "EndpointSlice"):
                what += f" of {api}"
            scope.notice(node.line, f"{what} ignored ({_SKIPPED_KINDS})")

    @staticmethod
    def kind(scope: Scope, node: Node, where: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str) and _KIND.fullmatch(node.value):
            return node.value
        scope.error(node.line, f"{where}: kind", f"{describe(node)} is not a Kubernetes kind")
        return None

    @staticmethod
    def api_version(scope: Scope, node: Node, where: str) -> str | None:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, str) and _API_VERSION.fullmatch(value):
            return value
        scope.error(
            node.line, f"{where}: apiVersion", f"{describe(node)} is not a Kubernetes API version"
        )
        return None

    # -- Service

    def service(self, file_scope: Scope, node: Node, fields: dict[str, Node], where: str) -> None:
        meta = fields_of(fields.get("metadata"))
        name, namespace = _valid_name(meta)
        key = f"{namespace}/{name}" if name and namespace else None
        s = file_scope.under(f"Service {key}" if key else f"Service ({where})")
        source = f"{s.file}:{node.line}"
        self.metadata(s, fields, node, DNS_LABEL, "a DNS-1123 label")
        if key is not None:
            if key in self.service_keys:
                s.error(node.line, "", f"defined twice (first at {self.service_keys[key]})")
                return
            self.service_keys[key] = source
        if not s.failed and self.not_proxied(s, meta, node.line):
            return
        spec = s.mapping(fields["spec"], "spec") if "spec" in fields else None
        if spec is None:
            if "spec" not in fields:
                s.error(node.line, "", "missing required field 'spec'")
            return
        type_text = "ClusterIP"
        if "type" in spec:
            choices = [t.value for t in ServiceType] + ["ExternalName"]
            found = s.choice(spec["type"], "spec.type", choices, "a Service type")
            if found is None:
                return
            type_text = found
        if type_text == "ExternalName":
            if key is not None and not s.failed:
                s.not_ours(node.line, "type ExternalName (a DNS name, nothing to proxy): skipped")
            return
        ip_nodes = self.cluster_ip_nodes(s, spec, fields["spec"])
        if ip_nodes is None:
            return
        if any(isinstance(n, Scalar) and n.value == "None" for _, n in ip_nodes[:1]):
            if key is not None and not s.failed:
                s.not_ours(node.line, "headless (clusterIP: None): skipped")
            return
        service_type = ServiceType(type_text)
        cluster_ips = self.cluster_ips(s, spec, ip_nodes)
        external_ips = self.external_ips(s, spec)
        lb_ips = (
            self.load_balancer_ips(s, fields, key)
            if (service_type is ServiceType.LOAD_BALANCER)
            else ()
        )
        affinity = self.affinity(s, spec)
        external_local = self.policy_local(s, spec, "externalTrafficPolicy")
        internal_local = self.policy_local(s, spec, "internalTrafficPolicy")
        ports = self.ports(s, spec, node, service_type)
        ranges = self.source_ranges(s, spec, service_type, key)
        if s.failed or s.dropped or key is None or name is None or namespace is None:
            return
        assert cluster_ips is not None and external_ips is not None and lb_ips is not None
        assert ports is not None
        if not ports:  # every port skipped (SCTP)
            s.unsupported(node.line, "", "", "no port bpfgen serves (TCP, UDP): skipped", True)
            return
        created = meta.get("creationTimestamp")
        draft = _ServiceDraft(
            namespace=namespace,
            name=name,
            source=source,
            type=service_type,
            cluster_ips=cluster_ips,
            external_ips=external_ips,
            load_balancer_ips=lb_ips,
            ports=[p for p, _ in ports],
            session_affinity_timeout=affinity,
            external_traffic_local=external_local,
            internal_traffic_local=internal_local,
            source_ranges=ranges,
            scope=s,
            created=created.value
            if isinstance(created, Scalar)
            and isinstance(created.value, str)
            and _TIMESTAMP.fullmatch(created.value)
            else None,
            port_lines=[line for _, line in ports],
            shadowed=[[] for _ in ports],
        )
        self.services.append(draft)

    @staticmethod
    def not_proxied(s: Scope, meta: Mapping[str, Node], line: int) -> bool:
        """Skip (with a notice) an object that kube-proxy's informers do not list."""
        labels = fields_of(meta.get("labels"))
        for label, reason in _NOT_PROXIED_LABELS:
            if label in labels:
                s.not_ours(line, reason)
                return True
        return False

    def metadata(
        self, s: Scope, fields: dict[str, Node], node: Node, pattern: re.Pattern[str], what: str
    ) -> None:
        """Report a missing or malformed metadata.name / metadata.namespace."""
        if "metadata" not in fields:
            s.error(node.line, "", "missing required field 'metadata'")
            return
        meta = s.mapping(fields["metadata"], "metadata")
        if meta is None:
            return
        if "name" not in meta:
            s.error(fields["metadata"].line, "metadata", "missing required field 'name'")
        else:
            s.name(meta["name"], "metadata.name", pattern, what)
        if "namespace" in meta:
            s.name(meta["namespace"], "metadata.namespace", DNS_LABEL, "a DNS-1123 label")

    def cluster_ip_nodes(
        self, s: Scope, spec: dict[str, Node], spec_node: Node
    ) -> list[tuple[str, Node]] | None:
        """The cluster IP entries with their paths: spec.clusterIPs, else spec.clusterIP."""
        if "clusterIPs" in spec:
            items = s.sequence(spec["clusterIPs"], "spec.clusterIPs")
            if items is None:
                return None
            entries = [(f"spec.clusterIPs[{i}]", item) for i, item in enumerate(items)]
            if "clusterIP" in spec and entries:
                single, first = spec["clusterIP"], entries[0][1]
                if not (
                    isinstance(single, Scalar)
                    and isinstance(first, Scalar)
                    and single.value == first.value
                ):
                    s.error(
                        single.line,
                        "spec.clusterIP",
                        f"{describe(single)} does not match spec.clusterIPs[0] {describe(first)}",
                    )
                    return None
        elif "clusterIP" in spec:
            entries = [("spec.clusterIP", spec["clusterIP"])]
        else:
            entries = []
        if not entries:
            line = spec["clusterIPs"].line if "clusterIPs" in spec else spec_node.line
            s.error(
                line,
                "spec.clusterIP",
                "no cluster IP allocated yet (use manifests read "
                "back from the cluster, e.g. kubectl get svc -o yaml)",
            )
            return None
        return entries

    def cluster_ips(
        self, s: Scope, spec: dict[str, Node], entries: list[tuple[str, Node]]
    ) -> tuple[IPv4Address, ...] | None:
        v4: list[IPv4Address] = []
        v6: list[tuple[str, Node, IPv6Address]] = []
        ok = True
        for path, item in entries:
            address = s.ip(item, path)
            if address is None:
                ok = False
            elif isinstance(address, IPv6Address):
                v6.append((path, item, address))
            elif self.facts.service_cidr is not None and address not in self.facts.service_cidr:
                # Valid with more than one ServiceCIDR (Kubernetes 1.31+, MultiCIDR
                # ServiceAllocator); the node file names one, which classifies traffic.
                cidr = self.facts.service_cidr
                s.unsupported(item.line, path,
                              f"{address} is outside cluster.serviceCIDR {cidr}",
                              f"{address} is outside cluster.serviceCIDR {cidr} (from another "
                              "ServiceCIDR?): Service skipped", whole=True)  # fmt: skip
                ok = ok and not s.failed
            elif address not in v4:
                v4.append(address)
        if not ok or s.dropped:
            return None
        if not v4 and v6:
            path = "spec.clusterIPs" if "clusterIPs" in spec else "spec.clusterIP"
            s.unsupported(entries[0][1].line, path,
                          "IPv6-only services are not supported yet (IPv4 only)",
                          "IPv6 only: not served yet (IPv4 only): Service skipped",
                          whole=True)  # fmt: skip
            return None
        for path, item, address in v6:  # dual-stack: served at its IPv4 addresses
            s.unsupported(item.line, path, "IPv6 is not supported yet (IPv4 only)",
                          f"{address} is IPv6: not served yet (IPv4 only)")  # fmt: skip
        if s.failed:
            return None
        return tuple(v4)

    def external_ips(self, s: Scope, spec: dict[str, Node]) -> tuple[IPv4Address, ...] | None:
        if "externalIPs" not in spec:
            return ()
        items = s.sequence(spec["externalIPs"], "spec.externalIPs")
        if items is None:
            return None
        result: list[IPv4Address] = []
        ok = True
        for i, item in enumerate(items):
            path = f"spec.externalIPs[{i}]"
            address = s.ip(item, path)
            if address is None:
                ok = False
            elif isinstance(address, IPv6Address):
                s.unsupported(item.line, path, "IPv6 is not supported yet (IPv4 only)",
                              f"{address} is IPv6: not served yet (IPv4 only)")  # fmt: skip
                ok = ok and not s.failed
            elif address not in result:
                result.append(address)
        return tuple(result) if ok else None

    def load_balancer_ips(
        self, s: Scope, fields: dict[str, Node], key: str | None
    ) -> tuple[IPv4Address, ...] | None:
        status = fields_of(fields.get("status"))
        balancer = fields_of(status.get("loadBalancer"))
        if "ingress" not in balancer:
            return ()
        path = "status.loadBalancer.ingress"
        items = s.sequence(balancer["ingress"], path)
        if items is None:
            return None
        result: list[IPv4Address] = []
        ok = True
        for i, item in enumerate(items):
            entry = s.mapping(item, f"{path}[{i}]")
            if entry is None:
                ok = False
                continue
            if "ip" not in entry:
                if key is not None:
                    s.notice(
                        item.line,
                        f"Service {key}: {path}[{i}] has no ip (only a hostname): not used",
                    )
                continue
            address = s.ip(entry["ip"], f"{path}[{i}].ip")
            mode = "VIP"
            if "ipMode" in entry:
                mode = s.choice(entry["ipMode"], f"{path}[{i}].ipMode", ("VIP", "Proxy"),
                                "an IP mode") or ""  # fmt: skip
                ok = ok and bool(mode)
            if address is None:
                ok = False
            elif mode == "Proxy":
                # KEP-1860: the load balancer proxies (it may also translate the family);
                # kube-proxy installs nothing for such an IP, so in-cluster clients reach
                # the load balancer itself, with its own policies and TLS.
                if key is not None:
                    s.notice(item.line, f"Service {key}: {path}[{i}].ip {address} has ipMode "
                             "Proxy: not captured (traffic to it goes to the load balancer, "
                             "as with kube-proxy)")  # fmt: skip
            elif isinstance(address, IPv6Address):
                s.unsupported(item.line, f"{path}[{i}].ip",
                              "IPv6 is not supported yet (IPv4 only)",
                              f"{address} is IPv6: not served yet (IPv4 only)")  # fmt: skip
                ok = ok and not s.failed
            elif address not in result:
                result.append(address)
        return tuple(result) if ok else None

    @staticmethod
    def source_ranges(
        s: Scope, spec: dict[str, Node], service_type: ServiceType, key: str | None
    ) -> tuple[IPv4Network, ...] | None:
        """spec.loadBalancerSourceRanges as kube-proxy reads it: each entry trimmed and
        parsed as a CIDR with host bits allowed (the API server's own parse), the other
        family's entries left out. None: no restriction (no ranges, or one of /0)."""
        path = "spec.loadBalancerSourceRanges"
        if "loadBalancerSourceRanges" not in spec:
            return None
        items = s.sequence(spec["loadBalancerSourceRanges"], path)
        if items is None or not items:
            return None
        if service_type is not ServiceType.LOAD_BALANCER:
            # The API server refuses the field on other types; a file that has it was
            # not read back from a cluster.
            s.error(items[0].line, path, "may only be used when spec.type is LoadBalancer")
            return None
        v4: list[IPv4Network] = []
        v6 = False
        for i, item in enumerate(items):
            text = s.string(item, f"{path}[{i}]")
            if text is None:
                continue
            try:
                net = ip_network(text.strip(), strict=False)
            except ValueError:
                s.error(item.line, f"{path}[{i}]", f"{text!r} is not a CIDR (address/prefix, "
                        "e.g. 198.18.0.0/15)")  # fmt: skip
                continue
            if isinstance(net, IPv6Network):
                v6 = True
            elif net.prefixlen == 0:
                return None  # 0.0.0.0/0: every IPv4 client, as with no ranges
            elif net not in v4:
                v4.append(net)
        if not v4 and v6 and key is not None and not s.failed:
            # kube-proxy's IPv4 proxier would see no range and filter nothing; refusing
            # every IPv4 client is what the Service's owner asked for (docs/datapath.md).
            s.notice(items[0].line, f"Service {key}: {path} lists IPv6 ranges only: every "
                     "IPv4 client of its LoadBalancer IPs is dropped")  # fmt: skip
        return tuple(sorted(v4, key=lambda n: (int(n.network_address), n.prefixlen)))

    @staticmethod
    def affinity(s: Scope, spec: dict[str, Node]) -> int | None:
        """The ClientIP affinity timeout, None without affinity (or when invalid)."""
        if "sessionAffinity" not in spec:
            return None
        found = s.choice(
            spec["sessionAffinity"],
            "spec.sessionAffinity",
            ("None", "ClientIP"),
            "a session affinity",
        )
        if found != "ClientIP":
            return None
        config = fields_of(fields_of(spec.get("sessionAffinityConfig")).get("clientIP"))
        if "timeoutSeconds" not in config:
            return _DEFAULT_AFFINITY_TIMEOUT
        return s.integer(
            config["timeoutSeconds"],
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            1,
            _MAX_AFFINITY_TIMEOUT,
        )

    @staticmethod
    def policy_local(s: Scope, spec: dict[str, Node], field: str) -> bool:
        """Whether externalTrafficPolicy / internalTrafficPolicy is Local."""
        if field not in spec:
            return False
        node = spec[field]
        if isinstance(node, Scalar) and node.value == "Global":  # the pre-1.14 name of Cluster
            return False
        return s.choice(node, f"spec.{field}", ("Cluster", "Local"), "a traffic policy") == "Local"

    def ports(
        self, s: Scope, spec: dict[str, Node], node: Node, service_type: ServiceType
    ) -> list[tuple[_PortDraft, int]] | None:
        if "ports" not in spec:
            s.error(node.line, "spec", "missing required field 'ports'")
            return None
        items = s.sequence(spec["ports"], "spec.ports")
        if items is None:
            return None
        if not items:
            s.error(spec["ports"].line, "spec.ports", "is empty (a Service needs a port)")
            return None
        allocate = True
        if "allocateLoadBalancerNodePorts" in spec:
            allocate = (
                s.boolean(
                    spec["allocateLoadBalancerNodePorts"], "spec.allocateLoadBalancerNodePorts"
                )
                is not False
            )
        result: list[tuple[_PortDraft, int]] = []
        names: dict[str, int] = {}
        numbers: dict[tuple[int, Protocol], int] = {}
        ok = True
        for i, item in enumerate(items):
            path = f"spec.ports[{i}]"
            fields = s.mapping(item, path)
            if fields is None:
                ok = False
                continue
            name: str | None = ""
            if "name" in fields:
                name = s.name(fields["name"], f"{path}.name", DNS_LABEL, "a port name", empty=True)
            if name == "" and len(items) > 1:
                s.error(
                    item.line,
                    path,
                    "missing required field 'name' (a Service with more than one port names each)",
                )
                name = None
            if name and name in names:
                s.error(
                    fields["name"].line,
                    f"{path}.name",
                    f"{quote(name)} is used twice (also spec.ports[{names[name]}])",
                )
                name = None
            elif name:
                names[name] = i
            sctp = (
                "protocol" in fields
                and isinstance(fields["protocol"], Scalar)
                and (fields["protocol"].value == "SCTP")
            )
            protocol = None if sctp else self.protocol(s, fields, f"{path}.protocol")
            port = None
            if "port" not in fields:
                s.error(item.line, path, "missing required field 'port'")
            else:
                port = s.port(fields["port"], f"{path}.port")
            if port is not None and protocol is not None:
                if (port, protocol) in numbers:
                    s.error(
                        fields["port"].line,
                        f"{path}.port",
                        f"{port}/{protocol.value} is "
                        f"listed twice (also spec.ports[{numbers[port, protocol]}])",
                    )
                    port = None
                else:
                    numbers[port, protocol] = i
            node_port_ok, node_port = self.node_port(s, fields, item, path, service_type, allocate)
            if sctp and name is not None and port is not None and node_port_ok:
                s.unsupported(fields["protocol"].line, f"{path}.protocol",
                              "SCTP is not supported (TCP, UDP)",
                              "SCTP is not served yet (TCP, UDP): port skipped")  # fmt: skip
                ok = ok and not s.failed
                continue
            if name is None or protocol is None or port is None or not node_port_ok:
                ok = False
                continue
            draft = _PortDraft(name, protocol, port, node_port, item.line, i)
            result.append((draft, item.line))
        return result if ok else None

    @staticmethod
    def protocol(s: Scope, fields: dict[str, Node], path: str) -> Protocol | None:
        if "protocol" not in fields:
            return Protocol.TCP
        node = fields["protocol"]
        found = s.choice(node, path, [p.value for p in Protocol], "a protocol")
        return Protocol(found) if found is not None else None

    def node_port(
        self,
        s: Scope,
        fields: dict[str, Node],
        item: Node,
        path: str,
        service_type: ServiceType,
        allocate: bool,
    ) -> tuple[bool, int | None]:
        """(valid, the nodePort or None): ClusterIP ports have none."""
        if service_type is ServiceType.CLUSTER_IP:
            return True, None  # the API server drops it; nothing listens on it
        if "nodePort" not in fields:
            if service_type is ServiceType.LOAD_BALANCER and not allocate:
                return True, None
            s.error(
                item.line,
                path,
                f"missing required field 'nodePort' "
                f"(type {service_type.value}; not allocated yet?)",
            )
            return False, None
        value = s.port(fields["nodePort"], f"{path}.nodePort")
        if value is None:
            return False, None
        limits = self.facts.node_port_range
        if limits is not None and not limits[0] <= value <= limits[1]:
            s.error(
                fields["nodePort"].line,
                f"{path}.nodePort",
                f"{value} is outside cluster.nodePortRange {show_range(limits)}",
            )
            return False, None
        return True, value

    def resolve_claims(self) -> None:
        """Give each frontend (address:port/protocol) and NodePort to one Service.

        The API server allocates a ClusterIP and a NodePort once, so two Services with
        one of them were not read back from one cluster: an error, reported at the one
        read later. It checks neither externalIPs nor LoadBalancer ingress IPs: two
        Services may list one, and kube-proxy then installs both and which one a packet
        meets is rule order (Kubernetes #69599). bpfgen decides, the same on every node
        and whatever order the objects come in: a ClusterIP keeps its frontend against
        any external address (an externalIP must not capture a ClusterIP's traffic,
        CVE-2020-8554), else the older Service (metadata.creationTimestamp), then the
        first by namespace/name. The other Service's port is not served at that address
        (`ServicePort.shadowed`), with a notice; `--strict` refuses it.
        """
        frontends: dict[tuple[IPv4Address, int, Protocol], _Claim] = {}
        node_ports: dict[tuple[int, Protocol], _Claim] = {}

        def claim_of(d: _ServiceDraft, port: _PortDraft) -> _Claim:
            return _Claim(d.key, f"spec.ports[{port.index}]", f"{d.scope.file}:{port.line}")

        def taken(what: str, first: _Claim) -> str:
            return (f"{what} is already taken by Service {first.service} {first.path} "
                    f"({first.source})")  # fmt: skip

        for d in self.services:  # in the order read
            for port in d.ports:
                claim = claim_of(d, port)
                proto = port.protocol.value
                for address in d.cluster_ips:
                    first = frontends.setdefault((address, port.port, port.protocol), claim)
                    if first.service != d.key:
                        d.scope.error(port.line, claim.path,
                                      taken(f"{address}:{port.port}/{proto}", first))  # fmt: skip
                if port.node_port is not None:
                    first = node_ports.setdefault((port.node_port, port.protocol), claim)
                    if first is not claim:
                        d.scope.error(port.line, f"{claim.path}.nodePort",
                                      taken(f"{port.node_port}/{proto}", first))  # fmt: skip
        older_first = sorted(self.services, key=lambda d: (d.created is None, d.created or "",
                                                           d.namespace, d.name))  # fmt: skip
        for d in older_first:
            for i, port in enumerate(d.ports):
                claim = claim_of(d, port)
                for address in dict.fromkeys((*d.external_ips, *d.load_balancer_ips)):
                    first = frontends.setdefault((address, port.port, port.protocol), claim)
                    if first.service != d.key:
                        what = taken(f"{address}:{port.port}/{port.protocol.value}", first)
                        d.scope.unsupported(port.line, claim.path, what,
                                            f"{what}: not served at {address}")  # fmt: skip
                        d.shadowed[i].append(address)

    # -- EndpointSlice

    def endpoint_slice(
        self, file_scope: Scope, node: Node, fields: dict[str, Node], where: str
    ) -> None:
        meta = fields_of(fields.get("metadata"))
        name, namespace = _valid_name(meta, DNS_SUBDOMAIN)
        key = f"{namespace}/{name}" if name and namespace else None
        s = file_scope.under(f"EndpointSlice {key}" if key else f"EndpointSlice ({where})")
        self.metadata(s, fields, node, DNS_SUBDOMAIN, "a DNS-1123 subdomain")
        if key is not None:
            if key in self.slice_keys:
                s.error(node.line, "", f"defined twice (first at {self.slice_keys[key]})")
                return
            self.slice_keys[key] = f"{s.file}:{node.line}"
        labels = s.mapping(meta["labels"], "metadata.labels") if "labels" in meta else {}
        if labels is None:
            return
        if not s.failed and self.not_proxied(s, meta, node.line):
            return
        if _SERVICE_NAME_LABEL not in labels:
            if key is not None and not s.failed:
                s.notice(
                    node.line, f"EndpointSlice {key} has no label {_SERVICE_NAME_LABEL}: skipped"
                )
            return
        service_name = s.name(
            labels[_SERVICE_NAME_LABEL],
            f'metadata.labels["{_SERVICE_NAME_LABEL}"]',
            DNS_LABEL,
            "a Service name",
        )
        if "addressType" not in fields:
            s.error(node.line, "", "missing required field 'addressType'")
            return
        address_type = s.choice(
            fields["addressType"], "addressType", ("IPv4", "IPv6", "FQDN"), "an address type"
        )
        if address_type is None:
            return
        if address_type == "FQDN":  # deprecated; no proxy reads it (kube-proxy neither)
            if key is not None and not s.failed:
                s.not_ours(node.line, "addressType FQDN (no proxy serves it): skipped")
            return
        if address_type == "IPv6":
            if key is not None and not s.failed:
                s.unsupported(node.line, "addressType", "IPv6 is not supported yet (IPv4 only)",
                              "IPv6: not served yet (IPv4 only): skipped", whole=True)  # fmt: skip
            return
        ports = read_slice_ports(s, fields)
        endpoints = read_endpoints(s, fields)
        if s.failed or key is None or service_name is None or namespace is None:
            return
        assert ports is not None and endpoints is not None
        service_key = f"{namespace}/{service_name}"
        self.slices.append((s, node.line, key, Slice(service_key, ports, endpoints)))

    # -- join

    def finish(self) -> list[Service]:
        self.resolve_claims()
        by_service: dict[str, list[Slice]] = {}
        for s, line, key, slice_ in self.slices:
            if slice_.service_key not in self.service_keys:
                s.notice(
                    line, f"EndpointSlice {key}: Service {slice_.service_key} not found: skipped"
                )
            by_service.setdefault(slice_.service_key, []).append(slice_)
        node_name = self.facts.name
        services = []
        for draft in self.services:
            slices = by_service.get(draft.key, [])
            ports = []
            for i, p in enumerate(draft.ports):
                backends, draining, fallback, zoned = backends_of(
                    p.name, p.protocol, slices, node_name, self.facts.zone
                )
                self.check_backend_count(draft.scope, p, f"spec.ports[{p.index}]", len(backends))
                ports.append(
                    ServicePort(
                        p.name, p.protocol, p.port, p.node_port, backends, draining, fallback,
                        zoned, tuple(draft.shadowed[i]),
                    )
                )  # fmt: skip
            services.append(
                Service(
                    namespace=draft.namespace,
                    name=draft.name,
                    source=draft.source,
                    type=draft.type,
                    cluster_ips=draft.cluster_ips,
                    external_ips=draft.external_ips,
                    load_balancer_ips=draft.load_balancer_ips,
                    ports=tuple(ports),
                    session_affinity_timeout=draft.session_affinity_timeout,
                    external_traffic_local=draft.external_traffic_local,
                    internal_traffic_local=draft.internal_traffic_local,
                    source_ranges=draft.source_ranges,
                )
            )
        return services

    def check_backend_count(self, s: Scope, port: _PortDraft, path: str, count: int) -> None:
        """bpf mode: a frontend selects among at most MAX_BACKENDS_PER_FRONTEND backends,
        and a Maglev table needs more slots than backends (docs/maglev.md "Choice of M")."""
        if self.facts.mode is not Mode.BPF:
            return  # IPVS schedules any number
        if count > MAX_BACKENDS_PER_FRONTEND:
            s.error(
                port.line,
                path,
                f"{count} ready endpoints are more than a bpf-mode "
                f"frontend selects among ({MAX_BACKENDS_PER_FRONTEND}; split the Service)",
            )
        elif self.facts.maglev_size is not None and count > self.facts.maglev_size:
            s.error(
                port.line,
                path,
                f"{count} ready endpoints are more than "
                f"datapath.maglevTableSize {self.facts.maglev_size} (Maglev needs a prime "
                f"well above the endpoint count, e.g. {recommended_size(count)})",
            )


def _valid_name(
    meta: Mapping[str, Node], pattern: re.Pattern[str] = DNS_LABEL
) -> tuple[str | None, str | None]:
    """metadata name and namespace when both are valid, without reporting anything."""

    def valid(node: Node | None, pattern: re.Pattern[str], default: str | None) -> str | None:
        if node is None or is_null(node):
            return default
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, str) and pattern.fullmatch(value) and len(value) <= 253:
            return value
        return None

    return valid(meta.get("name"), pattern, None), valid(
        meta.get("namespace"), DNS_LABEL, "default"
    )


def _object_label(fields: Mapping[str, Node]) -> str | None:
    """`namespace/name` or `name` of any object, for notices; None unless both are safe."""
    meta = fields_of(fields.get("metadata"))
    name_node, namespace_node = meta.get("name"), meta.get("namespace")
    name = name_node.value if isinstance(name_node, Scalar) else None
    if not (isinstance(name, str) and DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253):
        return None
    if namespace_node is None or is_null(namespace_node):
        return name
    namespace = namespace_node.value if isinstance(namespace_node, Scalar) else None
    if isinstance(namespace, str) and DNS_LABEL.fullmatch(namespace):
        return f"{namespace}/{name}"
    return None

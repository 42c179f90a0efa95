"""The node file (`kind: NodeConfig`): strictly read, checked, turned into `NodeConfig`.

Unknown keys are errors; every value is checked alone, then against the others
(SNAT range vs NodePort range, pod CIDRs, the mode's scheduler). The facts the
manifests are checked against (service CIDR, NodePort range, node name, mode)
come back beside the model as `NodeFacts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from bpfgen.inputs.fields import (
    DNS_SUBDOMAIN,
    Run,
    Scope,
    describe,
    fields_of,
    int_value,
    is_null,
    quote,
    ranges_overlap,
    show_range,
)
from bpfgen.inputs.source import Node, Scalar, Source
from bpfgen.maglev import is_prime
from bpfgen.model import (
    BPF_SCHEDULERS,
    DEFAULT_CGROUP,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_SELECTION_SEED,
    IPVS_SCHEDULERS,
    Hook,
    Interface,
    Mode,
    NodeConfig,
    Role,
    Scheduler,
    Timeouts,
)

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\*?")
_DURATION = re.compile(r"(?:[0-9]+[hms])+")
_DURATION_PART = re.compile(r"([0-9]+)([hms])")
_MARK = re.compile(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}")

_IFNAME_RULE = "1-15 of A-Z, a-z, 0-9, '-', '_' and '.', optionally ending in '*'"

_SECONDS = {"h": 3600, "m": 60, "s": 1}
_MAX_TIMEOUT = 7 * 86400
_MAX_SESSIONS = 1 << 24
_MIN_SNAT_PORTS = 16
_MAX_ADDRESSES = 8

# docs/datapath.md "The TCP session lifecycle": RFC 5382's floors for established
# (2 h 4 min) and transitory (4 min); tcpTimeWait and tcpClose as nf_conntrack's
# defaults (TIME_WAIT 120 s, CLOSE 10 s), which kube-proxy's nodes run today.
_DEFAULT_TIMEOUTS = {
    "tcpEstablished": 7440, "tcpTransitory": 240, "tcpTimeWait": 120, "tcpClose": 10,
    "udp": 300, "icmp": 60,
}  # fmt: skip
_DEFAULT_NODE_PORT_RANGE = (30000, 32767)
_DEFAULT_SNAT_PORT_RANGE = (20000, 29999)
_DEFAULT_MARK = 0x4000


@dataclass
class NodeFacts:
    """What the manifests are checked against; each None when invalid in the node file."""

    name: str | None = None
    service_cidr: IPv4Network | None = None
    node_port_range: tuple[int, int] | None = None
    mode: Mode | None = None
    maglev_size: int | None = None  # datapath.maglevTableSize when the scheduler is maglev
    zone: str | None = None  # node.zone, for EndpointSlice topology hints


_TOP = ("apiVersion", "kind", "node", "cluster", "interfaces", "datapath", "snat", "features")
_TOP_REQUIRED = ("apiVersion", "kind", "node", "cluster", "interfaces")
_NODE = ("name", "addresses", "podCIDR", "zone")
_NODE_REQUIRED = ("name", "addresses", "podCIDR")
_CLUSTER = ("podCIDR", "serviceCIDR", "masqueradeAll", "nodePortRange")
_CLUSTER_REQUIRED = ("podCIDR", "serviceCIDR")
_INTERFACE = ("name", "role", "hook")
INTERFACE_ROLES = [r.value for r in Role if r is not Role.NODE]
_DATAPATH = ("mode", "scheduler", "maglevTableSize", "selectionSeed", "socketLB", "cgroup")
_SNAT = ("portRange", "maxSessions", "timeouts", "mark")
_TIMEOUTS = tuple(_DEFAULT_TIMEOUTS)
_FEATURES = ("icmpEcho",)


class NodeReader:
    def __init__(self, run: Run, source: Source) -> None:
        self.source = source
        self.scope = Scope(run, 0)
        self.facts = NodeFacts()
        self.valid_addresses: list[tuple[str, int, IPv4Address]] = []  # for cross checks
        self.datapath_fields: dict[str, Node] | None = {}

    def read(self) -> tuple[NodeConfig | None, NodeFacts]:
        source, scope = self.source, self.scope
        if source.error is not None:
            return None, self.facts
        documents = [d for d in source.documents if not is_null(d.root)]
        if not documents:
            scope.error(1, "", "no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)")
            return None, self.facts
        for extra in documents[1:]:
            scope.error(extra.root.line, "", "a second document (a node file holds one NodeConfig)")
        node = self.node_config(documents[0].root)
        return (node if not scope.failed else None), self.facts

    def node_config(self, root: Node) -> NodeConfig | None:
        s = self.scope
        top = s.mapping(root, "", _TOP, _TOP_REQUIRED)
        if top is None:
            return None
        if "apiVersion" in top:
            api = top["apiVersion"]
            if not (isinstance(api, Scalar) and api.value == "bpfgen/v1"):
                s.error(api.line, "apiVersion", f"{describe(api)} is not bpfgen/v1")
        if "kind" in top:
            kind = top["kind"]
            if not (isinstance(kind, Scalar) and kind.value == "NodeConfig"):
                s.error(kind.line, "kind", f"{describe(kind)} is not NodeConfig")

        name, addresses, pod_cidr = self.node_section(top.get("node"))
        cluster = self.cluster_section(top.get("cluster"))
        interfaces = self.interfaces(top.get("interfaces"))
        mode, scheduler, maglev_size, selection_seed = self.datapath(top.get("datapath"))
        socket_lb, cgroup = self.socket_lb(mode)
        snat_range, max_sessions, timeouts, mark = self.snat(top.get("snat"))
        icmp_echo = self.features(top.get("features"))
        cluster_pod_cidr, service_cidr, masquerade_all, node_port_range = cluster

        self.cross_checks(top, pod_cidr, cluster_pod_cidr, service_cidr)
        maglev = maglev_size if mode is Mode.BPF and scheduler is Scheduler.MAGLEV else None
        self.facts = NodeFacts(name, service_cidr, node_port_range, mode, maglev, self.facts.zone)
        if snat_range is not None and node_port_range is not None:
            self.snat_overlap(top, snat_range, node_port_range)
        if (
            s.failed
            or name is None
            or addresses is None
            or pod_cidr is None
            or cluster_pod_cidr is None
            or service_cidr is None
            or masquerade_all is None
            or node_port_range is None
            or interfaces is None
            or mode is None
            or scheduler is None
            or maglev_size is None
            or selection_seed is None
            or snat_range is None
            or max_sessions is None
            or timeouts is None
            or mark is None
            or icmp_echo is None
            or socket_lb is None
            or cgroup is None
        ):
            return None
        return NodeConfig(
            source=self.source.file,
            name=name,
            addresses=addresses,
            pod_cidr=pod_cidr,
            cluster_pod_cidr=cluster_pod_cidr,
            service_cidr=service_cidr,
            masquerade_all=masquerade_all,
            node_port_range=node_port_range,
            interfaces=interfaces,
            mode=mode,
            scheduler=scheduler,
            snat_port_range=snat_range,
            max_sessions=max_sessions,
            timeouts=timeouts,
            masquerade_mark=mark,
            icmp_echo=icmp_echo,
            maglev_table_size=maglev_size,
            selection_seed=selection_seed,
            socket_lb=socket_lb,
            cgroup=cgroup,
            zone=self.facts.zone,
        )

    def node_section(
        self, node: Node | None
    ) -> tuple[str | None, tuple[IPv4Address, ...] | None, IPv4Network | None]:
        s = self.scope
        fields = s.mapping(node, "node", _NODE, _NODE_REQUIRED) if node is not None else None
        if fields is None:
            return None, None, None
        name = None
        if "name" in fields:
            name = s.name(fields["name"], "node.name", DNS_SUBDOMAIN, "a DNS-1123 subdomain")
        addresses = self.addresses(fields["addresses"]) if "addresses" in fields else None
        pod_cidr = s.cidr(fields["podCIDR"], "node.podCIDR") if "podCIDR" in fields else None
        if "zone" in fields:
            self.facts.zone = s.label_value(fields["zone"], "node.zone")
        return name, addresses, pod_cidr

    def addresses(self, node: Node) -> tuple[IPv4Address, ...] | None:
        s = self.scope
        items = s.sequence(node, "node.addresses")
        if items is None:
            return None
        if not 1 <= len(items) <= _MAX_ADDRESSES:
            s.error(
                node.line,
                "node.addresses",
                f"has {len(items)} addresses (1 to {_MAX_ADDRESSES} are needed)",
            )
            return None
        result: list[IPv4Address] = []
        ok = True
        for i, item in enumerate(items):
            path = f"node.addresses[{i}]"
            address = s.ipv4(item, path)
            if address is None:
                ok = False
            elif address in result:
                s.error(item.line, path, f"{address} is listed twice")
                ok = False
            else:
                result.append(address)
                self.valid_addresses.append((path, item.line, address))
        return tuple(result) if ok else None

    def cluster_section(
        self, node: Node | None
    ) -> tuple[IPv4Network | None, IPv4Network | None, bool | None, tuple[int, int] | None]:
        s = self.scope
        if node is None:
            return None, None, None, None
        fields = s.mapping(node, "cluster", _CLUSTER, _CLUSTER_REQUIRED)
        if fields is None:
            return None, None, None, None
        pod = s.cidr(fields["podCIDR"], "cluster.podCIDR") if "podCIDR" in fields else None
        svc = None
        if "serviceCIDR" in fields:
            svc = s.cidr(fields["serviceCIDR"], "cluster.serviceCIDR")
        masquerade: bool | None = False
        if "masqueradeAll" in fields:
            masquerade = s.boolean(fields["masqueradeAll"], "cluster.masqueradeAll")
        node_ports: tuple[int, int] | None = _DEFAULT_NODE_PORT_RANGE
        if "nodePortRange" in fields:
            node_ports = s.port_range(fields["nodePortRange"], "cluster.nodePortRange")
        return pod, svc, masquerade, node_ports

    def interfaces(self, node: Node | None) -> tuple[Interface, ...] | None:
        s = self.scope
        if node is None:
            return None
        items = s.sequence(node, "interfaces")
        if items is None:
            return None
        if not items:
            s.error(node.line, "interfaces", "is empty (one interface with role uplink is needed)")
            return None
        result: list[Interface] = []
        seen: dict[str, int] = {}
        ok = True
        for i, item in enumerate(items):
            path = f"interfaces[{i}]"
            fields = s.mapping(item, path, _INTERFACE, ("name", "role"))
            if fields is None:
                ok = False
                continue
            name = None
            if "name" in fields:
                name = self.ifname(fields["name"], f"{path}.name")
            if name is not None and name in seen:
                s.error(
                    fields["name"].line,
                    f"{path}.name",
                    f"{quote(name)} is listed twice (first at interfaces[{seen[name]}])",
                )
                name = None
            elif name is not None:
                seen[name] = i
            role = None
            if "role" in fields:
                text = s.choice(fields["role"], f"{path}.role", INTERFACE_ROLES, "a role")
                role = Role(text) if text is not None else None
            hook: Hook | None = Hook.TC
            if "hook" in fields:
                text = s.choice(fields["hook"], f"{path}.hook", [h.value for h in Hook], "a hook")
                hook = Hook(text) if text is not None else None
            if hook is Hook.XDP and role is Role.PODS:
                s.error(
                    fields["hook"].line,
                    f"{path}.hook",
                    "xdp is only allowed on the uplink (pod-facing interfaces use tc)",
                )
                hook = None
            if role is Role.UPLINK and name is not None and name.endswith("*"):
                s.error(
                    fields["name"].line,
                    f"{path}.name",
                    f"{quote(name)} is a pattern; the uplink must be one device",
                )
                name = None
            if name is None or role is None or hook is None:
                ok = False
                continue
            result.append(Interface(name, role, hook))
        if not ok:
            return None
        uplinks = sum(1 for i in result if i.role is Role.UPLINK)
        if uplinks != 1:
            have = "no interface has" if uplinks == 0 else f"{uplinks} interfaces have"
            s.error(node.line, "interfaces", f"{have} role uplink (exactly one is needed)")
            return None
        (uplink,) = [i.name for i in result if i.role is Role.UPLINK]
        for i, interface in enumerate(result):
            if interface.name.endswith("*") and uplink.startswith(interface.name[:-1]):
                s.error(
                    items[i].line,
                    f"interfaces[{i}].name",
                    f"{quote(interface.name)} also matches the uplink {uplink}",
                )
                return None
        return tuple(result)

    def ifname(self, node: Node, path: str) -> str | None:
        value = self.scope.string(node, path)
        if value is None:
            return None
        if not _IFNAME.fullmatch(value) or value.rstrip("*") in (".", ".."):
            self.scope.error(
                node.line, path, f"{quote(value)} is not an interface name ({_IFNAME_RULE})"
            )
            return None
        return value

    def datapath(
        self, node: Node | None
    ) -> tuple[Mode | None, Scheduler | None, int | None, int | None]:
        """(mode, scheduler, maglevTableSize, selectionSeed); the last two only mean
        something in bpf mode, and are refused in ipvs mode."""
        s = self.scope
        fields = s.mapping(node, "datapath", _DATAPATH) if node is not None else {}
        self.datapath_fields = fields
        if fields is None:
            return None, None, None, None
        mode: Mode | None = Mode.IPVS
        if "mode" in fields:
            text = s.choice(fields["mode"], "datapath.mode", [m.value for m in Mode], "a mode")
            mode = Mode(text) if text is not None else None
        if mode is None:
            return None, None, None, None
        bpf = mode is Mode.BPF
        scheduler: Scheduler | None = Scheduler.RANDOM if bpf else Scheduler.RR
        if "scheduler" in fields:
            text = s.choice(
                fields["scheduler"],
                "datapath.scheduler",
                BPF_SCHEDULERS if bpf else IPVS_SCHEDULERS,
                "a bpf scheduler" if bpf else "an IPVS scheduler",
            )
            scheduler = Scheduler(text) if text is not None else None
        size: int | None = DEFAULT_MAGLEV_TABLE_SIZE
        seed: int | None = DEFAULT_SELECTION_SEED
        for key in ("maglevTableSize", "selectionSeed"):
            if key in fields and not bpf:
                s.error(
                    fields[key].line,
                    f"datapath.{key}",
                    "is only used in bpf mode (datapath.mode: bpf)",
                )
                size = seed = None
        if bpf and "maglevTableSize" in fields:
            size = s.integer(fields["maglevTableSize"], "datapath.maglevTableSize", 2, 131071)
            if size is not None and not is_prime(size):
                s.error(
                    fields["maglevTableSize"].line,
                    "datapath.maglevTableSize",
                    f"{size} is not a prime (e.g. {DEFAULT_MAGLEV_TABLE_SIZE})",
                )
                size = None
        if bpf and "selectionSeed" in fields:
            seed = s.integer(fields["selectionSeed"], "datapath.selectionSeed", 0, 0xFFFFFFFF)
        return mode, scheduler, size, seed

    def socket_lb(self, mode: Mode | None) -> tuple[bool | None, str | None]:
        """(datapath.socketLB, datapath.cgroup): the bpf mode's cgroup sock_addr programs for
        node processes, and the cgroup v2 directory they attach to (an absolute path).
        After datapath(), whose fields it reads."""
        s = self.scope
        fields = self.datapath_fields
        if fields is None or mode is None:
            return False, DEFAULT_CGROUP
        for key in ("socketLB", "cgroup"):
            if key in fields and mode is not Mode.BPF:
                s.error(
                    fields[key].line,
                    f"datapath.{key}",
                    "is only used in bpf mode (datapath.mode: bpf)",
                )
                return None, None
        enabled = (
            s.boolean(fields["socketLB"], "datapath.socketLB") if "socketLB" in fields else (False)
        )
        cgroup: str | None = DEFAULT_CGROUP
        if "cgroup" in fields:
            cgroup = s.string(fields["cgroup"], "datapath.cgroup")
            problem = _cgroup_problem(cgroup) if cgroup is not None else None
            if problem is not None:
                s.error(
                    fields["cgroup"].line,
                    "datapath.cgroup",
                    f"{quote(cgroup or '')} is not {problem} (a cgroup v2 directory)",
                )
                cgroup = None
            elif cgroup is not None and not enabled:
                s.error(
                    fields["cgroup"].line,
                    "datapath.cgroup",
                    "is only used with datapath.socketLB: true",
                )
                cgroup = None
        return enabled, cgroup

    def snat(
        self, node: Node | None
    ) -> tuple[tuple[int, int] | None, int | None, Timeouts | None, int | None]:
        s = self.scope
        fields = s.mapping(node, "snat", _SNAT) if node is not None else {}
        if fields is None:
            return None, None, None, None
        ports: tuple[int, int] | None = _DEFAULT_SNAT_PORT_RANGE
        if "portRange" in fields:
            ports = s.port_range(fields["portRange"], "snat.portRange")
            count = ports[1] - ports[0] + 1 if ports else 0
            if ports is not None and count < _MIN_SNAT_PORTS:
                s.error(
                    fields["portRange"].line,
                    "snat.portRange",
                    f"{show_range(ports)} has {count} ports "
                    f"(at least {_MIN_SNAT_PORTS} are needed)",
                )
                ports = None
        sessions: int | None = 65536
        if "maxSessions" in fields:
            sessions = s.integer(fields["maxSessions"], "snat.maxSessions", 1, _MAX_SESSIONS)
        timeouts = self.timeouts(fields.get("timeouts"))
        mark: int | None = _DEFAULT_MARK
        if "mark" in fields:
            mark = self.mark(fields["mark"], "snat.mark")
        return ports, sessions, timeouts, mark

    def timeouts(self, node: Node | None) -> Timeouts | None:
        s = self.scope
        fields = s.mapping(node, "snat.timeouts", _TIMEOUTS) if node is not None else {}
        if fields is None:
            return None
        values: dict[str, int | None] = dict(_DEFAULT_TIMEOUTS)
        for key, value in fields.items():
            values[key] = self.duration(value, f"snat.timeouts.{key}")
        est, trans, time_wait, close, udp, icmp = (values[k] for k in _TIMEOUTS)
        if (
            est is None
            or trans is None
            or time_wait is None
            or close is None
            or udp is None
            or icmp is None
        ):
            return None
        return Timeouts(
            tcp_established=est,
            tcp_transitory=trans,
            tcp_time_wait=time_wait,
            tcp_close=close,
            udp=udp,
            icmp=icmp,
        )

    def duration(self, node: Node, path: str) -> int | None:
        """Seconds: an integer, or a string of <n>h / <n>m / <n>s parts ("2h4m")."""
        seconds = int_value(node)
        text = node.value if isinstance(node, Scalar) else None
        if seconds is None and isinstance(text, str) and _DURATION.fullmatch(text):
            parts = _DURATION_PART.findall(text)
            # More digits than any timeout needs is out of range, not an int() to compute.
            seconds = (
                _MAX_TIMEOUT + 1
                if any(len(n) > 9 for n, _ in parts)
                else sum(int(n) * _SECONDS[unit] for n, unit in parts)
            )
        if seconds is None:
            self.scope.error(
                node.line,
                path,
                f'{describe(node)} is not a duration (seconds, or e.g. "90s", "5m", "2h4m")',
            )
            return None
        if not 1 <= seconds <= _MAX_TIMEOUT:
            self.scope.error(
                node.line,
                path,
                f"{describe(node)} is out of range (1s to 7 days = {_MAX_TIMEOUT}s)",
            )
            return None
        return seconds

    def mark(self, node: Node, path: str) -> int | None:
        value = int_value(node)
        text = node.value if isinstance(node, Scalar) else None
        if value is None and isinstance(text, str) and _MARK.fullmatch(text):
            value = int(text, 16) if text[:2].lower() == "0x" else int(text)
        if value is None:
            self.scope.error(
                node.line, path, f"{describe(node)} is not a mark (an integer such as 0x4000)"
            )
            return None
        if value <= 0 or value & (value - 1):
            self.scope.error(
                node.line,
                path,
                f"{_show_mark(value)} is not a single bit (a power of two such as 0x4000)",
            )
            return None
        if value >= 1 << 32:
            self.scope.error(node.line, path, f"{_show_mark(value)} does not fit in 32 bits")
            return None
        return value

    def features(self, node: Node | None) -> bool | None:
        s = self.scope
        fields = s.mapping(node, "features", _FEATURES) if node is not None else {}
        if fields is None:
            return None
        if "icmpEcho" in fields:
            return s.boolean(fields["icmpEcho"], "features.icmpEcho")
        return True

    def cross_checks(
        self,
        top: dict[str, Node],
        pod_cidr: IPv4Network | None,
        cluster_pod_cidr: IPv4Network | None,
        service_cidr: IPv4Network | None,
    ) -> None:
        s = self.scope
        node_fields = fields_of(top.get("node"))
        cluster_fields = fields_of(top.get("cluster"))
        pods = cluster_pod_cidr
        if pod_cidr is not None and pods is not None and not pod_cidr.subnet_of(pods):
            s.error(
                node_fields["podCIDR"].line,
                "node.podCIDR",
                f"{pod_cidr} is not inside cluster.podCIDR {pods}",
            )
        if service_cidr is not None and pods is not None and service_cidr.overlaps(pods):
            s.error(
                cluster_fields["serviceCIDR"].line,
                "cluster.serviceCIDR",
                f"{service_cidr} overlaps cluster.podCIDR {pods}",
            )
        for path, line, address in self.valid_addresses:
            for network, what, role in (
                (cluster_pod_cidr, "cluster.podCIDR", "pod"),
                (service_cidr, "cluster.serviceCIDR", "service"),
            ):
                if network is not None and address in network:
                    s.error(
                        line,
                        path,
                        f"{address} is inside {what} {network} "
                        f"(a node address must not be a {role} address)",
                    )

    def snat_overlap(
        self, top: dict[str, Node], snat: tuple[int, int], node_ports: tuple[int, int]
    ) -> None:
        if ranges_overlap(snat, node_ports):
            line = fields_of(top.get("snat"))["portRange"].line
            self.scope.error(
                line,
                "snat.portRange",
                f"{show_range(snat)} overlaps cluster.nodePortRange "
                f"{show_range(node_ports)} (SNAT would take NodePorts)",
            )


def _cgroup_problem(path: str) -> str | None:
    """What a cgroup v2 directory path is not, or None: absolute, normalized, no control
    characters, within PATH_MAX/NAME_MAX. (Any other character is a valid cgroup name;
    the templates escape it where it reaches a C comment.)"""
    if not path.startswith("/"):
        return "an absolute path"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "a path without control characters"
    parts = path[1:].split("/")
    if path != "/" and any(p in ("", ".", "..") for p in parts):
        return "a normalized path (no empty, '.' or '..' parts)"
    if len(path.encode()) > 4095 or any(len(p.encode()) > 255 for p in parts):
        return "a path within 4095 bytes, 255 per part"
    return None


def _show_mark(value: int) -> str:
    return hex(value) if value >= 0 else str(value)

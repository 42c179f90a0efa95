"""The `config` stage: input files -> validated `model.Inputs`, or every problem.

`load_inputs(node_path, service_paths)` reads the node file (strict: unknown
keys are errors) and the Kubernetes manifests (lenient: only the fields bpfgen
uses are read, and those strictly), checks every value and the relations
between them, and returns the frozen model. When anything is wrong it raises
`InputError` with all problems of the run, node file first, each file in line
order: `file:line: path: message`.

Reading is in three passes: the node file (which gives the service CIDR,
NodePort range and node name the manifests are checked against), the
manifests object by object (Services, EndpointSlices; other kinds are noticed
and skipped), then the cross-object checks and the join of EndpointSlices to
Service ports. No input string reaches the model without matching a pattern
that excludes everything but the characters its kind of name allows.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from pathlib import Path

from bpfgen.errors import InputError, Problem
from bpfgen.maglev import is_prime, recommended_size
from bpfgen.model import (
    BPF_SCHEDULERS,
    DEFAULT_CGROUP,
    DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_SELECTION_SEED,
    IPVS_SCHEDULERS,
    MAX_BACKENDS_PER_FRONTEND,
    Backend,
    Hook,
    Inputs,
    Interface,
    Mode,
    NodeConfig,
    Protocol,
    Role,
    Service,
    ServicePort,
    ServiceType,
    Timeouts,
)
from bpfgen.source import Map, Node, Scalar, Seq, Source, parse_input, read_input

__all__ = ["load_inputs", "load_sources", "read_sources"]

# Names. Each pattern is the whole alphabet the model lets through.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}\*?")
_KIND = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
_API_VERSION = re.compile(r"([a-z0-9][-a-z0-9.]{0,252}/)?[a-z0-9][-a-z0-9]{0,62}")
_DURATION = re.compile(r"(?:[0-9]+[hms])+")
_DURATION_PART = re.compile(r"([0-9]+)([hms])")
_CIDR = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}")
_PORT_RANGE = re.compile(r"([0-9]{1,6})-([0-9]{1,6})")
_MARK = re.compile(r"0[xX][0-9a-fA-F]{1,16}|[0-9]{1,20}")

_LABEL_RULE = "at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit"
_SUBDOMAIN_RULE = (
    "at most 253 of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit"
)
_IFNAME_RULE = "1-15 of A-Z, a-z, 0-9, '-', '_' and '.', optionally ending in '*'"
_SERVICE_NAME_LABEL = "kubernetes.io/service-name"

_SECONDS = {"h": 3600, "m": 60, "s": 1}
_MAX_TIMEOUT = 7 * 86400
_MAX_SESSIONS = 1 << 24
_MIN_SNAT_PORTS = 16
_MAX_ADDRESSES = 8
_DEFAULT_AFFINITY_TIMEOUT = 10800
_MAX_AFFINITY_TIMEOUT = 86400

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

_SKIPPED_KINDS = "bpfgen reads Service and EndpointSlice"


def load_inputs(node_path: Path, service_paths: Sequence[Path]) -> Inputs:
    """Read, validate and join the node file and the service manifests."""
    return load_sources(read_sources(node_path, service_paths))


def read_sources(node_path: Path, service_paths: Sequence[Path]) -> list[Source]:
    """Each input's bytes, read once (source.read_input): the node file first."""
    return [read_input(path) for path in (node_path, *service_paths)]


def load_sources(sources: Sequence[Source]) -> Inputs:
    """Parse, validate and join inputs already read: the node file first."""
    with _gc_paused():
        return _load([parse_input(source) for source in sources])


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Reading builds millions of small acyclic objects: without the cyclic
    collector scanning them over and over, a 10 MB manifest loads twice as fast."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _load(sources: Sequence[Source]) -> Inputs:
    run = _Run([source.file for source in sources])
    for index, source in enumerate(sources):
        if source.error is not None:
            run.problem(index, source.error.line, "", source.error.message)
    node, facts = _NodeReader(run, sources[0]).read()
    manifests = _Manifests(run, facts)
    for index, source in enumerate(sources[1:], start=1):
        manifests.read(index, source)
    services = manifests.finish()
    if run.has_problems() or node is None:
        raise InputError(run.sorted_problems())
    digest = hashlib.sha256()
    for source in sources:
        digest.update(len(source.data).to_bytes(8, "big"))
        digest.update(source.data)
    return Inputs(
        node=node,
        services=tuple(sorted(services, key=lambda s: (s.namespace, s.name))),
        notices=run.sorted_notices(),
        sha256=digest.hexdigest(),
    )


# ----------------------------------------------------------------------------- reporting


class _Run:
    """Problems and notices of one run, kept per input file."""

    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.problems: list[list[Problem]] = [[] for _ in files]
        self.notices: list[list[tuple[int, str]]] = [[] for _ in files]

    def problem(self, index: int, line: int, path: str, message: str) -> None:
        self.problems[index].append(Problem(self.files[index], line, path, message))

    def notice(self, index: int, line: int, message: str) -> None:
        self.notices[index].append((line, f"{self.files[index]}:{line}: {message}"))

    def has_problems(self) -> bool:
        return any(self.problems)

    def sorted_problems(self) -> list[Problem]:
        # Stable: problems on one line keep the order they were found in.
        return [p for ps in self.problems for p in sorted(ps, key=lambda p: p.line)]

    def sorted_notices(self) -> tuple[str, ...]:
        return tuple(text for ns in self.notices for _, text in sorted(ns, key=lambda n: n[0]))


@dataclass
class _Scope:
    """Reports problems in one file under a path prefix (`Service default/web`).

    `failed` says whether this scope reported anything: an object with a
    problem contributes nothing to the model (its problems are the answer).
    """

    run: _Run
    index: int  # which input file
    prefix: str = ""
    failed: bool = False

    @property
    def file(self) -> str:
        return self.run.files[self.index]

    def error(self, line: int, path: str, message: str) -> None:
        full = f"{self.prefix}: {path}" if self.prefix and path else (self.prefix or path)
        self.failed = True
        self.run.problem(self.index, line, full, message)

    def notice(self, line: int, message: str) -> None:
        self.run.notice(self.index, line, message)

    def under(self, prefix: str) -> _Scope:
        return _Scope(self.run, self.index, prefix)

    # -- structure

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: Sequence[str] | None = None,
        required: Iterable[str] = (),
    ) -> dict[str, Node] | None:
        """The fields of a mapping, null values dropped (absent = default).

        With `allowed`, other keys are errors (the node file); without, they
        are ignored (Kubernetes objects carry much that bpfgen does not read).
        """
        if not isinstance(node, Map):
            self.error(node.line, path, f"{_describe(node)} is not a mapping")
            return None
        for key, line, first in node.duplicates:
            self.error(line, path, f"duplicate key {_quote(key)} (first at line {first})")
        fields: dict[str, Node] = {}
        for key, value in node.fields.items():
            if allowed is not None and key not in allowed:
                expected = ", ".join(sorted(allowed))
                self.error(
                    node.key_lines[key],
                    path,
                    f"unknown field {_quote(key)} (expected one of: {expected})",
                )
            elif not (isinstance(value, Scalar) and value.value is None):
                fields[key] = value
        for key in required:
            if key not in fields:
                if key in node.fields:
                    self.error(node.key_lines[key], _join(path, key), "is null (required)")
                else:
                    self.error(node.line, path, f"missing required field {_quote(key)}")
        return fields

    def sequence(self, node: Node, path: str) -> tuple[Node, ...] | None:
        if not isinstance(node, Seq):
            self.error(node.line, path, f"{_describe(node)} is not a list")
            return None
        return node.items

    # -- scalars

    def string(self, node: Node, path: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str):
            return node.value
        self.error(node.line, path, f"{_describe(node)} is not a string")
        return None

    def boolean(self, node: Node, path: str) -> bool | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return node.value
        self.error(node.line, path, f"{_describe(node)} is not a boolean (true or false)")
        return None

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None:
        value = _int_value(node)
        if value is None:
            self.error(node.line, path, f"{_describe(node)} is not an integer")
        elif not low <= value <= high:
            self.error(node.line, path, f"{value} is out of range ({low}-{high})")
        else:
            return value
        return None

    def port(self, node: Node, path: str) -> int | None:
        value = _int_value(node)
        if value is None or not 1 <= value <= 65535:
            self.error(node.line, path, f"{_describe(node)} is not a port (1-65535)")
            return None
        return value

    def choice(self, node: Node, path: str, options: Sequence[str], what: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str) and node.value in options:
            return node.value
        self.error(node.line, path, f"{_describe(node)} is not {what} ({', '.join(options)})")
        return None

    def name(
        self, node: Node, path: str, pattern: re.Pattern[str], what: str, empty: bool = False
    ) -> str | None:
        """A name matching `pattern` (or "" when `empty` allows it)."""
        value = self.string(node, path)
        if value is None:
            return None
        if (pattern.fullmatch(value) and len(value) <= 253) or (empty and value == ""):
            return value
        kind, rule = (
            ("a DNS-1123 label", _LABEL_RULE)
            if pattern is _DNS_LABEL
            else ("a DNS-1123 subdomain", _SUBDOMAIN_RULE)
        )
        detail = rule if what == kind else f"{kind}: {rule}"
        self.error(node.line, path, f"{_describe(node)} is not {what} ({detail})")
        return None

    def ipv4(self, node: Node, path: str) -> IPv4Address | None:
        """An IPv4 unicast address; IPv6 gets its own message."""
        address = self.ip(node, path, "an IPv4 address")
        if isinstance(address, IPv6Address):
            self.error(node.line, path, "IPv6 is not supported yet (IPv4 only)")
            return None
        return address

    def ip(
        self, node: Node, path: str, what: str = "an IP address"
    ) -> IPv4Address | IPv6Address | None:
        text = node.value if isinstance(node, Scalar) else None
        try:
            address = ip_address(text) if isinstance(text, str) else None
        except ValueError:
            address = None
        if address is None:
            self.error(node.line, path, f"{_describe(node)} is not {what}")
            return None
        unusable = _unusable(address) if isinstance(address, IPv4Address) else None
        if unusable:
            self.error(node.line, path, f"{address} is {unusable} (expected a unicast address)")
            return None
        return address

    def cidr(self, node: Node, path: str) -> IPv4Network | None:
        """An IPv4 network written `a.b.c.d/len`, with no host bits set."""
        text = node.value if isinstance(node, Scalar) else None
        if isinstance(text, str) and ":" in text and _is_ipv6_network(text):
            self.error(node.line, path, "IPv6 is not supported yet (IPv4 only)")
            return None
        try:
            loose = IPv4Network(text, strict=False) if isinstance(text, str) else None
        except ValueError:
            loose = None
        if loose is None or not isinstance(text, str) or not _CIDR.fullmatch(text):
            self.error(node.line, path, f"{_describe(node)} is not an IPv4 CIDR "
                       "(address/prefix, e.g. 198.18.0.0/15)")
            return None
        if str(loose) != text:
            self.error(node.line, path, f"{text} has host bits set (did you mean {loose}?)")
            return None
        return loose

    def port_range(self, node: Node, path: str) -> tuple[int, int] | None:
        """`[min, max]` or `"min-max"`, inclusive."""
        expected = 'is not a port range (expected [min, max] or "min-max")'
        bounds: list[int | None]
        if isinstance(node, Seq) and len(node.items) == 2:
            bounds = [self.port(item, f"{path}[{i}]") for i, item in enumerate(node.items)]
        elif isinstance(node, Scalar) and isinstance(node.value, str):
            match = _PORT_RANGE.fullmatch(node.value)
            if match is None:
                self.error(node.line, path, f"{_describe(node)} {expected}")
                return None
            bounds = [self.port(Scalar(node.line, int(g)), path) for g in match.groups()]
        else:
            found = _describe(node)
            if isinstance(node, Seq):
                found = f"a list of {len(node.items)} items"
            self.error(node.line, path, f"{found} {expected}")
            return None
        low, high = bounds
        if low is None or high is None:
            return None
        if low > high:
            self.error(node.line, path, f"{low}-{high} is empty (min > max)")
            return None
        return low, high


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_ipv6_network(text: str) -> bool:
    try:
        return isinstance(ip_network(text, strict=False), IPv6Network)
    except ValueError:
        return False


def _int_value(node: Node) -> int | None:
    value = node.value if isinstance(node, Scalar) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _quote(text: str) -> str:
    """A value of the input, printable on one line and visibly delimited."""
    shown = repr(text)
    return shown if len(shown) <= 64 else shown[:60] + "..." + shown[-1]


def _describe(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    assert isinstance(node, Scalar)
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    return repr(value)


def _unusable(address: IPv4Address) -> str | None:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_multicast:
        return "a multicast address"
    if address == IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if address.is_reserved:
        return "a reserved address (240.0.0.0/4)"
    return None


def _ranges_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _show_range(r: tuple[int, int]) -> str:
    return f"{r[0]}-{r[1]}"


# ----------------------------------------------------------------------------- node file


@dataclass
class _NodeFacts:
    """What the manifests are checked against; each None when invalid in the node file."""

    name: str | None = None
    service_cidr: IPv4Network | None = None
    node_port_range: tuple[int, int] | None = None
    mode: Mode | None = None
    maglev_size: int | None = None  # datapath.maglevTableSize when the scheduler is maglev


_TOP = ("apiVersion", "kind", "node", "cluster", "interfaces", "datapath", "snat", "features")
_TOP_REQUIRED = ("apiVersion", "kind", "node", "cluster", "interfaces")
_NODE = ("name", "addresses", "podCIDR")
_CLUSTER = ("podCIDR", "serviceCIDR", "masqueradeAll", "nodePortRange")
_CLUSTER_REQUIRED = ("podCIDR", "serviceCIDR")
_INTERFACE = ("name", "role", "hook")
INTERFACE_ROLES = [r.value for r in Role if r is not Role.NODE]
_DATAPATH = ("mode", "scheduler", "maglevTableSize", "selectionSeed", "socketLB", "cgroup")
_SNAT = ("portRange", "maxSessions", "timeouts", "mark")
_TIMEOUTS = tuple(_DEFAULT_TIMEOUTS)
_FEATURES = ("icmpEcho",)


class _NodeReader:
    def __init__(self, run: _Run, source: Source) -> None:
        self.source = source
        self.scope = _Scope(run, 0)
        self.facts = _NodeFacts()
        self.valid_addresses: list[tuple[str, int, IPv4Address]] = []  # for cross checks
        self.datapath_fields: dict[str, Node] | None = {}

    def read(self) -> tuple[NodeConfig | None, _NodeFacts]:
        source, scope = self.source, self.scope
        if source.error is not None:
            return None, self.facts
        documents = [d for d in source.documents if not _is_null(d.root)]
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
                s.error(api.line, "apiVersion", f"{_describe(api)} is not bpfgen/v1")
        if "kind" in top:
            kind = top["kind"]
            if not (isinstance(kind, Scalar) and kind.value == "NodeConfig"):
                s.error(kind.line, "kind", f"{_describe(kind)} is not NodeConfig")

        name, addresses, pod_cidr = self.node_section(top.get("node"))
        cluster = self.cluster_section(top.get("cluster"))
        interfaces = self.interfaces(top.get("interfaces"))
        mode, scheduler, maglev_size, selection_seed = self.datapath(top.get("datapath"))
        socket_lb, cgroup = self.socket_lb(mode)
        snat_range, max_sessions, timeouts, mark = self.snat(top.get("snat"))
        icmp_echo = self.features(top.get("features"))
        cluster_pod_cidr, service_cidr, masquerade_all, node_port_range = cluster

        self.cross_checks(top, pod_cidr, cluster_pod_cidr, service_cidr)
        maglev = maglev_size if mode is Mode.BPF and scheduler == "maglev" else None
        self.facts = _NodeFacts(name, service_cidr, node_port_range, mode, maglev)
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
        )

    def node_section(
        self, node: Node | None
    ) -> tuple[str | None, tuple[IPv4Address, ...] | None, IPv4Network | None]:
        s = self.scope
        fields = s.mapping(node, "node", _NODE, _NODE) if node is not None else None
        if fields is None:
            return None, None, None
        name = None
        if "name" in fields:
            name = s.name(fields["name"], "node.name", _DNS_SUBDOMAIN, "a DNS-1123 subdomain")
        addresses = self.addresses(fields["addresses"]) if "addresses" in fields else None
        pod_cidr = s.cidr(fields["podCIDR"], "node.podCIDR") if "podCIDR" in fields else None
        return name, addresses, pod_cidr

    def addresses(self, node: Node) -> tuple[IPv4Address, ...] | None:
        s = self.scope
        items = s.sequence(node, "node.addresses")
        if items is None:
            return None
        if not 1 <= len(items) <= _MAX_ADDRESSES:
            s.error(node.line, "node.addresses",
                    f"has {len(items)} addresses (1 to {_MAX_ADDRESSES} are needed)")
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
                s.error(fields["name"].line, f"{path}.name", f"{_quote(name)} is listed twice "
                        f"(first at interfaces[{seen[name]}])")
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
                s.error(fields["hook"].line, f"{path}.hook",
                        "xdp is only allowed on the uplink (pod-facing interfaces use tc)")
                hook = None
            if role is Role.UPLINK and name is not None and name.endswith("*"):
                s.error(fields["name"].line, f"{path}.name",
                        f"{_quote(name)} is a pattern; the uplink must be one device")
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
                s.error(items[i].line, f"interfaces[{i}].name", f"{_quote(interface.name)} "
                        f"also matches the uplink {uplink}")
                return None
        return tuple(result)

    def ifname(self, node: Node, path: str) -> str | None:
        value = self.scope.string(node, path)
        if value is None:
            return None
        if not _IFNAME.fullmatch(value) or value.rstrip("*") in (".", ".."):
            self.scope.error(node.line, path, f"{_quote(value)} is not an interface name "
                             f"({_IFNAME_RULE})")
            return None
        return value

    def datapath(self, node: Node | None) -> tuple[Mode | None, str | None, int | None, int | None]:
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
        scheduler: str | None = "random" if bpf else "rr"
        if "scheduler" in fields:
            scheduler = s.choice(fields["scheduler"], "datapath.scheduler",
                                 BPF_SCHEDULERS if bpf else IPVS_SCHEDULERS,
                                 "a bpf scheduler" if bpf else "an IPVS scheduler")
        size: int | None = DEFAULT_MAGLEV_TABLE_SIZE
        seed: int | None = DEFAULT_SELECTION_SEED
        for key in ("maglevTableSize", "selectionSeed"):
            if key in fields and not bpf:
                s.error(fields[key].line, f"datapath.{key}", "is only used in bpf mode "
                        "(datapath.mode: bpf)")
                size = seed = None
        if bpf and "maglevTableSize" in fields:
            size = s.integer(fields["maglevTableSize"], "datapath.maglevTableSize", 2, 131071)
            if size is not None and not is_prime(size):
                s.error(fields["maglevTableSize"].line, "datapath.maglevTableSize",
                        f"{size} is not a prime (e.g. {DEFAULT_MAGLEV_TABLE_SIZE})")
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
                s.error(fields[key].line, f"datapath.{key}", "is only used in bpf mode "
                        "(datapath.mode: bpf)")
                return None, None
        enabled = s.boolean(fields["socketLB"], "datapath.socketLB") if "socketLB" in fields else (
            False)
        cgroup: str | None = DEFAULT_CGROUP
        if "cgroup" in fields:
            cgroup = s.string(fields["cgroup"], "datapath.cgroup")
            problem = _cgroup_problem(cgroup) if cgroup is not None else None
            if problem is not None:
                s.error(fields["cgroup"].line, "datapath.cgroup",
                        f"{_quote(cgroup or '')} is not {problem} (a cgroup v2 directory)")
                cgroup = None
            elif cgroup is not None and not enabled:
                s.error(fields["cgroup"].line, "datapath.cgroup",
                        "is only used with datapath.socketLB: true")
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
                s.error(fields["portRange"].line, "snat.portRange",
                        f"{_show_range(ports)} has {count} ports "
                        f"(at least {_MIN_SNAT_PORTS} are needed)")
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
        if (est is None or trans is None or time_wait is None or close is None or udp is None
                or icmp is None):
            return None
        return Timeouts(tcp_established=est, tcp_transitory=trans, tcp_time_wait=time_wait,
                        tcp_close=close, udp=udp, icmp=icmp)

    def duration(self, node: Node, path: str) -> int | None:
        """Seconds: an integer, or a string of <n>h / <n>m / <n>s parts ("2h4m")."""
        seconds = _int_value(node)
        text = node.value if isinstance(node, Scalar) else None
        if seconds is None and isinstance(text, str) and _DURATION.fullmatch(text):
            parts = _DURATION_PART.findall(text)
            # More digits than any timeout needs is out of range, not an int() to compute.
            seconds = _MAX_TIMEOUT + 1 if any(len(n) > 9 for n, _ in parts) else sum(
                int(n) * _SECONDS[unit] for n, unit in parts)
        if seconds is None:
            self.scope.error(node.line, path, f"{_describe(node)} is not a duration "
                             '(seconds, or e.g. "90s", "5m", "2h4m")')
            return None
        if not 1 <= seconds <= _MAX_TIMEOUT:
            self.scope.error(node.line, path, f"{_describe(node)} is out of range "
                             f"(1s to 7 days = {_MAX_TIMEOUT}s)")
            return None
        return seconds

    def mark(self, node: Node, path: str) -> int | None:
        value = _int_value(node)
        text = node.value if isinstance(node, Scalar) else None
        if value is None and isinstance(text, str) and _MARK.fullmatch(text):
            value = int(text, 16) if text[:2].lower() == "0x" else int(text)
        if value is None:
            self.scope.error(node.line, path, f"{_describe(node)} is not a mark "
                             "(an integer such as 0x4000)")
            return None
        if value <= 0 or value & (value - 1):
            self.scope.error(node.line, path, f"{_show_mark(value)} is not a single bit "
                             "(a power of two such as 0x4000)")
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
        node_fields = _fields_of(top.get("node"))
        cluster_fields = _fields_of(top.get("cluster"))
        pods = cluster_pod_cidr
        if pod_cidr is not None and pods is not None and not pod_cidr.subnet_of(pods):
            s.error(node_fields["podCIDR"].line, "node.podCIDR",
                    f"{pod_cidr} is not inside cluster.podCIDR {pods}")
        if service_cidr is not None and pods is not None and service_cidr.overlaps(pods):
            s.error(cluster_fields["serviceCIDR"].line, "cluster.serviceCIDR",
                    f"{service_cidr} overlaps cluster.podCIDR {pods}")
        for path, line, address in self.valid_addresses:
            for network, what, role in (
                (cluster_pod_cidr, "cluster.podCIDR", "pod"),
                (service_cidr, "cluster.serviceCIDR", "service"),
            ):
                if network is not None and address in network:
                    s.error(line, path, f"{address} is inside {what} {network} "
                            f"(a node address must not be a {role} address)")

    def snat_overlap(
        self, top: dict[str, Node], snat: tuple[int, int], node_ports: tuple[int, int]
    ) -> None:
        if _ranges_overlap(snat, node_ports):
            line = _fields_of(top.get("snat"))["portRange"].line
            self.scope.error(line, "snat.portRange",
                             f"{_show_range(snat)} overlaps cluster.nodePortRange "
                             f"{_show_range(node_ports)} (SNAT would take NodePorts)")


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


def _fields_of(node: Node | None) -> Mapping[str, Node]:
    """The non-null fields of a mapping, or none; reports nothing (for lookups)."""
    if not isinstance(node, Map):
        return {}
    return {key: value for key, value in node.fields.items() if not _is_null(value)}


def _is_null(node: Node) -> bool:
    return isinstance(node, Scalar) and node.value is None


def _show_mark(value: int) -> str:
    return hex(value) if value >= 0 else str(value)


# ----------------------------------------------------------------------------- manifests


@dataclass
class _PortDraft:
    name: str
    protocol: Protocol
    port: int
    node_port: int | None
    line: int


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
    scope: _Scope  # where its problems go

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class _Endpoint:
    address: IPv4Address
    node_name: str | None
    ready: bool
    serving: bool
    terminating: bool


@dataclass
class _Slice:
    service_key: str
    ports: list[tuple[str, Protocol, int]]  # (name, protocol, port); SCTP and "all ports" left out
    endpoints: list[_Endpoint]


@dataclass(frozen=True)
class _Claim:
    """Who took a frontend first, for the conflict message."""

    service: str
    path: str
    source: str


_LIST_ITEM_KIND = {"ServiceList": ("Service", "v1"), "EndpointSliceList": ("EndpointSlice",
                                                                           "discovery.k8s.io/v1")}


class _Manifests:
    def __init__(self, run: _Run, facts: _NodeFacts) -> None:
        self.run = run
        self.facts = facts
        self.services: list[_ServiceDraft] = []
        self.service_keys: dict[str, str] = {}  # every named Service seen -> "file:line"
        self.slices: list[tuple[_Scope, int, str, _Slice]] = []
        self.slice_keys: dict[str, str] = {}
        self.frontends: dict[tuple[IPv4Address, int, Protocol], _Claim] = {}
        self.node_ports: dict[tuple[int, Protocol], _Claim] = {}
        self.seen_objects: set[int] = set()  # id() of every object mapping read

    def read(self, index: int, source: Source) -> None:
        scope = _Scope(self.run, index)
        for document in source.documents:
            if _is_null(document.root):
                continue  # an empty document, e.g. between two `---`
            self.object(scope, document.root, f"document {document.index + 1}", None)

    def object(
        self, scope: _Scope, node: Node, where: str, implied: tuple[str, str] | None
    ) -> None:
        """One document or List item: dispatch on kind, notice what is skipped."""
        if not isinstance(node, Map):
            scope.error(node.line, where, f"{_describe(node)} is not a Kubernetes object "
                        "(a mapping with apiVersion and kind)")
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
            scope.error(fields["apiVersion"].line, f"{where}: apiVersion",
                        f"{api} is not supported (discovery.k8s.io/v1)")
        else:
            label = _object_label(fields)
            what = f"{kind} {label}" if label else f"{kind} ({where})"
            if kind in ("Service", "EndpointSlice"):
                what += f" of {api}"
            scope.notice(node.line, f"{what} ignored ({_SKIPPED_KINDS})")

    @staticmethod
    def kind(scope: _Scope, node: Node, where: str) -> str | None:
        if isinstance(node, Scalar) and isinstance(node.value, str) and _KIND.fullmatch(node.value):
            return node.value
        scope.error(node.line, f"{where}: kind", f"{_describe(node)} is not a Kubernetes kind")
        return None

    @staticmethod
    def api_version(scope: _Scope, node: Node, where: str) -> str | None:
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, str) and _API_VERSION.fullmatch(value):
            return value
        scope.error(node.line, f"{where}: apiVersion",
                    f"{_describe(node)} is not a Kubernetes API version")
        return None

    # -- Service

    def service(self, file_scope: _Scope, node: Node, fields: dict[str, Node], where: str) -> None:
        meta = _fields_of(fields.get("metadata"))
        name, namespace = _valid_name(meta)
        key = f"{namespace}/{name}" if name and namespace else None
        s = file_scope.under(f"Service {key}" if key else f"Service ({where})")
        source = f"{s.file}:{node.line}"
        self.metadata(s, fields, node, _DNS_LABEL, "a DNS-1123 label")
        if key is not None:
            if key in self.service_keys:
                s.error(node.line, "", f"defined twice (first at {self.service_keys[key]})")
                return
            self.service_keys[key] = source
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
                s.notice(node.line, f"Service {key} is ExternalName: skipped")
            return
        ip_nodes = self.cluster_ip_nodes(s, spec, fields["spec"])
        if ip_nodes is None:
            return
        if any(isinstance(n, Scalar) and n.value == "None" for _, n in ip_nodes[:1]):
            if key is not None and not s.failed:
                s.notice(node.line, f"Service {key} is headless (clusterIP: None): skipped")
            return
        service_type = ServiceType(type_text)
        cluster_ips = self.cluster_ips(s, spec, ip_nodes)
        external_ips = self.external_ips(s, spec)
        lb_ips = self.load_balancer_ips(s, fields, key) if (
            service_type is ServiceType.LOAD_BALANCER) else ()
        affinity = self.affinity(s, spec)
        external_local = self.policy_local(s, spec, "externalTrafficPolicy")
        internal_local = self.policy_local(s, spec, "internalTrafficPolicy")
        ports = self.ports(s, spec, node, service_type)
        if s.failed or key is None or name is None or namespace is None:
            return
        assert cluster_ips is not None and external_ips is not None and lb_ips is not None
        assert ports is not None
        draft = _ServiceDraft(
            namespace=namespace, name=name, source=source, type=service_type,
            cluster_ips=cluster_ips, external_ips=external_ips, load_balancer_ips=lb_ips,
            ports=[p for p, _ in ports], session_affinity_timeout=affinity,
            external_traffic_local=external_local, internal_traffic_local=internal_local,
            scope=s,
        )
        self.claim(s, draft, ports)
        self.services.append(draft)

    def metadata(
        self, s: _Scope, fields: dict[str, Node], node: Node, pattern: re.Pattern[str], what: str
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
            s.name(meta["namespace"], "metadata.namespace", _DNS_LABEL, "a DNS-1123 label")

    def cluster_ip_nodes(
        self, s: _Scope, spec: dict[str, Node], spec_node: Node
    ) -> list[tuple[str, Node]] | None:
        """The cluster IP entries with their paths: spec.clusterIPs, else spec.clusterIP."""
        if "clusterIPs" in spec:
            items = s.sequence(spec["clusterIPs"], "spec.clusterIPs")
            if items is None:
                return None
            entries = [(f"spec.clusterIPs[{i}]", item) for i, item in enumerate(items)]
            if "clusterIP" in spec and entries:
                single, first = spec["clusterIP"], entries[0][1]
                if not (isinstance(single, Scalar) and isinstance(first, Scalar)
                        and single.value == first.value):
                    s.error(single.line, "spec.clusterIP", f"{_describe(single)} does not "
                            f"match spec.clusterIPs[0] {_describe(first)}")
                    return None
        elif "clusterIP" in spec:
            entries = [("spec.clusterIP", spec["clusterIP"])]
        else:
            entries = []
        if not entries:
            line = spec["clusterIPs"].line if "clusterIPs" in spec else spec_node.line
            s.error(line, "spec.clusterIP", "no cluster IP allocated yet (use manifests read "
                    "back from the cluster, e.g. kubectl get svc -o yaml)")
            return None
        return entries

    def cluster_ips(
        self, s: _Scope, spec: dict[str, Node], entries: list[tuple[str, Node]]
    ) -> tuple[IPv4Address, ...] | None:
        v4: list[IPv4Address] = []
        v6 = False
        ok = True
        for path, item in entries:
            address = s.ip(item, path)
            if address is None:
                ok = False
            elif isinstance(address, IPv6Address):
                v6 = True
            elif self.facts.service_cidr is not None and address not in self.facts.service_cidr:
                s.error(item.line, path,
                        f"{address} is outside cluster.serviceCIDR {self.facts.service_cidr}")
                ok = False
            elif address not in v4:
                v4.append(address)
        if not ok:
            return None
        if not v4 and v6:
            path = "spec.clusterIPs" if "clusterIPs" in spec else "spec.clusterIP"
            s.error(entries[0][1].line, path,
                    "IPv6-only services are not supported yet (IPv4 only)")
            return None
        return tuple(v4)

    def external_ips(self, s: _Scope, spec: dict[str, Node]) -> tuple[IPv4Address, ...] | None:
        if "externalIPs" not in spec:
            return ()
        items = s.sequence(spec["externalIPs"], "spec.externalIPs")
        if items is None:
            return None
        result: list[IPv4Address] = []
        ok = True
        for i, item in enumerate(items):
            address = s.ipv4(item, f"spec.externalIPs[{i}]")
            if address is None:
                ok = False
            elif address not in result:
                result.append(address)
        return tuple(result) if ok else None

    def load_balancer_ips(
        self, s: _Scope, fields: dict[str, Node], key: str | None
    ) -> tuple[IPv4Address, ...] | None:
        status = _fields_of(fields.get("status"))
        balancer = _fields_of(status.get("loadBalancer"))
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
                    s.notice(item.line, f"Service {key}: {path}[{i}] has no ip "
                             "(only a hostname): not used")
                continue
            address = s.ip(entry["ip"], f"{path}[{i}].ip")
            if address is None:
                ok = False
            elif isinstance(address, IPv6Address):
                if key is not None:
                    s.notice(item.line, f"Service {key}: {path}[{i}].ip {address} is IPv6: "
                             "not used (IPv4 only)")
            elif address not in result:
                result.append(address)
        return tuple(result) if ok else None

    @staticmethod
    def affinity(s: _Scope, spec: dict[str, Node]) -> int | None:
        """The ClientIP affinity timeout, None without affinity (or when invalid)."""
        if "sessionAffinity" not in spec:
            return None
        found = s.choice(spec["sessionAffinity"], "spec.sessionAffinity", ("None", "ClientIP"),
                         "a session affinity")
        if found != "ClientIP":
            return None
        config = _fields_of(_fields_of(spec.get("sessionAffinityConfig")).get("clientIP"))
        if "timeoutSeconds" not in config:
            return _DEFAULT_AFFINITY_TIMEOUT
        return s.integer(config["timeoutSeconds"],
                         "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                         1, _MAX_AFFINITY_TIMEOUT)

    @staticmethod
    def policy_local(s: _Scope, spec: dict[str, Node], field: str) -> bool:
        """Whether externalTrafficPolicy / internalTrafficPolicy is Local."""
        if field not in spec:
            return False
        node = spec[field]
        if isinstance(node, Scalar) and node.value == "Global":  # the pre-1.14 name of Cluster
            return False
        return s.choice(node, f"spec.{field}", ("Cluster", "Local"), "a traffic policy") == "Local"

    def ports(
        self, s: _Scope, spec: dict[str, Node], node: Node, service_type: ServiceType
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
            allocate = s.boolean(spec["allocateLoadBalancerNodePorts"],
                                 "spec.allocateLoadBalancerNodePorts") is not False
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
                name = s.name(fields["name"], f"{path}.name", _DNS_LABEL, "a port name",
                              empty=True)
            if name == "" and len(items) > 1:
                s.error(item.line, path, "missing required field 'name' (a Service with "
                        "more than one port names each)")
                name = None
            if name and name in names:
                s.error(fields["name"].line, f"{path}.name",
                        f"{_quote(name)} is used twice (also spec.ports[{names[name]}])")
                name = None
            elif name:
                names[name] = i
            protocol = self.protocol(s, fields, f"{path}.protocol")
            port = None
            if "port" not in fields:
                s.error(item.line, path, "missing required field 'port'")
            else:
                port = s.port(fields["port"], f"{path}.port")
            if port is not None and protocol is not None:
                if (port, protocol) in numbers:
                    s.error(fields["port"].line, f"{path}.port", f"{port}/{protocol.value} is "
                            f"listed twice (also spec.ports[{numbers[port, protocol]}])")
                    port = None
                else:
                    numbers[port, protocol] = i
            node_port_ok, node_port = self.node_port(s, fields, item, path, service_type,
                                                     allocate)
            if name is None or protocol is None or port is None or not node_port_ok:
                ok = False
                continue
            result.append((_PortDraft(name, protocol, port, node_port, item.line), item.line))
        return result if ok else None

    @staticmethod
    def protocol(s: _Scope, fields: dict[str, Node], path: str) -> Protocol | None:
        if "protocol" not in fields:
            return Protocol.TCP
        node = fields["protocol"]
        if isinstance(node, Scalar) and node.value == "SCTP":
            s.error(node.line, path, "SCTP is not supported (TCP, UDP)")
            return None
        found = s.choice(node, path, [p.value for p in Protocol], "a protocol")
        return Protocol(found) if found is not None else None

    def node_port(
        self, s: _Scope, fields: dict[str, Node], item: Node, path: str,
        service_type: ServiceType, allocate: bool,
    ) -> tuple[bool, int | None]:
        """(valid, the nodePort or None): ClusterIP ports have none."""
        if service_type is ServiceType.CLUSTER_IP:
            return True, None  # the API server drops it; nothing listens on it
        if "nodePort" not in fields:
            if service_type is ServiceType.LOAD_BALANCER and not allocate:
                return True, None
            s.error(item.line, path, f"missing required field 'nodePort' "
                    f"(type {service_type.value}; not allocated yet?)")
            return False, None
        value = s.port(fields["nodePort"], f"{path}.nodePort")
        if value is None:
            return False, None
        limits = self.facts.node_port_range
        if limits is not None and not limits[0] <= value <= limits[1]:
            s.error(fields["nodePort"].line, f"{path}.nodePort",
                    f"{value} is outside cluster.nodePortRange {_show_range(limits)}")
            return False, None
        return True, value

    def claim(self, s: _Scope, service: _ServiceDraft, ports: list[tuple[_PortDraft, int]]) -> None:
        """Register the service's frontends and NodePorts; report ones already taken."""
        here = service.key
        addresses = [*service.cluster_ips, *service.external_ips, *service.load_balancer_ips]
        for i, (port, line) in enumerate(ports):
            path = f"spec.ports[{i}]"
            claim = _Claim(here, path, f"{s.file}:{line}")
            for address in dict.fromkeys(addresses):
                frontend = (address, port.port, port.protocol)
                first = self.frontends.setdefault(frontend, claim)
                if first.service != here:
                    s.error(line, path, f"{address}:{port.port}/{port.protocol.value} is "
                            f"already taken by Service {first.service} {first.path} "
                            f"({first.source})")
            if port.node_port is not None:
                first = self.node_ports.setdefault((port.node_port, port.protocol), claim)
                if first is not claim:
                    s.error(line, f"{path}.nodePort", f"{port.node_port}/{port.protocol.value} "
                            f"is already taken by Service {first.service} {first.path} "
                            f"({first.source})")

    # -- EndpointSlice

    def endpoint_slice(
        self, file_scope: _Scope, node: Node, fields: dict[str, Node], where: str
    ) -> None:
        meta = _fields_of(fields.get("metadata"))
        name, namespace = _valid_name(meta, _DNS_SUBDOMAIN)
        key = f"{namespace}/{name}" if name and namespace else None
        s = file_scope.under(f"EndpointSlice {key}" if key else f"EndpointSlice ({where})")
        self.metadata(s, fields, node, _DNS_SUBDOMAIN, "a DNS-1123 subdomain")
        if key is not None:
            if key in self.slice_keys:
                s.error(node.line, "", f"defined twice (first at {self.slice_keys[key]})")
                return
            self.slice_keys[key] = f"{s.file}:{node.line}"
        labels = s.mapping(meta["labels"], "metadata.labels") if "labels" in meta else {}
        if labels is None:
            return
        if _SERVICE_NAME_LABEL not in labels:
            if key is not None and not s.failed:
                s.notice(node.line, f"EndpointSlice {key} has no label {_SERVICE_NAME_LABEL}: "
                         "skipped")
            return
        service_name = s.name(labels[_SERVICE_NAME_LABEL],
                              f'metadata.labels["{_SERVICE_NAME_LABEL}"]', _DNS_LABEL,
                              "a Service name")
        if "addressType" not in fields:
            s.error(node.line, "", "missing required field 'addressType'")
            return
        address_type = s.choice(fields["addressType"], "addressType", ("IPv4", "IPv6", "FQDN"),
                                "an address type")
        if address_type is None:
            return
        if address_type != "IPv4":
            if key is not None and not s.failed:
                s.notice(node.line, f"EndpointSlice {key} has addressType {address_type}: "
                         "skipped (IPv4 only)")
            return
        ports = self.slice_ports(s, fields)
        endpoints = self.endpoints(s, fields)
        if s.failed or key is None or service_name is None or namespace is None:
            return
        assert ports is not None and endpoints is not None
        service_key = f"{namespace}/{service_name}"
        self.slices.append((s, node.line, key, _Slice(service_key, ports, endpoints)))

    @staticmethod
    def slice_ports(s: _Scope, fields: dict[str, Node]) -> list[tuple[str, Protocol, int]] | None:
        if "ports" not in fields:
            return []
        items = s.sequence(fields["ports"], "ports")
        if items is None:
            return None
        result: list[tuple[str, Protocol, int]] = []
        for i, item in enumerate(items):
            path = f"ports[{i}]"
            port_fields = s.mapping(item, path)
            if port_fields is None:
                continue
            name: str | None = ""
            if "name" in port_fields:
                name = s.name(port_fields["name"], f"{path}.name", _DNS_LABEL, "a port name",
                              empty=True)
            protocol = "TCP"
            if "protocol" in port_fields:
                protocol = s.choice(port_fields["protocol"], f"{path}.protocol",
                                    ("TCP", "UDP", "SCTP"), "a protocol") or ""
            port = None
            if "port" in port_fields:  # absent: "all ports", which Services never produce
                port = s.port(port_fields["port"], f"{path}.port")
            if name is not None and protocol in ("TCP", "UDP") and port is not None:
                result.append((name, Protocol(protocol), port))
        return result

    @staticmethod
    def endpoints(s: _Scope, fields: dict[str, Node]) -> list[_Endpoint] | None:
        if "endpoints" not in fields:
            return []
        items = s.sequence(fields["endpoints"], "endpoints")
        if items is None:
            return None
        result: list[_Endpoint] = []
        for i, item in enumerate(items):
            path = f"endpoints[{i}]"
            endpoint = s.mapping(item, path)
            if endpoint is None:
                continue
            address = None
            if "addresses" not in endpoint:
                s.error(item.line, path, "missing required field 'addresses'")
            else:
                addresses = s.sequence(endpoint["addresses"], f"{path}.addresses")
                if addresses == ():
                    s.error(endpoint["addresses"].line, f"{path}.addresses",
                            "is empty (an endpoint needs an address)")
                elif addresses:
                    address = s.ipv4(addresses[0], f"{path}.addresses[0]")
            node_name = None
            if "nodeName" in endpoint:
                node_name = s.name(endpoint["nodeName"], f"{path}.nodeName", _DNS_SUBDOMAIN,
                                   "a node name")
            conditions = s.mapping(endpoint["conditions"], f"{path}.conditions") \
                if "conditions" in endpoint else {}
            flags: dict[str, bool | None] = {}
            for flag in ("ready", "serving", "terminating"):
                if conditions is not None and flag in conditions:
                    flags[flag] = s.boolean(conditions[flag], f"{path}.conditions.{flag}")
            if address is None:
                continue
            # Kubernetes: ready unset means ready; serving unset follows ready.
            ready = flags.get("ready", True) is not False
            serving = flags["serving"] if flags.get("serving") is not None else ready
            terminating = flags.get("terminating") is True
            result.append(_Endpoint(address, node_name, ready, bool(serving), terminating))
        return result

    # -- join

    def finish(self) -> list[Service]:
        by_service: dict[str, list[_Slice]] = {}
        for s, line, key, slice_ in self.slices:
            if slice_.service_key not in self.service_keys:
                s.notice(line, f"EndpointSlice {key}: Service {slice_.service_key} not found: "
                         "skipped")
            by_service.setdefault(slice_.service_key, []).append(slice_)
        node_name = self.facts.name
        services = []
        for draft in self.services:
            slices = by_service.get(draft.key, [])
            ports = []
            for i, p in enumerate(draft.ports):
                backends, draining = _backends(p, slices, node_name)
                self.check_backend_count(draft.scope, p, f"spec.ports[{i}]", len(backends))
                ports.append(ServicePort(p.name, p.protocol, p.port, p.node_port, backends,
                                         draining))
            services.append(Service(
                namespace=draft.namespace, name=draft.name, source=draft.source,
                type=draft.type, cluster_ips=draft.cluster_ips, external_ips=draft.external_ips,
                load_balancer_ips=draft.load_balancer_ips, ports=tuple(ports),
                session_affinity_timeout=draft.session_affinity_timeout,
                external_traffic_local=draft.external_traffic_local,
                internal_traffic_local=draft.internal_traffic_local,
            ))
        return services


    def check_backend_count(self, s: _Scope, port: _PortDraft, path: str, count: int) -> None:
        """bpf mode: a frontend selects among at most MAX_BACKENDS_PER_FRONTEND backends,
        and a Maglev table needs more slots than backends (docs/maglev.md "Choice of M")."""
        if self.facts.mode is not Mode.BPF:
            return  # IPVS schedules any number
        if count > MAX_BACKENDS_PER_FRONTEND:
            s.error(port.line, path, f"{count} ready endpoints are more than a bpf-mode "
                    f"frontend selects among ({MAX_BACKENDS_PER_FRONTEND}; split the Service)")
        elif self.facts.maglev_size is not None and count > self.facts.maglev_size:
            s.error(port.line, path, f"{count} ready endpoints are more than "
                    f"datapath.maglevTableSize {self.facts.maglev_size} (Maglev needs a prime "
                    f"well above the endpoint count, e.g. {recommended_size(count)})")


def _backends(
    port: _PortDraft, slices: list[_Slice], node_name: str | None
) -> tuple[tuple[Backend, ...], tuple[Backend, ...]]:
    """Ready endpoints of a service port (if none, the serving terminating ones), and the
    other listed endpoints of the port (draining: existing sessions only)."""
    candidates = [
        (endpoint, number)
        for slice_ in slices
        for name, protocol, number in slice_.ports
        if name == port.name and protocol is port.protocol
        for endpoint in slice_.endpoints
    ]
    chosen = [(e, n) for e, n in candidates if e.ready]
    if not chosen:
        chosen = [(e, n) for e, n in candidates if e.serving and e.terminating]

    def unique(endpoints: list[tuple[_Endpoint, int]]) -> dict[tuple[IPv4Address, int], Backend]:
        out: dict[tuple[IPv4Address, int], Backend] = {}
        for endpoint, number in sorted(endpoints,
                                       key=lambda c: (c[0].address, c[1], c[0].node_name or "")):
            out.setdefault((endpoint.address, number), Backend(
                address=endpoint.address, port=number, node_name=endpoint.node_name,
                local=node_name is not None and endpoint.node_name == node_name,
            ))
        return out

    backends = unique(chosen)
    draining = {k: b for k, b in unique(candidates).items() if k not in backends}
    return tuple(backends.values()), tuple(draining.values())


def _valid_name(
    meta: Mapping[str, Node], pattern: re.Pattern[str] = _DNS_LABEL
) -> tuple[str | None, str | None]:
    """metadata name and namespace when both are valid, without reporting anything."""

    def valid(node: Node | None, pattern: re.Pattern[str], default: str | None) -> str | None:
        if node is None or _is_null(node):
            return default
        value = node.value if isinstance(node, Scalar) else None
        if isinstance(value, str) and pattern.fullmatch(value) and len(value) <= 253:
            return value
        return None

    return valid(meta.get("name"), pattern, None), valid(meta.get("namespace"), _DNS_LABEL,
                                                           "default")


def _object_label(fields: Mapping[str, Node]) -> str | None:
    """`namespace/name` or `name` of any object, for notices; None unless both are safe."""
    meta = _fields_of(fields.get("metadata"))
    name_node, namespace_node = meta.get("name"), meta.get("namespace")
    name = name_node.value if isinstance(name_node, Scalar) else None
    if not (isinstance(name, str) and _DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253):
        return None
    if namespace_node is None or _is_null(namespace_node):
        return name
    namespace = namespace_node.value if isinstance(namespace_node, Scalar) else None
    if isinstance(namespace, str) and _DNS_LABEL.fullmatch(namespace):
        return f"{namespace}/{name}"
    return None


"""EndpointSlices' ports and endpoints, and which endpoints back a Service port.

A port's backends are its ready endpoints (if none, the serving terminating ones),
as kube-proxy takes them; the other listed endpoints are draining: they keep
their sessions in the bpf mode (docs/datapath-bpf.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address

from bpfgen.inputs.fields import DNS_LABEL, DNS_SUBDOMAIN, Scope
from bpfgen.inputs.source import Node
from bpfgen.model import (
    Backend,
    Protocol,
)


@dataclass(frozen=True)
class Endpoint:
    address: IPv4Address
    node_name: str | None
    ready: bool
    serving: bool
    terminating: bool
    zone_hints: tuple[str, ...] = ()  # hints.forZones[].name
    node_hints: tuple[str, ...] = ()  # hints.forNodes[].name (PreferSameNode)


@dataclass
class Slice:
    service_key: str
    ports: list[tuple[str, Protocol, int]]  # (name, protocol, port); SCTP and "all ports" left out
    endpoints: list[Endpoint]


def read_slice_ports(s: Scope, fields: dict[str, Node]) -> list[tuple[str, Protocol, int]] | None:
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
            name = s.name(port_fields["name"], f"{path}.name", DNS_LABEL, "a port name", empty=True)
        protocol = "TCP"
        if "protocol" in port_fields:
            protocol = (
                s.choice(
                    port_fields["protocol"],
                    f"{path}.protocol",
                    ("TCP", "UDP", "SCTP"),
                    "a protocol",
                )
                or ""
            )
        port = None
        if "port" in port_fields:  # absent: "all ports", which Services never produce
            port = s.port(port_fields["port"], f"{path}.port")
        if name is not None and protocol in ("TCP", "UDP") and port is not None:
            result.append((name, Protocol(protocol), port))
    return result


def read_endpoints(s: Scope, fields: dict[str, Node]) -> list[Endpoint] | None:
    if "endpoints" not in fields:
        return []
    items = s.sequence(fields["endpoints"], "endpoints")
    if items is None:
        return None
    result: list[Endpoint] = []
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
                s.error(
                    endpoint["addresses"].line,
                    f"{path}.addresses",
                    "is empty (an endpoint needs an address)",
                )
            elif addresses:
                address = s.ipv4(addresses[0], f"{path}.addresses[0]")
        node_name = None
        if "nodeName" in endpoint:
            node_name = s.name(
                endpoint["nodeName"], f"{path}.nodeName", DNS_SUBDOMAIN, "a node name"
            )
        conditions = (
            s.mapping(endpoint["conditions"], f"{path}.conditions")
            if "conditions" in endpoint
            else {}
        )
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
        hints = s.mapping(endpoint["hints"], f"{path}.hints") if "hints" in endpoint else None
        zones = _hint_names(s, hints, "forZones", path, lambda n, w: s.label_value(n, w))
        nodes = _hint_names(
            s, hints, "forNodes", path, lambda n, w: s.name(n, w, DNS_SUBDOMAIN, "a node name")
        )
        result.append(Endpoint(address, node_name, ready, bool(serving), terminating, zones, nodes))
    return result


def _hint_names(
    s: Scope,
    hints: dict[str, Node] | None,
    field: str,
    path: str,
    read: Callable[[Node, str], str | None],
) -> tuple[str, ...]:
    """hints.forZones[].name or hints.forNodes[].name, each once, in order."""
    if not hints or field not in hints:
        return ()
    items = s.sequence(hints[field], f"{path}.hints.{field}") or ()
    names: list[str] = []
    for j, item in enumerate(items):
        where = f"{path}.hints.{field}[{j}]"
        entry = s.mapping(item, where, None, ("name",))
        name = read(entry["name"], f"{where}.name") if entry and "name" in entry else None
        if name is not None and name not in names:
            names.append(name)
    return tuple(names)


def topology_target(
    endpoints: list[Endpoint], node_name: str | None, zone: str | None
) -> Callable[[Endpoint], bool] | None:
    """kube-proxy's topologyModeFromHints: which ready endpoints hints narrow the Service
    to, or None when hints do not apply. PreferSameNode first: every ready endpoint has
    node hints and one is hinted for this node (`hints.forNodes`, Kubernetes 1.33's
    PreferSameTrafficDistribution, on by default); else the zone: every ready endpoint
    has zone hints and one is hinted for the node's zone (else a partly hinted slice, or
    a node or zone left without endpoints, would narrow the Service)."""
    ready = [e for e in endpoints if e.ready]
    if not ready:
        return None
    if (node_name is not None and all(e.node_hints for e in ready)
            and any(node_name in e.node_hints for e in ready)):  # fmt: skip
        return lambda e: node_name in e.node_hints
    if (zone is not None and all(e.zone_hints for e in ready)
            and any(zone in e.zone_hints for e in ready)):  # fmt: skip
        return lambda e: zone in e.zone_hints
    return None


def backends_of(
    port_name: str, port_protocol: Protocol, slices: list[Slice], node_name: str | None,
    zone: str | None = None,
) -> tuple[tuple[Backend, ...], tuple[Backend, ...], tuple[Backend, ...],
           tuple[Backend, ...] | None]:  # fmt: skip
    """Ready endpoints of a service port (if none, the serving terminating ones), the
    other listed endpoints of the port (draining: existing sessions only), the serving
    terminating ones (a Local policy's fallback: ServicePort.local_backends), and the
    ready ones hinted for this node or `zone` when topology hints apply (None when they
    do not: topology_target)."""
    candidates = [
        (endpoint, number)
        for slice_ in slices
        for name, protocol, number in slice_.ports
        if name == port_name and protocol is port_protocol
        for endpoint in slice_.endpoints
    ]
    chosen = [(e, n) for e, n in candidates if e.ready]
    if not chosen:
        chosen = [(e, n) for e, n in candidates if e.serving and e.terminating]

    def unique(endpoints: list[tuple[Endpoint, int]]) -> dict[tuple[IPv4Address, int], Backend]:
        out: dict[tuple[IPv4Address, int], Backend] = {}
        for endpoint, number in sorted(
            endpoints, key=lambda c: (c[0].address, c[1], c[0].node_name or "")
        ):
            out.setdefault(
                (endpoint.address, number),
                Backend(
                    address=endpoint.address,
                    port=number,
                    node_name=endpoint.node_name,
                    local=node_name is not None and endpoint.node_name == node_name,
                ),
            )
        return out

    backends = unique(chosen)
    draining = {k: b for k, b in unique(candidates).items() if k not in backends}
    fallback = unique([(e, n) for e, n in candidates if e.serving and e.terminating])
    zoned = None
    hinted = topology_target([e for e, _ in candidates], node_name, zone)
    if hinted is not None:
        zoned = tuple(unique([(e, n) for e, n in candidates
                              if e.ready and hinted(e)]).values())  # fmt: skip
    return tuple(backends.values()), tuple(draining.values()), tuple(fallback.values()), zoned

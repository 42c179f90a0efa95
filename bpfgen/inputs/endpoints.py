"""EndpointSlices' ports and endpoints, and which endpoints back a Service port.

A port's backends are its ready endpoints (if none, the serving terminating ones),
as kube-proxy takes them; the other listed endpoints are draining: they keep
their sessions in the bpf mode (docs/datapath-bpf.md).
"""

from __future__ import annotations

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
            name = s.name(port_fields["name"], f"{path}.name", DNS_LABEL, "a port name",
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
                s.error(endpoint["addresses"].line, f"{path}.addresses",
                        "is empty (an endpoint needs an address)")
            elif addresses:
                address = s.ipv4(addresses[0], f"{path}.addresses[0]")
        node_name = None
        if "nodeName" in endpoint:
            node_name = s.name(endpoint["nodeName"], f"{path}.nodeName", DNS_SUBDOMAIN,
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
        hints = _zone_hints(s, endpoint, path)
        result.append(Endpoint(address, node_name, ready, bool(serving), terminating, hints))
    return result


def _zone_hints(s: Scope, endpoint: dict[str, Node], path: str) -> tuple[str, ...]:
    hints = s.mapping(endpoint["hints"], f"{path}.hints") if "hints" in endpoint else None
    if not hints or "forZones" not in hints:
        return ()
    items = s.sequence(hints["forZones"], f"{path}.hints.forZones") or ()
    zones: list[str] = []
    for j, item in enumerate(items):
        where = f"{path}.hints.forZones[{j}]"
        zone = s.mapping(item, where, None, ("name",))
        name = s.label_value(zone["name"], f"{where}.name") if zone and "name" in zone else None
        if name is not None and name not in zones:
            zones.append(name)
    return tuple(zones)


def topology_allows(endpoints: list[Endpoint], zone: str | None) -> bool:
    """kube-proxy's canUseTopology: hints are used only when the node has a zone, every
    ready endpoint carries zone hints, and one of them is hinted for this zone (else a
    partly hinted slice, or a zone left without endpoints, would narrow the Service)."""
    ready = [e for e in endpoints if e.ready]
    return (zone is not None and bool(ready) and all(e.zone_hints for e in ready)
            and any(zone in e.zone_hints for e in ready))  # fmt: skip


def backends_of(
    port_name: str, port_protocol: Protocol, slices: list[Slice], node_name: str | None,
    zone: str | None = None,
) -> tuple[tuple[Backend, ...], tuple[Backend, ...], tuple[Backend, ...],
           tuple[Backend, ...] | None]:  # fmt: skip
    """Ready endpoints of a service port (if none, the serving terminating ones), the
    other listed endpoints of the port (draining: existing sessions only), the serving
    terminating ones (a Local policy's fallback: ServicePort.local_backends), and the
    ready ones hinted for `zone` when topology hints apply (None when they do not)."""
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
        for endpoint, number in sorted(endpoints,
                                       key=lambda c: (c[0].address, c[1], c[0].node_name or "")):
            out.setdefault((endpoint.address, number), Backend(
                address=endpoint.address, port=number, node_name=endpoint.node_name,
                local=node_name is not None and endpoint.node_name == node_name,
            ))
        return out

    backends = unique(chosen)
    draining = {k: b for k, b in unique(candidates).items() if k not in backends}
    fallback = unique([(e, n) for e, n in candidates if e.serving and e.terminating])
    zoned = None
    if topology_allows([e for e, _ in candidates], zone):
        zoned = tuple(unique([(e, n) for e, n in candidates
                              if e.ready and zone in e.zone_hints]).values())  # fmt: skip
    return tuple(backends.values()), tuple(draining.values()), tuple(fallback.values()), zoned

"""What bpfgen does not serve is skipped object by object, never the node (issue 16).

Valid Kubernetes that bpfgen cannot serve yet (an IPv6 address, an SCTP port, a
ClusterIP of a second ServiceCIDR, an external frontend another Service holds) is
skipped with a notice and an `Inputs.skipped` record, and the rest is served as if it
were not there; `--strict` (load_inputs(strict=True)) refuses it with the problem.
Objects no proxy serves (another proxy's, headless) are skipped in both.
"""

from __future__ import annotations

import textwrap
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    UNSUPPORTED_KINDS,
    GeneratedConfig,
    unsupported_addition,
    valid_configs,
    with_objects,
)

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.model import Inputs
from bpfgen.plan import make_plan

NODE = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {name: node-a, addresses: [198.18.0.2], podCIDR: 198.19.1.0/24}
cluster: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17}
interfaces: [{name: eth0, role: uplink}, {name: "veth*", role: pods}]
snat: {portRange: [20000, 29999]}
"""


def load(tmp_path: Path, *texts: str, strict: bool = False) -> Inputs:
    (tmp_path / "node.yaml").write_text(NODE)
    paths = []
    for i, text in enumerate(texts):
        paths.append(tmp_path / f"s{i}.yaml")
        paths[-1].write_text(textwrap.dedent(text))
    return load_inputs(tmp_path / "node.yaml", paths, strict)


def service(
    name: str,
    cluster_ip: str,
    *,
    namespace: str = "default",
    created: str | None = None,
    extra: str = "",
    ports: str = "[{name: http, port: 80}]",
    type_: str = "LoadBalancer",
) -> str:
    stamp = f", creationTimestamp: '{created}'" if created else ""
    return f"""\
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: {name}, namespace: {namespace}{stamp}}}
        spec:
          type: {type_}
          allocateLoadBalancerNodePorts: false
          clusterIP: {cluster_ip}
          ports: {ports}
        {extra}"""


def frontends(inputs: Inputs) -> list[tuple[str, str, int]]:
    plan = make_plan(inputs)
    return sorted((f.service, str(f.addr), f.port) for f in plan.frontends if f.addr is not None)


def test_a_cluster_ip_keeps_its_frontend_against_any_external_address(tmp_path: Path) -> None:
    """CVE-2020-8554: an externalIP at another Service's ClusterIP does not capture it,
    however old the Service that lists it."""
    old = service("thief", "198.18.128.20", created="2019-01-01T00:00:00Z",
                  extra="  externalIPs: [198.18.128.10, 198.18.1.5]")  # fmt: skip
    victim = service("victim", "198.18.128.10", created="2024-01-01T00:00:00Z")
    for order in ((old, victim), (victim, old)):
        inputs = load(tmp_path, *order)
        assert frontends(inputs) == [
            ("default/thief", "198.18.1.5", 80),
            ("default/thief", "198.18.128.20", 80),
            ("default/victim", "198.18.128.10", 80),
        ]
        (skip,) = inputs.skipped
        assert (skip.object, skip.part, skip.unsupported) == (
            "Service default/thief", "spec.ports[0]", True,
        )  # fmt: skip
        assert skip.reason.startswith(
            "198.18.128.10:80/TCP is already taken by Service default/victim spec.ports[0]"
        )
        assert skip.reason.endswith(": not served at 198.18.128.10")


def test_the_older_service_keeps_a_shared_external_frontend(tmp_path: Path) -> None:
    """Two Services with one LB IP:port: the older keeps it, whatever the file order and
    the names; without timestamps, the first by namespace/name."""
    lb = "status: {loadBalancer: {ingress: [{ip: 198.18.1.7}]}}"
    young = service("a-young", "198.18.128.11", created="2025-06-01T00:00:00Z", extra=lb)
    old = service("z-old", "198.18.128.12", created="2020-06-01T00:00:00Z", extra=lb)
    for order in ((young, old), (old, young)):
        inputs = load(tmp_path, *order)
        assert ("default/z-old", "198.18.1.7", 80) in frontends(inputs)
        assert ("default/a-young", "198.18.1.7", 80) not in frontends(inputs)
        young_svc = next(s for s in inputs.services if s.name == "a-young")
        assert young_svc.ports[0].shadowed == (IPv4Address("198.18.1.7"),)
    unstamped = [service(n, ip, extra=lb) for n, ip in (("b", "198.18.128.13"),
                                                        ("a", "198.18.128.14"))]  # fmt: skip
    inputs = load(tmp_path, *unstamped)
    assert ("default/a", "198.18.1.7", 80) in frontends(inputs)
    with pytest.raises(InputError, match=r"198\.18\.1\.7:80/TCP is already taken by Service "
                       r"default/a spec\.ports\[0\]"):  # fmt: skip
        load(tmp_path, *unstamped, strict=True)


def test_source_ranges_of_a_shadowed_lb_ip_guard_nothing(tmp_path: Path) -> None:
    """The losing Service's loadBalancerSourceRanges must not filter the winner's clients."""
    lb = "status: {loadBalancer: {ingress: [{ip: 198.18.1.7}]}}"
    ranges = "  loadBalancerSourceRanges: [198.18.9.0/24]\n" + " " * 8 + lb
    winner = service("a", "198.18.128.11", created="2020-01-01T00:00:00Z", extra=lb)
    loser = service("b", "198.18.128.12", created="2021-01-01T00:00:00Z", extra=ranges)
    plan = make_plan(load(tmp_path, winner, loser))
    assert [r.service for r in plan.source_ranges] == []


def test_dual_stack_is_served_at_its_ipv4_addresses(tmp_path: Path) -> None:
    text = service("web", "198.18.128.10",
                   extra="  clusterIPs: [198.18.128.10, '2001:db8::10']\n"
                         "          ipFamilies: [IPv4, IPv6]\n"
                         "          externalIPs: ['2001:db8::11', 198.18.1.9]")  # fmt: skip
    inputs = load(tmp_path, text)
    (web,) = inputs.services
    assert web.cluster_ips == (IPv4Address("198.18.128.10"),)
    assert web.external_ips == (IPv4Address("198.18.1.9"),)
    assert [(k.part, k.reason) for k in inputs.skipped] == [
        ("spec.clusterIPs[1]", "2001:db8::10 is IPv6: not served yet (IPv4 only)"),
        ("spec.externalIPs[0]", "2001:db8::11 is IPv6: not served yet (IPv4 only)"),
    ]
    with pytest.raises(InputError, match=r"spec\.clusterIPs\[1\]: IPv6 is not supported yet"):
        load(tmp_path, text, strict=True)


def test_an_sctp_port_is_skipped_and_the_others_served(tmp_path: Path) -> None:
    ports = "[{name: sig, port: 38412, protocol: SCTP}, {name: http, port: 80}]"
    inputs = load(tmp_path, service("amf", "198.18.128.10", ports=ports, type_="ClusterIP"))
    (amf,) = inputs.services
    assert [(p.name, p.port) for p in amf.ports] == [("http", 80)]
    (skip,) = inputs.skipped
    assert (skip.part, skip.reason) == (
        "spec.ports[0].protocol", "SCTP is not served yet (TCP, UDP): port skipped",
    )  # fmt: skip


@pytest.mark.parametrize(
    "label", ["service.kubernetes.io/service-proxy-name", "service.kubernetes.io/headless"]
)
def test_objects_kube_proxy_does_not_list_are_skipped_even_when_strict(
    tmp_path: Path, label: str
) -> None:
    text = f"""\
        apiVersion: v1
        kind: Service
        metadata:
          name: mesh
          labels: {{{label}: x}}
        spec: {{clusterIP: 198.18.128.10, ports: [{{port: 80}}]}}
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: mesh-1
          labels: {{kubernetes.io/service-name: mesh, {label}: x}}
        addressType: IPv4
        endpoints: [{{addresses: [198.19.1.10]}}]
        """
    for strict in (False, True):
        inputs = load(tmp_path, text, strict=strict)
        assert inputs.services == ()
        assert [(k.object, k.unsupported) for k in inputs.skipped] == [
            ("Service default/mesh", False),
            ("EndpointSlice default/mesh-1", False),
        ]


def _projection(inputs: Inputs, keys: set[str]) -> list[Any]:
    """What the plan decides for the Services in `keys`, without positions (ids)."""
    plan = make_plan(inputs)
    return sorted(
        (f.kind.value, f.service, f.port_name, str(f.addr), f.port, f.protocol.value,
         f.masq.value, tuple(f.backends), tuple(f.draining))
        for f in plan.frontends if f.service in keys
    )  # fmt: skip


@given(
    cfg=valid_configs(min_services=1, max_services=5, max_endpoints=4, modes=("ipvs", "bpf")),
    kind=st.sampled_from(UNSUPPORTED_KINDS),
)
def test_an_unsupported_object_changes_nothing_else(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig, kind: str
) -> None:
    """Adding one object bpfgen does not serve leaves every other Service's model and
    frontends as they were; the object is named in a notice and a skip record, and
    --strict refuses it with the problem."""
    tmp = tmp_path_factory.mktemp("skip")
    node, services = tmp / "node.yaml", tmp / "services.yaml"  # one path: Service.source
    node.write_text(cfg.node_yaml)
    services.write_text(cfg.services_yaml)
    base = load_inputs(node, [services])
    added = unsupported_addition(cfg, kind)
    services.write_text(with_objects(cfg, added.objects))
    more = load_inputs(node, [services])

    own = {s.key for s in base.services}
    assert tuple(s for s in more.services if s.key in own) == base.services
    assert {s.key for s in more.services} - own == ({added.service} if added.served else set())
    assert _projection(more, own) == _projection(base, own)
    new = [k for k in more.skipped if k not in base.skipped]
    assert new and all(added.service.split("/")[1] in k.object for k in new)
    assert any(added.notice in n for n in more.notices)
    if added.problem is None:
        load_inputs(node, [services], strict=True)
    else:
        with pytest.raises(InputError) as raised:
            load_inputs(node, [services], strict=True)
        assert added.problem in str(raised.value)

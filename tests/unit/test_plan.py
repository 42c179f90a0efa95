"""Plan decisions that need no kernel."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

from bpfgen.inputs import load_inputs
from bpfgen.model import Mode
from bpfgen.plan import PLANNERS, FrontendKind, Masq, make_plan
from bpfgen.render import render

NODE = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {name: node-a, addresses: [198.18.0.2], podCIDR: 198.19.1.0/24}
cluster: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17}
interfaces:
  - {name: eth0, role: uplink}
"""

ONE_ADDRESS_TWO_ROLES = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: lb, namespace: default}
  spec:
    type: LoadBalancer
    clusterIP: 198.18.128.20
    externalIPs: [198.18.64.9, 198.18.128.20]
    ports: [{port: 443, protocol: TCP, nodePort: 30443}]
  status: {loadBalancer: {ingress: [{ip: 198.18.64.9}]}}
"""


def test_an_address_in_two_roles_yields_one_frontend(tmp_path: Path) -> None:
    (tmp_path / "node.yaml").write_text(NODE)
    (tmp_path / "svc.yaml").write_text(ONE_ADDRESS_TWO_ROLES)
    inputs = load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"])
    for generic in (False, True):
        plan = make_plan(inputs, generic=generic)
        got = [(f.kind, str(f.addr), f.port, f.masq) for f in plan.frontends]
        assert got == [
            (FrontendKind.CLUSTER_IP, "198.18.128.20", 443, Masq.IF_OUTSIDE),
            (FrontendKind.NODE_PORT, "None", 30443, Masq.ALWAYS),
            (FrontendKind.EXTERNAL_IP, "198.18.64.9", 443, Masq.ALWAYS),
        ]
        # the frontends, and one (VIP, port 0, protocol 0) entry per VIP
        assert len(plan.map_init.get("bpfgen_frontends", ())) == (3 + 2 if generic else 0)
    # One case label per address:port in the generated switch.
    header = render(make_plan(inputs)).text("node_config.h")
    assert header.count("case __bpf_constant_htons(443)") == 2


def test_every_mode_has_a_planner() -> None:
    assert set(PLANNERS) == set(Mode)


LOCAL_TERMINATING = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec:
    type: NodePort
    clusterIP: 198.18.128.30
    externalTrafficPolicy: Local
    ports: [{name: http, port: 80, protocol: TCP, nodePort: 30080}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-1
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - {addresses: [198.19.2.7], nodeName: node-b}
  - addresses: [198.19.1.7]
    nodeName: node-a
    conditions: {ready: false, serving: true, terminating: true}
  - addresses: [198.19.1.8]
    nodeName: node-a
    conditions: {ready: false, serving: false, terminating: true}
"""


LOCAL_ELSEWHERE = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: remote, namespace: default}
  spec:
    type: NodePort
    clusterIP: 198.18.128.31
    externalTrafficPolicy: Local
    internalTrafficPolicy: Local
    ports: [{name: http, port: 80, protocol: TCP, nodePort: 30081}]
- apiVersion: v1
  kind: Service
  metadata: {name: empty, namespace: default}
  spec:
    type: NodePort
    clusterIP: 198.18.128.32
    externalTrafficPolicy: Local
    ports: [{name: http, port: 80, protocol: TCP, nodePort: 30082}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: remote-1
    namespace: default
    labels: {kubernetes.io/service-name: remote}
  addressType: IPv4
  ports: [{name: http, port: 8080, protocol: TCP}]
  endpoints:
  - {addresses: [198.19.2.7], nodeName: node-b}
"""


def test_local_policy_with_endpoints_only_elsewhere_drops(tmp_path: Path) -> None:
    """issue 15: kube-proxy rejects only a Service without any endpoint. A Local policy
    (external or internal) that leaves none on this node while another node has some
    drops new flows: Masq.DROP, no backends; the Service without endpoints still rejects
    (its frontends keep their masquerade policy and have no backends). Both modes."""
    for mode in ("ipvs", "bpf"):
        (tmp_path / "node.yaml").write_text(NODE + f"datapath: {{mode: {mode}}}\n")
        (tmp_path / "svc.yaml").write_text(LOCAL_ELSEWHERE)
        plan = make_plan(load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"]))
        got = {(f.service, f.kind): (f.masq, len(f.backends)) for f in plan.frontends}
        # bpf mode: both of remote's policies are Local, so its pods have a hidden
        # frontend with the Cluster policy's endpoint (test_pod_shortcut_...).
        shortcut = {("default/remote", FrontendKind.POD_SHORTCUT): (Masq.NEVER, 1)}
        assert got == {
            ("default/remote", FrontendKind.CLUSTER_IP): (Masq.DROP, 0),
            ("default/remote", FrontendKind.NODE_PORT): (Masq.DROP, 0),
            ("default/empty", FrontendKind.CLUSTER_IP): (Masq.IF_OUTSIDE, 0),
            ("default/empty", FrontendKind.NODE_PORT): (Masq.NEVER, 0),
        } | (shortcut if mode == "bpf" else {}), mode


def test_pod_shortcut_is_a_hidden_frontend_after_the_real_ones(tmp_path: Path) -> None:
    """issue 15: both policies Local. kube-proxy sends a pod's (and the node's) traffic to
    an external address to the Cluster policy's endpoints; the ClusterIP's frontend has
    this node's only. The bpf mode adds one hidden frontend per Service port, numbered
    last and keyed at 0.0.0.1 (0.0.0.0/8: never a destination, no VIP), which the
    NodePort's pod_twin names; the ipvs mode adds none."""
    (tmp_path / "node.yaml").write_text(NODE + "datapath: {mode: bpf}\n")
    (tmp_path / "svc.yaml").write_text(LOCAL_ELSEWHERE)
    plan = make_plan(load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"]))
    *real, hidden = plan.frontends
    assert hidden.kind is FrontendKind.POD_SHORTCUT and hidden.index == len(real)
    assert (hidden.addr, hidden.port) == (IPv4Address("0.0.0.1"), 80)
    assert [str(b.address) for b in hidden.backends] == ["198.19.2.7"]
    (node_port,) = [f for f in real if f.kind is FrontendKind.NODE_PORT
                    and f.service == "default/remote"]  # fmt: skip
    assert node_port.pod_twin == (IPv4Address("0.0.0.1"), 80)
    assert all(f.kind is not FrontendKind.POD_SHORTCUT for f in real)
    assert plan.svc is not None
    assert "0.0.0.1" not in [v.comment for v in plan.svc.vips]  # no echo answered there


def test_local_policy_falls_back_to_this_nodes_serving_terminating(tmp_path: Path) -> None:
    """issue 15: kube-proxy falls back per set of endpoints. The NodePort (Local) has no
    ready endpoint on node-a while node-b has one: it serves node-a's serving terminating
    endpoint (was: no backend, rejected); the ClusterIP (Cluster) keeps the ready one.
    One plan feeds both modes: the bpf mode's frontends and the ipvs mode's real servers."""
    for mode in ("ipvs", "bpf"):
        (tmp_path / "node.yaml").write_text(NODE + f"datapath: {{mode: {mode}}}\n")
        (tmp_path / "svc.yaml").write_text(LOCAL_TERMINATING)
        plan = make_plan(load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"]))
        got = {f.kind: ([str(b.address) for b in f.backends], [str(b.address) for b in f.draining])
               for f in plan.frontends}  # fmt: skip
        want_draining = ["198.19.1.8"] if mode == "bpf" else []
        assert got == {
            FrontendKind.CLUSTER_IP: (
                ["198.19.2.7"],
                ["198.19.1.7", "198.19.1.8"] if mode == "bpf" else [],
            ),
            FrontendKind.NODE_PORT: (["198.19.1.7"], want_draining),
        }, mode


def _zoned(hints: list[list[str]], zone: str | None) -> str:
    """A node (zone or none) and a Service whose endpoints carry these zone hints."""
    endpoints = "".join(
        f"  - addresses: [198.19.2.{10 + i}]\n    nodeName: node-b\n"
        + (f"    hints: {{forZones: [{', '.join(f'{{name: {z}}}' for z in zs)}]}}\n" if zs else "")
        for i, zs in enumerate(hints)
    )
    return (
        ("" if zone is None else zone)
        + f"""\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {{name: web, namespace: default}}
  spec:
    type: NodePort
    clusterIP: 198.18.128.33
    externalTrafficPolicy: Local
    ports: [{{name: http, port: 80, protocol: TCP, nodePort: 30083}}]
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-1
    namespace: default
    labels: {{kubernetes.io/service-name: web}}
  addressType: IPv4
  ports: [{{name: http, port: 8080, protocol: TCP}}]
  endpoints:
{endpoints}"""
    )


def test_topology_hints_as_kube_proxy_uses_them(tmp_path: Path) -> None:
    """issue 15: EndpointSlice hints.forZones with the node's zone (node.zone). Used only
    when every ready endpoint is hinted and one is hinted for this zone; then the Cluster
    policy (the ClusterIP here) selects this zone's endpoints, the other ready ones keep
    their sessions (bpf mode); the Local policy (the NodePort) ignores hints."""
    cases = {
        "all hinted, one for zone-a": (
            [["zone-a"], ["zone-b"], ["zone-b", "zone-a"]],
            "zone-a",
            ["198.19.2.10", "198.19.2.12"],
        ),
        "one endpoint without hints": ([["zone-a"], [], ["zone-b"]], "zone-a", None),
        "no endpoint for this zone": ([["zone-b"], ["zone-c"]], "zone-a", None),
        "node without a zone": ([["zone-a"], ["zone-b"]], None, None),
    }
    for name, (hints, zone, want) in cases.items():
        for mode in ("ipvs", "bpf"):
            node = NODE.replace(
                "podCIDR: 198.19.1.0/24}",
                "podCIDR: 198.19.1.0/24" + (f", zone: {zone}}}" if zone else "}"),
            )
            (tmp_path / "node.yaml").write_text(node + f"datapath: {{mode: {mode}}}\n")
            (tmp_path / "svc.yaml").write_text(_zoned(hints, None))
            plan = make_plan(load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"]))
            everyone = [f"198.19.2.{10 + i}" for i in range(len(hints))]
            got = {
                f.kind: ([str(b.address) for b in f.backends], [str(b.address) for b in f.draining])
                for f in plan.frontends
            }
            chosen = want if want is not None else everyone
            held = [a for a in everyone if a not in chosen] if mode == "bpf" else []
            assert got[FrontendKind.CLUSTER_IP] == (chosen, held), (name, mode)
            # Local policy: no endpoint on node-a, others elsewhere: DROP, hints or not
            assert got[FrontendKind.NODE_PORT] == ([], []), (name, mode)


def test_node_hints_come_before_zone_hints(tmp_path: Path) -> None:
    """issue 15: hints.forNodes (PreferSameNode, Kubernetes 1.33) as kube-proxy's
    topologyModeFromHints uses them: when every ready endpoint has node hints and one is
    for this node (node-a), only those; else the zone hints' rule; partial node hints are
    ignored. Both modes: the Cluster-policy ClusterIP's backends."""

    def endpoint(i: int, nodes: list[str], zones: list[str]) -> str:
        hints = []
        if nodes:
            hints.append(f"forNodes: [{', '.join(f'{{name: {n}}}' for n in nodes)}]")
        if zones:
            hints.append(f"forZones: [{', '.join(f'{{name: {z}}}' for z in zones)}]")
        return f"  - addresses: [198.19.2.{10 + i}]\n    nodeName: node-b\n" + (
            f"    hints: {{{', '.join(hints)}}}\n" if hints else ""
        )

    cases = {
        "node hints, one for node-a": (
            [(["node-a"], ["zone-a"]), (["node-b"], ["zone-a"]), (["node-c"], ["zone-b"])],
            ["198.19.2.10"],
        ),
        "node hints, none for node-a: zone hints": (
            [(["node-b"], ["zone-a"]), (["node-c"], ["zone-a"]), (["node-d"], ["zone-b"])],
            ["198.19.2.10", "198.19.2.11"],
        ),
        "one without node hints: zone hints": (
            [(["node-a"], ["zone-b"]), ([], ["zone-a"])],
            ["198.19.2.11"],
        ),
        "node hints only": ([(["node-a"], []), (["node-b"], [])], ["198.19.2.10"]),
    }
    for name, (hints, want) in cases.items():
        for mode in ("ipvs", "bpf"):
            node = NODE.replace("podCIDR: 198.19.1.0/24}", "podCIDR: 198.19.1.0/24, zone: zone-a}")
            (tmp_path / "node.yaml").write_text(node + f"datapath: {{mode: {mode}}}\n")
            svc = _zoned([], None).replace(
                "  endpoints:\n",
                "  endpoints:\n" + "".join(endpoint(i, n, z) for i, (n, z) in enumerate(hints)),
            )
            (tmp_path / "svc.yaml").write_text(svc)
            plan = make_plan(load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"]))
            (cluster,) = [f for f in plan.frontends if f.kind is FrontendKind.CLUSTER_IP]
            assert [str(b.address) for b in cluster.backends] == want, (name, mode)

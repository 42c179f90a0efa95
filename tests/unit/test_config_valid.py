"""Valid inputs: what `load_inputs` builds from them, in every accepted form."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.model import (
    Backend,
    Hook,
    Inputs,
    Interface,
    Mode,
    Protocol,
    Role,
    Service,
    ServiceType,
    Timeouts,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL_NODE = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {name: node-a, addresses: [198.18.0.2], podCIDR: 198.19.1.0/24}
cluster: {podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17}
interfaces: [{name: eth0, role: uplink}, {name: "veth*", role: pods}]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, services: str | list[str], node: str = MINIMAL_NODE) -> Inputs:
    texts = [services] if isinstance(services, str) else services
    paths = [write(tmp_path, f"services{i}.yaml", text) for i, text in enumerate(texts)]
    return load_inputs(write(tmp_path, "node.yaml", node), paths)


def example() -> Inputs:
    return load_inputs(EXAMPLES / "node.yaml", [EXAMPLES / "services.yaml"])


def example_items() -> list[dict[str, Any]]:
    items = yaml.safe_load((EXAMPLES / "services.yaml").read_text())["items"]
    assert isinstance(items, list)
    return items


def comparable(inputs: Inputs) -> tuple[Service, ...]:
    """The services without `source` (file:line differs between forms)."""
    return tuple(dataclasses.replace(s, source="") for s in inputs.services)


def service(inputs: Inputs, key: str) -> Service:
    (found,) = [s for s in inputs.services if s.key == key]
    return found


def addresses(service: Service, port: int = 0) -> list[str]:
    return [str(b.address) for b in service.ports[port].backends]


# ----------------------------------------------------------------------------- the example


def test_example_node() -> None:
    node = example().node
    assert node.source == str(EXAMPLES / "node.yaml")
    assert node.name == "node-a"
    assert node.addresses == (IPv4Address("198.18.0.2"),)
    assert node.pod_cidr == IPv4Network("198.19.1.0/24")
    assert node.cluster_pod_cidr == IPv4Network("198.19.0.0/16")
    assert node.service_cidr == IPv4Network("198.18.128.0/17")
    assert node.masquerade_all is False
    assert node.node_port_range == (30000, 32767)
    assert node.interfaces == (
        Interface("eth0", Role.UPLINK, Hook.TC),
        Interface("veth*", Role.PODS, Hook.TC),
    )
    assert (node.mode, node.scheduler) == (Mode.IPVS, "rr")
    assert node.snat_port_range == (20000, 29999)
    assert node.max_sessions == 65536
    assert node.timeouts == Timeouts(
        tcp_established=7440, tcp_transitory=240, udp=300, icmp=60, tcp_time_wait=120, tcp_close=10
    )
    assert node.masquerade_mark == 0x4000
    assert node.icmp_echo is True


def test_example_services() -> None:
    inputs = example()
    assert [s.key for s in inputs.services] == [
        "default/kubernetes",
        "default/web",
        "kube-system/kube-dns",
        "shop/checkout",
        "shop/frontend",
    ]
    assert inputs.notices == (
        f"{EXAMPLES / 'services.yaml'}:210: Service default/db: headless (clusterIP: None): "
        "skipped",
        f"{EXAMPLES / 'services.yaml'}:518: EndpointSlice default/db-h6j9k: labelled "
        "service.kubernetes.io/headless (nothing to proxy): skipped",
    )
    assert [(k.object, k.unsupported) for k in inputs.skipped] == [
        ("Service default/db", False),
        ("EndpointSlice default/db-h6j9k", False),
    ]
    dns = service(inputs, "kube-system/kube-dns")
    assert [(p.name, p.protocol, p.port) for p in dns.ports] == [
        ("dns", Protocol.UDP, 53),
        ("dns-tcp", Protocol.TCP, 53),
        ("metrics", Protocol.TCP, 9153),
    ]
    assert dns.ports[2].backends == (
        Backend(IPv4Address("198.19.1.5"), 9153, "node-a", local=True),
        Backend(IPv4Address("198.19.2.7"), 9153, "node-b", local=False),
    )
    web = service(inputs, "default/web")
    assert web.type is ServiceType.CLUSTER_IP
    assert web.cluster_ips == (IPv4Address("198.18.140.23"),)
    assert addresses(web) == ["198.19.1.21", "198.19.2.13"]  # 198.19.2.12 is not ready
    assert web.source == f"{EXAMPLES / 'services.yaml'}:73"
    checkout = service(inputs, "shop/checkout")
    assert checkout.type is ServiceType.NODE_PORT
    assert checkout.ports[0].node_port == 30080
    assert checkout.external_traffic_local and not checkout.internal_traffic_local
    frontend = service(inputs, "shop/frontend")
    assert frontend.type is ServiceType.LOAD_BALANCER
    assert frontend.load_balancer_ips == (IPv4Address("198.18.64.10"),)
    assert frontend.session_affinity_timeout == 10800
    assert [(p.name, p.port, p.node_port) for p in frontend.ports] == [
        ("http", 80, 31380),
        ("https", 443, 31443),
    ]
    assert [b.port for b in frontend.ports[1].backends] == [8443, 8443]
    kubernetes = service(inputs, "default/kubernetes")
    assert kubernetes.ports[0].backends == (
        Backend(IPv4Address("198.18.0.2"), 6443, None, local=False),
    )


# ----------------------------------------------------------------------------- forms


def test_multi_document_stream_gives_the_same_model(tmp_path: Path) -> None:
    text = yaml.safe_dump_all([None, *example_items(), None], explicit_start=True)
    assert comparable(load(tmp_path, text, EXAMPLE_NODE())) == comparable(example())


def test_json_gives_the_same_model(tmp_path: Path) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": example_items()}
    text = json.dumps(listing, indent="\t")  # tabs: valid JSON, not valid YAML indentation
    assert "\t" in text
    assert comparable(load(tmp_path, text, EXAMPLE_NODE())) == comparable(example())


def test_typed_lists_and_split_files_give_the_same_model(tmp_path: Path) -> None:
    items = example_items()
    services = [i for i in items if i["kind"] == "Service"]
    slices = [i for i in items if i["kind"] == "EndpointSlice"]
    for item in services + slices:  # as the API returns them: items carry no kind
        del item["kind"], item["apiVersion"]
    service_list = {"apiVersion": "v1", "kind": "ServiceList", "items": services}
    slice_list = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "items": slices}
    texts = [yaml.safe_dump(slice_list), json.dumps(service_list)]  # slices first, on purpose
    assert comparable(load(tmp_path, texts, EXAMPLE_NODE())) == comparable(example())


def test_node_file_as_json(tmp_path: Path) -> None:
    node = json.dumps(yaml.safe_load(MINIMAL_NODE), indent=2)
    assert load(tmp_path, "", node).node == load(tmp_path, "").node


def EXAMPLE_NODE() -> str:  # noqa: N802 - reads as the constant it stands for
    return (EXAMPLES / "node.yaml").read_text()


def test_empty_and_comment_only_manifests(tmp_path: Path) -> None:
    inputs = load(tmp_path, ["", "# nothing\n", "---\n---\n...\n"])
    assert inputs.services == () and inputs.notices == ()


def test_anchors_and_merge_keys(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: a}
          spec: &spec
            clusterIP: 198.18.128.20
            ports: &ports [{name: http, port: 80}]
        - apiVersion: v1
          kind: Service
          metadata: {name: b}
          spec:
            <<: *spec
            clusterIP: 198.18.128.21
        """,
    )
    a, b = inputs.services
    assert (a.key, b.key) == ("default/a", "default/b")
    assert b.cluster_ips == (IPv4Address("198.18.128.21"),)
    assert a.ports == b.ports


# ----------------------------------------------------------------------------- node defaults


def test_node_defaults(tmp_path: Path) -> None:
    node = load(tmp_path, "").node
    assert node.masquerade_all is False
    assert node.node_port_range == (30000, 32767)
    assert node.interfaces[0].hook is Hook.TC
    assert (node.mode, node.scheduler) == (Mode.IPVS, "rr")
    assert node.snat_port_range == (20000, 29999)
    assert node.max_sessions == 65536
    assert node.timeouts == Timeouts(7440, 240, 300, 60)
    assert node.masquerade_mark == 0x4000
    assert node.icmp_echo is True


def test_node_value_forms(tmp_path: Path) -> None:
    text = MINIMAL_NODE.replace(
        "{name: eth0, role: uplink}", "{name: eth0, role: uplink, hook: xdp}"
    ) + textwrap.dedent("""\
        datapath: {scheduler: mh}
        snat:
          portRange: "40000-40015"
          timeouts: {tcpEstablished: 2h4m, tcpTransitory: 240, tcpTimeWait: 1m, tcpClose: 5s,
                     udp: 5m, icmp: 1m30s}
          mark: "0x80000000"
        features: {icmpEcho: false}
        """)
    node = load(tmp_path, "", text).node
    assert node.scheduler == "mh"
    assert node.snat_port_range == (40000, 40015)
    assert node.timeouts == Timeouts(7440, 240, 300, 90, tcp_time_wait=60, tcp_close=5)
    assert node.masquerade_mark == 1 << 31
    assert node.icmp_echo is False
    assert node.interfaces[0].hook is Hook.XDP


# ----------------------------------------------------------------------------- services


SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %(name)s, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: %(endpoints)s
"""
WEB = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 198.18.128.30
  ports: [{name: http, port: 80}]
"""


def web_with(tmp_path: Path, *endpoint_lists: str, spec: str = "") -> Service:
    slices = [SLICE % {"name": f"web-{i}", "endpoints": e} for i, e in enumerate(endpoint_lists)]
    text = "---\n".join([WEB + spec, *slices])
    return service(load(tmp_path, text), "default/web")


def test_ready_endpoints_only(tmp_path: Path) -> None:
    web = web_with(
        tmp_path,
        """[
        {addresses: [198.19.1.1], conditions: {ready: true}},
        {addresses: [198.19.1.2], conditions: {ready: false, serving: true, terminating: true}},
        {addresses: [198.19.1.3], conditions: {}},
        {addresses: [198.19.1.4]},
        {addresses: [198.19.1.5], conditions: {ready: false}}]""",
    )
    assert addresses(web) == ["198.19.1.1", "198.19.1.3", "198.19.1.4"]


def test_fallback_to_serving_terminating(tmp_path: Path) -> None:
    web = web_with(
        tmp_path,
        """[
        {addresses: [198.19.1.1], conditions: {ready: false}},
        {addresses: [198.19.1.2], conditions: {ready: false, serving: true, terminating: true}},
        {addresses: [198.19.1.3], conditions: {ready: false, serving: false, terminating: true}},
        {addresses: [198.19.1.4], conditions: {ready: false, serving: true}}]""",
        """[{addresses: [198.19.1.9], conditions: {ready: false, serving: true,
                                                  terminating: true}}]""",
    )
    assert addresses(web) == ["198.19.1.2", "198.19.1.9"]


def test_no_endpoints_at_all(tmp_path: Path) -> None:
    assert web_with(tmp_path, "[]").ports[0].backends == ()
    assert web_with(tmp_path).ports[0].backends == ()


def test_backends_deduplicated_sorted_and_local(tmp_path: Path) -> None:
    web = web_with(
        tmp_path,
        "[{addresses: [198.19.1.20]}, {addresses: [198.19.1.3], nodeName: node-a}]",
        "[{addresses: [198.19.1.20], nodeName: node-b}, {addresses: [198.19.1.100]}]",
    )
    assert web.ports[0].backends == (
        Backend(IPv4Address("198.19.1.3"), 8080, "node-a", local=True),
        Backend(IPv4Address("198.19.1.20"), 8080, None, local=False),
        Backend(IPv4Address("198.19.1.100"), 8080, None, local=False),
    )


def test_slice_ports_match_by_name_and_protocol(tmp_path: Path) -> None:
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: dns, namespace: kube-system}
        spec:
          clusterIP: 198.18.128.10
          ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]
        ---
        apiVersion: discovery.k8s.io/v1
        kind: EndpointSlice
        metadata:
          name: dns-1
          namespace: kube-system
          labels: {kubernetes.io/service-name: dns}
        addressType: IPv4
        ports: [{name: dns-tcp, port: 1053}, {name: dns, port: 2053, protocol: UDP},
                {name: dns, port: 3053, protocol: TCP}]
        endpoints: [{addresses: [198.19.1.7]}]
        """
    dns = service(load(tmp_path, text), "kube-system/dns")
    assert [(p.protocol, [b.port for b in p.backends]) for p in dns.ports] == [
        (Protocol.UDP, [2053]),
        (Protocol.TCP, [1053]),
    ]


@pytest.mark.parametrize(
    ("spec", "external", "internal"),
    [
        ("", False, False),
        ("  externalTrafficPolicy: Local\n", True, False),
        ("  externalTrafficPolicy: Cluster\n  internalTrafficPolicy: Local\n", False, True),
        ("  externalTrafficPolicy: Global\n", False, False),  # the pre-1.14 name of Cluster
    ],
)
def test_traffic_policies(tmp_path: Path, spec: str, external: bool, internal: bool) -> None:
    web = web_with(tmp_path, spec=spec)
    assert (web.external_traffic_local, web.internal_traffic_local) == (external, internal)


@pytest.mark.parametrize(
    ("spec", "timeout"),
    [
        ("", None),
        ("  sessionAffinity: None\n", None),
        ("  sessionAffinity: ClientIP\n", 10800),
        (
            "  sessionAffinity: ClientIP\n"
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
            60,
        ),
    ],
)
def test_session_affinity(tmp_path: Path, spec: str, timeout: int | None) -> None:
    assert web_with(tmp_path, spec=spec).session_affinity_timeout == timeout


def test_dual_stack_keeps_ipv4(tmp_path: Path) -> None:
    text = WEB.replace(
        "  clusterIP: 198.18.128.30\n",
        "  clusterIP: '2001:db8::30'\n  clusterIPs: ['2001:db8::30', 198.18.128.30]\n",
    )
    assert service(load(tmp_path, text), "default/web").cluster_ips == (
        IPv4Address("198.18.128.30"),
    )


def test_load_balancer_frontends(tmp_path: Path) -> None:
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: lb, namespace: shop}
        spec:
          type: LoadBalancer
          allocateLoadBalancerNodePorts: false
          clusterIP: 198.18.128.40
          externalIPs: [198.18.1.10, 198.18.1.10]
          ports: [{name: http, port: 80}, {name: dns, port: 53, protocol: UDP}]
        status:
          loadBalancer:
            ingress: [{ip: 198.18.1.20}, {hostname: lb.example.com}, {ip: '2001:db8::20'}]
        """
    inputs = load(tmp_path, text)
    lb = service(inputs, "shop/lb")
    assert lb.type is ServiceType.LOAD_BALANCER
    assert lb.external_ips == (IPv4Address("198.18.1.10"),)
    assert lb.load_balancer_ips == (IPv4Address("198.18.1.20"),)
    assert [p.node_port for p in lb.ports] == [None, None]
    file = tmp_path / "services0.yaml"
    assert inputs.notices == (
        f"{file}:12: Service shop/lb: status.loadBalancer.ingress[1] has no ip (only a "
        "hostname): not used",
        f"{file}:12: Service shop/lb: status.loadBalancer.ingress[2].ip: 2001:db8::20 is IPv6: "
        "not served yet (IPv4 only)",
    )
    assert [(k.part, k.unsupported) for k in inputs.skipped] == [
        ("status.loadBalancer.ingress[2].ip", True)
    ]


def test_proxy_ip_mode_is_not_captured(tmp_path: Path) -> None:
    """issue 15: kube-proxy installs nothing for an ingress IP with ipMode Proxy (KEP-1860):
    traffic to it must reach the load balancer. VIP, the default, is captured."""
    text = """\
        apiVersion: v1
        kind: Service
        metadata: {name: lb, namespace: shop}
        spec:
          type: LoadBalancer
          allocateLoadBalancerNodePorts: false
          clusterIP: 198.18.128.40
          ports: [{name: http, port: 80}]
        status:
          loadBalancer:
            ingress: [{ip: 198.18.1.20, ipMode: Proxy}, {ip: 198.18.1.21, ipMode: VIP},
                      {ip: 198.18.1.22}]
        """
    inputs = load(tmp_path, text)
    lb = service(inputs, "shop/lb")
    assert lb.load_balancer_ips == (IPv4Address("198.18.1.21"), IPv4Address("198.18.1.22"))
    assert inputs.notices == (
        f"{tmp_path / 'services0.yaml'}:11: Service shop/lb: status.loadBalancer.ingress[0].ip "
        "198.18.1.20 has ipMode Proxy: not captured (traffic to it goes to the load balancer, "
        "as with kube-proxy)",
    )


def test_load_balancer_source_ranges_are_read_as_the_api_server_reads_them(
    tmp_path: Path,
) -> None:
    """issue 15: spaces trimmed, host bits masked, IPv6 ranges left out (IPv4 only), a /0
    lifts the restriction, and IPv6 ranges alone refuse every IPv4 client (a notice)."""

    def ranges(entries: str) -> tuple[IPv4Network, ...] | None:
        text = f"""\
            apiVersion: v1
            kind: Service
            metadata: {{name: lb, namespace: shop}}
            spec:
              type: LoadBalancer
              allocateLoadBalancerNodePorts: false
              clusterIP: 198.18.128.40
              loadBalancerSourceRanges: {entries}
              ports: [{{name: http, port: 80}}]
            status: {{loadBalancer: {{ingress: [{{ip: 198.18.1.21}}]}}}}
            """
        inputs = load(tmp_path, text)
        lb = service(inputs, "shop/lb")
        if entries.startswith("['2001"):
            assert inputs.notices == (
                f"{tmp_path / 'services0.yaml'}:8: Service shop/lb: "
                "spec.loadBalancerSourceRanges lists IPv6 ranges only: every IPv4 client of "
                "its LoadBalancer IPs is dropped",
            )
        return lb.source_ranges

    assert ranges("[' 198.18.9.7/24 ', 198.18.4.0/22, '2001:db8::/64', 198.18.9.0/24]") == (
        IPv4Network("198.18.4.0/22"),
        IPv4Network("198.18.9.0/24"),
    )
    assert ranges("[198.18.9.0/24, 0.0.0.0/0]") is None
    assert ranges("[]") is None
    assert ranges("['2001:db8::/64']") == ()


def test_same_port_on_tcp_and_udp_is_no_conflict(tmp_path: Path) -> None:
    text = WEB.replace(
        "ports: [{name: http, port: 80}]",
        "type: NodePort\n  ports: [{name: a, port: 53, nodePort: 30053},"
        " {name: b, port: 53, protocol: UDP, nodePort: 30053}]",
    )
    assert len(service(load(tmp_path, text), "default/web").ports) == 2


def test_services_sorted_ports_in_manifest_order(tmp_path: Path) -> None:
    def svc(namespace: str, name: str, ip: str) -> str:
        return (
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: "
            f"{namespace}}}\nspec:\n  clusterIP: {ip}\n  ports: [{{name: z, port: 9}}, "
            "{name: a, port: 1}]\n"
        )

    text = "---\n".join(
        [
            svc("b", "a", "198.18.128.1"),
            svc("a", "z", "198.18.128.2"),
            svc("a", "b", "198.18.128.3"),
        ]
    )
    inputs = load(tmp_path, text)
    assert [s.key for s in inputs.services] == ["a/b", "a/z", "b/a"]
    assert [p.name for p in inputs.services[0].ports] == ["z", "a"]


def test_metadata_noise_is_ignored(tmp_path: Path) -> None:
    noisy = WEB.replace(
        "metadata: {name: web}",
        textwrap.dedent("""\
        metadata:
          name: web
          annotations: {"x/y": "{{ not jinja }}", 'z': "*/ ; \\" }"}
          labels: {"app.kubernetes.io/name": web}
          managedFields: [{manager: kubectl, fieldsV1: {"f:spec": {"k:{\\"port\\":80}": {}}}}]
          ownerReferences: [{kind: Deployment, name: "x\\ny"}]
          uid: 1
          creationTimestamp: 2024-05-02T09:14:27Z
          finalizers: [weird/thing]""").rstrip(),
    )
    noisy += "status: {conditions: [{type: Odd, status: 'True'}]}\nunknownTopLevel: 1\n"
    assert comparable(load(tmp_path, noisy)) == comparable(load(tmp_path, WEB))


# ----------------------------------------------------------------------------- notices


def test_notices_for_skipped_objects(tmp_path: Path) -> None:
    text = """\
        apiVersion: v1
        kind: List
        items:
        - apiVersion: v1
          kind: Service
          metadata: {name: db}
          spec: {clusterIP: None, ports: [{port: 5432}]}
        - apiVersion: v1
          kind: Service
          metadata: {name: ext}
          spec: {type: ExternalName, externalName: db.example.com}
        - apiVersion: v1
          kind: ConfigMap
          metadata: {name: foo, namespace: kube-system}
        - apiVersion: discovery.k8s.io/v1
          kind: EndpointSlice
          metadata: {name: gone-1, labels: {kubernetes.io/service-name: gone}}
          addressType: IPv4
        - apiVersion: discovery.k8s.io/v1
          kind: EndpointSlice
          metadata: {name: db-1, labels: {kubernetes.io/service-name: db}}
          addressType: IPv4
        - apiVersion: discovery.k8s.io/v1
          kind: EndpointSlice
          metadata: {name: web-v6, labels: {kubernetes.io/service-name: web}}
          addressType: IPv6
        - apiVersion: discovery.k8s.io/v1
          kind: EndpointSlice
          metadata: {name: mirror}
          addressType: IPv4
        - apiVersion: serving.knative.dev/v1
          kind: Service
          metadata: {name: knative}
        - kind: Pod
          apiVersion: v1
          metadata: {name: "bad name"}
        """
    inputs = load(tmp_path, [text, WEB])
    file = tmp_path / "services0.yaml"
    assert inputs.notices == (
        f"{file}:4: Service default/db: headless (clusterIP: None): skipped",
        f"{file}:8: Service default/ext: type ExternalName (a DNS name, nothing to proxy): skipped",
        f"{file}:12: ConfigMap kube-system/foo ignored (bpfgen reads Service and EndpointSlice)",
        f"{file}:15: EndpointSlice default/gone-1: Service default/gone not found: skipped",
        f"{file}:23: EndpointSlice default/web-v6: addressType: IPv6: not served yet (IPv4 "
        "only): skipped",
        f"{file}:27: EndpointSlice default/mirror has no label kubernetes.io/service-name: skipped",
        f"{file}:31: Service knative of serving.knative.dev/v1 ignored (bpfgen reads "
        "Service and EndpointSlice)",
        f"{file}:34: Pod (items[8]) ignored (bpfgen reads Service and EndpointSlice)",
    )
    assert [s.key for s in inputs.services] == ["default/web"]


# ----------------------------------------------------------------------------- hash and errors


def test_sha256_covers_content_not_paths(tmp_path: Path) -> None:
    first = example()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    node = shutil.copy(EXAMPLES / "node.yaml", moved / "n.yaml")
    services = shutil.copy(EXAMPLES / "services.yaml", moved / "s.yaml")
    assert load_inputs(Path(node), [Path(services)]).sha256 == first.sha256
    digest = hashlib.sha256()
    for path in (node, services):
        data = Path(path).read_bytes()
        digest.update(len(data).to_bytes(8, "big") + data)
    assert first.sha256 == digest.hexdigest()
    Path(services).write_bytes(Path(services).read_bytes() + b"\n# changed\n")
    assert load_inputs(Path(node), [Path(services)]).sha256 != first.sha256


def test_sha256_separates_files(tmp_path: Path) -> None:
    """Moving bytes from one file to the next changes the hash (lengths are hashed)."""
    a = load(tmp_path, ["# a\n# b", "\n"]).sha256
    b = load(tmp_path, ["# a\n", "# b\n"]).sha256
    assert a != b


def test_problems_are_structured(tmp_path: Path) -> None:
    with pytest.raises(InputError) as raised:
        load(tmp_path, WEB.replace("port: 80", "port: 0"))
    (problem,) = raised.value.problems
    assert problem.file == str(tmp_path / "services0.yaml")
    assert problem.line == 6
    assert problem.path == "Service default/web: spec.ports[0].port"
    assert problem.message == "0 is not a port (1-65535)"

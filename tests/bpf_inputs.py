"""Inputs of the bpf-mode build and kernel tests (docs/datapath-bpf.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tests.shared_inputs import shared_inputs

NODE1, NODE2 = "198.18.0.2", "198.18.0.3"
VIP, EMPTY_VIP, NODEPORT = "198.18.128.10", "198.18.128.11", 30080
# web-sticky: sessionAffinity ClientIP over web's backends, :80/TCP.
STICKY_VIP, STICKY_TIMEOUT = "198.18.128.12", 60
BACKENDS = ("198.19.1.5", "198.19.2.13", "198.19.3.7")  # sorted; the first is on this node
# web's fourth endpoint: listed, terminating, not ready: existing sessions only.
DRAINING = "198.19.2.20"
BACKEND_PORT, DNS_PORT = 8080, 5353
PORT_MIN, PORT_MAX = 65520, 65535
SELECTION_SEED = 0x1234ABCD


#: The build combinations (kind, scheduler, uplink hook) the bpf-mode case tables run in
#: the 6.1 VM (tests/vm/test_vm.py): one per kind, both schedulers and both hooks among
#: them; the host runs every combination. Under emulation each build's load and each
#: private-namespace case cost 10-25 s.
VM_BUILDS = (
    ("specialized", "random", "tc"),
    ("generic", "maglev", "tc"),
    ("frozen", "maglev", "xdp"),
)


def on_this_kernel(builds: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """`builds`, or in the 6.1 VM those of them in VM_BUILDS."""
    if not os.environ.get("BPFGEN_IN_VM"):
        return builds
    return [b for b in builds if b in VM_BUILDS]


def node_config(
    scheduler: str = "random",
    maglev_size: int | None = None,
    *,
    uplink_hook: str = "tc",
    socket_lb: bool = False,
) -> dict[str, Any]:
    datapath: dict[str, Any] = {
        "mode": "bpf",
        "scheduler": scheduler,
        "selectionSeed": SELECTION_SEED,
    }
    if maglev_size is not None:
        datapath["maglevTableSize"] = maglev_size
    if socket_lb:
        datapath["socketLB"] = True
    return {
        "apiVersion": "bpfgen/v1",
        "kind": "NodeConfig",
        "node": {"name": "node-a", "addresses": [NODE1, NODE2], "podCIDR": "198.19.1.0/24"},
        "cluster": {"podCIDR": "198.19.0.0/16", "serviceCIDR": "198.18.128.0/17"},
        "interfaces": [
            {"name": "eth0", "role": "uplink", "hook": uplink_hook},
            {"name": "veth*", "role": "pods"},
        ],
        "datapath": datapath,
        "snat": {"portRange": [PORT_MIN, PORT_MAX], "maxSessions": 64},
    }


def _service(
    name: str, vip: str, ports: list[dict[str, Any]], kind: str = "ClusterIP", **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": kind, "clusterIP": vip, "ports": ports, **spec},
    }


def _slice(
    service: str,
    ports: list[dict[str, Any]],
    addresses: tuple[str, ...],
    nodes: tuple[str, ...],
    draining: tuple[str, ...] = (),
) -> dict[str, Any]:
    terminating = {"ready": False, "serving": False, "terminating": True}
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [
            {"addresses": [a], "nodeName": n} for a, n in zip(addresses, nodes, strict=True)
        ]
        + [{"addresses": [a], "nodeName": "node-b", "conditions": terminating} for a in draining],
    }


def services() -> dict[str, Any]:
    """web (ClusterIP + NodePort, TCP 80 and UDP 53, three backends and one terminating
    endpoint), empty (none) and web-sticky (web's backends, ClientIP affinity)."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            _service(
                "web",
                VIP,
                [
                    {"name": "http", "port": 80, "protocol": "TCP", "nodePort": NODEPORT},
                    {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": NODEPORT},
                ],
                kind="NodePort",
            ),
            _slice(
                "web",
                [
                    {"name": "http", "port": BACKEND_PORT, "protocol": "TCP"},
                    {"name": "dns", "port": DNS_PORT, "protocol": "UDP"},
                ],
                BACKENDS,
                ("node-a", "node-b", "node-c"),
                (DRAINING,),
            ),
            _service(
                "empty",
                EMPTY_VIP,
                [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}],
            ),
            _service(
                "web-sticky",
                STICKY_VIP,
                [{"name": "http", "port": 80, "protocol": "TCP"}],
                sessionAffinity="ClientIP",
                sessionAffinityConfig={"clientIP": {"timeoutSeconds": STICKY_TIMEOUT}},
            ),
            _slice(
                "web-sticky",
                [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
                BACKENDS,
                ("node-a", "node-b", "node-c"),
            ),
        ],
    }


def many_services(n: int, backends: int = 2) -> dict[str, Any]:
    """n ClusterIP services of `backends` backends each (n frontends)."""
    items: list[dict[str, Any]] = []
    for i in range(n):
        name = f"svc-{i}"
        items.append(_service(name, f"198.18.{130 + i // 200}.{1 + i % 200}", [{"port": 80}]))
        addresses = tuple(f"198.19.{2 + i // 100}.{(i % 100) * 2 + j + 1}" for j in range(backends))
        items.append(
            _slice(
                name,
                [{"name": "", "port": 8080, "protocol": "TCP"}],
                addresses,
                tuple("node-b" for _ in addresses),
            )
        )
    return {"apiVersion": "v1", "kind": "List", "items": items}


def single_backend_node(uplink_hook: str = "tc") -> dict[str, Any]:
    """Issue 13's node: bpf mode with the default scheduler (random: no `scheduler`),
    socketLB on (its programs select backends too)."""
    node = node_config(uplink_hook=uplink_hook, socket_lb=True)
    del node["datapath"]["scheduler"]
    return node


def single_backend_services() -> dict[str, Any]:
    """Issue 13's configuration: a ClientIP Service and no frontend with more than one
    backend. web-sticky (ClusterIP + NodePort, TCP, ClientIP affinity) has one
    backend, empty none: the random scheduler's h % n is h % 1 for every frontend."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            _service(
                "web-sticky",
                STICKY_VIP,
                [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": NODEPORT}],
                kind="NodePort",
                sessionAffinity="ClientIP",
            ),
            _slice(
                "web-sticky",
                [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
                BACKENDS[:1],
                ("node-a",),
            ),
            _service("empty", EMPTY_VIP, [{"name": "http", "port": 80}]),
        ],
    }


def write_inputs(root: Path, node: dict[str, Any], svcs: dict[str, Any]) -> tuple[Path, Path]:
    """root/node.yaml and root/services.yaml (for tests that read them), and the paths to
    compile: the same contents at paths named by them (tests/shared_inputs.py)."""
    root.mkdir(parents=True, exist_ok=True)
    node_text, services_text = json.dumps(node), json.dumps(svcs)
    (root / "node.yaml").write_text(node_text)
    (root / "services.yaml").write_text(services_text)
    return shared_inputs(node_text, services_text)

"""Plan decisions that need no kernel."""

from __future__ import annotations

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
        assert len(plan.map_init.get("bpfgen_frontends", ())) == (3 if generic else 0)
    # One case label per address:port in the generated switch.
    header = render(make_plan(inputs)).text("node_config.h")
    assert header.count("case __bpf_constant_htons(443)") == 2


def test_every_mode_has_a_planner() -> None:
    assert set(PLANNERS) == set(Mode)

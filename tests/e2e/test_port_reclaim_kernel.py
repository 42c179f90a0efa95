"""SNAT ports of expired sessions are taken over (counter `reclaimed`), in the running kernel.

Found by the VM end-to-end suite: on Debian's 6.1 kernel a small SNAT range ran
out after a few hundred short connections although every earlier session had
expired, and `reclaimed` stayed 0; the same objects reclaim on 6.18. This is the
same sequence as BPF_PROG_TEST_RUN (no namespaces, no IPVS), so the `kernel`
suite shows it in the VM as well as on the host.

Not a load case: an expiry case, with its own 256-port range and a 1 s transitory
timeout so that sessions aged past it are expired (docs/testing.md, "Load cases").
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from bpfgen.compiler import compile_build
from bpfgen.refmodel.frames import ethernet, ipv4, tcp
from bpfgen_runtime.testrun import BuildUnderTest

pytestmark = [pytest.mark.kernel, pytest.mark.root]

SYN, FIN, ACK = 0x02, 0x01, 0x10
MARK = 0x4000
CLIENT = ipaddress.IPv4Address("198.18.0.10")
NODE = ipaddress.IPv4Address("198.18.0.2")
BACKEND = ipaddress.IPv4Address("198.19.1.21")
FIRST, PORTS = 20000, 256

NODE_YAML = f"""\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {{name: node-r, addresses: [{NODE}], podCIDR: 198.19.1.0/24}}
cluster: {{podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17, nodePortRange: [30000, 32767]}}
interfaces: [{{name: up0, role: uplink, hook: tc}}, {{name: "pv*", role: pods}}]
datapath: {{mode: ipvs, scheduler: rr}}
snat:
  portRange: [{FIRST}, {FIRST + PORTS - 1}]
  timeouts: {{tcpEstablished: 7440s, tcpTransitory: 1s, udp: 300s, icmp: 60s}}
"""
SERVICES_YAML = f"""\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: r}}
spec:
  type: NodePort
  clusterIP: 198.18.128.10
  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080, nodePort: 30080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
addressType: IPv4
metadata: {{name: web-1, namespace: r, labels: {{kubernetes.io/service-name: web}}}}
endpoints: [{{addresses: [{BACKEND}], conditions: {{ready: true}}}}]
ports: [{{name: http, port: 8080, protocol: TCP}}]
"""


def _frame(src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sport: int, dport: int,
           flags: int) -> bytes:  # fmt: skip
    return ethernet(ipv4(src, dst, 6, tcp(src, dst, sport, dport, flags=flags)))


def test_expired_sessions_give_their_ports_back(tmp_path: Path) -> None:
    node = tmp_path / "node.yaml"
    node.write_text(NODE_YAML)
    services = tmp_path / "services.yaml"
    services.write_text(SERVICES_YAML)
    out = compile_build(node, [services], tmp_path / "build", generic=False, verify=False).out
    rng = random.Random(1)
    failed = 0
    flows = 2 * PORTS
    with BuildUnderTest(out) as build:
        for client_port in rng.sample(range(1024, 65000), flows):
            syn = build.run("egress", _frame(CLIENT, BACKEND, client_port, 8080, SYN), MARK)
            nat_port = int.from_bytes(syn.packet[34:36], "big")
            if not FIRST <= nat_port < FIRST + PORTS:
                failed += 1
                continue
            build.run("ingress", _frame(BACKEND, NODE, 8080, nat_port, SYN | ACK))
            build.run("egress", _frame(CLIENT, BACKEND, client_port, 8080, FIN | ACK), MARK)
            build.run("ingress", _frame(BACKEND, NODE, 8080, nat_port, FIN | ACK))
            build.run("egress", _frame(CLIENT, BACKEND, client_port, 8080, ACK), MARK)
            for key in list(build.sessions()):  # every closed session is long expired
                build.set_last_seen(key, 1)
        counters = build.counters()
    assert failed == 0 and counters["drop_exhausted"] == 0, (failed, counters)
    assert counters["reclaimed"] > 0, counters

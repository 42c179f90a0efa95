# ruff: noqa: E501  (the expected messages are compared whole, one per line)
"""Every kind of bad input, and the exact text `load_inputs` answers with.

Each case is (id, node.yaml text, services.yaml text — or a tuple of texts for
services.yaml and more.yaml, or None for a services file that does not exist —,
and the expected `InputError` text, one string per line). The inputs are small
edits of two valid files, NODE and SVC, so each case shows only what it breaks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs

NODE = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node:
  name: node-a
  addresses: [198.18.0.2]
  podCIDR: 198.19.1.0/24
cluster:
  podCIDR: 198.19.0.0/16
  serviceCIDR: 198.18.128.0/17
  masqueradeAll: false
  nodePortRange: [30000, 32767]
interfaces:
  - {name: eth0, role: uplink, hook: tc}
  - {name: "veth*", role: pods}
datapath:
  mode: ipvs
  scheduler: rr
snat:
  portRange: [20000, 29999]
  maxSessions: 65536
  timeouts: {tcpEstablished: 7440s, tcpTransitory: 240s, udp: 300s, icmp: 60s}
  mark: 0x4000
features:
  icmpEcho: true
"""

SVC = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata:
    name: web
    namespace: default
  spec:
    type: ClusterIP
    clusterIP: 198.18.140.23
    ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
- apiVersion: v1
  kind: Service
  metadata: {name: shop, namespace: default}
  spec:
    type: NodePort
    clusterIP: 198.18.140.24
    ports:
    - {name: http, port: 80, protocol: TCP, nodePort: 30080}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata:
    name: web-abc12
    namespace: default
    labels: {kubernetes.io/service-name: web}
  addressType: IPv4
  ports:
  - {name: http, port: 8080, protocol: TCP}
  endpoints:
  - addresses: [198.19.1.10]
    conditions: {ready: true}
    nodeName: node-a
  - addresses: [198.19.2.10]
    nodeName: node-b
"""


def edit(text: str, *pairs: str) -> str:
    """Replace each `old` (which must occur exactly once) by `new`."""
    assert len(pairs) % 2 == 0
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text


def node(*pairs: str) -> str:
    return edit(NODE, *pairs)


def svc(*pairs: str) -> str:
    return edit(SVC, *pairs)


ONE_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: prod
spec:
  clusterIP: 198.18.150.1
  ports:
  - port: 443
"""


def case(
    name: str, node_text: str, services: str | tuple[str, ...] | None, expected: list[str]
) -> object:
    return pytest.param(node_text, services, expected, id=name)


CASES = [
    # --- node file: structure
    case(
        "node missing kind",
        node("kind: NodeConfig\n", ""),
        SVC,
        ["node.yaml:1: missing required field 'kind'"],
    ),
    case(
        "node wrong apiVersion",
        node("bpfgen/v1", "bpfgen/v2"),
        SVC,
        ["node.yaml:1: apiVersion: 'bpfgen/v2' is not bpfgen/v1"],
    ),
    case(
        "node wrong kind",
        node("kind: NodeConfig", "kind: Node"),
        SVC,
        ["node.yaml:2: kind: 'Node' is not NodeConfig"],
    ),
    case(
        "node unknown top-level key",
        node("features:\n", "extras: 1\nfeatures:\n"),
        SVC,
        [
            "node.yaml:23: unknown field 'extras' (expected one of: apiVersion, cluster, datapath, features, interfaces, kind, node, snat)"
        ],
    ),
    case(
        "node unknown nested key",
        node("  mark: 0x4000\n", "  mark: 0x4000\n  prot: 6\n"),
        SVC,
        [
            "node.yaml:23: snat: unknown field 'prot' (expected one of: mark, maxSessions, portRange, timeouts)"
        ],
    ),
    case(
        "node duplicate key",
        node("  maxSessions: 65536\n", "  maxSessions: 65536\n  maxSessions: 1\n"),
        SVC,
        ["node.yaml:21: snat: duplicate key 'maxSessions' (first at line 20)"],
    ),
    case(
        "node not a mapping",
        "- apiVersion: bpfgen/v1\n",
        SVC,
        ["node.yaml:1: a list is not a mapping"],
    ),
    case(
        "node empty file",
        "# nothing here\n",
        SVC,
        ["node.yaml:1: no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)"],
    ),
    case(
        "node null document",
        "null\n",
        SVC,
        ["node.yaml:1: no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)"],
    ),
    case(
        "node zero bytes",
        "",
        SVC,
        ["node.yaml:1: no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)"],
    ),
    # --- integers beyond CPython's 4,300-digit int/str limit: refused, not a ValueError
    case(
        "node integer of 5000 digits",
        node("maxSessions: 65536", "maxSessions: " + "1" * 5000),
        SVC,
        ["node.yaml:20: an integer of 5000 characters is too long (at most 100)"],
    ),
    case(
        "node hex integer of 5000 digits",
        node("maxSessions: 65536", "maxSessions: 0x" + "f" * 5000),
        SVC,
        ["node.yaml:20: an integer of 5002 characters is too long (at most 100)"],
    ),
    case(
        "node duration of 5000 digits",
        node("udp: 300s", "udp: " + "9" * 5000 + "s"),
        SVC,
        [
            "node.yaml:21: snat.timeouts.udp: '"
            + "9" * 59
            + "...' is out of range (1s to 7 days = 604800s)"
        ],
    ),
    case(
        "services integer of 5000 digits",
        NODE,
        ONE_SERVICE.replace("port: 443", "port: " + "4" * 5000),
        ["services.yaml:9: an integer of 5000 characters is too long (at most 100)"],
    ),
    case(
        "services JSON number of 5000 digits",
        NODE,
        '{"apiVersion": "v1", "kind": "List",\n "items": [' + "7" * 5000 + "]}\n",
        ["services.yaml:2: an integer of 5000 characters is too long (at most 100)"],
    ),
    case(
        "node yaml syntax error",
        node("  podCIDR: 198.19.1.0/24\n", "  podCIDR: [198.19.1.0/24\n"),
        SVC,
        [
            "node.yaml:7: invalid YAML: expected ',' or ']', but got ':' (while parsing a flow sequence at line 6)"
        ],
    ),
    case(
        "node two documents",
        NODE + "---\nfoo: 1\n",
        SVC,
        ["node.yaml:26: a second document (a node file holds one NodeConfig)"],
    ),
    case(
        "node section is a list",
        node("datapath:\n  mode: ipvs\n  scheduler: rr\n", "datapath: [ipvs]\n"),
        SVC,
        ["node.yaml:15: datapath: a list is not a mapping"],
    ),
    # --- node: names and addresses
    case(
        "node name missing",
        node("  name: node-a\n", ""),
        SVC,
        ["node.yaml:4: node: missing required field 'name'"],
    ),
    case(
        "node name not a subdomain",
        node("name: node-a", "name: Node_A"),
        SVC,
        [
            "node.yaml:4: node.name: 'Node_A' is not a DNS-1123 subdomain (at most 253 of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit)"
        ],
    ),
    case(
        "node zone not a label value",
        node("  podCIDR: 198.19.1.0/24\n", "  podCIDR: 198.19.1.0/24\n  zone: -zone a\n"),
        SVC,
        [
            "node.yaml:7: node.zone: '-zone a' is not a label value (at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "node name is null",
        node("name: node-a", "name:"),
        SVC,
        ["node.yaml:4: node.name: is null (required)"],
    ),
    case(
        "node addresses empty",
        node("addresses: [198.18.0.2]", "addresses: []"),
        SVC,
        ["node.yaml:5: node.addresses: has 0 addresses (1 to 8 are needed)"],
    ),
    case(
        "node addresses scalar",
        node("addresses: [198.18.0.2]", "addresses: 198.18.0.2"),
        SVC,
        ["node.yaml:5: node.addresses: '198.18.0.2' is not a list"],
    ),
    case(
        "node address invalid",
        node("[198.18.0.2]", "[198.18.0.256]"),
        SVC,
        ["node.yaml:5: node.addresses[0]: '198.18.0.256' is not an IPv4 address"],
    ),
    case(
        "node address IPv6",
        node("[198.18.0.2]", "[198.18.0.2, '2001:db8::2']"),
        SVC,
        ["node.yaml:5: node.addresses[1]: IPv6 is not supported yet (IPv4 only)"],
    ),
    case(
        "node address twice",
        node("[198.18.0.2]", "[198.18.0.2, 198.18.0.3, 198.18.0.2]"),
        SVC,
        ["node.yaml:5: node.addresses[2]: 198.18.0.2 is listed twice"],
    ),
    case(
        "node address loopback",
        node("[198.18.0.2]", "[127.0.0.1]"),
        SVC,
        [
            "node.yaml:5: node.addresses[0]: 127.0.0.1 is a loopback address (expected a unicast address)"
        ],
    ),
    case(
        "node address inside pod and service CIDRs",
        node("[198.18.0.2]", "[198.19.7.1, 198.18.200.1]"),
        SVC,
        [
            "node.yaml:5: node.addresses[0]: 198.19.7.1 is inside cluster.podCIDR 198.19.0.0/16 (a node address must not be a pod address)",
            "node.yaml:5: node.addresses[1]: 198.18.200.1 is inside cluster.serviceCIDR 198.18.128.0/17 (a node address must not be a service address)",
        ],
    ),
    # --- node: CIDRs
    case(
        "node podCIDR without prefix",
        node("  podCIDR: 198.19.1.0/24", "  podCIDR: 198.19.1.0"),
        SVC,
        [
            "node.yaml:6: node.podCIDR: '198.19.1.0' is not an IPv4 CIDR (address/prefix, e.g. 198.18.0.0/15)"
        ],
    ),
    case(
        "node podCIDR host bits",
        node("  podCIDR: 198.19.1.0/24", "  podCIDR: 198.19.1.5/24"),
        SVC,
        [
            "node.yaml:6: node.podCIDR: 198.19.1.5/24 has host bits set (did you mean 198.19.1.0/24?)"
        ],
    ),
    case(
        "node podCIDR outside cluster",
        node("  podCIDR: 198.19.1.0/24", "  podCIDR: 198.18.1.0/24"),
        SVC,
        ["node.yaml:6: node.podCIDR: 198.18.1.0/24 is not inside cluster.podCIDR 198.19.0.0/16"],
    ),
    case(
        "serviceCIDR overlaps podCIDR",
        node("serviceCIDR: 198.18.128.0/17", "serviceCIDR: 198.19.128.0/17"),
        SVC,
        [
            "node.yaml:9: cluster.serviceCIDR: 198.19.128.0/17 overlaps cluster.podCIDR 198.19.0.0/16",
            "services.yaml:11: Service default/web: spec.clusterIP: 198.18.140.23 is outside cluster.serviceCIDR 198.19.128.0/17",
            "services.yaml:22: Service default/shop: spec.clusterIP: 198.18.140.24 is outside cluster.serviceCIDR 198.19.128.0/17",
        ],
    ),
    case(
        "serviceCIDR prefix too long",
        node("serviceCIDR: 198.18.128.0/17", "serviceCIDR: 198.18.128.0/33"),
        SVC,
        [
            "node.yaml:9: cluster.serviceCIDR: '198.18.128.0/33' is not an IPv4 CIDR (address/prefix, e.g. 198.18.0.0/15)"
        ],
    ),
    case(
        "serviceCIDR IPv6",
        node("serviceCIDR: 198.18.128.0/17", "serviceCIDR: '2001:db8::/108'"),
        SVC,
        ["node.yaml:9: cluster.serviceCIDR: IPv6 is not supported yet (IPv4 only)"],
    ),
    case(
        "cluster podCIDR missing",
        node("  podCIDR: 198.19.0.0/16\n", ""),
        SVC,
        ["node.yaml:8: cluster: missing required field 'podCIDR'"],
    ),
    # --- node: flags and ranges
    case(
        "masqueradeAll a string",
        node("masqueradeAll: false", 'masqueradeAll: "yes"'),
        SVC,
        ["node.yaml:10: cluster.masqueradeAll: 'yes' is not a boolean (true or false)"],
    ),
    case(
        "nodePortRange backwards",
        node("nodePortRange: [30000, 32767]", 'nodePortRange: "32767-30000"'),
        SVC,
        ["node.yaml:11: cluster.nodePortRange: 32767-30000 is empty (min > max)"],
    ),
    case(
        "nodePortRange three items",
        node("nodePortRange: [30000, 32767]", "nodePortRange: [1, 2, 3]"),
        SVC,
        [
            'node.yaml:11: cluster.nodePortRange: a list of 3 items is not a port range (expected [min, max] or "min-max")'
        ],
    ),
    case(
        "snat port over 65535",
        node("portRange: [20000, 29999]", "portRange: [20000, 70000]"),
        SVC,
        ["node.yaml:19: snat.portRange[1]: 70000 is not a port (1-65535)"],
    ),
    case(
        "snat port a bool",
        node("portRange: [20000, 29999]", "portRange: [true, 29999]"),
        SVC,
        ["node.yaml:19: snat.portRange[0]: true is not a port (1-65535)"],
    ),
    case(
        "snat range too small",
        node("portRange: [20000, 29999]", "portRange: [20000, 20010]"),
        SVC,
        ["node.yaml:19: snat.portRange: 20000-20010 has 11 ports (at least 16 are needed)"],
    ),
    case(
        "snat range overlaps NodePorts",
        node("portRange: [20000, 29999]", 'portRange: "30000-30100"'),
        SVC,
        [
            "node.yaml:19: snat.portRange: 30000-30100 overlaps cluster.nodePortRange 30000-32767 (SNAT would take NodePorts)"
        ],
    ),
    case(
        "maxSessions not an integer",
        node("maxSessions: 65536", "maxSessions: many"),
        SVC,
        ["node.yaml:20: snat.maxSessions: 'many' is not an integer"],
    ),
    case(
        "maxSessions zero",
        node("maxSessions: 65536", "maxSessions: 0"),
        SVC,
        ["node.yaml:20: snat.maxSessions: 0 is out of range (1-16777216)"],
    ),
    case(
        "maxSessions float",
        node("maxSessions: 65536", "maxSessions: 1.5"),
        SVC,
        ["node.yaml:20: snat.maxSessions: 1.5 is not an integer"],
    ),
    case(
        "timeout not a duration",
        node("udp: 300s", "udp: 5 min"),
        SVC,
        [
            'node.yaml:21: snat.timeouts.udp: \'5 min\' is not a duration (seconds, or e.g. "90s", "5m", "2h4m")'
        ],
    ),
    case(
        "timeout zero",
        node("icmp: 60s", "icmp: 0s"),
        SVC,
        ["node.yaml:21: snat.timeouts.icmp: '0s' is out of range (1s to 7 days = 604800s)"],
    ),
    case(
        "timeout over a week",
        node("tcpEstablished: 7440s", "tcpEstablished: 200h"),
        SVC,
        [
            "node.yaml:21: snat.timeouts.tcpEstablished: '200h' is out of range (1s to 7 days = 604800s)"
        ],
    ),
    case(
        "timeout unknown key",
        node("icmp: 60s", "icmp: 60s, sctp: 10s"),
        SVC,
        [
            "node.yaml:21: snat.timeouts: unknown field 'sctp' (expected one of: icmp, tcpClose, tcpEstablished, tcpTimeWait, tcpTransitory, udp)"
        ],
    ),
    case(
        "mark not a single bit",
        node("mark: 0x4000", "mark: 0x4001"),
        SVC,
        ["node.yaml:22: snat.mark: 0x4001 is not a single bit (a power of two such as 0x4000)"],
    ),
    case(
        "mark zero",
        node("mark: 0x4000", "mark: 0"),
        SVC,
        ["node.yaml:22: snat.mark: 0x0 is not a single bit (a power of two such as 0x4000)"],
    ),
    case(
        "mark too wide",
        node("mark: 0x4000", 'mark: "0x100000000"'),
        SVC,
        ["node.yaml:22: snat.mark: 0x100000000 does not fit in 32 bits"],
    ),
    case(
        "mark not a number",
        node("mark: 0x4000", "mark: masq"),
        SVC,
        ["node.yaml:22: snat.mark: 'masq' is not a mark (an integer such as 0x4000)"],
    ),
    case(
        "icmpEcho a string",
        node("icmpEcho: true", 'icmpEcho: "true"'),
        SVC,
        ["node.yaml:24: features.icmpEcho: 'true' is not a boolean (true or false)"],
    ),
    # --- node: datapath
    case(
        "ipvs scheduler in bpf mode",
        node("mode: ipvs", "mode: bpf"),
        SVC,
        ["node.yaml:17: datapath.scheduler: 'rr' is not a bpf scheduler (maglev, random)"],
    ),
    case(
        "bpf scheduler in ipvs mode",
        node("scheduler: rr", "scheduler: maglev"),
        SVC,
        [
            "node.yaml:17: datapath.scheduler: 'maglev' is not an IPVS scheduler (dh, lblc, lblcr, lc, mh, nq, rr, sed, sh, wlc, wrr)"
        ],
    ),
    case(
        "maglevTableSize not a prime",
        node(
            "mode: ipvs\n  scheduler: rr",
            "mode: bpf\n  scheduler: maglev\n  maglevTableSize: 16383",
        ),
        SVC,
        ["node.yaml:18: datapath.maglevTableSize: 16383 is not a prime (e.g. 16381)"],
    ),
    case(
        "maglevTableSize out of range",
        node("mode: ipvs\n  scheduler: rr", "mode: bpf\n  maglevTableSize: 1"),
        SVC,
        ["node.yaml:17: datapath.maglevTableSize: 1 is out of range (2-131071)"],
    ),
    case(
        "selectionSeed out of range",
        node("mode: ipvs\n  scheduler: rr", "mode: bpf\n  selectionSeed: -1"),
        SVC,
        ["node.yaml:17: datapath.selectionSeed: -1 is out of range (0-4294967295)"],
    ),
    case(
        "maglevTableSize in ipvs mode",
        node("scheduler: rr", "scheduler: rr\n  maglevTableSize: 251"),
        SVC,
        ["node.yaml:18: datapath.maglevTableSize: is only used in bpf mode (datapath.mode: bpf)"],
    ),
    case(
        "socketLB in ipvs mode",
        node("scheduler: rr", "scheduler: rr\n  socketLB: true"),
        SVC,
        ["node.yaml:18: datapath.socketLB: is only used in bpf mode (datapath.mode: bpf)"],
    ),
    case(
        "cgroup not an absolute path",
        node("mode: ipvs\n  scheduler: rr", "mode: bpf\n  socketLB: true\n  cgroup: sys/fs/cgroup"),
        SVC,
        [
            "node.yaml:18: datapath.cgroup: 'sys/fs/cgroup' is not an absolute path (a cgroup v2 "
            "directory)"
        ],
    ),
    case(
        "cgroup with a newline",
        node(
            "mode: ipvs\n  scheduler: rr",
            'mode: bpf\n  socketLB: true\n  cgroup: "/sys/fs/cgroup/a\\n#define X */"',
        ),
        SVC,
        [
            "node.yaml:18: datapath.cgroup: '/sys/fs/cgroup/a\\n#define X */' is not a path without "
            "control characters (a cgroup v2 directory)"
        ],
    ),
    case(
        "cgroup not normalized",
        node(
            "mode: ipvs\n  scheduler: rr",
            "mode: bpf\n  socketLB: true\n  cgroup: /sys/fs/cgroup/../etc",
        ),
        SVC,
        [
            "node.yaml:18: datapath.cgroup: '/sys/fs/cgroup/../etc' is not a normalized path (no "
            "empty, '.' or '..' parts) (a cgroup v2 directory)"
        ],
    ),
    case(
        "cgroup without socketLB",
        node("mode: ipvs\n  scheduler: rr", "mode: bpf\n  cgroup: /sys/fs/cgroup/x"),
        SVC,
        ["node.yaml:17: datapath.cgroup: is only used with datapath.socketLB: true"],
    ),
    case(
        "unknown mode",
        node("mode: ipvs", "mode: iptables"),
        SVC,
        ["node.yaml:16: datapath.mode: 'iptables' is not a mode (ipvs, bpf)"],
    ),
    case(
        "unknown scheduler",
        node("scheduler: rr", "scheduler: roundrobin"),
        SVC,
        [
            "node.yaml:17: datapath.scheduler: 'roundrobin' is not an IPVS scheduler (dh, lblc, lblcr, lc, mh, nq, rr, sed, sh, wlc, wrr)"
        ],
    ),
    # --- node: interfaces
    case(
        "interfaces empty",
        node(
            'interfaces:\n  - {name: eth0, role: uplink, hook: tc}\n  - {name: "veth*", role: pods}\n',
            "interfaces: []\n",
        ),
        SVC,
        ["node.yaml:12: interfaces: is empty (one interface with role uplink is needed)"],
    ),
    case(
        "interfaces null",
        node('  - {name: eth0, role: uplink, hook: tc}\n  - {name: "veth*", role: pods}\n', ""),
        SVC,
        ["node.yaml:12: interfaces: is null (required)"],
    ),
    case(
        "no uplink",
        node("name: eth0, role: uplink", "name: eth0, role: pods"),
        SVC,
        ["node.yaml:13: interfaces: no interface has role uplink (exactly one is needed)"],
    ),
    case(
        "two uplinks",
        node('{name: "veth*", role: pods}', "{name: eth1, role: uplink}"),
        SVC,
        ["node.yaml:13: interfaces: 2 interfaces have role uplink (exactly one is needed)"],
    ),
    case(
        "interface listed twice",
        node('name: "veth*"', "name: eth0"),
        SVC,
        ["node.yaml:14: interfaces[1].name: 'eth0' is listed twice (first at interfaces[0])"],
    ),
    case(
        "interface name with C metacharacters",
        node('name: "veth*"', 'name: "v\\"; }"'),
        SVC,
        [
            "node.yaml:14: interfaces[1].name: 'v\"; }' is not an interface name (1-15 of A-Z, a-z, 0-9, '-', '_' and '.', optionally ending in '*')"
        ],
    ),
    case(
        "interface name too long",
        node('name: "veth*"', "name: abcdefghijklmnop"),
        SVC,
        [
            "node.yaml:14: interfaces[1].name: 'abcdefghijklmnop' is not an interface name (1-15 of A-Z, a-z, 0-9, '-', '_' and '.', optionally ending in '*')"
        ],
    ),
    case(
        "interface name with slash",
        node("name: eth0", "name: eth/0"),
        SVC,
        [
            "node.yaml:13: interfaces[0].name: 'eth/0' is not an interface name (1-15 of A-Z, a-z, 0-9, '-', '_' and '.', optionally ending in '*')"
        ],
    ),
    case(
        "uplink is a pattern",
        node("name: eth0", 'name: "eth*"'),
        SVC,
        ["node.yaml:13: interfaces[0].name: 'eth*' is a pattern; the uplink must be one device"],
    ),
    case(
        "pods pattern matches the uplink",
        node('name: "veth*"', 'name: "e*"'),
        SVC,
        ["node.yaml:14: interfaces[1].name: 'e*' also matches the uplink eth0"],
    ),
    case(
        "xdp on pods",
        node("role: pods}", "role: pods, hook: xdp}"),
        SVC,
        [
            "node.yaml:14: interfaces[1].hook: xdp is only allowed on the uplink (pod-facing interfaces use tc)"
        ],
    ),
    case(
        "unknown role",
        node("role: pods}", "role: pod}"),
        SVC,
        ["node.yaml:14: interfaces[1].role: 'pod' is not a role (uplink, pods)"],
    ),
    case(
        "unknown hook",
        node("hook: tc}", "hook: ebpf}"),
        SVC,
        ["node.yaml:13: interfaces[0].hook: 'ebpf' is not a hook (tc, xdp)"],
    ),
    case(
        "interface missing role",
        node(", role: pods}", "}"),
        SVC,
        ["node.yaml:14: interfaces[1]: missing required field 'role'"],
    ),
    case(
        "interface unknown field",
        node("role: pods}", "role: pods, mtu: 9000}"),
        SVC,
        ["node.yaml:14: interfaces[1]: unknown field 'mtu' (expected one of: hook, name, role)"],
    ),
    # --- services: values
    case(
        "SCTP port",
        NODE,
        svc("      protocol: TCP\n      targetPort", "      protocol: SCTP\n      targetPort"),
        [
            "services.yaml:15: Service default/web: spec.ports[0].protocol: SCTP is not supported (TCP, UDP)"
        ],
    ),
    case(
        "unknown protocol",
        NODE,
        svc("      protocol: TCP\n      targetPort", "      protocol: ICMP\n      targetPort"),
        [
            "services.yaml:15: Service default/web: spec.ports[0].protocol: 'ICMP' is not a protocol (TCP, UDP)"
        ],
    ),
    case(
        "port zero",
        NODE,
        svc("      port: 80\n", "      port: 0\n"),
        ["services.yaml:14: Service default/web: spec.ports[0].port: 0 is not a port (1-65535)"],
    ),
    case(
        "port is a string",
        NODE,
        svc("      port: 80\n", '      port: "80"\n'),
        ["services.yaml:14: Service default/web: spec.ports[0].port: '80' is not a port (1-65535)"],
    ),
    case(
        "port missing",
        NODE,
        svc("      port: 80\n", ""),
        ["services.yaml:13: Service default/web: spec.ports[0]: missing required field 'port'"],
    ),
    case(
        "IPv6-only service",
        NODE,
        svc("    clusterIP: 198.18.140.23\n", "    clusterIPs: ['2001:db8::10']\n"),
        [
            "services.yaml:11: Service default/web: spec.clusterIPs: IPv6-only services are not supported yet (IPv4 only)"
        ],
    ),
    case(
        "clusterIP not an address",
        NODE,
        svc("clusterIP: 198.18.140.23", "clusterIP: web"),
        ["services.yaml:11: Service default/web: spec.clusterIP: 'web' is not an IP address"],
    ),
    case(
        "clusterIP outside serviceCIDR",
        NODE,
        svc("clusterIP: 198.18.140.23", "clusterIP: 198.18.1.23"),
        [
            "services.yaml:11: Service default/web: spec.clusterIP: 198.18.1.23 is outside cluster.serviceCIDR 198.18.128.0/17"
        ],
    ),
    case(
        "clusterIP missing",
        NODE,
        svc("    clusterIP: 198.18.140.23\n", ""),
        [
            "services.yaml:10: Service default/web: spec.clusterIP: no cluster IP allocated yet (use manifests read back from the cluster, e.g. kubectl get svc -o yaml)"
        ],
    ),
    case(
        "clusterIP and clusterIPs disagree",
        NODE,
        svc(
            "    clusterIP: 198.18.140.23\n",
            "    clusterIP: 198.18.140.23\n    clusterIPs: [198.18.140.99]\n",
        ),
        [
            "services.yaml:11: Service default/web: spec.clusterIP: '198.18.140.23' does not match spec.clusterIPs[0] '198.18.140.99'"
        ],
    ),
    case(
        "unknown service type",
        NODE,
        svc("type: ClusterIP", "type: Internal"),
        [
            "services.yaml:10: Service default/web: spec.type: 'Internal' is not a Service type (ClusterIP, NodePort, LoadBalancer, ExternalName)"
        ],
    ),
    case(
        "nodePort outside range",
        NODE,
        svc("nodePort: 30080", "nodePort: 8080"),
        [
            "services.yaml:24: Service default/shop: spec.ports[0].nodePort: 8080 is outside cluster.nodePortRange 30000-32767"
        ],
    ),
    case(
        "nodePort missing",
        NODE,
        svc(", nodePort: 30080}", "}"),
        [
            "services.yaml:24: Service default/shop: spec.ports[0]: missing required field 'nodePort' (type NodePort; not allocated yet?)"
        ],
    ),
    case(
        "second port without a name",
        NODE,
        svc("      targetPort: 8080\n", "      targetPort: 8080\n    - port: 81\n"),
        [
            "services.yaml:17: Service default/web: spec.ports[1]: missing required field 'name' (a Service with more than one port names each)"
        ],
    ),
    case(
        "port listed twice",
        NODE,
        svc(
            "      targetPort: 8080\n",
            "      targetPort: 8080\n    - name: again\n      port: 80\n",
        ),
        [
            "services.yaml:18: Service default/web: spec.ports[1].port: 80/TCP is listed twice (also spec.ports[0])"
        ],
    ),
    case(
        "port name twice",
        NODE,
        svc(
            "      targetPort: 8080\n", "      targetPort: 8080\n    - name: http\n      port: 81\n"
        ),
        [
            "services.yaml:17: Service default/web: spec.ports[1].name: 'http' is used twice (also spec.ports[0])"
        ],
    ),
    case(
        "externalIP IPv6",
        NODE,
        svc(
            "    type: ClusterIP\n",
            "    type: ClusterIP\n    externalIPs: [198.18.1.1, '2001:db8::1']\n",
        ),
        [
            "services.yaml:11: Service default/web: spec.externalIPs[1]: IPv6 is not supported yet (IPv4 only)"
        ],
    ),
    case(
        "affinity timeout too long",
        NODE,
        svc(
            "    type: ClusterIP\n",
            "    type: ClusterIP\n    sessionAffinity: ClientIP\n    sessionAffinityConfig: {clientIP: {timeoutSeconds: 100000}}\n",
        ),
        [
            "services.yaml:12: Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 100000 is out of range (1-86400)"
        ],
    ),
    case(
        "unknown affinity",
        NODE,
        svc("    type: ClusterIP\n", "    type: ClusterIP\n    sessionAffinity: Cookie\n"),
        [
            "services.yaml:11: Service default/web: spec.sessionAffinity: 'Cookie' is not a session affinity (None, ClientIP)"
        ],
    ),
    case(
        "unknown traffic policy",
        NODE,
        svc("    type: NodePort\n", "    type: NodePort\n    externalTrafficPolicy: Everywhere\n"),
        [
            "services.yaml:22: Service default/shop: spec.externalTrafficPolicy: 'Everywhere' is not a traffic policy (Cluster, Local)"
        ],
    ),
    case(
        "load balancer ingress not an address",
        NODE,
        svc("    type: NodePort\n", "    type: LoadBalancer\n").replace(
            "    - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n",
            "    - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n  status: {loadBalancer: {ingress: [{ip: lb.example}]}}\n",
        ),
        [
            "services.yaml:25: Service default/shop: status.loadBalancer.ingress[0].ip: 'lb.example' is not an IP address"
        ],
    ),
    case(
        "load balancer ingress ipMode unknown",
        NODE,
        svc("    type: NodePort\n", "    type: LoadBalancer\n").replace(
            "    - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n",
            "    - {name: http, port: 80, protocol: TCP, nodePort: 30080}\n  status: {loadBalancer: {ingress: [{ip: 198.18.1.9, ipMode: DSR}]}}\n",
        ),
        [
            "services.yaml:25: Service default/shop: status.loadBalancer.ingress[0].ipMode: 'DSR' is not an IP mode (VIP, Proxy)"
        ],
    ),
    case(
        "source ranges on a NodePort Service",
        NODE,
        svc(
            "    type: NodePort\n",
            "    type: NodePort\n    loadBalancerSourceRanges: [198.18.9.0/24]\n",
        ),
        [
            "services.yaml:22: Service default/shop: spec.loadBalancerSourceRanges: may only be used when spec.type is LoadBalancer"
        ],
    ),
    case(
        "source range not a CIDR",
        NODE,
        svc(
            "    type: NodePort\n",
            "    type: LoadBalancer\n    loadBalancerSourceRanges: [198.18.9.0/24, 198.18.9.0/33]\n",
        ),
        [
            "services.yaml:22: Service default/shop: spec.loadBalancerSourceRanges[1]: '198.18.9.0/33' is not a CIDR (address/prefix, e.g. 198.18.0.0/15)"
        ],
    ),
    case(
        "no ports",
        NODE,
        ONE_SERVICE.replace("  ports:\n  - port: 443\n", "  ports: []\n"),
        ["services.yaml:8: Service prod/api: spec.ports: is empty (a Service needs a port)"],
    ),
    case(
        "recursive alias",
        NODE,
        ONE_SERVICE.replace("spec:\n", "spec: &s\n  again: *s\n"),
        ["services.yaml:7: invalid YAML: alias 's' refers to itself"],
    ),
    case(
        "undefined alias",
        NODE,
        ONE_SERVICE.replace("  - port: 443\n", "  - *http\n"),
        ["services.yaml:9: invalid YAML: found undefined alias 'http'"],
    ),
    case(
        "no spec",
        NODE,
        ONE_SERVICE.replace("spec:\n  clusterIP: 198.18.150.1\n  ports:\n  - port: 443\n", ""),
        ["services.yaml:1: Service prod/api: missing required field 'spec'"],
    ),
    # --- services: names (nothing unvalidated reaches the model)
    case(
        "service name with C metacharacters",
        NODE,
        svc("    name: web\n", "    name: 'x\"; }'\n"),
        [
            "services.yaml:7: Service (items[0]): metadata.name: 'x\"; }' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "service name with Jinja",
        NODE,
        svc("    name: web\n", "    name: '{{ 7*7 }}'\n"),
        [
            "services.yaml:7: Service (items[0]): metadata.name: '{{ 7*7 }}' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "service name with newline",
        NODE,
        ONE_SERVICE.replace("name: api", 'name: "api\\n#include <x>"'),
        [
            "services.yaml:4: Service (document 1): metadata.name: 'api\\n#include <x>' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "namespace with comment close",
        NODE,
        svc("namespace: default}", "namespace: '*/'}"),
        [
            "services.yaml:19: Service (items[1]): metadata.namespace: '*/' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "service name missing",
        NODE,
        ONE_SERVICE.replace("  name: api\n", ""),
        ["services.yaml:4: Service (document 1): metadata: missing required field 'name'"],
    ),
    case(
        "port name with Jinja",
        NODE,
        svc("    - name: http\n", "    - name: '{% raw %}'\n"),
        [
            "services.yaml:13: Service default/web: spec.ports[0].name: '{% raw %}' is not a port name (a DNS-1123 label: at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "uppercase service name",
        NODE,
        svc("    name: web\n", "    name: Web\n"),
        [
            "services.yaml:7: Service (items[0]): metadata.name: 'Web' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    # --- services: objects and duplicates
    case(
        "duplicate service",
        NODE,
        (
            SVC,
            ONE_SERVICE.replace("name: api", "name: web")
            .replace("namespace: prod", "namespace: default")
            .replace("198.18.150.1", "198.18.150.2"),
        ),
        ["more.yaml:1: Service default/web: defined twice (first at services.yaml:4)"],
    ),
    case(
        "frontend conflict",
        NODE,
        svc("clusterIP: 198.18.140.24", "clusterIP: 198.18.140.23"),
        [
            "services.yaml:24: Service default/shop: spec.ports[0]: 198.18.140.23:80/TCP is already taken by Service default/web spec.ports[0] (services.yaml:13)"
        ],
    ),
    case(
        "nodePort conflict",
        NODE,
        (
            SVC,
            ONE_SERVICE.replace(
                "  clusterIP: 198.18.150.1\n", "  type: NodePort\n  clusterIP: 198.18.150.1\n"
            ).replace("  - port: 443\n", "  - port: 443\n    nodePort: 30080\n    protocol: TCP\n"),
        ),
        [
            "more.yaml:10: Service prod/api: spec.ports[0].nodePort: 30080/TCP is already taken by Service default/shop spec.ports[0] (services.yaml:24)"
        ],
    ),
    case(
        "document without kind",
        NODE,
        ONE_SERVICE.replace("kind: Service\n", ""),
        ["services.yaml:1: document 1: missing required field 'kind'"],
    ),
    case(
        "document is a string",
        NODE,
        "just text\n---\n" + ONE_SERVICE,
        [
            "services.yaml:1: document 1: 'just text' is not a Kubernetes object (a mapping with apiVersion and kind)"
        ],
    ),
    case(
        "kind with spaces",
        NODE,
        ONE_SERVICE.replace("kind: Service", "kind: Ser vice"),
        ["services.yaml:2: document 1: kind: 'Ser vice' is not a Kubernetes kind"],
    ),
    case(
        "EndpointSlice v1beta1",
        NODE,
        svc("apiVersion: discovery.k8s.io/v1", "apiVersion: discovery.k8s.io/v1beta1"),
        [
            "services.yaml:25: items[2]: apiVersion: discovery.k8s.io/v1beta1 is not supported (discovery.k8s.io/v1)"
        ],
    ),
    case(
        "services yaml syntax error",
        NODE,
        svc(
            "    namespace: default\n  spec:\n    type: ClusterIP\n",
            "    namespace: default\n  spec:\n    type: ClusterIP\n   bad: indent\n",
        ),
        [
            "services.yaml:11: invalid YAML: expected <block end>, but found '<block mapping start>' (while parsing a block mapping at line 4)"
        ],
    ),
    case(
        "services json syntax error",
        NODE,
        '{\n\t"apiVersion": "v1",\n\t"kind": "List",\n\t"items": [\n\t\t{"kind": "Service" "apiVersion": "v1"}\n\t]\n}\n',
        ["services.yaml:5: invalid JSON: expected ',' or '}'"],
    ),
    case(
        "services file missing",
        NODE,
        None,
        ["services.yaml:1: cannot read: No such file or directory"],
    ),
    # --- EndpointSlices
    case(
        "endpoint address invalid",
        NODE,
        svc("[198.19.2.10]", "[198.19.2.300]"),
        [
            "services.yaml:38: EndpointSlice default/web-abc12: endpoints[1].addresses[0]: '198.19.2.300' is not an IPv4 address"
        ],
    ),
    case(
        "endpoint address IPv6 in IPv4 slice",
        NODE,
        svc("[198.19.2.10]", "['2001:db8::10']"),
        [
            "services.yaml:38: EndpointSlice default/web-abc12: endpoints[1].addresses[0]: IPv6 is not supported yet (IPv4 only)"
        ],
    ),
    case(
        "endpoint without addresses",
        NODE,
        svc("addresses: [198.19.2.10]", "addresses: []"),
        [
            "services.yaml:38: EndpointSlice default/web-abc12: endpoints[1].addresses: is empty (an endpoint needs an address)"
        ],
    ),
    case(
        "endpoint condition a string",
        NODE,
        svc("ready: true", "ready: 'yes'"),
        [
            "services.yaml:36: EndpointSlice default/web-abc12: endpoints[0].conditions.ready: 'yes' is not a boolean (true or false)"
        ],
    ),
    case(
        "endpoint nodeName hostile",
        NODE,
        svc("nodeName: node-b", "nodeName: 'node-b; rm -rf /'"),
        [
            "services.yaml:39: EndpointSlice default/web-abc12: endpoints[1].nodeName: 'node-b; rm -rf /' is not a node name (a DNS-1123 subdomain: at most 253 of a-z, 0-9, '-' and '.', each part starting and ending with a letter or digit)"
        ],
    ),
    case(
        "slice service label hostile",
        NODE,
        svc("kubernetes.io/service-name: web", "kubernetes.io/service-name: 'web}}'"),
        [
            "services.yaml:30: EndpointSlice default/web-abc12: metadata.labels[\"kubernetes.io/service-name\"]: 'web}}' is not a Service name (a DNS-1123 label: at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)"
        ],
    ),
    case(
        "slice address type unknown",
        NODE,
        svc("addressType: IPv4", "addressType: IPv5"),
        [
            "services.yaml:31: EndpointSlice default/web-abc12: addressType: 'IPv5' is not an address type (IPv4, IPv6, FQDN)"
        ],
    ),
    case(
        "slice port protocol unknown",
        NODE,
        svc("{name: http, port: 8080, protocol: TCP}", "{name: http, port: 8080, protocol: TPC}"),
        [
            "services.yaml:33: EndpointSlice default/web-abc12: ports[0].protocol: 'TPC' is not a protocol (TCP, UDP, SCTP)"
        ],
    ),
    # --- several problems at once, in input order
    case(
        "problems collected across files",
        node("maxSessions: 65536", "maxSessions: -1", "udp: 300s", "udp: forever"),
        (
            svc(
                "      protocol: TCP\n      targetPort",
                "      protocol: SCTP\n      targetPort",
                "[198.19.2.10]",
                "[198.19.2.300]",
            ),
            ONE_SERVICE.replace("name: api", "name: API"),
        ),
        [
            "node.yaml:20: snat.maxSessions: -1 is out of range (1-16777216)",
            'node.yaml:21: snat.timeouts.udp: \'forever\' is not a duration (seconds, or e.g. "90s", "5m", "2h4m")',
            "services.yaml:15: Service default/web: spec.ports[0].protocol: SCTP is not supported (TCP, UDP)",
            "services.yaml:38: EndpointSlice default/web-abc12: endpoints[1].addresses[0]: '198.19.2.300' is not an IPv4 address",
            "more.yaml:4: Service (document 1): metadata.name: 'API' is not a DNS-1123 label (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit)",
        ],
    ),
    case(
        "invalid node serviceCIDR does not cascade",
        node("serviceCIDR: 198.18.128.0/17", "serviceCIDR: nope"),
        svc("nodePort: 30080", "nodePort: 8080"),
        [
            "node.yaml:9: cluster.serviceCIDR: 'nope' is not an IPv4 CIDR (address/prefix, e.g. 198.18.0.0/15)",
            "services.yaml:24: Service default/shop: spec.ports[0].nodePort: 8080 is outside cluster.nodePortRange 30000-32767",
        ],
    ),
]


def _load(tmp_path: Path, node_text: str, services: str | tuple[str, ...] | None) -> None:
    (tmp_path / "node.yaml").write_text(node_text)
    paths = [Path("services.yaml")]
    if services is not None:
        texts = (services,) if isinstance(services, str) else services
        paths = [Path(name) for name in ("services.yaml", "more.yaml")[: len(texts)]]
        for path, text in zip(paths, texts, strict=True):
            (tmp_path / path).write_text(text)
    # Relative paths, as a user types them: messages name files exactly as given.
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        # strict: what bpfgen does not serve is a problem too (compile --strict); without
        # it such objects are skipped (tests/unit/test_config_skipped.py).
        load_inputs(Path("node.yaml"), paths, strict=True)
    finally:
        os.chdir(cwd)


def test_base_inputs_are_valid(tmp_path: Path) -> None:
    _load(tmp_path, NODE, SVC)
    _load(tmp_path, NODE, ONE_SERVICE)


def test_table_is_large_and_ids_unique() -> None:
    ids = [c.id for c in CASES]  # type: ignore[attr-defined]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("node_text", "services", "expected"), CASES)
def test_error_text(
    tmp_path: Path, node_text: str, services: str | tuple[str, ...] | None, expected: list[str]
) -> None:
    with pytest.raises(InputError) as raised:
        _load(tmp_path, node_text, services)
    assert str(raised.value).splitlines() == expected
    assert [str(p) for p in raised.value.problems] == expected
    assert raised.value.exit_code == 2

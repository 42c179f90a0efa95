"""End to end in the Debian 6.1 guest: IPVS DNAT + bpfgen SNAT, no conntrack entry.

Run inside the VM (tests/vm/test_vm.py does it from the host, builds first):

    python -m tests.vm.run -- python -m pytest tests/vm/guest_ipvs.py

Topology, every name with a per-run suffix, addresses from 198.18.0.0/15, no route out:

    ext (198.18.0.10) --- up0 [node 198.18.0.2] pv1 --- be1 (198.19.1.21)   backend pod
                                  |   bpfgen-ipvs0     pv2 --- be2 (198.19.1.22)   backend pod
                                  |   (the VIPs)       pv3 --- cp  (198.19.1.50)   client pod

Pods are routed /32s behind proxy-ARP veths (no bridge); bpfgen's programs sit
on up0 and pv*. The node namespace has a kube-proxy-like `ct state invalid drop`
forward rule, so conntrack is registered there and would track (and drop IPVS's
packets) if the notrack bypass failed. Checksum offload is off (node side tx,
leaf side rx), so checksums are computed and verified in software.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench._netns import load, loadgen_binary, start_server
from bpfgen_runtime import netns
from bpfgen_runtime.node import Options, down, status, sync, up

ROOT = Path(__file__).resolve().parents[2]
NODE_ADDR = "198.18.0.2"
EXT_ADDR = "198.18.0.10"
BE = {"be1": "198.19.1.21", "be2": "198.19.1.22"}
CP_ADDR = "198.19.1.50"
VIP = "198.18.128.10"
STICKY_VIP = "198.18.128.20"
LB_IP = "198.18.64.10"
HTTP, DNS = 8080, 5353  # backend ports
NODE_PORT_TCP, NODE_PORT_UDP, NODE_PORT_LOCAL = 30080, 30053, 30090
SNAT_RANGE = (20000, 29999)  # the default snat.portRange (the builds do not set it)
# Build "tiny": the exhaustion case's own 256 ports, apart from SNAT_RANGE. Not a load
# case: a range this small exists to run out.
TINY_RANGE = (40000, 40255)
LOAD_VIP = "198.18.128.40"  # `load`: one backend, be1:LOAD_PORT (loadgen's server)
LOAD_PORT = 8090
CONNECT_TIMEOUT = 5.0
LOAD_THREADS = 16  # concurrent connections of a load case
MAX_LATENCY_US = 1_000_000  # a load case's bound per connection: a SYN retransmit is 1 s
SHORT_CONNECTIONS = int(os.environ.get("BPFGEN_E2E_SHORT_CONNECTIONS", "20000"))
SHORT_SECONDS = float(os.environ.get("BPFGEN_E2E_SHORT_SECONDS", "120"))

pytestmark = pytest.mark.vm

NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node:
  name: node-e2e
  addresses: [{node}]
  podCIDR: 198.19.1.0/24
cluster:
  podCIDR: 198.19.0.0/16
  serviceCIDR: 198.18.128.0/17
  masqueradeAll: {masquerade_all}
  nodePortRange: [30000, 32767]
interfaces:
  - {{name: up0, role: uplink, hook: tc}}
  - {{name: "pv*", role: pods}}
datapath:
  mode: ipvs
  scheduler: rr
{snat}"""


def _service(name: str, vip: str, ports: str, extra: str = "") -> str:
    return f"""\
- apiVersion: v1
  kind: Service
  metadata: {{name: {name}, namespace: e2e}}
  spec:
    clusterIP: {vip}
    clusterIPs: [{vip}]
{extra}    ports:
{ports}"""


def _slice(name: str, service: str, endpoints: list[tuple[str, bool]], ports: str) -> str:
    eps = "".join(
        f"  - addresses: [{addr}]\n    conditions: {{ready: {str(ready).lower()}}}\n"
        f"    nodeName: node-e2e\n"
        for addr, ready in endpoints
    )
    return f"""\
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  addressType: IPv4
  metadata:
    name: {name}
    namespace: e2e
    labels: {{kubernetes.io/service-name: {service}}}
  endpoints:
{eps}  ports:
{ports}"""


def _port(name: str, port: int, proto: str, target: int, node_port: int | None = None) -> str:
    np = f", nodePort: {node_port}" if node_port else ""
    return f"    - {{name: {name}, port: {port}, protocol: {proto}, targetPort: {target}{np}}}\n"


def services_yaml(*, be2_http: bool = True, be2_dns: bool = True) -> str:
    web_ports = _port("http", 80, "TCP", HTTP, NODE_PORT_TCP) + _port(
        "dns", 53, "UDP", DNS, NODE_PORT_UDP
    )
    both = [(BE["be1"], True), (BE["be2"], True)]
    items = [
        _service(
            "web", VIP, web_ports,
            "    type: LoadBalancer\n    externalTrafficPolicy: Cluster\n",
        ),
        _slice("web-http", "web", [(BE["be1"], True), (BE["be2"], be2_http)],
               f"  - {{name: http, port: {HTTP}, protocol: TCP}}\n"),
        _slice("web-dns", "web", [(BE["be1"], True), (BE["be2"], be2_dns)],
               f"  - {{name: dns, port: {DNS}, protocol: UDP}}\n"),
        _service(
            "sticky", STICKY_VIP, _port("http", 80, "TCP", HTTP),
            "    sessionAffinity: ClientIP\n"
            "    sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n",
        ),
        _slice("sticky-1", "sticky", both, f"  - {{name: http, port: {HTTP}, protocol: TCP}}\n"),
        _service(
            "local", "198.18.128.30",
            _port("http", 80, "TCP", HTTP, NODE_PORT_LOCAL),
            "    type: NodePort\n    externalTrafficPolicy: Local\n",
        ),
        _slice("local-1", "local", [(BE["be1"], True)],
               f"  - {{name: http, port: {HTTP}, protocol: TCP}}\n"),
        _service("load", LOAD_VIP, _port("http", 80, "TCP", LOAD_PORT)),
        _slice("load-1", "load", [(BE["be1"], True)],
               f"  - {{name: http, port: {LOAD_PORT}, protocol: TCP}}\n"),
    ]  # fmt: skip
    status_lb = f"  status: {{loadBalancer: {{ingress: [{{ip: {LB_IP}}}]}}}}\n"
    items[0] = items[0] + status_lb
    return "apiVersion: v1\nkind: List\nitems:\n" + "".join(items)


BUILDS = ("main", "drained", "tiny", "masqall")


def compile_builds(out: Path) -> dict[str, Path]:
    """main (both backends), drained (be2 out of http and dns), tiny (the exhaustion case's own
    small SNAT range), masqall (cluster.masqueradeAll: every service packet is SNATed).
    All on the default SNAT configuration (no `snat` section) but tiny's range: the
    load case runs on what a user gets."""
    out.mkdir(parents=True, exist_ok=True)
    tiny = f"snat:\n  portRange: [{TINY_RANGE[0]}, {TINY_RANGE[1]}]\n"
    variants = {
        "main": ("", services_yaml(), False),
        "drained": ("", services_yaml(be2_http=False, be2_dns=False), False),
        "tiny": (tiny, services_yaml(), False),
        "masqall": ("", services_yaml(), True),
    }
    builds = {}
    for name, (snat, svc, masq_all) in variants.items():
        node = out / f"{name}-node.yaml"
        node.write_text(
            NODE_YAML.format(node=NODE_ADDR, snat=snat, masquerade_all=str(masq_all).lower())
        )
        services = out / f"{name}-services.yaml"
        services.write_text(svc)
        builds[name] = out / name
        # Captured: this runs on a thread of the host's test session (tests/vm/background.py).
        proc = subprocess.run(
            [sys.executable, "-m", "bpfgen", "compile", "--node", str(node), "--services",
             str(services), "--out", str(builds[name]), "-q", "--no-verify"],
            capture_output=True, text=True, check=False, cwd=ROOT,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"bpfgen compile of build {name}: exit {proc.returncode}\n{proc.stderr}"
            )
    return builds


# --- plumbing ---------------------------------------------------------------------------------


def run(*args: str, check: bool = True) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, *args: str, check: bool = True) -> str:
    return run("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class Topo:
    node: str
    ext: str
    be1: str
    be2: str
    cp: str
    builds: dict[str, Path]
    opts: Options
    servers: list[subprocess.Popen[str]]

    def leaves(self) -> list[str]:
        return [self.ext, self.be1, self.be2, self.cp]


def veth(node: str, node_dev: str, leaf: str, leaf_addr: str, prefix: int) -> None:
    run("ip", "link", "add", node_dev, "netns", node, "type", "veth", "peer", "name", "eth0",
        "netns", leaf)  # fmt: skip
    run("ip", "-n", leaf, "addr", "add", f"{leaf_addr}/{prefix}", "dev", "eth0")
    for ns, dev in ((node, node_dev), (leaf, "eth0"), (leaf, "lo")):
        run("ip", "-n", ns, "link", "set", dev, "up")
    # Software checksums: the node side does not offload tx, the leaf verifies rx.
    in_ns(node, "ethtool", "-K", node_dev, "tx", "off")
    in_ns(leaf, "ethtool", "-K", "eth0", "rx", "off")


KUBE_PROXY_LIKE = """\
table inet kubeproxylike {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state invalid counter drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ct state invalid counter drop
  }
}
"""


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topo]:
    if not os.environ.get("BPFGEN_IN_VM"):
        pytest.fail("runs inside the Debian 6.1 VM: python -m tests.vm.run -- pytest ...")
    sfx = secrets.token_hex(3)
    names = {k: f"e2e-{k}-{sfx}" for k in ("node", "ext", "be1", "be2", "cp")}
    prebuilt = os.environ.get("BPFGEN_E2E_BUILDS")
    builds = (
        {k: Path(prebuilt) / k for k in BUILDS}
        if prebuilt
        else compile_builds(tmp_path_factory.mktemp("builds"))
    )
    run_dir = tmp_path_factory.mktemp("run")
    opts = Options(netns=names["node"], run_dir=str(run_dir))
    servers: list[subprocess.Popen[str]] = []
    created: list[str] = []
    try:
        for ns in names.values():
            run("ip", "netns", "add", ns)
            created.append(ns)
        node = names["node"]
        run("ip", "-n", node, "link", "set", "lo", "up")  # a node's own pings of its VIPs
        veth(node, "up0", names["ext"], EXT_ADDR, 24)
        run("ip", "-n", node, "addr", "add", f"{NODE_ADDR}/24", "dev", "up0")
        run("ip", "-n", names["ext"], "route", "add", "198.18.128.0/17", "via", NODE_ADDR)
        run("ip", "-n", names["ext"], "route", "add", f"{LB_IP}/32", "via", NODE_ADDR)
        for i, (pod, addr) in enumerate(
            [(names["be1"], BE["be1"]), (names["be2"], BE["be2"]), (names["cp"], CP_ADDR)], 1
        ):
            veth(node, f"pv{i}", pod, addr, 32)
            run("ip", "-n", pod, "route", "add", "default", "dev", "eth0", "scope", "link")
            run("ip", "-n", node, "route", "add", f"{addr}/32", "dev", f"pv{i}", "scope", "link")
            in_ns(node, "sysctl", "-qw", f"net.ipv4.conf.pv{i}.proxy_arp=1")
        in_ns(node, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        in_ns(names["ext"], "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=KUBE_PROXY_LIKE,
                       text=True, check=True)  # fmt: skip
        # Both at once, then wait (under emulation each takes tens of seconds to start).
        for be in ("be1", "be2"):
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", names[be], sys.executable,
                 str(ROOT / "tests/vm/ipvs_backend.py"), be, str(HTTP), str(DNS)],
                stdout=subprocess.PIPE, text=True,
            ))  # fmt: skip
        for proc in servers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield Topo(
            node, names["ext"], names["be1"], names["be2"], names["cp"], builds, opts, servers
        )
    finally:
        try:
            down(opts)
        except Exception as exc:  # noqa: BLE001 - teardown goes on
            print(f"teardown: bpfgen down: {exc}", file=sys.stderr)
        for proc in servers:
            proc.kill()
            proc.wait(10)
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], check=False)


# --- clients (in-process: the test enters the client's namespace) --------------------------------


@dataclass(frozen=True)
class Answer:
    backend: str
    peer: str  # the source address the backend saw
    peer_port: int
    local_port: int  # the client's own port


def tcp_request(ns: str, addr: str, port: int, *, timeout: float = CONNECT_TIMEOUT) -> Answer:
    with netns.entered(ns):
        return _tcp_exchange(addr, port, timeout=timeout)


def _tcp_exchange(addr: str, port: int, *, timeout: float) -> Answer:
    """Connect, one request and its answer, close first; in the current namespace."""
    s = socket.create_connection((addr, port), timeout=timeout)
    with s:
        s.sendall(b"hello\n")
        line = s.makefile("rb").readline().decode()
        local_port = s.getsockname()[1]
        s.shutdown(socket.SHUT_WR)  # the client closes first: TIME_WAIT stays here
        s.recv(1)
    name, peer, peer_port = line.split()
    return Answer(name, peer, int(peer_port), local_port)


def udp_request(ns: str, addr: str, port: int) -> tuple[Answer, tuple[str, int]]:
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.settimeout(CONNECT_TIMEOUT)
        s.sendto(b"q", (addr, port))
        data, src = s.recvfrom(512)
        name, peer, peer_port = data.decode().split()
        return Answer(name, peer, int(peer_port), s.getsockname()[1]), src


def conntrack_count(ns: str) -> int:
    return int(in_ns(ns, "conntrack", "-C").strip())


def conntrack_entries(ns: str) -> str:
    return in_ns(ns, "conntrack", "-L", check=False)


def mib(ns: str, table: str = "snmp") -> dict[str, dict[str, int]]:
    """A namespace's /proc/net/{snmp,netstat} counters: {"Tcp": {"RetransSegs": n, ...}}."""
    with netns.entered(ns), open(f"/proc/thread-self/net/{table}") as f:
        lines = f.read().splitlines()
    out: dict[str, dict[str, int]] = {}
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        names, numbers = head.split()[1:], values.split()[1:]
        out[head.split(":")[0]] = {k: int(v) for k, v in zip(names, numbers, strict=False)}
    return out


def csum_errors(ns: str) -> dict[str, int]:
    return {proto: c["InCsumErrors"] for proto, c in mib(ns).items() if "InCsumErrors" in c}


def syn_trouble(ns: str) -> dict[str, int]:
    """The client's SYNs sent again (TCPSynRetrans) and RSTs sent (OutRsts) so far. A
    Linux client that gets an ACK for its SYN (a TIME_WAIT of the same 4-tuple at the
    far end) sends a RST and the SYN again within milliseconds, so a SYN meeting a
    TIME_WAIT shows here, not as a connection over 1 s."""
    return {"syn_retransmits": mib(ns, "netstat")["TcpExt"]["TCPSynRetrans"],
            "rsts_sent": mib(ns)["Tcp"]["OutRsts"]}  # fmt: skip


def counters(opts: Options) -> dict[str, int]:
    info = status(opts)
    result: dict[str, int] = info["counters"]
    return result


def sessions(opts: Options) -> dict[str, int]:
    """Forward SNAT entries by state (for messages): live/expired, closing, seen reply."""
    from bpfgen_runtime.pins import PinnedMap

    now = time.monotonic_ns()
    out = {"total": 0, "closing": 0, "seen_reply": 0, "old": 0}
    with PinnedMap(os.path.join(opts.pin_dir(), "bpfgen_snat_v4")) as m:
        for _, value in m.items():
            last_seen = int.from_bytes(value[:8], "little")
            flags = value[14]
            out["total"] += 1
            out["closing"] += bool(flags & 2)
            out["seen_reply"] += bool(flags & 1)
            out["old"] += now - last_seen > 2_000_000_000
    with PinnedMap(os.path.join(opts.pin_dir(), "bpfgen_rsnat_v4")) as r:
        out["reverse"] = r.count()
    return out


def assert_untracked(topo: Topo, what: str) -> None:
    count = conntrack_count(topo.node)
    assert count == 0, (
        f"{what}: {count} conntrack entries in the node:\n{conntrack_entries(topo.node)}"
    )


def assert_no_csum_errors(topo: Topo) -> None:
    for ns in topo.leaves():
        errs = csum_errors(ns)
        assert not any(errs.values()), f"checksum errors in {ns}: {errs}"


# --- the cases -----------------------------------------------------------------------------------


def test_up_attaches_and_programs_ipvs(topo: Topo) -> None:
    report = up(topo.builds["main"], topo.opts)
    assert any("attach ingress" in c for c in report.changes), report.changes
    again = up(topo.builds["main"], topo.opts)
    assert again.changes == [], f"second up changed: {again.changes}"
    info = status(topo.opts)
    assert info["in_sync"], info.get("differences")
    hooks = {(a["device"], a["hook"]) for a in info["attached"]}
    for dev in ("up0", "pv1", "pv2", "pv3"):
        assert {(dev, "tc_ingress"), (dev, "tc_egress")} <= hooks
    ipvsadm = in_ns(topo.node, "ipvsadm", "-Ln")
    assert f"TCP  {VIP}:80 rr" in ipvsadm and f"{BE['be1']}:{HTTP}" in ipvsadm, ipvsadm
    assert f"TCP  {NODE_ADDR}:{NODE_PORT_TCP}" in ipvsadm and "Masq" in ipvsadm, ipvsadm
    assert f"TCP  {STICKY_VIP}:80 rr persistent 600" in ipvsadm, ipvsadm
    assert in_ns(topo.node, "sysctl", "-n", "net.ipv4.vs.conntrack").strip() == "0"
    timeouts = in_ns(topo.node, "ipvsadm", "-L", "--timeout")
    assert "7440" in timeouts, timeouts
    assert "bpfgen" in in_ns(topo.node, "nft", "list", "tables")
    print(f"ipvs: {ipvsadm.count('->')} real server lines; {timeouts.strip()}")


def test_pod_to_clusterip_keeps_source(topo: Topo) -> None:
    seen = set()
    for _ in range(4):
        a = tcp_request(topo.cp, VIP, 80)
        assert a.peer == CP_ADDR and a.peer_port == a.local_port, a
        seen.add(a.backend)
    assert seen == {"be1", "be2"}, f"rr over two backends: {seen}"
    u, src = udp_request(topo.cp, VIP, 53)
    assert u.peer == CP_ADDR and src == (VIP, 53), (u, src)
    assert_untracked(topo, "pod -> ClusterIP")
    assert_no_csum_errors(topo)


def test_external_to_nodeport_is_snated(topo: Topo) -> None:
    before = counters(topo.opts)
    for _ in range(4):
        a = tcp_request(topo.ext, NODE_ADDR, NODE_PORT_TCP)
        assert a.peer == NODE_ADDR and SNAT_RANGE[0] <= a.peer_port <= SNAT_RANGE[1], a
    u, src = udp_request(topo.ext, NODE_ADDR, NODE_PORT_UDP)
    assert u.peer == NODE_ADDR and SNAT_RANGE[0] <= u.peer_port <= SNAT_RANGE[1], u
    assert src == (NODE_ADDR, NODE_PORT_UDP)
    lb = tcp_request(topo.ext, LB_IP, 80)
    assert lb.peer == NODE_ADDR, lb
    after = counters(topo.opts)
    assert after["snat_new"] - before["snat_new"] >= 6, (before, after)
    assert after["rsnat"] > before["rsnat"]
    assert_untracked(topo, "external -> NodePort")
    assert_no_csum_errors(topo)


def _start_capture(ns: str, pcap: Path) -> subprocess.Popen[str]:
    """tcpdump on a leaf's eth0 (TCP and UDP), started only once it is listening."""
    proc = subprocess.Popen(
        # --immediate-mode: without it, packets still in the ring's open block
        # when tcpdump stops are never written.
        ["ip", "netns", "exec", ns, "tcpdump", "-i", "eth0", "-n", "--immediate-mode", "-U",
         "-w", str(pcap), "tcp or udp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 15)
    line = proc.stderr.readline() if ready else ""
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(f"tcpdump in {ns} did not start: {line!r}")
    return proc


def _wire_checksums_ok(pcap: Path) -> list[tuple[str, bool]]:
    """(summary, ok) for every IPv4 TCP/UDP packet: both checksums as a sender must set them."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.utils import rdpcap

    out = []
    for pkt in rdpcap(str(pcap)):
        if IP not in pkt or not (TCP in pkt or UDP in pkt):
            continue
        ip = pkt[IP]
        l4 = ip[TCP] if TCP in ip else ip[UDP]
        fresh = IP(bytes(ip))
        del fresh.chksum
        del (fresh[TCP] if TCP in fresh else fresh[UDP]).chksum
        fresh = IP(bytes(fresh))  # recomputed by scapy from the packet's own bytes
        fresh_l4 = fresh[TCP] if TCP in fresh else fresh[UDP]
        ok = ip.chksum == fresh.chksum and l4.chksum == fresh_l4.chksum and l4.chksum != 0
        out.append((f"{ip.src}:{l4.sport} > {ip.dst}:{l4.dport} "
                    f"ip {ip.chksum:#06x} l4 {l4.chksum:#06x}", ok))  # fmt: skip
    return out


def test_checksums_on_the_wire(topo: Topo, tmp_path: Path) -> None:
    """NodePort traffic, both translations on its path (IPVS DNAT + bpfgen SNAT one way,
    bpfgen reverse SNAT + IPVS the other), captured on the leaves' wires and every
    checksum recomputed with scapy. Node-side tx offload is off, so what the node sends
    carries complete checksums; nothing is fixed up later by a NIC."""
    captures = {name: tmp_path / f"{name}.pcap" for name in ("ext", "be1", "be2")}
    procs = [_start_capture(getattr(topo, name), pcap) for name, pcap in captures.items()]
    try:
        for _ in range(4):
            tcp_request(topo.ext, NODE_ADDR, NODE_PORT_TCP)
        for _ in range(2):
            udp_request(topo.ext, NODE_ADDR, NODE_PORT_UDP)
    finally:
        time.sleep(1.0)
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    # Only what the node sent: a leaf's own packets are captured before its tx
    # offload would fill the checksum in (CHECKSUM_PARTIAL), so they prove nothing.
    results = {
        name: [(s, ok) for s, ok in _wire_checksums_ok(pcap) if s.startswith(f"{NODE_ADDR}:")]
        for name, pcap in captures.items()
    }
    bad = [(name, s) for name, rs in results.items() for s, ok in rs if not ok]
    assert not bad, f"bad checksums on the wire: {bad}"
    snated = [s for name in ("be1", "be2") for s, _ in results[name]
              if s.startswith(f"{NODE_ADDR}:2")]  # fmt: skip
    replies = [s for s, _ in results["ext"] if s.startswith(f"{NODE_ADDR}:")]
    # 4 TCP connections of >= 5 client packets each, 2 UDP requests
    assert len(snated) >= 20 and len(replies) >= 15, (snated, replies)
    print(
        f"wire: {sum(len(r) for r in results.values())} packets checked "
        f"({len(snated)} SNATed at the backends, {len(replies)} replies at the client)"
    )


def test_external_traffic_policy_local_keeps_client(topo: Topo) -> None:
    a = tcp_request(topo.ext, NODE_ADDR, NODE_PORT_LOCAL)
    assert a.backend == "be1" and a.peer == EXT_ADDR, a
    assert_untracked(topo, "externalTrafficPolicy Local")


def test_node_process_to_clusterip(topo: Topo) -> None:
    a = tcp_request(topo.node, VIP, 80)
    assert a.peer == NODE_ADDR and SNAT_RANGE[0] <= a.peer_port <= SNAT_RANGE[1], a
    u, _ = udp_request(topo.node, VIP, 53)
    assert u.peer == NODE_ADDR, u
    assert_untracked(topo, "node -> ClusterIP")


def test_vip_answers_only_service_ports(topo: Topo) -> None:
    """issue 15, Kubernetes #72236: IPVS's VIPs are local addresses (its dummy device), so
    a node service listening on 0.0.0.0 (sshd, a kubelet port) answered on every
    ClusterIP and LB IP. bpfgen's ingress drops TCP/UDP to a VIP at no Service's port,
    counted drop_vip_port; the node's own address still reaches the service."""
    with netns.entered(topo.node):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", 2222))
        listener.listen(16)
        with netns.entered(topo.ext):
            socket.create_connection((NODE_ADDR, 2222), timeout=CONNECT_TIMEOUT).close()
        # That connection is the node's own, tracked like any: not bpfgen's to keep, and
        # the next tests assert a node without conntrack entries.
        in_ns(topo.node, "conntrack", "-D", "-p", "tcp", "--dport", "2222", check=False)
        before = counters(topo.opts)
        for ns, addr in ((topo.ext, VIP), (topo.ext, LB_IP), (topo.cp, VIP)):
            with netns.entered(ns), pytest.raises(OSError):
                socket.create_connection((addr, 2222), timeout=1.5).close()
        dropped = counters(topo.opts)["drop_vip_port"] - before["drop_vip_port"]
        assert dropped >= 3, dropped  # one SYN each at least (retransmits add to it)
    tcp_request(topo.ext, VIP, 80)  # the Service's own port still answers


def arp_answered(ns: str, sender: str, target: str, *, timeout: float = 1.0) -> bool:
    """Whether an ARP request for `target`, sent from `ns`'s eth0 as `sender`, is answered."""
    with netns.entered(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        with s:
            s.bind(("eth0", 0x0806))
            mac = s.getsockname()[4]
            request = (
                b"\xff" * 6
                + mac
                + b"\x08\x06"
                + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
                + mac
                + socket.inet_aton(sender)
                + bytes(6)
                + socket.inet_aton(target)
            )
            s.send(request)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([s], [], [], left)
                if not ready:
                    break
                frame = s.recv(128)
                arp = frame[14:42]
                if (
                    len(arp) == 28
                    and struct.unpack("!H", arp[6:8])[0] == 2
                    and arp[14:18] == socket.inet_aton(target)
                ):
                    return True
    return False


def test_strict_arp_no_reply_for_vips(topo: Topo) -> None:
    """issue 15, Kubernetes #76664: the VIPs are local addresses on the dummy device, and
    Linux answers ARP for any local address on any interface: the node claimed every LB
    IP on its LAN. bpfgen sets strict ARP (arp_ignore=1, arp_announce=2) on the uplink
    while up; the node still answers for its own address there. Pods keep their answer
    for a VIP: their default route is on-link, so they ARP for the VIP itself, and
    conf.all (what kube-proxy's strictARP sets) would leave them unanswered (down
    restores both: test_down_removes_everything)."""
    for name, value in (("arp_ignore", "1"), ("arp_announce", "2")):
        assert in_ns(topo.node, "sysctl", "-n", f"net.ipv4.conf.up0.{name}").strip() == value
        assert in_ns(topo.node, "sysctl", "-n", f"net.ipv4.conf.all.{name}").strip() == "0"
    assert arp_answered(topo.ext, EXT_ADDR, NODE_ADDR), "no ARP reply for the node address"
    for vip in (LB_IP, VIP):
        assert not arp_answered(topo.ext, EXT_ADDR, vip), f"the node answered ARP for {vip}"
    assert arp_answered(topo.be1, BE["be1"], VIP), "a pod got no ARP reply for a VIP"


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(ns: str, addr: str, *, timeout: float = 3.0) -> bool:
    """One ICMP echo request from `ns`; True when the matching reply from `addr` arrives."""
    ident, seq = secrets.randbits(16), 1
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"bpfgen-e2e"
    packet = body[:2] + _icmp_checksum(body).to_bytes(2, "big") + body[4:]
    with netns.entered(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with s:
        s.sendto(packet, (addr, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, src = s.recvfrom(2048)
            except TimeoutError:
                break
            icmp = data[(data[0] & 0xF) * 4 :]
            if src[0] == addr and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                return _icmp_checksum(icmp) == 0
    return False


def test_icmp_echo_to_vip_answered_untracked(topo: Topo) -> None:
    """IPVS forwards no ICMP echo; the VIPs are local (the dummy device), so the node
    answers a ping to a ClusterIP or LB IP, as kube-proxy's IPVS mode does, and the
    notrack table keeps that out of conntrack too."""
    for ns, addr in ((topo.cp, VIP), (topo.ext, VIP), (topo.ext, LB_IP), (topo.node, VIP)):
        if not ping(ns, addr):
            with netns.entered(topo.node), open("/proc/thread-self/net/snmp") as f:
                icmp = [line for line in f if line.startswith("Icmp:")]
            raise AssertionError(
                f"no valid echo reply from {addr} in {ns}; node ICMP MIB:\n{''.join(icmp)}"
                f"{in_ns(topo.node, 'ip', 'route', 'get', addr, check=False)}"
                f"{in_ns(topo.node, 'nft', 'list', 'ruleset', check=False)}"
            )
    assert_untracked(topo, "ICMP echo to a VIP")


def test_hairpin_pod_reaches_itself(topo: Topo) -> None:
    for _ in range(8):  # rr: some of these land on be1 itself
        a = tcp_request(topo.be1, VIP, 80)
        if a.backend == "be1":
            assert a.peer == NODE_ADDR, f"hairpin must be SNATed: {a}"
            break
    else:
        pytest.fail("no connection from be1 landed on be1")
    assert_untracked(topo, "hairpin")


def test_client_ip_affinity(topo: Topo) -> None:
    backends = {tcp_request(topo.cp, STICKY_VIP, 80).backend for _ in range(6)}
    assert len(backends) == 1, backends
    assert_untracked(topo, "affinity")


def test_masquerade_all_snats_pod_traffic(topo: Topo) -> None:
    """cluster.masqueradeAll is specialized into the ingress code: a sync swaps programs,
    after which even pod -> ClusterIP is SNATed to the node; and back."""
    report = sync(topo.builds["masqall"], topo.opts)
    assert any("replace ingress" in c for c in report.changes), report.changes
    a = tcp_request(topo.cp, VIP, 80)
    assert a.peer == NODE_ADDR and SNAT_RANGE[0] <= a.peer_port <= SNAT_RANGE[1], a
    u, src = udp_request(topo.cp, VIP, 53)
    assert u.peer == NODE_ADDR and src == (VIP, 53), (u, src)
    assert_untracked(topo, "masqueradeAll")
    sync(topo.builds["main"], topo.opts)
    back = tcp_request(topo.cp, VIP, 80)
    assert back.peer == CP_ADDR, f"masqueradeAll off again, the pod keeps its source: {back}"
    assert_no_csum_errors(topo)


def test_sync_drains_removed_endpoint(topo: Topo) -> None:
    # A connection to be2 held open across the sync.
    held = None
    for _ in range(6):
        with netns.entered(topo.cp):
            s = socket.create_connection((VIP, 80), timeout=CONNECT_TIMEOUT)
        s.sendall(b"1\n")
        reader = s.makefile("rb")
        if reader.readline().split()[0] == b"be2":
            held = (s, reader)
            break
        s.close()
    assert held is not None, "rr never chose be2"
    # A UDP flow (one client socket) on be2 across the sync, too.
    flow = None
    for _ in range(6):
        with netns.entered(topo.cp):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(CONNECT_TIMEOUT)
        u.connect((VIP, 53))
        u.send(b"q")
        if u.recv(512).split()[0] == b"be2":
            flow = u
            break
        u.close()
    assert flow is not None, "rr never chose be2 for UDP"
    report = sync(topo.builds["drained"], topo.opts)
    assert any(f"drain real server {BE['be2']}:{HTTP}" in c for c in report.changes), report.changes
    # issue 15 (Kubernetes #77802): a UDP real server is deleted at once, not drained,
    # and its flow goes on at a live backend instead of into a black hole.
    assert any(f"delete real server {BE['be2']}:{DNS}" in c for c in report.changes), report.changes
    with flow:
        flow.settimeout(2.0)
        answers = []
        for _ in range(3):  # IPVS may drop the packet that expires the old entry
            flow.send(b"q")
            try:
                answers.append(flow.recv(512).split()[0])
                break
            except TimeoutError:
                answers.append(b"timeout")
        assert answers[-1] == b"be1", f"the UDP flow after be2 left: {answers}"
    new = {tcp_request(topo.cp, VIP, 80).backend for _ in range(6)}
    assert new == {"be1"}, f"new connections after be2 was removed: {new}"
    s, reader = held
    s.sendall(b"2\n")
    assert reader.readline().split()[0] == b"be2", "the held connection broke across sync"
    s.close()
    info = status(topo.opts)
    assert info["in_sync"], info.get("differences")
    assert_untracked(topo, "sync")


def hold_until_refused(ns: str, addr: str, port: int, limit: int) -> tuple[int, int | None]:
    """From `ns`, open and hold up to `limit` TCP connections to addr:port until one
    fails; all closed after. (How many were held, the index of the failure or None.)"""
    held: list[socket.socket] = []
    failed_at = None
    try:
        with netns.entered(ns):
            for i in range(limit):
                try:
                    held.append(socket.create_connection((addr, port), timeout=1.5))
                except OSError:
                    failed_at = i
                    break
    finally:
        for s in held:
            s.close()
    return len(held), failed_at


def test_exhaustion_is_counted(topo: Topo) -> None:
    """Small range: hold connections until the SNAT ports run out; then a clear counter.
    Not a load case: the `tiny` build's own 256-port range exists to run out (the
    connections are held open, so no timeout is involved)."""
    report = sync(topo.builds["tiny"], topo.opts)
    assert any("replace egress" in c for c in report.changes), report.changes
    before = counters(topo.opts)
    ports = TINY_RANGE[1] - TINY_RANGE[0] + 1
    # two backends: each has the whole range (EDM)
    held, failed_at = hold_until_refused(topo.ext, NODE_ADDR, NODE_PORT_TCP, 3 * ports)
    delta = {k: v - before[k] for k, v in counters(topo.opts).items()}
    print(
        f"exhaustion: {held} connections held before the first failure "
        f"({2 * ports} ports over two backends); counters {delta}; sessions {sessions(topo.opts)}"
    )
    assert failed_at is not None, "the range never ran out"
    assert held >= int(0.95 * 2 * ports), f"failed early: {held} of {2 * ports}"
    assert delta["drop_exhausted"] > 0 and delta["drop_map_full"] == 0, delta
    assert_untracked(topo, "exhaustion")


def loadgen() -> Path:
    """bench/loadgen.c compiled: the host's binary when it hands one over
    (BPFGEN_E2E_LOADGEN: clang under emulation is slow), else compiled here."""
    given = os.environ.get("BPFGEN_E2E_LOADGEN")
    return Path(given) if given else loadgen_binary()


def session_fill(opts: Options) -> dict[str, str]:
    """The pinned session maps' fill (either mode), for messages."""
    return {m["name"]: f"{m['entries']}/{m['max_entries']}" for m in status(opts)["maps"]
            if m.get("pinned") and "nat" in m["name"]}  # fmt: skip


def short_load(
    binary: Path, opts: Options, ns: str, addr: str, port: int, n: int, *, seconds: float,
    expect: str,
) -> dict[str, Any]:  # fmt: skip
    """n short connections (loadgen tcp-short: connect, one line, its answer, the client
    closes), LOAD_THREADS at a time, from `ns` to addr:port, bounded by `seconds`.
    loadgen's result (each connection's latency from connect to the answer), with
    "delta" (the counters that moved), "problems" (what a load case forbids: a failed
    connection, one over 1 s, fewer than n, an answer not from `expect`, drop_exhausted,
    a SYN the client sent again: see syn_trouble) and "summary" (printed)."""
    before, client_before = counters(opts), syn_trouble(ns)
    r = load(binary, ns, "tcp-short", addr, port, threads=LOAD_THREADS, seconds=seconds,
             max_requests=n, expect=expect)  # fmt: skip
    after = counters(opts)
    r["delta"] = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    r["client"] = {k: v - client_before[k] for k, v in syn_trouble(ns).items()}
    problems = []
    if r["failed"]:
        problems.append(f"{r['failed']} connections failed (first error: {r['first_error']}; "
                        "a connect unanswered for 2 s ends 'in progress')")  # fmt: skip
    # Timing is asserted on the host only. In the 6.1 guest under TCG on a busy 2-core host
    # the emulator itself stalls connections by seconds and lets SYN timers fire (measured:
    # 2.84 s max with no SYN resent, and one SYN resent in 20,000 through IPVS with nothing
    # dropped by bpfgen): there the defects a load case exists for, a port that runs out or
    # is reused while the backend holds it, show as failures and drop_exhausted, which are
    # asserted everywhere; the maximum and the resent SYNs are reported in the summary.
    timed = not os.environ.get("BPFGEN_IN_VM")
    if timed and r["max_us"] >= MAX_LATENCY_US:
        problems.append(
            f"a connection took {r['max_us'] / 1e6:.2f} s (p99 "
            f"{r['p99_us'] / 1e3:.1f} ms): over 1 s is a SYN retransmitted"
        )
    if r["ok"] < n:
        problems.append(f"only {r['ok']} of {n} connections in {r['elapsed_s']:.1f} s")
    if r["mismatched"]:
        problems.append(f"{r['mismatched']} answers not from {expect}")
    if r["delta"].get("drop_exhausted", 0):
        problems.append(f"drop_exhausted counted {r['delta']['drop_exhausted']}")
    if timed and r["client"]["syn_retransmits"]:
        problems.append(f"the client sent {r['client']['syn_retransmits']} SYNs again and "
                        f"{r['client']['rsts_sent']} RSTs: SYNs dropped, or answered by a "
                        "TIME_WAIT of the same 4-tuple")  # fmt: skip
    r["problems"] = problems
    r["summary"] = (
        f"{r['ok']} ok, {r['failed']} failed of {n} in {r['elapsed_s']:.1f} s "
        f"({r['ok'] / max(r['elapsed_s'], 1e-9):,.0f}/s); latency p50 {r['p50_us'] / 1e3:.2f} "
        f"ms, p99 {r['p99_us'] / 1e3:.2f} ms, max {r['max_us'] / 1e3:.1f} ms; counters moved "
        f"{r['delta']}; sessions {session_fill(opts)}; client {r['client']}"
        + (f"; over 200 ms by cause {r['over_200ms']}" if "over_200ms" in r else "")
    )
    print(r["summary"])
    return r


def test_short_connections_on_defaults(topo: Topo) -> None:
    """A load case on the default SNAT configuration (10,000 ports, tcpTransitory 240 s):
    20,000 short connections, 16 at a time, from the external client to `load`, a
    ClusterIP with one backend (IPVS DNAT, bpfgen's eBPF SNAT to the node's address).
    Twice as many connections as the range has ports for one backend, so closed
    sessions must give their ports back (or keep the client's) long before the
    transitory timeout. No failure, none over 1 s, drop_exhausted 0, nothing tracked.

    The client closes first; its namespace, and only it, has tcp_tw_reuse=1 (and the
    topology's ip_local_port_range 1024-65000), as a busy client host may. loadgen
    (bench/loadgen.c) is the client and be1's server on LOAD_PORT: a Python
    client makes far fewer connections per second in the guest. Bounded by count
    (BPFGEN_E2E_SHORT_CONNECTIONS) and time (BPFGEN_E2E_SHORT_SECONDS)."""
    sync(topo.builds["main"], topo.opts)  # the exhaustion case left `tiny` in place
    binary = loadgen()
    server = start_server(binary, topo.be1, LOAD_PORT, LOAD_THREADS)
    in_ns(topo.ext, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
    try:
        r = short_load(binary, topo.opts, topo.ext, LOAD_VIP, 80, SHORT_CONNECTIONS,
                       seconds=SHORT_SECONDS, expect=NODE_ADDR)  # fmt: skip
    finally:
        server.kill()
        server.wait(10)
    assert not r["problems"], "; ".join(r["problems"]) + f"\n{r['summary']}"
    assert_untracked(topo, "short connections")
    assert_no_csum_errors(topo)


def _invalid_drops(topo: Topo) -> int:
    listing = in_ns(topo.node, "nft", "list", "chain", "inet", "kubeproxylike", "forward")
    match = re.search(r"ct state invalid counter packets (\d+)", listing)
    assert match, listing
    return int(match.group(1))


def test_without_notrack_conntrack_drops_ipvs_tcp(topo: Topo) -> None:
    """Why the notrack table is part of the design, not an option: with
    net.ipv4.vs.conntrack=0 but the table gone, conntrack meets IPVS's packets
    mid-flow (the backend's SYN-ACK has no SYN it saw), calls them invalid, and the
    kube-proxy-like `ct state invalid drop` kills the connection."""
    assert in_ns(topo.node, "sysctl", "-n", "net.ipv4.vs.conntrack").strip() == "0"
    before = _invalid_drops(topo)
    in_ns(topo.node, "nft", "delete", "table", "ip", "bpfgen")
    try:
        for ns, addr, port in ((topo.ext, NODE_ADDR, NODE_PORT_TCP), (topo.cp, VIP, 80)):
            with pytest.raises(OSError):
                tcp_request(ns, addr, port, timeout=3.0)
        dropped = _invalid_drops(topo) - before
        tracked = conntrack_count(topo.node)
    finally:
        report = sync(topo.builds["main"], topo.opts)  # the build in place (the load case's)
        in_ns(topo.node, "conntrack", "-F", check=False)
    print(
        f"without notrack: 2 of 2 connections failed, {dropped} packets dropped as "
        f"ct state invalid, {tracked} conntrack entries left"
    )
    # No entry stays: IPVS untracks what it forwards (vs.conntrack=0), and an
    # invalid packet creates none; the drops are the whole story.
    assert dropped > 0, f"the connections failed, but not by `ct state invalid drop`: {dropped}"
    assert any("nftables" in c for c in report.changes), report.changes
    a = tcp_request(topo.ext, NODE_ADDR, NODE_PORT_TCP)
    assert a.peer == NODE_ADDR, a
    assert_untracked(topo, "notrack table restored by sync")


def _ipvs_mode_left(topo: Topo) -> list[str]:
    """What of bpfgen's ipvs mode is in the node namespace (or its pins)."""
    left = []
    if "bpfgen" in in_ns(topo.node, "nft", "list", "tables"):
        left.append("nft table")
    if in_ns(topo.node, "ipvsadm", "-Ln").count("->") > 1:  # more than the header line
        left.append("IPVS services")
    if "bpfgen-ipvs0" in in_ns(topo.node, "ip", "link"):
        left.append("dummy device")
    if Path(topo.opts.pin_dir()).exists():
        left.append("pins")
    for dev in ("up0", "pv1"):
        if "clsact" in in_ns(topo.node, "tc", "qdisc", "show", "dev", dev):
            left.append(f"clsact on {dev}")
    return left


# The ipvs mode's own steps (runtime/node.py's change texts). The rest of `up` (bpffs,
# pins, load, clsact, attach) is the bpf mode's, killed at every point on the host
# (tests/e2e/test_runtime_faults.py); under emulation each kill costs ~30 s, so here
# `up` is killed once per kind of step, right after its first such step and before
# the state file records it: the case that leaks when `down` trusts the record.
# A real server's is left out: it comes right after its service's, which `down` must
# already find from the kernel when the record misses it.
IPVS_MODE_STEPS = ("add IPVS service", "create dummy device", "install nftables table",
                   "sysctl net.ipv4.vs.")  # fmt: skip


def cli_status(netns: str, run_dir: str) -> tuple[int, str]:
    """`bpfgen status --netns NETNS` through the runtime's CLI, in this process: its exit
    code and stderr."""
    from bpfgen_runtime import cli

    saved = os.environ.get("BPFGEN_RUN_DIR")
    os.environ["BPFGEN_RUN_DIR"] = run_dir
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["status", "--netns", netns])
    finally:
        if saved is None:
            del os.environ["BPFGEN_RUN_DIR"]
        else:
            os.environ["BPFGEN_RUN_DIR"] = saved
    return code, err.getvalue()


def test_up_killed_at_points_converges(topo: Topo) -> None:
    """The ipvs mode under faults (issue 13): `up` SIGKILLed after the first of each kind
    of ipvs-mode step (an IPVS service, the dummy device, the notrack table, a vs.*
    sysctl; runtime/fault.py), then `status` gives no traceback, `up`
    converges and `down` leaves no nft table, IPVS service, dummy device, pin or clsact
    qdisc."""
    from bpfgen_runtime.fault import KILL_ENV, TRACE_ENV

    build = topo.builds["main"]
    down(topo.opts)
    assert _ipvs_mode_left(topo) == []
    cli = [sys.executable, "-m", "bpfgen_runtime.cli"]
    environ = {**os.environ, "BPFGEN_RUN_DIR": topo.opts.run_dir}
    trace = Path(topo.opts.run_dir).parent / "fault-trace"

    def run_cli(*argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *argv, "--netns", topo.node], capture_output=True,
                              text=True, env={**environ, **extra}, timeout=300)  # fmt: skip

    done = run_cli("up", str(build), **{TRACE_ENV: str(trace)})
    assert done.returncode == 0, done.stderr
    points = [line.split(" ", 1) for line in trace.read_text().splitlines()]
    down(topo.opts)
    chosen = [next(((int(n), name) for n, name in points
                    if name.startswith("after ") and step in name), (0, step))
              for step in IPVS_MODE_STEPS]  # fmt: skip
    assert all(n for n, _ in chosen), (chosen, points)  # every kind of step was reached
    print(f"\nfault (ipvs mode): up has {len(points)} points", flush=True)
    for n, name in chosen:
        where = f"up killed at point {n}/{len(points)} ({name})"
        print(f"\nfault (ipvs mode): {where}", flush=True)
        done = run_cli("up", str(build), **{KILL_ENV: str(n)})
        assert done.returncode == -9, (where, done.returncode, done.stderr)
        # The CLI's status in this process (a new interpreter costs seconds under
        # emulation): an exception would surface here as the traceback it would print.
        code, err = cli_status(topo.node, topo.opts.run_dir)
        assert code in (0, 3), (where, code, err)
        up(build, topo.opts)
        info = status(topo.opts)
        assert info["in_sync"], (where, info.get("differences"))
        down(topo.opts)
        assert _ipvs_mode_left(topo) == [], (where, _ipvs_mode_left(topo))
    up(build, topo.opts)  # as the suite's last case expects: the node up


def test_down_removes_everything(topo: Topo) -> None:
    report = down(topo.opts)
    assert report.changes
    assert "bpfgen" not in in_ns(topo.node, "nft", "list", "tables")
    assert in_ns(topo.node, "ipvsadm", "-Ln").count("->") <= 1  # only the header line
    assert "bpfgen-ipvs0" not in in_ns(topo.node, "ip", "link")
    for name in ("arp_ignore", "arp_announce"):  # strict ARP restored (a new netns: 0)
        assert in_ns(topo.node, "sysctl", "-n", f"net.ipv4.conf.up0.{name}").strip() == "0"
    assert not Path(topo.opts.pin_dir()).exists()
    for dev in ("up0", "pv1"):
        assert "clsact" not in in_ns(topo.node, "tc", "qdisc", "show", "dev", dev)
    assert not re.search(
        r"\bbpf\b", in_ns(topo.node, "tc", "filter", "show", "dev", "up0", "ingress")
    )
    # Not up, and nothing of bpfgen's found in the kernel either (the runtime looks there
    # too, not only at its state file: docs/runtime.md).
    info = status(topo.opts)
    assert (info["netns"], info["up"], info["record"], info["differences"]) == (
        topo.node,
        False,
        "none",
        [],
    ), info

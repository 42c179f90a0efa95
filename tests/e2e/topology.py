"""The end-to-end topology in namespaces: an external client, a node, backend and client pods.

    ext (198.18.0.10) --- up0 [node 198.18.0.2] pv1 --- be1 (198.19.1.21)   backend pod
                                                pv2 --- be2 (198.19.1.22)   backend pod
                                                ...     beN
                                                pvK --- cp  (198.19.1.50)   client pod

The ipvs VM suite's topology (tests/vm/guest_ipvs.py) with any number of backend
pods and without anything mode-specific: no VIP is local on the node (the bpf mode
matches VIPs in its program; a mode that needs them local adds them itself), no
bpfgen runtime. Pods are /32 routes behind proxy-ARP veths (no bridge); checksum
offload is off (node side tx, leaf side rx: computed and verified in software);
the node has a kube-proxy-like `ct state invalid drop` forward/input table, so
conntrack is registered there and would track anything that reached netfilter.

Every namespace has a per-run name (`<prefix>-<role>-<hex>`), every device is
created inside them (never in the root namespace), addresses are from
198.18.0.0/15 and nothing routes out; `topology()` deletes the namespaces by name
and kills the servers it started also when the body fails. The plumbing (veth,
clients, conntrack and checksum counts) is the VM suite's own, imported from
tests/vm/guest_ipvs.py so that both suites measure the same way; guest_ipvs's
fixture could be built on `topology()` too.
"""

from __future__ import annotations

import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vm.guest_ipvs import KUBE_PROXY_LIKE, conntrack_count, csum_errors, in_ns, run, veth

ROOT = Path(__file__).resolve().parents[2]
BACKEND_SERVER = ROOT / "tests" / "vm" / "ipvs_backend.py"
NODE_ADDR = "198.18.0.2"
EXT_ADDR = "198.18.0.10"
CP_ADDR = "198.19.1.50"
SERVICE_NET = "198.18.128.0/17"
# Bounded, and generous: in the 6.1 guest under TCG on a busy 2-core host, one backend
# server (python, asyncio) took 53 s from exec to "ready".
SERVER_START_SECONDS = 90.0


def backend_addr(i: int) -> str:
    """be1 -> 198.19.1.21, be2 -> .22, ..."""
    return f"198.19.1.{20 + i}"


@dataclass
class Topology:
    node: str  # namespace names
    ext: str
    pods: dict[str, str]  # role (be1, ..., cp) -> namespace
    addrs: dict[str, str]  # role -> address
    devices: dict[str, str]  # role -> node-side device (pv1, ...)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def leaves(self) -> list[str]:
        return [self.ext, *self.pods.values()]

    def backends(self) -> list[str]:
        return [r for r in self.pods if r.startswith("be")]

    def conntrack(self) -> int:
        return conntrack_count(self.node)

    def csum_errors(self) -> dict[str, dict[str, int]]:
        """InCsumErrors per protocol, for every leaf that has any."""
        out = {ns: csum_errors(ns) for ns in self.leaves()}
        return {ns: errs for ns, errs in out.items() if any(errs.values())}


def _spawn_server(ns: str, name: str, ports: Sequence[int | str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(BACKEND_SERVER), name,
         *map(str, ports)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def _await_ready(proc: subprocess.Popen[str], name: str, ns: str, deadline: float) -> None:
    """The server's "ready" line by `deadline` (time.monotonic()), else it fails."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    line = proc.stdout.readline().strip() if ready else ""
    if line != "ready":
        raise AssertionError(f"backend server {name} in {ns} did not start: {line!r}")


def _start_server(ns: str, name: str, ports: Sequence[int | str]) -> subprocess.Popen[str]:
    """One server, started and ready (else killed, and the case fails)."""
    proc = _spawn_server(ns, name, ports)
    try:
        _await_ready(proc, name, ns, time.monotonic() + SERVER_START_SECONDS)
    except AssertionError:
        proc.kill()
        proc.wait(10)
        raise
    return proc


@contextmanager
def topology(
    prefix: str,
    n_backends: int,
    ports: Sequence[int | str],
    *,
    vip_routes: tuple[str, ...] = (),
) -> Iterator[Topology]:
    """Namespaces, veths, routes and backend servers (each answering on `ports`; a
    port given as "PORT:close" closes first, tests/vm/ipvs_backend.py); the external
    client routes SERVICE_NET and `vip_routes` via the node."""
    sfx = secrets.token_hex(3)
    roles = [f"be{i}" for i in range(1, n_backends + 1)] + ["cp"]
    names = {r: f"{prefix}-{r}-{sfx}" for r in ["node", "ext", *roles]}
    addrs = {f"be{i}": backend_addr(i) for i in range(1, n_backends + 1)} | {"cp": CP_ADDR}
    created: list[str] = []
    topo = Topology(
        node=names["node"], ext=names["ext"], pods={r: names[r] for r in roles}, addrs=addrs,
        devices={r: f"pv{i}" for i, r in enumerate(roles, 1)},
    )  # fmt: skip
    try:
        for ns in names.values():
            run("ip", "netns", "add", ns)
            created.append(ns)
        node = topo.node
        run("ip", "-n", node, "link", "set", "lo", "up")
        veth(node, "up0", topo.ext, EXT_ADDR, 24)
        run("ip", "-n", node, "addr", "add", f"{NODE_ADDR}/24", "dev", "up0")
        for net in (SERVICE_NET, *vip_routes):
            run("ip", "-n", topo.ext, "route", "add", net, "via", NODE_ADDR)
        for role in roles:
            pod, dev, addr = topo.pods[role], topo.devices[role], addrs[role]
            veth(node, dev, pod, addr, 32)
            # The node's address as the gateway (as Calico's 169.254.1.1): a pod ARPs
            # only for it, whatever it talks to. With `default dev eth0` (the ipvs
            # suite's) a pod ARPs for every destination and proxy ARP answers only for
            # what the node routes: a VIP that is not local (bpf mode) has no answer.
            run("ip", "-n", pod, "route", "add", f"{NODE_ADDR}/32", "dev", "eth0", "scope", "link")
            run("ip", "-n", pod, "route", "add", "default", "via", NODE_ADDR, "dev", "eth0")
            run("ip", "-n", node, "route", "add", f"{addr}/32", "dev", dev, "scope", "link")
            in_ns(node, "sysctl", "-qw", f"net.ipv4.conf.{dev}.proxy_arp=1")
        in_ns(node, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        in_ns(topo.ext, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000")
        subprocess.run(["ip", "netns", "exec", node, "nft", "-f", "-"], input=KUBE_PROXY_LIKE,
                       text=True, check=True, capture_output=True)  # fmt: skip
        # All at once, then wait: under the 6.1 guest's emulation a Python server takes
        # tens of seconds to start, and one after the other they added up. Killed in the
        # `finally` below also when one does not start.
        for role in topo.backends():
            topo.servers.append(_spawn_server(topo.pods[role], role, ports))
        deadline = time.monotonic() + SERVER_START_SECONDS
        for role, proc in zip(topo.backends(), topo.servers, strict=True):
            _await_ready(proc, role, topo.pods[role], deadline)
        yield topo
    finally:
        for proc in topo.servers:
            proc.kill()
            proc.wait(10)
        for ns in reversed(created):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)

"""`datapath.socketLB` end to end on this host's kernel: node process -> service through the
cgroup sock_addr programs (docs/datapath-bpf.md, "node processes").

The topology of test_bpf_mode_host.py (tests/e2e/topology.py) and its builds with
`socketLB: true`; `up` is given a TEST cgroup (Options.cgroup), created for this module
under the host's cgroup v2 mount (or a private cgroup2 mount on a temporary directory
when there is none) and removed afterwards, also on failure. Nothing is ever attached to
another cgroup: the build's own `datapath.cgroup` (the root cgroup) is never used.

Every node process is a subprocess (tests/e2e/sock_client.py) in the node's namespace,
moved into the test cgroup before it runs (its pid written to cgroup.procs between fork
and exec). The backends answer with their name and the peer address they saw.

Conntrack: the node process talks to the backend itself, so the node's conntrack sees a
plain local connection to the backend's address (as any node process's connection to a
pod), never the VIP and never a translation. Each case asserts exactly that, then
deletes those entries (the node's own flows, by source address), so that the count is 0
again, as the other suites check.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from vm.guest_ipvs import _port, _service, conntrack_entries, in_ns

from bpfgen_runtime import mode_bpf
from bpfgen_runtime.builddir import InputRefused
from bpfgen_runtime.errors import RuntimeOpError
from bpfgen_runtime.node import Options, down, status, sync, up
from e2e.runtime_env import Env
from e2e.test_bpf_mode_host import (
    DNS,
    EMPTY_VIP,
    EXTRA_VIP,
    HTTP,
    NODE_PORT_TCP,
    STICKY_VIP,
    VIP,
    Variant,
    _http_slice,
    compile_variants,
    node_up,
    services_yaml,
)
from e2e.topology import NODE_ADDR, Topology, backend_addr, topology

pytestmark = [pytest.mark.root, pytest.mark.kernel]

CLIENT = Path(__file__).resolve().parent / "sock_client.py"
CLIENT_SECONDS = 60.0
CGROUP_HOOKS = {"cgroup_connect4", "cgroup_sendmsg4", "cgroup_recvmsg4", "cgroup_getpeername4"}
SPREAD_CONNECTIONS = 24

# externalTrafficPolicy: Local over be2 alone, which is another node's here (node.podCIDR
# holds be1 only, and be2's nodeName is node-b): `short` (internal policy Cluster) and
# `both` (Local too). Outsiders would be dropped; the node's own processes are
# short-circuited to the Cluster policy's endpoints, be2 (kube-proxy: Kubernetes #77523).
SHORT_VIP, BOTH_VIP = "198.18.128.90", "198.18.128.91"
NODE_PORT_SHORT, NODE_PORT_BOTH = 30091, 30092
SHORTCUT_YAML = "".join((
    _service("short", SHORT_VIP, _port("http", 80, "TCP", HTTP, NODE_PORT_SHORT),
             "    type: NodePort\n    externalTrafficPolicy: Local\n"),
    _http_slice("short-1", "short", [(backend_addr(2), True)]).replace("node-e2e", "node-b"),
    _service("both", BOTH_VIP, _port("http", 80, "TCP", HTTP, NODE_PORT_BOTH),
             "    type: NodePort\n    externalTrafficPolicy: Local\n"
             "    internalTrafficPolicy: Local\n"),
    _http_slice("both-1", "both", [(backend_addr(2), True)]).replace("node-e2e", "node-b"),
))  # fmt: skip
BE1_ONLY = "198.19.1.20/31"  # be1 198.19.1.21, not be2 .22

VARIANTS = {
    "main": Variant("random", services_yaml(policies=True) + SHORTCUT_YAML, socket_lb=True,
                    pod_cidr=BE1_ONLY),
    "extra": Variant("random", services_yaml(policies=True, extra=True) + SHORTCUT_YAML,
                     socket_lb=True, pod_cidr=BE1_ONLY),
}  # fmt: skip


# --- the test cgroup ------------------------------------------------------------------------------


def cgroup2_mount() -> str | None:
    """Where the cgroup v2 hierarchy is mounted (hybrid hosts: /sys/fs/cgroup/unified)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1]
    return None


def _wait_empty(path: str) -> None:
    """The clients (subprocess.run: waited for, killed on timeout) have left the cgroup;
    an exited process can take a moment to leave it. Bounded."""
    procs = Path(path) / "cgroup.procs"
    for _ in range(50):
        if not procs.read_text().split():
            return
        time.sleep(0.1)
    raise AssertionError(f"processes left in {path}: {procs.read_text().split()}")


@pytest.fixture(scope="module")
def test_cgroup() -> Iterator[str]:
    root = cgroup2_mount()
    private = None
    if root is None:
        private = tempfile.mkdtemp(prefix="bpfgen-cgroup2-")
        subprocess.run(["mount", "-t", "cgroup2", "none", private], check=True)
        root = private
    path = os.path.join(root, f"bpfgen-e2e-{secrets.token_hex(3)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        try:
            _wait_empty(path)
        finally:
            os.rmdir(path)
            if private is not None:
                subprocess.run(["umount", private], check=False)
                os.rmdir(private)


# --- the node with socketLB up ------------------------------------------------------------------


@dataclass
class SockLive:
    topo: Topology
    builds: dict[str, Path]
    opts: Options
    cgroup: str
    workdir: Path


@pytest.fixture(scope="module")
def sock_live(test_cgroup: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SockLive]:
    work = tmp_path_factory.mktemp("bpf-sock")
    builds = compile_variants(VARIANTS, work)
    builds |= {f"{k}-generic": v for k, v in compile_variants(
        {"main": VARIANTS["main"]}, work / "generic", generic=True).items()}  # fmt: skip
    builds |= {f"{k}-frozen": v for k, v in compile_variants(
        {"main": VARIANTS["main"]}, work / "frozen", build="frozen").items()}  # fmt: skip
    bpffs = work / "bpffs"
    bpffs.mkdir()
    with topology("bpfs", 2, [HTTP, DNS]) as topo:
        opts = Options(netns=topo.node, bpffs=str(bpffs), run_dir=str(work / "run"), ipvs=False,
                       cgroup=test_cgroup)  # fmt: skip
        with node_up(builds["main"], opts):
            yield SockLive(topo, builds, opts, test_cgroup, work)


@pytest.fixture
def sock(sock_live: SockLive) -> Iterator[SockLive]:
    """Every case on the main build, with nothing tracked before; after it, every conntrack
    entry is the node's own plain connection to a backend (none names a VIP)."""
    if Path(status(sock_live.opts)["build_dir"]) != sock_live.builds["main"].resolve():
        sync(sock_live.builds["main"], sock_live.opts)
    in_ns(sock_live.topo.node, "conntrack", "-F", check=False)
    yield sock_live
    assert_untranslated_in_conntrack(sock_live.topo)


def assert_untranslated_in_conntrack(topo: Topology) -> None:
    """No conntrack entry names a VIP or is NATed: netfilter saw only the node's own
    connections to backends. Then those are deleted: the count is 0 again."""
    entries = conntrack_entries(topo.node)
    for line in entries.splitlines():
        assert "198.18.128." not in line, f"netfilter saw a VIP:\n{entries}"
        addrs = [f.split("=", 1)[1] for f in line.split() if f.startswith(("src=", "dst="))]
        if addrs:  # original src, dst; reply src, dst: the same pair reversed, not NATed
            src, dst, rsrc, rdst = addrs
            assert src == NODE_ADDR and (rsrc, rdst) == (dst, src), f"not plain:\n{entries}"
    in_ns(topo.node, "conntrack", "-D", "-s", NODE_ADDR, check=False)
    count = topo.conntrack()
    assert count == 0, f"{count} conntrack entries in the node:\n{conntrack_entries(topo.node)}"


def node_process(
    live: SockLive, ops: list[tuple[str, str, int]], *, in_cgroup: bool = True
) -> list[dict[str, Any]]:
    """Run sock_client.py in the node namespace, in the test cgroup unless told otherwise."""
    procs = os.path.join(live.cgroup, "cgroup.procs")

    def enter() -> None:  # in the child, before exec: the client starts inside the cgroup
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    proc = subprocess.run(
        ["ip", "netns", "exec", live.topo.node, sys.executable, str(CLIENT), json.dumps(ops)],
        preexec_fn=enter if in_cgroup else None, capture_output=True, text=True,
        timeout=CLIENT_SECONDS, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result


def counters(live: SockLive) -> dict[str, int]:
    result: dict[str, int] = status(live.opts)["counters"]
    return result


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def bpftool_cgroup(path: str) -> str:
    return subprocess.run(["bpftool", "cgroup", "show", path], capture_output=True, text=True,
                          check=False).stdout  # fmt: skip


# --- the cases ----------------------------------------------------------------------------------


def test_up_attaches_the_cgroup_programs_to_the_test_cgroup_only(sock: SockLive) -> None:
    info = status(sock.opts)
    assert info["in_sync"], info.get("differences")
    links = [a for a in info["attached"] if a["hook"] in CGROUP_HOOKS]
    assert {a["hook"] for a in links} == CGROUP_HOOKS, info["attached"]
    assert all(a["device"] == sock.cgroup and a["as_recorded"] for a in links), links
    shown = bpftool_cgroup(sock.cgroup)
    for hook in ("connect4", "sendmsg4", "recvmsg4", "getpeername4"):
        assert hook in shown, shown
    root = os.path.dirname(sock.cgroup)
    assert "bpfgen_sock" not in bpftool_cgroup(root), "something attached to the parent cgroup"
    assert up(sock.builds["main"], sock.opts).changes == []  # idempotent


def test_tcp_to_clusterip_reaches_a_backend_shown_as_the_vip(sock: SockLive) -> None:
    before = counters(sock)
    (a, n) = node_process(sock, [("tcp", VIP, 80), ("tcp", NODE_ADDR, NODE_PORT_TCP)])
    assert a.get("backend") in ("be1", "be2"), a
    assert a["peer"] == NODE_ADDR, f"the backend sees the node's own address: {a}"
    assert a["getpeername"] == [VIP, 80], f"getpeername must show the VIP: {a}"
    assert n.get("backend") in ("be1", "be2") and n["getpeername"] == [NODE_ADDR, NODE_PORT_TCP], n
    d = delta(before, counters(sock))
    assert d.get("dnat_new", 0) >= 2 and d.get("rdnat", 0) >= 2, d


def test_udp_reply_comes_from_the_vip(sock: SockLive) -> None:
    """Unconnected UDP (sendmsg4, recvmsg4) and connected UDP (connect4, getpeername4,
    recvmsg4): the reply's source is VIP:53, not the backend."""
    (u, c) = node_process(sock, [("udp", VIP, 53), ("udpc", VIP, 53)])
    assert u.get("backend") in ("be1", "be2") and u["source"] == [VIP, 53], u
    assert c.get("backend") in ("be1", "be2") and c["source"] == [VIP, 53], c
    assert c["getpeername"] == [VIP, 53], c
    assert u["peer"] == NODE_ADDR, u


def test_frontend_without_backends_is_refused(sock: SockLive) -> None:
    """kube-proxy's REJECT for a local client: connect fails with ECONNREFUSED (not
    EPERM, what a plain refusal from connect4 would give); so does a datagram."""
    before = counters(sock)
    results = node_process(sock, [("tcp", EMPTY_VIP, 80), ("udp", EMPTY_VIP, 53),
                                  ("udpc", EMPTY_VIP, 53)])  # fmt: skip
    assert [r.get("error") for r in results] == ["ECONNREFUSED"] * 3, results
    assert delta(before, counters(sock)).get("reject_no_backend", 0) == 3


def test_local_policy_short_circuits_the_node_to_every_endpoint(sock: SockLive) -> None:
    """externalTrafficPolicy: Local with no endpoint on this node: an outsider's flow to
    the NodePort is dropped, but the node's own connection goes to the Cluster policy's
    endpoints (kube-proxy since Kubernetes #77523), also when internalTrafficPolicy is
    Local too (the Service port's hidden frontend); the ClusterIP of the latter has no
    endpoint here and is refused."""
    results = node_process(sock, [("tcp", NODE_ADDR, NODE_PORT_SHORT),
                                  ("tcp", NODE_ADDR, NODE_PORT_BOTH),
                                  ("tcp", BOTH_VIP, 80)])  # fmt: skip
    assert [r.get("backend") for r in results[:2]] == ["be2", "be2"], results
    assert results[0]["getpeername"] == [NODE_ADDR, NODE_PORT_SHORT], results
    assert results[2].get("error") == "ECONNREFUSED", results


def test_new_connections_spread_over_the_backends(sock: SockLive) -> None:
    """random: the selection hash covers the socket cookie, so every new connection is a
    new draw (24 connections all on one of 2 backends: probability 2^-23)."""
    results = node_process(sock, [("tcp", VIP, 80)] * SPREAD_CONNECTIONS)
    seen = [r.get("backend") for r in results]
    assert set(seen) == {"be1", "be2"}, seen
    print(f"node process -> ClusterIP, {SPREAD_CONNECTIONS} connections: "
          f"be1 {seen.count('be1')}, be2 {seen.count('be2')}")  # fmt: skip


def test_client_ip_affinity_keeps_the_node_on_one_backend(sock: SockLive) -> None:
    """sessionAffinity ClientIP: the client is the node; every connection to `sticky`
    lands where the first did."""
    seen = {r.get("backend") for r in node_process(sock, [("tcp", STICKY_VIP, 80)] * 8)}
    assert len(seen) == 1 and seen <= {"be1", "be2"}, seen


def test_a_process_outside_the_test_cgroup_is_not_translated(sock: SockLive) -> None:
    """The programs are on the test cgroup only: elsewhere the VIP is what it is in bpf
    mode without socketLB, an address the node has no route to."""
    (r,) = node_process(sock, [("tcp", VIP, 80)], in_cgroup=False)
    assert r.get("error") in ("ENETUNREACH", "EHOSTUNREACH"), r


def test_sync_replaces_the_programs_on_their_links(sock: SockLive) -> None:
    """A sync with new code (a frontend added) replaces the cgroup programs on the same
    pinned links (bpf_link_update) with svc_in; the new frontend answers at once; so do
    the generic and the frozen builds, synced in turn."""
    opts = sock.opts
    pins = {p.name: p.stat().st_ino for p in Path(opts.pin_dir()).iterdir()
            if p.name.startswith("link__")}  # fmt: skip
    assert len(pins) == 4, pins
    ids = {a["hook"]: a["prog_id"] for a in status(opts)["attached"]}
    report = sync(sock.builds["extra"], opts)
    assert sum(c.startswith("replace sock_") for c in report.changes) == 4, report.changes
    after = {a["hook"]: a["prog_id"] for a in status(opts)["attached"]}
    assert all(after[h] != ids[h] for h in CGROUP_HOOKS), (ids, after)
    (x,) = node_process(sock, [("tcp", EXTRA_VIP, 80)])
    assert x.get("backend") == "be1" and x["getpeername"] == [EXTRA_VIP, 80], x
    for kind in ("generic", "frozen"):
        report = sync(sock.builds[f"main-{kind}"], opts)
        assert status(opts)["in_sync"], (kind, report.changes)
        (t, u) = node_process(sock, [("tcp", VIP, 80), ("udp", VIP, 53)])
        assert t.get("getpeername") == [VIP, 80] and u.get("source") == [VIP, 53], (kind, t, u)
    sync(sock.builds["main"], opts)
    now = {p.name: p.stat().st_ino for p in Path(opts.pin_dir()).iterdir()
           if p.name.startswith("link__")}  # fmt: skip
    assert now == pins, "the links were recreated, not updated"


def test_down_detaches_the_cgroup_programs(sock_live: SockLive) -> None:
    """Last: down removes the links (the cgroup has no program left), then up again."""
    report = down(sock_live.opts)
    assert sum("of cgroup" in c for c in report.changes) == 4, report.changes
    assert not any(p.name.startswith("link__") for p in Path(sock_live.opts.pin_dir()).glob("*"))
    shown = bpftool_cgroup(sock_live.cgroup)
    assert "connect4" not in shown and "recvmsg4" not in shown, shown
    (r,) = node_process(sock_live, [("tcp", VIP, 80)])
    assert r.get("error") in ("ENETUNREACH", "EHOSTUNREACH"), r
    up(sock_live.builds["main"], sock_live.opts)


# --- refusals and rollback (their own namespace: tests/e2e/conftest.py's env) ------------------


def test_up_refuses_a_cgroup_that_is_not_cgroup_v2(env: Env, tmp_path: Path) -> None:
    build = compile_variants({"main": VARIANTS["main"]}, tmp_path / "b")["main"]
    opts = replace(env.opts, cgroup=str(tmp_path))  # a directory, not a cgroup
    with pytest.raises(InputRefused, match="not a cgroup v2 directory"):
        up(build, opts)
    assert not Path(opts.run_dir, opts.label, "state.json").exists()
    assert "bpf" not in env.filters("up0", "ingress")


@pytest.fixture
def child_cgroup(test_cgroup: str) -> Iterator[str]:
    """A cgroup of its own under the test cgroup (where sock_live's links may be)."""
    path = os.path.join(test_cgroup, f"child-{secrets.token_hex(3)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        _wait_empty(path)
        os.rmdir(path)


def test_a_failed_up_detaches_the_links_it_made(
    env: Env, tmp_path: Path, child_cgroup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after the links are attached (here: publishing the service tables, the
    step after them) rolls everything back: no link, no pin, no program on the cgroup."""
    build = compile_variants({"main": VARIANTS["main"]}, tmp_path / "b")["main"]
    test_cgroup = child_cgroup
    opts = replace(env.opts, cgroup=test_cgroup)

    def fail(self: object) -> None:
        assert len(bpftool_cgroup(test_cgroup).split("\n")) > 4, "links not attached yet"
        raise RuntimeOpError("publish the service tables", errno.EIO, "injected")

    monkeypatch.setattr(mode_bpf.BpfMode, "publish_tables", fail)
    with pytest.raises(RuntimeOpError, match="rolled back: .*detach sock_connect4"):
        up(build, opts)
    shown = bpftool_cgroup(test_cgroup)
    assert "connect4" not in shown and "getpeername4" not in shown, shown
    assert not list(Path(opts.pin_dir()).glob("link__*"))  # (none if the directory is gone)
    assert not Path(opts.run_dir, opts.label, "state.json").exists()

"""The bpf mode with `hook: xdp` on the uplink (docs/datapath-bpf.md, "XDP"), end to end
in namespaces on the host kernel (and in the 6.1 VM): svc_xdp on up0, svc_in at tc on
up0 and the pod devices, `bpfgen up` in the node namespace.

    ext (198.18.0.10, also a backend: `remote`) --- up0 [node] pv1/pv2 --- be1, be2

- external -> NodePort of `web` (backends in pods): svc_xdp writes the session and
  passes the frame as it came (xdp_to_tc), svc_in at tc forwards it into the pod;
- external -> NodePort of `remote`, whose endpoint is the external client itself (a
  backend on another node, reached through the uplink): translated (DNAT + hairpin
  SNAT) and sent back out of up0 by svc_xdp (XDP_TX), the reply translated back at XDP
  too: no xdp_to_tc, nothing for tc to do;
- ping to a VIP answered at XDP.

XDP_TX out of a veth reaches its peer promptly only when the peer has an XDP program
of its own (veth schedules the peer's NAPI only then: with GRO alone the frames waited
for the next packet, found here), so ext's eth0 gets an XDP_PASS program; a real NIC
needs nothing. ext's eth0 also computes its checksums (tx offload off), as
frames from a wire arrive: a veth hands XDP a CHECKSUM_PARTIAL frame as it is, its L4
field holding the pseudo-header sum only, which XDP cannot tell (found here: the SYN
sent back to ext counted TcpInCsumErrors). After every case `conntrack -C` is 0 in the node (its
kube-proxy-like `ct state invalid drop` table is loaded) and fib_fallback did not move.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from vm.guest_ipvs import in_ns, ping, tcp_request, udp_request

from bpfgen.build import toolchain
from bpfgen_runtime.node import Options, down, status, up
from bpfgen_runtime.pins import is_bpffs
from e2e.test_bpf_mode_host import (
    HTTP,
    NODE_PORT_TCP,
    NODE_PORT_UDP,
    VIP,
    Variant,
    _http_slice,
    _port,
    _service,
    compile_variants,
    services_yaml,
)
from e2e.topology import EXT_ADDR, NODE_ADDR, Topology, _start_server, topology

pytestmark = [pytest.mark.root, pytest.mark.kernel]

NODE_PORT_REMOTE = 30081


def _services() -> str:
    """web (tests/e2e/test_bpf_mode_host.py) and remote: NodePort 30081 -> ext:HTTP."""
    remote = _service(
        "remote",
        "198.18.128.90",
        _port("http", 80, "TCP", HTTP, NODE_PORT_REMOTE),
        "    type: NodePort\n    externalTrafficPolicy: Cluster\n",
    )
    return services_yaml() + remote + _http_slice("remote-1", "remote", [(EXT_ADDR, True)])


XDP_PASS_C = """\
#include <linux/bpf.h>
__attribute__((section("xdp"), used)) int pass(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


def _xdp_pass_object(work: Path) -> Path:
    """A do-nothing XDP program for ext's end of the uplink veth (see above)."""
    src, obj = work / "xdp_pass.c", work / "xdp_pass.o"
    src.write_text(XDP_PASS_C)
    tc = toolchain()
    subprocess.run(
        [tc.clang, *tc.flags, "-c", str(src), "-o", str(obj)], check=True, capture_output=True
    )
    return obj


@dataclass
class Xdp:
    topo: Topology
    opts: Options


@pytest.fixture(scope="module")
def xdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Xdp]:
    work = tmp_path_factory.mktemp("bpf-xdp")
    builds = compile_variants({"xdp": Variant("random", _services(), uplink_hook="xdp")}, work)
    with topology("bpfx", 2, [HTTP, 5353]) as topo:
        topo.servers.append(_start_server(topo.ext, "ext", [HTTP]))
        in_ns(topo.ext, "ethtool", "-K", "eth0", "tx", "off")
        in_ns(
            topo.ext,
            "ip",
            "link",
            "set",
            "dev",
            "eth0",
            "xdpdrv",
            "obj",
            str(_xdp_pass_object(work)),
            "sec",
            "xdp",
        )
        bpffs = work / "bpffs"
        bpffs.mkdir()
        opts = Options(netns=topo.node, bpffs=str(bpffs), run_dir=str(work / "run"), ipvs=False)
        try:
            up(builds["xdp"], opts)
            yield Xdp(topo, opts)
        finally:
            try:
                down(opts)
            finally:
                if is_bpffs(str(bpffs)):
                    subprocess.run(["umount", str(bpffs)], check=False)


@pytest.fixture
def case(xdp: Xdp) -> Iterator[tuple[Xdp, dict[str, int]]]:
    before = _counters(xdp)
    yield xdp, before
    after = _counters(xdp)
    count = xdp.topo.conntrack()
    assert count == 0, f"{count} conntrack entries in the node"
    assert after["fib_fallback"] == before["fib_fallback"], (before, after)


def _counters(x: Xdp) -> dict[str, int]:
    result: dict[str, int] = status(x.opts)["counters"]
    return result


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def test_up_attaches_svc_xdp_to_the_uplink(xdp: Xdp) -> None:
    attached = {(a["device"], a["hook"], a["program"]) for a in status(xdp.opts)["attached"]}
    assert ("up0", "xdp", "svc_xdp") in attached, attached
    assert {("up0", "tc_ingress", "svc_in"), ("pv1", "tc_ingress", "svc_in")} <= attached


def test_nodeport_to_pods_passes_from_xdp_to_tc(case: tuple[Xdp, dict[str, int]]) -> None:
    x, before = case
    seen = set()
    for _ in range(6):
        a = tcp_request(x.topo.ext, NODE_ADDR, NODE_PORT_TCP)
        assert a.peer == NODE_ADDR, a  # NodePort, externalTrafficPolicy Cluster: SNAT
        seen.add(a.backend)
    u, src = udp_request(x.topo.ext, NODE_ADDR, NODE_PORT_UDP)
    assert src == (NODE_ADDR, NODE_PORT_UDP) and u.peer == NODE_ADDR, (u, src)
    d = _delta(before, _counters(x))
    assert seen <= {"be1", "be2"} and d.get("dnat_new", 0) >= 7, d
    assert d.get("xdp_to_tc", 0) >= 7, f"svc_xdp did not see the frames: {d}"


def test_nodeport_to_a_backend_behind_the_uplink_is_sent_back_at_xdp(
    case: tuple[Xdp, dict[str, int]],
) -> None:
    """The backend is the external client itself: svc_xdp DNATs and SNATs (hairpin) the
    SYN and sends it back out of up0, and translates the replies back the same way."""
    x, before = case
    for _ in range(4):
        a = tcp_request(x.topo.ext, NODE_ADDR, NODE_PORT_REMOTE)
        assert (a.backend, a.peer) == ("ext", NODE_ADDR), a
    d = _delta(before, _counters(x))
    assert d.get("dnat_new", 0) >= 4 and d.get("rdnat", 0) >= 4, d
    assert d.get("redirect", 0) >= 8 and not d.get("xdp_to_tc"), (
        f"not all of it at XDP (XDP_TX): {d}"
    )


def test_ping_to_a_vip_is_answered_at_xdp(case: tuple[Xdp, dict[str, int]]) -> None:
    x, before = case
    assert ping(x.topo.ext, VIP)
    assert _delta(before, _counters(x)).get("icmp_echo_vip") == 1


def test_xdp_program_is_native_on_the_veth(xdp: Xdp) -> None:
    """veth runs XDP in the driver (drv), not the generic skb mode."""
    modes = {a.get("xdp_mode") for a in status(xdp.opts)["attached"] if a["hook"] == "xdp"}
    assert modes == {"drv"}, modes

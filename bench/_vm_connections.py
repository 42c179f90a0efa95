"""The connections benchmark's VM part: runs inside Debian's 6.1 kernel (it has IPVS).

    python -m bench._vm_connections CONFIG.json      # started by connections.py

One copy of tests/vm/guest_ipvs.py's topology per mode (its helpers and
addresses are imported), each in its own namespaces, all up at once:
ext --- up0 [node] pv1/pv2/pv3 --- be1, be2 (backends), cp (client pod). The
backends run loadgen's server; ext (NodePort) and cp (ClusterIP) its clients.

- direct: ext -> be1's address, routed by the node; no NAT, no IPVS, no
  nftables, so no conntrack (the ceiling).
- ipvs_conntrack: kube-proxy IPVS mode: IPVS masquerade (vs.conntrack=1), the
  VIP on a dummy device, nft marks NodePort traffic in nat prerouting and
  masquerades marked packets in nat postrouting (KUBE-MARK-MASQ/KUBE-POSTROUTING),
  and the kube-proxy-like `ct state invalid drop` filter table.
- bpfgen_ipvs: `bpfgen_runtime.node.up` of the compiled build (IPVS + eBPF SNAT,
  vs.conntrack=0, nft notrack), with the same filter table.

As nothing is switched between blocks, blocks are short and rounds many: each
round runs every (mode, path, workload) once, the order rotated per round,
after an unrecorded warm-up block per (mode, path) when the config asks.
Writes connections-vm.json into the config's results directory.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench._netns import Lab, load, sh

KP_IPVS_DEV = "kpipvs0"
MODES = ("direct", "ipvs_conntrack", "bpfgen_ipvs")

KP_IPVS_NFT = """\
table ip kpipvs {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {node} tcp dport {nodeport} meta mark set meta mark | 0x4000
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade
  }}
}}
"""


def main(config_path: str) -> int:
    # Imported here: the guest suite's module imports pytest and the runtime.
    from bpfgen_runtime.node import Options, down, status, up
    from tests.vm import guest_ipvs as g

    cfg = json.loads(Path(config_path).read_text())
    binary = Path(cfg["binary"])
    lab = Lab("bbvm")
    blocks: list[dict[str, Any]] = []
    opts: Options | None = None

    def log(msg: str) -> None:
        print(f"vm: {msg}", flush=True)

    def topology(mode: str) -> dict[str, str]:
        names = {k: lab.ns(f"{mode[:2]}{k}") for k in ("node", "ext", "be1", "be2", "cp")}
        node = names["node"]
        g.veth(node, "up0", names["ext"], g.EXT_ADDR, 24)
        g.run("ip", "-n", node, "addr", "add", f"{g.NODE_ADDR}/24", "dev", "up0")
        for net in ("198.18.128.0/17", "198.19.1.0/24"):
            g.run("ip", "-n", names["ext"], "route", "add", net, "via", g.NODE_ADDR)
        pods = [(names["be1"], g.BE["be1"]), (names["be2"], g.BE["be2"]), (names["cp"], g.CP_ADDR)]
        for i, (pod, addr) in enumerate(pods, 1):
            g.veth(node, f"pv{i}", pod, addr, 32)
            g.run("ip", "-n", pod, "route", "add", "default", "dev", "eth0", "scope", "link")
            g.run("ip", "-n", node, "route", "add", f"{addr}/32", "dev", f"pv{i}", "scope", "link")
            g.in_ns(node, "sysctl", "-qw", f"net.ipv4.conf.pv{i}.proxy_arp=1")
        g.in_ns(node, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.ip_forward=1")
        for client in (names["ext"], names["cp"]):
            g.in_ns(client, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000",
                    "net.ipv4.tcp_tw_reuse=1")  # fmt: skip
        for be in ("be1", "be2"):
            names[f"{be}_pid"] = str(lab.serve(names[be], binary, g.HTTP))
        if mode != "direct":
            sh("ip", "netns", "exec", node, "nft", "-f", "-", input=g.KUBE_PROXY_LIKE)
        return names

    def kube_proxy_ipvs(node: str) -> None:
        g.run("ip", "-n", node, "link", "add", KP_IPVS_DEV, "type", "dummy")
        g.run("ip", "-n", node, "addr", "add", f"{g.VIP}/32", "dev", KP_IPVS_DEV)
        g.run("ip", "-n", node, "link", "set", KP_IPVS_DEV, "up")
        for vs in (f"{g.VIP}:80", f"{g.NODE_ADDR}:{g.NODE_PORT_TCP}"):
            g.in_ns(node, "ipvsadm", "-A", "-t", vs, "-s", "rr")
            for be in ("be1", "be2"):
                g.in_ns(node, "ipvsadm", "-a", "-t", vs, "-r", f"{g.BE[be]}:{g.HTTP}", "-m")
        g.in_ns(node, "sysctl", "-qw", "net.ipv4.vs.conntrack=1")
        sh("ip", "netns", "exec", node, "nft", "-f", "-",
           input=KP_IPVS_NFT.format(node=g.NODE_ADDR, nodeport=g.NODE_PORT_TCP))  # fmt: skip

    started = time.monotonic()
    try:
        topo = {mode: topology(mode) for mode in MODES}
        kube_proxy_ipvs(topo["ipvs_conntrack"]["node"])
        opts = Options(
            netns=topo["bpfgen_ipvs"]["node"],
            run_dir=str(Path(cfg["results"]) / f"run-{lab.suffix}"),
        )
        up(cfg["build"], opts)
        snat_last = _snat_new(status, opts)
        log(f"three topologies ready in {time.monotonic() - started:.1f} s")

        # (mode, path, client namespace, address, port, the source the backend must see)
        items = [("direct", "direct", topo["direct"]["ext"], g.BE["be1"], g.HTTP, g.EXT_ADDR)]
        for mode in ("ipvs_conntrack", "bpfgen_ipvs"):
            t = topo[mode]
            items += [
                (mode, "nodeport", t["ext"], g.NODE_ADDR, g.NODE_PORT_TCP, g.NODE_ADDR),
                (mode, "clusterip", t["cp"], g.VIP, 80, g.CP_ADDR),
            ]
        work = [(item, w) for w in cfg["workloads"] for item in items]
        for _, _, client, addr, port, expect in items if cfg.get("warmup_s") else []:
            # Not recorded: neighbours, IPVS and first-use costs right after the setup.
            load(
                binary, client, "tcp-short", addr, port, threads=cfg["threads"],
                seconds=cfg["warmup_s"], max_requests=cfg["max_requests"], expect=expect,
            )  # fmt: skip
        for rnd in range(cfg["rounds"]):
            k = rnd % len(work)
            for (mode, path, client, addr, port, expect), workload in work[k:] + work[:k]:
                t = topo[mode]
                res = load(
                    binary, client, f"tcp-{workload}", addr, port,
                    threads=cfg["threads"], seconds=cfg["workloads"][workload],
                    max_requests=cfg["max_requests"], expect=expect,
                    servers=[int(t["be1_pid"]), int(t["be2_pid"])],
                )  # fmt: skip
                res.update(round=rnd, mode=mode, path=path, workload=workload, expect_peer=expect)
                if mode != "direct":
                    count = g.in_ns(t["node"], "conntrack", "-C").strip()
                    res["conntrack_entries"] = int(count)
                if mode == "bpfgen_ipvs":  # one status read per block (slow under TCG)
                    snat_now = _snat_new(status, opts)
                    res["snat_new"], snat_last = snat_now - snat_last, snat_now
                blocks.append(res)
                log(
                    f"round {rnd} {mode} {path} {workload}: {res['ok']} ok, "
                    f"{res['failed']} failed, {res['ok'] / res['elapsed_s']:.0f}/s, "
                    f"p50 {res['p50_us']:.0f} us, p99 {res['p99_us']:.0f} us"
                )
    finally:
        try:
            if opts is not None:
                down(opts)
        finally:
            lab.close()  # the backends, then every namespace (and what is in them)
    out = {
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "seconds": time.monotonic() - started,
        "blocks": blocks,
    }
    (Path(cfg["results"]) / "connections-vm.json").write_text(json.dumps(out, indent=1))
    return 0


def _snat_new(status: Any, opts: Any) -> int:
    return int(status(opts)["counters"]["snat_new"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

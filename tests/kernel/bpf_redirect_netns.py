"""Run in a fresh network namespace (`unshare -n`) by test_bpf_mode_cases: a veth
pair with 198.18.0.2/15 (so every backend of tests/bpf_inputs.py has a
connected route), forwarding on, permanent neighbours for two of the three
backends; then svc_in or svc_xdp (argv[2]; XDP with bg0 as its ingress device when
argv[3] is "bg0", else the default, lo) on pod -> ClusterIP flows. Prints one JSON line:
[[verdict, daddr, ttl], ...] and the counters."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

from bpfgen_runtime.testrun import BuildUnderTest

#: The permanent neighbours: two of the three backends.
NEIGHBOURS = {
    "198.19.1.5": bytes.fromhex("020000000001"),
    "198.19.2.13": bytes.fromhex("020000000002"),
}
SETUP = (
    "ip link add bg0 type veth peer name bg1",
    "ip link set bg0 up",
    "ip link set bg1 up",
    "ip link set lo up",
    "ip addr add 198.18.0.2/15 dev bg0",
    "sysctl -qw net.ipv4.ip_forward=1",
) + tuple(
    f"ip neigh add {a} lladdr {mac.hex(':')} dev bg0 nud permanent" for a, mac in NEIGHBOURS.items()
)


def main(build_dir: str, program: str, ingress: str, frames_hex: list[str]) -> None:
    for cmd in SETUP:
        subprocess.run(cmd.split(), check=True)
    ifindex = socket.if_nametoindex(ingress) if ingress != "-" else 0
    out = []
    with BuildUnderTest(build_dir) as build:
        for frame in frames_hex:
            r = build.run(program, bytes.fromhex(frame), ingress_ifindex=ifindex)
            out.append([r.retval, r.packet.hex()])
        counters = {k: v for k, v in build.counters().items() if v}
    print(json.dumps({"runs": out, "counters": counters}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])

"""`bpfgen replay`: run packets through a build's programs, for people debugging a config.

    bpfgen replay build/example --program egress --mark 0x4000 --hex 0242c612...
    bpfgen replay build/example --program ingress --pcap capture.pcap --json

Packets go through BPF_PROG_TEST_RUN one after the other with shared session
maps (BuildUnderTest: a private bpffs, nothing on the node is touched), so a
capture of a whole connection shows its SNAT session being created, hit and
reverse-translated. Reads classic pcap files (Ethernet link type, micro- or
nanosecond, either byte order).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .builddir import InputRefused
from .contract.layouts import IP_PROTOCOLS
from .testrun import BuildUnderTest

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",  # microseconds, little-endian
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanoseconds
    b"\xa1\xb2\x3c\x4d": ">",
}
LINKTYPE_ETHERNET = 1
#: What the programs return (the bpf mode: TC_ACT_REDIRECT after bpf_redirect_neigh,
#: XDP_TX back out of the uplink), by the kernel's names (linux/pkt_cls.h, linux/bpf.h).
TC_VERDICTS = {0: "TC_ACT_OK", 2: "TC_ACT_SHOT", 7: "TC_ACT_REDIRECT"}
XDP_VERDICTS = {0: "XDP_ABORTED", 1: "XDP_DROP", 2: "XDP_PASS", 3: "XDP_TX", 4: "XDP_REDIRECT"}


def read_pcap(path: Path) -> list[bytes]:
    """The frames of a classic pcap file with Ethernet link type."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputRefused("replay", [f"{path}: cannot read ({e.strerror})"]) from e
    order = PCAP_MAGICS.get(data[:4])
    if order is None or len(data) < 24:
        raise InputRefused("replay", [f"{path}: not a pcap file (pcapng is not supported)"])
    (linktype,) = struct.unpack_from(order + "I", data, 20)
    if linktype != LINKTYPE_ETHERNET:
        raise InputRefused("replay", [f"{path}: link type {linktype}, expected 1 (Ethernet)"])
    frames, pos = [], 24
    while pos + 16 <= len(data):
        _, _, caplen, _ = struct.unpack_from(order + "IIII", data, pos)
        pos += 16
        if pos + caplen > len(data):
            raise InputRefused("replay", [f"{path}: truncated record at byte {pos - 16}"])
        frames.append(data[pos : pos + caplen])
        pos += caplen
    return frames


def parse_hex(items: Iterable[str]) -> list[bytes]:
    frames, problems = [], []
    for i, text in enumerate(items):
        try:
            frames.append(bytes.fromhex(text.replace(":", "").replace(" ", "")))
        except ValueError:
            problems.append(f"--hex #{i + 1}: not hexadecimal: {text[:40]!r}")
    if problems:
        raise InputRefused("replay", problems)
    return frames


def describe(frame: bytes) -> str:
    """A one-line summary: addresses, ports, protocol (what the NAT looks at)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return f"{len(frame)} bytes, not IPv4"
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src = ipaddress.IPv4Address(frame[26:30])
    dst = ipaddress.IPv4Address(frame[30:34])
    l4 = 14 + ihl
    name = IP_PROTOCOLS.get(proto, f"proto {proto}")
    if proto in (6, 17) and len(frame) >= l4 + 4:
        sport, dport = struct.unpack_from("!HH", frame, l4)
        return f"{src}:{sport} > {dst}:{dport} {name}"
    if proto == 1 and len(frame) >= l4 + 8:
        typ, _, _, ident = struct.unpack_from("!BBHH", frame, l4)
        return f"{src} > {dst} ICMP type {typ} id {ident}"
    return f"{src} > {dst} {name}"


def verdict_name(retval: int, xdp: bool) -> str:
    """A program's return value by its kernel name; `return N` for any other value."""
    return (XDP_VERDICTS if xdp else TC_VERDICTS).get(retval, f"return {retval}")


@dataclass(frozen=True)
class Step:
    index: int
    verdict: str
    mark_in: int
    mark_out: int
    packet_in: bytes
    packet_out: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "verdict": self.verdict,
            "mark_in": self.mark_in,
            "mark_out": self.mark_out,
            "in": describe(self.packet_in),
            "out": describe(self.packet_out),
            "changed": self.packet_in != self.packet_out,
            "packet_in": self.packet_in.hex(),
            "packet_out": self.packet_out.hex(),
        }


def replay(
    build_dir: Path, program: str, frames: Sequence[bytes], mark: int = 0
) -> tuple[list[Step], dict[str, int]]:
    """Run frames through `program` in order; the steps and the counters afterwards."""
    steps = []
    with BuildUnderTest(build_dir) as build:
        if program not in build.programs:
            raise InputRefused(
                "replay",
                [f"{build_dir}: no program {program!r} (has: {', '.join(build.programs)})"],
            )
        xdp = build.programs[program].is_xdp
        for i, frame in enumerate(frames, 1):
            r = build.run(program, frame, mark=mark)
            steps.append(Step(i, verdict_name(r.retval, xdp), mark, r.mark, frame, r.packet))
        return steps, build.counters()

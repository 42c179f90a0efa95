"""`bpfgen replay`: a NodePort conversation through the example build, from hex and pcap."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from bpfgen.cli import main
from bpfgen.compiler import compile_build

pytestmark = pytest.mark.kernel

NODE, CLIENT, BACKEND = "198.18.0.2", "198.18.9.9", "198.19.1.34"


def _frames() -> list[bytes]:
    # After IPVS: external client -> backend of a NodePort (ingress marked it).
    syn = Ether() / IP(src=CLIENT, dst=BACKEND) / TCP(sport=40000, dport=8080, flags="S")
    return [bytes(syn), bytes(syn)]


def _pcap(path: Path, frames: list[bytes]) -> None:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for f in frames:
        out += struct.pack("<IIII", 0, 0, len(f), len(f)) + f
    path.write_bytes(out)


def test_replay_hex_and_pcap(
    tmp_path: Path, example_node: Path, example_services: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = tmp_path / "b"
    compile_build(example_node, [example_services], build, verify=False)
    frames = _frames()
    code = main(["replay", str(build), "--program", "egress", "--mark", "0x4000", "--json",
                 "--hex", *(f.hex() for f in frames)])  # fmt: skip
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    first, second = data["steps"]
    assert first["verdict"] == second["verdict"] == "TC_ACT_OK"
    assert first["mark_out"] == 0  # egress clears the request
    assert first["out"].startswith(f"{NODE}:") and first["out"].endswith(f"> {BACKEND}:8080 TCP")
    assert second["out"] == first["out"]  # the same session: same SNAT port
    assert data["counters"]["snat_new"] == 1 and data["counters"]["snat_hit"] == 1

    pcap = tmp_path / "c.pcap"
    _pcap(pcap, frames)
    code = main(["replay", str(build), "--program", "egress", "--mark", "0x4000",
                 "--pcap", str(pcap)])  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0
    assert "#1 egress TC_ACT_OK mark 0x4000->0x0" in text and "counters: " in text

    code = main(["replay", str(build), "--program", "nope", "--hex", "00"])
    assert code == 2 and "no program 'nope'" in capsys.readouterr().err
    (tmp_path / "bad.pcap").write_bytes(b"not a pcap")
    code = main(["replay", str(build), "--program", "egress", "--pcap", str(tmp_path / "bad.pcap")])
    assert code == 2 and "not a pcap file" in capsys.readouterr().err

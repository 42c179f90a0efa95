"""`bpfgen status --drops`: a ring record decoded and shown (runtime/drops.py)."""

from __future__ import annotations

import ctypes
import time

from bpfgen_runtime.contract.layouts import DropEvent, Tuple4
from bpfgen_runtime.drops import decode


def _record(reason: int, program: int, proto: int) -> bytes:
    t = Tuple4()
    t.saddr[:] = bytes([198, 18, 0, 10])
    t.daddr[:] = bytes([198, 18, 128, 99])
    t.sport[:] = (45454).to_bytes(2, "big")
    t.dport[:] = (4242).to_bytes(2, "big")
    t.proto = proto
    e = DropEvent(ns=time.monotonic_ns(), reason=reason, program=program, t=t)
    return bytes(e) + b"\0" * 8  # a ring rounds records up to 8 bytes: extra is ignored


def test_a_record_is_named_from_the_manifest() -> None:
    drop = decode(_record(1, 0, 17), ("pass", "drop_unallocated"), ("svc_in", "svc_xdp"))
    assert (drop.program, drop.reason, drop.protocol) == ("svc_in", "drop_unallocated", "UDP")
    assert (drop.source, drop.source_port) == ("198.18.0.10", 45454)
    assert (drop.destination, drop.destination_port) == ("198.18.128.99", 4242)
    assert drop.line().endswith(
        "drop_unallocated         UDP 198.18.0.10:45454 -> 198.18.128.99:4242"
    )
    assert ctypes.sizeof(DropEvent) == 32


def test_an_index_past_the_manifest_is_shown_as_a_number() -> None:
    """A build newer than the reader may have more counters or programs."""
    drop = decode(_record(7, 3, 99), ("pass",), ("svc_in",))
    assert (drop.program, drop.reason, drop.protocol) == ("program 3", "reason 7", "99")

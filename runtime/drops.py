"""`bpfgen status --drops`: the datapath's drop notifications, one line per dropped packet.

Every drop in every program goes through bpfgen_drop() (bpfgen_maps.h), which counts
it and writes a record (struct bpfgen_drop_event: reason, program, the packet's tuple,
bpf_ktime_get_ns) to the ring buffer bpfgen_drops, pinned beside the counters and shared
by every program of the node. This reads it with libbpf's ring_buffer until --count
records, --seconds or Ctrl-C. Unlike `bpfgen trace` it needs nothing but libbpf, and it
sees only bpfgen's own drops (the kernel's are trace's business).

One reader at a time gets the records (a second one shares them). Nothing is kept
while nobody reads: the ring holds what came since the last read, up to its size,
and drops the rest (the counters still count every drop).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from . import libbpf
from .builddir import InputRefused, read_build
from .contract.layouts import DROPS_MAP, IP_PROTOCOLS, DropEvent
from .errors import RuntimeOpError

if TYPE_CHECKING:
    from .node import Options

OP = "status --drops"
POLL_MS = 200


@dataclass(frozen=True)
class Drop:
    """One drop notification, named from the build's manifest."""

    time: str  # wall clock, ISO 8601 UTC, from the record's CLOCK_MONOTONIC stamp
    program: str
    reason: str
    protocol: str
    source: str
    source_port: int
    destination: str
    destination_port: int

    def line(self) -> str:
        where = (f"{self.protocol} {self.source}:{self.source_port} -> "
                 f"{self.destination}:{self.destination_port}")  # fmt: skip
        return f"{self.time}  {self.program:<10} {self.reason:<24} {where}"


def decode(raw: bytes, counters: tuple[str, ...], programs: tuple[str, ...]) -> Drop:
    """A ring record as a Drop: names from the manifest's counters and programs lists;
    an index outside them is shown as its number (a build newer than this reader)."""
    e = DropEvent.from_buffer_copy(raw[: ctypes.sizeof(DropEvent)])
    wall = time.time() - (time.monotonic() - e.ns / 1e9)
    t = e.t
    return Drop(
        time=datetime.fromtimestamp(wall, UTC).isoformat(timespec="microseconds"),
        program=programs[e.program] if e.program < len(programs) else f"program {e.program}",
        reason=counters[e.reason] if e.reason < len(counters) else f"reason {e.reason}",
        protocol=IP_PROTOCOLS.get(t.proto, str(t.proto)),
        source=str(ipaddress.IPv4Address(bytes(t.saddr))),
        source_port=int.from_bytes(bytes(t.sport), "big"),
        destination=str(ipaddress.IPv4Address(bytes(t.daddr))),
        destination_port=int.from_bytes(bytes(t.dport), "big"),
    )


def stream(opts: Options, count: int | None, seconds: float | None, as_json: bool,
           out: TextIO) -> int:  # fmt: skip
    """Print drops as they come (JSON: one object a line) until `count` records or
    `seconds` have passed, or Ctrl-C; 0. Refused (exit 2) when bpfgen is not up or its
    build has no drop notifications."""
    from .node import status  # the node's verbs; decode() is the test harness's too

    if count is not None and count < 1:
        raise InputRefused(OP, [f"--count {count} is not a positive number"])
    if seconds is not None and seconds <= 0:
        raise InputRefused(OP, [f"--seconds {seconds} is not a positive number"])
    info = status(opts)
    if not info["up"] or not info.get("build_dir"):
        raise InputRefused(OP, [f"bpfgen is not up in {opts.label}: no drops to follow"])
    manifest = read_build(info["build_dir"]).manifest
    pin = os.path.join(info["pin_dir"], DROPS_MAP)
    if not os.path.exists(pin):
        raise InputRefused(OP, [
            f"{pin} does not exist: the build up in {opts.label} has no drop "
            "notifications (built by a bpfgen older than them); sync a new build"
        ])  # fmt: skip
    programs = tuple(p.name for p in manifest.programs)
    seen = 0

    def on_record(raw: bytes) -> None:
        nonlocal seen
        if count is not None and seen >= count:
            return  # the rest of this poll's batch
        drop = decode(raw, manifest.counters, programs)
        out.write((json.dumps(asdict(drop)) if as_json else drop.line()) + "\n")
        out.flush()
        seen += 1

    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        fd = libbpf.bpf_obj_get(pin)
    except OSError as exc:
        raise RuntimeOpError(OP, exc.errno or errno.EIO, f"open {pin}: {exc.strerror}") from exc
    try:
        with libbpf.RingBuffer(fd, on_record) as ring:
            while count is None or seen < count:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                wait = POLL_MS if left is None else max(1, min(POLL_MS, int(left * 1000)))
                ring.poll(wait)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    return 0

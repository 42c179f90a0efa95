"""A whole build directory in the kernel, for tests: every program, shared maps, test runs.

    with BuildUnderTest("build/example") as build:
        retval, out, mark = build.run("egress", frame, mark=0x4000)
        build.sessions()          # {SessionKey: SessionEntry} from bpfgen_snat_v4
        build.counters()          # {"pass": 3, ...}, summed over CPUs

`BuildUnderTest` mounts a private bpffs in a temporary directory and opens every
object the manifest lists with that directory as libbpf's pin root, so the maps
the objects declare `LIBBPF_PIN_BY_NAME` are created once and shared, as `bpfgen
up` shares them on a node; nothing is pinned under /sys/fs/bpf. The runtime
configuration of a generic or frozen build (manifest `runtime_config`) becomes
the initial `.bss` (generic) or `.rodata` (frozen: libbpf freezes it, the
verifier sees constants) of every object, and `map_init.json` is written into
the maps, as the runtime does. Programs run through BPF_PROG_TEST_RUN, tc ones with a
`struct __sk_buff` context that carries the mark in and out.

Session maps are read and written as Python values: addresses and ports are
host-order integers here, network byte order in the maps. This module imports
nothing of the compiler; it reads the build directory only.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import struct
import subprocess
import tempfile
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from . import libbpf
from .contract.layouts import (
    DROPS_MAP,
    SK_BUFF_SIZE,
    RsnatEntry,
    SkBuffHead,
    SnatEntry,
    Tuple4,
    XdpMd,
    be16,
    be32,
    from_be,
    to_bytes,
)
from .contract.manifest import Problems, decode_manifest
from .drops import Drop, decode
from .errors import RuntimeOpError
from .loader import (
    LoadedMap,
    LoadedObject,
    LoadedProgram,
    TestRunResult,
    open_object,
    test_run,
)

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6

SNAT_MAP = "bpfgen_snat_v4"
RSNAT_MAP = "bpfgen_rsnat_v4"
COUNTERS_MAP = "bpfgen_counters"

_COUNTER = struct.Struct("=Q")
_INDEX = struct.Struct("=I")


class SessionKey(NamedTuple):
    """struct bpfgen_tuple4: a forward key (original tuple) or a reverse key (reply tuple)."""

    saddr: int
    daddr: int
    sport: int
    dport: int
    proto: int

    def pack(self) -> bytes:
        return to_bytes(
            Tuple4(
                be32(self.saddr), be32(self.daddr), be16(self.sport), be16(self.dport), self.proto
            )
        )

    @classmethod
    def unpack(cls, raw: bytes) -> SessionKey:
        t = Tuple4.from_buffer_copy(raw)
        return cls(from_be(t.saddr), from_be(t.daddr), from_be(t.sport), from_be(t.dport), t.proto)


class SessionEntry(NamedTuple):
    """struct bpfgen_snat_entry: the session, keyed by the original tuple."""

    last_seen_ns: int
    nat_addr: int
    nat_port: int
    flags: int
    fin_ack: int = 0

    def pack(self) -> bytes:
        return to_bytes(
            SnatEntry(
                last_seen_ns=self.last_seen_ns,
                nat_addr=be32(self.nat_addr),
                nat_port=be16(self.nat_port),
                flags=self.flags,
                fin_ack=self.fin_ack,
            )
        )

    @classmethod
    def unpack(cls, raw: bytes) -> SessionEntry:
        e = SnatEntry.from_buffer_copy(raw)
        return cls(e.last_seen_ns, from_be(e.nat_addr), from_be(e.nat_port), e.flags, e.fin_ack)


class ReverseEntry(NamedTuple):
    """struct bpfgen_rsnat_entry: the original source of a reply tuple."""

    addr: int
    port: int

    def pack(self) -> bytes:
        return to_bytes(RsnatEntry(addr=be32(self.addr), port=be16(self.port)))

    @classmethod
    def unpack(cls, raw: bytes) -> ReverseEntry:
        r = RsnatEntry.from_buffer_copy(raw)
        return cls(from_be(r.addr), from_be(r.port))


class RunResult(NamedTuple):
    """One test run: the program's return code, the packet and skb->mark after it."""

    retval: int
    packet: bytes
    mark: int  # XDP has no mark: the one given, unchanged


class TimedRun(NamedTuple):
    """A timed test run: as RunResult, plus the kernel's mean ns per repetition."""

    retval: int
    packet: bytes
    mark: int
    duration_ns: int


@dataclass(frozen=True)
class ProgramUnderTest:
    name: str  # the manifest's name: "ingress", "egress", "ingress_xdp"
    function: str
    object: Path
    source: Path  # the generated C, for failure messages
    is_xdp: bool
    loaded: LoadedProgram


def tc_accepts(frame: bytes) -> bool:
    """Whether BPF_PROG_TEST_RUN takes `frame` for a tc program on every kernel we test.

    It refuses frames shorter than an Ethernet header; since 6.x also IPv4 (IPv6)
    frames without a whole IPv4 (IPv6) header. XDP takes any frame of 14 bytes or more.
    """
    if len(frame) < 14:
        return False
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == 0x0800:
        return len(frame) >= 14 + 20
    if ethertype == 0x86DD:
        return len(frame) >= 14 + 40
    return True


class BuildUnderTest:
    """Every program of a build directory, loaded with shared maps on a private bpffs."""

    def __init__(self, build_dir: str | os.PathLike[str]) -> None:
        self.build_dir = Path(build_dir).absolute()
        problems = Problems()
        manifest = decode_manifest(
            json.loads((self.build_dir / "manifest.json").read_text()), problems
        )
        if manifest is None:
            raise ValueError(f"{self.build_dir}/manifest.json: {'; '.join(problems)}")
        self.manifest = manifest
        self.counter_names: tuple[str, ...] = manifest.counters
        self._ring: libbpf.RingBuffer | None = None
        self._ring_records: list[bytes] = []
        self._objects: list[LoadedObject] = []
        workdir = Path(tempfile.mkdtemp(prefix="bpfgen-testrun-"))
        self.pin_root = workdir / "bpffs"
        self.pin_root.mkdir()
        # Also when close() is never called: at garbage collection or interpreter exit.
        self._cleanup = weakref.finalize(self, _cleanup, self._objects, self.pin_root, workdir)
        try:
            _run(["mount", "-t", "bpf", "bpf", str(self.pin_root)], "mount a private bpffs")
            self.programs = self._open_programs()
            self.maps = self._maps()
            self._write_map_init()
        except BaseException:
            self.close()
            raise

    def _open_programs(self) -> dict[str, ProgramUnderTest]:
        initial: Mapping[str, bytes] = {}
        runtime_config = self.manifest.runtime_config
        if runtime_config is not None:
            initial = {runtime_config.map: bytes.fromhex(runtime_config.hex)}
        objects: dict[str, LoadedObject] = {}
        programs: dict[str, ProgramUnderTest] = {}
        for entry in self.manifest.programs:
            name = entry.object
            if name not in objects:
                objects[name] = open_object(
                    self.build_dir / name,
                    pin_root=self.pin_root,
                    initial_values=initial,
                    log_level=0,
                )
                self._objects.append(objects[name])
            loaded = objects[name].programs[entry.function]
            programs[entry.name] = ProgramUnderTest(
                name=entry.name,
                function=entry.function,
                object=self.build_dir / name,
                source=self.build_dir / entry.source,
                is_xdp=loaded.type == BPF_PROG_TYPE_XDP,
                loaded=loaded,
            )
        return programs

    def _maps(self) -> dict[str, LoadedMap]:
        maps: dict[str, LoadedMap] = {}
        for obj in self._objects:  # the first object's handle of each shared map
            for name, loaded in obj.maps.items():
                if loaded.pin_path is not None:
                    maps.setdefault(name, loaded)
        return maps

    def _write_map_init(self) -> None:
        if not self.manifest.map_init:
            return
        entries = json.loads((self.build_dir / self.manifest.map_init).read_text())
        for name, pairs in entries.items():
            for key, value in pairs:
                self.maps[name].update(bytes.fromhex(key), bytes.fromhex(value))

    # -- running

    def run(
        self, program: str, packet: bytes, mark: int = 0, *, ingress_ifindex: int = 0
    ) -> RunResult:
        """Run `program` (a manifest name) on one Ethernet frame; tc programs get `mark`,
        XDP programs `ingress_ifindex` (a device of this namespace; 0: the kernel's
        default, the loopback device)."""
        result, mark_out = self._test_run(program, packet, mark, 1, ingress_ifindex)
        return RunResult(result.retval, result.data, mark_out)

    def timed_run(self, program: str, packet: bytes, mark: int = 0, repeat: int = 1) -> TimedRun:
        """`run`, `repeat` times in the kernel, with the kernel's mean time per repetition.

        The repetitions share one skb (tc) or buffer (XDP): from the second on the
        program sees its own output and mark, so only a program that leaves the
        packet and the mark as it found them repeats the same packet.
        """
        result, mark_out = self._test_run(program, packet, mark, repeat)
        return TimedRun(result.retval, result.data, mark_out, result.duration_ns)

    def _test_run(
        self, program: str, packet: bytes, mark: int, repeat: int, ingress_ifindex: int = 0
    ) -> tuple[TestRunResult, int]:
        prog = self.programs[program]
        if prog.is_xdp:
            if not ingress_ifindex:
                return test_run(prog.loaded, packet, repeat=repeat), mark
            md = to_bytes(XdpMd(data_end=len(packet), ingress_ifindex=ingress_ifindex))
            return test_run(prog.loaded, packet, repeat=repeat, ctx_in=md), mark
        ctx = bytearray(SK_BUFF_SIZE)  # the rest of struct __sk_buff: zero
        ctx[: ctypes.sizeof(SkBuffHead)] = to_bytes(SkBuffHead(mark=mark))
        result = test_run(prog.loaded, packet, ctx_in=bytes(ctx), repeat=repeat)
        assert result.ctx is not None
        return result, SkBuffHead.from_buffer_copy(result.ctx).mark

    # -- sessions

    def sessions(self) -> dict[SessionKey, SessionEntry]:
        """bpfgen_snat_v4: original tuple -> session."""
        return {
            SessionKey.unpack(k): SessionEntry.unpack(v) for k, v in self.maps[SNAT_MAP].items()
        }

    def reverse_sessions(self) -> dict[SessionKey, ReverseEntry]:
        """bpfgen_rsnat_v4: reply tuple -> original source."""
        return {
            SessionKey.unpack(k): ReverseEntry.unpack(v) for k, v in self.maps[RSNAT_MAP].items()
        }

    def session(self, key: SessionKey) -> SessionEntry | None:
        raw = self.maps[SNAT_MAP].lookup(key.pack())
        return None if raw is None else SessionEntry.unpack(raw)

    def reverse_session(self, key: SessionKey) -> ReverseEntry | None:
        raw = self.maps[RSNAT_MAP].lookup(key.pack())
        return None if raw is None else ReverseEntry.unpack(raw)

    def put_session(self, key: SessionKey, entry: SessionEntry) -> None:
        self.maps[SNAT_MAP].update(key.pack(), entry.pack())

    def put_reverse_session(self, key: SessionKey, entry: ReverseEntry) -> None:
        self.maps[RSNAT_MAP].update(key.pack(), entry.pack())

    def delete_session(self, key: SessionKey) -> bool:
        return self.maps[SNAT_MAP].delete(key.pack())

    def delete_reverse_session(self, key: SessionKey) -> bool:
        return self.maps[RSNAT_MAP].delete(key.pack())

    def set_last_seen(self, key: SessionKey, last_seen_ns: int) -> SessionEntry:
        """Rewrite one session's last_seen (to age it, or to make it young again)."""
        entry = self.session(key)
        if entry is None:
            raise RuntimeOpError(f"age session {key}", errno.ENOENT, "no such session")
        entry = entry._replace(last_seen_ns=last_seen_ns)
        self.put_session(key, entry)
        return entry

    def age_sessions(self, by_ns: int, keys: Iterable[SessionKey] | None = None) -> None:
        """Move last_seen of `keys` (default: every session) `by_ns` into the past."""
        for key in list(self.sessions()) if keys is None else keys:
            entry = self.session(key)
            if entry is not None:
                self.put_session(key, entry._replace(last_seen_ns=entry.last_seen_ns - by_ns))

    def clear_sessions(self) -> None:
        for name in (SNAT_MAP, RSNAT_MAP):
            for key in list(self.maps[name].keys()):
                self.maps[name].delete(key)

    # -- counters

    def counters(self) -> dict[str, int]:
        """Every counter, summed over the CPUs, by its manifest name."""
        counters = self.maps[COUNTERS_MAP]
        out: dict[str, int] = {}
        for index, name in enumerate(self.counter_names):
            values = counters.lookup_percpu(_INDEX.pack(index)) or []
            out[name] = sum(_COUNTER.unpack(v)[0] for v in values)
        return out

    def reset_counters(self) -> None:
        counters = self.maps[COUNTERS_MAP]
        for index in range(len(self.counter_names)):
            counters.update(_INDEX.pack(index), _COUNTER.pack(0))

    # -- drop notifications

    def drops(self) -> list[Drop]:
        """The drop notifications (ring bpfgen_drops) written since the last call, oldest
        first; [] for a build without them."""
        if DROPS_MAP not in self.maps:
            return []
        if self._ring is None:
            self._ring = libbpf.RingBuffer(self.maps[DROPS_MAP].fd, self._ring_records.append)
        self._ring.poll(0)
        raw, self._ring_records[:] = list(self._ring_records), []
        programs = tuple(p.name for p in self.manifest.programs)
        return [decode(r, self.counter_names, programs) for r in raw]

    # -- lifetime

    def close(self) -> None:
        """Unload every object, unmount the bpffs (and what is pinned there). Idempotent."""
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        self._cleanup()

    def __enter__(self) -> BuildUnderTest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _cleanup(objects: list[LoadedObject], pin_root: Path, workdir: Path) -> None:
    for obj in objects:
        obj.close()
    objects.clear()
    if os.path.ismount(pin_root):
        _run(["umount", str(pin_root)], "unmount the private bpffs")
    shutil.rmtree(workdir, ignore_errors=True)


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeOpError(what, errno.EPERM, f"{' '.join(argv)}: {proc.stderr.strip()}")

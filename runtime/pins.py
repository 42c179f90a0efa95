"""The bpffs side: is it mounted, mount it, open pinned maps and loaded programs by id.

`PinnedMap.open(path)` gives a map pinned on a bpffs the same interface as a
LoadedMap (lookup, update, keys, per-CPU reads), owning its own fd.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from typing import Any, cast

from . import libbpf
from .errors import RuntimeOpError, operation
from .loader import LoadedMap

MAP_TYPE_NAMES = {
    1: "BPF_MAP_TYPE_HASH",
    2: "BPF_MAP_TYPE_ARRAY",
    5: "BPF_MAP_TYPE_PERCPU_HASH",
    6: "BPF_MAP_TYPE_PERCPU_ARRAY",
    9: "BPF_MAP_TYPE_LRU_HASH",
    10: "BPF_MAP_TYPE_LRU_PERCPU_HASH",
    11: "BPF_MAP_TYPE_LPM_TRIE",
    27: "BPF_MAP_TYPE_RINGBUF",
}


def is_bpffs(path: str) -> bool:
    """True when a bpf filesystem is mounted exactly at `path`."""
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[1] == real and fields[2] == "bpf":
                    return True
    except OSError:
        return False
    return False


def mount_bpffs(path: str) -> None:
    op = f"mount bpffs at {path}"
    os.makedirs(path, exist_ok=True)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, None) != 0:
        raise RuntimeOpError(op, ctypes.get_errno())


def unmount(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(path), 0) != 0:
        raise RuntimeOpError(f"unmount bpffs at {path}", ctypes.get_errno())


@dataclass(frozen=True)
class MapInfo:
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str = ""  # the kernel's (at most 15 characters)

    @property
    def type_name(self) -> str:
        return MAP_TYPE_NAMES.get(self.type, str(self.type))


class _FdHolder:
    """The owner of a PinnedMap's fd: what LoadedMap asks its owner (`closed`, `path`)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


class PinnedMap(LoadedMap):
    """A map opened from its pin; `close()` it (or use `with`)."""

    def __init__(self, path: str) -> None:  # no super().__init__: there is no libbpf object
        op = f"open pinned map {path}"
        with operation(op):
            fd = libbpf.bpf_obj_get(path)
        self._setup(fd, path, op)
        self.name = os.path.basename(path)

    @classmethod
    def by_id(cls, map_id: int) -> PinnedMap:
        """A live map by id, pinned or not (a loaded program's .bss); named as the kernel
        names it; pin_path is ""."""
        op = f"open map id {map_id}"
        with operation(op):
            fd = libbpf.bpf_map_get_fd_by_id(map_id)
        m = cls.__new__(cls)
        m._setup(fd, "", op)
        m.name = m.info.name
        return m

    def _setup(self, fd: int, path: str, op: str) -> None:
        holder = _FdHolder(fd, path or op)
        try:
            info = map_info(fd, op)
        except BaseException:
            holder.close()
            raise
        self._holder = holder
        self._owner = cast(Any, holder)  # LoadedMap only asks its owner `closed` and `path`
        self.fd = fd
        self.type = info.type
        self.key_size = info.key_size
        self.value_size = info.value_size
        self.max_entries = info.max_entries
        self.pin_path = path
        self.info = info

    def close(self) -> None:
        self._holder.close()

    def __enter__(self) -> PinnedMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(self, limit: int | None = None) -> int:
        """Number of keys (a hash map changed meanwhile may be off by a few)."""
        n = 0
        for _ in self.keys():
            n += 1
            if limit is not None and n >= limit:
                break
        return n


def map_info(fd: int, op: str) -> MapInfo:
    info = libbpf.BpfMapInfo()
    with operation(op):
        libbpf.bpf_obj_get_info_by_fd(fd, info)
    return MapInfo(
        info.id, info.type, info.key_size, info.value_size, info.max_entries, info.map_flags,
        info.name.decode(errors="replace"),
    )  # fmt: skip


@dataclass(frozen=True)
class LiveProgram:
    id: int
    name: str  # the kernel's (at most 15 characters)
    tag: str


def program_by_id(prog_id: int) -> LiveProgram | None:
    """What the kernel says about program `prog_id`; None when it is gone."""
    try:
        fd = libbpf.bpf_prog_get_fd_by_id(prog_id)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise RuntimeOpError(f"open program id {prog_id}", exc.errno or errno.EIO) from exc
    try:
        info = libbpf.BpfProgInfo()
        with operation(f"read info of program id {prog_id}"):
            libbpf.bpf_obj_get_info_by_fd(fd, info)
        return LiveProgram(info.id, info.name.decode(errors="replace"), bytes(info.tag).hex())
    finally:
        os.close(fd)


def program_map_ids(prog_id: int) -> list[int]:
    """The ids of the maps program `prog_id` uses (its .bss among them)."""
    op = f"read map ids of program id {prog_id}"
    with operation(op):
        fd = libbpf.bpf_prog_get_fd_by_id(prog_id)
    try:
        info = libbpf.BpfProgInfo()
        with operation(op):
            libbpf.bpf_obj_get_info_by_fd(fd, info)
        n = info.nr_map_ids
        ids = (ctypes.c_uint32 * max(n, 1))()
        info = libbpf.BpfProgInfo()
        info.nr_map_ids = n
        info.map_ids = ctypes.addressof(ids)
        with operation(op):
            libbpf.bpf_obj_get_info_by_fd(fd, info)
        return list(ids[: min(n, info.nr_map_ids)])
    finally:
        os.close(fd)


def program_fd_by_id(prog_id: int) -> int:
    """A new fd for a loaded program (to attach it elsewhere); the caller closes it."""
    with operation(f"open program id {prog_id}"):
        return libbpf.bpf_prog_get_fd_by_id(prog_id)

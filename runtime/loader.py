"""Load a BPF object into the kernel: open -> configure -> load, as libbpf-bootstrap does.

    with open_object("build/x/egress.bpf.o", pin_root="/sys/fs/bpf/bpfgen") as obj:
        obj.maps["bpfgen_snat_v4"].update(key, value)
        result = test_run(obj.programs["egress"], frame)

`open_object` opens the ELF with libbpf, configures it (pin paths, initial values
of `.data`/`.rodata`/`.bss`, one verifier log buffer per program), loads it (maps
created, programs through the verifier) and returns the loaded object; leaving
the `with` block closes it (pinned maps stay pinned). `verify_object` is the same
sequence for the compiler: load, read what the kernel says about each program,
close.

A program the verifier refuses raises `VerifierRejected` with the tail of its log
and the path of the whole log; any other failure raises `RuntimeOpError` with
libbpf's own messages as the detail.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import mmap
import os
import re
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType, TracebackType

from . import libbpf
from .errors import RuntimeOpError, VerifierRejected, operation

LOG_BUF_SIZE = 16 * 1024 * 1024  # per program; grown (x4) when the kernel answers ENOSPC
LOG_BUF_MAX = (2**32 - 1) >> 2  # the kernel refuses larger log buffers (EINVAL)
TEST_RUN_HEADROOM = 256  # room for growth (XDP_PACKET_HEADROOM, encapsulation) in test_run output
POSSIBLE_CPUS_PATH = "/sys/devices/system/cpu/possible"

_NO_INITIAL_VALUES: Mapping[str, bytes] = MappingProxyType({})
_NO_PIN_PATHS: Mapping[str, str] = MappingProxyType({})
# libbpf 1.1 names the program it failed on in a warning (libbpf.c, bpf_object_load_prog).
_PROG_LOAD_FAILED = re.compile(r"prog '(?P<name>[^']+)': BPF program load failed")


@dataclass(frozen=True)
class ProgInfo:
    """What the kernel reports about a loaded program (struct bpf_prog_info)."""

    name: str  # libbpf's name: the C function, not the kernel's 15-character copy
    section: str
    id: int
    tag: str  # 16 hex digits: the kernel's hash of the instructions
    type: int  # enum bpf_prog_type
    verified_insns: int  # instructions the verifier processed, over all paths
    xlated_insns: int  # instructions after the verifier's rewrites
    jited_len: int  # bytes of native code


@dataclass(frozen=True)
class TestRunResult:
    """One BPF_PROG_TEST_RUN: the return code, the packet as the program left it."""

    __test__ = False  # not a pytest test class, whatever module imports it

    retval: int
    data: bytes
    duration_ns: int  # average per repetition
    ctx: bytes | None = None  # the context as the program left it, when one was asked for


@functools.cache
def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (the kernel's num_possible_cpus())."""
    return parse_cpu_list(Path(POSSIBLE_CPUS_PATH).read_text())


def parse_cpu_list(text: str) -> int:
    """Count the CPUs in a kernel cpu list such as "0-3,6,8-9"."""
    count = 0
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


class _LogBuffer:
    """One program's verifier log: anonymous memory, so a 16 MiB buffer costs what is written."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._mem = mmap.mmap(-1, size)
        self._anchor: ctypes.c_char | None = ctypes.c_char.from_buffer(self._mem)
        self.address = ctypes.addressof(self._anchor)

    def text(self) -> str:
        end = self._mem.find(b"\0")
        return self._mem[: end if end >= 0 else self.size].decode(errors="replace")

    def release(self) -> None:
        self._anchor = None  # the mmap cannot close while a ctypes view exports it
        self._mem.close()


class _Owned:
    """Something whose fd belongs to a LoadedObject: unusable once the object is closed."""

    def __init__(self, owner: LoadedObject) -> None:
        self._owner = owner

    def _require_open(self, op: str) -> None:
        if self._owner.closed:
            # The fd number may already belong to something else: never use it.
            raise RuntimeOpError(op, errno.EBADF, f"object {self._owner.path} is closed")


class LoadedProgram(_Owned):
    """A program the verifier accepted."""

    def __init__(self, owner: LoadedObject, ptr: libbpf.ProgramPtr, verifier_log: str) -> None:
        super().__init__(owner)
        self.name = libbpf.bpf_program__name(ptr)
        self.section = libbpf.bpf_program__section_name(ptr)
        self.type = libbpf.bpf_program__type(ptr)
        self.fd = libbpf.bpf_program__fd(ptr)
        self.verifier_log = verifier_log  # empty when loaded with log_level=0

    def __repr__(self) -> str:
        return f"<LoadedProgram {self.name} sec {self.section} fd {self.fd}>"

    def info(self) -> ProgInfo:
        op = f"read info of program {self.name}"
        self._require_open(op)
        info = libbpf.BpfProgInfo()
        with operation(op):
            libbpf.bpf_obj_get_info_by_fd(self.fd, info)
        return ProgInfo(
            name=self.name,
            section=self.section,
            id=info.id,
            tag=bytes(info.tag).hex(),
            type=info.type,
            verified_insns=info.verified_insns,
            xlated_insns=info.xlated_prog_len // 8,  # sizeof(struct bpf_insn)
            jited_len=info.jited_prog_len,
        )

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the program at `path` on a bpffs; it outlives this object until unlinked."""
        op = f"pin program {self.name} at {os.fspath(path)}"
        self._require_open(op)
        with operation(op):
            libbpf.bpf_obj_pin(self.fd, os.fspath(path))


class LoadedMap(_Owned):
    """A map of a loaded object. Keys and values are raw bytes of the map's sizes.

    Per-CPU maps hold one value per possible CPU: read them with `lookup_percpu`;
    `update` writes the same value on every CPU, `update_percpu` one per CPU.
    """

    def __init__(self, owner: LoadedObject, ptr: libbpf.MapPtr) -> None:
        super().__init__(owner)
        self.name = libbpf.bpf_map__name(ptr)
        self.fd = libbpf.bpf_map__fd(ptr)
        self.type = libbpf.bpf_map__type(ptr)
        self.key_size = libbpf.bpf_map__key_size(ptr)
        self.value_size = libbpf.bpf_map__value_size(ptr)
        self.max_entries = libbpf.bpf_map__max_entries(ptr)
        self.pin_path = libbpf.bpf_map__pin_path(ptr)

    def __repr__(self) -> str:
        return f"<LoadedMap {self.name} type {self.type} fd {self.fd}>"

    @property
    def percpu(self) -> bool:
        return self.type in libbpf.PERCPU_MAP_TYPES

    @property
    def _percpu_stride(self) -> int:
        return (self.value_size + 7) // 8 * 8  # the kernel copies each CPU's value 8-aligned

    def _key(self, op: str, key: bytes) -> libbpf.CharBuf:
        self._require_open(op)
        if len(key) != self.key_size:
            raise RuntimeOpError(
                op, errno.EINVAL, f"key is {len(key)} bytes, the map's keys are {self.key_size}"
            )
        return ctypes.create_string_buffer(key, len(key))

    def _check_value(self, op: str, value: bytes) -> None:
        if len(value) != self.value_size:
            raise RuntimeOpError(
                op,
                errno.EINVAL,
                f"value is {len(value)} bytes, the map's values are {self.value_size}",
            )

    def _not_percpu(self, op: str) -> None:
        if self.percpu:
            raise RuntimeOpError(
                op, errno.EINVAL, "the map is per-CPU: use lookup_percpu / update_percpu"
            )

    def lookup(self, key: bytes) -> bytes | None:
        op = f"lookup in map {self.name}"
        self._not_percpu(op)
        key_buf = self._key(op, key)
        value = ctypes.create_string_buffer(self.value_size)
        with operation(op):
            found = libbpf.bpf_map_lookup_elem(self.fd, key_buf, value)
        return value.raw if found else None

    def lookup_percpu(self, key: bytes) -> list[bytes] | None:
        """One value per possible CPU, in CPU order; None when the key is not there."""
        op = f"lookup in per-CPU map {self.name}"
        if not self.percpu:
            raise RuntimeOpError(op, errno.EINVAL, "the map is not per-CPU: use lookup")
        key_buf = self._key(op, key)
        stride = self._percpu_stride
        values = ctypes.create_string_buffer(stride * possible_cpus())
        with operation(op):
            found = libbpf.bpf_map_lookup_elem(self.fd, key_buf, values)
        if not found:
            return None
        raw = values.raw
        return [raw[i : i + self.value_size] for i in range(0, len(raw), stride)]

    def update(self, key: bytes, value: bytes, flags: int = libbpf.BPF_ANY) -> None:
        """Create or replace `key` (see BPF_NOEXIST / BPF_EXIST); per-CPU maps: on every CPU."""
        self._check_value(f"update map {self.name}", value)
        if self.percpu:
            self.update_percpu(key, [value] * possible_cpus(), flags)
            return
        op = f"update map {self.name}"
        key_buf = self._key(op, key)
        with operation(op):
            libbpf.bpf_map_update_elem(
                self.fd, key_buf, ctypes.create_string_buffer(value, len(value)), flags
            )

    def update_percpu(
        self, key: bytes, values: Sequence[bytes], flags: int = libbpf.BPF_ANY
    ) -> None:
        """Set one value per possible CPU, in CPU order."""
        op = f"update per-CPU map {self.name}"
        if not self.percpu:
            raise RuntimeOpError(op, errno.EINVAL, "the map is not per-CPU: use update")
        if len(values) != possible_cpus():
            raise RuntimeOpError(
                op, errno.EINVAL, f"{len(values)} values given, {possible_cpus()} CPUs possible"
            )
        for value in values:
            self._check_value(op, value)
        key_buf = self._key(op, key)
        stride = self._percpu_stride
        packed = b"".join(v.ljust(stride, b"\0") for v in values)
        with operation(op):
            libbpf.bpf_map_update_elem(
                self.fd, key_buf, ctypes.create_string_buffer(packed, len(packed)), flags
            )

    def delete(self, key: bytes) -> bool:
        """False when the key was not there. Array maps cannot delete (EINVAL)."""
        op = f"delete from map {self.name}"
        key_buf = self._key(op, key)
        with operation(op):
            return libbpf.bpf_map_delete_elem(self.fd, key_buf)

    def keys(self) -> Iterator[bytes]:
        """Every key, in the kernel's order. A hash map changed meanwhile may restart or skip."""
        op = f"iterate map {self.name}"
        key: libbpf.CharBuf | None = None
        while True:
            self._require_open(op)
            next_key = ctypes.create_string_buffer(self.key_size)
            with operation(op):
                if not libbpf.bpf_map_get_next_key(self.fd, key, next_key):
                    return
            yield next_key.raw
            key = next_key

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for every key still there when its value is read."""
        self._not_percpu(f"iterate map {self.name}")
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:
                yield key, value

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin the map at `path` on a bpffs; it outlives this object until unlinked."""
        op = f"pin map {self.name} at {os.fspath(path)}"
        self._require_open(op)
        with operation(op):
            libbpf.bpf_obj_pin(self.fd, os.fspath(path))


class LoadedObject:
    """A loaded BPF object: its programs and maps by name. Close it (or use `with`)."""

    def __init__(self, ptr: libbpf.ObjectPtr, path: str, verifier_logs: Mapping[str, str]) -> None:
        self.path = path
        self.programs: dict[str, LoadedProgram] = {}
        for prog in _programs(ptr):
            if libbpf.bpf_program__autoload(prog):  # not loaded: no fd (SEC("?tc"), ...)
                name = libbpf.bpf_program__name(prog)
                self.programs[name] = LoadedProgram(self, prog, verifier_logs.get(name, ""))
        self.maps: dict[str, LoadedMap] = {}
        for map_ in _maps(ptr):
            loaded = LoadedMap(self, map_)
            self.maps[loaded.name] = loaded
        # Last, so a failure above leaves closing to the caller: the libbpf object is
        # closed exactly once, on close() or when this is garbage collected.
        self._close = weakref.finalize(self, libbpf.bpf_object__close, ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self.programs)} programs, {len(self.maps)} maps"
        return f"<LoadedObject {self.path}: {state}>"

    @property
    def closed(self) -> bool:
        return not self._close.alive

    def close(self) -> None:
        """Unload: programs and maps go away unless pinned or attached. Idempotent."""
        self._close()

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _programs(obj: libbpf.ObjectPtr) -> Iterator[libbpf.ProgramPtr]:
    prog = libbpf.bpf_object__next_program(obj, None)
    while prog is not None:
        yield prog
        prog = libbpf.bpf_object__next_program(obj, prog)


def _maps(obj: libbpf.ObjectPtr) -> Iterator[libbpf.MapPtr]:
    map_ = libbpf.bpf_object__next_map(obj, None)
    while map_ is not None:
        yield map_
        map_ = libbpf.bpf_object__next_map(obj, map_)


def open_object(
    path: str | os.PathLike[str],
    *,
    pin_root: str | os.PathLike[str] | None = None,
    initial_values: Mapping[str, bytes] = _NO_INITIAL_VALUES,
    log_level: int = 1,
    log_dir: Path | None = None,
    pin_paths: Mapping[str, str] = _NO_PIN_PATHS,
) -> LoadedObject:
    """Open, configure and load the object at `path`; use the result as a context manager.

    pin_root: maps declared `__uint(pinning, LIBBPF_PIN_BY_NAME)` are reused from, or
        pinned to, `<pin_root>/<map name>` (a directory on a bpffs). None: nothing is
        pinned and nothing on a bpffs is touched.
    initial_values: images of internal maps before load, by the end of libbpf's name
        for them (".bss", ".data", ".rodata"), each exactly the map's size.
    log_level: verifier log level for every program. 1: a refused program's log is
        the path that failed and why, an accepted one's the statistics line; 0: no
        log unless a program fails (libbpf then loads it again at level 1); 2: every
        state. Logs are kept on `LoadedProgram.verifier_log`.
    log_dir: where a rejected program's log is saved as `<program>.verifier.log`
        (default: a new temporary file).
    pin_paths: map name -> the pin path to use instead of `<pin_root>/<map name>`
        (reused when something is pinned there, else created and pinned there); the
        runtime gives a build's service tables fresh maps this way (converge.py, mode_bpf.py).
    """
    obj_path = os.fspath(path)
    log_size = LOG_BUF_SIZE
    while True:
        obj = _open(obj_path, pin_root)
        try:
            _configure(obj, obj_path, pin_root, initial_values, pin_paths)
            loaded = _load(obj, obj_path, log_level, log_size, log_dir)
        except BaseException:
            libbpf.bpf_object__close(obj)
            raise
        if loaded is not None:
            return loaded
        # A verifier log did not fit; an object loads only once: start over, larger.
        libbpf.bpf_object__close(obj)
        log_size = min(log_size * 4, LOG_BUF_MAX)


def _open(obj_path: str, pin_root: str | os.PathLike[str] | None) -> libbpf.ObjectPtr:
    opts = libbpf.BpfObjectOpenOpts()
    if pin_root is not None:
        opts.pin_root_path = os.fsencode(pin_root)
    with libbpf.capture_prints() as printed, operation(f"open object {obj_path}", details=printed):
        return libbpf.bpf_object__open_file(obj_path, opts)


def _configure(
    obj: libbpf.ObjectPtr,
    obj_path: str,
    pin_root: str | os.PathLike[str] | None,
    initial_values: Mapping[str, bytes],
    pin_paths: Mapping[str, str] = _NO_PIN_PATHS,
) -> None:
    maps = list(_maps(obj))
    if pin_root is None:
        for map_ in maps:
            libbpf.bpf_map__set_pin_path(map_, None)
    by_name = {libbpf.bpf_map__name(m): m for m in maps}
    for name, pin in sorted(pin_paths.items()):
        if name not in by_name:  # another object of the build may hold it
            continue
        with operation(f"set the pin path of map {name} in {obj_path} to {pin}"):
            libbpf.bpf_map__set_pin_path(by_name[name], pin)
    _set_initial_values(obj_path, maps, initial_values)


def _load(
    obj: libbpf.ObjectPtr, obj_path: str, log_level: int, log_size: int, log_dir: Path | None
) -> LoadedObject | None:
    """Load with one log buffer per program; None: retry with larger buffers."""
    buffers = {prog: _LogBuffer(log_size) for prog in _programs(obj)}
    try:
        with operation(f"configure verifier logs of {obj_path}"):
            for prog, buf in buffers.items():
                libbpf.bpf_program__set_log_buf(prog, buf.address, buf.size)
                libbpf.bpf_program__set_log_level(prog, log_level)
        with libbpf.capture_prints() as printed:
            try:
                libbpf.bpf_object__load(obj)
                failure = None
            except OSError as exc:
                failure = exc
        logs = {libbpf.bpf_program__name(p): buf.text() for p, buf in buffers.items()}
    finally:
        for buf in buffers.values():
            buf.release()  # libbpf keeps the pointer but never uses it after load

    if failure is None:
        return LoadedObject(obj, obj_path, logs)
    code = failure.errno or errno.EIO
    failed = _failed_program(printed)
    # ENOSPC from a program load: its log did not fit (since 6.4 the kernel keeps
    # the tail, before it the head; the buffer need not look full). Retry, larger.
    if code == errno.ENOSPC and failed is not None and log_size < LOG_BUF_MAX:
        return None
    raise _load_error(obj_path, obj, code, failed, printed, logs, log_level, log_size, log_dir)


def _set_initial_values(
    obj_path: str, maps: list[libbpf.MapPtr], initial_values: Mapping[str, bytes]
) -> None:
    internal = {libbpf.bpf_map__name(m): m for m in maps if libbpf.bpf_map__is_internal(m)}
    for suffix, data in sorted(initial_values.items()):
        op = f"set initial value of {suffix} in {obj_path}"
        matches = [name for name in internal if name.endswith(suffix)]
        if len(matches) != 1:
            which = "no internal map" if not matches else f"{len(matches)} internal maps"
            raise RuntimeOpError(
                op,
                errno.EINVAL,
                f"{which} named *{suffix} (internal maps: {', '.join(sorted(internal)) or 'none'})",
            )
        map_ = internal[matches[0]]
        size = libbpf.bpf_map__value_size(map_)
        if len(data) != size:
            raise RuntimeOpError(
                op, errno.EINVAL, f"{len(data)} bytes given, map {matches[0]} holds {size}"
            )
        with operation(op):
            libbpf.bpf_map__set_initial_value(map_, data)


def _load_error(
    obj_path: str,
    obj: libbpf.ObjectPtr,
    code: int,
    failed: str | None,
    printed: list[str],
    logs: Mapping[str, str],
    log_level: int,
    log_size: int,
    log_dir: Path | None,
) -> RuntimeOpError:
    op = f"load object {obj_path}"
    if failed is not None and code == errno.ENOSPC:
        return RuntimeOpError(
            op,
            code,
            f"the verifier log of program {failed} does not fit in {log_size} bytes at log "
            f"level {log_level}; load with log_level=0 to get a log only on failure",
        )
    if failed is None or not logs.get(failed):  # not the verifier: maps, BTF, permissions
        return RuntimeOpError(op, code, "\n".join(printed))
    section = next(
        libbpf.bpf_program__section_name(p)
        for p in _programs(obj)
        if libbpf.bpf_program__name(p) == failed
    )
    return VerifierRejected(
        op,
        code,
        obj_path=obj_path,
        program=failed,
        section=section,
        log=logs[failed],
        log_path=_save_log(log_dir, failed, logs[failed]),
    )


def _failed_program(printed: list[str]) -> str | None:
    """The program libbpf says it failed to load, if the failure was a program load.

    libbpf loads programs in object order and stops at the first one refused; the
    ones before it were accepted (their logs are not rejections), the ones after it
    were never tried (their logs are empty).
    """
    for line in printed:
        match = _PROG_LOAD_FAILED.search(line)
        if match:
            return match["name"]
    return None


def _save_log(log_dir: Path | None, program: str, log: str) -> str:
    try:
        if log_dir is None:
            fd, path = tempfile.mkstemp(prefix=f"bpfgen-{program}.", suffix=".verifier.log")
            with os.fdopen(fd, "w") as out:
                out.write(log)
            return path
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{program}.verifier.log"
        log_path.write_text(log)
        return str(log_path)
    except OSError as exc:
        return f"(not saved: {exc})"


def test_run(
    program: LoadedProgram,
    data: bytes,
    *,
    repeat: int = 1,
    data_out_size: int | None = None,
    ctx_in: bytes | None = None,
    ctx_out_size: int | None = None,
) -> TestRunResult:
    """Run `program` on the packet `data` in the kernel (BPF_PROG_TEST_RUN), not on a device.

    Works for tc (SCHED_CLS, data is an Ethernet frame) and XDP programs. The output
    holds up to `data_out_size` bytes (default: the input plus TEST_RUN_HEADROOM).
    The `repeat` runs share one buffer: a program that rewrites the packet sees its
    own output from the second run on. For tc, the kernel refuses (EINVAL) frames
    shorter than an Ethernet header and IPv4/IPv6 frames without a whole IP header.

    ctx_in: the program's context before the run (tc: `struct __sk_buff`, of which
        the kernel lets only some fields be non-zero: mark, priority, cb, tstamp,
        wire_len, gso_segs, gso_size, hwtstamp, and ifindex naming a device; XDP:
        `struct xdp_md`). The context after the run is returned in `ctx`, up to
        `ctx_out_size` bytes (default: len(ctx_in)); the kernel fails with ENOSPC
        when that is less than its own size of the struct (tc: 192 bytes).
    """
    op = f"test run program {program.name}"
    program._require_open(op)
    out_size = data_out_size if data_out_size is not None else len(data) + TEST_RUN_HEADROOM
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(out_size)
    opts = libbpf.BpfTestRunOpts(
        data_in=ctypes.addressof(data_in),
        data_size_in=len(data),
        data_out=ctypes.addressof(data_out),
        data_size_out=out_size,
        repeat=repeat,
    )
    if ctx_out_size is None and ctx_in is not None:
        ctx_out_size = len(ctx_in)
    # Both buffers stay referenced until the syscall returned.
    ctx_in_buf: ctypes.Array[ctypes.c_char] | None = None
    ctx_out_buf: ctypes.Array[ctypes.c_char] | None = None
    if ctx_in is not None:
        ctx_in_buf = ctypes.create_string_buffer(ctx_in, len(ctx_in))
        opts.ctx_in = ctypes.addressof(ctx_in_buf)
        opts.ctx_size_in = len(ctx_in)
    if ctx_out_size is not None:
        ctx_out_buf = ctypes.create_string_buffer(ctx_out_size)
        opts.ctx_out = ctypes.addressof(ctx_out_buf)
        opts.ctx_size_out = ctx_out_size
    try:
        libbpf.bpf_prog_test_run_opts(program.fd, opts)
    except OSError as exc:
        code = exc.errno or errno.EIO
        detail = ""
        if code == errno.ENOSPC:
            if ctx_out_size is not None and opts.ctx_size_out > ctx_out_size:
                detail = f"the context is {opts.ctx_size_out} bytes, ctx_out_size is {ctx_out_size}"
            else:
                detail = f"the output is {opts.data_size_out} bytes, data_out_size is {out_size}"
        raise RuntimeOpError(op, code, detail) from exc
    return TestRunResult(
        retval=opts.retval,
        data=data_out.raw[: opts.data_size_out],
        duration_ns=opts.duration,
        ctx=None if ctx_out_buf is None else ctx_out_buf.raw[: opts.ctx_size_out],
    )


test_run.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, wherever imported


def verify_object(
    path: str | os.PathLike[str],
    *,
    log_dir: Path | None,
    log_level: int = 1,
    initial_values: Mapping[str, bytes] = _NO_INITIAL_VALUES,
) -> list[ProgInfo]:
    """Load the object without pinning (the kernel verifier runs), report each program, close.

    What the compiler calls after every build. Raises VerifierRejected like open_object.
    initial_values: as for open_object; a frozen build's `.rodata` changes what the
    verifier walks (it prunes on the constants), so it is verified with its own.
    """
    with open_object(
        path, log_dir=log_dir, log_level=log_level, initial_values=initial_values
    ) as obj:
        return [program.info() for program in obj.programs.values()]

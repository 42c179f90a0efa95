"""ctypes binding of the system libbpf, to the 1.1 ABI (Debian 12's libbpf1): only what we use.

Each C function is declared once in `_PROTOTYPES` (restype, argtypes) and wrapped
by a typed Python function of the same name. The wrappers keep libbpf's meaning
but report failure the Python way: a negative return, or NULL with errno set,
raises `OSError(errno)`; `errors.operation` turns that into a RuntimeOpError that
names what was attempted. Where a negative return is an answer rather than a
failure (`bpf_map_lookup_elem` -> -ENOENT) the wrapper says so in its signature.

The options structs are declared field for field from the 1.1 headers with `sz`
set to their size, so a newer libbpf accepts them too (it reads `sz` bytes and
nothing beyond). `struct bpf_prog_info` is kernel UAPI, sized by `info_len`.

The library is loaded on first use, not at import: importing the runtime never
needs libbpf, and a missing one is an error that names the Debian package.

libbpf's own messages go through one print callback (`libbpf_set_print`,
installed on first use): inside `capture_prints()` warnings are collected so an
error can carry them; everything is also logged to `bpfgen_runtime.libbpf`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from ctypes import (
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_ubyte,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, NewType, TypeAlias

from .errors import RuntimeOpError, strerror

DEBIAN_PACKAGE = "libbpf1"
MIN_VERSION = (1, 1)

# Opaque handles: struct bpf_object *, struct bpf_program *, struct bpf_map *.
ObjectPtr = NewType("ObjectPtr", int)
ProgramPtr = NewType("ProgramPtr", int)
MapPtr = NewType("MapPtr", int)
# A key or value buffer: ctypes.create_string_buffer(...)
CharBuf: TypeAlias = "ctypes.Array[ctypes.c_char]"

# enum bpf_map_type values whose lookups return one value per possible CPU.
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
PERCPU_MAP_TYPES = frozenset(
    {
        BPF_MAP_TYPE_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_ARRAY,
        BPF_MAP_TYPE_LRU_PERCPU_HASH,
        BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
    }
)

# bpf_map_update_elem flags.
BPF_ANY = 0  # create or update
BPF_NOEXIST = 1  # create only
BPF_EXIST = 2  # update only

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

BPF_TAG_SIZE = 8
BPF_OBJ_NAME_LEN = 16


class BpfObjectOpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts, libbpf 1.1 (last field: kernel_log_level)."""

    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_removed_attach_prog_fd", c_uint32),  # `__u32 :32;` in the header
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_void_p),  # char *, not NUL-terminated on the way in
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]  # `size_t :0;` at the end: padded to 8, as ctypes does anyway


class BpfTestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts, libbpf 1.1 (last field: batch_size)."""

    _fields_ = [
        ("sz", c_size_t),
        ("data_in", c_void_p),
        ("data_out", c_void_p),
        ("data_size_in", c_uint32),
        ("data_size_out", c_uint32),  # in: room in data_out; out: bytes written
        ("ctx_in", c_void_p),
        ("ctx_out", c_void_p),
        ("ctx_size_in", c_uint32),
        ("ctx_size_out", c_uint32),
        ("retval", c_uint32),
        ("repeat", c_int),
        ("duration", c_uint32),  # out: average ns per repetition
        ("flags", c_uint32),
        ("cpu", c_uint32),
        ("batch_size", c_uint32),
    ]


class BpfProgInfo(ctypes.Structure):
    """struct bpf_prog_info, kernel UAPI (<linux/bpf.h>), up to attach_btf_id."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("tag", c_ubyte * BPF_TAG_SIZE),
        ("jited_prog_len", c_uint32),
        ("xlated_prog_len", c_uint32),
        ("jited_prog_insns", c_uint64),
        ("xlated_prog_insns", c_uint64),
        ("load_time", c_uint64),
        ("created_by_uid", c_uint32),
        ("nr_map_ids", c_uint32),
        ("map_ids", c_uint64),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32),
        ("gpl_compatible", c_uint32, 1),
        ("_pad_gpl", c_uint32, 31),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("nr_jited_ksyms", c_uint32),
        ("nr_jited_func_lens", c_uint32),
        ("jited_ksyms", c_uint64),
        ("jited_func_lens", c_uint64),
        ("btf_id", c_uint32),
        ("func_info_rec_size", c_uint32),
        ("func_info", c_uint64),
        ("nr_func_info", c_uint32),
        ("nr_line_info", c_uint32),
        ("line_info", c_uint64),
        ("jited_line_info", c_uint64),
        ("nr_jited_line_info", c_uint32),
        ("line_info_rec_size", c_uint32),
        ("jited_line_info_rec_size", c_uint32),
        ("nr_prog_tags", c_uint32),
        ("prog_tags", c_uint64),
        ("run_time_ns", c_uint64),
        ("run_cnt", c_uint64),
        ("recursion_misses", c_uint64),
        ("verified_insns", c_uint32),
        ("attach_btf_obj_id", c_uint32),
        ("attach_btf_id", c_uint32),
        ("_pad_end", c_uint32),
    ]


class BpfMapInfo(ctypes.Structure):
    """struct bpf_map_info, kernel UAPI (<linux/bpf.h>), up to map_extra."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("key_size", c_uint32),
        ("value_size", c_uint32),
        ("max_entries", c_uint32),
        ("map_flags", c_uint32),
        ("name", ctypes.c_char * BPF_OBJ_NAME_LEN),
        ("ifindex", c_uint32),
        ("btf_vmlinux_value_type_id", c_uint32),
        ("netns_dev", c_uint64),
        ("netns_ino", c_uint64),
        ("btf_id", c_uint32),
        ("btf_key_type_id", c_uint32),
        ("btf_value_type_id", c_uint32),
        ("_pad", c_uint32),
        ("map_extra", c_uint64),
    ]


# enum bpf_tc_attach_point and enum bpf_tc_flags (libbpf.h)
BPF_TC_INGRESS = 1 << 0
BPF_TC_EGRESS = 1 << 1
BPF_TC_F_REPLACE = 1 << 0

# XDP attach flags (<linux/if_link.h>)
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4


class BpfTcHook(ctypes.Structure):
    """struct bpf_tc_hook, libbpf 1.1: which clsact hook of which device."""

    _fields_ = [
        ("sz", c_size_t),
        ("ifindex", c_int),
        ("attach_point", c_int),  # enum bpf_tc_attach_point
        ("parent", c_uint32),
    ]  # `size_t :0;`: padded to 8


class BpfTcOpts(ctypes.Structure):
    """struct bpf_tc_opts, libbpf 1.1: one cls_bpf filter (direct-action)."""

    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),  # BPF_TC_F_REPLACE
        ("prog_id", c_uint32),  # out of bpf_tc_attach / bpf_tc_query
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class BpfXdpAttachOpts(ctypes.Structure):
    """struct bpf_xdp_attach_opts, libbpf 1.1: old_prog_fd for XDP_FLAGS_REPLACE."""

    _fields_ = [("sz", c_size_t), ("old_prog_fd", c_int)]


# enum bpf_attach_type (<linux/bpf.h>): the cgroup sock_addr hooks of the bpf mode.
BPF_CGROUP_INET4_CONNECT = 10
BPF_CGROUP_UDP4_SENDMSG = 14
BPF_CGROUP_UDP4_RECVMSG = 19
BPF_CGROUP_INET4_GETPEERNAME = 29


class BpfLinkInfo(ctypes.Structure):
    """struct bpf_link_info, kernel UAPI, its common head (the union's cgroup member)."""

    _fields_ = [
        ("type", c_uint32),
        ("id", c_uint32),
        ("prog_id", c_uint32),
        ("_pad", c_uint32),
        ("cgroup_id", c_uint64),
        ("attach_type", c_uint32),
        ("_pad2", c_uint32),
    ]


# typedef int (*libbpf_print_fn_t)(enum libbpf_print_level, const char *, va_list);
# On x86-64 a va_list parameter is a pointer to the caller's __va_list_tag, so it
# travels as a void * straight into vsnprintf.
PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_void_p, c_void_p)
# typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
RING_SAMPLE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)

_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "libbpf_version_string": (c_char_p, []),
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "bpf_object__open_file": (c_void_p, [c_char_p, POINTER(BpfObjectOpenOpts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__autoload": (c_bool, [c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__type": (c_int, [c_void_p]),
    "bpf_program__set_log_buf": (c_int, [c_void_p, c_void_p, c_size_t]),
    "bpf_program__set_log_level": (c_int, [c_void_p, c_uint32]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__is_internal": (c_bool, [c_void_p]),
    "bpf_map__set_pin_path": (c_int, [c_void_p, c_char_p]),
    "bpf_map__pin_path": (c_char_p, [c_void_p]),
    "bpf_map__set_initial_value": (c_int, [c_void_p, c_void_p, c_size_t]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, POINTER(c_size_t)]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "bpf_prog_test_run_opts": (c_int, [c_int, POINTER(BpfTestRunOpts)]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_map_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_tc_hook_create": (c_int, [POINTER(BpfTcHook)]),
    "bpf_tc_hook_destroy": (c_int, [POINTER(BpfTcHook)]),
    "bpf_tc_attach": (c_int, [POINTER(BpfTcHook), POINTER(BpfTcOpts)]),
    "bpf_tc_detach": (c_int, [POINTER(BpfTcHook), POINTER(BpfTcOpts)]),
    "bpf_tc_query": (c_int, [POINTER(BpfTcHook), POINTER(BpfTcOpts)]),
    "bpf_xdp_attach": (c_int, [c_int, c_int, c_uint32, POINTER(BpfXdpAttachOpts)]),
    "bpf_xdp_detach": (c_int, [c_int, c_uint32, POINTER(BpfXdpAttachOpts)]),
    "bpf_xdp_query_id": (c_int, [c_int, c_int, POINTER(c_uint32)]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
    "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
    "bpf_link_detach": (c_int, [c_int]),
    "bpf_map_create": (c_int, [c_int, ctypes.c_char_p, c_uint32, c_uint32, c_uint32, c_void_p]),
    "ring_buffer__new": (c_void_p, [c_int, RING_SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__free": (None, [c_void_p]),
    # The kernel's BTF (kbtf.py, for bpfgen trace)
    "btf__load_vmlinux_btf": (c_void_p, []),
    "btf__free": (None, [c_void_p]),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint32]),
    "btf__type_by_id": (c_void_p, [c_void_p, c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
}


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise RuntimeOpError(
            "load libbpf",
            errno.ENOENT,
            f"{name}: {exc}; install the Debian package {DEBIAN_PACKAGE}",
        ) from exc
    for fn_name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, fn_name)
        except AttributeError as exc:
            raise RuntimeOpError(
                "load libbpf",
                errno.ENOSYS,
                f"{name} has no {fn_name}: libbpf >= 1.1 is needed "
                f"(the Debian package {DEBIAN_PACKAGE})",
            ) from exc
        fn.restype = restype
        fn.argtypes = argtypes
    version = (int(lib.libbpf_major_version()), int(lib.libbpf_minor_version()))
    if version < MIN_VERSION:
        raise RuntimeOpError(
            "load libbpf",
            errno.ENOSYS,
            f"{name} is libbpf {version[0]}.{version[1]}; 1.1 or newer is needed "
            f"(the Debian package {DEBIAN_PACKAGE})",
        )
    _install_print_hook(lib)
    return lib


def _check(ret: int) -> int:
    """libbpf >= 1.0 returns -errno on failure (and sets errno)."""
    if ret < 0:
        raise OSError(-ret, strerror(-ret))
    return ret


def _check_ptr(ptr: int | None) -> int:
    """For calls that return NULL and set errno on failure."""
    if not ptr:
        code = ctypes.get_errno() or errno.EINVAL
        raise OSError(code, strerror(code))
    return ptr


def _decode(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw is not None else ""


# --- libbpf's messages -----------------------------------------------------------------------

logger = logging.getLogger("bpfgen_runtime.libbpf")
_LOG_LEVELS = {LIBBPF_WARN: logging.WARNING, LIBBPF_INFO: logging.INFO, LIBBPF_DEBUG: logging.DEBUG}
_PRINT_BUF_SIZE = 16 * 1024
_captures = threading.local()  # .stack: list[list[str]]; libbpf prints on the calling thread


def _vsnprintf() -> Any:
    fn = ctypes.CDLL(None).vsnprintf  # libc, already in the process
    fn.restype = c_int
    fn.argtypes = [c_void_p, c_size_t, c_void_p, c_void_p]
    return fn


def _on_print(level: int, fmt: int | None, args: int | None) -> int:
    """The libbpf_print_fn_t: format with vsnprintf, then capture and/or log."""
    try:
        py_level = _LOG_LEVELS.get(level, logging.DEBUG)
        stack: list[list[str]] = getattr(_captures, "stack", [])
        captured = level <= LIBBPF_INFO and bool(stack)
        if not captured and not logger.isEnabledFor(py_level):
            return 0
        buf = ctypes.create_string_buffer(_PRINT_BUF_SIZE)
        # va_list can be walked once: no second call with a bigger buffer.
        needed = _VSNPRINTF(buf, _PRINT_BUF_SIZE, fmt, args)
        text = buf.value.decode(errors="replace").rstrip("\n")
        if needed >= _PRINT_BUF_SIZE:
            text += " [truncated]"
        if captured:
            stack[-1].append(text)
            logger.debug("%s", text)
        else:
            logger.log(py_level, "%s", text)
    except Exception:  # an exception must not unwind into C
        return 0
    return 0


_VSNPRINTF = _vsnprintf()
_PRINT_CALLBACK = PRINT_FN(_on_print)  # module-level: libbpf keeps the pointer forever


def _install_print_hook(lib: ctypes.CDLL) -> None:
    lib.libbpf_set_print(_PRINT_CALLBACK)


@contextmanager
def capture_prints() -> Iterator[list[str]]:
    """Collect libbpf's warnings and info messages (one string each) printed inside the block."""
    _lib()  # the hook is installed with the library
    stack: list[list[str]] | None = getattr(_captures, "stack", None)
    if stack is None:
        stack = _captures.stack = []
    lines: list[str] = []
    stack.append(lines)
    try:
        yield lines
    finally:
        stack.pop()


# --- libbpf API: library and object -------------------------------------------------------------


def libbpf_version_string() -> str:
    return _decode(_lib().libbpf_version_string())


def bpf_object__open_file(path: str, opts: BpfObjectOpenOpts) -> ObjectPtr:
    opts.sz = ctypes.sizeof(BpfObjectOpenOpts)
    return ObjectPtr(
        _check_ptr(_lib().bpf_object__open_file(os.fsencode(path), ctypes.byref(opts)))
    )


def bpf_object__load(obj: ObjectPtr) -> None:
    _check(_lib().bpf_object__load(obj))


def bpf_object__close(obj: ObjectPtr) -> None:
    _lib().bpf_object__close(obj)


def bpf_object__next_program(obj: ObjectPtr, prog: ProgramPtr | None) -> ProgramPtr | None:
    ptr = _lib().bpf_object__next_program(obj, prog)
    return ProgramPtr(ptr) if ptr else None


def bpf_object__next_map(obj: ObjectPtr, map_: MapPtr | None) -> MapPtr | None:
    ptr = _lib().bpf_object__next_map(obj, map_)
    return MapPtr(ptr) if ptr else None


# --- programs --------------------------------------------------------------------------------


def bpf_program__name(prog: ProgramPtr) -> str:
    return _decode(_lib().bpf_program__name(prog))


def bpf_program__section_name(prog: ProgramPtr) -> str:
    return _decode(_lib().bpf_program__section_name(prog))


def bpf_program__autoload(prog: ProgramPtr) -> bool:
    return bool(_lib().bpf_program__autoload(prog))


def bpf_program__fd(prog: ProgramPtr) -> int:
    return _check(int(_lib().bpf_program__fd(prog)))


def bpf_program__type(prog: ProgramPtr) -> int:
    return int(_lib().bpf_program__type(prog))


def bpf_program__set_log_buf(prog: ProgramPtr, buf_addr: int, size: int) -> None:
    """`buf_addr` must stay valid until bpf_object__load returns."""
    _check(_lib().bpf_program__set_log_buf(prog, buf_addr, size))


def bpf_program__set_log_level(prog: ProgramPtr, level: int) -> None:
    _check(_lib().bpf_program__set_log_level(prog, level))


# --- maps ------------------------------------------------------------------------------------


def bpf_map__name(map_: MapPtr) -> str:
    return _decode(_lib().bpf_map__name(map_))


def bpf_map__fd(map_: MapPtr) -> int:
    return _check(int(_lib().bpf_map__fd(map_)))


def bpf_map__type(map_: MapPtr) -> int:
    return int(_lib().bpf_map__type(map_))


def bpf_map__key_size(map_: MapPtr) -> int:
    return int(_lib().bpf_map__key_size(map_))


def bpf_map__value_size(map_: MapPtr) -> int:
    return int(_lib().bpf_map__value_size(map_))


def bpf_map__max_entries(map_: MapPtr) -> int:
    return int(_lib().bpf_map__max_entries(map_))


def bpf_map__is_internal(map_: MapPtr) -> bool:
    return bool(_lib().bpf_map__is_internal(map_))


def bpf_map__set_pin_path(map_: MapPtr, path: str | None) -> None:
    """None clears the path, so the map is neither reused from nor pinned to bpffs."""
    _check(_lib().bpf_map__set_pin_path(map_, os.fsencode(path) if path is not None else None))


def bpf_map__pin_path(map_: MapPtr) -> str | None:
    raw: bytes | None = _lib().bpf_map__pin_path(map_)
    return os.fsdecode(raw) if raw is not None else None


def bpf_map__set_initial_value(map_: MapPtr, data: bytes) -> None:
    """Only for mmapable internal maps (.data, .rodata, .bss) and only with their exact size."""
    _check(_lib().bpf_map__set_initial_value(map_, data, len(data)))


def bpf_map__initial_value(map_: MapPtr) -> bytes | None:
    """The map's image (before load: what will be loaded; after: the live mmap), or None."""
    size = c_size_t(0)
    ptr = _lib().bpf_map__initial_value(map_, ctypes.byref(size))
    return ctypes.string_at(ptr, size.value) if ptr else None


# --- syscall wrappers (bpf.h) ----------------------------------------------------------------


def bpf_obj_get_info_by_fd(fd: int, info: ctypes.Structure) -> int:
    """Fill `info` (zeroed by the caller); returns how many bytes the kernel wrote."""
    info_len = c_uint32(ctypes.sizeof(info))
    _check(_lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(info_len)))
    return info_len.value


def bpf_prog_test_run_opts(prog_fd: int, opts: BpfTestRunOpts) -> None:
    opts.sz = ctypes.sizeof(BpfTestRunOpts)
    _check(_lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)))


def bpf_map_update_elem(fd: int, key: CharBuf, value: CharBuf, flags: int) -> None:
    _check(_lib().bpf_map_update_elem(fd, key, value, flags))


def bpf_map_lookup_elem(fd: int, key: CharBuf, value: CharBuf) -> bool:
    """False when the key is not there (ENOENT); `value` is filled otherwise."""
    ret = int(_lib().bpf_map_lookup_elem(fd, key, value))
    if ret == -errno.ENOENT:
        return False
    _check(ret)
    return True


def bpf_map_delete_elem(fd: int, key: CharBuf) -> bool:
    """False when the key was not there (ENOENT)."""
    ret = int(_lib().bpf_map_delete_elem(fd, key))
    if ret == -errno.ENOENT:
        return False
    _check(ret)
    return True


def bpf_map_get_next_key(fd: int, key: CharBuf | None, next_key: CharBuf) -> bool:
    """False after the last key (ENOENT); `key=None` asks for the first one."""
    ret = int(_lib().bpf_map_get_next_key(fd, key, next_key))
    if ret == -errno.ENOENT:
        return False
    _check(ret)
    return True


def bpf_obj_pin(fd: int, path: str) -> None:
    _check(_lib().bpf_obj_pin(fd, os.fsencode(path)))


def bpf_obj_get(path: str) -> int:
    """A new fd for the object pinned at `path`; the caller closes it."""
    return _check(int(_lib().bpf_obj_get(os.fsencode(path))))


def bpf_map_create(
    map_type: int, name: str, key_size: int, value_size: int, max_entries: int
) -> int:
    """A new map (no pin, default flags); the caller owns the fd."""
    return _check(
        int(_lib().bpf_map_create(map_type, name.encode(), key_size, value_size, max_entries, None))
    )


def bpf_prog_get_fd_by_id(prog_id: int) -> int:
    """A new fd for the loaded program `prog_id`; the caller closes it."""
    return _check(int(_lib().bpf_prog_get_fd_by_id(prog_id)))


def bpf_map_get_fd_by_id(map_id: int) -> int:
    """A new fd for the map `map_id`; the caller closes it."""
    return _check(int(_lib().bpf_map_get_fd_by_id(map_id)))


# --- tc (clsact + cls_bpf, direct action) and XDP: netlink in the caller's netns --------------


def _tc_hook(ifindex: int, attach_point: int) -> BpfTcHook:
    return BpfTcHook(sz=ctypes.sizeof(BpfTcHook), ifindex=ifindex, attach_point=attach_point)


def _tc_opts(handle: int, priority: int, prog_fd: int = 0, flags: int = 0) -> BpfTcOpts:
    return BpfTcOpts(
        sz=ctypes.sizeof(BpfTcOpts), prog_fd=prog_fd, flags=flags, handle=handle, priority=priority
    )


def bpf_tc_hook_create(ifindex: int, attach_point: int) -> bool:
    """Add the clsact qdisc; False when the device already has one (EEXIST)."""
    ret = int(_lib().bpf_tc_hook_create(ctypes.byref(_tc_hook(ifindex, attach_point))))
    if ret == -errno.EEXIST:
        return False
    _check(ret)
    return True


def bpf_tc_hook_destroy(ifindex: int) -> None:
    """Delete the device's clsact qdisc, and every filter on it."""
    hook = _tc_hook(ifindex, BPF_TC_INGRESS | BPF_TC_EGRESS)
    _check(_lib().bpf_tc_hook_destroy(ctypes.byref(hook)))


def bpf_tc_attach(
    ifindex: int, attach_point: int, prog_fd: int, handle: int, priority: int, *, replace: bool
) -> int:
    """Attach (or with `replace`, atomically swap) a filter; returns the attached program id."""
    opts = _tc_opts(handle, priority, prog_fd, BPF_TC_F_REPLACE if replace else 0)
    hook = _tc_hook(ifindex, attach_point)
    _check(_lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)))
    return int(opts.prog_id)


def bpf_tc_detach(ifindex: int, attach_point: int, handle: int, priority: int) -> bool:
    """Remove the filter; False when it is not there (ENOENT)."""
    hook = _tc_hook(ifindex, attach_point)
    ret = int(_lib().bpf_tc_detach(ctypes.byref(hook), ctypes.byref(_tc_opts(handle, priority))))
    if ret == -errno.ENOENT:
        return False
    _check(ret)
    return True


def bpf_tc_query(ifindex: int, attach_point: int, handle: int, priority: int) -> int | None:
    """The program id of the filter, or None when there is none (ENOENT; also no clsact)."""
    hook = _tc_hook(ifindex, attach_point)
    opts = _tc_opts(handle, priority)
    ret = int(_lib().bpf_tc_query(ctypes.byref(hook), ctypes.byref(opts)))
    if ret in (-errno.ENOENT, -errno.EINVAL):  # EINVAL: the device has no clsact qdisc
        return None
    _check(ret)
    return int(opts.prog_id)


def bpf_xdp_attach(ifindex: int, prog_fd: int, flags: int, old_prog_fd: int = -1) -> None:
    """Attach (flags: XDP_FLAGS_*; with XDP_FLAGS_REPLACE, only if `old_prog_fd` is attached)."""
    opts = BpfXdpAttachOpts(sz=ctypes.sizeof(BpfXdpAttachOpts), old_prog_fd=old_prog_fd)
    _check(_lib().bpf_xdp_attach(ifindex, prog_fd, flags, ctypes.byref(opts)))


def bpf_xdp_detach(ifindex: int, flags: int) -> None:
    _check(_lib().bpf_xdp_detach(ifindex, flags, None))


def bpf_xdp_query_id(ifindex: int, flags: int) -> int:
    """The id of the XDP program attached in the mode `flags` names (0: none)."""
    prog_id = c_uint32(0)
    _check(_lib().bpf_xdp_query_id(ifindex, flags, ctypes.byref(prog_id)))
    return prog_id.value


# --- BPF links (cgroup hooks) -------------------------------------------------------------------


def bpf_link_create(prog_fd: int, target_fd: int, attach_type: int) -> int:
    """A new link of the program to the target (a cgroup directory's fd); returns its fd."""
    return _check(int(_lib().bpf_link_create(prog_fd, target_fd, attach_type, None)))


def bpf_link_update(link_fd: int, new_prog_fd: int) -> None:
    """Atomically replace the link's program (the hook is never without one)."""
    _check(_lib().bpf_link_update(link_fd, new_prog_fd, None))


def bpf_link_detach(link_fd: int) -> None:
    """Detach the link from its hook now (the link object stays until its last reference)."""
    _check(_lib().bpf_link_detach(link_fd))


# -- BTF (struct btf *: an opaque handle) ---------------------------------------------------


def btf__load_vmlinux_btf() -> int:
    """The running kernel's BTF (/sys/kernel/btf/vmlinux); free it with btf__free."""
    return _check_ptr(_lib().btf__load_vmlinux_btf())


def btf__free(btf: int) -> None:
    _lib().btf__free(btf)


def btf__find_by_name_kind(btf: int, name: str, kind: int) -> int | None:
    """The type id of `name` of BTF kind `kind`; None when there is none."""
    type_id: int = _lib().btf__find_by_name_kind(btf, name.encode(), kind)
    return type_id if type_id > 0 else None


def btf__type_by_id(btf: int, type_id: int) -> int:
    """The address of the type's `struct btf_type` (its members follow it)."""
    return _check_ptr(_lib().btf__type_by_id(btf, type_id))


def btf__name_by_offset(btf: int, offset: int) -> str:
    return _decode(_lib().btf__name_by_offset(btf, offset))


class RingBuffer:
    """A BPF ring buffer map (by fd) read with libbpf's ring_buffer: `poll` calls
    `on_record(bytes)` for each record that arrives. The fd stays the caller's."""

    def __init__(self, map_fd: int, on_record: Any) -> None:
        def sample(_ctx: int | None, data: int | None, size: int) -> int:
            on_record(ctypes.string_at(data, size) if data else b"")
            return 0

        self._callback = RING_SAMPLE_FN(sample)  # kept alive as long as the ring
        self._rb = _check_ptr(_lib().ring_buffer__new(map_fd, self._callback, None, None))

    def poll(self, timeout_ms: int) -> int:
        """Records consumed (0 when the timeout passed first); EINTR counts as 0."""
        ret = int(_lib().ring_buffer__poll(self._rb, timeout_ms))
        if ret == -errno.EINTR:
            return 0
        return _check(ret)

    def close(self) -> None:
        if self._rb:
            _lib().ring_buffer__free(self._rb)
            self._rb = 0

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The running kernel's BTF (/sys/kernel/btf/vmlinux), read through libbpf: enum names
and struct member offsets.

`bpfgen trace` needs both from the kernel it runs on, not from headers: the names of
`enum skb_drop_reason` (a kernel's drop reasons change from release to release), and
where `struct sk_buff` and its neighbours keep the fields the tracer reads (its C reads
them at these offsets, so the header tree bcc compiles it with need not match the
kernel).

    with KernelBtf() as btf:
        btf.enum("skb_drop_reason")              # {2: "SKB_DROP_REASON_NOT_SPECIFIED", ...}
        btf.offset("sk_buff", "head")            # bytes; anonymous unions are looked into
        btf.offset("sock", "__sk_common.skc_net.net")
"""

from __future__ import annotations

import ctypes
import errno
from ctypes import c_int32, c_uint32

from . import libbpf
from .errors import RuntimeOpError

# BTF kinds (linux/btf.h)
_STRUCT, _UNION, _ENUM, _TYPEDEF, _VOLATILE, _CONST, _RESTRICT = 4, 5, 6, 8, 9, 10, 11
_TYPE_TAG, _ENUM64 = 18, 19
_MODIFIERS = (_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG)


class _Type(ctypes.Structure):
    """struct btf_type: the members (btf_member, btf_enum, btf_enum64) follow it."""

    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class _Member(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("type", c_uint32), ("offset", c_uint32)]


class _Enum(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("val", c_int32)]


class _Enum64(ctypes.Structure):
    _fields_ = [("name_off", c_uint32), ("val_lo32", c_uint32), ("val_hi32", c_uint32)]


class KernelBtf:
    """vmlinux BTF, loaded once; close() (or `with`) frees it."""

    def __init__(self) -> None:
        try:
            self._btf: int | None = libbpf.btf__load_vmlinux_btf()
        except OSError as exc:
            raise RuntimeOpError(
                "read the kernel's BTF (/sys/kernel/btf/vmlinux)",
                exc.errno or errno.ENOENT,
                "bpfgen trace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
            ) from exc

    def close(self) -> None:
        if self._btf is not None:
            libbpf.btf__free(self._btf)
            self._btf = None

    def __enter__(self) -> KernelBtf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handle(self) -> int:
        if self._btf is None:
            raise ValueError("the kernel's BTF is closed")
        return self._btf

    def _type(self, type_id: int) -> _Type:
        try:
            return _Type.from_address(libbpf.btf__type_by_id(self._handle(), type_id))
        except OSError:
            raise LookupError(f"no BTF type {type_id}") from None

    def _name(self, off: int) -> str:
        return libbpf.btf__name_by_offset(self._handle(), off)

    def _find(self, name: str, kinds: tuple[int, ...]) -> _Type:
        for kind in kinds:
            type_id = libbpf.btf__find_by_name_kind(self._handle(), name, kind)
            if type_id is not None:
                return self._type(type_id)
        raise LookupError(f"the kernel's BTF has no {name}")

    def _resolve(self, t: _Type) -> _Type:
        """Through typedefs and qualifiers to the type itself."""
        for _ in range(32):  # a chain of modifiers is short; a loop would be corrupt BTF
            if (t.info >> 24) & 0x1F not in _MODIFIERS:
                return t
            t = self._type(t.size_or_type)
        raise LookupError("BTF modifier chain too long")

    def enum(self, name: str) -> dict[int, str]:
        """The values of `enum name` (enum or enum64), value -> name."""
        t = self._find(name, (_ENUM, _ENUM64))
        kind, vlen = (t.info >> 24) & 0x1F, t.info & 0xFFFF
        base = ctypes.addressof(t) + ctypes.sizeof(_Type)
        out: dict[int, str] = {}
        for i in range(vlen):
            if kind == _ENUM:
                e = _Enum.from_address(base + i * ctypes.sizeof(_Enum))
                out[e.val] = self._name(e.name_off)
            else:
                e64 = _Enum64.from_address(base + i * ctypes.sizeof(_Enum64))
                out[(e64.val_hi32 << 32) | e64.val_lo32] = self._name(e64.name_off)
        return out

    def offset(self, struct: str, path: str) -> int:
        """Byte offset of a member (dotted path) in `struct name`; members of anonymous
        structs and unions are found as the compiler finds them."""
        t = self._find(struct, (_STRUCT,))
        total = 0
        for part in path.split("."):
            found = self._member(t, part)
            if found is None:
                raise LookupError(f"struct {struct} has no member {path} in the kernel's BTF")
            bits, t = found
            total += bits
        if total % 8:
            raise LookupError(f"{struct}.{path} is a bit field")
        return total // 8

    def _member(self, t: _Type, name: str) -> tuple[int, _Type] | None:
        """(bit offset, type) of member `name` of struct/union `t`, looking into
        anonymous members."""
        t = self._resolve(t)
        kind, vlen, kflag = (t.info >> 24) & 0x1F, t.info & 0xFFFF, t.info >> 31
        if kind not in (_STRUCT, _UNION):
            return None
        base = ctypes.addressof(t) + ctypes.sizeof(_Type)
        for i in range(vlen):
            m = _Member.from_address(base + i * ctypes.sizeof(_Member))
            bits = m.offset & 0xFFFFFF if kflag else m.offset
            member_name = self._name(m.name_off)
            if member_name == name:
                return bits, self._type(m.type)
            if not member_name:
                inner = self._member(self._type(m.type), name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None

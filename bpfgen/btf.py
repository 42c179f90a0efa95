"""A small reader of the .BTF section of a BPF object (little-endian).

Enough to recover what inspect and the layout tests need: BTF-defined maps
(`__uint(type, ...)` is `int (*type)[N]`, `__type(key, T)` is `T *key`),
struct layouts and enum values. Format: linux/Documentation/bpf/btf.rst.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


@dataclass
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int
    vlen: int
    members: list[tuple[str, int, int]] = field(default_factory=list)  # name, type, bit offset
    array: tuple[int, int] = (0, 0)  # elem type, nelems
    enum: dict[str, int] = field(default_factory=dict)
    secinfo: list[tuple[int, int, int]] = field(default_factory=list)  # type, offset, size
    params: list[tuple[str, int]] = field(default_factory=list)  # FUNC_PROTO: name, type


@dataclass(frozen=True)
class MapDef:
    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    pinning: int


class Btf:
    def __init__(self, data: bytes) -> None:
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != 0xEB9F:
            raise ValueError("not little-endian BTF")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        base = hdr_len
        self._strings = data[base + str_off : base + str_off + str_len]
        self.types: dict[int, BtfType] = {}
        self._parse(data[base + type_off : base + type_off + type_len])

    def _str(self, off: int) -> str:
        end = self._strings.index(b"\0", off)
        return self._strings[off:end].decode()

    def _parse(self, buf: bytes) -> None:
        pos, tid = 0, 1
        while pos < len(buf):
            name_off, info, sot = struct.unpack_from("<III", buf, pos)
            pos += 12
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            t = BtfType(tid, kind, self._str(name_off), sot, vlen)
            if kind in (KIND_INT, KIND_VAR, KIND_DECL_TAG):
                pos += 4
            elif kind == KIND_ARRAY:
                elem, _index, n = struct.unpack_from("<III", buf, pos)
                t.array = (elem, n)
                pos += 12
            elif kind in (KIND_STRUCT, KIND_UNION):
                bitfield = info >> 31
                for _ in range(vlen):
                    m_name, m_type, m_off = struct.unpack_from("<III", buf, pos)
                    t.members.append(
                        (self._str(m_name), m_type, m_off & 0xFFFFFF if bitfield else m_off)
                    )
                    pos += 12
            elif kind == KIND_ENUM:
                for _ in range(vlen):
                    e_name, e_val = struct.unpack_from("<Ii", buf, pos)
                    t.enum[self._str(e_name)] = e_val
                    pos += 8
            elif kind == KIND_ENUM64:
                for _ in range(vlen):
                    e_name, lo, hi = struct.unpack_from("<III", buf, pos)
                    t.enum[self._str(e_name)] = (hi << 32) | lo
                    pos += 12
            elif kind == KIND_FUNC_PROTO:
                for _ in range(vlen):
                    p_name, p_type = struct.unpack_from("<II", buf, pos)
                    t.params.append((self._str(p_name), p_type))
                    pos += 8
            elif kind == KIND_DATASEC:
                for _ in range(vlen):
                    t.secinfo.append(struct.unpack_from("<III", buf, pos))
                    pos += 12
            self.types[tid] = t
            tid += 1

    def resolve(self, tid: int) -> BtfType:
        t = self.types[tid]
        while t.kind in _MODIFIERS:
            t = self.types[t.size_or_type]
        return t

    def size(self, tid: int) -> int:
        t = self.resolve(tid)
        if t.kind == KIND_ARRAY:
            return self.size(t.array[0]) * t.array[1]
        if t.kind == KIND_PTR:
            return 8
        return t.size_or_type

    def named(self, kind: int, name: str) -> BtfType:
        for t in self.types.values():
            if t.kind == kind and t.name == name:
                return t
        raise KeyError(name)

    def struct_layout(self, name: str) -> tuple[int, list[tuple[str, int, int]]]:
        """(size, [(member, byte offset, byte size)]) of `struct name`."""
        t = self.named(KIND_STRUCT, name)
        return t.size_or_type, [(m, off // 8, self.size(mt)) for m, mt, off in t.members]

    def maps(self) -> list[MapDef]:
        """The BTF-defined maps of the .maps section."""
        try:
            sec = self.named(KIND_DATASEC, ".maps")
        except KeyError:
            return []
        out = []
        for var_id, _off, _size in sec.secinfo:
            var = self.types[var_id]
            fields: dict[str, int] = {}
            for m, mt, _ in self.resolve(var.size_or_type).members:
                target = self.resolve(self.resolve(mt).size_or_type)  # what the pointer points to
                fields[m] = target.array[1] if target.kind == KIND_ARRAY else self.size(target.id)
            out.append(
                MapDef(
                    name=var.name,
                    type=fields.get("type", 0),
                    key_size=fields.get("key", fields.get("key_size", 0)),
                    value_size=fields.get("value", fields.get("value_size", 0)),
                    max_entries=fields.get("max_entries", 0),
                    pinning=fields.get("pinning", 0),
                )
            )
        return out

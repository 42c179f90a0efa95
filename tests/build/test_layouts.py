"""The ctypes mirrors of bpfgen_runtime.contract.layouts match the compiled objects' BTF.

Every program of both modes is compiled (ipvs: tc and XDP; bpf: svc_in, svc_xdp and
the socketLB programs, Maglev tables in a map), and every struct that a map holds as
its key or value, or that a global holds (bpfgen_cfg), or that a test run passes as
the program's context, must have a mirror of the same size, field names and offsets.
A struct added to the C for a map without a mirror fails here.
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfgen import btf
from bpfgen.compiler import compile_build
from bpfgen.inspect import read_btf
from bpfgen.plan import COUNTER_NAMES
from bpfgen_runtime.contract import layouts

MAGLEV_SIZE = 251
BTF_FUNC_GLOBAL = 1  # a FUNC's linkage (its vlen): the programs are global, helpers static


@pytest.fixture(scope="module")
def objects(object_files: dict[str, Path]) -> dict[str, btf.Btf]:
    """Object file name -> its BTF."""
    return {name: read_btf(path) for name, path in object_files.items()}


@pytest.fixture(scope="module")
def object_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Object file name -> its path, for generic builds of both modes with every program."""
    from tests.bpf_inputs import node_config, services
    from tests.conftest import EXAMPLES

    root = tmp_path_factory.mktemp("layouts")
    ipvs_node = root / "ipvs-node.yaml"
    ipvs_node.write_text(
        (EXAMPLES / "node.yaml")
        .read_text()
        .replace("{name: eth0, role: uplink, hook: tc}", "{name: eth0, role: uplink, hook: xdp}")
    )
    compile_build(
        ipvs_node, [EXAMPLES / "services.yaml"], root / "ipvs", build="generic", verify=False
    )
    bpf_node, bpf_services = root / "bpf-node.json", root / "bpf-services.json"
    bpf_node.write_text(
        json.dumps(node_config("maglev", MAGLEV_SIZE, uplink_hook="xdp", socket_lb=True))
    )
    bpf_services.write_text(json.dumps(services()))
    compile_build(bpf_node, [bpf_services], root / "bpf", build="generic", verify=False)
    found = {o.name: o for d in ("ipvs", "bpf") for o in sorted((root / d).glob("*.o"))}
    assert {"egress.bpf.o", "ingress.bpf.o", "ingress_xdp.bpf.o", "svc_in.bpf.o",
            "svc_xdp.bpf.o", "sock.bpf.o"} <= found.keys()  # fmt: skip
    return found


def _mirrored() -> dict[str, type[ctypes.Structure]]:
    return {**layouts.MIRRORS, "bpfgen_maglev_row": layouts.maglev_row(MAGLEV_SIZE)}


def _layout(struct: type[ctypes.Structure]) -> list[tuple[str, int, int]]:
    """(field, offset, size) of every field, a base class's first."""
    fields: list[tuple[str, int, int]] = []
    for cls in reversed(struct.__mro__):
        for name, *_ in cls.__dict__.get("_fields_", []):
            fields.append((name, getattr(struct, name).offset, getattr(struct, name).size))
    return fields


def _struct_of(b: btf.Btf, tid: int) -> btf.BtfType | None:
    t = b.resolve(tid)
    while t.kind == btf.KIND_ARRAY:  # .rodata arrays of struct bpfgen_backend
        t = b.resolve(t.array[0])
    return t if t.kind == btf.KIND_STRUCT and t.name else None


def _exchanged(b: btf.Btf) -> set[str]:
    """The named structs a map holds, a global holds, or a program takes as its context."""
    out: set[str] = set()
    maps = [t for t in b.types.values() if t.kind == btf.KIND_DATASEC and t.name == ".maps"]
    for var_id, _off, _size in maps[0].secinfo if maps else []:
        for name, member_type, _ in b.resolve(b.types[var_id].size_or_type).members:
            if name in ("key", "value"):  # __type(key, T): a T *
                s = _struct_of(b, b.resolve(member_type).size_or_type)
                if s is not None:
                    out.add(s.name)
    for sec in (t for t in b.types.values() if t.kind == btf.KIND_DATASEC and t.name != ".maps"):
        for var_id, _off, _size in sec.secinfo:
            var = b.types[var_id]
            s = _struct_of(b, var.size_or_type) if var.kind == btf.KIND_VAR else None
            if s is not None:
                out.add(s.name)
    for t in b.types.values():
        if t.kind == btf.KIND_FUNC and t.vlen == BTF_FUNC_GLOBAL:  # a program: its context
            params = b.types[t.size_or_type].params
            s = _struct_of(b, b.resolve(params[0][1]).size_or_type) if params else None
            if s is not None:
                out.add(s.name)
    return out


def _has_struct(b: btf.Btf, name: str) -> bool:
    return any(t.kind == btf.KIND_STRUCT and t.name == name for t in b.types.values())


#: Exchanged structs that no Python code builds or reads: the socketLB programs' context
#: (the kernel fills it on connect/sendmsg; no test run passes one).
NOT_MIRRORED = {"bpf_sock_addr"}


def test_every_exchanged_struct_has_a_mirror(objects: dict[str, btf.Btf]) -> None:
    missing = {
        f"{obj}: struct {name}"
        for obj, b in objects.items()
        for name in _exchanged(b) - _mirrored().keys() - NOT_MIRRORED
    }
    assert not missing, "add a ctypes mirror to bpfgen_runtime/contract/layouts.py"


def test_every_mirror_is_in_an_object(objects: dict[str, btf.Btf]) -> None:
    seen = {name for b in objects.values() for name in _exchanged(b)}
    assert _mirrored().keys() - seen == set(), "a mirror of a struct no object exchanges"


@pytest.mark.parametrize("name", sorted(_mirrored()))
def test_struct_layout_matches_btf(objects: dict[str, btf.Btf], name: str) -> None:
    """Each mirror against every object that has the struct: size, names, offsets."""
    mirror = _mirrored()[name]
    holders = {obj: b for obj, b in objects.items() if _has_struct(b, name)}
    assert holders, f"struct {name} is in no object"
    for obj, b in holders.items():
        size, members = b.struct_layout(name)
        if name == "__sk_buff":  # a prefix (the fields up to the mark), and the whole size
            assert size == layouts.SK_BUFF_SIZE, obj
            members = members[: len(_layout(mirror))]
        else:
            assert ctypes.sizeof(mirror) == size, obj
        assert _layout(mirror) == members, obj


def test_counter_map_has_one_slot_per_counter(objects: dict[str, btf.Btf]) -> None:
    maps = {m.name: m for m in objects["egress.bpf.o"].maps()}
    assert maps["bpfgen_counters"].max_entries == len(COUNTER_NAMES)


def _dwarf_struct(path: Path, name: str) -> tuple[int, list[tuple[str, int]]] | None:
    """A struct's size and (member, offset) list from an object's DWARF (-g), None if absent."""
    with path.open("rb") as f:
        dwarf = ELFFile(f).get_dwarf_info()
        for cu in dwarf.iter_CUs():
            for die in cu.iter_DIEs():
                named = die.attributes.get("DW_AT_name")
                if die.tag != "DW_TAG_structure_type" or named is None:
                    continue
                if named.value.decode() != name or "DW_AT_byte_size" not in die.attributes:
                    continue
                members = [
                    (m.attributes["DW_AT_name"].value.decode(),
                     m.attributes["DW_AT_data_member_location"].value)
                    for m in die.iter_children() if m.tag == "DW_TAG_member"
                ]  # fmt: skip
                return die.attributes["DW_AT_byte_size"].value, members
    return None


@pytest.mark.parametrize("ring", sorted(layouts.RING_RECORDS))
def test_ring_records_match_dwarf(
    objects: dict[str, btf.Btf], object_files: dict[str, Path], ring: str
) -> None:
    """A ring buffer's record (no BTF type: a reserved pointer's) against every object
    that writes it: size, names and offsets from DWARF. Every object has the ring; all
    but sock.bpf.o write records (the socket hooks refuse, they never drop)."""
    struct, mirror = layouts.RING_RECORDS[ring]
    assert all(ring in {m.name for m in b.maps()} for b in objects.values())
    want = (ctypes.sizeof(mirror), [(n, o) for n, o, _ in _layout(mirror)])
    found = {name: _dwarf_struct(path, struct) for name, path in object_files.items()}
    writers = {name for name, layout in found.items() if layout is not None}
    assert writers == set(objects) - {"sock.bpf.o"}
    for name in writers:
        assert found[name] == want, name

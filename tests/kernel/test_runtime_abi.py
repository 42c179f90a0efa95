"""The ctypes structs in bpfgen_runtime.libbpf match the C headers on this machine.

A small C program, generated from the ctypes field lists, prints sizeof and
offsetof as the compiler sees them in <bpf/libbpf.h>, <bpf/bpf.h> and
<linux/bpf.h>; every named field must sit at the same offset with the same size.
Every ctypes struct of the module is here (a test fails on one that is not); a
mirror of a struct's head only (the kernel and libbpf take a shorter struct from an
older caller) may be shorter than the header's.

(The structs the compiled programs exchange with Python are checked against the
objects' BTF: tests/build/test_layouts.py.)
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import pytest

from bpfgen_runtime import libbpf

STRUCTS: dict[str, type[ctypes.Structure]] = {
    "bpf_object_open_opts": libbpf.BpfObjectOpenOpts,
    "bpf_test_run_opts": libbpf.BpfTestRunOpts,
    "bpf_prog_info": libbpf.BpfProgInfo,
    "bpf_map_info": libbpf.BpfMapInfo,
    "bpf_tc_hook": libbpf.BpfTcHook,
    "bpf_tc_opts": libbpf.BpfTcOpts,
    "bpf_xdp_attach_opts": libbpf.BpfXdpAttachOpts,
    "bpf_link_info": libbpf.BpfLinkInfo,
}
#: Mirrors of a struct's head: sizeof may be less than the header's.
HEADS = {"bpf_map_info", "bpf_xdp_attach_opts", "bpf_link_info"}
#: A field the mirror flattens out of a union: its C member designator.
MEMBERS = {
    ("bpf_link_info", "cgroup_id"): "cgroup.cgroup_id",
    ("bpf_link_info", "attach_type"): "cgroup.attach_type",
}


def test_every_ctypes_struct_of_libbpf_is_checked() -> None:
    defined = {
        v for v in vars(libbpf).values() if isinstance(v, type) and issubclass(v, ctypes.Structure)
    }
    assert defined == set(STRUCTS.values())


def checked_fields(struct: type[ctypes.Structure]) -> list[str]:
    """Named, non-bitfield fields: C has no offsetof for the rest."""
    return [f[0] for f in struct._fields_ if not f[0].startswith("_") and len(f) == 2]


def c_layout_program() -> str:
    lines = [
        "#include <stddef.h>",
        "#include <stdio.h>",
        "#include <bpf/bpf.h>",
        "#include <bpf/libbpf.h>",
        "#include <linux/bpf.h>",
        '#define FIELD(s, f) printf(#s " " #f " %zu %zu\\n", '
        "offsetof(struct s, f), sizeof(((struct s *)0)->f))",
        "int main(void)",
        "{",
    ]
    for c_name, struct in STRUCTS.items():
        lines.append(f'\tprintf("{c_name} sizeof 0 %zu\\n", sizeof(struct {c_name}));')
        lines += [
            f"\tFIELD({c_name}, {MEMBERS.get((c_name, name), name)});"
            for name in checked_fields(struct)
        ]
    return "\n".join([*lines, "\treturn 0;", "}", ""])


def python_layout() -> dict[tuple[str, str], tuple[int, int]]:
    layout = {}
    for c_name, struct in STRUCTS.items():
        layout[(c_name, "sizeof")] = (0, ctypes.sizeof(struct))
        for name in checked_fields(struct):
            descriptor = getattr(struct, name)
            layout[(c_name, name)] = (descriptor.offset, descriptor.size)
    return layout


def test_struct_layouts_match_the_headers(clang: str, tmp_path: Path) -> None:
    source = tmp_path / "layout.c"
    source.write_text(c_layout_program())
    binary = tmp_path / "layout"
    proc = subprocess.run(
        [clang, "-Wall", "-o", str(binary), str(source)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.fail(f"compiling {source} failed (libbpf-dev installed?):\n{proc.stderr}")
    output = subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout
    c_layout = {}
    for line in output.splitlines():
        struct, name, offset, size = line.split()
        c_layout[(struct, name.rpartition(".")[2])] = (int(offset), int(size))
    py = python_layout()
    for c_name in HEADS:  # the mirror no longer than the header's struct
        assert py[(c_name, "sizeof")][1] <= c_layout[(c_name, "sizeof")][1], c_name
        py[(c_name, "sizeof")] = c_layout[(c_name, "sizeof")]
    assert py == c_layout

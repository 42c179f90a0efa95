"""Python mirrors of the C structs match the compiled object's BTF."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from bpfgen import layouts
from bpfgen.compiler import compile_build
from bpfgen.inspect import read_btf
from bpfgen.plan import COUNTER_NAMES


@pytest.fixture(scope="module")
def generic_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import EXAMPLES

    out = tmp_path_factory.mktemp("layouts") / "g"
    compile_build(
        EXAMPLES / "node.yaml", [EXAMPLES / "services.yaml"], out, generic=True, verify=False
    )
    return out


@pytest.mark.parametrize("name", sorted(layouts.MIRRORS))
def test_struct_layout_matches_btf(generic_build: Path, name: str) -> None:
    mirror = layouts.MIRRORS[name]
    size, members = read_btf(generic_build / "egress.bpf.o").struct_layout(name)
    assert ctypes.sizeof(mirror) == size
    py = [
        (f, getattr(mirror, f).offset, getattr(mirror, f).size)
        for f, *_ in mirror._fields_  # type: ignore[misc]
    ]
    assert py == members


def test_counter_map_has_one_slot_per_counter(generic_build: Path) -> None:
    maps = {m.name: m for m in read_btf(generic_build / "egress.bpf.o").maps()}
    assert maps["bpfgen_counters"].max_entries == len(COUNTER_NAMES)

"""Stage 5: read compiled objects back (pyelftools + BTF) and hold them to the plan.

`inspect_object` says what an object contains; `check_against_plan` fails the
build when a planned program or map is missing or differs in any size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from bpfgen.btf import Btf, MapDef
from bpfgen.errors import InspectError
from bpfgen.plan import Plan

BPF_INSN_SIZE = 8
CONFIG_GLOBAL = "bpfgen_cfg"  # the generic and frozen builds' struct bpfgen_config


@dataclass(frozen=True)
class ProgramInfo:
    name: str  # the function symbol
    section: str
    insns: int  # instructions in the object, before relocation


@dataclass(frozen=True)
class GlobalInfo:
    """A global variable: libbpf turns its section into an internal map."""

    name: str
    section: str  # ".bss", ".data", ".rodata", ...
    size: int
    section_size: int  # the whole section: the internal map's value size


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    programs: tuple[ProgramInfo, ...]
    subprograms: tuple[ProgramInfo, ...]  # .text functions (bpf_loop callbacks)
    maps: tuple[MapDef, ...]
    sections: tuple[str, ...]
    globals: tuple[GlobalInfo, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": self.path,
            "sections": list(self.sections),
            "programs": [
                {"name": p.name, "section": p.section, "insns": p.insns} for p in self.programs
            ],
            "subprograms": [{"name": p.name, "insns": p.insns} for p in self.subprograms],
            "globals": [
                {"name": g.name, "section": g.section, "size": g.size} for g in self.globals
            ],
            "maps": [
                {
                    "name": m.name,
                    "type": m.type,
                    "key_size": m.key_size,
                    "value_size": m.value_size,
                    "max_entries": m.max_entries,
                    "pinned": bool(m.pinning),
                }
                for m in self.maps
            ],
        }


def read_btf(path: Path) -> Btf:
    with path.open("rb") as f:
        elf = ELFFile(f)
        sec = elf.get_section_by_name(".BTF")
        if sec is None:
            raise InspectError(f"{path}: no .BTF section (was it built with -g?)")
        return Btf(sec.data())


def inspect_object(path: Path) -> ObjectInfo:
    with path.open("rb") as f:
        elf = ELFFile(f)
        if elf["e_machine"] != "EM_BPF":
            raise InspectError(f"{path}: not a BPF object (machine {elf['e_machine']})")
        code = {
            i: s.name
            for i, s in enumerate(elf.iter_sections())
            if s["sh_flags"] & SH_FLAGS.SHF_EXECINSTR and s["sh_size"] > 0
        }
        progs: list[ProgramInfo] = []
        subs: list[ProgramInfo] = []
        variables: list[GlobalInfo] = []
        symtab = elf.get_section_by_name(".symtab")
        symbols = symtab.iter_symbols() if isinstance(symtab, SymbolTableSection) else iter(())
        for sym in symbols:
            if sym["st_info"]["type"] == "STT_OBJECT" and isinstance(sym["st_shndx"], int):
                sec = elf.get_section(sym["st_shndx"])
                if sec.name in (".bss", ".data", ".rodata"):
                    variables.append(GlobalInfo(sym.name, sec.name, sym["st_size"], sec["sh_size"]))
                continue
            if sym["st_info"]["type"] != "STT_FUNC" or sym["st_shndx"] not in code:
                continue
            section = code[sym["st_shndx"]]
            info = ProgramInfo(sym.name, section, sym["st_size"] // BPF_INSN_SIZE)
            (subs if section == ".text" else progs).append(info)
        sections = tuple(s.name for s in elf.iter_sections() if s.name)
        btf_sec = elf.get_section_by_name(".BTF")
        maps = tuple(Btf(btf_sec.data()).maps()) if btf_sec is not None else ()
    return ObjectInfo(
        str(path),
        tuple(sorted(progs, key=lambda p: p.name)),
        tuple(sorted(subs, key=lambda p: p.name)),
        maps,
        sections,
        tuple(sorted(variables, key=lambda g: g.name)),
    )


def _config_problems(plan: Plan, obj: str, info: ObjectInfo) -> list[str]:
    """bpfgen_cfg where the build kind puts it, sized as the runtime's initial value.

    Specialized: no such global. Generic: in .bss. Frozen: in .rodata, and alone
    there, since the runtime's image (manifest runtime_config) is the whole map.
    """
    found = [g for g in info.globals if g.name == CONFIG_GLOBAL]
    want = plan.config_section
    if want is None:
        return [f"{obj}: {plan.build} build has a {CONFIG_GLOBAL} global"] if found else []
    if not found:
        return [f"{obj}: {plan.build} build has no {CONFIG_GLOBAL} global"]
    g = found[0]
    size = len(plan.runtime_config or b"")
    problems = []
    if g.section != want:
        problems.append(f"{obj}: {CONFIG_GLOBAL} in {g.section}, {plan.build} build wants {want}")
    if g.size != size:
        problems.append(f"{obj}: {CONFIG_GLOBAL} is {g.size} bytes, the runtime config {size}")
    if g.section_size != g.size:
        problems.append(
            f"{obj}: {g.section} is {g.section_size} bytes, more than {CONFIG_GLOBAL} "
            f"({g.size}): the runtime's initial value would not cover it"
        )
    return problems


def check_against_plan(plan: Plan, objects: dict[str, ObjectInfo]) -> None:
    """Every planned program and map is in its object with the planned sizes."""
    problems: list[str] = []
    for prog in plan.programs:
        info = objects.get(prog.object)
        if info is None:
            problems.append(f"{prog.object}: missing")
            continue
        found = {p.name: p for p in info.programs}
        p = found.get(prog.function)
        if p is None:
            problems.append(f"{prog.object}: no program {prog.function} (found {sorted(found)})")
        elif p.section != prog.section:
            problems.append(
                f"{prog.object}: {prog.function} in section {p.section}, planned {prog.section}"
            )
        maps = {m.name: m for m in info.maps}
        for mp in plan.maps:
            m = maps.get(mp.name)
            if m is None:
                problems.append(f"{prog.object}: map {mp.name} missing")
                continue
            got = (m.type, m.key_size, m.value_size, m.max_entries, bool(m.pinning))
            want = (mp.type_id, mp.key_size, mp.value_size, mp.max_entries, mp.pinned)
            if got != want:
                problems.append(
                    f"{prog.object}: map {mp.name} is (type, key, value, max_entries, pinned)="
                    f"{got}, planned {want}"
                )
        problems += _config_problems(plan, prog.object, info)
        extra = set(maps) - {mp.name for mp in plan.maps}
        if extra:
            problems.append(f"{prog.object}: unplanned maps {sorted(extra)}")
    if problems:
        raise InspectError(
            "compiled objects do not match the plan (a bpfgen bug):\n  " + "\n  ".join(problems)
        )

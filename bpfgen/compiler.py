"""The pipeline: config -> plan -> render -> build -> inspect -> verify -> build dir.

Output is written to a sibling temporary directory and swapped in only when
every stage succeeded, so a failed compile leaves an existing build directory
exactly as it was.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfgen import __version__
from bpfgen.build import ObjectBuild, compile_objects, toolchain
from bpfgen.config import load_inputs
from bpfgen.errors import VerifierError
from bpfgen.inspect import ObjectInfo, check_against_plan, inspect_object
from bpfgen.plan import COUNTER_NAMES, Plan, make_plan
from bpfgen.render import Rendered, render

MANIFEST_SCHEMA = 1
PIN_ROOT = "/sys/fs/bpf/bpfgen"  # the runtime adds /<netns or root>/

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Verified:
    program: str
    verified_insns: int  # instructions the verifier processed
    xlated_insns: int  # instructions after the verifier's rewrites


@dataclass(frozen=True)
class CompileResult:
    out: Path
    plan: Plan
    manifest: dict[str, Any]
    objects: tuple[ObjectBuild, ...]

    @property
    def clang_runs(self) -> int:
        return sum(not o.cached for o in self.objects)


def _quiet(_: str) -> None:
    pass


def verify_objects(build_dir: Path, plan: Plan, log_dir: Path) -> dict[str, Verified]:
    """Load every object into the running kernel's verifier, then unload it."""
    from bpfgen_runtime.errors import RuntimeOpError, VerifierRejected
    from bpfgen_runtime.loader import verify_object

    out: dict[str, Verified] = {}
    for prog in plan.programs:
        try:
            records = verify_object(build_dir / prog.object, log_dir=log_dir)
        except VerifierRejected as e:
            raise VerifierError(str(e)) from e
        except RuntimeOpError as e:
            raise VerifierError(
                f"could not load {prog.object} into the kernel to verify it: {e} "
                "(bpfgen compile needs root and a kernel with BPF; --no-verify skips this)"
            ) from e
        for r in records:
            out[r.name] = Verified(r.name, r.verified_insns, r.xlated_insns)
    return out


def build_manifest(
    plan: Plan,
    rendered: Rendered,
    objects: dict[str, ObjectInfo],
    verified: dict[str, Verified] | None,
    inputs_desc: dict[str, Any],
) -> dict[str, Any]:
    tc = toolchain()
    programs = []
    for p in plan.programs:
        info = objects[p.object]
        prog_insns = {i.name: i.insns for i in info.programs}
        v = verified.get(p.function) if verified else None
        programs.append(
            {
                "name": p.name,
                "object": p.object,
                "source": p.source,
                "function": p.function,
                "section": p.section,
                "purpose": p.purpose,
                "attach": [
                    {"role": a.role.value, "interface": a.interface, "hook": a.hook}
                    for a in p.attach
                ],
                "insns": prog_insns.get(p.function, 0)
                + sum(s.insns for s in info.subprograms),
                "verifier": None
                if v is None
                else {"processed_insns": v.verified_insns, "xlated_insns": v.xlated_insns},
            }
        )
    return {
        "schema": MANIFEST_SCHEMA,
        "bpfgen_version": __version__,
        "config_sha256": plan.config_sha256,
        "inputs": inputs_desc,
        "mode": plan.mode.value,
        "build": plan.build_kind,
        "toolchain": {"clang": tc.version, "flags": list(tc.flags)},
        "kernel": {"release": platform.release(), "verified": verified is not None},
        "programs": programs,
        "maps": [
            {
                "name": m.name,
                "type": m.type,
                "key_size": m.key_size,
                "value_size": m.value_size,
                "max_entries": m.max_entries,
                "pin_path": f"{PIN_ROOT}/{{netns}}/{m.name}" if m.pinned else None,
                "purpose": m.purpose,
            }
            for m in plan.maps
        ],
        "counters": list(COUNTER_NAMES),
        "runtime_config": None
        if plan.runtime_config is None
        else {"map": ".bss", "hex": plan.runtime_config.hex()},
        "map_init": "map_init.json" if plan.map_init else None,
        "sources": sorted(f.path for f in rendered.files),
        "specialization": plan.to_dict(),
    }


def _write_tree(root: Path, rendered: Rendered) -> None:
    for f in rendered.files:
        path = root / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.text, encoding="utf-8")


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace `out` by `tmp` with two renames; the old tree is removed last."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def compile_build(
    node: Path,
    services: Sequence[Path],
    out: Path,
    *,
    generic: bool = False,
    verify: bool = True,
    progress: Progress = _quiet,
) -> CompileResult:
    inputs = load_inputs(node, services)
    progress(
        f"config: node {inputs.node.name}, {len(inputs.services)} services"
        + (f", {len(inputs.notices)} notices" if inputs.notices else "")
    )
    for n in inputs.notices:
        progress(f"notice: {n}")
    plan = make_plan(inputs, generic=generic)
    progress(
        f"plan: {plan.build_kind} build, {len(plan.frontends)} frontends "
        f"({'map' if plan.frontends_in_map else 'code'}), {len(plan.programs)} programs"
    )
    rendered = render(plan)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_tree(tmp, rendered)
        builds = compile_objects(tmp, rendered, [(p.source, p.object) for p in plan.programs])
        hits = sum(b.cached for b in builds)
        progress(f"build: {len(builds)} objects ({hits} from cache, {len(builds) - hits} clang)")
        objects = {p.object: inspect_object(tmp / p.object) for p in plan.programs}
        check_against_plan(plan, objects)
        # Paths in the manifest are relative to the build directory.
        objects = {k: ObjectInfo(k, v.programs, v.subprograms, v.maps, v.sections)
                   for k, v in objects.items()}
        verified = verify_objects(tmp, plan, out.parent / f"{out.name}.logs") if verify else None
        if verified is not None:
            progress(
                "verify: kernel "
                + platform.release()
                + " accepted "
                + ", ".join(f"{k} ({v.verified_insns} insns)" for k, v in sorted(verified.items()))
            )
        if plan.map_init:
            (tmp / "map_init.json").write_text(
                json.dumps(
                    {
                        name: [[k.hex(), v.hex()] for k, v in entries]
                        for name, entries in sorted(plan.map_init.items())
                    },
                    indent=0,
                )
                + "\n"
            )
        inputs_desc = {"node": str(node), "services": [str(s) for s in services]}
        manifest = build_manifest(plan, rendered, objects, verified, inputs_desc)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompileResult(out, plan, manifest, tuple(builds))

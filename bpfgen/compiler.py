"""The pipeline: config -> plan -> render -> build -> inspect -> verify -> build dir.

Output is written to a sibling temporary directory and swapped in only when
every stage succeeded, so a failed compile leaves an existing build directory
exactly as it was. `--out` must be missing, an empty directory or a bpfgen build
(its manifest.json says so); anything else (a file, a symlink, someone's home
directory) is refused before anything is read or written (OutputRefused, exit 2).

Two caches, both content-addressed: compiled objects (build.py: same C and
toolchain, no clang), and whole builds (here: same input bytes, arguments,
toolchain, templates and pipeline code (fingerprint.py: not the CLI, the
reference models or the benchmarks), no parsing either). A build-cache hit still
runs the kernel verifier, since the kernel is not part of the key. A build-cache
entry carries the sha256 of each of its files (digests.json); an entry that does
not match them is discarded, with a note, and the build is made again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfgen import __version__
from bpfgen.build import (
    ObjectBuild,
    Toolchain,
    cache_root,
    compile_objects,
    toolchain,
    usable_toolchain,
)
from bpfgen.errors import (
    BpfgenError,
    InputError,
    NeedsNewCode,
    OutputError,
    OutputRefused,
    Problem,
    VerifierError,
)
from bpfgen.fingerprint import compiler_digest
from bpfgen.inputs import load_sources, read_sources
from bpfgen.inputs.source import Source
from bpfgen.inspect import ObjectInfo, check_against_plan, inspect_object
from bpfgen.model import Inputs
from bpfgen.plan import Plan, build_kind, make_plan
from bpfgen.render import Rendered, render
from bpfgen_runtime.contract.manifest import SCHEMA as MANIFEST_SCHEMA
from bpfgen_runtime.contract.manifest import (
    Attach,
    KernelEntry,
    Manifest,
    MapEntry,
    Problems,
    ProgramEntry,
    RuntimeConfig,
    ToolchainEntry,
    VerifierCounts,
    decode_manifest,
    to_json,
)

DIGESTS = "digests.json"  # in a build-cache entry: relative path -> sha256 of each file
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
    manifest: Manifest  # as written to out/manifest.json
    objects: tuple[ObjectBuild, ...]  # empty on a build-cache hit
    plan: Plan | None  # None on a build-cache hit (the manifest has the plan's tables)
    build_cache_hit: bool = False
    inputs: Inputs | None = None  # the validated inputs (None on a build-cache hit)

    @property
    def clang_runs(self) -> int:
        return sum(not o.cached for o in self.objects)

    @property
    def build_kind(self) -> str:
        return self.manifest.build.value

    @property
    def node_name(self) -> str:
        return self.manifest.specialization.node

    @property
    def frontends_in_map(self) -> bool:
        return self.manifest.specialization.frontends_in_map


def _quiet(_: str) -> None:
    pass


def _initial_values(runtime_config: RuntimeConfig | None) -> dict[str, bytes]:
    """The manifest's `runtime_config` as loader initial values: what the runtime sets.

    A frozen build must be verified with its real `.rodata`: the verifier prunes on
    those values, so an all-zero image would verify (and count) other code.
    """
    if runtime_config is None:
        return {}
    return {runtime_config.map: bytes.fromhex(runtime_config.hex)}


def verify_objects(build_dir: Path, plan: Plan, log_dir: Path) -> dict[str, Verified]:
    """Load every object into the running kernel's verifier, then unload it."""
    from bpfgen_runtime.errors import RuntimeOpError, VerifierRejected
    from bpfgen_runtime.loader import verify_object

    initial = _initial_values(_runtime_config_entry(plan))
    out: dict[str, Verified] = {}
    for obj in dict.fromkeys(p.object for p in plan.programs):
        try:
            records = verify_object(build_dir / obj, log_dir=log_dir, initial_values=initial)
        except VerifierRejected as e:
            raise VerifierError(str(e)) from e
        except RuntimeOpError as e:
            raise VerifierError(
                f"could not load {obj} into the kernel to verify it: {e} "
                "(bpfgen compile needs root and a kernel with BPF; --no-verify skips this)"
            ) from e
        for r in records:
            out[r.name] = Verified(r.name, r.verified_insns, r.xlated_insns)
    return out


def _runtime_config_entry(plan: Plan) -> RuntimeConfig | None:
    if plan.runtime_config is None or plan.config_section is None:
        return None
    return RuntimeConfig(plan.config_section, plan.runtime_config.hex())


def build_manifest(
    plan: Plan,
    rendered: Rendered,
    objects: dict[str, ObjectInfo],
    verified: dict[str, Verified] | None,
    inputs_desc: dict[str, Any],
    built_by: ToolchainEntry | None = None,
) -> Manifest:
    """The manifest; `built_by`: the toolchain of reused objects (no clang here)."""
    if built_by is None:
        tc = toolchain()
        built_by = ToolchainEntry(tc.version, tuple(tc.flags))
    programs = []
    for p in plan.programs:
        info = objects[p.object]
        prog_insns = {i.name: i.insns for i in info.programs}
        v = verified.get(p.function) if verified else None
        programs.append(
            ProgramEntry(
                name=p.name,
                object=p.object,
                source=p.source,
                function=p.function,
                section=p.section,
                purpose=p.purpose,
                attach=tuple(Attach(a.role.value, a.interface, a.hook) for a in p.attach),
                insns=prog_insns.get(p.function, 0) + sum(s.insns for s in info.subprograms),
                verifier=None if v is None else VerifierCounts(v.verified_insns, v.xlated_insns),
            )
        )
    assert plan.node is not None
    return Manifest(
        schema=MANIFEST_SCHEMA,
        bpfgen_version=__version__,
        config_sha256=plan.config_sha256,
        inputs=inputs_desc,
        mode=plan.mode,
        build=plan.build_kind,
        node=plan.node,
        toolchain=built_by,
        kernel=KernelEntry(platform.release(), verified is not None),
        programs=tuple(programs),
        maps=tuple(
            MapEntry(
                name=m.name,
                type=m.type,
                key_size=m.key_size,
                value_size=m.value_size,
                max_entries=m.max_entries,
                pin_path=f"{PIN_ROOT}/{{netns}}/{m.name}" if m.pinned else None,
                purpose=m.purpose,
            )
            for m in plan.maps
        ),
        counters=tuple(plan.counter_names),
        runtime_config=_runtime_config_entry(plan),
        map_init="map_init.json" if plan.map_init else None,
        sources=tuple(sorted(f.path for f in rendered.files)),
        specialization=plan.specialization(),
    )  # fmt: skip


def write_manifest(path: Path, manifest: Manifest) -> None:
    path.write_text(json.dumps(to_json(manifest), indent=2) + "\n")


def read_manifest(path: Path) -> Manifest:
    """DIR/manifest.json through the contract's model; InputError (exit 2) lists every
    problem, each as `manifest.json:1: <path in the file>: <what>`."""
    data = _manifest_json(path)
    problems = Problems()
    manifest = decode_manifest(data, problems)
    if manifest is None:
        raise InputError([Problem(str(path), 1, "", p) for p in problems])
    return manifest


def read_manifest_inputs(path: Path) -> tuple[Path, str]:
    """The node file and build kind DIR was compiled from, all `sync` needs to rebuild
    DIR. Read alone, not through the whole model, so that sync can rebuild a directory
    whose manifest an older bpfgen wrote or that is damaged elsewhere."""
    data = _manifest_json(path)
    inputs = data.get("inputs") if isinstance(data, dict) else None
    node = inputs.get("node") if isinstance(inputs, dict) else None
    build = data.get("build") if isinstance(data, dict) else None
    if not isinstance(node, str) or not isinstance(build, str):
        problem = "inputs.node and build must be strings (compile DIR again)"
        raise InputError([Problem(str(path), 1, "", problem)])
    return Path(node), build


def _manifest_json(path: Path) -> Any:
    """An unreadable manifest is an I/O failure (exit 1), one that is not JSON bad
    input (exit 2), as `compile` treats its own inputs."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BpfgenError(
            f"{path}: cannot read ({e.strerror}); is {path.parent} a bpfgen build directory?"
        ) from e
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError([Problem(str(path), 1, "", f"not JSON ({e})")]) from e


def build_cache_key(
    sources: Sequence[Source], build: str, tc: Toolchain, strict: bool = False
) -> str | None:
    """Key of a whole build from the inputs' bytes as read (inputs.read_sources: each
    input is read once, so a pipe's content is both hashed and parsed), or None when
    an input could not be read (config reports it)."""
    h = hashlib.sha256()
    h.update(f"bpfgen {__version__}\0build={build}\0strict={strict}\0{tc.version}\0".encode())
    h.update("\0".join(tc.flags).encode())
    h.update(compiler_digest())
    for source in sources:
        if source.error is not None:
            return None
        h.update(f"\0{source.file}\0{len(source.data)}\0".encode())
        h.update(source.data)
    return h.hexdigest()


def _restore_cached_build(
    entry: Path,
    tmp: Path,
    inputs: dict[str, Any],
    verify: bool,
    log_dir: Path,
    progress: Progress,
) -> Manifest:
    """Copy a cached build into tmp, with this compile's `inputs` record; re-verify it on
    this kernel."""
    shutil.copytree(entry, tmp, dirs_exist_ok=True)
    (tmp / "notices.json").unlink()
    (tmp / DIGESTS).unlink()
    manifest = read_manifest(tmp / "manifest.json")
    for n in json.loads((entry / "notices.json").read_text()):
        progress(f"notice: {n}")
    inputs = {**inputs, "skipped": manifest.inputs.get("skipped", [])}  # the same inputs
    programs: list[ProgramEntry] = []
    if verify:
        from bpfgen_runtime.errors import RuntimeOpError, VerifierRejected
        from bpfgen_runtime.loader import verify_object

        initial = _initial_values(manifest.runtime_config)
        by_object: dict[str, list[Any]] = {}
        for prog in manifest.programs:
            if prog.object not in by_object:  # several programs of one object: one load
                try:
                    by_object[prog.object] = verify_object(
                        tmp / prog.object, log_dir=log_dir, initial_values=initial
                    )
                except VerifierRejected as e:
                    raise VerifierError(str(e)) from e
                except RuntimeOpError as e:
                    raise VerifierError(f"could not load {prog.object} to verify it: {e}") from e
            counts = [VerifierCounts(r.verified_insns, r.xlated_insns)
                      for r in by_object[prog.object] if r.name == prog.function]  # fmt: skip
            programs.append(dataclasses.replace(prog, verifier=counts[0] if counts else None))
    else:
        programs = [dataclasses.replace(prog, verifier=None) for prog in manifest.programs]
    manifest = dataclasses.replace(
        manifest, inputs=inputs, programs=tuple(programs),
        kernel=KernelEntry(platform.release(), verify),
    )  # fmt: skip
    write_manifest(tmp / "manifest.json", manifest)
    return manifest


def _store_build(key: str, tree: Path, notices: Sequence[str]) -> None:
    """Best effort: a cache that cannot be written only costs speed."""
    entry = cache_root() / "builds" / key
    if entry.exists():
        return
    tmp = entry.with_name(f".{key}.{os.getpid()}.tmp")
    try:
        shutil.copytree(tree, tmp)
        (tmp / "notices.json").write_text(json.dumps(list(notices)) + "\n")
        (tmp / DIGESTS).write_text(json.dumps(_digests(tmp), indent=0, sort_keys=True) + "\n")
        os.replace(tmp, entry)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below root (DIGESTS itself excluded)."""
    digests = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != DIGESTS:
            with p.open("rb") as f:  # by chunks: map_init.json can be hundreds of MiB
                digests[str(p.relative_to(root))] = hashlib.file_digest(f, "sha256").hexdigest()
    return digests


def _cache_entry_problem(entry: Path) -> str | None:
    """Why a build-cache entry cannot be trusted (None: every file is as stored, and the
    manifest names objects the entry has)."""
    try:
        stored = json.loads((entry / DIGESTS).read_text())
        if not isinstance(stored, dict):
            return f"{DIGESTS} is not an object"
        if _digests(entry) != stored:
            have = _digests(entry)
            bad = sorted(k for k in stored.keys() | have.keys() if stored.get(k) != have.get(k))
            return "files differ from their digests: " + ", ".join(bad[:4])
        manifest = read_manifest(entry / "manifest.json")
        notices = json.loads((entry / "notices.json").read_text())
    except (OSError, ValueError, BpfgenError) as exc:
        return str(exc).splitlines()[0]
    if not isinstance(notices, list):
        return "notices.json is not a list"
    missing = [p.object for p in manifest.programs if p.object not in stored]
    return f"objects missing: {missing}" if missing else None


def _cached_build(key: str | None, progress: Progress) -> Path | None:
    """The build-cache entry for `key` when it exists and is whole; a damaged one is
    moved aside and removed (the caller rebuilds, and stores a new one)."""
    if key is None:
        return None
    entry = cache_root() / "builds" / key
    if not entry.exists():
        return None
    why = _cache_entry_problem(entry)
    if why is None:
        return entry
    progress(f"cache: entry {key[:12]} is damaged ({why}): discarded, rebuilding")
    trash = entry.with_name(f".{key}.damaged-{os.getpid()}")
    try:
        os.rename(entry, trash)
        shutil.rmtree(trash, ignore_errors=True)
    except OSError:
        pass  # a read-only cache: rebuilt every time, which only costs speed
    return None


def check_out(out: Path) -> None:
    """Refuse an output path bpfgen must not replace: a symlink (dangling or not), a file,
    a non-empty directory that is not a bpfgen build. Nothing is touched."""
    hint = "bpfgen replaces only a build directory it made: choose another --out"
    if out.is_symlink():
        raise OutputRefused(f"--out {out} is a symbolic link (to {os.readlink(out)}); {hint}")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputRefused(f"--out {out} exists and is not a directory; {hint}")
    try:
        if not any(out.iterdir()):
            return
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    if not (isinstance(manifest, dict) and {"schema", "bpfgen_version"} <= manifest.keys()):
        raise OutputRefused(
            f"--out {out} is not a bpfgen build directory (no bpfgen manifest.json) and is "
            f"not empty; {hint}, or remove it"
        )


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """OSError while writing the build (read-only or full file system, immutable directory)
    as OutputError: `write build directory <out>: <errno text>`."""
    try:
        yield
    except shutil.Error as exc:  # copytree: a list of (src, dst, why)
        first = exc.args[0][0] if exc.args and exc.args[0] else ("", "", str(exc))
        m = re.match(r"\[Errno \d+\] ([^:]+)", str(first[2]))
        what = m[1] if m else str(first[2])
        raise OutputError(f"write build directory {out}: {what} ({first[1]})") from exc
    except OSError as exc:
        what = exc.strerror or str(exc)
        where = f" ({exc.filename})" if exc.filename else ""
        raise OutputError(f"write build directory {out}: {what}{where}") from exc


def _write_map_init(path: Path, plan: Plan) -> None:
    """map_init.json, {map name: [[key hex, value hex], ...]}, written an entry at a time.

    The entries are not all in memory at once: Maglev tables (plan.MaglevRows) are
    computed as they are written, and one line holds one entry.
    """
    with path.open("w", encoding="utf-8") as f:
        f.write("{")
        for n, (name, entries) in enumerate(sorted(plan.map_init.items())):
            f.write(f"{',' if n else ''}\n{json.dumps(name)}: [")
            for i, (k, v) in enumerate(entries):
                f.write(f'{"," if i else ""}\n["{k.hex()}", "{v.hex()}"]')
            f.write("\n]")
        f.write("\n}\n")


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
    build: str | None = None,
    verify: bool = True,
    progress: Progress = _quiet,
    strict: bool = False,
) -> CompileResult:
    """Compile a `build` kind (plan.BUILD_KINDS; `generic=True` is the older spelling).

    strict: what bpfgen does not serve is an InputError, not a skip (`--strict`)."""
    kind = build_kind(build, generic=generic)
    out = out.absolute()
    log_dir = out.parent / f"{out.name}.logs"
    check_out(out)
    read = read_sources(node, services)
    tc = usable_toolchain()  # None: no compiler here, objects come from `out` (build.py)
    key = build_cache_key(read, kind, tc, strict) if tc is not None else None
    entry = _cached_build(key, progress)
    if key is not None and entry is not None:
        with _writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
        try:
            progress(f"cache: same inputs and toolchain as build {key[:12]}: no parse, no clang")
            with _writing(out):
                recorded = _record_inputs(read[0], [r.file for r in read[1:]], tmp, out)
                manifest = _restore_cached_build(entry, tmp, recorded, verify, log_dir, progress)
            if verify:
                progress(_verified_line(manifest))
            with _writing(out):
                _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return CompileResult(out, manifest, (), None, build_cache_hit=True)

    inputs = load_sources(read, strict)
    node_source = read[0]
    del read  # the model holds what is needed; the bytes can go (but the node file's)
    progress(
        f"config: node {inputs.node.name}, {len(inputs.services)} services"
        + (f", {len(inputs.skipped)} skipped" if inputs.skipped else "")
        + (f", {len(inputs.notices)} notices" if inputs.notices else "")
    )
    for n in inputs.notices:
        progress(f"notice: {n}")
    plan = make_plan(inputs, build=kind)
    progress(
        f"plan: {plan.build_kind} build, {len(plan.frontends)} frontends "
        f"({'map' if plan.frontends_in_map else 'code'}), {len(plan.programs)} programs"
    )
    rendered = render(plan)
    with _writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        with _writing(out):
            _write_tree(tmp, rendered)
        sources = dict.fromkeys((p.source, p.object) for p in plan.programs)
        previous = out if (out / "manifest.json").is_file() else None
        try:
            builds = compile_objects(tmp, rendered, list(sources), previous)
        except NeedsNewCode as exc:
            assert previous is not None  # without a build to reuse, it is no toolchain
            raise NeedsNewCode(f"{exc}. {_new_values(previous, plan)}") from None
        built_by = None
        if tc is None:
            assert previous is not None  # compile_objects raised otherwise
            built_by = read_manifest(previous / "manifest.json").toolchain
            progress(f"build: no clang here; {len(builds)} objects as they are in {out} "
                     "(their C is unchanged)")  # fmt: skip
        else:
            hits = sum(b.cached for b in builds)
            progress(f"build: {len(builds)} objects ({hits} from cache, "
                     f"{len(builds) - hits} clang)")  # fmt: skip
        objects = {o: inspect_object(tmp / o) for _, o in sources}
        check_against_plan(plan, objects)
        # Paths in the manifest are relative to the build directory.
        objects = {k: dataclasses.replace(v, path=k) for k, v in objects.items()}
        verified = verify_objects(tmp, plan, log_dir) if verify else None
        with _writing(out):
            if plan.map_init:
                _write_map_init(tmp / "map_init.json", plan)
        with _writing(out):
            inputs_desc = _record_inputs(node_source, [str(s) for s in services], tmp, out)
            inputs_desc["skipped"] = [dataclasses.asdict(k) for k in inputs.skipped]
        manifest = build_manifest(plan, rendered, objects, verified, inputs_desc, built_by)
        if verified is not None:
            progress(_verified_line(manifest))
        with _writing(out):
            write_manifest(tmp / "manifest.json", manifest)
            if key is not None:
                _store_build(key, tmp, inputs.notices)
            _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CompileResult(out, manifest, tuple(builds), plan, inputs=inputs)


def _new_values(previous: Path, plan: Plan) -> str:
    """What an image needs to serve this change: the compiled-in values (C constants,
    not load-time ones) that differ from the build being replaced."""
    try:
        had = {d.name: d.value for d in
               read_manifest(previous / "manifest.json").specialization.decisions}  # fmt: skip
    except BpfgenError:
        return "The build being replaced has no readable manifest"
    new = [f"{d.name} {had.get(d.name, '(none)')} -> {d.value} ({d.source})"
           for d in plan.decisions if not d.runtime and had.get(d.name) != d.value]  # fmt: skip
    if not new:
        return (
            "Needs an image with these Services: no compiled-in value differs, the "
            "Services themselves are in this build's C"
        )
    return "Needs an image with: " + "; ".join(new)


#: Where a node file that is not a regular file (`--node <(...)`, /dev/stdin) is kept.
NODE_COPY = "node.yaml"


def _record_inputs(node: Source, services: list[str], tmp: Path, out: Path) -> dict[str, Any]:
    """The manifest's `inputs`: the paths as given. `bpfgen sync` rebuilds from the
    recorded node file, and a pipe's /dev/fd/N means nothing after this process: such a
    node file is kept in the build directory (its bytes as read) and recorded there."""
    node_path = node.file
    if not os.path.isfile(node.file):
        (tmp / NODE_COPY).write_bytes(node.data)
        node_path = str(out / NODE_COPY)
    return {"node": node_path, "services": services}


def _verified_line(manifest: Manifest) -> str:
    return f"verify: kernel {platform.release()} accepted " + ", ".join(
        f"{p.name} ({p.verifier.processed_insns if p.verifier else '?'} insns)"
        for p in manifest.programs
    )

"""Stage 4: clang as a subprocess, turning a rendered tree into BPF objects.

Output is byte-for-byte deterministic: clang runs in the build directory on
relative paths with a fixed debug compilation dir, so nothing about where the
build happened reaches the object. Objects are cached by content: the key is
the sha256 of the clang version, the flags and every file the compile reads
from the build directory, so the same input and toolchain never run clang
twice.

Without clang (a node built from an image), an object is taken from the build
directory it replaces when every file its compile reads is the same there: a
Service change in an image, frozen or generic build, whose C holds no Service. A change
that needs new C is `NeedsNewCode`, naming the files that differ.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bpfgen.errors import BuildError, NeedsNewCode, ToolchainError
from bpfgen.render import Rendered

CLANG_CANDIDATES = ("clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14", "clang")
MIN_CLANG_MAJOR = 14  # BTF-defined maps, bpf_loop, -mcpu=v3


@dataclass(frozen=True)
class Toolchain:
    clang: str  # path
    version: str  # first line of `clang --version`
    flags: tuple[str, ...]  # everything but -c SRC -o OBJ


@dataclass(frozen=True)
class ObjectBuild:
    source: str
    object: str
    cache_key: str
    cached: bool  # True: copied from the cache, clang did not run


def _multiarch_include() -> tuple[str, ...]:
    # linux/types.h needs asm/types.h, which Debian keeps per architecture;
    # -target bpf does not look there by itself.
    path = Path(f"/usr/include/{platform.machine()}-linux-gnu")
    return ("-idirafter", str(path)) if path.is_dir() else ()


@cache
def toolchain() -> Toolchain:
    """Find clang: $BPFGEN_CLANG, else the newest clang-N on PATH."""
    wanted = os.environ.get("BPFGEN_CLANG")
    candidates = (wanted,) if wanted else CLANG_CANDIDATES
    for name in candidates:
        path = shutil.which(name)
        if not path:
            continue
        out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        first = out.stdout.splitlines()[0] if out.stdout else ""
        m = re.search(r"clang version (\d+)", first)
        if not m or int(m.group(1)) < MIN_CLANG_MAJOR:
            continue
        flags = (
            "-target", "bpf", "-mcpu=v3", "-O2", "-g",
            "-Wall", "-Werror",
            "-fdebug-compilation-dir=.", "-fno-ident",
            "-I.", "-Iinclude", *_multiarch_include(),
        )  # fmt: skip
        return Toolchain(path, first, flags)
    hint = f"$BPFGEN_CLANG={wanted}" if wanted else ", ".join(CLANG_CANDIDATES)
    raise ToolchainError(
        f"no usable clang (>= {MIN_CLANG_MAJOR}) found (tried {hint}); "
        "install it with `apt-get install clang-19` or run `make setup`"
    )


def cache_root() -> Path:
    """$BPFGEN_CACHE_DIR, else $XDG_CACHE_HOME/bpfgen, else ~/.cache/bpfgen."""
    env = os.environ.get("BPFGEN_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bpfgen"


def cache_dir() -> Path:
    """Compiled objects by content key."""
    return cache_root() / "objects"


def cache_key(tc: Toolchain, rendered: Rendered, source: str) -> str:
    """Everything the compile of `source` reads: the program, every header."""
    h = hashlib.sha256()
    h.update(tc.version.encode())
    h.update("\0".join(tc.flags).encode())
    for f in rendered.files:
        if f.path.endswith(".bpf.c") and f.path != source:
            continue  # another program's source
        h.update(f"\0{f.path}\0{len(f.text)}\0".encode())
        h.update(f.text.encode())
    return h.hexdigest()


_DIAG = re.compile(r"^(?P<file>[^:\s]+):(?P<line>\d+):(?P<col>\d+): (?:fatal )?error: (?P<msg>.*)$")


def _first_diagnostic(stderr: str, build_dir: Path) -> str:
    for line in stderr.splitlines():
        m = _DIAG.match(line)
        if not m:
            continue
        where = f"{m['file']}:{m['line']}:{m['col']}"
        try:
            text = (build_dir / m["file"]).read_text().splitlines()[int(m["line"]) - 1]
        except (OSError, IndexError):
            text = ""
        return f"{where}: error: {m['msg']}\n    {m['line']} | {text.strip()}"
    return stderr.strip().splitlines()[-1] if stderr.strip() else "(no output)"


def usable_toolchain() -> Toolchain | None:
    """clang when there is a usable one, else None (no compiler on this node)."""
    try:
        return toolchain()
    except ToolchainError:
        return None


def reused_objects(
    build_dir: Path, rendered: Rendered, programs: Sequence[tuple[str, str]], previous: Path
) -> list[ObjectBuild]:
    """Without clang: each object from `previous` (the build directory being replaced),
    when every file its compile reads is the same there; else NeedsNewCode."""
    results, differ = [], set()
    for source, obj in programs:
        read = [f for f in rendered.files if not f.path.endswith(".bpf.c") or f.path == source]
        changed = [f.path for f in read if _text(previous / f.path) != f.text]
        if changed or not (previous / obj).is_file():
            differ.update(changed or [obj])
            continue
        shutil.copyfile(previous / obj, build_dir / obj)
        results.append(ObjectBuild(source, obj, "", cached=True))
    if differ:
        try:
            toolchain()
        except ToolchainError as exc:
            raise NeedsNewCode(
                f"{exc}; this change needs new code: {', '.join(sorted(differ))} "
                f"{'differs' if len(differ) == 1 else 'differ'} from {previous}'s. Build "
                "the directory where clang is and hand it over, or use a build kind that "
                "keeps Services out of the code (--build image, frozen or generic)"
            ) from None
    return results


def _text(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def compile_objects(
    build_dir: Path,
    rendered: Rendered,
    programs: Sequence[tuple[str, str]],
    previous: Path | None = None,
) -> list[ObjectBuild]:
    """Compile each (source, object) in build_dir, in parallel, through the cache;
    without clang, reuse `previous`'s objects (`reused_objects`)."""
    tc = usable_toolchain()
    if tc is None:
        if previous is None:
            toolchain()  # raises ToolchainError, saying what was looked for
        assert previous is not None
        return reused_objects(build_dir, rendered, programs, previous)
    cdir = cache_dir()
    results: list[ObjectBuild] = []
    running: list[tuple[ObjectBuild, subprocess.Popen[str], list[str]]] = []
    for source, obj in programs:
        key = cache_key(tc, rendered, source)
        cached = cdir / f"{key}.o"
        if cached.is_file():
            shutil.copyfile(cached, build_dir / obj)
            results.append(ObjectBuild(source, obj, key, cached=True))
            continue
        cmd = [tc.clang, *tc.flags, "-c", source, "-o", obj]
        proc = subprocess.Popen(
            cmd, cwd=build_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        running.append((ObjectBuild(source, obj, key, cached=False), proc, cmd))
    failure: BuildError | None = None
    for build, proc, cmd in running:
        _, stderr = proc.communicate()
        if proc.returncode != 0:
            failure = failure or BuildError(
                f"clang failed on generated {build_dir / build.source} (a bpfgen bug: please "
                f"report it with this directory)\n  command: (cd {build_dir} && "
                f"{' '.join(cmd)})\n  {_first_diagnostic(stderr, build_dir)}"
            )
            continue
        results.append(build)
        try:
            cdir.mkdir(parents=True, exist_ok=True)
            tmp = cdir / f".{build.cache_key}.{os.getpid()}.tmp"
            shutil.copyfile(build_dir / build.object, tmp)
            os.replace(tmp, cdir / f"{build.cache_key}.o")
        except OSError:
            pass  # a read-only cache only costs speed
    if failure:
        raise failure
    order = {obj: i for i, (_, obj) in enumerate(programs)}
    return sorted(results, key=lambda b: order[b.object])

"""The wheel, built from this tree and installed in a fresh venv, works on its own.

Built with the running venv's setuptools (`pip wheel --no-deps --no-build-isolation`,
from a copy of the tree, so nothing is written into the repository) and installed with
`--no-deps --no-index` into a venv made here without pip and without the system's or
this venv's site-packages. Its dependencies come from this venv, offline: the wheel's
own Requires-Dist, with theirs, resolved against what is installed here, and only those
distributions (their import packages and dist-info) made visible to the fresh venv
through a .pth file. So a dependency missing from pyproject.toml fails the import, as
it would for a user, and nothing needs the network.

From the fresh venv, in a directory outside the repository: `bpfgen compile` of
examples/ (verified by this kernel, clang run: a cold object cache), the runtime's
`--help`, and the versions. The wheel holds every package and module of bpfgen/ and
runtime/, every template, the LICENSE, and neither tests nor benchmarks.

16-40 s on this machine, shared (the build, the venv, clang): marked slow, so `make
check` leaves it to `make test`; alone: `make test-wheel`.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import venv
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import bpfgen
from bpfgen_runtime.cli import RUNTIME_COMMANDS
from tests.conftest import EXAMPLES, ROOT

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Installed:
    wheel: Path
    names: frozenset[str]  # every file in the wheel
    python: Path  # the fresh venv's interpreter
    bin: Path
    workdir: Path  # outside the repository


def _source_copy(dest: Path) -> Path:
    """The tree as a clean checkout with the uncommitted work would have it: git's
    tracked and untracked-but-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(src.read_bytes())
    return dest


def _requirements(wheel: zipfile.ZipFile) -> list[Requirement]:
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    headers = HeaderParser().parsestr(wheel.read(meta).decode())
    reqs = [Requirement(r) for r in headers.get_all("Requires-Dist") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})]


def _link_dependencies(reqs: list[Requirement], deps: Path) -> list[str]:
    """Symlink, into deps, the import packages and dist-info of each required
    distribution installed here and of what it requires in turn; their names."""
    done: set[str] = set()
    todo = list(reqs)
    while todo:
        req = todo.pop()
        dist = importlib.metadata.distribution(req.name)
        name = dist.metadata["Name"].lower()
        if name in done:
            continue
        assert dist.version in req.specifier, f"{req}: {dist.version} installed here"
        done.add(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or ()}
        for top in tops - {"..", "__pycache__"}:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (deps / top).exists():
                (deps / top).symlink_to(target)
        todo += [r for r in map(Requirement, dist.requires or ())
                 if r.marker is None or r.marker.evaluate({"extra": ""})]  # fmt: skip
    return sorted(done)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("bpfgen-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    with zipfile.ZipFile(wheel) as zf:
        names = frozenset(zf.namelist())
        deps = tmp / "deps"
        deps.mkdir()
        _link_dependencies(_requirements(zf), deps)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "bpfgen_test_deps.pth").write_text(f"{deps}\n")
    workdir = tmp / "work"
    workdir.mkdir()
    return Installed(wheel, names, python, env_dir / "bin", workdir)


def run(inst: Installed, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A command of the fresh venv, outside the repository, with no PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    clean["PATH"] = f"{inst.bin}:{clean.get('PATH', '')}"
    return subprocess.run(
        list(argv), cwd=inst.workdir, env={**clean, **env}, capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip


def _expected_modules(tree: Path, package: str) -> set[str]:
    return {
        f"{package}/{p.relative_to(tree).as_posix()}"
        for p in tree.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_module_and_template(installed: Installed) -> None:
    bpfgen_tree = _expected_modules(ROOT / "bpfgen", "bpfgen")
    runtime_tree = _expected_modules(ROOT / "runtime", "bpfgen_runtime")
    templates = {
        f"bpfgen/templates/{p.relative_to(ROOT / 'templates').as_posix()}"
        for p in (ROOT / "templates").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing = (bpfgen_tree | runtime_tree | templates) - installed.names
    assert not missing, f"not in {installed.wheel.name}: {sorted(missing)}"


def test_the_wheel_holds_neither_tests_nor_benchmarks(installed: Installed) -> None:
    tops = {name.split("/")[0] for name in installed.names}
    dist_info = f"bpfgen-{bpfgen.__version__}.dist-info"
    assert tops == {"bpfgen", "bpfgen_runtime", dist_info}, sorted(tops)
    assert not [n for n in installed.names if "/bench" in n or "tests/" in n]


def test_the_wheel_carries_the_license_and_one_version(installed: Installed) -> None:
    dist_info = f"bpfgen-{bpfgen.__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in installed.names
    with zipfile.ZipFile(installed.wheel) as zf:
        meta = HeaderParser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
    assert meta["Version"] == bpfgen.__version__
    assert meta["License-Expression"] == "Apache-2.0"
    script = (
        "import bpfgen, bpfgen_runtime; "
        "print(bpfgen.__version__, bpfgen_runtime.__version__, bpfgen.__file__)"
    )
    versions = run(installed, str(installed.python), "-c", script)
    assert versions.returncode == 0, versions.stderr
    compiler, runtime, where = versions.stdout.split()
    assert compiler == runtime == bpfgen.__version__
    assert Path(where).is_relative_to(installed.bin.parent), where


def test_bpfgen_compile_from_the_wheel(installed: Installed, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = run(
        installed, str(installed.bin / "bpfgen"), "compile",
        "--node", str(EXAMPLES / "node.yaml"), "--services", str(EXAMPLES / "services.yaml"),
        "--out", str(out),
        BPFGEN_CACHE_DIR=str(tmp_path / "cache"),  # a cold cache: clang runs
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in out.glob("*.o")) == ["egress.bpf.o", "ingress.bpf.o"]


def test_the_runtime_cli_from_the_wheel(installed: Installed) -> None:
    proc = run(installed, str(installed.python), "-m", "bpfgen_runtime.cli", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "{" + ",".join(RUNTIME_COMMANDS) + "}" in proc.stdout


def test_the_fresh_venv_sees_only_the_declared_dependencies(installed: Installed) -> None:
    """pip check: every Requires-Dist satisfied, within its bounds; and nothing of the
    test tools is importable (the venv is not this one)."""
    check = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(installed.python), "check"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    proc = run(installed, str(installed.python), "-c", "import pytest")
    assert proc.returncode != 0 and "No module named 'pytest'" in proc.stderr

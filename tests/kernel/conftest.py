"""Kernel tests: fixture BPF objects compiled at test time, a private bpffs, packets.

The sources in `fixtures/*.bpf.c` are compiled once per session with clang-19
into a temporary directory; `bpf_objects["tc_rewrite"]` is the object built
from `fixtures/tc_rewrite.bpf.c`. A missing clang or missing root fails the
tests: they never skip silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_private import private_netns

CLANG = "clang-19"
FIXTURES = Path(__file__).parent / "fixtures"
# <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the multiarch
# directory that clang does not search for -target bpf.
MULTIARCH_INCLUDE = Path("/usr/include") / str(sysconfig.get_config_var("MULTIARCH") or "")
BPF_CFLAGS = ["-target", "bpf", "-O2", "-g", "-Wall", "-Werror", f"-I{MULTIARCH_INCLUDE}"]


@pytest.fixture(scope="session")
def clang() -> str:
    """The path of clang-19; the tests fail (not skip) without it."""
    clang = shutil.which(CLANG)
    if clang is None:
        pytest.fail(
            f"{CLANG} not found on PATH: the kernel tests compile their BPF fixtures with it; "
            "install the Debian package clang-19 (make setup)",
            pytrace=False,
        )
    return clang


def compile_c(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed:\n{proc.stderr}", pytrace=False)


@pytest.fixture(scope="session")
def bpf_objects(clang: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture compiled: {"tc_rewrite": <tmp>/tc_rewrite.bpf.o, ...}."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests load BPF programs: run them as root", pytrace=False)
    out = tmp_path_factory.mktemp("bpf-objects")
    objects: dict[str, Path] = {}
    for source in sorted(FIXTURES.glob("*.bpf.c")):
        stem = source.name.removesuffix(".bpf.c")
        obj = out / f"{stem}.bpf.o"
        compile_c([clang, *BPF_CFLAGS, "-c", str(source), "-o", str(obj)])
        objects[stem] = obj
    return objects


@pytest.fixture
def bpffs(tmp_path: Path) -> Iterator[Path]:
    """A bpffs of the test's own, unmounted (with all that is pinned in it) at the end."""
    root = tmp_path / "bpffs"
    root.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(root)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.fixture(scope="module")
def no_routes() -> Iterator[None]:
    """The module's tests in a network namespace without routes (see private_netns)."""
    with private_netns():
        yield

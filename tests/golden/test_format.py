"""The C bpfgen emits, and the headers it copies, pass `clang-format --dry-run
--Werror` with the checked-in .clang-format: the templates emit formatted C, so
the build needs no clang-format (a node compiles without it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.golden.regenerate import BPF_GOLDEN, GOLDEN, ROOT

CLANG_FORMAT = "clang-format-19"
STYLE = ROOT / ".clang-format"


def c_files() -> list[Path]:
    golden = [
        p for d in (GOLDEN, BPF_GOLDEN) for p in sorted(d.rglob("*")) if p.suffix in (".c", ".h")
    ]
    return golden + sorted((ROOT / "templates" / "include").glob("*.h"))


def test_generated_c_is_clang_formatted() -> None:
    # A missing tool fails, never skips: make setup installs it (APT_PACKAGES).
    assert shutil.which(CLANG_FORMAT), f"{CLANG_FORMAT} is not installed: run make setup"
    files = c_files()
    assert len(files) > 20
    run = subprocess.run(
        [CLANG_FORMAT, f"--style=file:{STYLE}", "--dry-run", "--Werror", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[:6000]

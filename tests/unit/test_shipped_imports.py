"""What the wheel ships (bpfgen/, runtime/) imports neither the tests nor the benchmarks,
which live in the repository only: an installed bpfgen would fail on such an import.

Read statically (every import statement, top level or inside a function), so an import
that runs only on a rare path is found too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

SHIPPED = ("bpfgen", "runtime")
REPOSITORY_ONLY = ("tests", "bench")


def imported_modules(path: Path) -> set[str]:
    """The absolute module names a file imports (relative imports stay in their package)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", SHIPPED)
def test_shipped_code_imports_nothing_of_the_repository(package: str) -> None:
    found = {
        f"{py.relative_to(ROOT)}: {name}"
        for py in sorted((ROOT / package).rglob("*.py"))
        for name in imported_modules(py)
        if name.split(".")[0] in REPOSITORY_ONLY
    }
    assert not found, f"shipped code imports repository-only modules: {sorted(found)}"


def test_the_check_sees_function_level_imports(tmp_path: Path) -> None:
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from tests.vm import guest_ipvs\n    import bench.compile\n")
    assert imported_modules(lazy) == {"tests.vm", "bench.compile"}

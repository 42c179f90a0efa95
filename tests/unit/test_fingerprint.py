"""The build cache's fingerprint of the compiler (bpfgen/fingerprint.py) covers the
pipeline and the templates, and nothing else: edits are made to a copy of the tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bpfgen.fingerprint import compiler_digest, pipeline_modules
from tests.conftest import ROOT

STAGES = {"inputs", "plan", "render", "build", "inspect", "compiler"}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of bpfgen/, templates/ and the runtime's contract to edit."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "bpfgen", tmp_path / "bpfgen", ignore=ignore)
    shutil.copytree(ROOT / "templates", tmp_path / "templates", ignore=ignore)
    shutil.copytree(ROOT / "runtime" / "contract", tmp_path / "contract", ignore=ignore)
    return tmp_path


def digest(tree: Path) -> bytes:
    return compiler_digest(tree / "bpfgen", tree / "templates", tree / "contract")


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_the_pipeline_is_every_stage_and_what_they_import() -> None:
    modules = {name.removeprefix("bpfgen.") for name in pipeline_modules()}
    assert STAGES | {"bpfgen", "maglev", "model", "inputs.source", "plan.bpf"} <= modules
    assert not {"cli", "__main__"} & modules
    assert not any(name.startswith("refmodel") for name in modules)


def test_the_real_tree_and_its_copy_agree(tree: Path) -> None:
    assert digest(tree) == compiler_digest()


@pytest.mark.parametrize("outside", ["cli.py", "__main__.py", "refmodel/bpf_svc.py"])
def test_code_outside_the_pipeline_does_not_change_the_key(tree: Path, outside: str) -> None:
    before = digest(tree)
    append(tree / "bpfgen" / outside, "\n# an edit\n")
    assert digest(tree) == before


@pytest.mark.parametrize(
    "inside",
    ["bpfgen/plan/bpf.py", "bpfgen/inputs/fields.py", "bpfgen/maglev.py", "bpfgen/__init__.py",
     "templates/programs/egress.bpf.c.j2", "templates/include/bpfgen_nat.h",
     "contract/__init__.py"],
)  # fmt: skip
def test_a_pipeline_module_or_a_template_changes_the_key(tree: Path, inside: str) -> None:
    before = digest(tree)
    append(tree / inside, "\n/* an edit */\n" if inside.startswith("templates") else "\n# edit\n")
    assert digest(tree) != before


def test_a_new_template_file_changes_the_key(tree: Path) -> None:
    before = digest(tree)
    (tree / "templates" / "include" / "bpfgen_new.h").write_text("/* new */\n")
    assert digest(tree) != before


def test_a_module_split_out_of_a_stage_joins_the_pipeline(tree: Path) -> None:
    """A stage split into a subpackage with relative imports, as a refactoring would."""
    pkg = tree / "bpfgen" / "planning"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .ipvs import plan_ipvs\n")
    (pkg / "ipvs.py").write_text("from .. import layouts\nfrom . import (  # note\n    bpf,\n)\n")
    (pkg / "bpf.py").write_text("X = 1\n")
    append(tree / "bpfgen" / "render.py", "\nfrom bpfgen.planning import plan_ipvs\n")
    modules = pipeline_modules(tree / "bpfgen")
    assert {"bpfgen.planning", "bpfgen.planning.ipvs", "bpfgen.planning.bpf"} <= modules.keys()
    before = digest(tree)
    append(pkg / "bpf.py", "Y = 2\n")
    assert digest(tree) != before

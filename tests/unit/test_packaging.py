"""pyproject.toml against the tree, without building anything (tests/build/test_wheel.py
builds and installs the wheel): every package listed, one version, the pins of
constraints.txt within the ranges bpfgen declares."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import bpfgen
import bpfgen_runtime
from tests.conftest import ROOT

#: import package -> directory, as pyproject.toml maps them
TREES = {"bpfgen": "bpfgen", "bpfgen_runtime": "runtime", "bpfgen.templates": "templates"}


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _packages_on_disk() -> set[str]:
    """Every directory that holds Python or templates, named as it is imported."""
    found: set[str] = set()
    for package, tree in TREES.items():
        for d in [ROOT / tree, *(ROOT / tree).rglob("*")]:
            if d.is_dir() and d.name != "__pycache__" and any(f.is_file() for f in d.iterdir()):
                found.add(".".join([package, *d.relative_to(ROOT / tree).parts]))
    return found


def test_every_package_is_listed(pyproject: dict[str, Any]) -> None:
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = _packages_on_disk()
    assert on_disk - listed == set(), "add to [tool.setuptools] packages (and package-dir)"
    assert listed - on_disk == set(), "listed in pyproject.toml but not in the tree"


def test_the_version_is_written_once(pyproject: dict[str, Any]) -> None:
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    attr = pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "bpfgen.__version__"
    assert bpfgen_runtime.__version__ == bpfgen.__version__  # from the installed metadata


def test_license_is_an_spdx_expression_with_its_text(pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert pyproject["project"]["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(pyproject: dict[str, Any]) -> list[Requirement]:
    project = pyproject["project"]
    lists = [project["dependencies"], *project["optional-dependencies"].values()]
    reqs = [Requirement(r) for reqs in lists for r in reqs]
    return [r for r in reqs if canonicalize_name(r.name) != "bpfgen"]  # dev = the others


def test_constraints_pin_every_requirement_within_its_range(pyproject: dict[str, Any]) -> None:
    pins = _pins()
    assert "bpfgen" not in pins
    for req in _requirements(pyproject):
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"constraints.txt does not pin {req.name}"
        assert pin in req.specifier, f"constraints.txt: {req.name}=={pin} is not {req}"


def test_dev_is_every_other_extra(pyproject: dict[str, Any]) -> None:
    extras = pyproject["project"]["optional-dependencies"]
    (dev,) = map(Requirement, extras["dev"])
    assert dev.name == "bpfgen" and dev.extras == set(extras) - {"dev"}

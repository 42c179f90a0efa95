"""No input text reaches the generated C except as an escaped comment (issue #13, item 1).

Every string field of a node file (bpf mode with socketLB, so datapath.cgroup is read)
and of the example manifests, one kind of field at a time, is replaced by each hostile
string of tests/hostile.py: the input is either refused (InputError, each problem with
file:line) or rendered, and then the C, as clang reads it, has no trace of the input
outside comments. The datapath.cgroup strings, which reach three files' comments, are
also compiled by clang.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.plan import make_plan
from bpfgen.render import c_comment, render
from tests.bpf_inputs import node_config
from tests.build.helpers import run_cli
from tests.hostile import (
    HOSTILE,
    HOSTILE_SHORT,
    MARK,
    code_outside_comments,
    replaced,
    shape,
    string_paths,
)

ROOT = Path(__file__).resolve().parents[2]
CGROUP = "/sys/fs/cgroup/bpfgen-test"


def _node() -> dict[str, Any]:
    node = node_config(socket_lb=True)
    node["datapath"]["cgroup"] = CGROUP
    return node


_SERVICES: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "services.yaml").read_text())


def _services() -> dict[str, Any]:
    return _SERVICES  # never changed in place: `replaced` copies


def _fields(which: str) -> list[tuple[Any, ...]]:
    """The first string field of each shape (e.g. items.*.metadata.name)."""
    tree = _node() if which == "node" else _services()
    seen: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for path in string_paths(tree):
        seen.setdefault(shape(path), path)
    return list(seen.values())


FIELDS = [("node", p) for p in _fields("node")] + [("services", p) for p in _fields("services")]


def assert_no_input_in_code(files: dict[str, str]) -> None:
    for name, text in files.items():
        code = code_outside_comments(text)
        assert MARK not in code, f"{name}: input text outside a comment"


def _model(inputs: Any) -> Any:
    """What the plan reads: the model without the hash and the notices."""
    return dataclasses.replace(inputs, sha256="", notices=())


def _write(root: Path, node: Any, services: Any, *, write: bool = True) -> tuple[Path, list[Path]]:
    node_path, services_path = root / "node.json", root / "services.json"
    if write:
        node_path.write_text(json.dumps(node))
        services_path.write_text(json.dumps(services))
    return node_path, [services_path]


def _check(tmp_path: Path, which: str, path: tuple[Any, ...], hostile: str, baseline: Any) -> bool:
    """Refuse with file:line, or render with no input text outside comments; True when
    the input was accepted and changed what the plan reads (then it was rendered)."""
    node, services = _node(), _services()
    if which == "node":
        node = replaced(node, path, hostile)
    else:
        services = replaced(services, path, hostile)
    node_path, services_paths = _write(tmp_path, node, services)
    try:
        inputs = load_inputs(node_path, services_paths)
    except InputError as e:
        assert e.problems
        for p in e.problems:
            assert p.file in (str(node_path), str(services_paths[0])) and p.line >= 1
        return False
    if _model(inputs) == baseline:
        return False  # a field bpfgen does not read: the C cannot depend on it
    rendered = render(make_plan(inputs))
    assert_no_input_in_code({f.path: f.text for f in rendered.files})
    return True


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("baseline")
    return _model(load_inputs(*_write(root, _node(), _services())))


@pytest.mark.parametrize(
    ("which", "path"), [pytest.param(w, p, id=f"{w}:{'.'.join(map(str, p))}") for w, p in FIELDS]
)
def test_hostile_string_in_every_field(
    tmp_path: Path, which: str, path: tuple[Any, ...], baseline: Any
) -> None:
    for hostile in HOSTILE_SHORT:
        _check(tmp_path, which, path, hostile, baseline)


def test_every_field_kind_is_covered() -> None:
    shapes = {".".join(map(str, shape(p))) for _, p in FIELDS}
    for expected in (
        "datapath.cgroup",
        "node.name",
        "interfaces.*.name",
        "items.*.metadata.name",
        "items.*.spec.ports.*.name",
        "items.*.endpoints.*.nodeName",
    ):
        assert expected in shapes
    assert len(FIELDS) > 60


def test_hostile_cgroup_reaches_c_only_escaped(tmp_path: Path, baseline: Any) -> None:
    """Valid cgroup paths with comment breakers render, escaped, in node_config.h's
    decision table (once per build); the others are refused."""
    accepted = []
    for hostile in HOSTILE:
        if _check(tmp_path, "node", ("datapath", "cgroup"), hostile, baseline):
            accepted.append(hostile)
            rendered = render(
                make_plan(load_inputs(*_write(tmp_path, _node(), _services(), write=False)))
            )
            holders = [f.path for f in rendered.files if c_comment(hostile) in f.text]
            assert holders == ["node_config.h"]
    assert len(accepted) >= 5, accepted


def test_hostile_cgroup_compiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's value and a trigraph through clang: exit 0, the code clang built has no
    symbol of the input."""
    node = _node()
    node["datapath"]["cgroup"] = f"/sys/fs/cgroup/x */ extern int {MARK}; /* ??/x"
    node_path, services_path = tmp_path / "node.json", tmp_path / "services.json"
    node_path.write_text(json.dumps(node))
    services_path.write_text(json.dumps(_services()))
    out = tmp_path / "out"
    code, _, err = run_cli(
        capsys,
        "compile",
        "-q",
        "--no-verify",
        "--node",
        str(node_path),
        "--services",
        str(services_path),
        "--out",
        str(out),
    )
    assert code == 0, err
    for obj in out.glob("*.o"):
        assert MARK.encode() not in _symbols(obj)
    assert_no_input_in_code({p.name: p.read_text() for p in out.glob("*.[ch]")})


def _symbols(obj: Path) -> bytes:
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    with obj.open("rb") as f:
        elf = ELFFile(f)
        names = [
            s.name
            for sec in elf.iter_sections()
            if isinstance(sec, SymbolTableSection)
            for s in sec.iter_symbols()
        ]
    return "\n".join(names).encode()


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("*/", "*\\/"),
        ("/*", "/\\*"),
        ("??/", "?\\?/"),
        ("???", "?\\?\\?"),
        ("a\\", "a\\x5c"),
        ("l1\nl2\r\0", "l1\\nl2\\r\\x00"),
        ("\u00e9\u2028", "\\xe9\\u2028"),
        ("#define X 1", "#define X 1"),
        ("/*/", "/\\*\\/"),
    ],
)
def test_c_comment(text: str, escaped: str) -> None:
    assert c_comment(text) == escaped
    assert code_outside_comments(f"/* {c_comment(text)} */\n") == " \n"

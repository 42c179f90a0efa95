"""The node file's JSON Schema (bpfgen schema, bpfgen/inputs/node_schema.py) against the
reader: every node file the reader accepts is valid under it, and what the reader
refuses for its shape (a key, a type, a choice, a bound) the schema refuses too."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from bpfgen.cli import main
from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.inputs.node_schema import node_file_schema
from tests.bpf_inputs import node_config
from tests.kernel.conformance_table import node_file
from tests.strategies import valid_configs

ROOT = Path(__file__).resolve().parents[2]

VALIDATOR = jsonschema.Draft202012Validator(node_file_schema())
SERVICES = "apiVersion: v1\nkind: List\nitems: []\n"


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(node_file_schema())


def _reader_accepts(tmp_path: Path, doc: dict[str, Any]) -> bool:
    (tmp_path / "node.yaml").write_text(json.dumps(doc))
    (tmp_path / "svc.yaml").write_text(SERVICES)
    try:
        load_inputs(tmp_path / "node.yaml", [tmp_path / "svc.yaml"])
    except InputError:
        return False
    return True


def repository_node_files() -> dict[str, dict[str, Any]]:
    files = {"examples/node.yaml": yaml.safe_load((ROOT / "examples/node.yaml").read_text())}
    for scheduler in ("random", "maglev"):
        for hook in ("tc", "xdp"):
            files[f"bpf_inputs {scheduler} {hook}"] = node_config(
                scheduler, 251 if scheduler == "maglev" else None, uplink_hook=hook, socket_lb=True
            )
    for mode in ("ipvs", "bpf"):
        files[f"conformance {mode}"] = node_file(mode, masquerade_all=True)
    return files


@pytest.mark.parametrize("name", list(repository_node_files()))
def test_the_repositorys_node_files_are_valid(name: str, tmp_path: Path) -> None:
    doc = repository_node_files()[name]
    assert _reader_accepts(tmp_path, doc), name
    errors = [e.message for e in VALIDATOR.iter_errors(doc)]
    assert errors == [], name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs(max_services=2, modes=("ipvs", "bpf")))
def test_every_generated_node_file_is_valid(cfg: Any) -> None:
    """The property tests' node files (every field drawn, the reader accepts them all)."""
    errors = [f"{list(e.path)}: {e.message}" for e in VALIDATOR.iter_errors(cfg.node)]
    assert errors == []


def _mutated(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(node_config("maglev", 251))
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


_DELETE = object()
#: Shapes the reader refuses, each one change to a valid node file.
REFUSED = {
    "unknown top-level key": (("extra",), 1),
    "apiVersion": (("apiVersion",), "bpfgen/v2"),
    "no interfaces": (("interfaces",), _DELETE),
    "addresses not a list": (("node", "addresses"), "198.18.0.2"),
    "an address that is not IPv4": (("node", "addresses", 0), "2001:db8::1"),
    "a pod CIDR without a length": (("node", "podCIDR"), "198.19.1.0"),
    "an unknown node key": (("node", "labels"), {}),
    "masqueradeAll not a boolean": (("cluster", "masqueradeAll"), "yes please"),
    "a role": (("interfaces", 0, "role"), "lan"),
    "a hook": (("interfaces", 0, "hook"), "tc-egress"),
    "a mode": (("datapath", "mode"), "iptables"),
    "a scheduler": (("datapath", "scheduler"), "fastest"),
    "a selection seed too large": (("datapath", "selectionSeed"), 1 << 32),
    "maxSessions 0": (("snat", "maxSessions"), 0),
    "a port range of three": (("snat", "portRange"), [1, 2, 3]),
    "a duration unit": (("snat", "timeouts"), {"udp": "5x"}),
    "an unknown timeout": (("snat", "timeouts"), {"sctp": 5}),
    "a mark that is text": (("snat", "mark"), "bit fourteen"),
    "an unknown feature": (("features",), {"ipv6": True}),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_the_reader_refuses_for_its_shape_the_schema_refuses(
    name: str, tmp_path: Path
) -> None:
    path, value = REFUSED[name]
    doc = _mutated(path, value)
    assert not _reader_accepts(tmp_path, doc), f"the reader accepts {name}"
    assert list(VALIDATOR.iter_errors(doc)), f"the schema accepts {name}"


def test_bpfgen_schema_prints_it_and_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == node_file_schema()
    out = tmp_path / "node.schema.json"
    assert main(["schema", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == node_file_schema()
    assert main(["schema", "--out", str(tmp_path / "no-such-dir" / "x.json")]) == 1
    assert "error: write" in capsys.readouterr().err

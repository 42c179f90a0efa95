"""manifest.json is the contract's model (runtime/contract/manifest.py), both ways.

The compiler writes `to_json(Manifest)`; the runtime reads with `decode_manifest`. A
build of each mode decodes to exactly the object that was written, and a damaged
file is refused with every problem named by its path in the file.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from bpf_inputs import node_config, services, write_inputs

from bpfgen.compiler import compile_build
from bpfgen_runtime.builddir import InputRefused, read_build
from bpfgen_runtime.contract.manifest import SCHEMA, Problems, decode_manifest, to_json

pytestmark = pytest.mark.kernel
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("manifest-model")
    ipvs = compile_build(EXAMPLES / "node.yaml", [EXAMPLES / "services.yaml"], root / "ipvs",
                         verify=False)  # fmt: skip
    node_path, services_path = write_inputs(root, node_config("maglev", socket_lb=True), services())
    bpf = compile_build(node_path, [services_path], root / "bpf", build="frozen", verify=False)
    for result in (ipvs, bpf):
        data = json.loads((result.out / "manifest.json").read_text())
        problems = Problems()
        assert decode_manifest(data, problems) == result.manifest, problems
        assert to_json(result.manifest) == data
    return {"ipvs": ipvs.out, "bpf": bpf.out}


@pytest.mark.parametrize("mode", ["ipvs", "bpf"])
def test_written_manifest_is_read_back_as_written(builds: dict[str, Path], mode: str) -> None:
    build = read_build(builds[mode])
    assert build.mode == mode
    assert build.manifest.specialization.mode == mode
    assert build.programs == build.manifest.programs
    assert build.node.addresses and build.frontends


def _problems(data: Any) -> list[str]:
    problems = Problems()
    assert decode_manifest(data, problems) is None
    return list(problems)


def test_every_problem_is_named_by_its_path(builds: dict[str, Path]) -> None:
    good = json.loads((builds["bpf"] / "manifest.json").read_text())
    bad = copy.deepcopy(good)
    del bad["programs"][0]["name"]
    bad["programs"][0]["attach"][0]["hook"] = "tc"
    bad["node"]["snat_port_range"] = [20000]
    bad["node"]["max_sessions"] = True  # JSON's true is not an integer
    bad["counters"] = "pass"
    bad["mode"] = "ebpf"
    bad["surprise"] = 1
    assert _problems(bad) == [
        "mode: 'ebpf' is not one of ipvs, bpf",
        "node.snat_port_range: [20000] is not a list of 2",
        "node.max_sessions: True is not an integer",
        "programs[0].name: missing",
        "programs[0].attach[0].hook: 'tc' is not one of tc_ingress, tc_egress, xdp, "
        "cgroup_connect4, cgroup_sendmsg4, cgroup_recvmsg4, cgroup_getpeername4",
        "counters: 'pass' is not a list",
        f"surprise: unknown field (manifest schema {SCHEMA})",
    ]


def test_another_schema_is_refused_before_its_fields(builds: dict[str, Path]) -> None:
    data = {"schema": SCHEMA + 1, "programs": "whatever a later schema holds"}
    assert _problems(data) == [
        f"schema: {SCHEMA + 1} is not supported (this runtime reads schema {SCHEMA})"
    ]


def test_runtime_refuses_a_damaged_build_with_the_file_and_path(
    builds: dict[str, Path], tmp_path: Path
) -> None:
    """Shapes (the model) and meanings (the reader's checks) are both refused, exit 2."""
    data = json.loads((builds["ipvs"] / "manifest.json").read_text())
    tmp_path = tmp_path / "build"
    shutil.copytree(builds["ipvs"], tmp_path)
    shape = copy.deepcopy(data)
    shape["maps"][0]["max_entries"] = "many"
    (tmp_path / "manifest.json").write_text(json.dumps(shape))
    with pytest.raises(InputRefused) as refused:
        read_build(tmp_path)
    assert refused.value.exit_code == 2
    assert refused.value.problems == [
        f"{tmp_path / 'manifest.json'}: maps[0].max_entries: 'many' is not an integer"
    ]
    meaning = copy.deepcopy(data)
    meaning["node"]["addresses"] = ["198.18.0.300"]
    meaning["specialization"]["frontends"][0]["port"] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(meaning))
    with pytest.raises(InputRefused) as refused:
        read_build(tmp_path)
    where = tmp_path / "manifest.json"
    assert refused.value.problems == [
        f"{where}: node.addresses[0]: '198.18.0.300' is not an IPv4 address",
        f"{where}: specialization.frontends[0].port: 0 is not a port (1-65535)",
    ]

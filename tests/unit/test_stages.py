"""Every value of a plan has one stage, and a generic build's C holds no boot or run value
(issue 16: one image serves every node of a pool; a node without clang follows its
Services). docs/specialization.md "Stages"."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfgen.inputs import load_inputs
from bpfgen.plan import BUILD_KINDS, make_plan
from bpfgen.plan.ir import Stage
from bpfgen.render import render
from tests.one_more_service import LATE_YAML

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "examples" / "node.yaml"
SERVICES = ROOT / "examples" / "services.yaml"


def other_node(tmp_path: Path, mode: str = "ipvs", same: bool = False) -> Path:
    """The example's node file for another node of the pool (`same`: for itself), in
    `mode`."""
    text = NODE.read_text()
    if not same:
        text = text.replace("name: node-a", "name: node-b").replace("198.18.0.2", "198.18.0.9")
        assert "podCIDR: 198.19.1.0/24" in text
        text = text.replace("podCIDR: 198.19.1.0/24", "podCIDR: 198.19.7.0/24")
    if mode == "bpf":
        text = text.replace("mode: ipvs", "mode: bpf").replace("scheduler: rr", "scheduler: maglev")
    path = tmp_path / f"node-{'a' if same else 'b'}-{mode}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("kind", BUILD_KINDS)
@pytest.mark.parametrize("mode", ["ipvs", "bpf"])
def test_every_decision_has_its_stage(tmp_path: Path, kind: str, mode: str) -> None:
    plan = make_plan(load_inputs(other_node(tmp_path, mode), [SERVICES]), build=kind)
    stages = {d.name: d.stage for d in plan.decisions}
    assert stages["BPFGEN_SNAT_PORT_MIN"] is Stage.IMAGE
    assert stages["BPFGEN_TIMEOUT_TCP_ESTABLISHED_NS"] is Stage.IMAGE
    assert stages["BPFGEN_SERVICE_NET"] is Stage.IMAGE
    assert stages["BPFGEN_PROTO_TCP"] is Stage.RUN  # a Service uses TCP
    assert stages["BPFGEN_SOURCE_RANGES"] is Stage.RUN
    entries = {e.name: e.stage for e in plan.specialization().decisions}
    assert entries == {name: stage.value for name, stage in stages.items()}
    assert all(f"  {s.value:<5}  " in plan.to_text() for s in set(stages.values()))


@pytest.mark.parametrize("mode", ["ipvs", "bpf"])
def test_a_generic_build_renders_the_same_c_on_every_node_and_services(
    tmp_path: Path, mode: str
) -> None:
    """Another node of the pool (name, address, pod CIDR), with one Service more,
    renders byte-identical C: the objects serve every node, no clang needed."""
    late = tmp_path / "late.yaml"
    late.write_text(LATE_YAML)
    none = tmp_path / "none.yaml"  # what an image is built from: no Service yet
    none.write_text("apiVersion: v1\nkind: List\nitems: []\n")
    node = other_node(tmp_path, mode, same=True)
    for kind in ("generic", "frozen", "image"):
        here = make_plan(load_inputs(node, [SERVICES]), build=kind)
        there = make_plan(load_inputs(other_node(tmp_path, mode), [SERVICES, late]), build=kind)
        image = make_plan(load_inputs(node, [none]), build=kind)
        assert {f.path: f.text for f in render(here).files} == {
            f.path: f.text for f in render(there).files
        }, kind
        # From no Service at all: the same C but for the switches a Service turns on
        # the first time it needs the path (the bpf mode: affinity). Not draining
        # endpoints: they come and go with every rolling update (docs/agent.md).
        differ = {d.name for d in here.decisions if d not in image.decisions}
        assert differ == (set() if mode == "ipvs" else {"BPFGEN_SVC_AFFINITY"}), kind
        if mode == "ipvs":
            assert {f.path: f.text for f in render(here).files} == {
                f.path: f.text for f in render(image).files
            }, kind
        compiled = [d.name for d in here.decisions if d.stage is not Stage.IMAGE and not d.runtime]
        assert compiled[:3] == ["BPFGEN_SOURCE_RANGES", "BPFGEN_SRC_RANGES_MAX",
                                "BPFGEN_FRONTENDS_MAX"], kind  # fmt: skip
        assert "a change needs clang): BPFGEN_SOURCE_RANGES, " in here.to_text()


def test_a_specialized_build_says_everything_needs_clang() -> None:
    plan = make_plan(load_inputs(NODE, [SERVICES]), build="specialized")
    text = plan.to_text()
    assert "a change needs clang): BPFGEN_HASH_SEED, BPFGEN_PROTO_TCP" in text
    assert text.rstrip().count("the frontends (matched as code)") == 1

"""The verifier matrix: one build of each shape of generated code, accepted by this kernel.

Every shape the plan can give a program (docs/specialization.md) in every build kind:
both modes; the bpf mode with each scheduler, with the socket programs, on an XDP
uplink, with frontends as code and in maps, Maglev tables in .rodata and in a map,
a node without any ready backend, and ClientIP affinity where no frontend has two
backends. The host compiles and verifies them; the 6.1 VM
runs this same file (tests/vm/second_kernel.py), where each build comes from the host
session's object cache and is verified again by the guest's kernel: what a second
kernel can reject is the verifier's judgement, not Python's, so the guest spends its
time there. The other build tests check what the builds contain; this one only that
the kernel takes them, within the budgets.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bpf_inputs import (
    many_services,
    node_config,
    services,
    single_backend_node,
    single_backend_services,
    write_inputs,
)
from manifests import as_json

from bpfgen.compiler import compile_build
from bpfgen.plan import BUILD_KINDS, INLINE_FRONTEND_LIMIT

pytestmark = pytest.mark.kernel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: As tests/build/test_bpf_mode.py and test_compile_properties.py: 2 % of the 1M limit.
VERIFIER_BUDGET = 20_000


def _no_ready_backend() -> dict[str, Any]:
    svcs = services()
    svcs["items"] = [i for i in svcs["items"] if i["kind"] != "EndpointSlice"]
    return svcs


#: id -> (node config, services) of the bpf mode; each runs in every build kind.
Inputs = Callable[[], tuple[dict[str, Any], dict[str, Any]]]
BPF_SHAPES: dict[str, Inputs] = {
    "random": lambda: (node_config("random"), services()),
    "maglev": lambda: (node_config("maglev"), services()),
    "random-socklb": lambda: (node_config("random", socket_lb=True), services()),
    "maglev-socklb": lambda: (node_config("maglev", socket_lb=True), services()),
    "maglev-xdp": lambda: (node_config("maglev", 251, uplink_hook="xdp"), services()),
    "random-xdp": lambda: (node_config("random", uplink_hook="xdp"), services()),
    "frontends-in-maps-socklb": lambda: (
        node_config("maglev", 251, socket_lb=True),
        many_services(INLINE_FRONTEND_LIMIT + 6),
    ),
    "maglev-tables-in-a-map": lambda: (node_config("maglev"), many_services(5)),
    "no-ready-backend": lambda: (node_config("maglev"), _no_ready_backend()),
    # issue 13: h % 1 everywhere folded away the hash argument of a global function
    "affinity-single-backend-xdp": lambda: (single_backend_node("xdp"), single_backend_services()),
}


def _accepted(manifest: dict[str, Any]) -> None:
    assert manifest["kernel"]["verified"] is True
    assert manifest["kernel"]["release"] == platform.release(), manifest["kernel"]
    for prog in manifest["programs"]:
        verifier = prog["verifier"]
        assert 0 < verifier["processed_insns"] <= VERIFIER_BUDGET, (prog["name"], verifier)
        assert verifier["xlated_insns"] > 0, (prog["name"], verifier)


@pytest.mark.parametrize("kind", BUILD_KINDS)
@pytest.mark.parametrize("shape", list(BPF_SHAPES))
def test_bpf_mode_shape_verifies(tmp_path: Path, shape: str, kind: str) -> None:
    node_path, services_path = write_inputs(tmp_path, *BPF_SHAPES[shape]())
    result = compile_build(node_path, [services_path], tmp_path / "build", build=kind)
    assert as_json(result)["mode"] == "bpf"
    _accepted(as_json(result))


@pytest.mark.parametrize("kind", BUILD_KINDS)
def test_ipvs_mode_example_verifies(tmp_path: Path, kind: str) -> None:
    result = compile_build(EXAMPLES / "node.yaml", [EXAMPLES / "services.yaml"],
                           tmp_path / "build", build=kind)  # fmt: skip
    assert as_json(result)["mode"] == "ipvs"
    _accepted(as_json(result))

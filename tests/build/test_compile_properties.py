"""Random configs through the whole pipeline: render, clang, inspect, kernel verifier.

Instruction budget (stated in README.md): every program of every build stays at
or under INSN_BUDGET instructions in the object and VERIFIER_BUDGET
instructions processed by the verifier (2 % of the kernel's 1M limit); the bpf
mode's programs under theirs (tests/build/test_bpf_mode.py, BUDGETS).

The random configs are of both datapath modes, every build kind and scheduler,
and the backend shapes of tests/strategies.py (single-backend frontends, no
frontend with more than one backend), with ClientIP affinity among them.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from manifests import as_json

from bpfgen.compiler import compile_build
from bpfgen.errors import InputError
from bpfgen.plan import BUILD_KINDS
from tests.build.test_bpf_mode import BUDGETS, REPORTED
from tests.shared_inputs import shared_inputs
from tests.strategies import GeneratedConfig, hostile_names, invalid_configs, to_yaml, valid_configs

INSN_BUDGET = 1500
VERIFIER_BUDGET = 20_000
MAX_TEST_SESSIONS = 65_536  # session maps are preallocated: keep each verify load small
_COMMENT = re.compile(r"/\*.*?\*/", re.S)


def _write(tmp: Path, cfg: GeneratedConfig) -> tuple[Path, Path]:
    node = dict(cfg.node)
    snat = dict(node.get("snat", {}))
    if snat.get("maxSessions", 0) > MAX_TEST_SESSIONS:
        snat["maxSessions"] = MAX_TEST_SESSIONS
        node["snat"] = snat
    return shared_inputs(to_yaml(node), cfg.services_yaml)


def _check_build(out: Path, cfg: GeneratedConfig, kind: str) -> None:
    node, services = _write(out.parent, cfg)
    res = compile_build(node, [services], out, build=kind)
    m = as_json(res)
    assert (m["build"], m["mode"]) == (kind, cfg.mode)
    assert m["kernel"]["verified"]
    for prog in m["programs"]:
        insns, processed = BUDGETS.get(prog["name"], (INSN_BUDGET, VERIFIER_BUDGET))
        assert 0 < prog["insns"] <= insns, prog
        assert 0 < prog["verifier"]["processed_insns"] <= processed, prog
    # No input string reaches the C as code: sources never name a service outside a
    # comment (the bpf mode's frontend tables say whose each entry is, in comments).
    texts = [
        _COMMENT.sub("", (out / f).read_text())
        for f in m["sources"]
        if not f.startswith("include/")
    ]
    for key in cfg.services:
        assert all(key not in t for t in texts), key


@pytest.mark.kernel
@example(cfg=REPORTED, kind="specialized")  # issue 13: refused by the verifier
@given(
    cfg=valid_configs(min_services=1, max_services=40, modes=("ipvs", "bpf")),
    kind=st.sampled_from(BUILD_KINDS),
)
def test_random_configs_compile_and_verify(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig, kind: str
) -> None:
    _check_build(tmp_path_factory.mktemp("p") / "out", cfg, kind)


@pytest.mark.kernel
@pytest.mark.slow
@settings(max_examples=4)
@given(
    cfg=valid_configs(min_services=500, max_services=2000, max_endpoints=64, extras=False),
    generic=st.booleans(),
)
def test_large_random_configs_compile_and_verify(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig, generic: bool
) -> None:
    _check_build(tmp_path_factory.mktemp("p") / "out", cfg, "generic" if generic else "specialized")


@given(bad=invalid_configs(strict=True))
def test_invalid_configs_exit_2_and_write_nothing(
    tmp_path_factory: pytest.TempPathFactory, bad: tuple[str, str, str]
) -> None:
    """Malformed input, and under --strict what bpfgen does not serve: exit 2."""
    node_yaml, services_yaml, expected = bad
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "node.yaml").write_text(node_yaml)
    (tmp / "services.yaml").write_text(services_yaml)
    from bpfgen.cli import main

    code = main([
        "compile", "-q", "--strict", "--node", str(tmp / "node.yaml"), "--services",
        str(tmp / "services.yaml"), "--out", str(tmp / "out"),
    ])  # fmt: skip
    assert code == 2
    assert sorted(p.name for p in tmp.iterdir()) == ["node.yaml", "services.yaml"]
    with pytest.raises(InputError) as e:
        compile_build(tmp / "node.yaml", [tmp / "services.yaml"], tmp / "out", strict=True)
    assert expected in str(e.value)


@given(
    cfg=valid_configs(min_services=1, max_services=3, extras=False),
    name=hostile_names(),
    where=st.sampled_from(["name", "namespace", "port"]),
)
def test_hostile_names_are_refused_and_never_reach_c(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig, name: str, where: str
) -> None:
    objects = [dict(o) for o in cfg.objects]
    svc = next(o for o in objects if o["kind"] == "Service")
    if where == "port":
        spec = dict(svc["spec"])
        spec["ports"] = [dict(spec["ports"][0], name=name), *spec["ports"][1:]]
        svc["spec"] = spec
    else:
        svc["metadata"] = dict(svc["metadata"], **{where: name})
    tmp = tmp_path_factory.mktemp("hostile")
    cfg2 = dataclasses.replace(
        cfg, services_yaml=to_yaml({"apiVersion": "v1", "kind": "List", "items": objects})
    )
    node, services = _write(tmp, cfg2)
    with pytest.raises(InputError) as e:
        compile_build(node, [services], tmp / "out")
    assert "services.yaml" in str(e.value)
    assert not (tmp / "out").exists()

"""The frozen build: generic C, the config `const volatile` in .rodata, set before load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from manifests import as_json

from bpfgen.compiler import compile_build
from bpfgen.inspect import inspect_object
from bpfgen_runtime.builddir import InputRefused, read_build
from bpfgen_runtime.loader import verify_object
from tests.build.helpers import run_cli

pytestmark = pytest.mark.kernel


def _processed(manifest: dict[str, object]) -> dict[str, int]:
    programs = manifest["programs"]
    assert isinstance(programs, list)
    return {p["name"]: p["verifier"]["processed_insns"] for p in programs}


def test_frozen_build_compiles_verifies_and_prunes(
    tmp_path: Path, example_node: Path, example_services: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "frozen"
    code, stdout, stderr = run_cli(
        capsys, "compile", "--build", "frozen", "--node", str(example_node),
        "--services", str(example_services), "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "frozen build" in stdout
    frozen = json.loads((out / "manifest.json").read_text())
    generic = compile_build(example_node, [example_services], tmp_path / "g", build="generic")
    assert frozen["build"] == "frozen" and frozen["kernel"]["verified"] is True
    # The same values as the generic build, in the other internal map.
    assert frozen["runtime_config"]["map"] == ".rodata"
    assert frozen["runtime_config"]["hex"] == as_json(generic)["runtime_config"]["hex"]
    assert frozen["map_init"] == "map_init.json"
    header = (out / "node_config.h").read_text()
    assert "const volatile struct bpfgen_config bpfgen_cfg = {};" in header
    assert "#define BPFGEN_SNAT_PORT_MIN (bpfgen_cfg.snat_port_min)" in header
    size = len(frozen["runtime_config"]["hex"]) // 2
    for prog in frozen["programs"]:
        cfg = {g.name: g for g in inspect_object(out / prog["object"]).globals}["bpfgen_cfg"]
        assert (cfg.section, cfg.size, cfg.section_size) == (".rodata", size, size)
    code, stdout, _ = run_cli(capsys, "inspect", str(out))
    assert code == 0 and f"bpfgen_cfg in .rodata ({size} bytes)" in stdout
    # The verifier saw constants: it walked fewer instructions than for the generic
    # build, whose .bss it cannot trust.
    for name, n in _processed(frozen).items():
        assert 0 < n < _processed(as_json(generic))[name], name


def test_frozen_build_is_verified_with_its_own_rodata(
    tmp_path: Path, example_node: Path, example_services: Path
) -> None:
    """An all-zero .rodata (every protocol off) would verify other, smaller code."""
    res = compile_build(example_node, [example_services], tmp_path / "f", build="frozen")
    egress = next(p for p in as_json(res)["programs"] if p["name"] == "egress")
    zeros = verify_object(res.out / egress["object"], log_dir=tmp_path)
    by_name = {r.name: r.verified_insns for r in zeros}
    assert by_name[egress["function"]] != egress["verifier"]["processed_insns"]


def test_build_kind_is_part_of_the_cache_key(
    tmp_path: Path, example_node: Path, example_services: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BPFGEN_CACHE_DIR", str(tmp_path / "cache"))
    kinds = ("generic", "frozen", "specialized")
    for kind in kinds:
        res = compile_build(example_node, [example_services], tmp_path / kind, build=kind)
        assert not res.build_cache_hit and res.build_kind == kind
    for kind in kinds:
        res = compile_build(example_node, [example_services], tmp_path / kind, build=kind)
        assert res.build_cache_hit and res.build_kind == kind


def test_runtime_reads_frozen_build_and_refuses_a_mismatched_one(
    tmp_path: Path, example_node: Path, example_services: Path
) -> None:
    out = compile_build(example_node, [example_services], tmp_path / "f", build="frozen").out
    build = read_build(out)
    (section, value), = build.initial_values().items()  # fmt: skip
    assert section == ".rodata" and len(value) > 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["runtime_config"]["map"] = ".bss"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputRefused, match=r"frozen build needs its config in \.rodata"):
        read_build(out)


def test_generic_flag_is_an_alias_and_excludes_build(
    tmp_path: Path, example_node: Path, example_services: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--node", str(example_node), "--services", str(example_services)]
    code, stdout, _ = run_cli(capsys, "plan", "--generic", *common)
    assert code == 0 and "generic build" in stdout
    code, stdout, _ = run_cli(capsys, "plan", "--build", "frozen", *common)
    assert code == 0 and "frozen build" in stdout and "load time" in stdout
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, "plan", "--generic", "--build", "frozen", *common)
    assert exc.value.code == 2


def test_frozen_plan_is_the_generic_plan_in_rodata(
    example_node: Path, example_services: Path
) -> None:
    from bpfgen.inputs import load_inputs
    from bpfgen.plan import make_plan

    inputs = load_inputs(example_node, [example_services])
    generic, frozen = make_plan(inputs, generic=True), make_plan(inputs, build="frozen")
    assert (generic.build, generic.config_section, generic.frozen) == ("generic", ".bss", False)
    assert (frozen.build, frozen.config_section, frozen.frozen) == ("frozen", ".rodata", True)
    assert frozen.generic and frozen.frontends_in_map
    assert frozen.runtime_config == generic.runtime_config is not None
    assert [d.value for d in frozen.decisions] == [d.value for d in generic.decisions]
    assert make_plan(inputs).config_section is None
    with pytest.raises(ValueError, match="build kind 'thawed'"):
        make_plan(inputs, build="thawed")

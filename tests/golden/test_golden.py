"""The example renders to the checked-in C. Regenerate with `make golden`."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.golden.regenerate import (
    BPF_BUILDS,
    BPF_GOLDEN,
    BUILDS,
    GOLDEN,
    rendered_bpf,
    rendered_example,
)


@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_example_matches_golden(kind: str) -> None:
    _compare(rendered_example(kind), GOLDEN / kind, kind)


@pytest.mark.parametrize("name", sorted(BPF_BUILDS))
def test_bpf_mode_matches_golden(name: str) -> None:
    _compare(rendered_bpf(name), BPF_GOLDEN / name, f"bpf/{name}")


def test_svc_in_and_svc_xdp_differ_only_by_hook() -> None:
    """One template: the tc and XDP sources differ in what names the program and its
    hook (banner line, program id of its drop notifications, ctx header, section,
    function), nothing else."""
    files = rendered_bpf("random-specialized", uplink_hook="xdp")
    tc, xdp = files["svc_in.bpf.c"].splitlines(), files["svc_xdp.bpf.c"].splitlines()
    assert len(tc) == len(xdp)
    differ = [(a, b) for a, b in zip(tc, xdp, strict=True) if a != b]
    assert [a for a, _ in differ] == [
        next(line for line in tc if line.startswith(" * Program svc_in (tc, bpf mode)")),
        "#define BPFGEN_PROGRAM_ID 0 /* drop notifications: manifest.json programs[0], svc_in */",
        '#include "bpfgen_ctx_tc.h"',
        'SEC("tc")',
        "int bpfgen_svc_in(bpfgen_ctx_t *ctx)",
    ]
    assert [b for _, b in differ][1:] == [
        "#define BPFGEN_PROGRAM_ID 1 /* drop notifications: manifest.json programs[1], svc_xdp */",
        '#include "bpfgen_ctx_xdp.h"',
        'SEC("xdp")',
        "int bpfgen_svc_xdp(bpfgen_ctx_t *ctx)",
    ]


def _compare(got: dict[str, str], d: Path, kind: str) -> None:
    want = {p.name: p.read_text() for p in sorted(d.iterdir())}
    assert sorted(got) == sorted(want), "file set changed: run `make golden` and review"
    for name, text in got.items():
        if text != want[name]:
            diff = "".join(
                difflib.unified_diff(
                    want[name].splitlines(True), text.splitlines(True), f"golden/{name}", name
                )
            )
            pytest.fail(f"{kind}/{name} differs from golden (run `make golden`):\n{diff[:6000]}")

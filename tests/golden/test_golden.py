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

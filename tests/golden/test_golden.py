"""The example renders to the checked-in C. Regenerate with `make golden`."""

from __future__ import annotations

import difflib

import pytest

from tests.golden.regenerate import BUILDS, GOLDEN, rendered_example


@pytest.mark.parametrize("kind", sorted(BUILDS))
def test_example_matches_golden(kind: str) -> None:
    got = rendered_example(kind)
    d = GOLDEN / kind
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

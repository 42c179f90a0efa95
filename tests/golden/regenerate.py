"""Regenerate the golden C of the bundled example: `make golden`.

Review the diff before committing it: it is exactly what changed in the C
that bpfgen emits for a real node.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bpfgen.config import load_inputs
from bpfgen.plan import BUILD_KINDS, make_plan
from bpfgen.render import render

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = Path(__file__).resolve().parent / "example"
BUILDS = BUILD_KINDS


def rendered_example(build: str) -> dict[str, str]:
    inputs = load_inputs(ROOT / "examples/node.yaml", [ROOT / "examples/services.yaml"])
    files = render(make_plan(inputs, build=build)).files
    # The plain headers are checked in as they are; golden files are what bpfgen generates.
    return {f.path: f.text for f in files if not f.path.startswith("include/")}


def main() -> None:
    for kind in BUILDS:
        d = GOLDEN / kind
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for path, text in sorted(rendered_example(kind).items()):
            (d / path).write_text(text)
            print(f"wrote {d / path}")


if __name__ == "__main__":
    main()

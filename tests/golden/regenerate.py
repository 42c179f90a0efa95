"""Regenerate the golden C of the bundled example (ipvs mode) and of the bpf
mode's test inputs (tests/bpf_inputs.py): `make golden`.

Review the diff before committing it: it is exactly what changed in the C
that bpfgen emits for a real node.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from bpfgen.inputs import load_inputs
from bpfgen.plan import BUILD_KINDS, make_plan
from bpfgen.render import render

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = Path(__file__).resolve().parent / "example"
BUILDS = BUILD_KINDS
BPF_GOLDEN = Path(__file__).resolve().parent / "bpf"
# bpf mode: directory -> (scheduler, maglevTableSize, build, datapath.socketLB); small
# tables keep it readable.
BPF_BUILDS = {
    "random-specialized": ("random", None, "specialized", False),
    "random-generic": ("random", None, "generic", False),
    "maglev251-specialized": ("maglev", 251, "specialized", False),
    "socketlb-specialized": ("random", None, "specialized", True),
    "socketlb-generic": ("random", None, "generic", True),
}


def rendered_example(build: str) -> dict[str, str]:
    inputs = load_inputs(ROOT / "examples/node.yaml", [ROOT / "examples/services.yaml"])
    files = render(make_plan(inputs, build=build)).files
    # The plain headers are checked in as they are; golden files are what bpfgen generates.
    return {f.path: f.text for f in files if not f.path.startswith("include/")}


def rendered_bpf(name: str, uplink_hook: str = "tc") -> dict[str, str]:
    """The bpf build `name`; uplink_hook "xdp" adds svc_xdp (not checked in: it is
    svc_in but for the hook, tests/golden/test_golden.py)."""
    from tests.bpf_inputs import node_config, services

    scheduler, size, build, socket_lb = BPF_BUILDS[name]
    with tempfile.TemporaryDirectory() as tmp:
        node, svcs = Path(tmp) / "node.yaml", Path(tmp) / "services.yaml"
        node.write_text(
            json.dumps(node_config(scheduler, size, socket_lb=socket_lb, uplink_hook=uplink_hook))
        )
        svcs.write_text(json.dumps(services()))
        # The sha256 covers the bytes only: the same inputs give the same banner.
        inputs = load_inputs(node, [svcs])
    files = render(make_plan(inputs, build=build)).files
    return {f.path: f.text for f in files if not f.path.startswith("include/")}


def _write(d: Path, files: dict[str, str]) -> None:
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    for path, text in sorted(files.items()):
        (d / path).write_text(text)
        print(f"wrote {d / path}")


def main() -> None:
    for kind in BUILDS:
        _write(GOLDEN / kind, rendered_example(kind))
    for name in BPF_BUILDS:
        _write(BPF_GOLDEN / name, rendered_bpf(name))


if __name__ == "__main__":
    main()

"""A build's manifest as the tests read it: the file's JSON, as a user's script would.

`as_json(result)` reads `out/manifest.json` and checks it is exactly the contract's
model of that compile serialized (runtime/contract/manifest.py), so a test that reads
keys also proves the writer wrote the model."""

from __future__ import annotations

import json
from typing import Any

from bpfgen.compiler import CompileResult
from bpfgen_runtime.contract.manifest import to_json


def as_json(result: CompileResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((result.out / "manifest.json").read_text())
    assert data == to_json(result.manifest)
    return data

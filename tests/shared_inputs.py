"""Input files at paths named by their content, in the session's object cache.

bpfgen's build cache key includes the input files' paths (notices and the manifest
name them), so a test that writes its inputs under tmp_path compiles again in the 6.1
VM: parse, plan and render under emulation cost seconds per build there. Written
here, the guest's test writes the same bytes at the same path as the host's did (the
guest shares the host session's cache, tests/vm/background.py), and its compile is a
build-cache hit: only the guest kernel's verifier works.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def shared_inputs(node_text: str, services_text: str) -> tuple[Path, Path]:
    """node.yaml and services.yaml with these contents; the same paths for the same bytes."""
    digest = hashlib.sha256(f"{node_text}\0{services_text}".encode()).hexdigest()[:20]
    root = Path(os.environ["BPFGEN_CACHE_DIR"]) / "test-inputs" / digest
    root.mkdir(parents=True, exist_ok=True)
    paths = root / "node.yaml", root / "services.yaml"
    for path, text in zip(paths, (node_text, services_text), strict=True):
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(text)
            tmp.replace(path)
    return paths

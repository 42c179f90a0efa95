"""Fixtures of the host runtime suites (helpers: runtime_env.py)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfgen_runtime import Options, RuntimeOpError, down
from bpfgen_runtime.pins import is_bpffs
from e2e.runtime_env import Env, ip_run


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    ns = f"bpfgen-t-{secrets.token_hex(4)}"
    bpffs = tmp_path / "bpffs"
    bpffs.mkdir()
    opts = Options(netns=ns, bpffs=str(bpffs), run_dir=str(tmp_path / "run"), ipvs=False)
    ip_run("netns", "add", ns)
    try:
        ip_run(
            "link", "add", "up0", "netns", ns, "type", "veth", "peer", "name", "ext0", "netns", ns
        )
        ip_run(
            "link", "add", "pv1", "netns", ns, "type", "veth", "peer", "name", "pod1", "netns", ns
        )
        for dev in ("up0", "ext0", "pv1", "pod1"):
            ip_run("-n", ns, "link", "set", dev, "up")
        yield Env(ns, opts, tmp_path)
    finally:
        try:
            down(opts)
        except RuntimeOpError as exc:
            print(f"teardown: {exc}", file=sys.stderr)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        if is_bpffs(str(bpffs)):
            subprocess.run(["umount", str(bpffs)], check=False)

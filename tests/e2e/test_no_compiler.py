"""A node without clang or kernel headers (issue 16): what it can do, and what it says.

The commands run in a mount namespace of their own where clang (/usr/lib/llvm-*)
and the headers (/usr/include) are empty tmpfs mounts: the node of an image built
without a compiler. A generic build converges a Service change there (its C holds
no Service, so the objects of the build directory serve again, and the kernel's
verifier checks them again); `up`, `status` and `down` need no compiler at all; a
specialized build's Service change needs new code and says so, leaving the build
directory and the node as they were.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from bpfgen.compiler import compile_build
from bpfgen_runtime import status
from bpfgen_runtime.cli import NO_IPVS_ENV
from bpfgen_runtime.pins import is_bpffs
from e2e.runtime_env import NODE_YAML, SERVICES, Env
from tests.one_more_service import LATE_YAML

pytestmark = pytest.mark.root


def without_compiler_command(
    env: Env, command: list[str], environ: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    """`command` run where clang and the headers are not. The test's bpffs is mounted
    out here first, as a node's /sys/fs/bpf is: a mount made inside would go with it."""
    if not is_bpffs(env.opts.bpffs):
        subprocess.run(["mount", "-t", "bpf", "bpf", env.opts.bpffs], check=True)
    llvm = sorted(str(p) for p in Path("/usr/lib").glob("llvm-*") if p.is_dir())
    assert llvm, "no /usr/lib/llvm-* to hide: is clang installed the Debian way?"
    hide = " && ".join(f"mount -t tmpfs bpfgen-none {shlex.quote(d)}"
                       for d in (*llvm, "/usr/include"))  # fmt: skip
    check = "! clang-19 --version >/dev/null 2>&1"
    shell = f"{hide} && {check} && exec {' '.join(shlex.quote(a) for a in command)}"
    # An empty object cache: nothing compiled before may stand in for clang.
    environ = {**environ, "BPFGEN_CACHE_DIR": str(env.workdir / "empty-cache")}
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell], environ


def without_compiler(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m ARGS` where clang and the headers are not."""
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir,
               NO_IPVS_ENV: "1"}  # fmt: skip
    command, environ = without_compiler_command(env, [sys.executable, "-m", *args], environ)
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)


def node_yaml(mode: str) -> str:
    """runtime_env's node file, in `mode`."""
    text = NODE_YAML.format(sessions=65536)
    if mode == "bpf":
        assert "datapath: {mode: ipvs, scheduler: rr}" in text
        text = text.replace("{mode: ipvs, scheduler: rr}", "{mode: bpf, scheduler: maglev}")
    return text


def built_up(env: Env, build: str, mode: str = "ipvs") -> tuple[Path, Path]:
    """A `build` kind of the example, compiled where clang is (as for an image), `up`
    where it is not; (the build directory, a manifest with one Service more)."""
    node = env.workdir / "node.yaml"
    node.write_text(node_yaml(mode))
    late = env.workdir / "late.yaml"
    late.write_text(LATE_YAML)
    out = env.workdir / build
    compile_build(node, [SERVICES], out, build=build)
    up = without_compiler(env, "bpfgen_runtime.cli", "up", str(out), "--netns", env.ns)
    assert up.returncode == 0, up.stderr
    return out, late


@pytest.mark.parametrize("mode", ["ipvs", "bpf"])
def test_a_generic_build_follows_services_without_a_compiler(env: Env, mode: str) -> None:
    out, late = built_up(env, "generic", mode)
    before = status(env.opts)
    assert before["in_sync"], before["differences"]

    synced = without_compiler(env, "bpfgen", "sync", str(out), "--services", str(SERVICES),
                              str(late), "--netns", env.ns, "--json")  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    assert json.loads(synced.stdout)["changes"], synced.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["services"] == [str(SERVICES), str(late)]
    assert manifest["kernel"]["verified"], "the reused objects were verified again"
    after = status(env.opts)
    assert after["in_sync"] and after["config_sha256"] != before["config_sha256"], after
    shown = without_compiler(env, "bpfgen_runtime.cli", "status", "--netns", env.ns)
    assert shown.returncode == 0 and "live state matches the build" in shown.stdout, shown

    down = without_compiler(env, "bpfgen_runtime.cli", "down", "--netns", env.ns)
    assert down.returncode == 0, down.stderr
    assert not status(env.opts)["up"]


def test_a_change_that_needs_new_code_says_so(env: Env) -> None:
    out, late = built_up(env, "specialized")  # Services in the code
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    synced = without_compiler(env, "bpfgen", "sync", str(out), "--services", str(SERVICES),
                              str(late), "--netns", env.ns)  # fmt: skip
    assert synced.returncode == 1, synced
    assert "this change needs new code: egress.bpf.c, ingress.bpf.c, node_config.h differ" in (
        synced.stderr
    ), synced.stderr
    assert "--build image, frozen or generic" in synced.stderr
    # No compiled-in value differs: the Services themselves are the specialized C.
    assert "the Services themselves are in this build's C" in synced.stderr, synced.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert status(env.opts)["in_sync"]


RANGED_YAML = """\
apiVersion: v1
kind: Service
metadata: {name: ranged, namespace: default}
spec: {type: LoadBalancer, clusterIP: 198.18.128.78, clusterIPs: [198.18.128.78],
       loadBalancerSourceRanges: [198.18.0.0/24],
       ports: [{name: http, port: 8080, protocol: TCP, nodePort: 30777}]}
status: {loadBalancer: {ingress: [{ip: 198.18.200.78}]}}
"""


def test_an_image_build_names_the_values_a_new_image_needs(env: Env) -> None:
    """The first Service with loadBalancerSourceRanges turns a path on that an image
    built without one does not have: the refusal names the value and its input."""
    out, _ = built_up(env, "image")
    ranged = env.workdir / "ranged.yaml"
    ranged.write_text(RANGED_YAML)
    synced = without_compiler(env, "bpfgen", "sync", str(out), "--services", str(SERVICES),
                              str(ranged), "--netns", env.ns)  # fmt: skip
    assert synced.returncode == 1, synced
    wanted = "Needs an image with: BPFGEN_SOURCE_RANGES 0 -> 1 (services[].spec."
    assert wanted + "loadBalancerSourceRanges)" in synced.stderr, synced.stderr
    assert status(env.opts)["in_sync"]

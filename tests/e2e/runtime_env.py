"""The host runtime suites' environment: a namespace with veths, a private bpffs and run dir.

`env` (the fixture, tests/e2e/conftest.py) gives each test its own namespace
(random suffix) with up0/ext0 and pv1/pod1 veth pairs inside it, a private bpffs
mount and state directory, removed by name at the end, also on failure. Nothing
touches the root namespace's devices.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfgen.compiler import compile_build
from bpfgen_runtime import Options
from bpfgen_runtime.pins import is_bpffs

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "examples" / "services.yaml"
NODE_YAML = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node: {{name: node-h, addresses: [198.18.0.2], podCIDR: 198.19.1.0/24}}
cluster: {{podCIDR: 198.19.0.0/16, serviceCIDR: 198.18.128.0/17, nodePortRange: [30000, 32767]}}
interfaces:
  - {{name: up0, role: uplink, hook: tc}}
  - {{name: "pv*", role: pods}}
datapath: {{mode: ipvs, scheduler: rr}}
snat:
  portRange: [20000, 29999]
  maxSessions: {sessions}
"""


def ip_run(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def ns_run(ns: str, *args: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *args], check=True, capture_output=True, text=True
    ).stdout


@dataclass
class Env:
    ns: str
    opts: Options
    workdir: Path

    def build(self, sessions: int = 65536, name: str = "b") -> Path:
        node = self.workdir / f"node-{sessions}.yaml"
        node.write_text(NODE_YAML.format(sessions=sessions))
        out = self.workdir / f"{name}-{sessions}"
        compile_build(node, [SERVICES], out, generic=False, verify=False)
        return out

    def sysctl(self, name: str) -> str:
        return ns_run(self.ns, "sysctl", "-n", name).strip()

    def filters(self, dev: str, hook: str) -> str:
        return ns_run(self.ns, "tc", "filter", "show", "dev", dev, hook)

    def qdiscs(self) -> str:
        return ns_run(self.ns, "tc", "qdisc", "show")


def snapshot(env: Env) -> dict[str, object]:
    """Everything `up` may change, for before/after comparisons."""
    return {
        "qdiscs": env.qdiscs(),
        "forward": env.sysctl("net.ipv4.ip_forward"),
        "reserved": env.sysctl("net.ipv4.ip_local_reserved_ports"),
        "nft": ns_run(env.ns, "nft", "list", "ruleset"),
        "bpffs_mounted": is_bpffs(env.opts.bpffs),
        "state": sorted(p.name for p in Path(env.opts.run_dir).glob("*")),
    }


def as_bpf_mode(build: Path, out: Path, map_init: dict[str, list[list[str]]] | None = None) -> Path:
    """A copy of an ipvs-mode build whose manifest says `mode: bpf`, tc_egress dropped
    (the bpf mode has no egress program), and optionally a map_init.json.

    For the runtime's contract only (what up/sync/down do with a bpf-mode manifest):
    the objects are still the ipvs mode's ingress/egress pair; the bpf mode's own C is
    exercised by test_bpf_mode_host.py once the compiler builds it."""
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(build, out)
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    manifest["mode"] = "bpf"
    for prog in manifest["programs"]:
        prog["attach"] = [a for a in prog["attach"] if a["hook"] != "tc_egress"]
    if map_init is not None:
        (out / "map_init.json").write_text(json.dumps(map_init))
        manifest["map_init"] = "map_init.json"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out

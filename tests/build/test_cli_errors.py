"""Bad input through the CLI: exit 2, every problem printed, nothing written or changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.build.helpers import run_cli, snapshot

BAD_NODE = """\
apiVersion: bpfgen/v1
kind: NodeConfig
node:
  name: node-a
  addresses: [198.18.0.2]
  podCIDR: 198.19.1.0/24
cluster:
  podCIDR: 198.19.0.0/16
  serviceCIDR: 198.18.128.0/17
interfaces:
  - {name: eth0, role: uplink}
snat:
  portRange: [20000, 70000]
"""

BAD_SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 198.18.128.10
  ports:
  - {port: 80, protocol: ICMP}
"""


def _write(tmp_path: Path, node: str, services: str) -> tuple[Path, Path]:
    n, s = tmp_path / "node.yaml", tmp_path / "services.yaml"
    n.write_text(node)
    s.write_text(services)
    return n, s


def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node, svc = _write(tmp_path, BAD_NODE, BAD_SERVICE)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        capsys, "compile", "--node", str(node), "--services", str(svc), "--out", str(out)
    )
    assert code == 2
    assert stdout == ""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    # Both files' problems, together, each with file, line and path.
    assert any(f"{node}:13: snat.portRange[1]: 70000 is not a port" in line for line in lines)
    assert any(
        f"{svc}:7: Service default/web: spec.ports[0].protocol: 'ICMP'" in line for line in lines
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.yaml", "services.yaml"]


@pytest.mark.kernel
def test_bad_input_leaves_existing_build_dir_untouched(
    tmp_path: Path, example_node: Path, example_services: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, _ = run_cli(
        capsys, "compile", "-q", "--node", str(example_node), "--services",
        str(example_services), "--out", str(out),
    )  # fmt: skip
    assert code == 0
    before = snapshot(out)
    node, svc = _write(tmp_path, BAD_NODE, BAD_SERVICE)
    code, _, _ = run_cli(
        capsys, "compile", "--node", str(node), "--services", str(svc), "--out", str(out)
    )
    assert code == 2
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.yaml", "out", "services.yaml"]


def test_plan_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node, svc = _write(tmp_path, BAD_NODE, BAD_SERVICE)
    code, stdout, stderr = run_cli(capsys, "plan", "--node", str(node), "--services", str(svc))
    assert code == 2 and stdout == "" and "error: " in stderr


def test_missing_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run_cli(
        capsys, "compile", "--node", str(tmp_path / "nope.yaml"), "--services",
        str(tmp_path / "nope2.yaml"), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert code == 2
    assert f"error: {tmp_path / 'nope.yaml'}" in stderr
    assert not (tmp_path / "o").exists()

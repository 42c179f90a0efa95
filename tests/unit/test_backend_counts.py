"""How many backends a bpf-mode frontend may have (issue #13, item 3).

bpfgen_svc_value.n_backends and the Maglev slots are __u16: over 65,535 ready
endpoints the specialized build failed in clang and the generic and frozen builds
wrapped the count (65,536 -> 0: every connection rejected). A Service port with more
endpoints than datapath.maglevTableSize crashed the plan with a traceback. Both are
refused by the config, with the Service port's file:line, whatever the build kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.plan import BUILD_KINDS, make_plan
from tests.bpf_inputs import node_config

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: big, namespace: default}
spec:
  clusterIP: 198.18.128.10
  ports:
  - {name: http, port: 80}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-1
  namespace: default
  labels: {kubernetes.io/service-name: big}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
"""


def _write(
    tmp_path: Path,
    endpoints: int,
    scheduler: str = "random",
    maglev_size: int | None = None,
    mode: str = "bpf",
) -> tuple[Path, Path]:
    node = node_config(scheduler, maglev_size)
    if mode == "ipvs":
        node["datapath"] = {"mode": "ipvs"}
    node_path, services_path = tmp_path / "node.json", tmp_path / "services.yaml"
    node_path.write_text(json.dumps(node))
    # 10.x.y.z addresses: 65,536 and more distinct endpoints, one line each
    lines = [
        f"- {{addresses: [10.{i >> 16}.{(i >> 8) & 255}.{i & 255}]}}\n"
        for i in range(1, endpoints + 1)
    ]
    services_path.write_text(SERVICE + "".join(lines))
    return node_path, services_path


def test_more_than_65535_backends_is_refused(tmp_path: Path) -> None:
    node, services = _write(tmp_path, 65536)
    with pytest.raises(InputError) as raised:
        load_inputs(node, [services])
    assert str(raised.value) == (
        f"{services}:7: Service default/big: spec.ports[0]: 65536 ready endpoints are more "
        "than a bpf-mode frontend selects among (65535; split the Service)"
    )


def test_65535_backends_plan_in_every_build_kind(tmp_path: Path) -> None:
    node, services = _write(tmp_path, 65535)
    inputs = load_inputs(node, [services])
    for kind in BUILD_KINDS:
        plan = make_plan(inputs, build=kind)
        assert [len(f.backends) for f in plan.frontends] == [65535]


def test_ipvs_mode_has_no_such_limit(tmp_path: Path) -> None:
    node, services = _write(tmp_path, 65536, mode="ipvs")
    inputs = load_inputs(node, [services])
    assert len(inputs.services[0].ports[0].backends) == 65536


def test_more_backends_than_maglev_slots_is_refused(tmp_path: Path) -> None:
    node, services = _write(tmp_path, 252, "maglev", 251)
    with pytest.raises(InputError) as raised:
        load_inputs(node, [services])
    assert str(raised.value) == (
        f"{services}:7: Service default/big: spec.ports[0]: 252 ready endpoints are more "
        "than datapath.maglevTableSize 251 (Maglev needs a prime well above the endpoint "
        "count, e.g. 32749)"
    )


def test_as_many_backends_as_maglev_slots_plans(tmp_path: Path) -> None:
    node, services = _write(tmp_path, 251, "maglev", 251)
    plan = make_plan(load_inputs(node, [services]))
    assert [len(f.backends) for f in plan.frontends] == [251]

"""Property tests of the config stage over generated inputs (tests/strategies.py).

The number of examples comes from the Hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import (
    TEST_RANGE,
    GeneratedConfig,
    hostile_names,
    invalid_configs,
    to_yaml,
    valid_configs,
)

from bpfgen.errors import InputError
from bpfgen.inputs import load_inputs
from bpfgen.model import Inputs


def load_texts(directory: Path, node_yaml: str, services_yaml: str, strict: bool = False) -> Inputs:
    node, services = directory / "node.yaml", directory / "services.yaml"
    node.write_text(node_yaml)
    services.write_text(services_yaml)
    return load_inputs(node, [services], strict)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-properties")


def addresses_in(inputs: Inputs) -> list[IPv4Address]:
    node = inputs.node
    found = list(node.addresses)
    for network in (node.pod_cidr, node.cluster_pod_cidr, node.service_cidr):
        found += [network.network_address, network.broadcast_address]
    for s in inputs.services:
        found += [*s.cluster_ips, *s.external_ips, *s.load_balancer_ips]
        found += [b.address for p in s.ports for b in p.backends]
    return found


@given(valid_configs(max_services=12, max_endpoints=16))
def test_valid_configs_load(scratch: Path, cfg: GeneratedConfig) -> None:
    inputs = load_texts(scratch, cfg.node_yaml, cfg.services_yaml)
    assert len(inputs.services) == cfg.n_services
    assert len(inputs.notices) == cfg.n_skipped
    assert sum(len(s.ports) for s in inputs.services) == cfg.n_ports
    assert sum(len(p.backends) for s in inputs.services for p in s.ports) == cfg.n_backends
    assert inputs.node.name == cfg.node_name
    assert inputs.node.service_cidr == IPv4Network(cfg.service_cidr)
    assert inputs.node.node_port_range == cfg.node_port_range
    assert inputs.node.snat_port_range == cfg.snat_port_range
    assert inputs.node.masquerade_all is cfg.masquerade_all
    assert all(a in TEST_RANGE for a in addresses_in(inputs))
    keys = [(s.namespace, s.name) for s in inputs.services]
    assert keys == sorted(keys)
    for s in inputs.services:
        facts = cfg.services[s.key]
        assert str(s.cluster_ips[0]) == facts["cluster_ip"]
        assert s.type.value == facts["type"]
        assert s.session_affinity_timeout == facts["affinity"]
        assert (s.external_traffic_local, s.internal_traffic_local) == (
            facts["external_local"],
            facts["internal_local"],
        )
        for p in s.ports:
            assert len(p.backends) == facts["backends"]
            order = [(b.address, b.port) for b in p.backends]
            assert order == sorted(set(order))
            assert all(b.local == (b.node_name == cfg.node_name) for b in p.backends)


@given(invalid_configs(strict=True))
def test_invalid_configs_are_refused(scratch: Path, case: tuple[str, str, str]) -> None:
    node_yaml, services_yaml, expected = case
    with pytest.raises(InputError) as raised:
        load_texts(scratch, node_yaml, services_yaml, strict=True)
    text = str(raised.value)
    assert expected in text
    # One line per problem: no input value can break the report's layout.
    assert len(text.splitlines()) == len(raised.value.problems)


@given(
    valid_configs(max_services=3, max_endpoints=2),
    hostile_names(),
    st.sampled_from(["metadata.name", "metadata.namespace", "port name", "slice label"]),
)
def test_hostile_names_never_pass(
    scratch: Path, cfg: GeneratedConfig, name: str, where: str
) -> None:
    # The generated services use offsets 1.. of the service CIDR: the victim takes 0.
    target: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "victim", "namespace": "default"},
        "spec": {
            "clusterIP": str(IPv4Network(cfg.service_cidr)[0]),
            "ports": [{"name": "http", "port": 80}],
        },
    }
    slice_: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "victim-1",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "victim"},
        },
        "addressType": "IPv4",
        "endpoints": [],
    }
    if where == "port name":
        target["spec"]["ports"][0]["name"] = name
    elif where == "slice label":
        slice_["metadata"]["labels"]["kubernetes.io/service-name"] = name
    else:
        target["metadata"][where.split(".")[1]] = name
    with pytest.raises(InputError) as raised:
        load_texts(
            scratch,
            cfg.node_yaml,
            to_yaml({"kind": "List", "apiVersion": "v1", "items": [*cfg.objects, target, slice_]}),
        )
    assert len(str(raised.value).splitlines()) == len(raised.value.problems) == 1


@given(valid_configs(max_services=4, max_endpoints=4))
def test_emitted_yaml_reads_back(cfg: GeneratedConfig) -> None:
    assert yaml.safe_load(cfg.node_yaml) == cfg.node
    documents = [d for d in yaml.safe_load_all(cfg.services_yaml) if d is not None]
    if cfg.form == "multidoc":
        assert documents == cfg.objects
    else:
        assert documents[0]["items"] == cfg.objects


@settings(
    max_examples=1,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_two_thousand_services_generate_and_load(scratch: Path, data: st.DataObject) -> None:
    start = time.monotonic()
    cfg = data.draw(valid_configs(min_services=2000, max_services=2000, max_endpoints=4))
    generated = time.monotonic()
    inputs = load_texts(scratch, cfg.node_yaml, cfg.services_yaml)
    assert len(inputs.services) == 2000
    assert generated - start < 10, "generating 2,000 services must stay fast"

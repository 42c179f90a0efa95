"""The pool of random node configurations the model-equivalence tests of both modes run
on: each entry compiled on first use per build kind, kept loaded for the module."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from manifests import as_json

from bpfgen.compiler import compile_build
from bpfgen.inputs import load_inputs
from bpfgen.model import Inputs
from bpfgen_runtime.testrun import BuildUnderTest
from tests.shared_inputs import shared_inputs

T = TypeVar("T")

NODE_PORT_RANGE = (30000, 32767)  # cluster.nodePortRange of every pool entry

Documents = Callable[[int], tuple[dict[str, Any], dict[str, Any]]]  # entry -> node, services


def write_documents(documents: Documents, index: int, directory: Path) -> tuple[Path, Path]:
    """The entry's files (JSON is YAML) at paths named by their contents (the 6.1 VM's
    compile of the same entry is a build-cache hit, tests/shared_inputs.py); `directory`
    is where the entry's build goes."""
    node, services = documents(index)
    directory.mkdir(parents=True, exist_ok=True)
    return shared_inputs(json.dumps(node, indent=1) + "\n", json.dumps(services, indent=1) + "\n")


@dataclass
class BuildPool(Generic[T]):
    """Entry `index` of `documents`, compiled as `kind`, loaded, with the model's view of it
    (`view(inputs, kind, manifest)`)."""

    root: Path
    documents: Documents
    view: Callable[[Inputs, str, dict[str, Any]], T]
    builds: dict[tuple[int, str], tuple[BuildUnderTest, T]] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Short, in hypothesis's report of a failing example (not every config in full)."""
        printer.text(f"BuildPool({self.root}, {len(self.builds)} builds loaded)")

    def get(self, index: int, kind: str) -> tuple[BuildUnderTest, T]:
        if (index, kind) not in self.builds:
            node_path, services_path = write_documents(
                self.documents, index, self.root / f"config-{index}"
            )
            inputs = load_inputs(node_path, [services_path])
            result = compile_build(
                node_path,
                [services_path],
                self.root / f"config-{index}-{kind}",
                build=kind,
                verify=False,
            )
            assert as_json(result)["config_sha256"] == inputs.sha256
            self.builds[(index, kind)] = (
                BuildUnderTest(result.out),
                self.view(inputs, kind, as_json(result)),
            )
        return self.builds[(index, kind)]


def open_pool(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    documents: Documents,
    view: Callable[[Inputs, str, dict[str, Any]], T],
    title: str,
    counts: Mapping[tuple[str, str], int],
) -> Iterator[BuildPool[T]]:
    """For a module fixture: the pool, then every build closed and `counts` printed."""
    if os.geteuid() != 0:
        pytest.fail("kernel tests load BPF programs: run them as root", pytrace=False)
    pool = BuildPool(tmp_path_factory.mktemp(name), documents, view)
    yield pool
    for build, _ in pool.builds.values():
        build.close()
    print(f"\n{title}:", ", ".join(f"{a}/{b}: {n}" for (a, b), n in sorted(counts.items())))


@dataclass
class PortClaims:
    """The frontends and NodePorts a generated Service list already uses."""

    frontends: set[tuple[str, int, str]] = field(default_factory=set)
    node_ports: set[tuple[int, str]] = field(default_factory=set)

    def port(
        self,
        rng: random.Random,
        name: str,
        port: int,
        proto: str,
        addrs: set[str],
        service_type: str,
    ) -> dict[str, Any] | None:
        """A Service port on `addrs` (None: one of them has it already), with a NodePort
        for NodePort/LoadBalancer services when the drawn one is free."""
        if any((a, port, proto) in self.frontends for a in addrs):
            return None
        self.frontends.update((a, port, proto) for a in addrs)
        entry: dict[str, Any] = {"name": name, "port": port, "protocol": proto}
        if service_type != "ClusterIP":
            node_port = rng.randrange(*NODE_PORT_RANGE)
            if (node_port, proto) not in self.node_ports:
                self.node_ports.add((node_port, proto))
                entry["nodePort"] = node_port
        return entry


def max_entries(manifest: dict[str, Any], *names: str) -> set[int]:
    """The capacities the manifest states for the maps `names`."""
    return {m["max_entries"] for m in manifest["maps"] if m["name"] in names}


def source_ranges(seed: int, service: int, node_addr: str, cluster_pods: str) -> list[str] | None:
    """spec.loadBalancerSourceRanges for LoadBalancer Service number `service` of pool entry
    `seed`, half the time: ranges the packet generators' sources fall in and out of
    (their external clients, the pods, a node address: the LB IP then allowed too; /0:
    no restriction). An rng of its own, so the rest of the entry is as it was."""
    rng = random.Random(f"source-ranges-{seed}-{service}")
    if rng.random() < 0.5:
        return None
    pool = [
        "203.0.113.0/24",
        "192.0.2.0/25",
        "198.18.64.0/26",
        cluster_pods,
        f"{node_addr}/32",
        "198.18.64.128/25",
        "0.0.0.0/0",
    ]
    return rng.sample(pool, rng.randint(1, 3))

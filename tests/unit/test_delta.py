"""The agent's run-stage updates (bpfgen/delta.py) are what a full compile would do.

For a generated bpf-mode config, a non-specialized build kind and one random change
to an EndpointSlice (an endpoint added, removed, turned not ready or terminating,
moved to this node; the slice deleted or a new one added), `endpoints_changed`
either falls back to the full path with a reason, or returns an update such that
the full compile of the changed config renders the same C (no new code) and its
map_init is the old one with the update applied, entry for entry.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from strategies import GeneratedConfig, valid_configs

from bpfgen.delta import (
    FRONTENDS,
    MAGLEV,
    Baseline,
    Fallback,
    endpoints_changed,
    service_key,
)
from bpfgen.inputs import load_sources, read_sources
from bpfgen.plan import make_plan
from bpfgen.plan.ir import Plan
from bpfgen.render import render

KINDS = ("image", "frozen", "generic")
OPS = ("add", "drop", "not-ready", "terminating", "local", "delete-slice", "new-slice")


def compiled(tmp: Path, cfg: GeneratedConfig, objects: list[dict[str, Any]], kind: str) -> Any:
    node, services = tmp / "node.yaml", tmp / "services.yaml"  # one path: Service.source
    node.write_text(cfg.node_yaml)
    services.write_text(_manifest(objects))
    read = read_sources(node, [services])
    inputs = load_sources(read)
    plan = make_plan(inputs, build=kind)
    return read[0], inputs, plan, {f.path: f.text for f in render(plan).files}


def _manifest(objects: list[dict[str, Any]]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=1)


def maps_of(plan: Plan) -> dict[str, dict[bytes, bytes]]:
    return {name: dict(entries) for name, entries in plan.map_init.items()}


Maps = dict[str, dict[bytes, bytes]]


def applied(before: Maps, writes: Sequence[tuple[str, list[Any]]],
            removals: Sequence[tuple[str, list[bytes]]]) -> Maps:  # fmt: skip
    out = copy.deepcopy(before)
    for name, entries in writes:
        out.setdefault(name, {}).update(entries)
    for name, keys in removals:
        for k in keys:
            del out[name][k]
    if MAGLEV in out:  # an array: a row of zeros is a row the plan does not list
        out[MAGLEV] = {k: v for k, v in out[MAGLEV].items() if any(v)}
    return out


def mutate(draw: st.DrawFn, cfg: GeneratedConfig) -> tuple[list[dict[str, Any]], str | None]:
    """One change to one EndpointSlice: the new objects, and the Service it is for."""
    objects = copy.deepcopy(cfg.objects)
    slices = [i for i, o in enumerate(objects) if o["kind"] == "EndpointSlice"]
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"]
                in {k.split("/")[1] for k in cfg.services}]  # fmt: skip
    op = draw(st.sampled_from(OPS))
    pods = ipaddress.IPv4Network(cfg.cluster_pod_cidr)
    if op == "new-slice" or not slices:
        svc = draw(st.sampled_from(services))
        meta = svc["metadata"]
        port = svc["spec"]["ports"][0]
        addr = pods.network_address + draw(st.integers(1, pods.num_addresses - 2))
        objects.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{meta['name']}-extra", "namespace": meta["namespace"],
                         "labels": {"kubernetes.io/service-name": meta["name"]}},
            "addressType": "IPv4",
            "ports": [{"name": port.get("name", ""), "port": 8443,
                       "protocol": port.get("protocol", "TCP")}],
            "endpoints": [{"addresses": [str(addr)], "conditions": {"ready": True},
                           "nodeName": draw(st.sampled_from([cfg.node_name, "node-z"]))}],
        })  # fmt: skip
        return objects, service_key(objects[-1])
    index = draw(st.sampled_from(slices))
    slice_ = objects[index]
    key = service_key(slice_)
    endpoints = slice_["endpoints"]
    if op == "delete-slice":
        del objects[index]
    elif op == "add" or not endpoints:
        addr = pods.network_address + draw(st.integers(1, pods.num_addresses - 2))
        where = draw(st.sampled_from([cfg.node_name, "node-z"]))
        endpoints.append({"addresses": [str(addr)], "conditions": {"ready": True},
                          "nodeName": where})  # fmt: skip
    else:
        e = endpoints[draw(st.integers(0, len(endpoints) - 1))]
        if op == "drop":
            endpoints.remove(e)
        elif op == "not-ready":
            e["conditions"] = {"ready": False, "serving": False, "terminating": False}
        elif op == "terminating":
            e["conditions"] = {"ready": False, "serving": True, "terminating": True}
        else:
            e["nodeName"] = cfg.node_name
    return objects, key


def changed_of(objects: list[dict[str, Any]], key: str) -> dict[str, Any]:
    svc = next(
        (o for o in objects if o["kind"] == "Service"
         and f"{o['metadata']['namespace']}/{o['metadata']['name']}" == key),
        None,
    )  # fmt: skip
    slices = [o for o in objects if o["kind"] == "EndpointSlice" and service_key(o) == key]
    return {key: (svc, slices)}


@given(
    cfg=valid_configs(min_services=1, max_services=5, max_endpoints=5, modes=("bpf",)),
    kind=st.sampled_from(KINDS),
    data=st.data(),
)
def test_an_endpoint_change_is_what_the_full_compile_does(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig, kind: str, data: st.DataObject
) -> None:
    tmp = tmp_path_factory.mktemp("delta")
    node_source, inputs, plan, c_before = compiled(tmp, cfg, cfg.objects, kind)
    base = Baseline.of(node_source, inputs, plan)
    objects, key = mutate(data.draw, cfg)
    assert key is not None
    maps_before = maps_of(plan)
    try:
        update = endpoints_changed(base, changed_of(objects, key))
    except Fallback as exc:
        event(f"fallback: {str(exc).split(':')[-1].strip()}")
        assert str(exc)
        return
    event(f"update: {'no entries' if not update.entries else 'entries'}")
    _, _, plan_after, c_after = compiled(tmp, cfg, objects, kind)
    assert c_after == c_before  # no new code
    assert applied(maps_before, update.writes, update.removals) == applied(
        maps_of(plan_after), [], []
    )
    assert base.frontends == list(plan_after.frontends)
    names = [name for name, _ in update.writes]
    assert FRONTENDS not in names or names[-1] == FRONTENDS  # the frontend entry last


@settings(max_examples=5)
@given(cfg=valid_configs(min_services=1, max_services=2, modes=("bpf", "ipvs")))
def test_the_specialized_build_and_the_ipvs_mode_take_the_full_path(
    tmp_path_factory: pytest.TempPathFactory, cfg: GeneratedConfig
) -> None:
    kind = "specialized" if cfg.mode == "bpf" else "image"
    node_source, inputs, plan, _ = compiled(tmp_path_factory.mktemp("full"), cfg, cfg.objects, kind)
    with pytest.raises(Fallback, match="specialized build" if cfg.mode == "bpf" else "ipvs mode"):
        Baseline.of(node_source, inputs, plan)

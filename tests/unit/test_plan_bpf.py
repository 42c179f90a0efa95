"""The bpf mode's plan (docs/datapath-bpf.md), without a kernel: config defaults,
backends per frontend after the traffic policies, selection tables and where
they live, the map_init the runtime writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bpf_inputs import STICKY_TIMEOUT, node_config, services, write_inputs

from bpfgen import maglev
from bpfgen.inputs import load_inputs
from bpfgen.model import DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_SELECTION_SEED, Mode
from bpfgen.plan import BPF_COUNTER_NAMES, COUNTER_NAMES, FrontendKind, Plan, make_plan
from bpfgen_runtime.contract import layouts


def _plan(
    tmp_path: Path, node: dict[str, Any], svcs: dict[str, Any], build: str = "specialized"
) -> Plan:
    node_path, services_path = write_inputs(tmp_path, node, svcs)
    return make_plan(load_inputs(node_path, [services_path]), build=build)


def test_bpf_mode_defaults(tmp_path: Path) -> None:
    node = node_config()
    node["datapath"] = {"mode": "bpf"}
    plan = _plan(tmp_path, node, services())
    assert plan.mode is Mode.BPF and plan.scheduler == "random" and plan.node is not None
    assert plan.node.maglev_table_size == DEFAULT_MAGLEV_TABLE_SIZE == 16381
    assert plan.node.selection_seed == DEFAULT_SELECTION_SEED
    assert plan.decision("BPFGEN_SELECTION_SEED").value == f"0x{DEFAULT_SELECTION_SEED:08x}U"
    assert [p.name for p in plan.programs] == ["svc_in"]  # no egress program in bpf mode
    assert plan.counter_names == BPF_COUNTER_NAMES
    assert BPF_COUNTER_NAMES[: len(COUNTER_NAMES)] == COUNTER_NAMES


def test_backends_per_frontend_sorted_and_empty_recorded(tmp_path: Path) -> None:
    plan = _plan(tmp_path, node_config(), services())
    got = {
        (f.kind, str(f.addr), f.port, f.protocol.value): [
            (str(b.address), b.port) for b in f.backends
        ]
        for f in plan.frontends
    }
    web = [("198.19.1.5", 8080), ("198.19.2.13", 8080), ("198.19.3.7", 8080)]
    assert got[(FrontendKind.CLUSTER_IP, "198.18.128.10", 80, "TCP")] == web
    assert got[(FrontendKind.NODE_PORT, "None", 30080, "TCP")] == web
    assert got[(FrontendKind.CLUSTER_IP, "198.18.128.11", 80, "TCP")] == []
    assert "reject (TCP RST, ICMP unreachable)" in plan.to_text()


def _with_policies(external: bool, internal: bool) -> dict[str, Any]:
    svcs = services()
    spec = svcs["items"][0]["spec"]
    if external:
        spec["externalTrafficPolicy"] = "Local"
    if internal:
        spec["internalTrafficPolicy"] = "Local"
    # An endpoint in this node's podCIDR without nodeName is local too (the spec's rule).
    svcs["items"][1]["endpoints"][0].pop("nodeName")
    return svcs


@pytest.mark.parametrize(("external", "internal"), [(True, False), (False, True), (True, True)])
def test_traffic_policy_local_keeps_this_nodes_backends(
    tmp_path: Path, external: bool, internal: bool
) -> None:
    plan = _plan(tmp_path, node_config(), _with_policies(external, internal))
    for f in plan.frontends:
        if f.service != "default/web":
            continue
        # The hidden frontend of both Local policies is the pods' Cluster-policy one.
        local = (
            internal
            if f.kind is FrontendKind.CLUSTER_IP
            else external and f.kind is not FrontendKind.POD_SHORTCUT
        )
        want = ["198.19.1.5"] if local else ["198.19.1.5", "198.19.2.13", "198.19.3.7"]
        assert [str(b.address) for b in f.backends] == want, f.label


def test_maglev_tables_in_rodata_are_bpfgen_maglev_tables(tmp_path: Path) -> None:
    plan = _plan(tmp_path, node_config("maglev", 251), services())
    assert plan.svc is not None and plan.svc.maglev_in_rodata
    assert plan.decision("BPFGEN_MAGLEV_IN_MAP").value == "0"
    for sf in plan.svc.frontends:
        if not sf.frontend.backends:
            assert sf.table is None
            continue
        assert sf.table is not None
        keys = [maglev.Backend.of(b) for b in sf.frontend.backends]
        assert plan.svc.tables[sf.table] == maglev.build_table(keys, 251)
    assert len(plan.svc.tables) == 2  # TCP and UDP backends differ; ClusterIP and NodePort share


def test_generic_build_writes_tables_to_map_init(tmp_path: Path) -> None:
    plan = _plan(tmp_path, node_config("maglev", 251), services(), build="generic")
    assert plan.svc is not None and not plan.svc.maglev_in_rodata
    frontends = dict(plan.map_init["bpfgen_svc_frontends"])
    assert len(frontends) == 7 + 3  # and the three VIPs, as (VIP, 0, ICMP): answer pings
    values = sorted(layouts.SvcValue.from_buffer_copy(v).n_backends for v in frontends.values())
    assert values == [0, 0, 0, 0, 0, 3, 3, 3, 3, 3]
    sticky = [
        layouts.SvcValue.from_buffer_copy(v)
        for v in frontends.values()
        if layouts.SvcValue.from_buffer_copy(v).affinity_s
    ]
    assert [(v.affinity_s, v.affinity_id == v.id) for v in sticky] == [(STICKY_TIMEOUT, True)]
    vips = [
        layouts.FrontendKey.from_buffer_copy(k)
        for k, v in frontends.items()
        if layouts.SvcValue.from_buffer_copy(v).id == 0xFFFFFFFF
    ]
    assert sorted((bytes(k.addr), k.proto) for k in vips) == [
        (bytes([198, 18, 128, 10]), 1),
        (bytes([198, 18, 128, 11]), 1),
        (bytes([198, 18, 128, 12]), 1),
    ]
    assert len(plan.map_init["bpfgen_svc_backends"]) == 15
    members = dict(plan.map_init["bpfgen_svc_members"])  # value 1: draining
    assert sorted(int.from_bytes(v, "little") for v in members.values()) == [0] * 15 + [1] * 4
    rows = list(plan.map_init["bpfgen_svc_maglev"])  # a whole table per frontend with backends
    assert len(rows) == 5 and all(len(v) == 2 * 251 for _, v in rows)
    ids = {f.index: f for f in plan.frontends}
    for k, v in rows:
        f = ids[int.from_bytes(k, "little")]
        table = maglev.build_table([maglev.Backend.of(b) for b in f.backends], 251)
        assert [int.from_bytes(v[i : i + 2], "little") for i in range(0, len(v), 2)] == list(table)
    assert json.dumps(plan.to_dict()["svc"])  # the manifest's svc table is JSON
    assert plan.runtime_config is not None
    cfg = layouts.Config.from_buffer_copy(plan.runtime_config)
    assert cfg.selection_seed == 0x1234ABCD


def test_socket_lb_plans_the_cgroup_programs(tmp_path: Path) -> None:
    """datapath.socketLB: four programs in sock.bpf.o on the node config's cgroup, the
    reverse map, and the two decisions; off (the default), none of it."""
    node = node_config(socket_lb=True)
    node["datapath"]["cgroup"] = "/sys/fs/cgroup/kubepods"
    plan = _plan(tmp_path, node, services())
    sock = [p for p in plan.programs if p.object == "sock.bpf.o"]
    assert [(p.name, p.section, p.entry) for p in sock] == [
        ("sock_connect4", "cgroup/connect4", "bpfgen_sock_forward"),
        ("sock_sendmsg4", "cgroup/sendmsg4", "bpfgen_sock_forward"),
        ("sock_recvmsg4", "cgroup/recvmsg4", "bpfgen_sock_reverse"),
        ("sock_getpeername4", "cgroup/getpeername4", "bpfgen_sock_reverse"),
    ]
    assert {(a.interface, a.hook) for p in sock for a in p.attach} == {
        ("/sys/fs/cgroup/kubepods", h)
        for h in ("cgroup_connect4", "cgroup_sendmsg4", "cgroup_recvmsg4", "cgroup_getpeername4")
    }
    rev = next(m for m in plan.maps if m.name == "bpfgen_sock_rev_v4")
    assert (rev.type, rev.key_size, rev.value_size, rev.max_entries) == (
        "BPF_MAP_TYPE_LRU_HASH",
        16,
        8,
        64,
    )
    assert all(p.maps == plan.programs[0].maps for p in sock)
    assert plan.decision("BPFGEN_SOCK_CLIENT").value == "__bpf_constant_htonl(0xc6120002)"
    assert "cgroup_connect4 on /sys/fs/cgroup/kubepods (node)" in plan.to_text()
    generic = _plan(tmp_path, node, services(), "generic")
    assert generic.decision("BPFGEN_SOCK_CLIENT").value == "(bpfgen_cfg.node_addrs[0])"
    off = _plan(tmp_path, node_config(), services())
    assert [p.name for p in off.programs] == ["svc_in"]
    assert "bpfgen_sock_rev_v4" not in {m.name for m in off.maps}
    with pytest.raises(KeyError):
        off.decision("BPFGEN_SOCK_LB")

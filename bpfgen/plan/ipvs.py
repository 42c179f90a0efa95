"""The ipvs mode's plan: IPVS does DNAT; bpfgen's programs do SNAT.

Three programs (docs/datapath.md): `ingress` at tc ingress on every interface
(reverse SNAT, then mark service traffic that needs SNAT), `egress` at tc egress
(SNAT), and `ingress_xdp` on interfaces with `hook: xdp` (reverse SNAT before the
stack). Their maps: the SNAT sessions, the counters, and the frontends when they
are looked up in a map.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address

from bpfgen.model import Hook, Inputs
from bpfgen.plan.ir import (
    COUNTER_NAMES,
    Attachment,
    CCase,
    Frontend,
    MapPlan,
    Plan,
    ProgramPlan,
    be32_expr,
)
from bpfgen.plan.shared import (
    BPF_MAP_TYPE_HASH,
    PlanBasis,
    ctypes_size,
    frontend_entry,
    inline_frontends,
    node_decisions,
    session_maps,
    source_range_maps,
)
from bpfgen_runtime.contract import Hook as AttachHook
from bpfgen_runtime.contract import layouts


def plan(basis: PlanBasis) -> Plan:
    """datapath.mode ipvs."""
    inputs, node, frontends = basis.inputs, basis.inputs.node, basis.frontends
    decisions = node_decisions(
        basis,
        icmp_reason="ICMP echo translation "
        + ("kept" if node.icmp_echo else "off (compiled out when specialized)"),
        sessions_map="bpfgen_snat_v4 and bpfgen_rsnat_v4",
        frontends_map="bpfgen_frontends",
    )
    maps = session_maps(
        node.max_sessions,
        ("bpfgen_snat_v4", layouts.SnatEntry, "SNAT sessions by original tuple"),
        ("bpfgen_rsnat_v4", layouts.RsnatEntry, "reply tuple -> original source"),
        len(COUNTER_NAMES),
    )
    map_init: dict[str, Sequence[tuple[bytes, bytes]]] = {}
    # Addresses IPVS binds on its dummy device; a node address is one the node's own
    # services rightly answer on, and is never guarded.
    vips = sorted({f.addr for f in frontends if f.addr is not None} - set(node.addresses))
    if basis.in_map:
        maps.append(
            MapPlan(
                "bpfgen_frontends",
                "BPF_MAP_TYPE_HASH",
                BPF_MAP_TYPE_HASH,
                ctypes_size(layouts.FrontendKey),
                ctypes_size(layouts.FrontendValue),
                basis.frontends_max,
                True,
                "service frontends -> masquerade policy",
            )
        )
        map_init["bpfgen_frontends"] = tuple(frontend_entry(f) for f in frontends) + tuple(
            vip_entry(a) for a in vips
        )
    src_maps, src_init = source_range_maps(basis.source_ranges)
    maps += src_maps
    map_init.update(src_init)
    return basis.plan(
        decisions=decisions,
        vips=tuple(CCase(be32_expr(a), _vip_comment(a, frontends)) for a in vips),
        inline=() if basis.in_map else inline_frontends(frontends),
        maps=maps,
        map_init=map_init,
        programs=_programs(inputs, tuple(m.name for m in maps)),
        counter_names=COUNTER_NAMES,
    )


def vip_entry(addr: IPv4Address) -> tuple[bytes, bytes]:
    """bpfgen_frontends entry (VIP, port 0, protocol 0): "a VIP", no frontend."""
    key = layouts.FrontendKey(addr=layouts.be32(addr), port=layouts.be16(0), proto=0)
    return layouts.to_bytes(key), layouts.to_bytes(layouts.FrontendValue(masq=0))


def _vip_comment(addr: IPv4Address, frontends: tuple[Frontend, ...]) -> str:
    users = sorted({f"{f.kind.value} of {f.service}" for f in frontends if f.addr == addr})
    return f"{addr}: " + ", ".join(users)


def _programs(inputs: Inputs, shared: tuple[str, ...]) -> tuple[ProgramPlan, ...]:
    node = inputs.node
    tc_ingress = tuple(Attachment(i.role, i.name, AttachHook.TC_INGRESS) for i in node.interfaces)
    tc_egress = tuple(Attachment(i.role, i.name, AttachHook.TC_EGRESS) for i in node.interfaces)
    xdp = tuple(
        Attachment(i.role, i.name, AttachHook.XDP) for i in node.interfaces if i.hook is Hook.XDP
    )
    progs = [
        ProgramPlan(
            "ingress",
            "ingress.bpf.c.j2",
            "ingress.bpf.c",
            "ingress.bpf.o",
            "bpfgen_ingress",
            "tc",
            "bpfgen_ctx_tc.h",
            tc_ingress,
            shared,
            "reverse SNAT, then mark service traffic that needs SNAT",
        ),
        ProgramPlan(
            "egress",
            "egress.bpf.c.j2",
            "egress.bpf.c",
            "egress.bpf.o",
            "bpfgen_egress",
            "tc",
            "bpfgen_ctx_tc.h",
            tc_egress,
            shared,
            "SNAT marked, hairpin and node-to-ClusterIP traffic",
        ),
    ]
    if xdp:
        progs.append(
            ProgramPlan(
                "ingress_xdp",
                "ingress_xdp.bpf.c.j2",
                "ingress_xdp.bpf.c",
                "ingress_xdp.bpf.o",
                "bpfgen_ingress_xdp",
                "xdp",
                "bpfgen_ctx_xdp.h",
                xdp,
                shared,
                "reverse SNAT before the stack (tc ingress still marks)",
            )
        )
    return tuple(progs)

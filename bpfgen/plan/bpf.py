"""The bpf mode's plan: bpfgen's programs do the service DNAT, SNAT and forwarding.

`svc_in` at tc ingress on every interface (and `svc_xdp` on an uplink with
`hook: xdp`) selects a backend (random or Maglev, ClientIP affinity), translates
and forwards with `bpf_fib_lookup` + `bpf_redirect_neigh` (docs/datapath-bpf.md);
with `datapath.socketLB`, cgroup sock_addr programs translate node processes'
connections at the socket. Here: the selection tables and where they live (code,
`.rodata` or maps), the bpf mode's maps, decisions and programs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from ipaddress import IPv4Address

from bpfgen import maglev
from bpfgen.model import Backend, Hook, Inputs, Role, Scheduler
from bpfgen.plan.ir import (
    BPF_COUNTER_NAMES,
    Attachment,
    CCase,
    Decision,
    Frontend,
    FrontendKind,
    MapPlan,
    Plan,
    ProgramPlan,
    SvcFrontend,
    SvcPlan,
    be16_expr,
    be32_expr,
)
from bpfgen.plan.shared import (
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_HASH,
    BPF_MAP_TYPE_LRU_HASH,
    IPPROTO_ICMP,
    PlanBasis,
    ctypes_size,
    frontend_entry,
    id_result,
    inline_frontends,
    node_decisions,
    pow2_at_least,
    session_maps,
    source_range_maps,
)
from bpfgen_runtime.contract import Hook as AttachHook
from bpfgen_runtime.contract import layouts

#: bpf mode, specialized build with frontends as code: the Maglev tables are
#: `static const` arrays in `.rodata` while their total stays within this
#: budget (4 distinct tables of the default 16381 slots, as docs/datapath-bpf.md
#: suggests); above, or in map builds, they live in the array map bpfgen_svc_maglev.
MAGLEV_RODATA_BUDGET = 4 * 16381 * 2

#: The seed of the Maglev permutations (docs/maglev.md "How the plan uses it": S).
MAGLEV_TABLE_SEED = 0

#: bpf mode, datapath.socketLB: the cgroup sock_addr programs, by hook (manifest
#: attach.hook, the runtime's attach type): (program name, ELF section, entry in
#: bpfgen_sock.h, purpose).
CGROUP_HOOKS = {
    AttachHook.CGROUP_CONNECT4: (
        "sock_connect4", "cgroup/connect4", "bpfgen_sock_forward",
        "TCP and connected UDP: a frontend's address -> a backend (connect)"),
    AttachHook.CGROUP_SENDMSG4: (
        "sock_sendmsg4", "cgroup/sendmsg4", "bpfgen_sock_forward",
        "unconnected UDP: a frontend's address -> a backend (sendmsg)"),
    AttachHook.CGROUP_RECVMSG4: (
        "sock_recvmsg4", "cgroup/recvmsg4", "bpfgen_sock_reverse",
        "UDP: a backend's reply shown from the frontend's VIP:port"),
    AttachHook.CGROUP_GETPEERNAME4: (
        "sock_getpeername4", "cgroup/getpeername4", "bpfgen_sock_reverse",
        "getpeername: the backend shown as the frontend's VIP:port"),
}  # fmt: skip


def _backend_init(b: Backend) -> CCase:
    return CCase(
        f"{{ .addr = {be32_expr(b.address)}, .port = {be16_expr(b.port)} }}",
        f"{b.address}:{b.port}" + (" (local)" if b.local else ""),
    )


def _svc_plan(inputs: Inputs, frontends: tuple[Frontend, ...], in_map: bool) -> SvcPlan:
    """Selection tables, and whether the Maglev ones fit .rodata (docs/datapath-bpf.md)."""
    node = inputs.node
    m = node.maglev_table_size
    tables: dict[tuple[Backend, ...], list[Frontend]] = {}
    if node.scheduler is Scheduler.MAGLEV:
        for f in frontends:
            if f.backends:
                tables.setdefault(f.backends, []).append(f)
    size = len(tables) * m * 2
    if node.scheduler is not Scheduler.MAGLEV:
        in_rodata, reason = False, "scheduler random: no Maglev tables"
    elif in_map:
        in_rodata, reason = False, "frontends in maps: tables in the array map bpfgen_svc_maglev"
    elif size > MAGLEV_RODATA_BUDGET:
        in_rodata, reason = (
            False,
            (
                f"{len(tables)} distinct tables x {m} slots x 2 bytes = {size} > "
                f"{MAGLEV_RODATA_BUDGET} bytes (.rodata budget): array map bpfgen_svc_maglev"
            ),
        )
    else:
        in_rodata, reason = (
            True,
            (
                f"{len(tables)} distinct tables x {m} slots x 2 bytes = {size} <= "
                f"{MAGLEV_RODATA_BUDGET} bytes (.rodata budget): static const arrays"
            ),
        )
    order = list(tables)
    # The distinct backend lists, one flat array: frontend i selects from [first, first + n)
    # and keeps sessions whose backend is in its member list (the same slice unless it has
    # draining endpoints).
    firsts: dict[tuple[Backend, ...], int] = {}
    flat: list[CCase] = []

    def place(f: Frontend, bs: tuple[Backend, ...], what: str) -> None:
        if bs and bs not in firsts:
            firsts[bs] = len(flat)
            for i, b in enumerate(bs):
                c = _backend_init(b)
                flat.append(CCase(c.expr, f"[{len(flat)}] #{f.index} {what}[{i}] {c.comment}"))

    for f in frontends:
        place(f, f.backends, "backend")
    for f in frontends:
        place(f, f.members, "member")
    built = (
        tuple(
            maglev.build_table([maglev.Backend.of(b) for b in bs], m, seed=MAGLEV_TABLE_SEED)
            for bs in order
        )
        if in_rodata
        else ()
    )
    return SvcPlan(
        scheduler=node.scheduler,
        maglev_size=m,
        maglev_in_rodata=in_rodata,
        maglev_reason=reason,
        frontends=tuple(
            SvcFrontend(
                f,
                firsts.get(f.backends, 0),
                order.index(f.backends) if in_rodata and f.backends else None,
                firsts.get(f.members, 0),
            )
            for f in frontends
        ),
        tables=built,
        table_users=tuple(", ".join(f"#{f.index}" for f in tables[bs]) for bs in order)
        if in_rodata
        else (),
        backends=tuple(flat),
        draining=any(f.draining for f in frontends),
        moduli=tuple(sorted({len(f.backends) for f in frontends if f.backends})),
        vips=tuple(CCase(be32_expr(a), str(a)) for a in _vips(frontends)),
    )


def backends_max_for(total_members: int) -> int:
    """bpfgen_svc_backends' and _members' size for this many members over all frontends:
    2x, a power of two, at least 64 (compiled in: a change needs new code)."""
    return max(64, pow2_at_least(2 * total_members))


def maglev_table(inputs: Inputs, f: Frontend) -> tuple[int, ...]:
    """The Maglev table of a frontend, as the plan builds it (for map_init and tests)."""
    return maglev.build_table(
        [maglev.Backend.of(b) for b in f.backends],
        inputs.node.maglev_table_size,
        seed=MAGLEV_TABLE_SEED,
    )


class MaglevRows(Sequence[tuple[bytes, bytes]]):
    """bpfgen_svc_maglev's map_init entries: (frontend id, its whole Maglev table).

    Computed when read, one at a time, never kept: a table is 2 * M bytes (32 KiB at
    the default M), so 10,000 frontends' tables are 320 MiB, and as Python objects
    (a tuple of ints, or an entry per slot) many times that. The compiler streams
    them into map_init.json (docs/testing.md, "Memory").
    """

    def __init__(self, frontends: tuple[Frontend, ...], size: int, seed: int) -> None:
        self._frontends = frontends
        self._size = size
        self._seed = seed
        # The last table: a Service port's frontends (ClusterIP, NodePort, ...) come one
        # after the other with the same backends, and share it.
        self._last: tuple[tuple[Backend, ...], bytes] | None = None

    def __len__(self) -> int:
        return len(self._frontends)

    def __getitem__(self, i: int) -> tuple[bytes, bytes]:  # type: ignore[override]
        f = self._frontends[i]
        if self._last is None or self._last[0] != f.backends:
            row = maglev.table_bytes(
                [maglev.Backend.of(b) for b in f.backends], self._size, seed=self._seed
            )
            self._last = (f.backends, row)
        return f.index.to_bytes(4, "little"), self._last[1]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return (self[i] for i in range(len(self)))


def plan(basis: PlanBasis) -> Plan:
    """datapath.mode bpf: one tc ingress program, bpfgen_svc_in, on every interface."""
    inputs, node, frontends, in_map = basis.inputs, basis.inputs.node, basis.frontends, basis.in_map
    generic = basis.generic
    svc = _svc_plan(inputs, frontends, in_map)
    total_members = sum(len(f.members) for f in frontends)
    backends_max = backends_max_for(total_members)
    # Generic and frozen builds: a row per possible frontend id (headroom as for
    # bpfgen_svc_frontends), so that their C does not change when a Service is added
    # and a node without clang keeps its objects (docs/agent.md).
    rows = basis.frontends_max if generic else max(1, len(frontends))
    no_backend = [f for f in frontends if not f.backends]
    most = max((len(f.members) for f in frontends), default=0)
    draining = sum(len(f.draining) for f in frontends)
    sticky = [f for f in frontends if f.affinity_timeout is not None]
    shortcuts = [f for f in frontends if f.kind is FrontendKind.POD_SHORTCUT]

    def counted(n: int, what: str) -> str:
        """`n what` in a specialized build's comments; in the others, whose C must not
        change with the Services (build.py reuse), no count."""
        return what if generic else f"{n} {what}"

    decisions = node_decisions(
        basis,
        icmp_reason="echo requests to VIPs answered by svc_in "
        + ("(kept)" if node.icmp_echo else "(off: they pass; compiled out when specialized)"),
        sessions_map="bpfgen_nat_v4 and bpfgen_rnat_v4",
        frontends_map="bpfgen_svc_frontends",
    )
    unused = "unused in the bpf mode: no ingress mark, no egress program"
    decisions = [
        replace(d, reason=unused)
        if d.name in ("BPFGEN_MARK", "BPFGEN_SERVICE_NET", "BPFGEN_SERVICE_MASK") else d
        for d in decisions
    ]  # fmt: skip
    decisions += [
        Decision(
            "BPFGEN_MODE_BPF",
            "1",
            "datapath.mode",
            "bpf: DNAT, SNAT and forwarding in bpfgen_svc_in; no egress program",
        ),
        Decision(
            "BPFGEN_SELECTION_SEED",
            "(bpfgen_cfg.selection_seed)"
            if basis.at_load("datapath.selectionSeed")
            else f"0x{node.selection_seed:08x}U",
            "datapath.selectionSeed",
            "backend-selection hash seed, the same on every node (not BPFGEN_HASH_SEED)",
            runtime=basis.at_load("datapath.selectionSeed"),
        ),
        Decision(
            "BPFGEN_SCHED_MAGLEV",
            str(int(svc.maglev)),
            "datapath.scheduler",
            f"{node.scheduler}: "
            + ("table[h % M] (bpfgen/maglev.py)" if svc.maglev else "backend h % n")
            + "; the other scheduler compiled out",
        ),
        Decision(
            "BPFGEN_MAGLEV_SIZE",
            str(node.maglev_table_size),
            "datapath.maglevTableSize",
            "Maglev table slots M (prime)" + ("" if svc.maglev else "; unused: no Maglev"),
        ),
        Decision(
            "BPFGEN_MAGLEV_IN_MAP",
            str(int(svc.maglev and not svc.maglev_in_rodata)),
            "services",
            svc.maglev_reason,
        ),
        Decision(
            "BPFGEN_MAGLEV_ROWS",
            str(rows),
            "services",
            (
                "bpfgen_svc_maglev rows: one per possible frontend id (bpfgen_svc_frontends' size)"
                if generic
                else "bpfgen_svc_maglev rows: one per frontend id"
            )
            if svc.maglev and not svc.maglev_in_rodata
            else "unused: no bpfgen_svc_maglev map",
        ),
        Decision(
            "BPFGEN_SVC_FRONTENDS",
            "0" if in_map else str(len(frontends)),
            "services",
            "unused: frontends in maps" if in_map else "frontend ids 0..n-1",
        ),
        Decision(
            "BPFGEN_SVC_HIDDEN",
            str(int(in_map or bool(shortcuts))),
            "services",
            "frontends in maps: a sync may add a hidden frontend (0.0.0.0/8), never a destination"
            if in_map
            else f"{len(shortcuts)} hidden frontend(s) (0.0.0.0/8), never a destination: a "
            "Service port's pods when both traffic policies are Local"
            if shortcuts
            else "no hidden frontend: no Service has both traffic policies Local",
        ),
        Decision(
            "BPFGEN_SVC_BACKENDS_TOTAL",
            "1" if in_map else str(max(1, len(svc.backends))),
            "services",
            "unused: frontends in maps"
            if in_map
            else "bpfgen_backends[] (frontends as code): the distinct backend lists, flat",
        ),
        Decision(
            "BPFGEN_SVC_SEARCH_STEPS",
            "1" if in_map else str(max(1, most.bit_length())),
            "services",
            "unused: frontends in maps"
            if in_map
            else f"membership binary search: the largest member list has {most}",
        ),
        Decision(
            "BPFGEN_SVC_DRAINING",
            # Frontends in maps: membership is a bpfgen_svc_members lookup, whatever the
            # endpoints; a value that followed them would make a terminating pod new C
            # (a node without clang could not converge during a rolling update).
            "0" if in_map else str(int(svc.draining)),
            "EndpointSlices",
            "unused: frontends in maps (membership: bpfgen_svc_members, draining or not)"
            if in_map
            else f"{counted(draining, 'listed endpoint(s)')} not ready, over all frontends: "
            "their sessions go on, new flows avoid them (member lists of their own)"
            if svc.draining
            else "every listed endpoint is selectable: a frontend's members are its backends",
        ),
        Decision(
            "BPFGEN_SVC_AFFINITY",
            str(int(bool(sticky))),
            "services",
            f"{counted(len(sticky), 'frontends')} with sessionAffinity ClientIP: a new flow goes "
            "to its client's backend of the last timeoutSeconds (bpfgen_affinity_v4)"
            if sticky
            else "no sessionAffinity ClientIP: compiled out",
        ),
        Decision(
            "BPFGEN_MAGLEV_TABLES",
            str(max(1, len(svc.tables))),
            "services",
            "bpfgen_maglev[][] (.rodata): the distinct Maglev tables"
            if svc.maglev_in_rodata
            else "unused: no Maglev table in .rodata",
        ),
        Decision(
            "BPFGEN_SVC_BACKENDS_MAX",
            str(backends_max),
            "services",
            "bpfgen_svc_backends/_members size: 2x the members, power of two, at least 64"
            if in_map
            else "unused: frontends as code, no bpfgen_svc_backends map",
        ),
        Decision(
            "BPFGEN_REJECT_NO_BACKEND",
            "1",
            "services",
            f"{counted(len(no_backend), 'frontends')} without backends: TCP answered with a "
            "RST, UDP with an ICMP port unreachable (kube-proxy's REJECT); counted "
            "reject_no_backend (a RST, IP options: dropped, drop_no_backend)",
        ),
    ]
    maps = session_maps(
        node.max_sessions,
        ("bpfgen_nat_v4", layouts.NatEntry, "NAT sessions (DNAT + SNAT) by original tuple"),
        ("bpfgen_rnat_v4", layouts.RnatEntry, "reply tuple -> client and frontend"),
        len(BPF_COUNTER_NAMES),
    )
    map_init: dict[str, Sequence[tuple[bytes, bytes]]] = {}
    if sticky:
        maps.append(
            MapPlan(
                "bpfgen_affinity_v4",
                "BPF_MAP_TYPE_LRU_HASH",
                BPF_MAP_TYPE_LRU_HASH,
                ctypes_size(layouts.AffinityKey),
                ctypes_size(layouts.AffinityEntry),
                node.max_sessions,
                True,
                "sessionAffinity ClientIP: (client, Service port) -> backend, last use",
            )
        )
    if in_map:
        maps += [
            MapPlan(
                "bpfgen_svc_frontends",
                "BPF_MAP_TYPE_HASH",
                BPF_MAP_TYPE_HASH,
                ctypes_size(layouts.FrontendKey),
                ctypes_size(layouts.SvcValue),
                basis.frontends_max,
                True,
                "service frontends -> id, backends, masquerade",
            ),
            MapPlan(
                "bpfgen_svc_backends",
                "BPF_MAP_TYPE_HASH",
                BPF_MAP_TYPE_HASH,
                ctypes_size(layouts.BackendKey),
                ctypes_size(layouts.BackendValue),
                backends_max,
                True,
                "(frontend id, index) -> backend",
            ),
        ]
        maps.append(
            MapPlan(
                "bpfgen_svc_members",
                "BPF_MAP_TYPE_HASH",
                BPF_MAP_TYPE_HASH,
                ctypes_size(layouts.BackendMember),
                4,
                backends_max,
                True,
                "(frontend id, backend addr, port) -> 0 backend, 1 draining: sessions keep "
                "a backend while listed",
            )
        )
        map_init["bpfgen_svc_frontends"] = tuple(svc_frontend_entry(f) for f in frontends) + tuple(
            vip_entry(a) for a in _vips(frontends)
        )
        map_init["bpfgen_svc_members"] = tuple(e for f in frontends for e in member_entries(f))
        map_init["bpfgen_svc_backends"] = tuple(e for f in frontends for e in backend_entries(f))
    if svc.maglev and not svc.maglev_in_rodata:
        m = node.maglev_table_size
        maps.append(
            MapPlan(
                "bpfgen_svc_maglev",
                "BPF_MAP_TYPE_ARRAY",
                BPF_MAP_TYPE_ARRAY,
                4,
                2 * m,
                rows,
                True,
                "Maglev tables: [frontend id] -> M slots of backend indexes",
            )
        )
        map_init["bpfgen_svc_maglev"] = MaglevRows(
            tuple(f for f in frontends if f.backends), m, MAGLEV_TABLE_SEED
        )
    src_maps, src_init = source_range_maps(basis.source_ranges)
    maps += src_maps
    map_init.update(src_init)
    programs: list[ProgramPlan] = []
    if node.socket_lb:
        decisions += _sock_decisions(inputs, generic)
        maps.append(
            MapPlan(
                "bpfgen_sock_rev_v4",
                "BPF_MAP_TYPE_LRU_HASH",
                BPF_MAP_TYPE_LRU_HASH,
                ctypes_size(layouts.SockRevKey),
                ctypes_size(layouts.SockRevValue),
                node.max_sessions,
                True,
                "socketLB: (socket cookie, backend) -> the VIP:port the socket asked for",
            )
        )
        programs = [
            ProgramPlan(
                name,
                "sock.bpf.c.j2",
                "sock.bpf.c",
                "sock.bpf.o",
                f"bpfgen_{name}",
                section,
                "bpfgen_ctx_tc.h",
                (Attachment(Role.NODE, node.cgroup, hook),),
                (),
                purpose,
                entry,
            )
            for hook, (name, section, entry, purpose) in CGROUP_HOOKS.items()
        ]
    names = tuple(m.name for m in maps)
    # Every interface at tc. An uplink with hook: xdp also gets the datapath at XDP,
    # which sends back out what leaves through the uplink and passes the rest, as it
    # came, to svc_in at tc (docs/datapath-bpf.md, "XDP").
    tc = tuple(Attachment(i.role, i.name, AttachHook.TC_INGRESS) for i in node.interfaces)
    xdp = tuple(
        Attachment(i.role, i.name, AttachHook.XDP) for i in node.interfaces if i.hook is Hook.XDP
    )
    datapath = [
        ProgramPlan(
            "svc_in",
            "svc_in.bpf.c.j2",
            "svc_in.bpf.c",
            "svc_in.bpf.o",
            "bpfgen_svc_in",
            "tc",
            "bpfgen_ctx_tc.h",
            tc,
            names,
            "DNAT + SNAT to a selected backend, replies reversed, fib lookup + redirect_neigh",
        )
    ]
    if xdp:
        datapath.append(
            ProgramPlan(
                "svc_xdp",
                "svc_in.bpf.c.j2",
                "svc_xdp.bpf.c",
                "svc_xdp.bpf.o",
                "bpfgen_svc_xdp",
                "xdp",
                "bpfgen_ctx_xdp.h",
                xdp,
                names,
                "svc_in at XDP on the uplink: what leaves through the uplink translated and "
                "sent back (XDP_TX), the rest passed as it came to svc_in at tc",
            )
        )
    programs = [replace(p, maps=names) for p in programs]
    return basis.plan(
        decisions=decisions,
        inline=() if in_map else inline_frontends(frontends, id_result),
        maps=maps,
        map_init=map_init,
        programs=(*datapath, *programs),
        counter_names=BPF_COUNTER_NAMES,
        svc=svc,
    )


def _sock_decisions(inputs: Inputs, generic: bool) -> list[Decision]:
    """datapath.socketLB: the cgroup sock_addr programs' own constants."""
    node = inputs.node
    first = node.addresses[0]
    return [
        Decision(
            "BPFGEN_SOCK_LB",
            "1",
            "datapath.socketLB",
            f"node processes -> services: cgroup connect4/sendmsg4/recvmsg4/getpeername4 on "
            f"{node.cgroup} (sock.bpf.o; socket-level DNAT, no per-packet NAT)",
        ),
        Decision(
            "BPFGEN_SOCK_CLIENT",
            "(bpfgen_cfg.node_addrs[0])" if generic else be32_expr(first),
            "node.addresses[0]",
            f"{first}: the client of node processes for ClientIP affinity (the node)",
            runtime=generic,
        ),
    ]


def _vips(frontends: tuple[Frontend, ...]) -> tuple[IPv4Address, ...]:
    """The VIPs (ClusterIPs, externalIPs, LB IPs): svc_in answers echo requests to them."""
    return tuple(
        sorted({f.addr for f in frontends
                if f.addr is not None and f.kind is not FrontendKind.POD_SHORTCUT})
    )  # fmt: skip


def member_entries(f: Frontend) -> list[tuple[bytes, bytes]]:
    """bpfgen_svc_members entries of a frontend: (id, backend) -> 1 when draining, else 0."""
    return [
        (
            layouts.to_bytes(
                layouts.BackendMember(f.index, layouts.be32(b.address), layouts.be16(b.port))
            ),
            (b in f.draining).to_bytes(4, "little"),
        )
        for b in f.members
    ]


def backend_entries(f: Frontend) -> list[tuple[bytes, bytes]]:
    """bpfgen_svc_backends entries of a frontend: (id, index) -> the selectable backend."""
    return [
        (
            layouts.to_bytes(layouts.BackendKey(f.index, i)),
            layouts.to_bytes(layouts.BackendValue(layouts.be32(b.address), layouts.be16(b.port))),
        )
        for i, b in enumerate(f.backends)
    ]


def vip_entry(addr: IPv4Address) -> tuple[bytes, bytes]:
    """bpfgen_svc_frontends entry (VIP, port 0, ICMP): "answer pings", no frontend."""
    key = layouts.FrontendKey(addr=layouts.be32(addr), port=layouts.be16(0), proto=IPPROTO_ICMP)
    value = layouts.SvcValue(id=0xFFFFFFFF)
    return layouts.to_bytes(key), layouts.to_bytes(value)


def svc_frontend_entry(f: Frontend) -> tuple[bytes, bytes]:
    key, _ = frontend_entry(f)
    value = layouts.SvcValue(
        id=f.index,
        n_backends=len(f.backends),
        masq=f.masq.value,
        affinity_s=f.affinity_timeout or 0,
        affinity_id=f.affinity_id,
    )
    if f.pod_twin is not None:
        value.pod_vip = layouts.be32(f.pod_twin[0])
        value.pod_port = layouts.be16(f.pod_twin[1])
    # first/table: only the frontends-as-code arrays use them
    return key, layouts.to_bytes(value)

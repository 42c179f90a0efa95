"""The contract between the compiler and the node: the one definition of what crosses
the build directory (docs/architecture.md "The contract").

The choices both sides name (datapath modes, build kinds, schedulers, attach hooks) are
`StrEnum`s whose values are the strings the node file and manifest.json have always
used, so a member serializes as it did before and compares equal to its string.
`layouts` holds the C structs' ctypes mirrors, `manifest` the manifest's model
(written by the compiler, decoded by the runtime: one definition).

It lives in the runtime because the compiler may import the runtime and not the
reverse; it imports nothing else of the runtime (`make lint`), so the compiler pulls
in no node-side code with it, and the compiler's build-cache fingerprint covers the
whole package (bpfgen/fingerprint.py): every file in it can change a build.
"""

from __future__ import annotations

import enum


class Mode(enum.StrEnum):
    """datapath.mode (docs/datapath.md, docs/datapath-bpf.md)."""

    IPVS = "ipvs"  # IPVS DNAT + eBPF SNAT (the reference design)
    BPF = "bpf"  # everything in eBPF


class BuildKind(enum.StrEnum):
    """The build kinds, each the same plan rendered differently:

    specialized  every node value a C constant (bpfgen's point);
    generic      the values in a `.bss` struct the program reads per packet
                 (a config-map design: neither clang nor the verifier knows them);
    frozen       the same C as generic, the struct `const volatile` in `.rodata`:
                 set before load, frozen, so the verifier sees constants and
                 prunes dead branches (Cilium, Calico), while clang does not.
    image        frozen, but the values of the image stage (the same on every node
                 of a cluster: CIDRs, SNAT range, timeouts, features) are C
                 constants: what a node image ships (docs/specialization.md).
    """

    SPECIALIZED = "specialized"
    GENERIC = "generic"
    FROZEN = "frozen"
    IMAGE = "image"

    @property
    def config_section(self) -> str | None:
        """The internal map holding `bpfgen_cfg` (libbpf's name ends with it), whose
        initial value the runtime sets before load; None: no runtime config."""
        return CONFIG_SECTION[self]


#: Build kind -> the internal map holding bpfgen_cfg (the manifest's runtime_config.map).
CONFIG_SECTION: dict[BuildKind, str | None] = {
    BuildKind.SPECIALIZED: None,
    BuildKind.GENERIC: ".bss",
    BuildKind.FROZEN: ".rodata",
    BuildKind.IMAGE: ".rodata",
}


class Scheduler(enum.StrEnum):
    """datapath.scheduler: an IPVS scheduler (ipvs mode) or bpfgen's selection (bpf)."""

    DH = "dh"
    LBLC = "lblc"
    LBLCR = "lblcr"
    LC = "lc"
    MH = "mh"
    NQ = "nq"
    RR = "rr"
    SED = "sed"
    SH = "sh"
    WLC = "wlc"
    WRR = "wrr"
    MAGLEV = "maglev"
    RANDOM = "random"


IPVS_SCHEDULERS = tuple(s for s in Scheduler if s not in (Scheduler.MAGLEV, Scheduler.RANDOM))
BPF_SCHEDULERS = (Scheduler.MAGLEV, Scheduler.RANDOM)


class Hook(enum.StrEnum):
    """Where a program attaches (the manifest's programs[].attach[].hook)."""

    TC_INGRESS = "tc_ingress"
    TC_EGRESS = "tc_egress"
    XDP = "xdp"
    # bpf mode, datapath.socketLB: the cgroup sock_addr hooks (interface: a cgroup v2 path)
    CGROUP_CONNECT4 = "cgroup_connect4"
    CGROUP_SENDMSG4 = "cgroup_sendmsg4"
    CGROUP_RECVMSG4 = "cgroup_recvmsg4"
    CGROUP_GETPEERNAME4 = "cgroup_getpeername4"

    @property
    def is_cgroup(self) -> bool:
        return self in CGROUP_HOOKS


DEVICE_HOOKS = (Hook.TC_INGRESS, Hook.TC_EGRESS, Hook.XDP)
CGROUP_HOOKS = (
    Hook.CGROUP_CONNECT4, Hook.CGROUP_SENDMSG4, Hook.CGROUP_RECVMSG4, Hook.CGROUP_GETPEERNAME4,
)  # fmt: skip


class Counter(enum.StrEnum):
    """A slot of the per-CPU array `bpfgen_counters`, by the name manifest.json lists it
    under and `bpfgen status` prints (the C enumerators in bpfgen_types.h, lower case
    without BPFGEN_, EVT_ and SVC_; tests/build/test_drop_reasons.py holds them equal).
    A name starting drop_ is a drop reason: every drop of every program is counted
    under exactly one (bpfgen_drop()); reject_ counts an answer sent instead of a
    translation; the rest are events. The members are declared in slot order:
    IPVS_COUNTERS and BPF_COUNTERS give each mode's slots, a counter's index is its
    position there."""

    # ipvs mode (and the first fifteen of the bpf mode): enum bpfgen_event
    PASS = "pass"
    MALFORMED = "malformed"
    MARKED = "marked"
    SNAT_NEW = "snat_new"
    SNAT_HIT = "snat_hit"
    RSNAT = "rsnat"
    RSNAT_MISS = "rsnat_miss"
    RECLAIMED = "reclaimed"
    # enum bpfgen_drop_reason
    DROP_EXHAUSTED = "drop_exhausted"
    DROP_MAP_FULL = "drop_map_full"
    DROP_FRAGMENT = "drop_fragment"
    DROP_REWRITE = "drop_rewrite"
    DROP_SOURCE_RANGE = "drop_source_range"
    DROP_NO_LOCAL_ENDPOINT = "drop_no_local_endpoint"
    DROP_VIP_PORT = "drop_vip_port"
    # bpf mode only: enum bpfgen_svc_counter (appended, never reordered)
    DNAT_NEW = "dnat_new"
    DNAT_HIT = "dnat_hit"
    RDNAT = "rdnat"
    REJECT_NO_BACKEND = "reject_no_backend"
    DROP_BACKEND_GONE = "drop_backend_gone"
    FIB_FALLBACK = "fib_fallback"
    REDIRECT = "redirect"
    ICMP_ECHO_VIP = "icmp_echo_vip"
    AFFINITY_HIT = "affinity_hit"
    XDP_TO_TC = "xdp_to_tc"
    DROP_NO_BACKEND = "drop_no_backend"
    REJECT_VIP_PORT = "reject_vip_port"
    DROP_UNALLOCATED = "drop_unallocated"

    @property
    def is_drop(self) -> bool:
        """A drop reason: the packet was dropped, and this is why."""
        return self.value.startswith("drop_")

    @property
    def is_reject(self) -> bool:
        """An answer (RST, ICMP port unreachable) sent back instead of a translation."""
        return self.value.startswith("reject_")


#: The ipvs mode's counter slots, in index order (enum bpfgen_event, then
#: enum bpfgen_drop_reason).
IPVS_COUNTERS: tuple[Counter, ...] = tuple(Counter)[: list(Counter).index(Counter.DNAT_NEW)]
#: The bpf mode's: the ipvs mode's, then enum bpfgen_svc_counter.
BPF_COUNTERS: tuple[Counter, ...] = tuple(Counter)
#: Every drop reason of either mode.
DROP_REASONS: tuple[Counter, ...] = tuple(c for c in Counter if c.is_drop)

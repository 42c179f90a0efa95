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
    """

    SPECIALIZED = "specialized"
    GENERIC = "generic"
    FROZEN = "frozen"

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

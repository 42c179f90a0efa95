"""Stage 2: every specialization decision, taken once, printable.

The plan is the only place where bpfgen decides anything about the C it will
emit: which values become constants (and from which input), which protocol
paths exist, whether the frontend table is code or a map, map sizes, which
program attaches where, and what the runtime must put in maps at load time.
Templates only loop over it and branch on its booleans.

    ir       the plan's value (`Plan` and its parts), what `bpfgen plan` prints
    shared   what both modes plan the same way: frontends, the node's decisions
    ipvs     datapath.mode ipvs: SNAT programs beside IPVS
    bpf      datapath.mode bpf: service translation, backend selection, forwarding

`make_plan` hands the inputs to the planner of their mode (`PLANNERS`).
"""

from __future__ import annotations

from collections.abc import Callable

from bpfgen.model import Inputs, Mode
from bpfgen.plan import bpf, ipvs
from bpfgen.plan.bpf import MAGLEV_RODATA_BUDGET
from bpfgen.plan.ir import (
    BPF_COUNTER_NAMES,
    BUILD_KINDS,
    COUNTER_NAMES,
    FrontendKind,
    Masq,
    Plan,
    build_kind,
)
from bpfgen.plan.shared import INLINE_FRONTEND_LIMIT, PlanBasis

__all__ = [
    "BPF_COUNTER_NAMES",
    "BUILD_KINDS",
    "COUNTER_NAMES",
    "INLINE_FRONTEND_LIMIT",
    "MAGLEV_RODATA_BUDGET",
    "PLANNERS",
    "FrontendKind",
    "Masq",
    "Plan",
    "build_kind",
    "make_plan",
]

#: Each datapath mode's planner (a test checks every Mode has one).
PLANNERS: dict[Mode, Callable[[PlanBasis], Plan]] = {Mode.IPVS: ipvs.plan, Mode.BPF: bpf.plan}


def make_plan(inputs: Inputs, *, generic: bool = False, build: str | None = None) -> Plan:
    """The plan of a `build` kind (BUILD_KINDS); `generic=True` is the older spelling."""
    kind = build_kind(build, generic=generic)
    return PLANNERS[inputs.node.mode](PlanBasis.of(inputs, kind))

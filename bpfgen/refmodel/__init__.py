"""The reference model of the ipvs-mode datapath, written from docs/datapath.md.

Pure Python: each program is a function

    result = PROGRAMS["egress"](config, frame, state, now_ns, mark)

of the node's configuration (`model_config(inputs, build_kind)`), an Ethernet frame,
the session state (`SessionState`, mutated in place), the time and skb->mark,
returning the verdict, the frame and mark out, the counter increments and the
sessions it touched. `ipvs_differential.Differential` runs a build in the kernel and
the model side by side and reports every difference; docs/testing.md tells how the
tests use both.

Modules are named by the mode they model: ipvs_config, ipvs_snat, ipvs_differential
(the ipvs mode's SNAT programs, exported here) and bpf_config, bpf_svc,
bpf_differential (the bpf mode's svc_in and svc_xdp, built on the ipvs ones); packet,
hashing, checksum, state and frames serve both.
"""

from bpfgen.refmodel.checksum import ChecksumDisagreement
from bpfgen.refmodel.hashing import mix32, tuple_hash
from bpfgen.refmodel.ipvs_config import (
    BUILD_KINDS,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ModelConfig,
    Policy,
    model_config,
)
from bpfgen.refmodel.ipvs_snat import (
    COUNTER_NAMES,
    PROGRAMS,
    Counter,
    Program,
    Result,
    Verdict,
    egress,
    ingress,
    ingress_xdp,
    retval,
)
from bpfgen.refmodel.packet import Kind, Parsed, parse
from bpfgen.refmodel.state import (
    CLOSING,
    SEEN_REPLY,
    FlowKey,
    Origin,
    Session,
    SessionState,
    expired,
    timeout_ns,
)

__all__ = [
    "BUILD_KINDS",
    "CLOSING",
    "COUNTER_NAMES",
    "IPPROTO_ICMP",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "PROGRAMS",
    "SEEN_REPLY",
    "ChecksumDisagreement",
    "Counter",
    "FlowKey",
    "Kind",
    "ModelConfig",
    "Origin",
    "Parsed",
    "Policy",
    "Program",
    "Result",
    "Session",
    "SessionState",
    "Verdict",
    "egress",
    "expired",
    "ingress",
    "ingress_xdp",
    "mix32",
    "model_config",
    "parse",
    "retval",
    "timeout_ns",
    "tuple_hash",
]

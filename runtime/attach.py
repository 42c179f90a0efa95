"""Devices of the current network namespace, and programs on their tc and XDP hooks.

tc: a clsact qdisc per device (created when missing, remembered so `down` removes
only the ones bpfgen added) and one direct-action cls_bpf filter per hook with a
fixed handle and priority, so a newer program replaces the old one atomically
(BPF_TC_F_REPLACE: same handle, same priority, no moment without a program).
XDP: native mode when the driver has it, else generic (skb) mode.

All of it goes through libbpf's netlink code, which talks to the namespace the
calling thread is in (see netns.entered).
"""

from __future__ import annotations

import errno
import fnmatch
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import libbpf
from .errors import RuntimeOpError, operation
from .nlerr import netlink

TC_HANDLE = 0xB9F  # bpfgen's filters: this handle ...
TC_PRIORITY = 1  # ... at this priority, on every hook it uses
TC_ATTACH_POINTS = {"tc_ingress": libbpf.BPF_TC_INGRESS, "tc_egress": libbpf.BPF_TC_EGRESS}
XDP_MODES = {"drv": libbpf.XDP_FLAGS_DRV_MODE, "skb": libbpf.XDP_FLAGS_SKB_MODE}
NEVER_MATCHED = ("lo",)  # a glob never selects these (nor the runtime's own dummy device)


def devices() -> dict[str, int]:
    """name -> ifindex of every device in the current network namespace."""
    with netlink("list network devices"), IPRoute() as ipr:
        return {str(link.get("IFLA_IFNAME")): int(link["index"]) for link in ipr.get_links()}


@dataclass(frozen=True)
class Target:
    """One program on one hook of one device."""

    program: str
    device: str
    hook: str  # tc_ingress | tc_egress | xdp


def expand(pattern: str, present: dict[str, int], exclude: tuple[str, ...]) -> list[str]:
    """The devices a manifest interface names: itself, or a glob's matches, sorted."""
    if not any(c in pattern for c in "*?["):
        return [pattern] if pattern in present else []
    return sorted(
        name
        for name in present
        if fnmatch.fnmatchcase(name, pattern) and name not in NEVER_MATCHED + exclude
    )


def _where(hook: str, device: str) -> str:
    return f"{hook.replace('_', ' ')} on {device}"


def ensure_clsact(ifindex: int, device: str) -> bool:
    """Add a clsact qdisc; True when this call created it (False: it was there)."""
    with libbpf.capture_prints(), operation(f"add clsact qdisc on {device}"):
        return libbpf.bpf_tc_hook_create(ifindex, libbpf.BPF_TC_INGRESS)


def remove_clsact(ifindex: int, device: str) -> None:
    with libbpf.capture_prints(), operation(f"remove clsact qdisc on {device}"):
        try:
            libbpf.bpf_tc_hook_destroy(ifindex)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
                raise


def clsact_has_filters(ifindex: int) -> bool:
    """Whether any filter (anyone's) is left on the device's clsact hooks."""
    with netlink("list tc filters"), IPRoute() as ipr:
        for parent in (0xFFFFFFF2, 0xFFFFFFF3):  # TC_H_CLSACT:TC_H_MIN_INGRESS / _EGRESS
            try:
                if list(ipr.get_filters(index=ifindex, parent=parent)):
                    return True
            except NetlinkError as exc:
                if exc.code in (errno.EINVAL, errno.ENOENT):
                    continue
                raise
    return False


def attach(
    target: Target, ifindex: int, prog_fd: int, *, xdp_mode: str | None = None
) -> tuple[int, str | None]:
    """Attach or atomically replace; returns (program id now attached, XDP mode or None)."""
    op = f"attach {target.program} to {_where(target.hook, target.device)}"
    if target.hook in TC_ATTACH_POINTS:
        with operation(op):
            prog_id = libbpf.bpf_tc_attach(
                ifindex,
                TC_ATTACH_POINTS[target.hook],
                prog_fd,
                TC_HANDLE,
                TC_PRIORITY,
                replace=True,
            )
        return prog_id, None
    modes = [xdp_mode] if xdp_mode else ["drv", "skb"]
    last: OSError | None = None
    for mode in modes:
        try:
            libbpf.bpf_xdp_attach(ifindex, prog_fd, XDP_MODES[mode])
        except OSError as exc:
            last = exc
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL) and mode == "drv" and not xdp_mode:
                continue
            break
        return query(target.hook, ifindex, xdp_mode=mode) or 0, mode
    assert last is not None
    raise RuntimeOpError(op, last.errno or errno.EIO)


def detach(hook: str, ifindex: int, device: str, *, xdp_mode: str | None = None) -> bool:
    """Remove bpfgen's program from the hook; False when it was not there."""
    op = f"detach from {_where(hook, device)}"
    with libbpf.capture_prints(), operation(op):
        if hook in TC_ATTACH_POINTS:
            try:
                return libbpf.bpf_tc_detach(ifindex, TC_ATTACH_POINTS[hook], TC_HANDLE, TC_PRIORITY)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENODEV):  # no clsact, or no device
                    return False
                raise
        flags = XDP_MODES[xdp_mode or "drv"]
        if libbpf.bpf_xdp_query_id(ifindex, flags) == 0:
            return False
        libbpf.bpf_xdp_detach(ifindex, flags)
        return True


def query(hook: str, ifindex: int, *, xdp_mode: str | None = None) -> int | None:
    """The id of the program on bpfgen's filter of the hook (XDP: the mode's program), or None."""
    with libbpf.capture_prints(), operation(f"query {hook} on ifindex {ifindex}"):
        if hook in TC_ATTACH_POINTS:
            return libbpf.bpf_tc_query(ifindex, TC_ATTACH_POINTS[hook], TC_HANDLE, TC_PRIORITY)
        prog_id = libbpf.bpf_xdp_query_id(ifindex, XDP_MODES[xdp_mode or "drv"])
        return prog_id or None

"""Devices of the current network namespace, and programs on their tc and XDP hooks.

tc: a clsact qdisc per device (created when missing, remembered so `down` removes
only the ones bpfgen added) and one direct-action cls_bpf filter per hook with a
fixed handle and priority, so a newer program replaces the old one atomically
(BPF_TC_F_REPLACE: same handle, same priority, no moment without a program).
XDP: native mode when the driver has it, else generic (skb) mode.
cgroup (the bpf mode's sock_addr programs): one BPF link per hook on a cgroup v2
directory, pinned on the bpffs (`link__<hook>` in the pin directory) so that `down`
finds it and `sync` replaces its program atomically (BPF_LINK_UPDATE: no moment
without a program); removing the pin after BPF_LINK_DETACH removes the link.
Links stack with other programs on the same cgroup hook (like BPF_F_ALLOW_MULTI).

All of it goes through libbpf's netlink code, which talks to the namespace the
calling thread is in (see netns.entered).
"""

from __future__ import annotations

import errno
import fnmatch
import os
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import libbpf
from .contract import Hook
from .errors import RuntimeOpError, operation
from .nlerr import netlink

TC_HANDLE = 0xB9F  # bpfgen's filters: this handle ...
TC_PRIORITY = 1  # ... at this priority, on every hook it uses
TC_ATTACH_POINTS: dict[str, int] = {  # keyed by the hook as a state record names it
    Hook.TC_INGRESS: libbpf.BPF_TC_INGRESS,
    Hook.TC_EGRESS: libbpf.BPF_TC_EGRESS,
}
XDP_MODES = {"drv": libbpf.XDP_FLAGS_DRV_MODE, "skb": libbpf.XDP_FLAGS_SKB_MODE}
CGROUP_ATTACH_TYPES: dict[str, int] = {
    Hook.CGROUP_CONNECT4: libbpf.BPF_CGROUP_INET4_CONNECT,
    Hook.CGROUP_SENDMSG4: libbpf.BPF_CGROUP_UDP4_SENDMSG,
    Hook.CGROUP_RECVMSG4: libbpf.BPF_CGROUP_UDP4_RECVMSG,
    Hook.CGROUP_GETPEERNAME4: libbpf.BPF_CGROUP_INET4_GETPEERNAME,
}
LINK_PIN_PREFIX = "link__"  # bpffs refuses dots in names
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


def has_clsact(ifindex: int) -> bool:
    """The device has a clsact qdisc (tc filters attach to it)."""
    with netlink("list qdiscs"), IPRoute() as ipr:
        return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


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


# --- cgroup hooks (BPF links) ------------------------------------------------------------------


def is_cgroup_hook(hook: str) -> bool:
    return hook in CGROUP_ATTACH_TYPES


def link_pin(pin_dir: str, hook: str) -> str:
    """Where the link of a cgroup hook is pinned."""
    return os.path.join(pin_dir, LINK_PIN_PREFIX + hook)


def cgroup2_problem(path: str) -> str | None:
    """Why `path` is not a cgroup v2 directory the links can attach to; None when it is."""
    if not os.path.isabs(path):
        return f"cgroup {path!r} is not an absolute path"
    if not os.path.isdir(path):
        return f"cgroup {path} does not exist"
    if not os.path.exists(os.path.join(path, "cgroup.controllers")):
        return f"{path} is not a cgroup v2 directory (no cgroup.controllers)"
    return None


def _link_prog_id(link_fd: int) -> int:
    info = libbpf.BpfLinkInfo()
    libbpf.bpf_obj_get_info_by_fd(link_fd, info)
    return int(info.prog_id)


def attach_cgroup(program: str, hook: str, cgroup: str, prog_fd: int, pin: str) -> int:
    """A new link of the program on the cgroup's hook, pinned at `pin`; the program id.
    Until it is pinned the link is held by its fd only: a failure closes it (detached)."""
    with operation(f"attach {program} to {hook} of cgroup {cgroup}"):
        cg_fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            link_fd = libbpf.bpf_link_create(prog_fd, cg_fd, CGROUP_ATTACH_TYPES[hook])
        finally:
            os.close(cg_fd)
        try:
            libbpf.bpf_obj_pin(link_fd, pin)
            return _link_prog_id(link_fd)
        finally:
            os.close(link_fd)


def update_cgroup(program: str, hook: str, pin: str, prog_fd: int) -> int:
    """Replace the pinned link's program atomically; the program id now attached."""
    with operation(f"replace the program of {hook} ({pin}) by {program}"):
        link_fd = libbpf.bpf_obj_get(pin)
        try:
            libbpf.bpf_link_update(link_fd, prog_fd)
            return _link_prog_id(link_fd)
        finally:
            os.close(link_fd)


def query_cgroup(pin: str) -> int | None:
    """The id of the program on the pinned link, or None when there is no such pin."""
    if not os.path.lexists(pin):
        return None
    with operation(f"query the link pinned at {pin}"):
        link_fd = libbpf.bpf_obj_get(pin)
        try:
            return _link_prog_id(link_fd) or None
        finally:
            os.close(link_fd)


def detach_cgroup(hook: str, pin: str) -> bool:
    """Detach the pinned link from its cgroup and unpin it; False when it was not there."""
    if not os.path.lexists(pin):
        return False
    with operation(f"detach {hook} (link {pin})"):
        link_fd = libbpf.bpf_obj_get(pin)
        try:
            try:
                libbpf.bpf_link_detach(link_fd)
            except OSError as exc:
                if exc.errno != errno.ENOLINK:  # already defunct: its cgroup was removed
                    raise
        finally:
            os.close(link_fd)
        os.unlink(pin)
    return True

"""Removing what the state file lists: `down`, and a failed first `up`'s rollback.

Newest kind first (IPVS, the VIPs' device and the notrack table; cgroup links,
then tc/XDP attachments, clsact qdiscs, sysctls, pins, the journal, directories,
the bpffs mount); a step that fails is reported and the others still run. What
others changed since (a sysctl, IPVS timeouts) or still use (a clsact with their
filters, a bpffs with their pins) is left, with a note.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

from . import attach, fault, journal, pins, sysctl
from .errors import RuntimeOpError, in_operation
from .mode_ipvs import teardown_ipvs
from .options import Options, Report
from .state import State

PRELOAD_ENTRIES = {"maps.debug", "progs.debug"}  # what the kernel's bpf_preload puts on a bpffs


def teardown(state: State, opts: Options, report: Report) -> list[str]:
    """Remove what `state` lists, newest kind first; returns the failures (and keeps going)."""
    failures: list[str] = []

    def step(what: str, fn: Callable[[], object]) -> None:
        fault.point(f"before {what}")
        try:
            fn()
            report.changes.append(what)
        except (RuntimeOpError, OSError) as exc:
            failures.append(f"{what}: {exc}")

    teardown_ipvs(state, report, step, failures)
    for x in reversed(state.links):  # node processes first: they stop reaching VIPs
        step(
            f"detach {x.program} from {x.hook} of cgroup {x.cgroup}",
            partial(attach.detach_cgroup, x.hook, x.pin),
        )
    present = attach.devices()
    for a in reversed(state.attachments):
        if present.get(a.device) != a.ifindex:
            continue  # the device is gone (and its filters with it)
        step(
            f"detach {a.program} from {a.hook} of {a.device}",
            partial(attach.detach, a.hook, a.ifindex, a.device, xdp_mode=a.xdp_mode),
        )
    for dev, ifindex in sorted(state.clsact_created.items()):
        if present.get(dev) != ifindex:
            continue
        if attach.clsact_has_filters(ifindex):
            report.notes.append(f"clsact on {dev} still has filters of others: left in place")
            continue
        step(f"remove clsact qdisc on {dev}", partial(attach.remove_clsact, ifindex, dev))
    for name, rec in sorted(state.sysctls.items()):
        if not sysctl.exists(name):
            continue
        if sysctl.read(name) != rec.value:
            report.notes.append(f"sysctl {name} was changed since bpfgen set it: left")
            continue
        step(
            f"sysctl {name}: {rec.value} -> {rec.previous or '(empty)'}",
            partial(sysctl.write, name, rec.previous),
        )
    for path in reversed(state.pins):
        if os.path.lexists(path):
            step(f"unpin {path}", partial(in_operation, f"unpin {path}", partial(os.unlink, path)))
    if os.path.lexists(journal.path(state.pin_dir)):  # last: it is the record of the rest
        step("unpin the state journal", partial(journal.remove, state.pin_dir))
    for d in reversed(state.dirs_created):
        if os.path.isdir(d):
            if os.listdir(d):
                report.notes.append(f"{d} is not empty: left in place")
            else:
                step(f"remove {d}", partial(in_operation, f"remove {d}", partial(os.rmdir, d)))
    if state.bpffs_mounted and pins.is_bpffs(state.bpffs):
        if set(os.listdir(state.bpffs)) <= PRELOAD_ENTRIES:
            step(f"unmount bpffs at {state.bpffs}", lambda: pins.unmount(state.bpffs))
        else:
            report.notes.append(f"bpffs at {state.bpffs} holds other pins: left mounted")
    return failures

"""up / sync / status / down: a build directory made live in one network namespace.

    report = up("build/x", Options(netns="node1"))   # validate, then create; rollback on failure
    report = sync("build/x", Options(netns="node1")) # converge the live state to a new build
    info   = status(Options(netns="node1"))          # what is there, and does it match the build
    report = down(Options(netns="node1"))            # remove what up created, nothing else

Every run first checks everything it can without changing anything (the build
directory, the namespace, the devices the manifest names, bpffs, IPVS, nft) and
raises InputRefused (exit 2) with every problem. Then one converge pass makes the
live state match the build; `up` and `sync` share it, so `up` on a namespace that
is already up changes nothing unless something drifted, and `status` runs it dry
to list what differs. Each step records what it created in the state file
(state.py) before going on; `down`, and a failed `up`'s rollback, remove exactly
what the state file lists, in reverse order of creation.

The verbs live here; the rest, in the order a run uses it: options.py (Options,
Report), recovery.py (the record), preflight.py (the checks), converge.py (the
pass; converge_hooks.py, and the modes' own steps in mode_ipvs.py and
mode_bpf.py), teardown.py (down, and rollback).

Order of a first `up`: bpffs mounted if needed -> objects loaded, maps pinned by
name (both objects share them) -> map_init entries -> sysctls -> tc/XDP
attached -> nftables notrack table -> dummy device with the VIPs -> IPVS
timeouts, services, real servers. The programs and the notrack rules are in
place before IPVS answers for a VIP, so no service packet is ever tracked.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from . import attach, lock, netns, nft, pins
from .builddir import Build, InputRefused, read_build
from .converge import Converge
from .errors import RuntimeOpError
from .mode_ipvs import live_services
from .options import BPFFS, Options, Report
from .preflight import preflight
from .recovery import new_state, recover, recovery_notes
from .state import Attachment, CgroupLink, State, state_path
from .state import remove as remove_state
from .state import save as save_state
from .teardown import teardown

__all__ = ["BPFFS", "Options", "Report", "down", "locked", "status", "sync", "up", "which_tools"]

COUNTERS_MAP = "bpfgen_counters"


# --- the entry points --------------------------------------------------------------------------


@contextmanager
def _in_namespace(opts: Options, op: str) -> Iterator[None]:
    if opts.netns is not None:
        if not netns.valid_name(opts.netns):
            raise InputRefused(op, [f"--netns {opts.netns!r} is not a namespace name"])
        if not netns.exists(opts.netns):
            raise InputRefused(
                op,
                [f"no network namespace {opts.netns} ({netns.NETNS_DIR}/{opts.netns} is missing)"],
            )
    with netns.entered(opts.netns):
        yield


def _effective(opts: Options, state: State | None) -> Options:
    """A namespace that is up keeps the bpffs and the IPVS choice it was brought up with."""
    if state is None:
        return opts
    return dataclasses.replace(
        opts, bpffs=state.bpffs, ipvs=state.ipvs_enabled,
        cgroup=opts.cgroup if opts.cgroup is not None else state.cgroup,
    )  # fmt: skip


@contextmanager
def locked(opts: Options, verb: str, *, shared: bool = False) -> Iterator[None]:
    """The namespace's lock (lock.py) around a verb; the name is checked before it
    becomes part of a path. A namespace that is not up when the verb ends keeps no lock
    file (a refused `bpfgen sync`, a `status` of nothing)."""
    if opts.netns is not None and not netns.valid_name(opts.netns):
        raise InputRefused(f"{verb} in {opts.netns!r}",
                           [f"--netns {opts.netns!r} is not a namespace name"])  # fmt: skip
    with lock.held(opts.run_dir, opts.label, verb, shared=shared, wait=opts.lock_wait):
        try:
            yield
        finally:
            if not os.path.lexists(state_path(opts.run_dir, opts.label)):
                lock.discard(opts.run_dir, opts.label)  # not up: leave nothing behind


def up(build_dir: str | os.PathLike[str], opts: Options) -> Report:
    """Make the build live in the namespace; on an existing `up`, converge (= sync)."""
    op = f"up {build_dir} in {opts.label}"
    with locked(opts, "up"):
        build = read_build(build_dir)
        with _in_namespace(opts, op):
            rec = recover(opts)
            state = rec.state
            if state is not None and rec.source == "none":
                state.mode = build.mode  # taken over from the kernel: no mode of its own
            opts = _effective(opts, state)
            problems = preflight(build, opts, state, op)
            if problems:
                raise InputRefused(op, problems)
            notes = recovery_notes(rec, opts)
            if state is not None:
                report = Converge(build, opts, state, dry=False).run()
                report.notes[:0] = notes
                return report
            state = new_state(opts, build)
            save_state(opts.run_dir, opts.label, state)
            try:
                report = Converge(build, opts, state, dry=False).run()
                report.notes[:0] = notes
                return report
            except BaseException as exc:
                rollback = Report()
                failures = teardown(state, opts, rollback)
                if failures:
                    save_state(opts.run_dir, opts.label, state)
                    note = "; rollback left: " + "; ".join(failures)
                else:
                    remove_state(opts.run_dir, opts.label)
                    note = "; rolled back: " + (", ".join(rollback.changes) or "nothing to undo")
                if isinstance(exc, RuntimeOpError):
                    exc.args = (str(exc) + note,)
                raise


def sync(build_dir: str | os.PathLike[str], opts: Options) -> Report:
    """Converge a namespace that is up to the (rebuilt) build directory; sessions are kept."""
    op = f"sync {build_dir} in {opts.label}"
    with locked(opts, "sync"):
        build = read_build(build_dir)
        with _in_namespace(opts, op):
            rec = recover(opts)
            state = rec.state
            if state is None:
                why = f" ({rec.problem})" if rec.problem else ""
                raise InputRefused(
                    op, [f"bpfgen is not up in {opts.label}{why}: run `bpfgen up` first"]
                )
            if rec.source == "none":
                state.mode = build.mode
            opts = _effective(opts, state)
            problems = preflight(build, opts, state, op)
            if problems:
                raise InputRefused(op, problems)
            report = Converge(build, opts, state, dry=False).run()
            report.notes[:0] = recovery_notes(rec, opts)
            return report


def down(opts: Options) -> Report:
    """Remove everything bpfgen created: what the state file (or its journal copy) lists
    and what the kernel shows of bpfgen's; a namespace where there is none: nothing to do."""
    op = f"down in {opts.label}"
    report = Report()
    with locked(opts, "down"), _in_namespace(opts, op):
        rec = recover(opts)
        state = rec.state
        if state is None:
            if rec.problem is not None:
                remove_state(opts.run_dir, opts.label)
                report.changes.append(f"remove the damaged state file ({rec.problem})")
            else:
                report.notes.append(f"bpfgen is not up in {opts.label}: nothing to remove")
            _forget(opts)
            return report
        report.notes += recovery_notes(rec, opts)
        failures = teardown(state, opts, report)
        if failures:
            raise RuntimeOpError(op, errno.EBUSY, "; ".join(failures))
        remove_state(opts.run_dir, opts.label)
        _forget(opts)
    return report


def _forget(opts: Options) -> None:
    """down, nothing of bpfgen left: its verifier logs and its lock file go too."""
    shutil.rmtree(opts.log_dir(), ignore_errors=True)
    with suppress(OSError):
        os.rmdir(opts.log_dir().parent)
    lock.discard(opts.run_dir, opts.label)


def status(opts: Options) -> dict[str, Any]:
    """Attached programs, map fill, counters, IPVS services, and what differs from the build."""
    op = f"status in {opts.label}"
    with locked(opts, "status", shared=True), _in_namespace(opts, op):
        rec = recover(opts)
        state = rec.state
        record = {"record": rec.source, "record_notes": recovery_notes(rec, opts)}
        if state is None:
            return {"netns": opts.netns, "up": False, "in_sync": rec.problem is None, **record,
                    "differences": [f"{rec.problem}: `bpfgen down` removes it"]
                    if rec.problem else []}  # fmt: skip
        out: dict[str, Any] = {
            "netns": opts.netns,
            "up": True,
            **record,
            "build_dir": state.build_dir,
            "mode": state.mode,
            "config_sha256": state.config_sha256,
            "pin_dir": state.pin_dir,
        }
        present = attach.devices()
        progs = []
        for a in state.attachments:
            ifindex = present.get(a.device)
            live_id = (
                attach.query(a.hook, a.ifindex, xdp_mode=a.xdp_mode)
                if ifindex == a.ifindex else None
            )  # fmt: skip
            progs.append(_attached(a, a.device, live_id))
        for x in state.links:
            progs.append(_attached(x, x.cgroup, attach.query_cgroup(x.pin)))
        out["attached"] = progs
        maps = []
        counters: dict[str, int] = {}
        build: Build | None = None
        if not state.build_dir:
            out["build_problem"] = (
                "no record of the build that is up: `bpfgen up DIR` converges to DIR, "
                "`bpfgen down` removes what is listed above"
            )
        else:
            try:
                build = read_build(state.build_dir)
            except InputRefused as exc:
                out["build_problem"] = str(exc)
        # What the compile skipped (bpfgen.model.Skipped): not served on this node.
        skipped = build.manifest.inputs.get("skipped", []) if build is not None else []
        out["skipped"] = skipped if isinstance(skipped, list) else []
        for path in state.pins:
            if not os.path.exists(path):
                maps.append({"name": os.path.basename(path), "pinned": False})
                continue
            with pins.PinnedMap(path) as m:
                is_array = m.info.type_name.endswith("ARRAY")
                # A ring buffer has no keys: its size is bytes (`status --drops` reads it).
                is_ring = m.info.type_name == "BPF_MAP_TYPE_RINGBUF"
                entries = m.max_entries if is_array or is_ring else m.count()
                maps.append(
                    {"name": m.name, "pinned": True, "type": m.info.type_name,
                     "entries": entries, "max_entries": m.max_entries}
                )  # fmt: skip
                if m.name == COUNTERS_MAP and build is not None:
                    names = build.manifest.counters
                    for i, cname in enumerate(names):
                        values = m.lookup_percpu(i.to_bytes(4, "little")) or []
                        counters[cname] = sum(int.from_bytes(v[:8], "little") for v in values)
        out["maps"] = maps
        out["counters"] = counters
        services, ipvs_problem = live_services(state)
        if ipvs_problem is not None:
            out["ipvs_problem"] = ipvs_problem
        out["ipvs_services"] = services
        out["nft_table"] = nft.exists() if state.mode == "ipvs" else None  # bpf mode: none
        if build is not None:
            dry_opts = Options(
                opts.netns, state.bpffs, opts.run_dir, state.ipvs_enabled, cgroup=state.cgroup
            )
            dry_state = State.from_json(state.to_json())
            try:
                diff = Converge(build, dry_opts, dry_state, dry=True).run()
                out["differences"] = diff.changes
            except RuntimeOpError as exc:
                out["differences"] = [f"cannot compare: {exc}"]
            out["in_sync"] = not out["differences"]
        else:
            out["in_sync"] = False
        return out


def _attached(rec: Attachment | CgroupLink, where: str, live_id: int | None) -> dict[str, Any]:
    """status: one recorded attachment (a device's hook, or a cgroup's link) as it is live."""
    info = pins.program_by_id(live_id) if live_id else None
    return {
        "program": rec.program, "device": where, "hook": rec.hook,
        "xdp_mode": rec.xdp_mode if isinstance(rec, Attachment) else None, "prog_id": live_id,
        "tag": info.tag if info else None, "as_recorded": live_id == rec.prog_id,
    }  # fmt: skip


def which_tools() -> dict[str, str | None]:
    """Where the external tools the runtime may call are (for diagnostics)."""
    return {t: shutil.which(t) for t in ("nft", "modprobe")}

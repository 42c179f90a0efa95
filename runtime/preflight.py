"""The checks before anything changes: every problem that refuses a run, at once.

Called inside the namespace by `up` and `sync`: the build's devices and cgroups,
its frontends, the mode's own needs (MODES[mode].preflight: IPVS, nft...), the
bpffs, pinned maps whose definition changed, and the state file's namespace and
mode. A problem here is `InputRefused` (exit 2): nothing has been touched.
"""

from __future__ import annotations

import os

from . import attach, ipvs, pins
from .builddir import Build
from .converge import MODES, map_desc
from .converge_hooks import desired_links
from .mode_bpf import SERVICE_TABLE_PREFIX
from .options import Options
from .state import State


def preflight(build: Build, opts: Options, state: State | None, op: str) -> list[str]:
    """Problems that refuse the run; called inside the namespace."""
    problems: list[str] = []
    present = attach.devices()
    for cgroup in sorted({cg for _, cg in desired_links(build, opts.cgroup).values()}):
        why = attach.cgroup2_problem(cgroup)
        if why:
            problems.append(f"socketLB: {why} (the cgroup programs attach there; --cgroup)")
    for prog in build.programs:
        for a in prog.attach:
            if a.is_cgroup:
                continue
            if not a.is_glob and a.interface not in present:
                where = f"namespace {opts.netns}" if opts.netns else "this namespace"
                problems.append(
                    f"program {prog.name}: {a.hook} on {a.interface} ({a.role}): no device "
                    f"{a.interface} in {where} (devices: {', '.join(sorted(present))})"
                )
            if a.hook == "xdp" and a.is_glob:
                problems.append(
                    f"program {prog.name}: xdp on a glob ({a.interface}) is not supported"
                )
    keys: dict[ipvs.ServiceKey, str] = {}
    for f in build.frontends:
        for address in [f.address] if f.address else list(build.node.addresses):
            key = ipvs.ServiceKey(f.proto_number, address, f.port)
            if key in keys:
                problems.append(f"frontend {f.service} {key} is also {keys[key]}")
            keys[key] = f.service
    problems += MODES[build.mode].preflight(build, opts)
    if not pins.is_bpffs(opts.bpffs) and os.path.exists(opts.bpffs) and os.listdir(opts.bpffs):
        problems.append(f"{opts.bpffs} is not a bpffs and not empty: cannot mount bpffs there")
    problems += map_problems(build, opts)
    if state is not None and state.netns != opts.netns:
        problems.append(f"the state file for {opts.label} is for namespace {state.netns}")
    if state is not None and state.mode != build.mode:
        problems.append(
            f"{opts.label} is up in datapath mode {state.mode} and the build is for mode "
            f"{build.mode}: a sync does not switch modes (`bpfgen down`, then `bpfgen up`)"
        )
    del op
    return problems


def map_problems(build: Build, opts: Options) -> list[str]:
    """Pinned maps whose definition differs from the build (sessions would be lost); not
    the service tables, which hold no sessions: they are replaced with the programs."""
    problems = []
    for spec in build.maps:
        path = spec.pin_path(opts.bpffs, opts.label)
        if spec.name.startswith(SERVICE_TABLE_PREFIX) or not os.path.exists(path):
            continue
        with pins.PinnedMap(path) as live:
            have = (live.info.type_name, live.key_size, live.value_size, live.max_entries)
        want = (spec.type, spec.key_size, spec.value_size, spec.max_entries)
        if have != want and not opts.reset_sessions:
            problems.append(
                f"map {spec.name}: pinned at {path} as {map_desc(have)}, the build wants "
                f"{map_desc(want)}; sessions live in it: use --reset-sessions to recreate it "
                "(established connections through SNAT break)"
            )
    return problems

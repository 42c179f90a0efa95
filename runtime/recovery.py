"""What a verb works from: the state file, else its journal copy, else the kernel.

`recover` reads the namespace's record (state.py) when it is whole, otherwise its
copy in the journal map on the bpffs (journal.py), then adds what the kernel shows
of bpfgen's that neither lists (`discover`): pins, bpfgen's tc filters and XDP
programs, pinned cgroup links. So `down` removes everything bpfgen made even
after the state file was deleted or damaged by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import attach, journal, libbpf, pins
from .builddir import Build
from .contract import Mode
from .errors import operation
from .options import Options
from .state import Attachment, CgroupLink, State, from_json_checked, load_checked


@dataclass
class Record:
    """What a verb works from: the state file, else its journal copy, else nothing, plus
    what the kernel shows of bpfgen that neither lists (`discover`)."""

    state: State | None
    source: str  # "state file" | "journal" | "none"
    problem: str | None  # why the state file was not used (None: there was none, or it was)
    found: list[str] = field(default_factory=list)  # what discovery added

    @property
    def lost(self) -> bool:
        return self.source != "state file"


def recover(opts: Options) -> Record:
    """The record of the namespace, called inside it. The state file when it is whole;
    otherwise (missing, garbage, truncated, a list, a directory) the journal on the bpffs;
    then everything of bpfgen's the kernel has that the record does not: pins in the
    namespace's pin directory, filters with bpfgen's handle and priority running a
    `bpfgen_*` program, XDP programs named so, pinned cgroup links."""
    state, problem = load_checked(opts.run_dir, opts.label)
    source = "state file" if state is not None else "none"
    if state is None:
        text = journal.read(opts.pin_dir())
        if text is not None:
            try:
                state, source = from_json_checked(text), "journal"
            except (ValueError, TypeError):
                state = None
    rec = Record(state, source, problem)
    probe = state if state is not None else new_state(opts, None)
    rec.found = discover(probe, opts, guess_ownership=state is None)
    if state is None and rec.found:
        rec.state = probe
    return rec


def discover(state: State, opts: Options, *, guess_ownership: bool) -> list[str]:
    """Add to `state` what is bpfgen's in the kernel and not recorded; returns what.
    `guess_ownership` (no record at all): a clsact qdisc carrying bpfgen's filter is taken
    as bpfgen's (removed by `down` only when no other filter is left on it), and the
    namespace's pin directory (with bpfgen/ above it) as created by bpfgen (removed only
    when empty). The previous values of sysctls cannot be found: without a record they
    are left as they are."""
    found: list[str] = []
    pin_dir = state.pin_dir
    if os.path.isdir(pin_dir):
        linked = {x.pin for x in state.links}
        for name in sorted(os.listdir(pin_dir)):
            path = os.path.join(pin_dir, name)
            if name == journal.NAME or path in state.pins or path in linked:
                continue
            if name.startswith(attach.LINK_PIN_PREFIX):
                hook = name[len(attach.LINK_PIN_PREFIX) :]
                state.links.append(CgroupLink(program="?", hook=hook, cgroup="?", pin=path,
                                              prog_id=attach.query_cgroup(path) or 0))  # fmt: skip
            else:
                state.pins.append(path)
            found.append(f"pin {path}")
        if guess_ownership:
            for d in (os.path.dirname(pin_dir), pin_dir):
                if d not in state.dirs_created:
                    state.dirs_created.append(d)
    recorded = {(a.device, a.hook) for a in state.attachments}
    for dev, ifindex in sorted(attach.devices().items()):
        live: list[tuple[str, int, str | None]] = []
        if attach.has_clsact(ifindex):
            for hook in attach.TC_ATTACH_POINTS:
                prog_id = attach.query(hook, ifindex)
                if prog_id:
                    live.append((hook, prog_id, None))
        for xdp_mode, flags in attach.XDP_MODES.items():
            with operation(f"query xdp on {dev}"):
                prog_id = libbpf.bpf_xdp_query_id(ifindex, flags)
            if prog_id:
                live.append(("xdp", prog_id, xdp_mode))
        for hook, prog_id, mode in live:
            info = pins.program_by_id(prog_id)
            if info is None or not info.name.startswith("bpfgen") or (dev, hook) in recorded:
                continue
            state.attachments.append(
                Attachment(program=info.name, device=dev, ifindex=ifindex, hook=hook,
                           prog_id=prog_id, xdp_mode=mode)
            )  # fmt: skip
            recorded.add((dev, hook))
            found.append(f"{info.name} on {hook} of {dev}")
            if guess_ownership and hook != "xdp":
                state.clsact_created.setdefault(dev, ifindex)
    return found


def recovery_notes(rec: Record, opts: Options) -> list[str]:
    notes = []
    if rec.problem is not None:
        notes.append(f"{rec.problem}: not used")
    if rec.source == "journal":
        notes.append(f"state recovered from its copy on the bpffs ({journal.path(opts.pin_dir())})")
    elif rec.lost and rec.found:
        notes.append(
            "no state record: bpfgen's objects found in the kernel are taken over; sysctls "
            "bpfgen may have set are left as they are (their previous values are unknown)"
        )
    if rec.found and not (rec.lost and rec.source == "none"):
        notes.append("not in the record, found in the kernel: " + ", ".join(rec.found))
    return notes


def new_state(opts: Options, build: Build | None) -> State:
    return State(
        netns=opts.netns, bpffs=opts.bpffs, pin_dir=opts.pin_dir(), ipvs_enabled=opts.ipvs,
        mode=build.mode if build is not None else Mode.IPVS, cgroup=opts.cgroup,
    )  # fmt: skip

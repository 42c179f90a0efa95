"""The converge pass: one run that makes the live state match a build.

`up` and `sync` run it (`status` runs it dry, to list what differs). In order:
bpffs mounted if needed -> pinned maps checked -> objects loaded, maps pinned by
name -> map_init entries -> a generic build's runtime config -> sysctls -> tc/XDP
attachments and cgroup links (converge_hooks.py) -> the mode's own steps (MODES:
mode_ipvs.py, mode_bpf.py). Each change goes through `Converge.change`, which
records it in the report and, unless dry, saves the state file after it.
"""

from __future__ import annotations

import errno
import hashlib
import os
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Protocol

from . import attach, fault, journal, pins, sysctl
from .builddir import Build
from .contract import Mode
from .converge_hooks import Hooks, desired_links, desired_targets
from .errors import RuntimeOpError, in_operation
from .loader import LoadedObject, open_object
from .mode_bpf import (
    SERVICE_TABLE_PREFIX,
    STAGED_SUFFIX,
    BpfMode,
    frontend_ids_moved,
    interrupted_replacement,
)
from .mode_ipvs import IpvsMode
from .options import Options, Report
from .state import State, SysctlRecord
from .state import save as save_state


class ModeSteps(Protocol):
    """A datapath mode's own part of a run: its checks and its converge steps."""

    def __init__(self, c: Converge) -> None: ...

    @staticmethod
    def preflight(build: Build, opts: Options) -> list[str]: ...

    def converge(self) -> None: ...


#: Each datapath mode's steps, by the manifest's mode (a test checks both are here).
MODES: dict[Mode, type[ModeSteps]] = {Mode.IPVS: IpvsMode, Mode.BPF: BpfMode}


def desired_sysctls(build: Build, with_ipvs: bool) -> dict[str, str]:
    """name -> value; ip_local_reserved_ports is merged with what is there (see _sysctls)."""
    wanted = {"net.ipv4.ip_forward": "1"}
    if with_ipvs:
        wanted |= {
            "net.ipv4.vs.conntrack": "0",  # IPVS leaves conntrack alone; nft untracks the rest
            "net.ipv4.vs.conn_reuse_mode": "1",  # a reused client port is rescheduled ...
            "net.ipv4.vs.expire_nodest_conn": "1",  # ... and a removed backend's conns expire
            "net.ipv4.vs.expire_quiescent_template": "1",  # affinity leaves weight-0 backends
        }
        # Strict ARP on the uplink only (Kubernetes #76664): the VIPs on the dummy device
        # are local addresses, and Linux answers ARP for any local address on any device,
        # so the node claimed LB IPs on its LAN. Not conf.all: pods whose default route is
        # on-link ARP for a VIP on their own device and must get the node's answer. The
        # kernel uses the larger of conf.all and conf.<dev>, so the device's value holds.
        uplink = next(i.name for i in build.node.interfaces if i.role == "uplink")
        wanted |= {
            f"net/ipv4/conf/{uplink}/arp_ignore": "1",  # answer for the device's addresses
            f"net/ipv4/conf/{uplink}/arp_announce": "2",  # ... and source ARP from them
        }
    return wanted


class Converge:
    """Makes the live state match `build`, recording into `state`; dry: only lists changes."""

    def __init__(self, build: Build, opts: Options, state: State, *, dry: bool) -> None:
        self.build = build
        self.opts = opts
        self.state = state
        self.dry = dry
        self.report = Report()
        self.loaded: dict[str, LoadedObject] = {}  # object file -> loaded object
        self.maps_reset = False
        # Service tables the next programs get fresh (map name -> staged pin path), and
        # why; empty: the pinned tables are rewritten in place (map_init).
        self.staged: dict[str, str] = {}
        self.tables_reason = ""
        self.reload = False  # this run loads the objects (then nothing is rewritten in place)
        self.redefined: list[str] = []  # service tables whose definition changed

    def change(self, what: str, action: Callable[[], object]) -> None:
        self.report.changes.append(what)
        if not self.dry:
            fault.point(f"before {what}")
            action()
            fault.point(f"after {what}")
            self.save()

    def save(self) -> None:
        if not self.dry:
            save_state(self.opts.run_dir, self.opts.label, self.state)

    def run(self) -> Report:
        with ExitStack() as stack:
            stack.callback(self._close_objects)
            self.bpffs()
            self.maps()
            self.programs()
            self.map_init()
            self.runtime_config()
            self.sysctls()
            hooks = Hooks(self)
            hooks.attachments()
            hooks.cgroup_links()
        MODES[self.build.mode](self).converge()
        if not self.dry:
            st = self.state
            st.build_dir = str(self.build.path)
            st.cgroup = self.opts.cgroup
            st.mode = self.build.mode
            st.config_sha256 = self.build.config_sha256
            st.object_sha256 = dict(self.build.object_sha256)
            st.runtime_config_sha256 = _runtime_config_sha(self.build)
            self.save()
        return self.report

    def _close_objects(self) -> None:
        for obj in self.loaded.values():
            obj.close()  # attached programs stay (tc/XDP hold them), pinned maps stay
        self.loaded.clear()

    # bpffs, maps, programs

    def bpffs(self) -> None:
        root = self.opts.bpffs
        if not pins.is_bpffs(root):

            def mount() -> None:
                self.state.bpffs_mounted = True  # intent first: `down` unmounts it if there
                self.save()
                pins.mount_bpffs(root)

            self.report.notes.append(f"bpffs was not mounted at {root}: mounting it")
            self.change(f"mount bpffs at {root}", mount)
        pin_dir = self.opts.pin_dir()
        missing: list[str] = []
        d = pin_dir
        while not os.path.isdir(d) and d != root:
            missing.insert(0, d)
            d = os.path.dirname(d)
        for d in missing:

            def mkdir(d: str = d) -> None:
                if d not in self.state.dirs_created:
                    self.state.dirs_created.append(d)  # intent first (removed only if empty)
                self.save()
                os.mkdir(d)

            self.change(f"create {d}", partial(in_operation, f"create {d}", partial(mkdir, d)))
        if not os.path.exists(journal.path(pin_dir)):
            self.change(
                f"create the state journal {journal.path(pin_dir)}",
                partial(journal.create, pin_dir),
            )

    def maps(self) -> None:
        for spec in self.build.maps:
            path = spec.pin_path(self.opts.bpffs, self.opts.label)
            if not os.path.exists(path):
                continue
            with pins.PinnedMap(path) as live:
                have = (live.info.type_name, live.key_size, live.value_size, live.max_entries)
            want = (spec.type, spec.key_size, spec.value_size, spec.max_entries)
            if have != want and spec.name.startswith(SERVICE_TABLE_PREFIX):
                # sized by the build (frontends, backends, Maglev rows): a fresh one is
                # loaded with the programs (programs()), the pinned one stays until then
                self.redefined.append(f"{spec.name} ({map_desc(have)} -> {map_desc(want)})")
            elif have != want:
                self.maps_reset = True
                self.change(
                    f"unpin {path} (its definition changed: sessions reset)",
                    partial(in_operation, f"unpin {path}", partial(os.unlink, path)),
                )

    def current_program(self, name: str) -> int | None:
        """The id of a live program of this build already attached (same object bytes)."""
        if self.maps_reset:
            return None
        prog = next(p for p in self.build.programs if p.name == name)
        if self.state.object_sha256.get(prog.object) != self.build.object_sha256[prog.object]:
            return None
        for a in self.state.hooked():
            if a.program == name and pins.program_by_id(a.prog_id) is not None:
                return a.prog_id
        return None

    def programs(self) -> None:
        """Load every object when some program of the build is not live yet, or when the
        service tables must be replaced with the programs (frontend ids moved).

        A load gives the service tables (bpfgen_svc_*) whose pins exist FRESH maps, pinned
        at `<name>__next` until the new programs are attached (publish_tables); the session
        maps (NAT, reverse NAT, counters) are always the pinned ones. So the live programs
        keep reading their own, complete tables while the new ones are filled, and every
        hook switches program and tables together (one BPF_TC_F_REPLACE)."""
        present = attach.devices()
        targets = desired_targets(self.build, present)
        links = desired_links(self.build, self.opts.cgroup)
        needed = {p for p in [*targets.values(), *(n for n, _ in links.values())]
                  if self.current_program(p) is None}  # fmt: skip
        missing_pins = [
            s.name for s in self.build.maps
            if not os.path.exists(s.pin_path(self.opts.bpffs, self.opts.label))
        ]  # fmt: skip
        moved = [] if self.maps_reset else frontend_ids_moved(self.build, self.opts)
        leftover = interrupted_replacement(self.state)
        if not needed and not missing_pins and not moved and not leftover and not self.redefined:
            return
        self.reload = True
        self.staged = {
            s.name: s.pin_path(self.opts.bpffs, self.opts.label) + STAGED_SUFFIX
            for s in self.build.maps
            if s.name.startswith(SERVICE_TABLE_PREFIX)
            and os.path.exists(s.pin_path(self.opts.bpffs, self.opts.label))
        }  # fmt: skip
        if moved:
            shown = ", ".join(moved[:4]) + (f" (+{len(moved) - 4})" if len(moved) > 4 else "")
            self.tables_reason = f"frontend ids moved: {shown}"
        elif self.redefined:
            self.tables_reason = f"definition changed: {', '.join(self.redefined)}"
        elif leftover:
            self.tables_reason = "a replacement was interrupted"
        else:
            self.tables_reason = "new programs"
        if leftover:
            self.report.notes.append(
                f"staged service tables of an interrupted sync removed: {', '.join(leftover)}"
            )

        def load() -> None:
            for path in leftover:  # a program using one holds it by reference: unaffected
                if os.path.lexists(path):
                    os.unlink(path)
                self.state.pins.remove(path)
            for path in self.staged.values():
                if path not in self.state.pins:
                    self.state.pins.append(path)  # on disk before the pin exists
            self.save()
            for obj_name in self.build.objects():
                prog = next(p for p in self.build.programs if p.object == obj_name)
                self.loaded[obj_name] = open_object(
                    self.build.object_path(prog),
                    pin_root=self.opts.pin_dir(),
                    initial_values=self.build.initial_values(),
                    log_level=0,
                    log_dir=self.opts.log_dir(),
                    pin_paths=self.staged,
                )
            for spec in self.build.maps:
                path = spec.pin_path(self.opts.bpffs, self.opts.label)
                if path not in self.state.pins:
                    self.state.pins.append(path)

        objs = ", ".join(self.build.objects())
        self.change(f"load {objs} (maps pinned in {self.opts.pin_dir()})", load)
        if self.staged:
            self.report.changes.append(
                f"service tables replaced with the programs: {self.tables_reason} "
                f"({', '.join(sorted(self.staged))} fresh, filled before the programs are "
                "attached)"
            )

    def program_fd(self, name: str, closer: ExitStack) -> int:
        prog = next(p for p in self.build.programs if p.name == name)
        loaded = self.loaded.get(prog.object)
        if loaded is not None:
            return loaded.programs[prog.function].fd
        prog_id = self.current_program(name)
        assert prog_id is not None
        fd = pins.program_fd_by_id(prog_id)
        closer.callback(os.close, fd)
        return fd

    def map_init(self) -> None:
        """Write map_init.json into the pinned maps in place (no reload; sessions untouched),
        or, for service tables staged by programs(), into the fresh tables of the programs
        about to be attached (nothing reads them yet).

        In place, two passes over all maps: first every new or changed entry, then the stale
        ones removed (array slots, which cannot be deleted, zeroed), so a program running
        meanwhile sees the old or the new entry of a slot, never a missing one. A packet
        finds its frontend first and everything else from it, so the frontend maps
        (`*frontends*`) are written last and cleaned first: backend lists, membership
        sets and Maglev tables under a frontend's new id are complete before the
        frontend entry points at them, and the old entries are gone only after nothing
        new refers to them. That is safe only while every frontend id keeps meaning the
        same frontend: when ids move (a Service added before another renumbers the
        frontends after it), an id in use would briefly hold another frontend's backends
        and membership, whatever the order; programs() then stages fresh tables instead.
        """
        removals: list[tuple[str, pins.PinnedMap, list[bytes], bool]] = []
        in_place: list[str] = []
        with ExitStack() as maps:
            for name, entries in sorted(self.build.map_init.items(), key=_write_order):
                spec = next(s for s in self.build.maps if s.name == name)
                path = self.staged.get(name) or spec.pin_path(self.opts.bpffs, self.opts.label)
                if not os.path.exists(path):  # dry run before the first load
                    self.report.changes.append(f"write {len(entries)} entries into map {name}")
                    continue
                live = maps.enter_context(pins.PinnedMap(path))
                is_array = spec.type.endswith("ARRAY")
                want = dict(entries)
                have = {k: live.lookup(k) for k in live.keys()}  # noqa: SIM118 - not a dict
                zero = bytes(spec.value_size)
                stale = [k for k, v in have.items()
                         if k not in want and not (is_array and v == zero)]  # fmt: skip
                differ = [k for k, v in want.items() if have.get(k) != v]
                if differ:

                    def write(live: pins.PinnedMap = live, want: dict[bytes, bytes] = want,
                              differ: list[bytes] = differ) -> None:  # fmt: skip
                        for k in differ:
                            live.update(k, want[k])

                    self.change(f"map {name}: {len(differ)} entries written", write)
                    in_place.append(name)
                if stale:
                    removals.append((name, live, stale, is_array))
            for name, live, stale, is_array in sorted(removals, key=_removal_order):

                def remove(live: pins.PinnedMap = live, stale: list[bytes] = stale,
                           is_array: bool = is_array) -> None:  # fmt: skip
                    for k in stale:
                        if is_array:
                            live.update(k, bytes(live.value_size))
                        else:
                            live.delete(k)

                verb = "zeroed" if is_array else "removed"
                self.change(f"map {name}: {len(stale)} stale entries {verb}", remove)
                in_place.append(name)
        tables = sorted({n for n in in_place if n.startswith(SERVICE_TABLE_PREFIX)})
        if tables and not self.reload:
            self.report.notes.append(
                f"service tables rewritten in place: frontend ids stable ({', '.join(tables)})"
            )

    def runtime_config(self) -> None:
        """A generic build's config (.bss) changed but not its code: write it into the live
        programs' .bss in place, as map_init does for maps (a load sets it itself)."""
        rc = self.build.runtime_config
        want = _runtime_config_sha(self.build)
        if rc is None or rc[0] != ".bss" or self.loaded or self.state.runtime_config_sha256 == want:
            return
        prog_ids = sorted({a.prog_id for a in self.state.hooked()})

        def write() -> None:
            written = 0
            for prog_id in prog_ids:
                for map_id in pins.program_map_ids(prog_id):
                    with pins.PinnedMap.by_id(map_id) as m:
                        if m.name.endswith(".bss") and m.value_size == len(rc[1]):
                            m.update(bytes(4), rc[1])
                            written += 1
            if prog_ids and not written:
                raise RuntimeOpError(
                    "write the runtime config", errno.ENOENT, "the live programs have no .bss"
                )
            self.state.runtime_config_sha256 = want

        self.change(f"runtime config: .bss of {len(prog_ids)} live programs rewritten", write)

    # sysctls

    def sysctls(self) -> None:
        wanted = desired_sysctls(self.build, self.opts.ipvs and self.build.needs_ipvs)
        first, last = self.build.node.snat_port_range
        current_reserved = sysctl.read("net.ipv4.ip_local_reserved_ports")
        if not _covers(current_reserved, first, last):
            wanted["net.ipv4.ip_local_reserved_ports"] = sysctl.with_reserved(
                current_reserved, first, last
            )
        for name, value in sorted(wanted.items()):
            if not sysctl.exists(name):
                raise RuntimeOpError(f"set sysctl {name}", errno.ENOENT, "not in this kernel")
            current = sysctl.read(name)
            if current == value:
                continue

            def write(name: str = name, value: str = value, current: str = current) -> None:
                had = self.state.sysctls.get(name)  # bpfgen set it before: keep its previous
                previous = had.previous if had is not None else current
                self.state.sysctls[name] = SysctlRecord(previous=previous, value=value)
                self.save()  # the previous value is on disk before the kernel changes
                sysctl.write(name, value)

            self.change(f"sysctl {name}: {current or '(empty)'} -> {value}", write)


def _is_frontend_map(name: str) -> bool:
    return "frontends" in name


def _write_order(item: tuple[str, object]) -> tuple[bool, str]:
    return (_is_frontend_map(item[0]), item[0])


def _removal_order(item: tuple[str, object, object, object]) -> tuple[bool, str]:
    return (not _is_frontend_map(item[0]), item[0])


def _runtime_config_sha(build: Build) -> str:
    rc = build.runtime_config
    return "" if rc is None else hashlib.sha256(rc[0].encode() + b":" + rc[1]).hexdigest()


def _covers(reserved: str, first: int, last: int) -> bool:
    return any(a <= first and last <= b for a, b in sysctl.parse_port_ranges(reserved))


def map_desc(t: tuple[str, int, int, int]) -> str:
    return f"{t[0]} key {t[1]} value {t[2]} max_entries {t[3]}"

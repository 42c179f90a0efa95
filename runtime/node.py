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

Order of a first `up`: bpffs mounted if needed -> objects loaded, maps pinned by
name (both objects share them) -> map_init entries -> sysctls -> tc/XDP
attached -> nftables notrack table -> dummy device with the VIPs -> IPVS
timeouts, services, real servers. The programs and the notrack rules are in
place before IPVS answers for a VIP, so no service packet is ever tracked.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from . import attach, fault, ipvs, journal, libbpf, lock, netns, nft, pins, sysctl
from .builddir import Build, InputRefused, read_build
from .errors import RuntimeOpError, operation
from .loader import LoadedObject, open_object
from .nlerr import netlink
from .state import RUN_DIR, State, from_json_checked, load_checked, state_path
from .state import remove as remove_state
from .state import save as save_state

BPFFS = "/sys/fs/bpf"
DUMMY_DEVICE = "bpfgen-ipvs0"  # holds every VIP as a /32, as kube-proxy's kube-ipvs0
# RFC 5382 REQ-5: established TCP idle timeout >= 2 h 4 min; transitory >= 4 min.
# RFC 4787 REQ-5: UDP >= 2 min (5 min recommended).
IPVS_TCP_FLOOR, IPVS_TCPFIN_FLOOR, IPVS_UDP_FLOOR = 7440, 240, 120
PRELOAD_ENTRIES = {"maps.debug", "progs.debug"}  # what the kernel's bpf_preload puts on a bpffs
COUNTERS_MAP = "bpfgen_counters"
# bpf mode's service tables (templates/include/bpfgen_maps.h): what a build says about its
# frontends, by frontend id. Everything else pinned is session state and is never replaced.
SERVICE_TABLE_PREFIX = "bpfgen_svc_"
FRONTEND_TABLE = "bpfgen_svc_frontends"  # value: struct bpfgen_svc_value, first field __u32 id
NOT_A_FRONTEND = 0xFFFFFFFF  # the id of a VIP's (VIP, 0, ICMP) entry: no frontend
# A fresh service table's pin until its programs are attached (bpffs refuses dots in names).
STAGED_SUFFIX = "__next"


@dataclass(frozen=True)
class Options:
    netns: str | None = None
    bpffs: str = BPFFS
    run_dir: str = RUN_DIR
    ipvs: bool = True  # False: test-only, for kernels without IPVS (no IPVS services or vs.*)
    reset_sessions: bool = False  # sync: recreate maps whose definition changed
    # bpf mode, socketLB: the cgroup v2 directory for the sock_addr programs instead of the
    # build's (datapath.cgroup, by default the root cgroup); kept by later runs once up
    cgroup: str | None = None
    lock_wait: float = 0.0  # seconds to wait for another bpfgen command in the namespace

    @property
    def label(self) -> str:
        return netns.label(self.netns)

    def pin_dir(self) -> str:
        return os.path.join(self.bpffs, "bpfgen", self.label)

    def log_dir(self) -> Path:
        """Where a verifier rejection at up/sync leaves its log (one file per program)."""
        return Path(self.run_dir) / "logs" / self.label


@dataclass
class Report:
    """What a run changed (empty: nothing) and what it noticed."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"changes": self.changes, "notes": self.notes}


# --- desired state from the build ------------------------------------------------------------


def desired_services(build: Build) -> dict[ipvs.ServiceKey, ipvs.VirtualService]:
    out: dict[ipvs.ServiceKey, ipvs.VirtualService] = {}
    for f in build.frontends:
        for address in [f.address] if f.address is not None else list(build.node.addresses):
            key = ipvs.ServiceKey(f.proto_number, address, f.port)
            dests = {(b.address, b.port): b.weight for b in f.backends}
            out[key] = ipvs.VirtualService(key, f.scheduler, f.persistence_timeout, dests)
    return out


def desired_nft(build: Build) -> str:
    frontends, node_ports, backends = [], [], []
    for f in build.frontends:
        proto = f.protocol.lower()
        if f.address is None:
            node_ports.append((proto, f.port))
        else:
            frontends.append((f.address, proto, f.port))
        backends += [(b.address, proto, b.port) for b in f.backends]
    return nft.render(
        frontends=frontends,
        node_ports=node_ports,
        node_addresses=build.node.addresses,
        backends=backends,
        snat_port_range=build.node.snat_port_range,
    )


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
    return wanted


def desired_timeouts(build: Build) -> ipvs.Timeouts:
    t = build.node.timeouts
    return ipvs.Timeouts(
        tcp=max(int(t.get("tcp_established", 0)), IPVS_TCP_FLOOR),
        tcp_fin=max(int(t.get("tcp_transitory", 0)), IPVS_TCPFIN_FLOOR),
        udp=max(int(t.get("udp", 0)), IPVS_UDP_FLOOR),
    )


def desired_targets(build: Build, present: dict[str, int]) -> dict[tuple[str, str], str]:
    """(device, hook) -> program name, globs expanded against `present` (not cgroup hooks)."""
    out: dict[tuple[str, str], str] = {}
    for prog in build.programs:
        for a in prog.attach:
            if a.is_cgroup:
                continue
            for dev in attach.expand(a.interface, present, (DUMMY_DEVICE,)):
                out[(dev, a.hook)] = prog.name
    return out


def desired_links(build: Build, cgroup: str | None) -> dict[str, tuple[str, str]]:
    """cgroup hook -> (program name, cgroup directory): the build's, or `cgroup` instead."""
    return {
        a.hook: (prog.name, cgroup or a.interface)
        for prog in build.programs
        for a in prog.attach
        if a.is_cgroup
    }


# --- checks before anything changes -------------------------------------------------------------


def _preflight(build: Build, opts: Options, state: State | None, op: str) -> list[str]:
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
    if build.needs_ipvs and opts.ipvs:
        reason = ipvs.unavailable_reason()
        if reason is not None:
            problems.append(
                f"this build is for datapath mode ipvs and {reason} (IPVS is in Debian's "
                "kernels as the ip_vs module; BPFGEN_TEST_NO_IPVS is for tests only)"
            )
        else:
            for sched in sorted({f.scheduler for f in build.frontends}):
                why = ipvs.load_scheduler(sched)
                if why:
                    problems.append(why)
        if not _dummy_available():
            problems.append(
                "the kernel has no dummy network device (for the VIPs, as kube-ipvs0): "
                "modprobe dummy failed"
            )
    if build.needs_nft:
        reason = nft.available()
        if reason:
            problems.append(reason)
        else:
            try:
                nft.check(desired_nft(build))
            except RuntimeOpError as exc:
                problems.append(f"the nftables rules do not load: {exc}")
    if not pins.is_bpffs(opts.bpffs) and os.path.exists(opts.bpffs) and os.listdir(opts.bpffs):
        problems.append(f"{opts.bpffs} is not a bpffs and not empty: cannot mount bpffs there")
    problems += _map_problems(build, opts)
    if state is not None and state.netns != opts.netns:
        problems.append(f"the state file for {opts.label} is for namespace {state.netns}")
    if state is not None and state.mode != build.mode:
        problems.append(
            f"{opts.label} is up in datapath mode {state.mode} and the build is for mode "
            f"{build.mode}: a sync does not switch modes (`bpfgen down`, then `bpfgen up`)"
        )
    del op
    return problems


def _map_problems(build: Build, opts: Options) -> list[str]:
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
                f"map {spec.name}: pinned at {path} as {_map_desc(have)}, the build wants "
                f"{_map_desc(want)}; sessions live in it: use --reset-sessions to recreate it "
                "(established connections through SNAT break)"
            )
    return problems


def _map_desc(t: tuple[str, int, int, int]) -> str:
    return f"{t[0]} key {t[1]} value {t[2]} max_entries {t[3]}"


# --- the converge pass ------------------------------------------------------------------------


class _Converge:
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
            self.attachments()
            self.cgroup_links()
            self.publish_tables()
        if self.build.needs_nft:
            self.nft()  # before IPVS takes traffic: its packets are never tracked
        if self.opts.ipvs and self.build.needs_ipvs:
            self.dummy()
            with ipvs.opened() as sock:
                self.ipvs_timeouts(sock)
                self.ipvs_services(sock)
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

            self.change(f"create {d}", partial(_op, f"create {d}", partial(mkdir, d)))
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
                self.redefined.append(f"{spec.name} ({_map_desc(have)} -> {_map_desc(want)})")
            elif have != want:
                self.maps_reset = True
                self.change(
                    f"unpin {path} (its definition changed: sessions reset)",
                    partial(_op, f"unpin {path}", partial(os.unlink, path)),
                )

    def _current_program(self, name: str) -> int | None:
        """The id of a live program of this build already attached (same object bytes)."""
        if self.maps_reset:
            return None
        prog = next(p for p in self.build.programs if p.name == name)
        if self.state.object_sha256.get(prog.object) != self.build.object_sha256[prog.object]:
            return None
        for a in self.state.attachments + self.state.links:
            if a["program"] == name and pins.program_by_id(int(a["prog_id"])) is not None:
                return int(a["prog_id"])
        return None

    def _frontend_ids_moved(self) -> list[str]:
        """Frontends whose id differs between the pinned bpfgen_svc_frontends and the build's
        map_init, and new frontends taking the id of a removed one (as "addr:port/proto
        id a -> b"). Empty: every id means the same frontend in both (a pure addition or
        removal), so the tables can be rewritten in place under live traffic."""
        path = os.path.join(self.opts.pin_dir(), FRONTEND_TABLE)
        entries = self.build.map_init.get(FRONTEND_TABLE)
        if entries is None or not os.path.exists(path):
            return []
        with pins.PinnedMap(path) as live:
            have = {k: _frontend_id(v) for k, v in live.items()}
        want = {k: _frontend_id(v) for k, v in entries}
        have = {k: i for k, i in have.items() if i != NOT_A_FRONTEND}
        want = {k: i for k, i in want.items() if i != NOT_A_FRONTEND}
        in_use = set(have.values())
        return [
            f"{_frontend_name(k)} id {have.get(k, '-')} -> {i}"
            for k, i in sorted(want.items())
            if (k in have and have[k] != i) or (k not in have and i in in_use)
        ]

    def _interrupted_replacement(self) -> list[str]:
        """Staged service-table pins a replacement left (it stopped before publishing)."""
        return [p for p in self.state.pins if p.endswith(STAGED_SUFFIX)]

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
                  if self._current_program(p) is None}  # fmt: skip
        missing_pins = [
            s.name for s in self.build.maps
            if not os.path.exists(s.pin_path(self.opts.bpffs, self.opts.label))
        ]  # fmt: skip
        moved = [] if self.maps_reset else self._frontend_ids_moved()
        leftover = self._interrupted_replacement()
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

    def publish_tables(self) -> None:
        """After every hook runs the new programs: pin their fresh service tables in place
        of the old ones (rename(2) on the bpffs replaces the old pin atomically). The old
        tables go away with the last old program; the live programs hold their maps by
        reference, the pins are the runtime's bookkeeping only."""
        for name, staged in sorted(self.staged.items()):
            spec = next(s for s in self.build.maps if s.name == name)
            path = spec.pin_path(self.opts.bpffs, self.opts.label)

            def publish(staged: str = staged, path: str = path) -> None:
                _op(f"pin {staged} as {path}", partial(os.rename, staged, path))
                if staged in self.state.pins:
                    self.state.pins.remove(staged)
                if path not in self.state.pins:
                    self.state.pins.append(path)

            self.change(f"pin the new {name} at {path} (the old table unpinned)", publish)

    def _program_fd(self, name: str, closer: ExitStack) -> int:
        prog = next(p for p in self.build.programs if p.name == name)
        loaded = self.loaded.get(prog.object)
        if loaded is not None:
            return loaded.programs[prog.function].fd
        prog_id = self._current_program(name)
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
        prog_ids = sorted({int(a["prog_id"]) for a in self.state.attachments + self.state.links})

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

    def attachments(self) -> None:
        present = attach.devices()
        targets = desired_targets(self.build, present)
        seen: set[str] = set()
        with ExitStack() as closer:
            for (dev, hook), prog_name in sorted(targets.items()):
                ifindex = present[dev]
                if hook != "xdp" and dev not in seen:
                    seen.add(dev)

                    def clsact(dev: str = dev, ifindex: int = ifindex) -> None:
                        ours = dev in self.state.clsact_created
                        self.state.clsact_created[dev] = ifindex  # intent first: no leak
                        self.save()
                        if not attach.ensure_clsact(ifindex, dev) and not ours:
                            del self.state.clsact_created[dev]  # appeared meanwhile: not ours

                    # live, not recorded: a qdisc deleted by hand (its filters went with
                    # it) or a namespace made again under the same name is repaired
                    if not _has_clsact(ifindex):
                        self.change(f"add clsact qdisc on {dev}", clsact)
                recorded = self._attachment(dev, hook)
                mode = recorded.get("xdp_mode") if recorded else None
                live_id = attach.query(hook, ifindex, xdp_mode=mode)
                # After a load every target moves to the new programs; otherwise a
                # target is right when it runs the live program of this build.
                want_id = None if self.loaded else self._current_program(prog_name)
                if want_id is not None and live_id == want_id and recorded is not None:
                    continue

                def do_attach(dev: str = dev, hook: str = hook, prog_name: str = prog_name,
                              ifindex: int = ifindex) -> None:  # fmt: skip
                    fd = self._program_fd(prog_name, closer)
                    old = self._attachment(dev, hook)
                    prog_id, mode = attach.attach(
                        attach.Target(prog_name, dev, hook), ifindex, fd,
                        xdp_mode=old.get("xdp_mode") if old else None,
                    )  # fmt: skip
                    self.state.attachments = [
                        a for a in self.state.attachments if (a["device"], a["hook"]) != (dev, hook)
                    ]
                    self.state.attachments.append(
                        {"program": prog_name, "device": dev, "ifindex": ifindex, "hook": hook,
                         "prog_id": prog_id, "xdp_mode": mode}
                    )  # fmt: skip

                verb = "replace" if live_id is not None else "attach"
                self.change(f"{verb} {prog_name} on {hook} of {dev}", do_attach)
            for a in list(self.state.attachments):
                if (a["device"], a["hook"]) in targets:
                    continue

                def drop(a: dict[str, Any] = a) -> None:
                    if present.get(a["device"]) == a["ifindex"]:
                        attach.detach(a["hook"], a["ifindex"], a["device"], xdp_mode=a["xdp_mode"])
                    self.state.attachments.remove(a)

                self.change(f"detach {a['program']} from {a['hook']} of {a['device']}", drop)

    def cgroup_links(self) -> None:
        """The bpf mode's cgroup hooks: a pinned link each. A link on the wanted cgroup
        gets the new program in place (bpf_link_update, atomic) after a load; one on
        another cgroup, or of a hook the build no longer has, is detached after the new
        ones are attached."""
        wanted = desired_links(self.build, self.opts.cgroup)
        with ExitStack() as closer:
            for hook, (prog_name, cgroup) in sorted(wanted.items()):
                pin = attach.link_pin(self.opts.pin_dir(), hook)
                recorded = next((x for x in self.state.links if x["hook"] == hook), None)
                same = recorded is not None and recorded["cgroup"] == cgroup
                live_id = attach.query_cgroup(pin) if same else None
                want_id = None if self.loaded else self._current_program(prog_name)
                if want_id is not None and live_id == want_id:
                    continue

                def do_link(hook: str = hook, prog_name: str = prog_name, cgroup: str = cgroup,
                            pin: str = pin, update: bool = live_id is not None) -> None:
                    fd = self._program_fd(prog_name, closer)
                    if update:
                        prog_id = attach.update_cgroup(prog_name, hook, pin, fd)
                    else:
                        for x in [x for x in self.state.links if x["hook"] == hook]:
                            attach.detach_cgroup(hook, x["pin"])  # on another cgroup
                            self.state.links.remove(x)
                        attach.detach_cgroup(hook, pin)  # a pin a crash left unrecorded
                        # recorded before it exists: `down` finds it whatever happens next
                        self.state.links.append(
                            {"program": prog_name, "hook": hook, "cgroup": cgroup, "pin": pin,
                             "prog_id": 0}
                        )  # fmt: skip
                        self.save()
                        prog_id = attach.attach_cgroup(prog_name, hook, cgroup, fd, pin)
                    for x in self.state.links:
                        if x["hook"] == hook:
                            x["program"], x["prog_id"] = prog_name, prog_id

                verb = "replace" if live_id is not None else "attach"
                self.change(f"{verb} {prog_name} on {hook} of cgroup {cgroup}", do_link)
        for x in list(self.state.links):
            if x["hook"] in wanted:
                continue

            def drop(x: dict[str, Any] = x) -> None:
                attach.detach_cgroup(x["hook"], x["pin"])
                self.state.links.remove(x)

            self.change(f"detach {x['program']} from {x['hook']} of cgroup {x['cgroup']}", drop)

    def _attachment(self, dev: str, hook: str) -> dict[str, Any] | None:
        return next(
            (a for a in self.state.attachments if (a["device"], a["hook"]) == (dev, hook)), None
        )

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
                rec = self.state.sysctls.setdefault(name, {"previous": current, "value": value})
                rec["value"] = value
                self.save()  # the previous value is on disk before the kernel changes
                sysctl.write(name, value)

            self.change(f"sysctl {name}: {current or '(empty)'} -> {value}", write)

    # dummy device and VIPs

    def dummy(self) -> None:
        vips = self.build.frontend_addresses()
        with netlink(f"configure {DUMMY_DEVICE}"), IPRoute() as ipr:
            links = ipr.link_lookup(ifname=DUMMY_DEVICE)
            if not links:

                def create() -> None:
                    ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")
                    idx = ipr.link_lookup(ifname=DUMMY_DEVICE)[0]
                    self.state.dummy = {"name": DUMMY_DEVICE, "ifindex": idx}
                    self.save()
                    ipr.link("set", index=idx, state="up")

                self.change(f"create dummy device {DUMMY_DEVICE}", create)
                if self.dry:
                    self.report.changes += [f"add {v}/32 to {DUMMY_DEVICE}" for v in vips]
                    return
                links = ipr.link_lookup(ifname=DUMMY_DEVICE)
            elif self.state.dummy is None:
                self.report.notes.append(
                    f"{DUMMY_DEVICE} exists and was not created by bpfgen: using it"
                )
            idx = links[0]
            have = {
                str(a.get_attr("IFA_ADDRESS"))
                for a in ipr.get_addr(index=idx, family=socket.AF_INET)
                if a["prefixlen"] == 32
            }
            for vip in vips:
                if vip not in have:
                    self.change(
                        f"add {vip}/32 to {DUMMY_DEVICE}",
                        partial(ipr.addr, "add", index=idx, address=vip, prefixlen=32),
                    )
            for vip in sorted(have - set(vips)):
                self.change(
                    f"remove {vip}/32 from {DUMMY_DEVICE}",
                    partial(ipr.addr, "del", index=idx, address=vip, prefixlen=32),
                )

    # IPVS

    def ipvs_timeouts(self, sock: ipvs.Ipvs) -> None:
        want = desired_timeouts(self.build)
        have = sock.timeouts()
        if have == want:
            return

        def write() -> None:
            if self.state.ipvs_timeouts is None:
                self.state.ipvs_timeouts = {"previous": vars(have)}
            self.state.ipvs_timeouts["value"] = vars(want)
            self.save()
            sock.set_timeouts(want)

        self.change(
            f"IPVS timeouts tcp {have.tcp}/tcpfin {have.tcp_fin}/udp {have.udp} -> "
            f"{want.tcp}/{want.tcp_fin}/{want.udp}",
            write,
        )

    def ipvs_services(self, sock: ipvs.Ipvs) -> None:
        want = desired_services(self.build)
        live = sock.services()
        ours = {ipvs.ServiceKey(*k) for k in self.state.ipvs_services}
        for key, vs in sorted(want.items()):
            cur = live.get(key)
            if cur is None:

                def add(vs: ipvs.VirtualService = vs) -> None:
                    sock.add_service(vs)
                    self._own(vs.key)

                sticky = f", persistent {vs.persistence_timeout}s" if vs.persistence_timeout else ""
                self.change(f"add IPVS service {key} ({vs.scheduler}{sticky})", add)
                cur_dests: dict[tuple[str, int], ipvs.LiveDest] = {}
            else:
                if key not in ours:
                    self.report.notes.append(f"IPVS service {key} existed before: taking it over")
                    if not self.dry:
                        self._own(key)
                if (cur.scheduler, cur.persistence_timeout) != (
                    vs.scheduler,
                    vs.persistence_timeout,
                ):
                    self.change(f"change IPVS service {key}", partial(sock.set_service, vs))
                cur_dests = cur.dests
            self._dests(sock, key, vs.dests, cur_dests)
        for key in sorted(ours - set(want)):

            def remove(key: ipvs.ServiceKey = key) -> None:
                sock.del_service(key)
                self.state.ipvs_services = [
                    k for k in self.state.ipvs_services if ipvs.ServiceKey(*k) != key
                ]
                self.state.ipvs_draining = [
                    d for d in self.state.ipvs_draining if ipvs.ServiceKey(*d[:3]) != key
                ]

            self.change(f"delete IPVS service {key}", remove)

    def _own(self, key: ipvs.ServiceKey) -> None:
        entry = [key.protocol, key.address, key.port]
        if entry not in self.state.ipvs_services:
            self.state.ipvs_services.append(entry)

    def _dests(
        self,
        sock: ipvs.Ipvs,
        key: ipvs.ServiceKey,
        want: dict[tuple[str, int], int],
        have: dict[tuple[str, int], ipvs.LiveDest],
    ) -> None:
        for (addr, port), weight in sorted(want.items()):
            cur = have.get((addr, port))
            draining = [key.protocol, key.address, key.port, addr, port]
            if cur is None:
                self.change(
                    f"add real server {addr}:{port} weight {weight} to {key}",
                    partial(sock.add_dest, key, addr, port, weight),
                )
            elif cur.weight != weight or cur.fwd_method != ipvs.IP_VS_CONN_F_MASQ:

                def reweight(
                    a: str = addr,
                    p: int = port,
                    w: int = weight,
                    d: list[Any] = draining,
                    method: int = cur.fwd_method,
                ) -> None:
                    if method != ipvs.IP_VS_CONN_F_MASQ:
                        sock.del_dest(key, a, p)
                        sock.add_dest(key, a, p, w)
                    else:
                        sock.set_dest(key, a, p, w)
                    if d in self.state.ipvs_draining:
                        self.state.ipvs_draining.remove(d)

                self.change(
                    f"real server {addr}:{port} of {key}: weight {cur.weight} -> {weight}", reweight
                )
        for (addr, port), cur in sorted(have.items()):
            if (addr, port) in want:
                continue
            draining = [key.protocol, key.address, key.port, addr, port]
            if cur.active + cur.inactive > 0 and cur.weight != 0:

                def quiesce(a: str = addr, p: int = port, d: list[Any] = draining) -> None:
                    sock.set_dest(key, a, p, 0)
                    if d not in self.state.ipvs_draining:
                        self.state.ipvs_draining.append(d)

                self.change(
                    f"drain real server {addr}:{port} of {key} (weight 0, "
                    f"{cur.active} active / {cur.inactive} inactive connections)",
                    quiesce,
                )
            elif cur.active + cur.inactive == 0:

                def delete(a: str = addr, p: int = port, d: list[Any] = draining) -> None:
                    sock.del_dest(key, a, p)
                    if d in self.state.ipvs_draining:
                        self.state.ipvs_draining.remove(d)

                self.change(f"delete real server {addr}:{port} from {key}", delete)
            else:
                self.report.notes.append(
                    f"real server {addr}:{port} of {key} is draining ({cur.active} active, "
                    f"{cur.inactive} inactive): a later sync removes it"
                )

    # nftables

    def nft(self) -> None:
        text = desired_nft(self.build)
        sha = nft.digest(text)
        if self.state.nft_sha256 == sha and nft.exists():
            return

        def install() -> None:
            self.state.nft_sha256 = "installing"
            self.save()
            nft.replace(text)
            self.state.nft_sha256 = sha

        self.change(f"install nftables table {nft.FAMILY} {nft.TABLE} (notrack)", install)


def _dummy_available() -> bool:
    if os.path.isdir("/sys/module/dummy"):
        return True
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/usr/sbin:/sbin")
    if modprobe is not None:
        subprocess.run([modprobe, "-q", "dummy"], capture_output=True, check=False)
    return os.path.isdir("/sys/module/dummy")


def _frontend_id(value: bytes) -> int:
    return int.from_bytes(value[:4], sys.byteorder)  # struct bpfgen_svc_value.id, host order


def _frontend_name(key: bytes) -> str:
    """struct bpfgen_frontend_key {be32 addr, be16 port, u8 proto, u8 pad} as text."""
    proto = {6: "TCP", 17: "UDP", 1: "ICMP"}.get(key[6], str(key[6]))
    return f"{socket.inet_ntoa(key[:4])}:{int.from_bytes(key[4:6], 'big')}/{proto}"


def _is_frontend_map(name: str) -> bool:
    return "frontends" in name


def _write_order(item: tuple[str, object]) -> tuple[bool, str]:
    return (_is_frontend_map(item[0]), item[0])


def _removal_order(item: tuple[str, object, object, object]) -> tuple[bool, str]:
    return (not _is_frontend_map(item[0]), item[0])


def _runtime_config_sha(build: Build) -> str:
    rc = build.runtime_config
    return "" if rc is None else hashlib.sha256(rc[0].encode() + b":" + rc[1]).hexdigest()


def _op(op: str, fn: Callable[[], object]) -> None:
    with operation(op):
        fn()


def _covers(reserved: str, first: int, last: int) -> bool:
    return any(a <= first and last <= b for a, b in sysctl.parse_port_ranges(reserved))


def _has_clsact(ifindex: int) -> bool:
    with netlink("list qdiscs"), IPRoute() as ipr:
        return any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))


# --- teardown ----------------------------------------------------------------------------------


def _teardown(state: State, opts: Options, report: Report) -> list[str]:
    """Remove what `state` lists, newest kind first; returns the failures (and keeps going)."""
    failures: list[str] = []

    def step(what: str, fn: Callable[[], object]) -> None:
        fault.point(f"before {what}")
        try:
            fn()
            report.changes.append(what)
        except (RuntimeOpError, OSError) as exc:
            failures.append(f"{what}: {exc}")

    if state.ipvs_services or state.ipvs_timeouts:
        try:
            with ipvs.opened() as sock:
                for k in list(state.ipvs_services):
                    key = ipvs.ServiceKey(*k)
                    step(
                        f"delete IPVS service {key}",
                        partial(sock.del_service, key),
                    )
                t = state.ipvs_timeouts
                if t is not None and "previous" in t:
                    prev = ipvs.Timeouts(**t["previous"])
                    if vars(sock.timeouts()) == t.get("value"):
                        step(
                            f"restore IPVS timeouts {prev.tcp}/{prev.tcp_fin}/{prev.udp}",
                            lambda: sock.set_timeouts(prev),
                        )
                    else:
                        report.notes.append(
                            "IPVS timeouts were changed since bpfgen set them: left"
                        )
        except RuntimeOpError as exc:
            failures.append(f"IPVS: {exc}")
    if state.dummy is not None:
        dummy = state.dummy

        def del_dummy() -> None:
            with netlink(f"delete {dummy['name']}"), IPRoute() as ipr:
                if ipr.link_lookup(ifname=dummy["name"]) == [dummy["ifindex"]]:
                    ipr.link("del", index=dummy["ifindex"])

        step(f"delete dummy device {dummy['name']}", del_dummy)
    if state.nft_sha256 is not None:  # after IPVS: no service packet is tracked meanwhile
        step(f"delete nftables table {nft.FAMILY} {nft.TABLE}", nft.delete)
    for x in reversed(state.links):  # node processes first: they stop reaching VIPs
        step(
            f"detach {x['program']} from {x['hook']} of cgroup {x['cgroup']}",
            partial(attach.detach_cgroup, x["hook"], x["pin"]),
        )
    present = attach.devices()
    for a in reversed(state.attachments):
        if present.get(a["device"]) != a["ifindex"]:
            continue  # the device is gone (and its filters with it)
        step(
            f"detach {a['program']} from {a['hook']} of {a['device']}",
            partial(attach.detach, a["hook"], a["ifindex"], a["device"], xdp_mode=a["xdp_mode"]),
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
        if sysctl.read(name) != rec["value"]:
            report.notes.append(f"sysctl {name} was changed since bpfgen set it: left")
            continue
        step(
            f"sysctl {name}: {rec['value']} -> {rec['previous'] or '(empty)'}",
            partial(sysctl.write, name, rec["previous"]),
        )
    for path in reversed(state.pins):
        if os.path.lexists(path):
            step(f"unpin {path}", partial(_op, f"unpin {path}", partial(os.unlink, path)))
    if os.path.lexists(journal.path(state.pin_dir)):  # last: it is the record of the rest
        step("unpin the state journal", partial(journal.remove, state.pin_dir))
    for d in reversed(state.dirs_created):
        if os.path.isdir(d):
            if os.listdir(d):
                report.notes.append(f"{d} is not empty: left in place")
            else:
                step(f"remove {d}", partial(_op, f"remove {d}", partial(os.rmdir, d)))
    if state.bpffs_mounted and pins.is_bpffs(state.bpffs):
        if set(os.listdir(state.bpffs)) <= PRELOAD_ENTRIES:
            step(f"unmount bpffs at {state.bpffs}", lambda: pins.unmount(state.bpffs))
        else:
            report.notes.append(f"bpffs at {state.bpffs} holds other pins: left mounted")
    return failures


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


@dataclass
class _Record:
    """What a verb works from: the state file, else its journal copy, else nothing, plus
    what the kernel shows of bpfgen that neither lists (`_discover`)."""

    state: State | None
    source: str  # "state file" | "journal" | "none"
    problem: str | None  # why the state file was not used (None: there was none, or it was)
    found: list[str] = field(default_factory=list)  # what discovery added

    @property
    def lost(self) -> bool:
        return self.source != "state file"


def _recover(opts: Options) -> _Record:
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
    rec = _Record(state, source, problem)
    probe = state if state is not None else _new_state(opts, None)
    rec.found = _discover(probe, opts, guess_ownership=state is None)
    if state is None and rec.found:
        rec.state = probe
    return rec


def _discover(state: State, opts: Options, *, guess_ownership: bool) -> list[str]:
    """Add to `state` what is bpfgen's in the kernel and not recorded; returns what.
    `guess_ownership` (no record at all): a clsact qdisc carrying bpfgen's filter is taken
    as bpfgen's (removed by `down` only when no other filter is left on it), and the
    namespace's pin directory (with bpfgen/ above it) as created by bpfgen (removed only
    when empty). The previous values of sysctls cannot be found: without a record they
    are left as they are."""
    found: list[str] = []
    pin_dir = state.pin_dir
    if os.path.isdir(pin_dir):
        linked = {x["pin"] for x in state.links}
        for name in sorted(os.listdir(pin_dir)):
            path = os.path.join(pin_dir, name)
            if name == journal.NAME or path in state.pins or path in linked:
                continue
            if name.startswith(attach.LINK_PIN_PREFIX):
                hook = name[len(attach.LINK_PIN_PREFIX):]
                state.links.append({"program": "?", "hook": hook, "cgroup": "?", "pin": path,
                                    "prog_id": attach.query_cgroup(path) or 0})  # fmt: skip
            else:
                state.pins.append(path)
            found.append(f"pin {path}")
        if guess_ownership:
            for d in (os.path.dirname(pin_dir), pin_dir):
                if d not in state.dirs_created:
                    state.dirs_created.append(d)
    recorded = {(a["device"], a["hook"]) for a in state.attachments}
    for dev, ifindex in sorted(attach.devices().items()):
        live: list[tuple[str, int, str | None]] = []
        if _has_clsact(ifindex):
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
                {"program": info.name, "device": dev, "ifindex": ifindex, "hook": hook,
                 "prog_id": prog_id, "xdp_mode": mode}
            )  # fmt: skip
            recorded.add((dev, hook))
            found.append(f"{info.name} on {hook} of {dev}")
            if guess_ownership and hook != "xdp":
                state.clsact_created.setdefault(dev, ifindex)
    return found


def _recovery_notes(rec: _Record, opts: Options) -> list[str]:
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


def _new_state(opts: Options, build: Build | None) -> State:
    return State(
        netns=opts.netns, bpffs=opts.bpffs, pin_dir=opts.pin_dir(), ipvs_enabled=opts.ipvs,
        mode=build.mode if build is not None else "ipvs", cgroup=opts.cgroup,
    )  # fmt: skip


def up(build_dir: str | os.PathLike[str], opts: Options) -> Report:
    """Make the build live in the namespace; on an existing `up`, converge (= sync)."""
    op = f"up {build_dir} in {opts.label}"
    with locked(opts, "up"):
        build = read_build(build_dir)
        with _in_namespace(opts, op):
            rec = _recover(opts)
            state = rec.state
            if state is not None and rec.source == "none":
                state.mode = build.mode  # taken over from the kernel: no mode of its own
            opts = _effective(opts, state)
            problems = _preflight(build, opts, state, op)
            if problems:
                raise InputRefused(op, problems)
            notes = _recovery_notes(rec, opts)
            if state is not None:
                report = _Converge(build, opts, state, dry=False).run()
                report.notes[:0] = notes
                return report
            state = _new_state(opts, build)
            save_state(opts.run_dir, opts.label, state)
            try:
                report = _Converge(build, opts, state, dry=False).run()
                report.notes[:0] = notes
                return report
            except BaseException as exc:
                rollback = Report()
                failures = _teardown(state, opts, rollback)
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
            rec = _recover(opts)
            state = rec.state
            if state is None:
                why = f" ({rec.problem})" if rec.problem else ""
                raise InputRefused(
                    op, [f"bpfgen is not up in {opts.label}{why}: run `bpfgen up` first"]
                )
            if rec.source == "none":
                state.mode = build.mode
            opts = _effective(opts, state)
            problems = _preflight(build, opts, state, op)
            if problems:
                raise InputRefused(op, problems)
            report = _Converge(build, opts, state, dry=False).run()
            report.notes[:0] = _recovery_notes(rec, opts)
            return report


def down(opts: Options) -> Report:
    """Remove everything bpfgen created: what the state file (or its journal copy) lists
    and what the kernel shows of bpfgen's; a namespace where there is none: nothing to do."""
    op = f"down in {opts.label}"
    report = Report()
    with locked(opts, "down"), _in_namespace(opts, op):
        rec = _recover(opts)
        state = rec.state
        if state is None:
            if rec.problem is not None:
                remove_state(opts.run_dir, opts.label)
                report.changes.append(f"remove the damaged state file ({rec.problem})")
            else:
                report.notes.append(f"bpfgen is not up in {opts.label}: nothing to remove")
            _forget(opts)
            return report
        report.notes += _recovery_notes(rec, opts)
        failures = _teardown(state, opts, report)
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
        rec = _recover(opts)
        state = rec.state
        record = {"record": rec.source, "record_notes": _recovery_notes(rec, opts)}
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
            ifindex = present.get(a["device"])
            live_id = (
                attach.query(a["hook"], a["ifindex"], xdp_mode=a["xdp_mode"])
                if ifindex == a["ifindex"] else None
            )  # fmt: skip
            progs.append(_attached(a, a["device"], live_id))
        for x in state.links:
            progs.append(_attached(x, x["cgroup"], attach.query_cgroup(x["pin"])))
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
        for path in state.pins:
            if not os.path.exists(path):
                maps.append({"name": os.path.basename(path), "pinned": False})
                continue
            with pins.PinnedMap(path) as m:
                is_array = m.info.type_name.endswith("ARRAY")
                entries = m.max_entries if is_array else m.count()
                maps.append(
                    {"name": m.name, "pinned": True, "type": m.info.type_name,
                     "entries": entries, "max_entries": m.max_entries}
                )  # fmt: skip
                if m.name == COUNTERS_MAP and build is not None:
                    names = build.manifest.get("counters") or []
                    for i, cname in enumerate(names):
                        values = m.lookup_percpu(i.to_bytes(4, "little")) or []
                        counters[str(cname)] = sum(int.from_bytes(v[:8], "little") for v in values)
        out["maps"] = maps
        out["counters"] = counters
        services = []
        if state.ipvs_services:
            try:
                with ipvs.opened() as sock:
                    live = sock.services()
                for k in state.ipvs_services:
                    key = ipvs.ServiceKey(*k)
                    s = live.get(key)
                    services.append(
                        {"service": str(key), "present": s is not None,
                         "scheduler": s.scheduler if s else None,
                         "persistence_timeout": s.persistence_timeout if s else None,
                         "real_servers": [
                             {"address": f"{a}:{p}", "weight": d.weight, "active": d.active,
                              "inactive": d.inactive}
                             for (a, p), d in sorted(s.dests.items())
                         ] if s else []}
                    )  # fmt: skip
            except RuntimeOpError as exc:
                out["ipvs_problem"] = str(exc)
        out["ipvs_services"] = services
        out["nft_table"] = nft.exists() if state.mode == "ipvs" else None  # bpf mode: none
        if build is not None:
            dry_opts = Options(opts.netns, state.bpffs, opts.run_dir, state.ipvs_enabled,
                               cgroup=state.cgroup)
            dry_state = State.from_json(state.to_json())
            try:
                diff = _Converge(build, dry_opts, dry_state, dry=True).run()
                out["differences"] = diff.changes
            except RuntimeOpError as exc:
                out["differences"] = [f"cannot compare: {exc}"]
            out["in_sync"] = not out["differences"]
        else:
            out["in_sync"] = False
        return out


def _attached(rec: dict[str, Any], where: str, live_id: int | None) -> dict[str, Any]:
    """status: one recorded attachment (a device's hook, or a cgroup's link) as it is live."""
    info = pins.program_by_id(live_id) if live_id else None
    return {
        "program": rec["program"], "device": where, "hook": rec["hook"],
        "xdp_mode": rec.get("xdp_mode"), "prog_id": live_id,
        "tag": info.tag if info else None, "as_recorded": live_id == rec["prog_id"],
    }  # fmt: skip


def which_tools() -> dict[str, str | None]:
    """Where the external tools the runtime may call are (for diagnostics)."""
    return {t: shutil.which(t) for t in ("nft", "modprobe")}

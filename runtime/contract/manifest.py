"""manifest.json's model: the one definition the compiler writes and the node reads.

Every field of the file is a field of a frozen dataclass here, typed with the
contract's enums. `bpfgen compile` builds a `Manifest` and writes `to_json(m)`; the
runtime reads the file with `decode_manifest`, which rebuilds the same objects and
names every problem by its path in the file (`programs[2].attach[0].hook: 'tc' is
not one of ...`). A field added on one side is therefore on the other, and mypy holds
both to it.

The decoder checks shapes and closed sets (types, enums, required and unknown
fields). What a value means on a node (an address, a pin path, a build kind's config
section, an object that exists) is the reader's to check: runtime/builddir.py.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import dataclass
from typing import Any

from . import BuildKind, Hook, Mode, Scheduler

#: Bumped when a field changes meaning or goes away; a runtime reads only its own.
SCHEMA = 1
PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}


@dataclass(frozen=True)
class Attach:
    """programs[].attach[]: one attach point of a program."""

    role: str  # the interface role (uplink, pods) or "node" (a cgroup)
    interface: str  # a device name or glob; a cgroup v2 path for the cgroup hooks
    hook: Hook

    @property
    def is_cgroup(self) -> bool:
        return self.hook.is_cgroup

    @property
    def is_glob(self) -> bool:
        return not self.is_cgroup and any(c in self.interface for c in "*?[")


@dataclass(frozen=True)
class VerifierCounts:
    processed_insns: int  # what the verifier walked
    xlated_insns: int  # the program after the verifier's rewrites


@dataclass(frozen=True)
class ProgramEntry:
    name: str
    object: str  # a file name in the build directory
    source: str
    function: str
    section: str
    purpose: str
    attach: tuple[Attach, ...]
    insns: int  # in the object, subprograms included
    verifier: VerifierCounts | None  # None: built with --no-verify


@dataclass(frozen=True)
class MapEntry:
    name: str
    type: str  # libbpf's name of the map type, e.g. LRU_HASH
    key_size: int
    value_size: int
    max_entries: int
    pin_path: str | None  # "/sys/fs/bpf/bpfgen/{netns}/<name>"; None: not pinned
    purpose: str


@dataclass(frozen=True)
class ToolchainEntry:
    clang: str
    flags: tuple[str, ...]


@dataclass(frozen=True)
class KernelEntry:
    release: str  # uname -r of the kernel that verified (or would have verified) the build
    verified: bool


@dataclass(frozen=True)
class RuntimeConfig:
    """The generic and frozen builds' bpfgen_cfg image, set before load."""

    map: str  # the internal map's section: .bss or .rodata
    hex: str


@dataclass(frozen=True)
class Timeouts:
    tcp_established: int
    tcp_transitory: int
    tcp_time_wait: int
    tcp_close: int
    udp: int
    icmp: int


@dataclass(frozen=True)
class InterfaceEntry:
    name: str
    role: str
    hook: str  # tc or xdp: where the role's ingress program runs


@dataclass(frozen=True)
class NodeEntry:
    """The node facts the runtime acts on (IPVS, sysctls, reserved ports, notrack)."""

    name: str
    addresses: tuple[str, ...]
    pod_cidr: str
    cluster_pod_cidr: str
    service_cidr: str
    masquerade_all: bool
    node_port_range: tuple[int, int]  # [first, last]
    interfaces: tuple[InterfaceEntry, ...]
    scheduler: Scheduler
    mode: Mode
    maglev_table_size: int
    selection_seed: int
    snat_port_range: tuple[int, int]  # [first, last]
    max_sessions: int
    masquerade_mark: int
    timeouts: Timeouts


@dataclass(frozen=True)
class DecisionEntry:
    """One value the C sees as the macro `name` (bpfgen plan prints them)."""

    name: str
    value: str
    source: str
    reason: str
    runtime: bool
    stage: str = ""  # image, boot or run (bpfgen.plan.ir.Stage); "" in older manifests


@dataclass(frozen=True)
class BackendEntry:
    address: str
    port: int
    weight: int


@dataclass(frozen=True)
class FrontendEntry:
    index: int
    kind: str  # ClusterIP, NodePort, ExternalIP, LoadBalancer, PodShortcut (bpf mode)
    service: str  # namespace/name
    port_name: str
    address: str | None  # None: a NodePort, on every node address
    port: int
    protocol: str
    masquerade: str
    masquerade_reason: str
    scheduler: Scheduler
    persistence_timeout: int | None  # ClientIP affinity, seconds
    backends: tuple[BackendEntry, ...]

    @property
    def proto_number(self) -> int:
        return PROTOCOL_NUMBERS[self.protocol]


@dataclass(frozen=True)
class SvcEntry:
    """bpf mode: where the selection tables live, and why."""

    scheduler: Scheduler
    maglev_table_size: int
    maglev_tables: str | None  # rodata, map, or None without Maglev
    maglev_reason: str
    backends: str  # rodata or map
    no_backend: str


@dataclass(frozen=True)
class Specialization:
    """The plan's tables: what was specialized, from which input, and why."""

    build: BuildKind
    mode: Mode
    node: str
    decisions: tuple[DecisionEntry, ...]
    frontends_in_map: bool
    frontends: tuple[FrontendEntry, ...]
    svc: SvcEntry | None = None  # bpf mode only


@dataclass(frozen=True)
class Manifest:
    schema: int
    bpfgen_version: str
    config_sha256: str
    inputs: dict[str, Any]  # the compile's input files, as recorded (paths, sha256, copies)
    mode: Mode
    build: BuildKind
    node: NodeEntry
    toolchain: ToolchainEntry
    kernel: KernelEntry
    programs: tuple[ProgramEntry, ...]
    maps: tuple[MapEntry, ...]
    counters: tuple[str, ...]  # the counters map's slots, in index order
    runtime_config: RuntimeConfig | None  # None: a specialized build
    map_init: str | None  # a file name in the build directory; None: no initial entries
    sources: tuple[str, ...]
    specialization: Specialization

    def program(self, function: str) -> ProgramEntry:
        """The program whose C function is `function` (KeyError: none)."""
        for p in self.programs:
            if p.function == function:
                return p
        raise KeyError(function)


def to_json(value: Any) -> Any:
    """A model object as the JSON value the file holds (field order kept)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


class Problems(list[str]):
    """Problems found while decoding, each "path: what"."""

    def add(self, path: str, message: str) -> None:
        self.append(f"{path or '(top)'}: {message}")


def decode_manifest(data: Any, problems: Problems) -> Manifest | None:
    """`data` (parsed JSON) as a Manifest; None, with `problems` filled, when it is not one.

    The schema is checked first: another schema's fields are not this one's to judge.
    """
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, int) and not isinstance(schema, bool) and schema != SCHEMA:
        problems.add("schema", f"{schema} is not supported (this runtime reads schema {SCHEMA})")
        return None
    before = len(problems)
    result = decode(Manifest, data, "", problems)
    return result if len(problems) == before else None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _kind(tp: Any) -> str:
    """A JSON type's name in a problem."""
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def decode(tp: Any, value: Any, path: str, problems: Problems) -> Any:
    """`value` as type `tp` (a model dataclass, enum, tuple[X, ...], dict, X | None or a
    JSON scalar); on a mismatch, a problem at `path` and None."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return decode(inner, value, path, problems)
    if origin is tuple:
        if not isinstance(value, list):
            problems.add(path, f"{value!r} is not a list")
            return None
        args = typing.get_args(tp)
        if Ellipsis in args:  # tuple[X, ...]: a list of any length
            items = [args[0]] * len(value)
        elif len(value) == len(args):  # tuple[X, Y]: exactly that many
            items = list(args)
        else:
            problems.add(path, f"{value!r} is not a list of {len(args)}")
            return None
        pairs = enumerate(zip(items, value, strict=True))
        return tuple(decode(t, v, f"{path}[{i}]", problems) for i, (t, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            problems.add(path, f"{value!r} is not an object")
            return None
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = [m.value for m in tp]
        if value not in members:
            problems.add(path, f"{value!r} is not one of {', '.join(map(str, members))}")
            return None
        return tp(value)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_fields(tp, value, path, problems)
    ok = isinstance(value, tp) and (tp is bool or not isinstance(value, bool))
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        problems.add(path, f"{value!r} is not {_kind(tp)}")
        return None
    return value


def _decode_fields(cls: type, value: Any, path: str, problems: Problems) -> Any:
    if not isinstance(value, dict):
        problems.add(path, f"{value!r} is not an object")
        return None
    before = len(problems)
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        where = f"{path}.{f.name}" if path else f.name
        if f.name not in value:
            if f.default is dataclasses.MISSING:
                problems.add(where, "missing")
            continue
        kwargs[f.name] = decode(hints[f.name], value[f.name], where, problems)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            problems.add(f"{path}.{key}" if path else str(key),
                         f"unknown field (manifest schema {SCHEMA})")  # fmt: skip
    if len(problems) != before:
        return None
    return cls(**kwargs)

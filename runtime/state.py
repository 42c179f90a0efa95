"""What `up` created in a namespace, recorded so that `down` removes exactly that.

/run/bpfgen/<netns or "root">/state.json, rewritten after every step of up and
sync (a temporary file, fsync, rename, fsync of the directory), so a crash or a
power cut half-way still leaves a whole record `down` can use. A step records its
intent before it acts where the kernel could not tell afterwards (a clsact qdisc, a
directory, the bpffs mount, a sysctl's previous value). Every write is also kept
in the journal map on the bpffs (journal.py), so a state file deleted or damaged
by hand is recovered from there; what both miss, the runtime finds in the kernel
(recovery.py, `discover`).

Each kind of record is a typed value here (`Attachment`, `CgroupLink`, ...): a
dataclass is a JSON object, a NamedTuple a JSON list, so the file is what it was when
the records were plain dicts and lists. Reading one checks every key it needs and
each value's type (ValueError: which field, which entry, what is wrong); keys it does
not know (another version's) are left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from . import fault, journal
from .errors import RuntimeOpError, operation

RUN_DIR = "/run/bpfgen"
VERSION = 1

_T = TypeVar("_T")


@dataclass(frozen=True)
class Attachment:
    """A program on a device's tc or XDP hook."""

    program: str
    device: str
    ifindex: int
    hook: str  # "ingress" | "egress" | "xdp"
    prog_id: int
    xdp_mode: str | None  # xdp: "drv" | "skb"; tc: None


@dataclass(frozen=True)
class CgroupLink:
    """bpf mode: a program on a cgroup hook, through the link pinned at `pin`."""

    program: str  # "?" when found in the kernel without a record
    hook: str
    cgroup: str  # "?" likewise
    pin: str
    prog_id: int  # 0 until the link exists


@dataclass(frozen=True)
class DummyRecord:
    """ipvs mode: the VIPs' device, when bpfgen created it."""

    name: str
    ifindex: int


class IpvsServiceRecord(NamedTuple):
    """An IPVS virtual service bpfgen added or took over (JSON: [protocol, address, port])."""

    protocol: int
    address: str
    port: int


class IpvsDrainingRecord(NamedTuple):
    """A real server set to weight 0 until its connections end (JSON: a list of five)."""

    protocol: int
    address: str
    port: int
    real_address: str
    real_port: int


@dataclass(frozen=True)
class IpvsTimeoutValues:
    tcp: int
    tcp_fin: int
    udp: int


@dataclass(frozen=True)
class IpvsTimeoutsRecord:
    """The IPVS timeouts before bpfgen first set them, and what it set."""

    previous: IpvsTimeoutValues
    value: IpvsTimeoutValues


@dataclass(frozen=True)
class SysctlRecord:
    """A sysctl's value before bpfgen first set it, and what it set."""

    previous: str
    value: str


@dataclass
class State:
    netns: str | None
    bpffs: str  # the bpffs mount point the pins are under
    pin_dir: str
    build_dir: str = ""
    config_sha256: str = ""
    mode: str = "ipvs"  # datapath mode of the build that is up (state files before bpf: ipvs)
    object_sha256: dict[str, str] = field(default_factory=dict)
    runtime_config_sha256: str = ""  # generic builds: the .bss image the programs run with
    ipvs_enabled: bool = True
    bpffs_mounted: bool = False  # bpfgen mounted the bpffs
    dirs_created: list[str] = field(default_factory=list)  # on the bpffs, outermost first
    pins: list[str] = field(default_factory=list)
    clsact_created: dict[str, int] = field(default_factory=dict)  # device -> ifindex
    attachments: list[Attachment] = field(default_factory=list)
    links: list[CgroupLink] = field(default_factory=list)  # bpf mode: one pinned link a hook
    cgroup: str | None = None  # the cgroup `up` was given (Options.cgroup), kept by sync
    dummy: DummyRecord | None = None
    ipvs_services: list[IpvsServiceRecord] = field(default_factory=list)
    ipvs_draining: list[IpvsDrainingRecord] = field(default_factory=list)
    ipvs_timeouts: IpvsTimeoutsRecord | None = None
    sysctls: dict[str, SysctlRecord] = field(default_factory=dict)  # by name
    nft_sha256: str | None = None
    version: int = VERSION

    def hooked(self) -> list[Attachment | CgroupLink]:
        """Every recorded program on a hook: the attachments, then the cgroup links."""
        return [*self.attachments, *self.links]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        """A State from JSON; ValueError when a record is not one (see `_typed`)."""
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in raw.items() if k in known}
        for name in _RECORD_FIELDS:
            if name in values:
                values[name] = _typed(_STATE_TYPES[name], values[name], name)
        return cls(**values)


#: The fields of State that hold records, read by `_typed` from their annotations.
_RECORD_FIELDS = (
    "attachments", "links", "dummy", "ipvs_services", "ipvs_draining", "ipvs_timeouts",
    "sysctls",
)  # fmt: skip
_STATE_TYPES = typing.get_type_hints(State)


def _typed(want: Any, raw: object, where: str) -> Any:
    """`raw` (parsed JSON) as the type `want`: a record (a dataclass from an object, a
    NamedTuple from a list), a list or a str-keyed dict of them, `X | None`, int or str.
    ValueError naming `where` (e.g. attachments[1].prog_id) when it is not one."""
    origin, args = typing.get_origin(want), typing.get_args(want)
    if origin in (types.UnionType, typing.Union):
        if raw is None and type(None) in args:
            return None
        (want,) = [a for a in args if a is not type(None)]
        return _typed(want, raw, where)
    if origin is list:
        return [_typed(args[0], v, f"{where}[{i}]") for i, v in enumerate(_as(raw, list, where))]
    if origin is dict:
        return {k: _typed(args[1], v, f"{where}[{k!r}]") for k, v in _as(raw, dict, where).items()}
    if is_dataclass(want):
        obj = _as(raw, dict, where)
        hints = typing.get_type_hints(want)
        missing = [f.name for f in fields(want) if f.name not in obj]
        if missing:
            raise ValueError(f"{where} has no {', '.join(missing)}")
        record: Any = want
        return record(**{f.name: _typed(hints[f.name], obj[f.name], f"{where}.{f.name}")
                         for f in fields(want)})  # fmt: skip
    if isinstance(want, type) and issubclass(want, tuple):  # a NamedTuple: a JSON list
        items = _as(raw, list, where)
        names: tuple[str, ...] = want._fields  # type: ignore[attr-defined]
        if len(items) != len(names):
            raise ValueError(
                f"{where} is a list of {len(items)}, not of {len(names)} ({', '.join(names)})"
            )
        hints = typing.get_type_hints(want)
        return want(*[_typed(hints[n], v, f"{where}[{i}] ({n})")
                      for i, (n, v) in enumerate(zip(names, items, strict=True))])  # fmt: skip
    if want in (int, str):
        return _as(raw, want, where)
    raise TypeError(f"{where}: no reader for {want!r}")  # a new record field's type


def _as(raw: object, want: type[_T], where: str) -> _T:
    """`raw` when it is a `want` (a JSON true/false is not an integer), else ValueError."""
    if not isinstance(raw, want) or (isinstance(raw, bool) and want is not bool):
        raise ValueError(f"{where} is {_json_kind(raw)}, not {_JSON_KINDS[want]}")
    return raw


_JSON_KINDS: dict[type, str] = {
    type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
    str: "a string", list: "a list", dict: "an object",
}  # fmt: skip


def _json_kind(raw: object) -> str:
    return _JSON_KINDS.get(type(raw), type(raw).__name__)


def state_dir(run_dir: str, label: str) -> Path:
    return Path(run_dir) / label


def state_path(run_dir: str, label: str) -> Path:
    return state_dir(run_dir, label) / "state.json"


def from_json_checked(text: str) -> State:
    """A State from JSON, or ValueError saying why it is not one (a list, a field of the
    wrong type, a required field missing, a record without a key it needs or with a value
    of the wrong type: which field, which entry, what is wrong)."""
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError(f"a JSON {type(raw).__name__}, not an object")
    for f in fields(State):
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"no {f.name}")
            continue
        want = _SHAPES.get(f.name)
        if want is not None and not isinstance(raw[f.name], want):
            raise ValueError(f"{f.name} is a {type(raw[f.name]).__name__}")
    return State.from_json(text)


# The record fields (_RECORD_FIELDS) are checked, entry by entry, by State.from_json.
_SHAPES: dict[str, type | tuple[type, ...]] = {
    "netns": (str, type(None)), "bpffs": str, "pin_dir": str, "build_dir": str,
    "object_sha256": dict, "dirs_created": list, "pins": list, "clsact_created": dict,
    "bpffs_mounted": bool, "ipvs_enabled": bool,
}  # fmt: skip


def load(run_dir: str, label: str) -> State | None:
    """The state file's record; None when there is none; RuntimeOpError when it is not a
    state file (see load_checked)."""
    state, problem = load_checked(run_dir, label)
    if problem is not None:
        path = state_path(run_dir, label)
        raise RuntimeOpError(f"read state file {path}", 22, problem)
    return state


def load_checked(run_dir: str, label: str) -> tuple[State | None, str | None]:
    """(state, None), (None, None) when there is no state file, or (None, why) when the
    file is not a state file: garbage, truncated, a JSON list, a directory, unreadable."""
    path = state_path(run_dir, label)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"{path} cannot be read: {exc}"
    try:
        return from_json_checked(text), None
    except (ValueError, TypeError) as exc:
        return None, f"{path} is not a bpfgen state file: {exc}"


def save(run_dir: str, label: str, state: State) -> None:
    """Write the record atomically and durably, then its copy in the journal map."""
    path = state_path(run_dir, label)
    text = state.to_json()
    with operation(f"write state file {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # a damaged record (reported when it was read)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    journal.write(state.pin_dir, text)
    fault.point("state saved")


def remove(run_dir: str, label: str) -> None:
    path = state_path(run_dir, label)
    with operation(f"remove state file {path}"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        for stale in path.parent.glob(".state.*"):  # a write killed before its rename
            stale.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else is there
            path.parent.rmdir()

"""What `up` created in a namespace, recorded so that `down` removes exactly that.

/run/bpfgen/<netns or "root">/state.json, rewritten after every step of up and
sync (a temporary file, fsync, rename, fsync of the directory), so a crash or a
power cut half-way still leaves a whole record `down` can use. A step records its
intent before it acts where the kernel could not tell afterwards (a clsact qdisc, a
directory, the bpffs mount, a sysctl's previous value). Every write is also kept
in the journal map on the bpffs (journal.py), so a state file deleted or damaged
by hand is recovered from there; what both miss, the runtime finds in the kernel
(recovery.py, `discover`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from . import fault, journal
from .errors import RuntimeOpError, operation

RUN_DIR = "/run/bpfgen"
VERSION = 1


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
    # {program, object, device, ifindex, hook, prog_id, xdp_mode}
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # bpf mode's cgroup hooks: {program, hook, cgroup, pin, prog_id}, one pinned link each
    links: list[dict[str, Any]] = field(default_factory=list)
    cgroup: str | None = None  # the cgroup `up` was given (Options.cgroup), kept by sync
    dummy: dict[str, Any] | None = None  # {name, ifindex, addresses}
    ipvs_services: list[list[Any]] = field(default_factory=list)  # [protocol, address, port]
    ipvs_draining: list[list[Any]] = field(
        default_factory=list
    )  # [proto, addr, port, raddr, rport]
    ipvs_timeouts: dict[str, Any] | None = None  # {previous: {...}, value: {...}}
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {previous, value}
    nft_sha256: str | None = None
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> State:
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def state_dir(run_dir: str, label: str) -> Path:
    return Path(run_dir) / label


def state_path(run_dir: str, label: str) -> Path:
    return state_dir(run_dir, label) / "state.json"


def from_json_checked(text: str) -> State:
    """A State from JSON, or ValueError saying why it is not one (a list, a field of the
    wrong type, a required field missing)."""
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


_SHAPES: dict[str, type | tuple[type, ...]] = {
    "netns": (str, type(None)), "bpffs": str, "pin_dir": str, "build_dir": str,
    "object_sha256": dict, "dirs_created": list, "pins": list, "clsact_created": dict,
    "attachments": list, "links": list, "ipvs_services": list, "ipvs_draining": list,
    "sysctls": dict, "bpffs_mounted": bool, "ipvs_enabled": bool,
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

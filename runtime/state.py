"""What `up` created in a namespace, recorded so that `down` removes exactly that.

/run/bpfgen/<netns or "root">/state.json, rewritten (atomically) after every step
of up and sync, so that a crash half-way still leaves a record `down` can use.
Every sysctl keeps the value it had before bpfgen first set it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import operation

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


def load(run_dir: str, label: str) -> State | None:
    path = state_path(run_dir, label)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    with operation(f"read state file {path}"):
        try:
            return State.from_json(text)
        except (ValueError, TypeError) as exc:
            raise OSError(22, f"{path} is not a bpfgen state file: {exc}") from exc


def save(run_dir: str, label: str, state: State) -> None:
    path = state_path(run_dir, label)
    with operation(f"write state file {path}"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state.", dir=path.parent)
        with os.fdopen(fd, "w") as out:
            out.write(state.to_json())
        os.replace(tmp, path)


def remove(run_dir: str, label: str) -> None:
    path = state_path(run_dir, label)
    with operation(f"remove state file {path}"):
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: something else is there
            path.parent.rmdir()

"""What a runtime verb is asked to do (Options) and what it did (Report)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import netns
from .state import RUN_DIR

BPFFS = "/sys/fs/bpf"


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

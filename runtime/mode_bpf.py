"""The bpf mode's part of the runtime: its service tables, replaced with the programs.

The bpf mode's programs read the Services from maps (`bpfgen_svc_*`, by frontend
id). A sync rewrites them in place while every frontend id keeps meaning the same
frontend; when ids move, the programs are loaded with fresh tables, pinned as
`<name>__next` until the new programs are attached (`Converge.programs`), then
published in place of the old ones (`BpfMode.publish_tables`).
"""

from __future__ import annotations

import os
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING

from . import pins
from .builddir import Build
from .contract.layouts import IP_PROTOCOLS
from .errors import in_operation
from .options import Options
from .state import State

if TYPE_CHECKING:
    from .converge import Converge

# bpf mode's service tables (templates/include/bpfgen_maps.h): what a build says about its
# frontends, by frontend id. Everything else pinned is session state and is never replaced.
SERVICE_TABLE_PREFIX = "bpfgen_svc_"
FRONTEND_TABLE = "bpfgen_svc_frontends"  # value: struct bpfgen_svc_value, first field __u32 id
NOT_A_FRONTEND = 0xFFFFFFFF  # the id of a VIP's (VIP, 0, ICMP) entry: no frontend
# A fresh service table's pin until its programs are attached (bpffs refuses dots in names).
STAGED_SUFFIX = "__next"


class BpfMode:
    """Converge steps of the bpf mode, run by a `Converge` pass (converge.MODES)."""

    def __init__(self, c: Converge) -> None:
        self.c = c

    @staticmethod
    def preflight(build: Build, opts: Options) -> list[str]:
        """Nothing beyond the build's own checks (devices, cgroups, maps: preflight.py)."""
        del build, opts
        return []

    def converge(self) -> None:
        self.publish_tables()

    def publish_tables(self) -> None:
        """After every hook runs the new programs: pin their fresh service tables in place
        of the old ones (rename(2) on the bpffs replaces the old pin atomically). The old
        tables go away with the last old program; the live programs hold their maps by
        reference, the pins are the runtime's bookkeeping only."""
        for name, staged in sorted(self.c.staged.items()):
            spec = next(s for s in self.c.build.maps if s.name == name)
            path = spec.pin_path(self.c.opts.bpffs, self.c.opts.label)

            def publish(staged: str = staged, path: str = path) -> None:
                in_operation(f"pin {staged} as {path}", partial(os.rename, staged, path))
                if staged in self.c.state.pins:
                    self.c.state.pins.remove(staged)
                if path not in self.c.state.pins:
                    self.c.state.pins.append(path)

            self.c.change(f"pin the new {name} at {path} (the old table unpinned)", publish)


def frontend_ids_moved(build: Build, opts: Options) -> list[str]:
    """Frontends whose id differs between the pinned bpfgen_svc_frontends and the build's
    map_init, and new frontends taking the id of a removed one (as "addr:port/proto
    id a -> b"). Empty: every id means the same frontend in both (a pure addition or
    removal), so the tables can be rewritten in place under live traffic."""
    path = os.path.join(opts.pin_dir(), FRONTEND_TABLE)
    entries = build.map_init.get(FRONTEND_TABLE)
    if entries is None or not os.path.exists(path):
        return []
    with pins.PinnedMap(path) as live:
        have = {k: frontend_id(v) for k, v in live.items()}
    want = {k: frontend_id(v) for k, v in entries}
    have = {k: i for k, i in have.items() if i != NOT_A_FRONTEND}
    want = {k: i for k, i in want.items() if i != NOT_A_FRONTEND}
    in_use = set(have.values())
    return [
        f"{frontend_name(k)} id {have.get(k, '-')} -> {i}"
        for k, i in sorted(want.items())
        if (k in have and have[k] != i) or (k not in have and i in in_use)
    ]


def interrupted_replacement(state: State) -> list[str]:
    """Staged service-table pins a replacement left (it stopped before publishing)."""
    return [p for p in state.pins if p.endswith(STAGED_SUFFIX)]


def frontend_id(value: bytes) -> int:
    return int.from_bytes(value[:4], sys.byteorder)  # struct bpfgen_svc_value.id, host order


def frontend_name(key: bytes) -> str:
    """struct bpfgen_frontend_key {be32 addr, be16 port, u8 proto, u8 pad} as text."""
    proto = IP_PROTOCOLS.get(key[6], str(key[6]))
    return f"{socket.inet_ntoa(key[:4])}:{int.from_bytes(key[4:6], 'big')}/{proto}"

"""The state file's copy on the bpffs: a pinned one-entry array map, `bpfgen_state`.

/run/bpfgen/<label>/state.json is the record `down` works from; this map, pinned in
the namespace's pin directory next to the maps it describes, holds the same JSON
(zlib-compressed, length-prefixed) and is rewritten with it. When the state file is
deleted, truncated or garbage, the copy still says what bpfgen created that the
kernel cannot tell (the sysctls' previous values, which clsact qdiscs and directories
it added, whether it mounted the bpffs), and it lives and dies with the pins: a
reboot or a remounted bpffs loses both, and then there is nothing left to undo.
"""

from __future__ import annotations

import os
import zlib

from . import libbpf
from .errors import RuntimeOpError, operation
from .pins import PinnedMap

NAME = "bpfgen_state"
BPF_MAP_TYPE_ARRAY = 2
VALUE_SIZE = 1 << 16  # 4-byte length + zlib data; a state that does not fit: length 0
_KEY = bytes(4)


def path(pin_dir: str) -> str:
    return os.path.join(pin_dir, NAME)


def create(pin_dir: str) -> None:
    """Create and pin the journal (nothing when it is there)."""
    where = path(pin_dir)
    if os.path.lexists(where):
        return
    with operation(f"create the state journal {where}"):
        fd = libbpf.bpf_map_create(BPF_MAP_TYPE_ARRAY, NAME, 4, VALUE_SIZE, 1)
        try:
            libbpf.bpf_obj_pin(fd, where)
        finally:
            os.close(fd)


def write(pin_dir: str, text: str) -> None:
    """Store `text` when the journal exists (before the pin directory does: nothing)."""
    where = path(pin_dir)
    if not os.path.exists(where):
        return
    data = zlib.compress(text.encode(), 9)
    if len(data) + 4 > VALUE_SIZE:
        data = b""  # too large to keep a copy: the state file alone
    value = len(data).to_bytes(4, "little") + data
    with PinnedMap(where) as m:
        m.update(_KEY, value + bytes(VALUE_SIZE - len(value)))


def read(pin_dir: str) -> str | None:
    """The JSON last stored, or None (no journal, empty, unreadable)."""
    where = path(pin_dir)
    if not os.path.exists(where):
        return None
    try:
        with PinnedMap(where) as m:
            value = m.lookup(_KEY) if m.value_size == VALUE_SIZE else None
    except RuntimeOpError:
        return None
    if value is None:
        return None
    n = int.from_bytes(value[:4], "little")
    if not 0 < n <= len(value) - 4:
        return None
    try:
        return zlib.decompress(value[4 : 4 + n]).decode()
    except (zlib.error, UnicodeDecodeError):
        return None


def remove(pin_dir: str) -> None:
    where = path(pin_dir)
    if os.path.lexists(where):
        with operation(f"unpin the state journal {where}"):
            os.unlink(where)

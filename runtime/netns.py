"""Enter a named network namespace (`ip netns` convention: /run/netns/NAME) with setns(2).

    with entered("node1"):
        ...   # netlink sockets, /proc/sys/net, subprocesses: all in node1

Only the network namespace changes: the mount namespace stays, so /sys/fs/bpf is
the root bpffs (unlike `ip netns exec`, which remounts /sys in a new mount
namespace, so pins made there are not where the root namespace looks).
setns changes the calling thread only; the runtime is single-threaded and opens
every socket inside the block. On leaving, the thread goes back to where it was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import RuntimeOpError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
ROOT_LABEL = "root"  # the pin and state directory name when no namespace is named
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and name not in (".", "..", ROOT_LABEL)


def label(netns: str | None) -> str:
    """The directory name for a namespace in pin and state paths."""
    return netns if netns is not None else ROOT_LABEL


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def _setns(fd: int, op: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise RuntimeOpError(op, code)


@contextmanager
def entered(name: str | None) -> Iterator[None]:
    """Run the block in network namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    op = f"enter network namespace {name}"
    try:
        target = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise RuntimeOpError(op, exc.errno or errno.ENOENT, f"{NETNS_DIR}/{name}") from exc
    try:
        original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        os.close(target)
        raise
    try:
        _setns(target, op)
        try:
            yield
        finally:
            _setns(original, f"return from network namespace {name}")
    finally:
        os.close(target)
        os.close(original)

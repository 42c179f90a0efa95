"""One runtime verb at a time per namespace: flock(2) on `<run dir>/<label>.lock`.

    with held("/run/bpfgen", "node1", "up"):          # exclusive: up, sync, down
        ...
    with held("/run/bpfgen", "node1", "status", shared=True):   # statuses run together
        ...

A second `up` (or sync, down) for the same namespace while one runs gets `Locked`
(exit 75, EX_TEMPFAIL: try again) at once, or after `wait` seconds of retrying. The
lock file holds the pid and verb of its last exclusive holder, for the message; it
is removed by a `down` that removed everything (`discard`), so nothing of bpfgen is
left; a waiter that then gets the lock of the unlinked file sees that the path no
longer names it and takes the lock again on the path's file. The kernel drops the
lock when its holder exits, killed or not, so a crashed `up` leaves no stale lock.
Within one process the lock is reentrant (`bpfgen sync` holds it across its
recompile and the runtime's sync).
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from .errors import RuntimeOpError, operation

EXIT_LOCKED = 75  # sysexits EX_TEMPFAIL
POLL_SECONDS = 0.05
_held: dict[str, int] = {}  # lock path -> depth, in this process


class Locked(RuntimeOpError):
    """Another bpfgen command holds the namespace's lock."""

    exit_code = EXIT_LOCKED


def lock_path(run_dir: str, label: str) -> str:
    return os.path.join(run_dir, f"{label}.lock")


@contextmanager
def held(
    run_dir: str, label: str, verb: str, *, shared: bool = False, wait: float = 0.0
) -> Iterator[None]:
    path = lock_path(run_dir, label)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    deadline = time.monotonic() + max(wait, 0.0)
    while True:
        with operation(f"open the lock file {path}"):
            os.makedirs(run_dir, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _acquire(fd, path, label, verb, shared, deadline)
        except BaseException:
            os.close(fd)
            raise
        if _names(path, fd):
            break
        os.close(fd)  # a `down` removed the file while we waited: lock the path's file
    if not shared:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {verb}\n".encode(), 0)
    try:
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)  # releases the lock


def _names(path: str, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def discard(run_dir: str, label: str) -> None:
    """Remove the lock file this process holds (down, when nothing of bpfgen is left)."""
    path = lock_path(run_dir, label)
    if path in _held:
        with suppress(FileNotFoundError):
            os.unlink(path)


def _acquire(fd: int, path: str, label: str, verb: str, shared: bool, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise Locked(
                    f"{verb} in {label}",
                    errno.EWOULDBLOCK,
                    f"another bpfgen command is running in {label} ({path} is locked"
                    f"{_holder(fd)}); try again when it has finished, or give --wait SECONDS",
                ) from None
            time.sleep(POLL_SECONDS)


def _holder(fd: int) -> str:
    """ ", last taken by pid N (verb)" when the recorded holder still runs."""
    try:
        pid, verb = os.pread(fd, 256, 0).decode().split()[:2]
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return ""
    return f", last taken by pid {pid} ({verb})"

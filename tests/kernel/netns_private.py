"""A network namespace of the calling thread's own, for the bpf mode's kernel tests."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000


@contextmanager
def private_netns() -> Iterator[None]:
    """This thread in a network namespace of its own (no routes, lo down), then back.

    BPF_PROG_TEST_RUN runs a tc program in the caller's network namespace: there,
    bpf_fib_lookup finds no route whatever the host's routes are, so a translated
    packet goes to the stack (fib_fallback), on every machine alike.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"unshare(CLONE_NEWNET): {os.strerror(errno)}")
        try:
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns back to the original: {os.strerror(errno)}")
    finally:
        os.close(original)

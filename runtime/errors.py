"""Every error the runtime raises, in one tree.

    RuntimeOpError                an operation on the node failed; the message is
     |                            `<operation>: <errno text>[: detail]`, e.g.
     |                            `load object build/x/egress.bpf.o: Permission denied`
     +-- VerifierRejected         the kernel verifier refused a program; carries the
                                  program, the tail of the verifier log and the path
                                  where the whole log was saved

`operation(op)` is the one place where low-level failures become these errors:
the libbpf binding reports a negative return (or NULL + errno) as `OSError`, and
`with operation("update map x"):` turns it into `RuntimeOpError("update map x",
errno)`. Caller mistakes the kernel would also refuse (a key of the wrong size,
an initial value for a map the object does not have) are `RuntimeOpError` with
EINVAL and a detail saying what was expected, so the CLI needs one `except`.
"""

from __future__ import annotations

import errno as errno_codes
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

# libbpf's own error codes (enum libbpf_errno in <bpf/libbpf.h>); os.strerror
# knows them only as "Unknown error 4007".
_LIBBPF_ERRNO_TEXT = {
    4000: "something wrong in libelf",
    4001: "BPF object format invalid",
    4002: "incorrect or no 'version' section",
    4003: "endian mismatch",
    4004: "internal error in libbpf",
    4005: "relocation failed",
    4006: "load program failure for unknown reason",
    4007: "kernel verifier blocks program loading",
    4008: "program too big",
    4009: "incorrect kernel version",
    4010: "kernel doesn't support this program type",
    4011: "wrong pid in netlink message",
    4012: "invalid netlink sequence",
    4013: "netlink parsing error",
}


def strerror(code: int) -> str:
    """errno text, including libbpf's private codes (4000 and up)."""
    return _LIBBPF_ERRNO_TEXT.get(code) or os.strerror(code)


class RuntimeOpError(Exception):
    """An operation on the node failed: what was attempted, and the errno."""

    exit_code = 1

    def __init__(self, op: str, errno: int, detail: str = "") -> None:
        self.op = op
        self.errno = errno
        self.detail = detail
        message = f"{op}: {strerror(errno)}"
        super().__init__(f"{message}: {detail}" if detail else message)


class VerifierRejected(RuntimeOpError):
    """The kernel verifier refused `program`; the whole log is at `log_path`."""

    TAIL_LINES = 40

    def __init__(
        self,
        op: str,
        errno: int,
        *,
        obj_path: str,
        program: str,
        section: str,
        log: str,
        log_path: str,
    ) -> None:
        self.program = program
        self.section = section
        self.log_tail = "\n".join(log.rstrip("\n").splitlines()[-self.TAIL_LINES :])
        self.log_path = log_path
        super().__init__(op, errno)
        self.args = (
            f"verifier rejected program {program} (sec {section}) in {obj_path}:\n"
            f"{self.log_tail}\nfull log: {log_path}",
        )


@contextmanager
def operation(op: str, *, details: Sequence[str] = ()) -> Iterator[None]:
    """Run a block as the operation `op`: an OSError inside becomes RuntimeOpError(op, errno).

    `details` is read when the error happens, so it can be a list the block fills,
    e.g. libbpf's messages from `libbpf.capture_prints()`; they become the detail.
    """
    try:
        yield
    except OSError as exc:
        code = exc.errno if exc.errno is not None else errno_codes.EIO
        detail = "\n".join(details) or (str(exc.filename) if exc.filename else "")
        raise RuntimeOpError(op, code, detail) from exc


def in_operation(op: str, fn: Callable[[], object]) -> None:
    """Call `fn` as the operation `op` (see `operation`)."""
    with operation(op):
        fn()

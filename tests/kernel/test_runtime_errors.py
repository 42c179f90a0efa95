"""The runtime's error messages, its cpu-list parsing, what importing it pulls in, and
its dispatch on the datapath mode."""

from __future__ import annotations

import errno
import subprocess
import sys

import pytest

from bpfgen.model import Mode
from bpfgen_runtime import RuntimeOpError, VerifierRejected, operation
from bpfgen_runtime.converge import MODES
from bpfgen_runtime.loader import parse_cpu_list


def test_runtime_op_error_message() -> None:
    err = RuntimeOpError("load object build/x/egress.bpf.o", errno.EACCES)
    assert str(err) == "load object build/x/egress.bpf.o: Permission denied"
    assert (err.op, err.errno, err.detail) == ("load object build/x/egress.bpf.o", 13, "")
    err = RuntimeOpError("update map m", errno.E2BIG, "map full")
    assert str(err) == "update map m: Argument list too long: map full"


def test_libbpf_error_codes_have_text() -> None:
    assert str(RuntimeOpError("open object x.o", 4001)) == (
        "open object x.o: BPF object format invalid"
    )


def test_verifier_rejected_message_keeps_the_last_40_lines() -> None:
    log = "".join(f"line {i}\n" for i in range(100))
    err = VerifierRejected(
        "load object build/x/egress.bpf.o",
        errno.EACCES,
        obj_path="build/x/egress.bpf.o",
        program="egress",
        section="tc",
        log=log,
        log_path="/tmp/egress.verifier.log",
    )
    tail = "\n".join(f"line {i}" for i in range(60, 100))
    assert err.log_tail == tail
    assert str(err) == (
        "verifier rejected program egress (sec tc) in build/x/egress.bpf.o:\n"
        f"{tail}\nfull log: /tmp/egress.verifier.log"
    )
    assert isinstance(err, RuntimeOpError)
    assert err.errno == errno.EACCES


def test_operation_turns_oserror_into_runtime_op_error() -> None:
    with pytest.raises(RuntimeOpError) as exc, operation("attach tc egress on veth-pod1"):
        raise OSError(errno.ENODEV, "No such device")
    assert str(exc.value) == "attach tc egress on veth-pod1: No such device"
    assert isinstance(exc.value.__cause__, OSError)

    details: list[str] = []
    with pytest.raises(RuntimeOpError) as exc, operation("load object x.o", details=details):
        details.append("libbpf: map 'm': failed to create")
        raise OSError(errno.EPERM, "Operation not permitted")
    assert str(exc.value) == (
        "load object x.o: Operation not permitted: libbpf: map 'm': failed to create"
    )


@pytest.mark.parametrize(
    ("text", "count"),
    [("0\n", 1), ("0-1\n", 2), ("0-3,6,8-9\n", 7), ("0-127", 128)],
)
def test_parse_cpu_list(text: str, count: int) -> None:
    assert parse_cpu_list(text) == count


def test_import_pulls_in_no_compiler() -> None:
    """A node image carries the runtime without the compiler, Jinja or clang."""
    code = (
        "import sys, bpfgen_runtime, bpfgen_runtime.loader, bpfgen_runtime.libbpf;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('bpfgen', 'jinja2')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_every_mode_has_runtime_steps() -> None:
    assert set(MODES) == {m.value for m in Mode}

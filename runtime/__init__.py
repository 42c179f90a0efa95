"""Node-side runtime: loads a bpfgen build directory. Imports nothing of the compiler."""

from .errors import RuntimeOpError, VerifierRejected, operation
from .libbpf import BPF_ANY, BPF_EXIST, BPF_NOEXIST
from .loader import (
    LoadedMap,
    LoadedObject,
    LoadedProgram,
    ProgInfo,
    TestRunResult,
    open_object,
    possible_cpus,
    test_run,
    verify_object,
)

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "LoadedMap",
    "LoadedObject",
    "LoadedProgram",
    "ProgInfo",
    "RuntimeOpError",
    "TestRunResult",
    "VerifierRejected",
    "open_object",
    "operation",
    "possible_cpus",
    "test_run",
    "verify_object",
]

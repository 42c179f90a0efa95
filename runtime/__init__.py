"""Node-side runtime: loads a bpfgen build directory. Imports nothing of the compiler."""

from .builddir import Build, InputRefused, read_build
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
from .node import Options, Report, down, status, sync, up
from .testrun import BuildUnderTest

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "BuildUnderTest",
    "Build",
    "InputRefused",
    "LoadedMap",
    "LoadedObject",
    "LoadedProgram",
    "Options",
    "ProgInfo",
    "Report",
    "RuntimeOpError",
    "TestRunResult",
    "VerifierRejected",
    "down",
    "open_object",
    "operation",
    "possible_cpus",
    "read_build",
    "status",
    "sync",
    "test_run",
    "up",
    "verify_object",
]


def __getattr__(name: str) -> str:
    """`__version__`: the installed distribution's, which is bpfgen's (the version is
    written once, in bpfgen/__init__.py; the runtime imports nothing of the compiler, so
    it reads it from the package metadata, on first use only)."""
    if name == "__version__":
        from importlib.metadata import version

        return version("bpfgen")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

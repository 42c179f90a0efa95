"""Node-side runtime: loads a bpfgen build directory. Imports nothing of the compiler."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


#: What the package exports, by the module that defines it. Imported on first use, so
#: that the compiler, which imports the contract (bpfgen_runtime.contract) on every
#: run, does not load the node-side modules (libbpf, pyroute2) with it.
_EXPORTS = {
    "Build": "builddir",
    "InputRefused": "builddir",
    "read_build": "builddir",
    "RuntimeOpError": "errors",
    "VerifierRejected": "errors",
    "operation": "errors",
    "BPF_ANY": "libbpf",
    "BPF_EXIST": "libbpf",
    "BPF_NOEXIST": "libbpf",
    "LoadedMap": "loader",
    "LoadedObject": "loader",
    "LoadedProgram": "loader",
    "ProgInfo": "loader",
    "TestRunResult": "loader",
    "open_object": "loader",
    "possible_cpus": "loader",
    "test_run": "loader",
    "verify_object": "loader",
    "Options": "node",
    "Report": "node",
    "down": "node",
    "status": "node",
    "sync": "node",
    "up": "node",
    "BuildUnderTest": "testrun",
}


def __getattr__(name: str) -> object:
    """An export (`_EXPORTS`), imported on first use; or `__version__`: the installed
    distribution's, which is bpfgen's (the version is written once, in
    bpfgen/__init__.py; the runtime imports nothing of the compiler, so it reads it
    from the package metadata, on first use only)."""
    if name in _EXPORTS:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    if name == "__version__":
        from importlib.metadata import version

        return version("bpfgen")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

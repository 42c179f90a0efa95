"""Every error bpfgen raises, in one tree.

    BpfgenError                      exit 1 unless said otherwise
     +-- InputError                  exit 2: the node file or a manifest is wrong;
     |                               carries every Problem found, nothing written
     +-- BuildError                  clang failed on generated C (a bpfgen bug)
     +-- InspectError                the ELF does not match the plan (a bpfgen bug)
     +-- VerifierError               the kernel verifier rejected a program
     +-- ToolchainError              clang/llvm missing or unusable
     +-- OutputError                 --out cannot be written (exit 1: read-only, full, ...)
          +-- OutputRefused          exit 2: --out is not a bpfgen build (a file, a
                                     symlink, a directory of something else): untouched

Messages answer what, where, why and how to fix. `InputError` renders as one
line per problem, `file:line: path: message`, in input order. A problem with
the whole file (it cannot be read, is too large, holds no document) is at
line 1, so that every message has the same `file:line:` form.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one input value."""

    file: str
    line: int  # 1-based; 1 for a problem with the whole file
    path: str  # where inside the document, e.g. "snat.portRange[1]"
    message: str  # what was found and what was expected

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class BpfgenError(Exception):
    """Base of every error bpfgen raises on purpose."""

    exit_code = 1


class InputError(BpfgenError):
    """Bad input: all problems of a run, collected. Nothing was written."""

    exit_code = 2

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class BuildError(BpfgenError):
    """clang rejected generated C: the command, the file, the first diagnostic."""


class InspectError(BpfgenError):
    """The compiled object does not match what the plan asked for."""


class VerifierError(BpfgenError):
    """The kernel verifier rejected a program."""


class ToolchainError(BpfgenError):
    """A required tool (clang, llvm-strip) is missing or too old."""


class NeedsNewCode(ToolchainError):
    """No clang here, and the change needs C that the build directory does not have."""


class OutputError(BpfgenError):
    """The build directory could not be written: the operation and the errno text."""


class OutputRefused(OutputError):
    """`--out` names something bpfgen did not make; it is left exactly as it was."""

    exit_code = 2

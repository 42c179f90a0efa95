"""Fault injection for tests: numbered points where the runtime can be killed.

    BPFGEN_FAULT_KILL_AT=N    SIGKILL this process on reaching the Nth point
    BPFGEN_FAULT_TRACE=FILE   append "N name" for every point reached

Points sit between every step of the converge pass and its record in the state file
(before a step, after it and before its record, after each state write), and
between the steps of a teardown. tests/e2e/test_runtime_faults.py counts the points
of a run with the trace, then kills a run at each of them. Without the variables a
point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

KILL_ENV = "BPFGEN_FAULT_KILL_AT"
TRACE_ENV = "BPFGEN_FAULT_TRACE"
_reached = 0


def point(name: str) -> None:
    global _reached
    kill_at, trace = os.environ.get(KILL_ENV), os.environ.get(TRACE_ENV)
    if not kill_at and not trace:
        return
    _reached += 1
    if trace:
        with open(trace, "a") as out:
            out.write(f"{_reached} {name}\n")
    if kill_at and int(kill_at) == _reached:
        os.kill(os.getpid(), signal.SIGKILL)

"""Fault injection: `up` and `sync` SIGKILLed at every numbered point (runtime/fault.py).

A run with BPFGEN_FAULT_TRACE lists the points it passes (before each step, after
it and before its record, after each state write); then one run per point is killed
there with BPFGEN_FAULT_KILL_AT=N (SIGKILL: no cleanup, no finally). After each kill:
`status` tells the truth (no traceback; "not up" only when nothing of bpfgen is in
the kernel; exit 0 when up and in sync, 3 when not), `up` converges (exit 0, then in sync)
and `down` leaves nothing: no filter, qdisc, pin, state or lock file, sysctl change
or bpffs mount. Two verbs at once: `up` and `down` racing.

`make test` kills `up` at every fourth point and `sync` at every second (about a
minute); BPFGEN_FAULT_ALL=1 (or
`make fault`) at every point. bpf mode on this host; the namespace, veths, bpffs and
run dir are the test's own (tests/e2e/conftest.py), removed by name at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bpfgen_runtime import Options, down, status, up
from bpfgen_runtime.fault import KILL_ENV, TRACE_ENV
from e2e.runtime_env import Env, as_bpf_mode
from e2e.test_runtime_bpf_mode import _build_with_range
from e2e.test_runtime_robust import bpfgen_left

pytestmark = pytest.mark.root

CLI = [sys.executable, "-m", "bpfgen_runtime.cli"]
ALL = bool(os.environ.get("BPFGEN_FAULT_ALL"))


def _run(env: Env, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir,
               **extra}  # fmt: skip
    return subprocess.run([*CLI, *argv, "--netns", env.ns], capture_output=True, text=True,
                          env=environ, timeout=120)  # fmt: skip


def _points(env: Env, *argv: str) -> list[str]:
    trace = env.workdir / "trace"
    trace.unlink(missing_ok=True)
    done = _run(env, *argv, **{TRACE_ENV: str(trace)})
    assert done.returncode == 0, done.stderr
    return trace.read_text().splitlines()


def _opts(env: Env) -> Options:
    return Options(**{**env.opts.__dict__, "ipvs": True})


def _check_after_kill(env: Env, build: Path, where: str) -> None:
    live = bpfgen_left(env)
    st = _run(env, "status")
    assert "Traceback" not in st.stderr, (where, st.stderr)
    kernel_has = [x for x in live if x.startswith(("filter", "clsact", "pins"))]
    if kernel_has:
        assert "is not up" not in st.stdout, (where, live, st.stdout)
    assert st.returncode in (0, 3), (where, st.returncode, st.stderr)
    info = status(_opts(env))
    assert (st.returncode == 0) == (info["up"] and info["in_sync"]), where
    up(build, _opts(env))  # in-process: the CLI's own paths are run by the killed ones
    info = status(_opts(env))
    assert info["in_sync"], (where, info.get("differences"))
    down(_opts(env))
    assert bpfgen_left(env) == [], (where, bpfgen_left(env))


def test_up_killed_at_every_point(env: Env) -> None:
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    assert bpfgen_left(env) == []
    points = _points(env, "up", str(build))
    assert _run(env, "down").returncode == 0 and bpfgen_left(env) == []
    assert len(points) >= 20, points
    killed = []
    for n in range(1, len(points) + 1, 1 if ALL else 4):
        done = _run(env, "up", str(build), **{KILL_ENV: str(n)})
        assert done.returncode == -9, (points[n - 1], done.returncode, done.stderr)
        _check_after_kill(env, build, f"up killed at {points[n - 1]}")
        killed.append(n)
    print(f"\nfault: up has {len(points)} points, killed at {len(killed)}")


def test_sync_killed_at_every_point(env: Env) -> None:
    """sync to a build with other code: load, replace every filter, keep the pins."""
    first = as_bpf_mode(env.build(), env.workdir / "bpf")
    second = as_bpf_mode(_build_with_range(env, 29000, "narrow"), env.workdir / "narrow-bpf")
    up(first, _opts(env))
    points = _points(env, "sync", str(second))
    assert _run(env, "down").returncode == 0 and bpfgen_left(env) == []
    assert len(points) >= 8, points
    killed = []
    for n in range(1, len(points) + 1, 1 if ALL else 2):
        up(first, _opts(env))
        done = _run(env, "sync", str(second), **{KILL_ENV: str(n)})
        assert done.returncode == -9, (points[n - 1], done.returncode, done.stderr)
        _check_after_kill(env, second, f"sync killed at {points[n - 1]}")
        killed.append(n)
    print(f"\nfault: sync has {len(points)} points, killed at {len(killed)}")


def test_up_and_down_at_once(env: Env) -> None:
    """Whichever runs second sees a whole result of the first: up then down leaves
    nothing, down then up leaves the node up and in sync."""
    build = as_bpf_mode(env.build(), env.workdir / "bpf")
    environ = {**os.environ, "BPFGEN_BPFFS": env.opts.bpffs, "BPFGEN_RUN_DIR": env.opts.run_dir}
    for _ in range(8 if ALL else 3):
        procs = [
            subprocess.Popen([*CLI, *argv, "--netns", env.ns, "--wait", "30"], env=environ,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for argv in (["up", str(build)], ["down"])
        ]  # fmt: skip
        assert [p.wait(timeout=90) for p in procs] == [0, 0]
        info = status(_opts(env))
        if info["up"]:
            assert info["in_sync"], info["differences"]
            assert _run(env, "down").returncode == 0
        assert bpfgen_left(env) == []

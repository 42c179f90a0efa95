"""pytest suites in the Debian 6.1 VM, run in the background of the host's test session.

Under TCG the guest's kernel suites take far longer than the host's whole session,
and mostly keep one core busy, so `make test` runs them side by side: at the start of
the session (tests/conftest.py) every selected `vm_background` test starts its VM
here, the host tests run meanwhile, and the test itself, collected last, waits for its
VM and checks the result (tests/vm/test_vm.py). A failure in the VM fails that test,
so `make test` and pytest's closing line count it as before.

The guest's output goes to build/test-logs/vm-<suite>.log (its `--durations`, its own
closing line) instead of the terminal, so the two sessions never interleave; the
host's terminal summary prints a section with each VM's result, timings and log.

The guest uses the host session's object cache (BPFGEN_SHARED_CACHE_DIR): clang under
emulation was most of its time. Its builds are still verified by its own kernel. The
host runs the suites the guest runs first (tests/conftest.py orders them), so each
object is in the cache before the guest asks for it; a miss only costs the guest a
clang run.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.vm.kernel import ROOT
from tests.vm.run import VMError, VMRun, new_results_dir, run_in_vm

LOG_DIR = ROOT / "build" / "test-logs"
#: The host session's clock origin, for the timeline in the summary.
SESSION_START = time.monotonic()


@dataclass(frozen=True)
class Suite:
    """What one VM boot runs: pytest arguments (paths relative to the repository), the
    seconds the whole run may take (boot included), and host work to do first."""

    args: tuple[str, ...]
    timeout: float
    #: Host work before the boot (builds, binaries the guest runs): given the results
    #: directory (shared read-write with the guest), returns environment for the guest.
    prepare: Callable[[Path], dict[str, str]] | None = None
    #: Niceness added to the VM (negative: before the host's tests on a busy machine).
    nice: int = 0
    #: pytest-xdist workers in the guest, one file each at a time (--dist loadfile):
    #: the guest has BPFGEN_VM_CPUS vCPUs, each a host thread under TCG.
    workers: int = 1


@dataclass
class SuiteRun:
    """One pytest run in the VM, on a thread of its own."""

    name: str
    suite: Suite
    timeout: float
    results: Path = field(default_factory=new_results_dir)
    run: VMRun | None = None
    error: str = ""
    started: float = 0.0
    finished: float = 0.0
    _thread: threading.Thread | None = None
    _cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def junit(self) -> Path:
        return self.results / "junit.xml"

    @property
    def log(self) -> Path:
        return LOG_DIR / f"vm-{self.name}.log"

    def command(self) -> list[str]:
        parallel = ["-n", str(self.suite.workers), "--dist", "loadfile"]
        return ["python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "--durations=40",
                f"--junitxml={self.junit}", *(parallel if self.suite.workers > 1 else []),
                *self.suite.args]  # fmt: skip

    def start(self) -> None:
        # The host session's object cache (tests/conftest.py), shared read-write.
        cache = Path(os.environ["BPFGEN_CACHE_DIR"])
        env = {"BPFGEN_SHARED_CACHE_DIR": str(cache), "HYPOTHESIS_PROFILE": "vm"}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()

        def body() -> None:
            with self.log.open("w", encoding="utf-8") as log:
                try:
                    if self.suite.prepare is not None:
                        env.update(self.suite.prepare(self.results))
                    self.run = run_in_vm(self.command(), self.timeout, results=self.results,
                                         env=env, rwdirs=(cache,), log=log,
                                         cancel=self._cancel, nice=self.suite.nice)  # fmt: skip
                except VMError as exc:
                    self.error = str(exc)
                except Exception as exc:  # noqa: BLE001 - reported by the waiting test
                    self.error = f"{type(exc).__name__}: {exc}"
                finally:
                    self.finished = time.monotonic()

        self._thread = threading.Thread(target=body, name=f"vm-{self.name}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        self._cancel.set()
        self.wait()

    def summary(self) -> str:
        """One line: how it ended, when it ran on the session's clock, where its log is."""
        if not self.finished:
            state = "still running" if self.started else "not started"
            return f"vm {self.name}: {state}; log {self.log}"
        span = (f"+{self.started - SESSION_START:.0f} s to +{self.finished - SESSION_START:.0f} s"
                " of the session")  # fmt: skip
        if self.run is None:
            return f"vm {self.name}: error, {span}: {self.error.splitlines()[0]}; log {self.log}"
        last = next((ln for ln in reversed(self.run.stdout.strip().splitlines())
                     if ln.strip()), "(no output)")  # fmt: skip
        return (
            f"vm {self.name}: exit {self.run.returncode}, boot {self.run.boot_seconds:.0f} s, "
            f"total {self.run.total_seconds:.0f} s ({span}); guest: {last.strip('= ')}; "
            f"log {self.log}"
        )


_RUNS: dict[str, SuiteRun] = {}


def start(name: str, suite: Suite) -> SuiteRun:
    """The run of suite `name`, started now unless it already was (BPFGEN_VM_TIMEOUT
    overrides its timeout)."""
    if name not in _RUNS:
        timeout = float(os.environ.get("BPFGEN_VM_TIMEOUT", suite.timeout))
        _RUNS[name] = SuiteRun(name, suite, timeout)
        _RUNS[name].start()
    return _RUNS[name]


def stop_all() -> None:
    """Stop every VM still running (an interrupted or finished session) and wait for it."""
    for run in _RUNS.values():
        run.stop()


def summaries() -> list[str]:
    return [run.summary() for run in _RUNS.values()]


atexit.register(stop_all)

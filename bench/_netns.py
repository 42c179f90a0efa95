"""Network-namespace plumbing for the scale and connections benchmarks.

Everything lives in namespaces this module creates (names with a random
suffix), joined by veth pairs created inside them; addresses come from
198.18.0.0/15 and no namespace has a route out. `Lab` deletes its namespaces
(and so their devices, rules and conntrack tables) and kills its processes
on exit, also on failure; a bpfgen runtime it started in one of them
(`Lab.bpfgen_up`: its own bpffs mount and run directory under the lab's
temporary directory) is taken down and unmounted first. Nothing touches the
root namespace's interfaces.

The load generator and backend is bench/loadgen.c, compiled with
clang on first use (`loadgen_binary`).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpfgen_runtime.node import Options

LOADGEN_C = Path(__file__).with_name("loadgen.c")
CLANG = ("clang-19", "clang", "cc")


class BenchError(RuntimeError):
    """A benchmark could not run; the message says why."""


def sh(*args: str, input: str | None = None, timeout: float = 60.0) -> str:
    """Run a command; its stdout, or BenchError with its stderr."""
    proc = subprocess.run(
        list(args), input=input, capture_output=True, text=True, check=False, timeout=timeout
    )
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)[:200]}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def loadgen_binary(cache: Path | None = None) -> Path:
    """bench/loadgen.c compiled (-O2, pthreads); cached by the source's hash."""
    source = LOADGEN_C.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    where = cache or Path(os.environ.get("BPFGEN_CACHE_DIR", Path.home() / ".cache" / "bpfgen"))
    binary = where / "bench" / f"loadgen-{digest}"
    if binary.is_file():
        return binary
    compiler = next((c for c in CLANG if shutil.which(c)), None)
    if compiler is None:
        raise BenchError("no C compiler (clang-19, clang or cc) to build bench/loadgen.c")
    binary.parent.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    sh(compiler, "-O2", "-Wall", "-pthread", "-o", str(tmp), str(LOADGEN_C))
    tmp.replace(binary)
    return binary


def cpu_jiffies() -> dict[str, int]:
    """The whole machine's /proc/stat cpu line (all CPUs, every namespace), in USER_HZ."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return dict(zip(names, (int(v) for v in fields[1:9]), strict=True))


def busy_seconds(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """CPU-seconds spent between two cpu_jiffies(): busy (all but idle/iowait), kernel part,
    and interrupt time (irq + softirq: the packet path, accounted apart from tasks when
    the kernel has IRQ time accounting)."""
    hz = os.sysconf("SC_CLK_TCK")
    d = {k: after[k] - before[k] for k in before}
    busy = sum(v for k, v in d.items() if k not in ("idle", "iowait"))
    kernel = d["system"] + d["irq"] + d["softirq"]
    return {
        "busy_s": busy / hz,
        "kernel_s": kernel / hz,
        "softirq_s": d["softirq"] / hz,
        "irq_s": (d["irq"] + d["softirq"]) / hz,
    }


def ksoftirqd_pids() -> list[int]:
    """The ksoftirqd/N kernel threads: softirq work that no process context absorbed."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().startswith("ksoftirqd/"):
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def task_seconds(pid: int) -> float:
    """User + system CPU-seconds of one process (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Lab:
    """Namespaces with a common random suffix; torn down by name on exit."""

    prefix: str = "bb"
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    runtimes: list[Options] = field(default_factory=list)
    _work: Path | None = None

    def workdir(self) -> Path:
        """The lab's temporary directory (builds, bpffs mounts, run dirs), removed on close."""
        if self._work is None:
            self._work = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-{self.suffix}-"))
        return self._work

    def bpfgen_up(self, ns: str, build: Path) -> Options:
        """`bpfgen up` of `build` in namespace `ns` (as the e2e tests run it), with a
        private bpffs mount and run directory; `close()` runs `down` and unmounts."""
        from bpfgen_runtime.node import Options, up

        if ns not in self.namespaces:
            raise BenchError(f"namespace {ns} is not this lab's")
        work = self.workdir() / f"runtime-{ns}"
        (work / "bpffs").mkdir(parents=True)
        opts = Options(netns=ns, bpffs=str(work / "bpffs"), run_dir=str(work / "run"))
        self.runtimes.append(opts)  # before up: a half-done up is taken down too
        up(build, opts)
        return opts

    def ns(self, role: str) -> str:
        name = f"{self.prefix}-{role}-{self.suffix}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def veth(self, a: str, a_dev: str, b: str, b_dev: str) -> None:
        """A veth pair created inside namespace a, its peer moved to b (never the root ns)."""
        sh("ip", "-n", a, "link", "add", a_dev, "type", "veth", "peer", "name", b_dev,
           "netns", b)  # fmt: skip
        sh("ip", "-n", a, "link", "set", a_dev, "up")
        sh("ip", "-n", b, "link", "set", b_dev, "up")

    def exec(self, ns: str, *args: str, input: str | None = None, timeout: float = 60.0) -> str:
        if ns not in self.namespaces:
            raise BenchError(f"namespace {ns} is not this lab's")
        return sh("ip", "netns", "exec", ns, *args, input=input, timeout=timeout)

    def sysctl(self, ns: str, *settings: str) -> None:
        self.exec(ns, "sysctl", "-qw", *settings)

    def nft(self, ns: str, ruleset: str) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".nft") as f:
            f.write(ruleset)
            f.flush()
            self.exec(ns, "nft", "-f", f.name, timeout=300)

    def serve(self, ns: str, binary: Path, port: int, threads: int = 16) -> int:
        if ns not in self.namespaces:
            raise BenchError(f"namespace {ns} is not this lab's")
        proc = start_server(binary, ns, port, threads)
        self.procs.append(proc)
        return proc.pid

    def close(self) -> list[str]:
        """Everything down, whatever fails; what failed (the namespaces go in any case)."""
        failed = []
        for proc in self.procs:
            proc.kill()
            proc.wait(10)
        self.procs.clear()
        for opts in reversed(self.runtimes):
            failed += _runtime_down(opts)
        self.runtimes.clear()
        for name in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        self.namespaces.clear()
        if self._work is not None:
            shutil.rmtree(self._work, ignore_errors=True)
            self._work = None
        return failed

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failed = self.close()
        if failed and exc is None:
            raise BenchError("lab teardown: " + "; ".join(failed))


def _runtime_down(opts: Options) -> list[str]:
    """`bpfgen down` in its namespace, then its private bpffs unmounted (also when down
    fails: deleting the namespace detaches the programs, unmounting frees the pins)."""
    from bpfgen_runtime.node import down
    from bpfgen_runtime.pins import is_bpffs

    failed = []
    try:
        down(opts)
    except Exception as exc:  # noqa: BLE001 - reported, and the rest still torn down
        failed.append(f"bpfgen down in {opts.netns}: {type(exc).__name__}: {exc}")
    if is_bpffs(opts.bpffs):
        proc = subprocess.run(["umount", opts.bpffs], check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            failed.append(f"umount {opts.bpffs}: {proc.stderr.strip()}")
    return failed


def start_server(binary: Path, ns: str, port: int, threads: int = 16) -> subprocess.Popen[str]:
    """loadgen's backend in `ns` on `port` (TCP and UDP), once it listens; the caller kills it."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, str(binary), "serve", str(port), str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        proc.wait(10)
        raise BenchError(f"backend in {ns} did not start: {line!r} {err.strip()}")
    return proc


def load(
    binary: Path,
    ns: str,
    mode: str,
    addr: str,
    port: int,
    *,
    threads: int,
    seconds: float,
    max_requests: int,
    expect: str = "-",
    servers: Sequence[int] = (),
) -> dict[str, Any]:
    """One loadgen client run in `ns` (bounded by `seconds` and `max_requests`), with CPU
    time over it: the whole machine's (busy_s: /proc/stat, every process), and the
    benchmark's own (own_cpu_s): the client process (rusage), the `servers` pids and the
    ksoftirqd threads (/proc/PID/stat). Both kernels account CPU time by ticks without
    IRQ_TIME_ACCOUNTING, so softirq work (forwarding, conntrack, NAT, IPVS, eBPF) is
    charged to the process it interrupted or to ksoftirqd; other processes' time is not
    in own_cpu_s."""
    argv = ["ip", "netns", "exec", ns, str(binary), mode, addr, str(port), str(threads),
            f"{seconds:.3f}", str(max_requests), expect]  # fmt: skip
    ksoftirqd = ksoftirqd_pids()
    srv_before = sum(task_seconds(p) for p in servers)
    soft_before = sum(task_seconds(p) for p in ksoftirqd)
    ru_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    before = cpu_jiffies()
    out = sh(*argv, timeout=seconds + 30)
    after = cpu_jiffies()
    ru_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    srv = sum(task_seconds(p) for p in servers) - srv_before
    soft = sum(task_seconds(p) for p in ksoftirqd) - soft_before
    client = (ru_after.ru_utime + ru_after.ru_stime) - (ru_before.ru_utime + ru_before.ru_stime)
    result: dict[str, Any] = json.loads(out)
    result.update(busy_seconds(before, after))
    result.update(client_cpu_s=client, server_cpu_s=srv, ksoftirqd_cpu_s=soft)
    result["own_cpu_s"] = client + srv + soft
    return result

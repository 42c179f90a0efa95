"""Run a command inside Debian 12's 6.1 kernel, booted with virtme-ng under TCG (no KVM).

    python -m tests.vm.run [--timeout S] [--results DIR] -- <command...>

The guest's root is the host's root filesystem, read-only (9p); /tmp, /etc,
/var, /usr, /home and /boot are copy-on-write overlays whose writes vanish
with the VM. The command runs as root in the repository with .venv/bin first
on PATH, BPFGEN_IN_VM=1, and BPFGEN_VM_RESULTS naming a directory shared
read-write with the host (--results, by default a new .vm/runs/results-*):
files meant to outlive the VM go there. bpffs is mounted at /sys/fs/bpf,
the kernel's own modules are at /lib/modules/$(uname -r) (so
`modprobe ip_vs` works) and its config at /boot/config-$(uname -r).

The exit status is the command's. A VM that cannot boot, dies before the
command ends, or outlives --timeout (default 900 s, boot included) is an
error with the reason (exit status 125), never a success.

From Python: run_in_vm(["pytest", ...], timeout=900) -> VMRun; `log=` writes the
output to a file instead of the terminal, `cancel=` (a threading.Event) stops the VM
from another thread (tests/vm/test_vm.py runs suites in the background that way).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.vm.kernel import ROOT, Kernel, KernelError, cache_dir, ensure_kernel

DEFAULT_TIMEOUT = 900.0
DEFAULT_CPUS = int(os.environ.get("BPFGEN_VM_CPUS", "2"))
# The guest's /tmp and /run share a tmpfs of half this memory.
DEFAULT_MEMORY = os.environ.get("BPFGEN_VM_MEMORY", "2G")
VM_ERROR_EXIT = 125
VENV_BIN = ROOT / ".venv" / "bin"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UDEVD = ("/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd")
# The host's root exported a second time, read-only, which the guest mounts with
# cache=loose (vng mounts the root uncached): see cached_paths().
CACHED_TAG = "bpfgen-ro"
CACHED_MOUNT = "/run/bpfgen-ro"
MULTIARCH = str(sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu")

# What the command sees besides PATH and BPFGEN_IN_VM: every path is writable in the guest.
GUEST_ENV = {
    "HOME": "/tmp/vm-home",
    "TMPDIR": "/tmp",
    "BPFGEN_CACHE_DIR": "/tmp/bpfgen-cache",
    "HYPOTHESIS_STORAGE_DIRECTORY": "/tmp/hypothesis",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
}


class VMError(RuntimeError):
    """The VM could not run the command to its end; the message says why."""


@dataclass
class VMRun:
    """The result of a command run in the VM, like subprocess.CompletedProcess."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    results: Path  # shared read-write with the guest, kept after the run
    kernel: str  # the guest's `uname -r`
    boot_seconds: float  # from starting vng to the command starting, host clock
    total_seconds: float
    guest_uptime_at_start: float  # the guest kernel's uptime when the command started

    def check_returncode(self) -> None:
        if self.returncode != 0:
            raise subprocess.CalledProcessError(
                self.returncode, self.args, self.stdout, self.stderr
            )


def find_vng() -> Path:
    """The vng of this interpreter's environment (the project venv), else of PATH."""
    for candidate in (Path(sys.executable).parent / "vng", VENV_BIN / "vng"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("vng")
    if found is None:
        raise VMError(
            "vng not found: install virtme-ng into the project venv "
            "(.venv/bin/pip install virtme-ng)"
        )
    return Path(found)


def preflight() -> Path:
    """Check the host tools virtme-ng needs; returns vng's path."""
    missing = []
    if shutil.which("qemu-system-x86_64") is None:
        missing.append("qemu-system-x86_64 (apt: qemu-system-x86)")
    if not any(shutil.which(b) for b in ("busybox-static", "busybox.static", "busybox")):
        missing.append("busybox, for vng's initramfs (apt: busybox-static)")
    if shutil.which("file") is None and shutil.which("strings") is None:
        missing.append("file, which vng uses to read the kernel's version (apt: file)")
    if not any(Path(p).exists() for p in UDEVD):
        missing.append(
            "systemd-udevd, which creates the guest's /dev/virtio-ports used for the "
            "command's output and exit status (apt: udev)"
        )
    if missing:
        raise VMError("cannot boot the VM, missing on the host: " + "; ".join(missing))
    if os.geteuid() != 0:
        raise VMError("the VM runs the command as the calling user: run as root (BPF, netns)")
    return find_vng()


def _runs_dir() -> Path:
    runs = cache_dir() / "runs"
    runs.mkdir(exist_ok=True)
    return runs


def new_results_dir() -> Path:
    """A new, empty .vm/runs/results-* for a run's results; the caller removes it."""
    return Path(tempfile.mkdtemp(prefix="results-", dir=_runs_dir()))


def cached_paths() -> list[Path]:
    """What every guest process reads and nothing changes during a run: Python's standard
    library and shared library, the project venv, the repository's code.

    vng mounts the host's root over 9p without a cache: every stat, every open and every
    page of a mapped file (libpython, extension modules) is a round trip to qemu, and
    under TCG one `python -c pass` took 6-12 s in the guest, `import pytest, hypothesis`
    40-110 s, collecting the kernel suite 5 min. These paths are bind-mounted from a
    second, read-only export of the host's root mounted with cache=loose, where the
    guest keeps pages and directory entries: the guest sees them as they were when it
    first read them (the host does not change them during a run). Everything else,
    the results and the shared object cache included, stays on vng's uncached mounts.
    """
    paths = [Path(sysconfig.get_paths()["stdlib"]), VENV_BIN.parent,
             Path(sys.executable).resolve()]  # fmt: skip
    # Every process maps libc and friends; the tests run ip, tc, nft, bpftool many times.
    paths += [Path("/usr/bin"), Path("/usr/sbin"), Path(f"/usr/lib/{MULTIARCH}")]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir, name = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
        paths.append(Path(str(libdir)) / str(name))
    paths += [ROOT / d for d in ("bpfgen", "runtime", "templates", "tests", "examples")]
    return [p.resolve() for p in paths if p.exists()]


def _guest_script(
    cmd: list[str],
    kernel: Kernel,
    ctl: Path,
    results: Path,
    cwd: Path,
    env: dict[str, str],
    cached: list[Path],
) -> str:
    q = shlex.quote
    config = kernel.root / "boot" / f"config-{kernel.release}"
    exports = {
        **GUEST_ENV,
        **env,
        "BPFGEN_IN_VM": "1",
        "BPFGEN_VM_RESULTS": str(results),
    }
    lines = [
        "#!/bin/bash",
        "# Generated by tests/vm/run.py: runs inside the VM.",
        "set -u",
        f"ctl={q(str(ctl))}",
        'cat /proc/uptime > "$ctl/started"',
        'fail() { echo "vm: $*" >&2; echo "$*" > "$ctl/setup-error"; exit 1; }',
        f'[ "$(uname -r)" = {q(kernel.release)} ] '
        f'|| fail "booted kernel $(uname -r), expected {kernel.release}"',
        '[ -f "/lib/modules/$(uname -r)/modules.dep" ] '
        '|| fail "no /lib/modules/$(uname -r)/modules.dep in the guest"',
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || fail 'mount bpffs'",
        # libbpf and bpftool read the config of the running kernel from /boot.
        f"if [ -w /boot ]; then cp {q(str(config))} /boot/ || fail 'copy kernel config'; fi",
        f"export PATH={q(str(VENV_BIN))}:{GUEST_PATH}",
    ]
    if cached:
        lines += [
            f"mkdir -p {CACHED_MOUNT} && mount -t 9p -o ro,trans=virtio,version=9p2000.L,"
            f"msize=512000,cache=loose {CACHED_TAG} {CACHED_MOUNT} "
            "|| fail 'mount the cached read-only export'",
        ]
        lines += [
            f"mount --bind {q(CACHED_MOUNT + str(p))} {q(str(p))} || fail 'bind {p}'"
            for p in cached
        ]
    lines += [f"export {k}={q(v)}" for k, v in exports.items()]
    lines += [
        'mkdir -p "$HOME" "$BPFGEN_CACHE_DIR" "$HYPOTHESIS_STORAGE_DIRECTORY" '
        "|| fail 'mkdir in /tmp'",
        f"cd {q(str(cwd))} || fail 'cd {cwd}'",
        'cat /proc/uptime > "$ctl/running"',
        shlex.join(cmd) + " </dev/null",
        "rc=$?",
        'echo "$rc" > "$ctl/exit"',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


class _Tee(threading.Thread):
    """Copies a pipe to a stream (if any) as it comes, and keeps the text."""

    def __init__(self, pipe: IO[bytes], echo: IO[str] | None) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.echo = echo
        self.chunks: list[str] = []

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.pipe.fileno()
        while True:
            data = os.read(fd, 65536)
            text = decoder.decode(data, final=not data)
            if text:
                self.chunks.append(text)
                if self.echo is not None:
                    try:
                        self.echo.write(text)
                        self.echo.flush()
                    except (OSError, ValueError):  # a closed stream: keep draining the pipe
                        self.echo = None
            if not data:
                return

    @property
    def text(self) -> str:
        return "".join(self.chunks)


def _tail(text: str, lines: int = 30) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (nothing)"


def _uptime(path: Path) -> float:
    try:
        return float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def _renice(increment: int) -> None:
    """In the child before exec: vng and the qemu it forks inherit the niceness."""
    with contextlib.suppress(OSError):  # not root: the VM runs at the caller's priority
        os.nice(increment)


def run_in_vm(
    cmd: list[str],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    results: Path | None = None,
    env: dict[str, str] | None = None,
    rwdirs: tuple[Path, ...] = (),
    cwd: Path = ROOT,
    cpus: int = DEFAULT_CPUS,
    memory: str = DEFAULT_MEMORY,
    echo: bool = True,
    verbose: bool = False,
    cached: bool = os.environ.get("BPFGEN_VM_CACHED", "1") != "0",
    log: IO[str] | None = None,
    cancel: threading.Event | None = None,
    nice: int = 0,
) -> VMRun:
    """Boot the 6.1 kernel, run `cmd` in it, return its exit status and output.

    `results` (created if missing; by default a new .vm/runs/results-*) is
    shared read-write with the guest and named by $BPFGEN_VM_RESULTS there.
    `env` adds guest environment variables; `rwdirs` are host directories the
    guest may write (everything else it sees read-only). With `echo` the output is
    streamed to sys.stdout/sys.stderr as it comes; with `log`, to that stream instead
    (stdout and stderr both). `verbose` adds the boot console to stderr. `cached` serves
    cached_paths() from a cached read-only mount (BPFGEN_VM_CACHED=0: vng's only). Raises VMError
    when the VM cannot run the command to its end, including when `timeout` (boot
    included) runs out or `cancel` is set. `nice` is added to the VM's niceness (negative
    raises its priority, as root; elsewhere the VM runs at the caller's).
    """
    if not cmd:
        raise ValueError("run_in_vm: empty command")
    bad = [key for key in env or {} if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)]
    if bad:
        raise ValueError(f"run_in_vm: invalid environment variable names {bad}")
    start = time.monotonic()
    deadline = start + timeout
    vng = preflight()
    try:
        kernel = ensure_kernel()
    except KernelError as exc:
        raise VMError(f"no 6.1 kernel to boot: {exc}") from exc

    results = (results or new_results_dir()).resolve()
    results.mkdir(parents=True, exist_ok=True)
    ctl = Path(tempfile.mkdtemp(prefix="ctl-", dir=_runs_dir()))
    try:
        script = ctl / "script.sh"
        cached_ro = cached_paths() if cached else []
        script.write_text(_guest_script(cmd, kernel, ctl, results, cwd, env or {}, cached_ro))
        args = [
            str(vng),
            "--run", str(kernel.vmlinuz),
            "--disable-kvm",
            # Debian 12 has no Rust virtiofsd; vng would wait for it, then use 9p anyway.
            "--force-9p",
            "--cpus", str(cpus),
            "--memory", memory,
            "--name", "bpfgen-vm",
            "--cwd", str(cwd),
            "--rwdir", str(ctl),
            "--rwdir", str(results),
            *(a for d in rwdirs for a in ("--rwdir", str(d))),
        ]  # fmt: skip
        if Path("/boot").is_dir():
            args += ["--overlay-rwdir", "/boot"]
        if verbose:
            args.append("--verbose")
        args += ["--exec", f"bash {shlex.quote(str(script))}"]
        if cached_ro:  # vng passes these to qemu; they must come last
            args += ["--qemu-opts=-fsdev local,id=bpfgenro,path=/,security_model=none,"
                     "readonly=on,multidevs=remap -device virtio-9p-pci,fsdev=bpfgenro,"
                     f"mount_tag={CACHED_TAG}"]  # fmt: skip
        host_env = dict(os.environ)
        host_env["PATH"] = f"{vng.parent}{os.pathsep}{host_env.get('PATH', os.defpath)}"

        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=host_env,
            cwd=cwd,
            start_new_session=True,  # vng and its qemu form one group, killed together
            preexec_fn=(lambda: _renice(nice)) if nice else None,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if log is not None:
            out, err = _Tee(proc.stdout, log), _Tee(proc.stderr, log)
        else:
            out = _Tee(proc.stdout, sys.stdout if echo else None)
            err = _Tee(proc.stderr, sys.stderr if echo else None)
        out.start()
        err.start()
        booted_at: float | None = None
        timed_out = cancelled = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if booted_at is None and (ctl / "started").exists():
                    booted_at = now
                if now >= deadline:
                    timed_out = True
                    _kill_group(proc)
                    break
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    _kill_group(proc)
                    break
                time.sleep(0.2)
        except BaseException:  # Ctrl-C, pytest timeouts: never leave a qemu behind
            _kill_group(proc)
            raise
        vng_status = proc.wait()
        out.join(10)
        err.join(10)
        end = time.monotonic()
        if booted_at is None and (ctl / "started").exists():
            booted_at = end
        log_text = (
            f"command output (last lines):\n{_tail(out.text)}\n"
            f"stderr (last lines):\n{_tail(err.text)}"
        )

        if cancelled:
            raise VMError(f"VM stopped: cancelled after {end - start:.0f} s\n{log_text}")
        if timed_out:
            stage = (
                "while running the command"
                if booted_at
                else "before the command started (no boot? rerun with --verbose for the console)"
            )
            raise VMError(f"VM timed out after {timeout:.0f} s, {stage}\n{log_text}")
        if booted_at is None:
            raise VMError(
                f"VM did not boot to the command (vng exit {vng_status}): see the reason "
                f"below; rerun with --verbose for the boot console\n{log_text}"
            )
        if (ctl / "setup-error").exists():
            reason = (ctl / "setup-error").read_text().strip()
            raise VMError(f"VM booted but its setup failed: {reason}\n{log_text}")
        if not (ctl / "exit").exists():
            raise VMError(
                f"VM stopped before the command ended (vng exit {vng_status}: kernel "
                f"panic, qemu killed or out of memory?)\n{log_text}"
            )
        returncode = int((ctl / "exit").read_text().strip())
        guest_boot = _uptime(ctl / "started")
        return VMRun(
            args=list(cmd),
            returncode=returncode,
            stdout=out.text,
            stderr=err.text,
            results=results,
            kernel=kernel.release,
            boot_seconds=booted_at - start,
            total_seconds=end - start,
            guest_uptime_at_start=guest_boot,
        )
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM then SIGKILL to vng's process group (vng and the qemu it forked)."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.vm.run",
        description="Run a command inside the Debian 6.1 kernel under virtme-ng (no KVM).",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="seconds for the whole run, boot included (default %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="host directory shared read-write with the guest (default: a new .vm/runs/results-*)",
    )
    parser.add_argument("--cpus", type=int, default=DEFAULT_CPUS)
    parser.add_argument("--memory", default=DEFAULT_MEMORY)
    parser.add_argument("--verbose", action="store_true", help="show the boot console")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="-- then the command to run in the guest")  # fmt: skip
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command: python -m tests.vm.run -- <command...>")
    # A terminated runner stops its VM too (run_in_vm kills it on the way out).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run = run_in_vm(
            command,
            args.timeout,
            results=args.results,
            cpus=args.cpus,
            memory=args.memory,
            verbose=args.verbose,
        )
    except VMError as exc:
        print(f"vm: error: {exc}", file=sys.stderr)
        return VM_ERROR_EXIT
    kept = f"results in {run.results}"
    if args.results is None and not any(run.results.iterdir()):
        run.results.rmdir()  # an unused default results directory is not kept
        kept = "no results"
    print(
        f"vm: {run.kernel}: command started {run.boot_seconds:.1f} s after launch "
        f"(guest uptime {run.guest_uptime_at_start:.1f} s), exited {run.returncode}, "
        f"total {run.total_seconds:.1f} s; {kept}",
        file=sys.stderr,
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())

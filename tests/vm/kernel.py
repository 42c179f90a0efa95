"""Fetch Debian 12's 6.1 LTS kernel into a cache directory, without installing it.

    python -m tests.vm.kernel          # prints release=, vmlinuz=, modules=

The kernel is the package that the `linux-image-amd64` metapackage currently
depends on (e.g. linux-image-6.1.0-56-amd64). It is fetched with
`apt-get download` (after an `apt-get update` if apt does not know it) and
unpacked with `dpkg-deb -x` into <cache>/linux-<release>/, whose
lib/modules/<release> gets a modules.dep from `depmod -b`. Nothing is
installed: /boot and /lib/modules are untouched. A second run finds the
unpacked tree and downloads nothing.

<cache> is $BPFGEN_VM_DIR, by default .vm/ at the top of the repository.
$BPFGEN_VM_KERNEL_PACKAGE pins a package name instead of following the
metapackage. Needs root (apt), apt-get, dpkg-deb and depmod (kmod).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METAPACKAGE = "linux-image-amd64"
PACKAGE_RE = re.compile(r"^linux-image-(6\.1\.\d+-\d+-amd64)$")
COMPLETE = ".complete"


class KernelError(RuntimeError):
    """The 6.1 kernel could not be obtained; the message says why."""


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-56-amd64, what `uname -r` prints in the guest
    root: Path  # the unpacked package: boot/ and lib/modules/

    @property
    def package(self) -> str:
        return f"linux-image-{self.release}"

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def moddir(self) -> Path:
        return self.root / "lib" / "modules" / self.release

    def is_complete(self) -> bool:
        return (
            (self.root / COMPLETE).is_file()
            and self.vmlinuz.is_file()
            and (self.moddir / "modules.dep").is_file()
        )


def cache_dir() -> Path:
    path = Path(os.environ.get("BPFGEN_VM_DIR") or ROOT / ".vm")
    path.mkdir(parents=True, exist_ok=True)
    # The cache ignores itself, so that git never sees the 400 MB tree.
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return path


def _tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise KernelError(f"{name} not found: install the Debian package {package}")
    return found


def _run(args: list[str]) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KernelError(
            f"{' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}"
        )


def _metapackage_dependency() -> str | None:
    """The linux-image-6.1.* package the candidate linux-image-amd64 depends on."""
    proc = subprocess.run(
        [_tool("apt-cache", "apt"), "depends", METAPACKAGE],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        key, _, value = line.strip().partition(":")
        if key.strip("|") == "Depends" and value.strip().startswith("linux-image-"):
            return value.strip()
    return None


def _cached() -> list[Kernel]:
    found = []
    for root in sorted(cache_dir().glob("linux-*")):
        kernel = Kernel(root.name.removeprefix("linux-"), root)
        if PACKAGE_RE.match(kernel.package) and kernel.is_complete():
            found.append(kernel)
    return found


def image_package() -> str:
    """The kernel package name to use, running `apt-get update` if apt does not know one."""
    pinned = os.environ.get("BPFGEN_VM_KERNEL_PACKAGE")
    package = pinned or _metapackage_dependency()
    if package is None:
        print(f"vm: apt does not know {METAPACKAGE}: apt-get update", file=sys.stderr)
        _run([_tool("apt-get", "apt"), "update", "-qq"])
        package = _metapackage_dependency()
    if package is None:
        raise KernelError(
            f"apt-cache depends {METAPACKAGE} names no linux-image package, even after "
            "apt-get update: is this Debian 12 (bookworm) with its main component?"
        )
    if not PACKAGE_RE.match(package):
        raise KernelError(
            f"{package} (from {'BPFGEN_VM_KERNEL_PACKAGE' if pinned else METAPACKAGE}) "
            "is not a Debian 6.1 amd64 kernel package (linux-image-6.1.*-amd64); "
            "the VM tests need Debian 12's 6.1 LTS kernel"
        )
    return package


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _fetch(kernel: Kernel, cache: Path) -> None:
    if os.geteuid() != 0:
        raise KernelError(f"fetching {kernel.package} needs root (apt-get download)")
    apt_get = _tool("apt-get", "apt")
    dpkg_deb = _tool("dpkg-deb", "dpkg")
    depmod = _tool("depmod", "kmod")

    downloads = cache / "download"
    shutil.rmtree(downloads, ignore_errors=True)
    downloads.mkdir()
    # The sandbox user _apt cannot write to a root-owned 0755 directory.
    download = [apt_get, "-q", "-o", "APT::Sandbox::User=root", "download", kernel.package]
    print(f"vm: downloading {kernel.package}", file=sys.stderr)
    proc = subprocess.run(download, cwd=downloads, capture_output=True, text=True, check=False)
    if proc.returncode != 0 and "Unable to locate package" in proc.stderr + proc.stdout:
        _run([apt_get, "update", "-qq"])
        proc = subprocess.run(download, cwd=downloads, capture_output=True, text=True, check=False)
    debs = sorted(downloads.glob(f"{kernel.package}_*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise KernelError(
            f"apt-get download {kernel.package} failed (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()}"
        )

    staging = cache / f"linux-{kernel.release}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    print(f"vm: unpacking {debs[0].name}", file=sys.stderr)
    _run([dpkg_deb, "-x", str(debs[0]), str(staging)])
    unpacked = Kernel(kernel.release, staging)
    if not unpacked.vmlinuz.is_file() or not unpacked.moddir.is_dir():
        raise KernelError(
            f"{debs[0].name} has no boot/vmlinuz-{kernel.release} or lib/modules/{kernel.release}"
        )
    # Debian generates modules.dep in postinst; an unpacked package has none.
    _run([depmod, "-a", "-b", str(staging), kernel.release])
    if not (unpacked.moddir / "modules.dep").is_file():
        raise KernelError(f"depmod wrote no modules.dep under {unpacked.moddir}")
    (staging / COMPLETE).write_text(debs[0].name + "\n")
    shutil.rmtree(kernel.root, ignore_errors=True)
    staging.rename(kernel.root)
    shutil.rmtree(downloads, ignore_errors=True)


def ensure_kernel() -> Kernel:
    """The unpacked 6.1 kernel, fetched on first use; raises KernelError with the reason."""
    cache = cache_dir()
    try:
        package = image_package()
    except KernelError as exc:
        cached = _cached()
        if not cached:
            raise
        print(f"vm: warning: {exc}\nvm: using cached {cached[-1].package}", file=sys.stderr)
        return cached[-1]
    match = PACKAGE_RE.match(package)
    assert match is not None
    kernel = Kernel(match.group(1), cache / f"linux-{match.group(1)}")
    if kernel.is_complete():
        return kernel
    with _locked(cache / ".lock"):
        if not kernel.is_complete():
            _fetch(kernel, cache)
    return kernel


def main() -> int:
    try:
        kernel = ensure_kernel()
    except KernelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"release={kernel.release}")
    print(f"vmlinuz={kernel.vmlinuz}")
    print(f"modules={kernel.moddir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

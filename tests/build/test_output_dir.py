"""`bpfgen compile --out`: what it replaces, what it refuses, and the build cache it trusts.

The output path is replaced only when it is a bpfgen build (or missing, or an empty
directory); anything else is refused with exit 2 and left exactly as it was. A file
system that cannot be written gives `error:` and exit 1, never a traceback. A build
cache entry is checked against the digests stored with it before it is restored; a
damaged one is discarded (with a note) and the build is made again.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bpfgen.build import cache_root
from tests.build.helpers import run_cli, snapshot

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "examples" / "node.yaml"
SERVICES = ROOT / "examples" / "services.yaml"


def _compile(capsys: pytest.CaptureFixture[str], out: Path) -> tuple[int, str, str]:
    return run_cli(
        capsys, "compile", "--node", str(NODE), "--services", str(SERVICES), "--out", str(out),
        "--no-verify",
    )  # fmt: skip


def _refused(code: int, stdout: str, stderr: str, words: str) -> None:
    assert code == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    assert stderr.startswith("error: ") and words in stderr, stderr


def test_a_build_directory_is_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "b"
    assert _compile(capsys, out)[0] == 0
    (out / "stale.txt").write_text("from an older build\n")
    assert _compile(capsys, out)[0] == 0
    assert (out / "manifest.json").is_file() and not (out / "stale.txt").exists()


def test_an_empty_directory_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert _compile(capsys, out)[0] == 0
    assert (out / "manifest.json").is_file()


def test_a_regular_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "notes.txt"
    out.write_text("keep me\n")
    _refused(*_compile(capsys, out), "is not a directory")
    assert out.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("target", ["a build", "a file", "nothing"])
def test_a_symlink_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    real = tmp_path / "real"
    if target == "a build":
        assert _compile(capsys, real)[0] == 0
    elif target == "a file":
        real.write_text("keep me\n")
    link = tmp_path / "link"
    link.symlink_to(real)
    before = snapshot(tmp_path)
    _refused(*_compile(capsys, link), "is a symbolic link")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert snapshot(tmp_path) == before


def test_a_directory_that_is_not_a_build_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("secret\n")
    (home / "notes.txt").write_text("keep me\n")
    before = snapshot(tmp_path)
    _refused(*_compile(capsys, home), "is not a bpfgen build directory")
    assert snapshot(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_directory_with_a_foreign_manifest_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "webapp"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "webapp", "version": 3}\n')
    before = snapshot(tmp_path)
    _refused(*_compile(capsys, other), "is not a bpfgen build directory")
    assert snapshot(tmp_path) == before


@pytest.mark.root
def test_unwritable_output_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A read-only directory (as a read-only file system: EACCES/EROFS when creating the
    temporary tree) and an immutable one: exit 1 with the operation and the errno."""
    parent = tmp_path / "ro"
    parent.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(parent)], check=True)
    try:
        code, stdout, stderr = _compile(capsys, parent / "b")
    finally:
        subprocess.run(["umount", str(parent)], check=True)
    assert code == 1 and stdout == "" and "Traceback" not in stderr
    assert ": Read-only file system" in _error_line(stderr), stderr


@pytest.mark.root
def test_full_file_system_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "full"
    parent.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(parent)], check=True)
    try:
        code, stdout, stderr = _compile(capsys, parent / "b")
        left = sorted(p.name for p in parent.iterdir())
    finally:
        subprocess.run(["umount", str(parent)], check=True)
    assert code == 1 and stdout == "" and "Traceback" not in stderr
    assert "No space left on device" in _error_line(stderr), stderr
    assert left == [], left  # the temporary tree is removed


@pytest.mark.root
def test_immutable_directory_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    try:
        code, stdout, stderr = _compile(capsys, parent / "b")
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert code == 1 and stdout == "" and "Traceback" not in stderr
    assert _error_line(stderr).startswith(
        f"error: write build directory {parent / 'b'}: Operation not permitted"
    ), stderr


def _error_line(stderr: str) -> str:
    """The one `error:` line (progress lines come before it)."""
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def _only_cache_entry() -> Path:
    entries = [p for p in (cache_root() / "builds").iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1, entries
    return entries[0]


@pytest.mark.parametrize(
    "damage",
    [
        "object missing",
        "object truncated",
        "manifest corrupt",
        "manifest a list",
        "notices missing",
    ],
)
def test_a_damaged_cache_entry_is_discarded_and_rebuilt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    damage: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("BPFGEN_CACHE_DIR", str(tmp_path / "cache"))
    first = tmp_path / "first"
    assert _compile(capsys, first)[0] == 0
    entry = _only_cache_entry()
    if damage == "object missing":
        (entry / "egress.bpf.o").unlink()
    elif damage == "object truncated":
        data = (entry / "egress.bpf.o").read_bytes()
        (entry / "egress.bpf.o").write_bytes(data[: len(data) // 2])
    elif damage == "manifest corrupt":
        (entry / "manifest.json").write_text('{"schema": 1, "programs": [')
    elif damage == "manifest a list":
        (entry / "manifest.json").write_text("[]\n")
    else:
        (entry / "notices.json").unlink()
    second = tmp_path / "second"
    code, _, stderr = _compile(capsys, second)
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert "cache: entry" in stderr and "discarded" in stderr, stderr
    assert snapshot(second) == snapshot(first)
    # the rebuilt entry is whole again: the next compile restores it
    third = tmp_path / "third"
    code, _, stderr = _compile(capsys, third)
    assert code == 0 and "discarded" not in stderr and "cache: same inputs" in stderr, stderr
    assert snapshot(third) == snapshot(first)

"""Inputs that are not plain files, or not plain numbers (issue #13, items 4, 5, 7, 8).

- every input is read once, as bytes, and those bytes are both hashed (the build cache
  key) and parsed: a pipe (`--services <(kubectl ...)`), a FIFO and /dev/stdin compile
  the same build as the file they carry, and do not poison the cache;
- each input is bounded in size (source.max_input_bytes()): /dev/zero is refused, not
  read until memory runs out;
- a problem with a whole file (missing, a directory, unreadable, empty, only comments,
  null, too large) is reported at line 1, like every other error: `file:1: message`;
- integers beyond CPython's 4,300-digit limit are refused with file:line in `compile`
  and in `sync`, not a ValueError traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfgen import __version__
from bpfgen.inputs import source
from tests.build.helpers import run_cli, snapshot

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "examples" / "node.yaml"
SERVICES = ROOT / "examples" / "services.yaml"


def _compile(
    capsys: pytest.CaptureFixture[str], node: Path, services: Path, out: Path
) -> tuple[int, str, str]:
    return run_cli(
        capsys,
        "compile",
        "-q",
        "--no-verify",
        "--node",
        str(node),
        "--services",
        str(services),
        "--out",
        str(out),
    )


def _frontends(out: Path) -> list[object]:
    manifest = json.loads((out / "manifest.json").read_text())
    frontends: list[object] = manifest["specialization"]["frontends"]
    return frontends


@pytest.fixture
def reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[object]:
    """The frontends of the example built from the regular files."""
    code, _, err = _compile(capsys, NODE, SERVICES, tmp_path / "ref")
    assert code == 0, err
    frontends = _frontends(tmp_path / "ref")
    assert len(frontends) > 5
    return frontends


@pytest.fixture
def pipe() -> Iterator[Path]:
    """/dev/fd/N of a pipe a thread writes the example services into, as `<(cat ...)`."""
    path, writer, read_end = _pipe_of(SERVICES.read_bytes())
    try:
        yield path
    finally:
        writer.join(timeout=10)
        os.close(read_end)


def test_services_from_a_pipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: list[object], pipe: Path
) -> None:
    code, _, err = _compile(capsys, NODE, pipe, tmp_path / "piped")
    assert code == 0, err
    assert _frontends(tmp_path / "piped") == reference
    # The pipe's build is cached under its content: the regular file is not affected.
    code, _, err = _compile(capsys, NODE, SERVICES, tmp_path / "again")
    assert code == 0, err
    assert _frontends(tmp_path / "again") == reference


def _pipe_of(data: bytes) -> tuple[Path, threading.Thread, int]:
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as w:
            w.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    return Path(f"/dev/fd/{read_end}"), writer, read_end


def test_node_from_a_pipe_is_kept_for_sync(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--node <(...)`: /dev/fd/N means nothing to a later `bpfgen sync`, which rebuilds
    from the node file the manifest records; the build keeps the bytes it read as
    node.yaml and records that, also when the build comes from the cache."""
    for out in (tmp_path / "first", tmp_path / "cached"):
        node, writer, fd = _pipe_of(NODE.read_bytes())
        try:
            code, _, err = _compile(capsys, node, SERVICES, out)
        finally:
            writer.join(timeout=10)
            os.close(fd)
        assert code == 0, err
        recorded = json.loads((out / "manifest.json").read_text())["inputs"]
        skipped = recorded.pop("skipped")  # the example's headless Service and its slice
        assert [k["object"] for k in skipped] == ["Service default/db",
                                                   "EndpointSlice default/db-h6j9k"]  # fmt: skip
        assert recorded == {"node": str(out / "node.yaml"), "services": [str(SERVICES)]}
        assert (out / "node.yaml").read_bytes() == NODE.read_bytes()
    # What sync does with the record: rebuild from it.
    code, _, err = _compile(capsys, Path(recorded["node"]), SERVICES, tmp_path / "rebuilt")
    assert code == 0, err
    assert _frontends(tmp_path / "rebuilt") == _frontends(tmp_path / "first")


def test_services_from_a_fifo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: list[object]
) -> None:
    fifo = tmp_path / "services.fifo"
    os.mkfifo(fifo)
    stop = threading.Event()

    def feed() -> None:
        """Serve the services to the first reader, EOF to any later one (a FIFO read
        twice would otherwise block the second open forever)."""
        data = SERVICES.read_bytes()
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                stop.wait(0.01)
                continue
            os.set_blocking(fd, True)
            with os.fdopen(fd, "wb") as w:
                w.write(data)
            data = b""

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        code, _, err = _compile(capsys, NODE, fifo, tmp_path / "fifo-out")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert code == 0, err
    assert _frontends(tmp_path / "fifo-out") == reference


def test_services_from_dev_stdin(tmp_path: Path, reference: list[object]) -> None:
    out = tmp_path / "stdin-out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bpfgen",
            "compile",
            "-q",
            "--no-verify",
            "--node",
            str(NODE),
            "--services",
            "/dev/stdin",
            "--out",
            str(out),
        ],
        input=SERVICES.read_bytes(),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert _frontends(out) == reference


def _unreadable(tmp_path: Path) -> Path:
    """A file this process may not read: mode 000, or for root a write-only sysctl."""
    if os.geteuid() == 0:
        return Path("/proc/sys/vm/drop_caches")
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1\n")
    path.chmod(0)
    return path


def _listening_socket(tmp_path: Path) -> Path:
    path = tmp_path / "sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    return path


WHOLE_FILE = [
    ("missing", lambda d: d / "nope.yaml", "cannot read: No such file or directory"),
    ("directory", lambda d: d, "cannot read: Is a directory"),
    ("unreadable", _unreadable, "cannot read: Permission denied"),
    ("socket", _listening_socket, "cannot read: No such device or address"),
    (
        "empty",
        lambda d: d / "empty.yaml",
        "no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)",
    ),
    (
        "comments only",
        lambda d: d / "comments.yaml",
        "no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)",
    ),
    (
        "null",
        lambda d: d / "null.yaml",
        "no document (expected apiVersion: bpfgen/v1, kind: NodeConfig)",
    ),
    (
        "/dev/zero",
        lambda d: Path("/dev/zero"),
        "is larger than 64 MiB (the input limit; BPFGEN_MAX_INPUT_MB raises it)",
    ),
]


@pytest.mark.parametrize(("make", "message"), [pytest.param(m, t, id=i) for i, m, t in WHOLE_FILE])
def test_whole_file_problems_are_at_line_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "empty.yaml").write_text("")
    (inputs / "comments.yaml").write_text("# nothing\n\n# here\n")
    (inputs / "null.yaml").write_text("---\nnull\n...\n")
    assert callable(make)
    node = make(inputs)
    out = tmp_path / "out"
    code, stdout, stderr = _compile(capsys, node, SERVICES, out)
    assert (code, stdout, stderr) == (2, "", f"error: {node}:1: {message}\n")
    assert not out.exists()


def test_input_size_limit_is_exact_and_overridable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(source.MAX_INPUT_ENV, "1")
    data = SERVICES.read_bytes()
    padded = tmp_path / "padded.yaml"
    padded.write_bytes(data + b"#" * ((1 << 20) - len(data) - 1) + b"\n")  # exactly 1 MiB
    code, _, err = _compile(capsys, NODE, padded, tmp_path / "ok")
    assert code == 0, err
    with padded.open("ab") as f:
        f.write(b"\n")
    code, _, err = _compile(capsys, NODE, padded, tmp_path / "big")
    assert (code, err) == (
        2,
        f"error: {padded}:1: is larger than 1 MiB (the input limit; "
        "BPFGEN_MAX_INPUT_MB raises it)\n",
    )
    assert not (tmp_path / "big").exists()


def test_huge_integer_in_sync_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync rebuilds DIR first: bad input exits 2 there, DIR and the node untouched,
    and no lock file is left in the run directory (the namespace is not up)."""
    run_dir = tmp_path / "run"
    monkeypatch.setenv("BPFGEN_RUN_DIR", str(run_dir))  # never /run/bpfgen from a test
    build = tmp_path / "build"
    build.mkdir()
    (build / "manifest.json").write_text(
        json.dumps(
            {
                "schema": 1,
                "bpfgen_version": __version__,
                "build": "specialized",
                "inputs": {"node": str(NODE), "services": [str(SERVICES)]},
            }
        )
    )
    before = snapshot(build)
    bad = tmp_path / "svc.yaml"
    text = SERVICES.read_text()
    line = text[: text.index("port: 80\n")].count("\n") + 1
    bad.write_text(text.replace("port: 80\n", "port: 8" + "0" * 5000 + "\n", 1))
    code, stdout, stderr = run_cli(capsys, "sync", str(build), "--services", str(bad))
    assert (code, stdout) == (2, "")
    assert stderr == (
        f"error: {bad}:{line}: an integer of 5001 characters is too long (at most 100)\n"
    )
    assert snapshot(build) == before
    assert list(run_dir.iterdir()) == []

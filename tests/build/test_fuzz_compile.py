"""Fuzz `bpfgen compile` over mutated valid inputs (issue #13, (a)).

A seeded generator (deterministic: the same inputs on every run) mutates two valid
input pairs — the ipvs example and a bpf-mode node with socketLB, Maglev and the
bpf test services — in structure (keys deleted, added, containers swapped, lists
repeated), types (strings, numbers, booleans, null where others are), sizes
(integers of thousands of digits, long strings, lists a thousand times longer) and
text (tests/hostile.py's hostile strings in any field), written as YAML or JSON; and
odd files (empty, truncated, binary, UTF-16, a directory, missing, /dev/zero, a
FIFO with nobody writing is left out: it blocks by design, as `cat` would).

Every input goes through the CLI in process, `compile --no-verify`, with clang
replaced by a check of the rendered C (the kernel and clang are not the point
here; tests/build/test_c_injection.py compiles hostile text with clang). The
invariants:
- exit 0 or 2, never a traceback (any exception fails the test with the input);
- on 2, every stderr line is `error: FILE:LINE: ...` naming one of the inputs, and
  nothing was written: the --out directory is not created, no temporary is left;
- on 0, the rendered C has no input text outside comments (tests/hostile.py);
- each input takes less than PER_INPUT_S, the process stays under MAX_RSS.

BPFGEN_FUZZ_N inputs (default 300: `make test`); `make fuzz` runs 3,000.
BPFGEN_FUZZ_SEED changes the seed. A failure prints the seed and index of the input
and leaves it under the test's tmp_path.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from bpfgen import compiler
from bpfgen.inspect import ObjectInfo
from bpfgen.render import Rendered
from tests.bpf_inputs import node_config, services
from tests.build.helpers import run_cli
from tests.hostile import HOSTILE, MARK, code_outside_comments

ROOT = Path(__file__).resolve().parents[2]
COUNT = int(os.environ.get("BPFGEN_FUZZ_N", "300"))
SEED = int(os.environ.get("BPFGEN_FUZZ_SEED", "13"))
PER_INPUT_S = 20.0  # generous: the machine is shared; a typical input takes 10-100 ms
MAX_RSS = 2 << 30
BIG = "__BPFGEN_FUZZ_BIGINT__"  # replaced by a huge integer after serialization
_ERROR = re.compile(r"error: (?P<file>[^:]+):(?P<line>[1-9][0-9]*): \S")


def _bases() -> list[tuple[dict[str, Any], Any]]:
    ipvs_node = yaml.safe_load((ROOT / "examples" / "node.yaml").read_text())
    ipvs_services = yaml.safe_load((ROOT / "examples" / "services.yaml").read_text())
    bpf_node = node_config("maglev", 251, socket_lb=True)
    bpf_node["datapath"]["cgroup"] = "/sys/fs/cgroup/bpfgen-fuzz"
    return [(ipvs_node, ipvs_services), (bpf_node, services())]


# ----------------------------------------------------------------------------- mutations


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path in the tree, containers included (the root is ())."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


def _get(tree: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def _odd_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            lambda: rng.choice(HOSTILE),
            lambda: BIG,
            lambda: rng.choice([0, -1, 1, 65535, 65536, 2**32, 2**63, -(2**63), 10**30]),
            lambda: rng.choice([0.5, -0.0, 1e308, float("inf")]),
            lambda: rng.choice([True, False, None]),
            lambda: rng.choice(
                [
                    "",
                    " ",
                    "None",
                    "ClientIP",
                    "Local",
                    "TCP",
                    "SCTP",
                    "0x4000",
                    "2h4m",
                    "99999999999s",
                    "198.18.128.10",
                    "198.19.1.0/24",
                    "2001:db8::1",
                    "255.255.255.255",
                    "veth*",
                    "eth0",
                    "*",
                ]
            ),
            lambda: "x" * rng.choice([64, 254, 4096, 100_000]),
            lambda: [],
            lambda: {},
            lambda: [rng.choice(HOSTILE)],
            lambda: {rng.choice(HOSTILE): 1},
        ]
    )()


def _mutate(tree: Any, rng: random.Random) -> Any:
    """One structural, type, size or text mutation (in place when possible)."""
    paths = _paths(tree)
    path = rng.choice(paths)
    kind = rng.randrange(7)
    if not path:
        return _odd_value(rng) if kind == 0 else tree
    parent, key = _get(tree, path[:-1]), path[-1]
    value = parent[key]
    if kind <= 2:  # replace by an odd value (the most common: types, sizes, text)
        parent[key] = _odd_value(rng)
    elif kind == 3:  # delete
        del parent[key]
    elif kind == 4 and isinstance(value, dict):  # add a key, hostile or plausible
        value[rng.choice([*HOSTILE, "extra", "spec", "ports", "metadata", "<<"])] = _odd_value(rng)
    elif kind == 4 and isinstance(value, list) and value:  # repeat a list (size)
        parent[key] = value * rng.choice([2, 10, 1000])
    elif kind == 5 and isinstance(value, dict):  # a mapping where a list was, or a list
        parent[key] = list(value.values())
    elif kind == 5 and isinstance(value, list):
        parent[key] = {str(i): v for i, v in enumerate(value)}
    else:  # duplicate a sibling item in a list (defined twice, ports twice...)
        if isinstance(parent, list):
            parent.append(copy.deepcopy(value))
        else:
            parent[key] = copy.deepcopy(value)
    return tree


def _serialize(tree: Any, rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        text = json.dumps(tree, indent=rng.choice([None, 1]), allow_nan=True)
    else:
        text = (
            yaml.safe_dump_all(tree["items"], sort_keys=False)
            if (
                isinstance(tree, dict)
                and isinstance(tree.get("items"), list)
                and rng.random() < 0.3
            )
            else yaml.safe_dump(tree, sort_keys=False, allow_unicode=rng.random() < 0.5)
        )
    digits = rng.choice(["1" * 5000, "0x" + "f" * 5000, "9" * 101, "-" + "7" * 4400])
    text = text.replace(f'"{BIG}"', digits).replace(BIG, digits)
    return text.encode()


def _odd_file(root: Path, name: str, data: bytes, rng: random.Random) -> Path:
    """The file, or something else standing in for it."""
    path = root / name
    choice = rng.randrange(10)
    if choice == 0:
        path.write_bytes(data[: rng.randrange(len(data) + 1)])  # truncated
    elif choice == 1:
        path.write_bytes(
            rng.choice(
                [
                    b"",
                    b"\n",
                    b"# only a comment\n",
                    b"null\n",
                    b"---\n",
                    b"[]",
                    b"{}",
                    b"\x00\xff\xfe garbage",
                    b"\xef\xbb\xbf",
                ]
            )
        )
    elif choice == 2:
        path.write_bytes(data.decode("utf-8", "replace").encode("utf-16"))
    elif choice == 3:
        path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 512))))
    elif choice == 4:
        path.mkdir()
    elif choice == 5:
        pass  # missing
    elif choice == 6:
        return Path("/dev/zero")
    elif choice == 7:
        path.write_bytes(b"\t" + data)  # a tab where YAML refuses one
    else:
        cut = rng.randrange(len(data) + 1)
        path.write_bytes(
            data[:cut]
            + rng.choice([b"\x00", b"\t", b"*/", b"{", b"&a *a", b"!!python/object:os.system"])
            + data[cut:]
        )
    return path


def make_input(root: Path, seed: int, index: int) -> tuple[Path, Path]:
    """Input number `index` of the run `seed`: files under root."""
    rng = random.Random(f"{seed}:{index}")
    node, svcs = copy.deepcopy(rng.choice(_bases()))
    target = rng.random()
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if target < 0.45:
            node = _mutate(node, rng)
        elif target < 0.9:
            svcs = _mutate(svcs, rng)
        else:
            node, svcs = _mutate(node, rng), _mutate(svcs, rng)
    root.mkdir(parents=True)
    node_data, svcs_data = _serialize(node, rng), _serialize(svcs, rng)
    if rng.random() < 0.1:
        return _odd_file(root, "node.yaml", node_data, rng), _write(root, "svc.yaml", svcs_data)
    if rng.random() < 0.1:
        return _write(root, "node.yaml", node_data), _odd_file(root, "svc.yaml", svcs_data, rng)
    return _write(root, "node.yaml", node_data), _write(root, "svc.yaml", svcs_data)


def _write(root: Path, name: str, data: bytes) -> Path:
    (root / name).write_bytes(data)
    return root / name


# ----------------------------------------------------------------------------- the run


def _check_c(_: Path, rendered: Rendered, __: object, ___: object = None) -> list[object]:
    """Stands in for clang: the rendered C may hold input text only in comments."""
    for f in rendered.files:
        assert MARK not in code_outside_comments(f.text), f"{f.path}: input text outside a comment"
    return []


def _no_object(path: Path) -> ObjectInfo:
    return ObjectInfo(str(path), (), (), (), ())


def _no_check(*_: object) -> None:
    pass


@pytest.fixture
def without_clang(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "compile_objects", _check_c)
    monkeypatch.setattr(compiler, "inspect_object", _no_object)
    monkeypatch.setattr(compiler, "check_against_plan", _no_check)


def run_one(
    capsys: pytest.CaptureFixture[str], root: Path, node: Path, svc: Path
) -> tuple[int, str]:
    out = root / "out"
    before = sorted(p.name for p in root.iterdir())
    start = time.monotonic()
    code, _, err = run_cli(
        capsys,
        "compile",
        "-q",
        "--no-verify",
        "--node",
        str(node),
        "--services",
        str(svc),
        "--out",
        str(out),
    )
    elapsed = time.monotonic() - start
    assert elapsed < PER_INPUT_S, f"took {elapsed:.1f} s"
    assert code in (0, 2), err
    if code == 2:
        lines = err.splitlines()
        assert lines
        for line in lines:
            m = _ERROR.match(line)
            assert m is not None, f"not `error: FILE:LINE: ...`: {line!r}"
            assert m.group("file") in (str(node), str(svc)), line
        assert sorted(p.name for p in root.iterdir()) == before, "something was written"
    else:
        assert (out / "manifest.json").is_file()
    return code, err


def test_fuzz_compile(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    without_clang: None,
) -> None:
    monkeypatch.setenv("BPFGEN_MAX_INPUT_MB", "8")  # /dev/zero: 8 MiB read, not 64
    counts = {0: 0, 2: 0}
    start = time.monotonic()
    for index in range(COUNT):
        root = tmp_path / f"input-{index}"
        node, svc = make_input(root, SEED, index)
        try:
            code, _ = run_one(capsys, root, node, svc)
        except BaseException as e:
            raise AssertionError(f"fuzz input seed {SEED} index {index} ({root}): {e}") from e
        counts[code] += 1
        _cleanup(root)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert rss < MAX_RSS
    print(
        f"fuzz: {COUNT} inputs, seed {SEED}: {counts[0]} built, {counts[2]} refused, "
        f"{time.monotonic() - start:.1f} s, max RSS {rss >> 20} MiB"
    )
    # Both outcomes are exercised, the refusals most.
    assert counts[2] > COUNT // 2 and counts[0] > COUNT // 50


def _cleanup(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


#: The generator must stay deterministic: the same seed gives the same bytes.
def test_generator_is_deterministic(tmp_path: Path) -> None:
    def files(root: Path) -> list[tuple[str, bytes]]:
        return sorted((p.name, p.read_bytes() if p.is_file() else b"") for p in root.iterdir())

    for index in range(20):
        a, b = tmp_path / f"a{index}", tmp_path / f"b{index}"
        make_input(a, SEED, index)
        make_input(b, SEED, index)
        assert files(a) == files(b)

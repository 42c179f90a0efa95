"""`python -m bench.maglev`: Maglev disruption, measured on bpfgen.maglev's tables.

For each table size M (16381, 65521) and backend count N (2, 3, 5, 10, 50, 100),
builds the table of N unweighted backends ("198.19.x.y:8080", pod addresses of
the design's test range) and measures:

- build: the fastest of 3 builds, milliseconds (pure Python);
- balance: the largest and smallest number of slots a backend holds, over M/N;
- remove one: for R removed backends (all of them when N <= 10, else 10 spread
  over the sorted list), the table of the N-1 others is built from scratch and
  compared slot by slot with the old one by backend key: `moved` is the
  fraction of slots whose backend changed (ideal: the removed backend's share,
  1/N), `survivors` the fraction that moved from one surviving backend to
  another (ideal 0); mean and max over the R removals;
- flows: 100,000 random TCP 5-tuples towards one VIP, hashed with the session
  hash of docs/datapath.md "Hashing" (`tuple_hash`, seed 0) to slot
  `hash % M`: the fraction whose backend changed, mean over the R removals
  (equal to the slot fraction in expectation); and the same fraction when the
  hash seed changes too (seed 0 before, 1 after), as it would if the seed
  changed with the config: about 1 - 1/N, the table's stability lost;
- add one: a new backend joins the N: the fraction of slots that moved (ideal
  1/(N+1)) and of those that moved between the old backends (ideal 0).

A second table gives build times for larger N, unweighted and with weights
1..5. Prints Markdown; --json prints the raw figures instead.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from bpfgen.maglev import Backend, build_table
from bpfgen.refmodel.hashing import tuple_hash

SIZES = (16381, 65521)
COUNTS = (2, 3, 5, 10, 50, 100)
BUILD_COUNTS = (100, 300, 500)
FLOWS = 100_000
MAX_REMOVALS = 10


@dataclass
class Disruption:
    size: int
    backends: int
    build_ms: float
    share_max: float  # largest backend's slots / (M/N)
    share_min: float
    removals: int
    ideal_remove: float  # 1/N
    moved_mean: float
    moved_max: float
    survivors_mean: float
    survivors_max: float
    flows_moved_mean: float
    flows_moved_new_seed: float
    ideal_add: float  # 1/(N+1)
    add_moved: float
    add_survivors: float


@dataclass
class BuildTime:
    size: int
    backends: int
    unweighted_ms: float
    weighted_ms: float


def backend_keys(n: int) -> list[str]:
    return [f"198.19.{i // 250}.{i % 250 + 1}:8080" for i in range(n)]


def keyed_table(keys: Sequence[str], size: int, weights: Sequence[int] | None = None) -> list[str]:
    """The table as backend keys (comparable across backend sets)."""
    ws = weights or [1] * len(keys)
    table = build_table([Backend(k, w) for k, w in zip(keys, ws, strict=True)], size)
    return [keys[i] for i in table]


def build_ms(keys: Sequence[str], size: int, weights: Sequence[int] | None = None) -> float:
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        keyed_table(keys, size, weights)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def flow_slots(size: int, flows: int = FLOWS) -> Counter[tuple[int, int]]:
    """How many of `flows` random 5-tuples (10/8 clients to 198.18.128.10:80) hit each
    pair (slot under hash seed 0, slot under hash seed 1)."""
    rng = random.Random(1)
    vip = (198 << 24) | (18 << 16) | (128 << 8) | 10
    slots: Counter[tuple[int, int]] = Counter()
    for _ in range(flows):
        t = ((10 << 24) | rng.getrandbits(24), vip, rng.randrange(1024, 65536), 80, 6)
        slots[tuple_hash(0, *t) % size, tuple_hash(1, *t) % size] += 1
    return slots


def diff(old: Sequence[str], new: Sequence[str], gone: str | None, fresh: str | None) -> list[int]:
    """Slots whose backend changed from one backend to another that is in both sets."""
    return [
        s
        for s, (a, b) in enumerate(zip(old, new, strict=True))
        if a != b and a != gone and b != fresh
    ]


def measure(size: int, n: int, slots: Counter[tuple[int, int]]) -> Disruption:
    keys = backend_keys(n)
    old = keyed_table(keys, size)
    held = Counter(old)
    ideal_share = size / n
    step = max(1, n // MAX_REMOVALS)
    removed = keys[::step][:MAX_REMOVALS]
    moved: list[float] = []
    survivors: list[float] = []
    flows: list[float] = []
    reseeded: list[float] = []
    total = sum(slots.values())
    for gone in removed:
        new = keyed_table([k for k in keys if k != gone], size)
        changed = [s for s in range(size) if old[s] != new[s]]
        moved.append(len(changed) / size)
        survivors.append(len(diff(old, new, gone, None)) / size)
        flows.append(sum(c for (s, _), c in slots.items() if old[s] != new[s]) / total)
        reseeded.append(sum(c for (s, t), c in slots.items() if old[s] != new[t]) / total)
    fresh = "198.19.250.1:8080"
    added = keyed_table([*keys, fresh], size)
    add_changed = sum(a != b for a, b in zip(old, added, strict=True))
    return Disruption(
        size=size,
        backends=n,
        build_ms=build_ms(keys, size),
        share_max=max(held.values()) / ideal_share,
        share_min=min(held.values()) / ideal_share,
        removals=len(removed),
        ideal_remove=1 / n,
        moved_mean=statistics.fmean(moved),
        moved_max=max(moved),
        survivors_mean=statistics.fmean(survivors),
        survivors_max=max(survivors),
        flows_moved_mean=statistics.fmean(flows),
        flows_moved_new_seed=statistics.fmean(reseeded),
        ideal_add=1 / (n + 1),
        add_moved=add_changed / size,
        add_survivors=len(diff(old, added, None, fresh)) / size,
    )


def build_times(size: int, n: int) -> BuildTime:
    keys = backend_keys(n)
    return BuildTime(
        size=size,
        backends=n,
        unweighted_ms=build_ms(keys, size),
        weighted_ms=build_ms(keys, size, [1 + i % 5 for i in range(n)]),
    )


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(rows: Sequence[Disruption], builds: Sequence[BuildTime]) -> str:
    out = [
        "| M | N | build | share max / min (× M/N) | remove one: ideal 1/N | slots moved "
        "(mean / max) | flows moved | flows moved, new hash seed | between survivors "
        "(mean / max) | add one: ideal 1/(N+1) | slots moved | between old backends |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r.size} | {r.backends} | {r.build_ms:.1f} ms | {r.share_max:.3f} / "
            f"{r.share_min:.3f} | {pct(r.ideal_remove)} | {pct(r.moved_mean)} / "
            f"{pct(r.moved_max)} | {pct(r.flows_moved_mean)} | {pct(r.flows_moved_new_seed)} | "
            f"{pct(r.survivors_mean)} / "
            f"{pct(r.survivors_max)} | {pct(r.ideal_add)} | {pct(r.add_moved)} | "
            f"{pct(r.add_survivors)} |"
        )
    out += [
        "",
        "| M | N | build, unweighted | build, weights 1..5 |",
        "|---:|---:|---:|---:|",
    ]
    for b in builds:
        out.append(
            f"| {b.size} | {b.backends} | {b.unweighted_ms:.1f} ms | {b.weighted_ms:.1f} ms |"
        )
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.maglev", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    args = parser.parse_args(argv)
    rows: list[Disruption] = []
    builds: list[BuildTime] = []
    for size in SIZES:
        slots = flow_slots(size)
        rows += [measure(size, n, slots) for n in COUNTS]
    for size in SIZES:
        builds += [build_times(size, n) for n in BUILD_COUNTS]
    if args.json:
        print(
            json.dumps(
                {
                    "flows": FLOWS,
                    "disruption": [asdict(r) for r in rows],
                    "build": [asdict(b) for b in builds],
                },
                indent=2,
            )
        )
    else:
        print(markdown(rows, builds))
    return 0


if __name__ == "__main__":
    sys.exit(main())

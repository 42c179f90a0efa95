"""Maglev consistent hashing: the lookup table behind backend selection in `datapath.mode: bpf`.

The plan computes, ahead of time, a table of M slots (M prime) whose slot s holds
the backend that serves flows with `flow_hash % M == s`; the BPF program only
indexes it. A backend change moves few flows: removing one of N backends moves
its own ~M/N slots and very few others (docs/maglev.md has the measurements).

Algorithm: Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
Balancer", NSDI 2016, section 3.4 (Pseudocode 1). Each backend has a preference
list, the permutation `(offset + j * skip) mod M` for j = 0, 1, ..., M-1, with

    offset = h1(key) mod M
    skip   = h2(key) mod (M - 1) + 1

(skip is in 1..M-1, coprime to the prime M, so the list visits every slot once).
Backends take turns; at its turn a backend claims the first slot of its list not
yet claimed. The table is full after exactly M turns.

Identity: a backend is a stable string key (e.g. "198.19.1.21:8080"), so its
permutation depends on nothing but its own key and the seed. The turn order is
the backends sorted by key (UTF-8 bytes), not the order given, so the table is a
function of the *set* of backends; the returned indexes refer to the sequence
as given.

Hash: SipHash-2-4 (Aumasson & Bernstein 2012), 64-bit output, implemented here
and checked against the reference vectors; never Python's randomized `hash()`.
Key: k0 = 0x62706667656E2D6D ("bpfgen-m" read big-endian) XOR seed,
k1 = 0x61676C65762D7631 ("aglev-v1"); h1 = SipHash(k, b"\\x01" + key),
h2 = SipHash(k, b"\\x02" + key). The seed must be the same on every node and
must not change with the rest of the configuration (a new seed reshuffles every
table): it is not the per-config `BPFGEN_HASH_SEED` of docs/datapath.md.

Weights: a backend of weight w takes turns at a relative frequency w / max(w),
the weighted-turn-frequency scheme of Envoy (PR 2982) and Cilium, in this
formulation: in round n = 1, 2, ... a backend that has claimed c slots takes a
turn iff c * max_weight < w * n (so its k-th turn, k from 0, is in round
floor(k * max_weight / w) + 1); within a round, turns go in key order. Every
backend takes a turn in round 1 (each gets at least one slot); equal weights
reduce to the paper's plain round robin, and scaling all weights by a constant
changes nothing. A backend's share is proportional to its weight:
|slots - M * w / W| <= 2 + N * w / W, W the sum of the weights.
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bpfgen import model

__all__ = [
    "DEFAULT_SIZE",
    "RECOMMENDED_SLOTS_PER_BACKEND",
    "TABLE_SIZES",
    "Backend",
    "build_table",
    "is_prime",
    "permutation",
    "recommended_size",
    "siphash24",
    "table_bytes",
]

DEFAULT_SIZE = 16381  # as Cilium's default (bpf-lb-maglev-table-size)
# The primes offered as table sizes (Cilium's list): each just under a power of two.
TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
# M >= 100 * N keeps the extra disruption between surviving backends and the
# imbalance (1 slot in M/N) around 1 %; only M < N is an error.
RECOMMENDED_SLOTS_PER_BACKEND = 100

_M64 = 0xFFFFFFFFFFFFFFFF
_K0 = 0x62706667656E2D6D  # b"bpfgen-m"
_K1 = 0x61676C65762D7631  # b"aglev-v1"


@dataclass(frozen=True)
class Backend:
    """One backend of a Maglev table: a stable identity and an integer weight >= 1."""

    key: str
    weight: int = 1

    @classmethod
    def of(cls, endpoint: model.Backend, weight: int = 1) -> Backend:
        """The backend for an endpoint of the model: key "address:port"."""
        return cls(f"{endpoint.address}:{endpoint.port}", weight)


# ----------------------------------------------------------------------------- hash


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash24(k0: int, k1: int, data: bytes) -> int:
    """SipHash-2-4 of `data` under the 128-bit key (k0, k1) (little-endian halves)."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    tail = len(data) % 8
    words = [int.from_bytes(data[i : i + 8], "little") for i in range(0, len(data) - tail, 8)]
    last = int.from_bytes(data[len(data) - tail :], "little") | ((len(data) & 0xFF) << 56)
    for m in (*words, last):
        v3 ^= m
        rounds(2)
        v0 ^= m
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def permutation(key: str, size: int, seed: int = 0) -> tuple[int, int]:
    """(offset, skip) of a backend's preference list `(offset + j * skip) mod size`."""
    data = key.encode()
    k0 = _K0 ^ seed
    h1 = siphash24(k0, _K1, b"\x01" + data)
    h2 = siphash24(k0, _K1, b"\x02" + data)
    skip = h2 % (size - 1) + 1 if size > 1 else 1
    return h1 % size, skip


# ----------------------------------------------------------------------------- sizes


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    return all(n % d for d in range(3, math.isqrt(n) + 1, 2))


def recommended_size(n: int) -> int:
    """The smallest of TABLE_SIZES with at least RECOMMENDED_SLOTS_PER_BACKEND slots per backend."""
    for size in TABLE_SIZES:
        if size >= RECOMMENDED_SLOTS_PER_BACKEND * n:
            return size
    return TABLE_SIZES[-1]


# ----------------------------------------------------------------------------- table


def _validate(backends: Sequence[Backend], size: int, seed: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not is_prime(size):
        raise ValueError(f"maglev: table size {size!r} is not a prime (e.g. {DEFAULT_SIZE})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _M64:
        raise ValueError(f"maglev: seed {seed!r} is not an integer in 0..2**64-1")
    if len(backends) > size:
        raise ValueError(
            f"maglev: table size {size} is smaller than the {len(backends)} backends "
            f"(at least {RECOMMENDED_SLOTS_PER_BACKEND} slots per backend are recommended, "
            f"e.g. {recommended_size(len(backends))})"
        )
    seen: set[str] = set()
    for b in backends:
        if not isinstance(b.key, str) or not b.key:
            raise ValueError(f"maglev: backend key {b.key!r} is not a non-empty string")
        if b.key in seen:
            raise ValueError(f"maglev: duplicate backend {b.key!r}")
        seen.add(b.key)
        w = b.weight
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ValueError(f"maglev: backend {b.key!r}: weight {w!r} is not an integer >= 1")


def _weighted_turns(weights: Sequence[int]) -> Iterator[int]:
    """Turn order (positions into `weights`), forever: see the module docstring."""
    top = max(weights)
    heap = [(1, i) for i in range(len(weights))]  # (round of the next turn, position)
    taken = [0] * len(weights)
    while True:
        _, i = heap[0]
        yield i
        taken[i] += 1
        heapq.heapreplace(heap, (taken[i] * top // weights[i] + 1, i))


def build_table(
    backends: Sequence[Backend], size: int = DEFAULT_SIZE, *, seed: int = 0
) -> tuple[int, ...]:
    """The Maglev lookup table: for each of the `size` slots, an index into `backends`.

    Raises ValueError for a size that is not prime or smaller than the number of
    backends, a seed outside 0..2**64-1, duplicate or empty keys, or a weight that
    is not an integer >= 1. No backends: the empty tuple (the program drops).
    """
    return tuple(_fill(backends, size, seed))


def table_bytes(backends: Sequence[Backend], size: int = DEFAULT_SIZE, *, seed: int = 0) -> bytes:
    """`build_table` as the program reads it: `size` little-endian `__u16`, 2 bytes a slot.

    For tables that go into a map: 2 * size bytes instead of a tuple of `size` Python
    ints (8 bytes a slot, plus the tuple), the form a plan can hold many of.
    """
    table = array("H", _fill(backends, size, seed))
    if sys.byteorder != "little":
        table.byteswap()
    return table.tobytes()


def _fill(backends: Sequence[Backend], size: int, seed: int) -> list[int]:
    _validate(backends, size, seed)
    if not backends:
        return []
    order = sorted(range(len(backends)), key=lambda i: backends[i].key.encode())
    offsets: list[int] = []
    skips: list[int] = []
    for i in order:
        offset, skip = permutation(backends[i].key, size, seed)
        offsets.append(offset)
        skips.append(skip)
    weights = [backends[i].weight for i in order]
    turns: Iterable[int]
    if len(set(weights)) == 1:
        turns = itertools.cycle(range(len(order)))
    else:
        turns = _weighted_turns(weights)

    table = [-1] * size
    pos = offsets  # per backend: the last slot looked at in its list
    for filled, r in enumerate(turns, 1):
        p = pos[r]
        skip = skips[r]
        while table[p] >= 0:
            p += skip
            if p >= size:
                p -= size
        table[p] = order[r]
        pos[r] = p
        if filled == size:
            break
    return table

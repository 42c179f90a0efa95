"""Internet checksums (RFC 1071), from scratch and updated incrementally (RFC 1624).

The model computes every checksum of a packet it emits from scratch when the input's
checksum was valid, and also by the incremental rule the kernel's csum helpers use;
the two must agree (`ChecksumDisagreement` otherwise). When the input's checksum was
wrong, only the incremental rule says what the program writes: the output is then
wrong by the same amount, which from-scratch arithmetic cannot reproduce.

Incremental rule (the kernel's csum_replace4 / inet_proto_csum_replace4, and RFC 1624
eqn. 3): HC' = ~(~HC + ~m + m'), one's-complement sums of 16-bit words. The kernel's
accumulator is never zero, so the folded sum lies in 1..0xffff and the result in
0..0xfffe: a field of 0xffff (negative zero) becomes 0x0000 after any update.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ChecksumDisagreement",
    "checksum",
    "incremental",
    "ones_sum",
    "pseudo_header",
    "valid",
    "words",
]


class ChecksumDisagreement(AssertionError):
    """The model's two ways of computing one checksum differ: a bug in the model."""


def ones_sum(data: bytes, initial: int = 0) -> int:
    """The 16-bit one's-complement sum of `data` (odd length: padded with a zero byte)."""
    if len(data) % 2:
        data += b"\0"
    total = initial + sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes) -> int:
    """The checksum to store for `data` (whose checksum field is zero): ~sum."""
    return ~ones_sum(data) & 0xFFFF


def valid(data: bytes) -> bool:
    """`data` including its checksum field sums to 0xffff (negative zero)."""
    return ones_sum(data) == 0xFFFF


def words(value: int, size: int) -> list[int]:
    """The 16-bit big-endian words of a `size`-byte field holding `value`."""
    raw = value.to_bytes(size, "big")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, size, 2)]


def incremental(old_checksum: int, old_words: Iterable[int], new_words: Iterable[int]) -> int:
    """HC' = ~(~HC + ~m + m') over every changed word, as the kernel computes it."""
    total = (~old_checksum & 0xFFFF) + sum(~w & 0xFFFF for w in old_words) + sum(new_words)
    folded = (total - 1) % 0xFFFF + 1  # 1..0xffff: the kernel's accumulator is never zero
    return ~folded & 0xFFFF


def pseudo_header(saddr: int, daddr: int, proto: int, length: int) -> bytes:
    """The IPv4 pseudo-header that TCP and UDP checksums cover."""
    return (
        saddr.to_bytes(4, "big")
        + daddr.to_bytes(4, "big")
        + bytes([0, proto])
        + (length & 0xFFFF).to_bytes(2, "big")
    )

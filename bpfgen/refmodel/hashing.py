"""The session hash of docs/datapath.md "Hashing", bit for bit.

Addresses and ports enter as the values a little-endian CPU loads from the packet:
the 4 address bytes read as a little-endian u32, the 2 port bytes as a little-endian
u16. The model keeps addresses and ports as host-order integers (the numbers a
person reads), so they are converted back to wire bytes first.
"""

from __future__ import annotations

__all__ = ["candidate_port", "mix32", "tuple_hash"]

_M32 = 0xFFFFFFFF


def mix32(h: int) -> int:
    """murmur3's 32-bit finalizer."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def _le32(addr: int) -> int:
    return int.from_bytes(addr.to_bytes(4, "big"), "little")


def _le16(port: int) -> int:
    return int.from_bytes(port.to_bytes(2, "big"), "little")


def tuple_hash(seed: int, saddr: int, daddr: int, sport: int, dport: int, proto: int) -> int:
    h = seed & _M32
    h = mix32(h ^ _le32(saddr))
    h = mix32(h ^ _le32(daddr))
    h = mix32(h ^ ((_le16(sport) << 16) | _le16(dport)))
    return mix32(h ^ proto)


def candidate_port(h: int, attempt: int, port_min: int, port_count: int) -> int:
    """The SNAT port tried at `attempt` (0..127) for a flow of hash `h`, host order."""
    return port_min + mix32((h + attempt) & _M32) % port_count

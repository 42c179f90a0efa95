"""Building Ethernet/IPv4 frames byte by byte, with correct checksums unless told otherwise.

    frame = ethernet(ipv4(src, dst, IPPROTO_TCP, tcp(src, dst, 40000, 80, flags=TCP_SYN)))

Addresses are host-order integers (or anything `int()` takes, such as IPv4Address).
Every "checksum" argument left as None is computed; an int is stored as given, which
is how tests make packets with bad checksums.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from bpfgen.refmodel.checksum import checksum, pseudo_header
from bpfgen.refmodel.ipvs_config import IPPROTO_TCP, IPPROTO_UDP
from bpfgen.refmodel.packet import ETH_P_IP

__all__ = ["ethernet", "icmp", "ipv4", "tcp", "udp"]

Address = int | IPv4Address

DST_MAC = bytes.fromhex("020000000002")
SRC_MAC = bytes.fromhex("020000000001")


def ethernet(payload: bytes, ethertype: int = ETH_P_IP, *, vlan: int | None = None) -> bytes:
    """An Ethernet header (locally administered MACs), optionally one 802.1Q tag."""
    tag = b"" if vlan is None else struct.pack("!HH", 0x8100, vlan)
    return DST_MAC + SRC_MAC + tag + struct.pack("!H", ethertype) + payload


def ipv4(
    saddr: Address,
    daddr: Address,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    tos: int = 0,
    ident: int = 0,
    frag: int = 0,  # flags and fragment offset: 0x4000 DF, 0x2000 MF, offset in 8-byte units
    options: bytes = b"",
    total_length: int | None = None,
    checksum_value: int | None = None,
) -> bytes:
    if len(options) % 4 or len(options) > 40:
        raise ValueError(f"IPv4 options must be a multiple of 4 bytes, at most 40: {len(options)}")
    ihl = 5 + len(options) // 4
    length = 4 * ihl + len(payload) if total_length is None else total_length
    header = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            tos,
            length & 0xFFFF,
            ident,
            frag,
            ttl,
            proto,
            0,
            int(saddr).to_bytes(4, "big"),
            int(daddr).to_bytes(4, "big"),
        )
        + options
    )
    value = checksum(bytes(header)) if checksum_value is None else checksum_value
    header[10:12] = value.to_bytes(2, "big")
    return bytes(header) + payload


def _l4_checksum(saddr: Address, daddr: Address, proto: int, segment: bytes) -> int:
    return checksum(pseudo_header(int(saddr), int(daddr), proto, len(segment)) + segment)


def tcp(
    saddr: Address,
    daddr: Address,
    sport: int,
    dport: int,
    *,
    flags: int,
    seq: int = 1,
    ack: int = 0,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
    checksum_value: int | None = None,
) -> bytes:
    if len(options) % 4 or len(options) > 40:
        raise ValueError(f"TCP options must be a multiple of 4 bytes, at most 40: {len(options)}")
    offset = 5 + len(options) // 4
    segment = bytearray(
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0)
        + options
        + payload
    )
    value = (
        _l4_checksum(saddr, daddr, IPPROTO_TCP, bytes(segment))
        if checksum_value is None
        else checksum_value
    )
    segment[16:18] = value.to_bytes(2, "big")
    return bytes(segment)


def udp(
    saddr: Address,
    daddr: Address,
    sport: int,
    dport: int,
    *,
    payload: bytes = b"",
    checksum_value: int | None = None,  # 0: no checksum
) -> bytes:
    datagram = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)
    if checksum_value is None:
        value = _l4_checksum(saddr, daddr, IPPROTO_UDP, bytes(datagram)) or 0xFFFF
    else:
        value = checksum_value
    datagram[6:8] = value.to_bytes(2, "big")
    return bytes(datagram)


def icmp(
    icmp_type: int,
    code: int,
    rest: int = 0,  # echo: identifier << 16 | sequence
    *,
    payload: bytes = b"",
    checksum_value: int | None = None,
) -> bytes:
    message = bytearray(struct.pack("!BBHI", icmp_type, code, 0, rest) + payload)
    value = checksum(bytes(message)) if checksum_value is None else checksum_value
    message[2:4] = value.to_bytes(2, "big")
    return bytes(message)

"""Frames for the model-equivalence tests of both modes: random headers and payloads
aimed at given tuples, deliberate oddities (mutate), and scapy's independent
verdict on checksums."""

from __future__ import annotations

import random

from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.l2 import Ether
from scapy.utils import checksum as scapy_checksum

from bpfgen.refmodel import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP
from bpfgen.refmodel.frames import ethernet, icmp, ipv4, tcp, udp

TCP_COMBOS = (0x02, 0x12, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14, 0x19, 0x03, 0x06, 0x00, 0x29)
C_SEQ, B_SEQ = 1000, 5000  # the sequence numbers random segments mostly start from
FIN_ACKS = (0, C_SEQ + 1, B_SEQ + 1, C_SEQ + 2, B_SEQ + 2)  # planted sessions' fin_ack


def l4_bytes(
    rng: random.Random, proto: int, saddr: int, daddr: int, sport: int, dport: int
) -> bytes:
    """A TCP/UDP header and payload, or an ICMP echo (request when sport is the identifier)."""
    payload = rng.randbytes(rng.choice([0, 0, 1, 7, 32]))
    if proto == IPPROTO_TCP:
        flags = rng.randrange(256) if rng.random() < 0.3 else rng.choice(TCP_COMBOS)
        options = b""
        if rng.random() < 0.3:
            options = rng.choice(
                [
                    bytes.fromhex("020405b4"),
                    bytes.fromhex("01010402"),
                    rng.randbytes(4 * rng.randint(1, 10)),
                ]
            )
        # Sequence numbers mostly from a small set, so that a FIN's end (seq + payload +
        # 1) and a later ACK meet: the close steps of docs/datapath.md "The TCP session
        # lifecycle" (FIN_ACKED, CLOSED, released) are reached by random packets too.
        seq = rng.choice([C_SEQ, B_SEQ, C_SEQ + 1, B_SEQ + 1, rng.getrandbits(32)])
        ack = rng.choice([C_SEQ + 1, B_SEQ + 1, C_SEQ + 2, B_SEQ + 2, rng.getrandbits(32)])
        return tcp(
            saddr,
            daddr,
            sport,
            dport,
            flags=flags,
            seq=seq,
            ack=ack,
            options=options,
            payload=payload,
        )
    if proto == IPPROTO_UDP:
        return udp(
            saddr,
            daddr,
            sport,
            dport,
            payload=payload,
            checksum_value=0 if rng.random() < 0.15 else None,
        )
    if sport or not dport:  # echo request: the identifier is the source "port"
        return icmp(8, 0, sport << 16 | rng.randrange(65536), payload=payload)
    return icmp(0, 0, dport << 16 | rng.randrange(65536), payload=payload)


def frame_for(
    rng: random.Random, proto: int, saddr: int, daddr: int, sport: int, dport: int
) -> bytes:
    return ethernet(
        ipv4(
            saddr,
            daddr,
            proto,
            l4_bytes(rng, proto, saddr, daddr, sport, dport),
            ttl=rng.choice([64, 64, 64, 1, 0, 255]),
            ident=rng.randrange(65536),
            frag=rng.choice([0, 0, 0x4000]),
        )
    )


def _set(frame: bytes, offset: int, data: bytes) -> bytes:
    return frame[:offset] + data + frame[offset + len(data) :]


def _ihl(frame: bytes) -> int:
    return frame[14] & 0x0F if len(frame) > 14 else 0


def mutate(rng: random.Random, frame: bytes) -> bytes:
    """One deliberate oddity: what real networks and attackers send."""
    m = rng.randrange(16)
    if m == 0 and _ihl(frame) == 5:  # IP options (IHL > 5), checksum kept right
        opts = rng.choice([b"\x01" * 4, b"\x94\x04\x00\x00", rng.randbytes(4 * rng.randint(1, 10))])
        ip = bytearray(frame[14:34] + opts + frame[34:])
        ip[0] = 0x40 | (5 + len(opts) // 4)
        ip[2:4] = (int.from_bytes(ip[2:4], "big") + len(opts)).to_bytes(2, "big")
        ip[10:12] = b"\0\0"
        ip[10:12] = scapy_checksum(bytes(ip[: 4 * (ip[0] & 0x0F)])).to_bytes(2, "big")
        return frame[:14] + bytes(ip)
    if m == 1:  # a fragment: first (MF), middle or last (offset)
        frag = rng.choice([0x2000, 0x2000 | rng.randrange(1, 0x2000), rng.randrange(1, 0x2000)])
        return _set(frame, 20, frag.to_bytes(2, "big"))
    if m == 2:  # bad IPv4 header checksum
        return _set(frame, 24, bytes([frame[24] ^ rng.randrange(1, 256)]))
    if m == 3 and len(frame) >= 14 + 4 * _ihl(frame) + 8:  # bad L4 checksum (or UDP 0)
        l4 = 14 + 4 * _ihl(frame)
        field = {IPPROTO_TCP: 16, IPPROTO_UDP: 6, IPPROTO_ICMP: 2}.get(frame[23], 2)
        if l4 + field + 2 <= len(frame):
            value = rng.choice([0, 0xFFFF, rng.randrange(65536)])
            return _set(frame, l4 + field, value.to_bytes(2, "big"))
        return frame
    if m == 4:  # truncated anywhere
        return frame[: rng.randrange(14, len(frame) + 1)]
    if m == 5:  # Ethernet padding or a wrong total length
        if rng.random() < 0.5:
            return frame + bytes(rng.randint(1, 20))
        return _set(frame, 16, rng.randrange(65536).to_bytes(2, "big"))
    if m == 6:  # VLAN tag, IPv6, ARP, anything
        if rng.random() < 0.4:
            return (
                frame[:12]
                + bytes.fromhex("8100")
                + rng.randrange(4096).to_bytes(2, "big")
                + frame[12:]
            )
        ethertype = rng.choice([0x86DD, 0x0806, 0x88A8, rng.randrange(65536)])
        return _set(frame, 12, ethertype.to_bytes(2, "big")) + bytes(40)
    if m == 7:  # not IPv4, or IHL < 5
        return _set(frame, 14, bytes([rng.choice([0x65, 0x45 & 0xF0 | rng.randrange(5), 0x00])]))
    if m == 8 and len(frame) >= 34:  # other protocols
        return _set(frame, 23, bytes([rng.choice([47, 132, 50, 0, 255, 58])]))
    if m == 9 and len(frame) >= 42 and frame[23] == IPPROTO_ICMP:  # other ICMP types/codes
        l4 = 14 + 4 * _ihl(frame)
        return _set(frame, l4, bytes([rng.choice([3, 11, 5, 13, 8, 0]), rng.choice([0, 1, 3])]))
    if m == 10:  # random bytes after a valid Ethernet/IPv4 start
        return frame[:14] + rng.randbytes(rng.randrange(0, 80))
    if m == 11:
        return rng.randbytes(rng.randrange(14, 90))
    if m == 12 and len(frame) >= 34:  # TTL 0/1 and other header bits, checksum right
        ip = bytearray(frame[14 : 14 + 4 * _ihl(frame)])
        if len(ip) >= 20:
            ip[8] = rng.choice([0, 1])
            ip[1] = rng.randrange(256)
            ip[10:12] = b"\0\0"
            ip[10:12] = scapy_checksum(bytes(ip)).to_bytes(2, "big")
            return frame[:14] + bytes(ip) + frame[14 + len(ip) :]
    return frame


def scapy_checksums_valid(frame: bytes) -> bool | None:
    """Whether the IPv4 and L4 checksums are right, judged by scapy; None: not applicable
    (not an unfragmented IPv4 TCP/UDP/ICMP packet whose total length fits the frame)."""
    packet = Ether(frame)
    if IP not in packet:
        return None
    ip = packet[IP]
    raw_ip = frame[14:]
    header_len = 4 * ip.ihl
    if (
        ip.version != 4
        or ip.ihl < 5
        or ip.flags.MF
        or ip.frag
        or ip.len > len(raw_ip)
        or ip.len < header_len + 8
        or len(raw_ip) < header_len
    ):
        return None
    if scapy_checksum(raw_ip[:header_len]) != 0:
        return False
    segment = raw_ip[header_len : ip.len]
    if ip.proto == IPPROTO_TCP and TCP in packet and len(segment) >= 20:
        return in4_chksum(IPPROTO_TCP, ip, segment) == 0
    if ip.proto == IPPROTO_UDP and UDP in packet:
        return segment[6:8] == b"\0\0" or in4_chksum(IPPROTO_UDP, ip, segment) == 0
    if ip.proto == IPPROTO_ICMP and ICMP in packet:
        return scapy_checksum(segment) == 0
    return None

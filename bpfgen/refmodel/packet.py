"""Parsing an Ethernet frame as every program does (docs/datapath.md "Parsing")."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bpfgen.refmodel.ipvs_config import IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, ModelConfig

__all__ = [
    "ETH_HLEN",
    "ETH_P_IP",
    "ICMP_ECHO",
    "ICMP_ECHOREPLY",
    "IP_MF",
    "IP_OFFSET",
    "TCP_ACK",
    "TCP_FIN",
    "TCP_RST",
    "TCP_SYN",
    "Kind",
    "Parsed",
    "parse",
]

ETH_HLEN = 14
ETH_P_IP = 0x0800
IP_MF = 0x2000
IP_OFFSET = 0x1FFF
ICMP_ECHOREPLY = 0
ICMP_ECHO = 8
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10

_L4_HEADER = {IPPROTO_TCP: 20, IPPROTO_UDP: 8, IPPROTO_ICMP: 8}


class Kind(enum.Enum):
    NOT_OURS = "not ours"
    MALFORMED = "malformed"
    FRAGMENT = "fragment"
    OURS = "ours"


@dataclass(frozen=True)
class Parsed:
    kind: Kind
    ihl: int = 0
    l4: int = 0  # offset of the L4 header in the frame
    proto: int = 0
    saddr: int = 0
    daddr: int = 0
    sport: int = 0  # ICMP echo request: the identifier
    dport: int = 0  # ICMP echo reply: the identifier
    icmp_type: int = -1
    tcp_flags: int = 0
    # TCP, mod 2^32: the acknowledgment number, and the number that acknowledges this
    # segment (seq + payload by the IP total length + SYN + FIN).
    tcp_ack: int = 0
    tcp_end: int = 0

    @property
    def l4_header_len(self) -> int:
        return _L4_HEADER[self.proto]


def _u16(frame: bytes, offset: int) -> int:
    return int.from_bytes(frame[offset : offset + 2], "big")


def parse(config: ModelConfig, frame: bytes) -> Parsed:
    # 1. Ethernet, IPv4 only (a VLAN tag is another ethertype).
    if len(frame) < ETH_HLEN or _u16(frame, 12) != ETH_P_IP:
        return Parsed(Kind.NOT_OURS)
    # 2. The fixed IPv4 header; IHL > 5 is fine, the total length is not checked.
    if len(frame) - ETH_HLEN < 20:
        return Parsed(Kind.MALFORMED)
    version, ihl = frame[ETH_HLEN] >> 4, frame[ETH_HLEN] & 0x0F
    if version != 4 or ihl < 5:
        return Parsed(Kind.MALFORMED)
    # 3. Fragments.
    frag = _u16(frame, ETH_HLEN + 6)
    if frag & IP_MF or frag & IP_OFFSET:
        return Parsed(Kind.FRAGMENT, ihl=ihl)
    # 4. L4 header.
    proto = frame[ETH_HLEN + 9]
    l4 = ETH_HLEN + 4 * ihl
    need = _L4_HEADER.get(proto)
    if need is None:
        return Parsed(Kind.NOT_OURS)
    if len(frame) < l4 + need:
        return Parsed(Kind.MALFORMED)
    saddr = int.from_bytes(frame[ETH_HLEN + 12 : ETH_HLEN + 16], "big")
    daddr = int.from_bytes(frame[ETH_HLEN + 16 : ETH_HLEN + 20], "big")
    icmp_type, tcp_flags, tcp_ack, tcp_end = -1, 0, 0, 0
    # 5. The tuple.
    if proto == IPPROTO_ICMP:
        icmp_type, code, ident = frame[l4], frame[l4 + 1], _u16(frame, l4 + 4)
        if code != 0 or icmp_type not in (ICMP_ECHO, ICMP_ECHOREPLY):
            return Parsed(Kind.NOT_OURS)
        sport, dport = (ident, 0) if icmp_type == ICMP_ECHO else (0, ident)
    else:
        sport, dport = _u16(frame, l4), _u16(frame, l4 + 2)
        if proto == IPPROTO_TCP:
            tcp_flags = frame[l4 + 13]
            tcp_ack = int.from_bytes(frame[l4 + 8 : l4 + 12], "big")
            seq = int.from_bytes(frame[l4 + 4 : l4 + 8], "big")
            payload = _u16(frame, ETH_HLEN + 2) - 4 * ihl - 4 * (frame[l4 + 12] >> 4)
            counted = bool(tcp_flags & TCP_SYN) + bool(tcp_flags & TCP_FIN)
            tcp_end = (seq + payload + counted) & 0xFFFFFFFF
    # 6. A protocol path compiled out.
    if not config.proto_enabled(proto):
        return Parsed(Kind.NOT_OURS)
    return Parsed(
        Kind.OURS,
        ihl=ihl,
        l4=l4,
        proto=proto,
        saddr=saddr,
        daddr=daddr,
        sport=sport,
        dport=dport,
        icmp_type=icmp_type,
        tcp_flags=tcp_flags,
        tcp_ack=tcp_ack,
        tcp_end=tcp_end,
    )

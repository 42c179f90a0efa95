"""ctypes mirrors of the C structs in templates/include/bpfgen_types.h: the one definition
of the maps' keys and values and of bpfgen_cfg, for the compiler and the node.

Field names and order are the C ones; tests/build checks sizes and offsets
against the BTF of a compiled object. Addresses and ports are stored in
network byte order, as the kernel sees them.
"""

from __future__ import annotations

import ctypes
import sys
from ipaddress import IPv4Address

MAX_NODE_ADDRS = 8  # BPFGEN_MAX_NODE_ADDRS


class Tuple4(ctypes.Structure):
    _fields_ = [
        ("saddr", ctypes.c_uint8 * 4),
        ("daddr", ctypes.c_uint8 * 4),
        ("sport", ctypes.c_uint8 * 2),
        ("dport", ctypes.c_uint8 * 2),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


class SnatEntry(ctypes.Structure):
    _fields_ = [
        ("last_seen_ns", ctypes.c_uint64),
        ("nat_addr", ctypes.c_uint8 * 4),
        ("nat_port", ctypes.c_uint8 * 2),
        ("flags", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("fin_ack", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


class RsnatEntry(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8 * 4),
        ("port", ctypes.c_uint8 * 2),
        ("pad", ctypes.c_uint16),
    ]


class FrontendKey(ctypes.Structure):
    _fields_ = [
        ("addr", ctypes.c_uint8 * 4),
        ("port", ctypes.c_uint8 * 2),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
    ]


class FrontendValue(ctypes.Structure):
    _fields_ = [("masq", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class SrcRangeKey(ctypes.Structure):
    """bpfgen_src_ranges (LPM trie): prefixlen counts bits of everything after it, so
    64 + n matches (vip, port, proto) exactly and the first n bits of saddr."""

    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("vip", ctypes.c_uint8 * 4),
        ("port", ctypes.c_uint8 * 2),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("saddr", ctypes.c_uint8 * 4),
    ]


class SrcRangeValue(ctypes.Structure):
    _fields_ = [("allow", ctypes.c_uint32)]


class Config(ctypes.Structure):
    _fields_ = [
        ("node_addrs", (ctypes.c_uint8 * 4) * MAX_NODE_ADDRS),
        ("n_node_addrs", ctypes.c_uint32),
        ("cluster_pod_net", ctypes.c_uint8 * 4),
        ("cluster_pod_mask", ctypes.c_uint8 * 4),
        ("snat_port_min", ctypes.c_uint32),
        ("snat_port_count", ctypes.c_uint32),
        ("mark", ctypes.c_uint32),
        ("hash_seed", ctypes.c_uint32),
        ("proto_tcp", ctypes.c_uint8),
        ("proto_udp", ctypes.c_uint8),
        ("proto_icmp", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("service_net", ctypes.c_uint8 * 4),
        ("service_mask", ctypes.c_uint8 * 4),
        ("timeout_tcp_established_ns", ctypes.c_uint64),
        ("timeout_tcp_transitory_ns", ctypes.c_uint64),
        ("timeout_udp_ns", ctypes.c_uint64),
        ("timeout_icmp_ns", ctypes.c_uint64),
        ("timeout_tcp_time_wait_ns", ctypes.c_uint64),
        ("timeout_tcp_close_ns", ctypes.c_uint64),
        ("selection_seed", ctypes.c_uint32),
        ("pad2", ctypes.c_uint32),
    ]


# bpf mode (docs/datapath-bpf.md): the session maps with the DNAT half, and the
# frontend, backend and Maglev tables of map builds.


class NatEntry(SnatEntry):
    """bpfgen_nat_v4 value: SnatEntry's fields (nat_addr/nat_port 0: no SNAT), then these."""

    _fields_ = [
        ("backend_addr", ctypes.c_uint8 * 4),
        ("backend_port", ctypes.c_uint8 * 2),
        ("backend_gen", ctypes.c_uint16),
    ]


class RnatEntry(RsnatEntry):
    """bpfgen_rnat_v4 value: the client (RsnatEntry's fields), then the frontend."""

    _fields_ = [
        ("vip", ctypes.c_uint8 * 4),
        ("vip_port", ctypes.c_uint8 * 2),
        ("pad2", ctypes.c_uint16),
    ]


class SvcValue(ctypes.Structure):
    """bpfgen_svc_frontends value (key: FrontendKey)."""

    _fields_ = [
        ("id", ctypes.c_uint32),
        ("n_backends", ctypes.c_uint16),
        ("masq", ctypes.c_uint8),
        ("pad", ctypes.c_uint8),
        ("first", ctypes.c_uint32),
        ("table", ctypes.c_uint32),
        ("affinity_s", ctypes.c_uint32),
        ("affinity_id", ctypes.c_uint32),
        ("pod_vip", ctypes.c_uint8 * 4),
        ("pod_port", ctypes.c_uint8 * 2),
        ("pad2", ctypes.c_uint16),
    ]


class AffinityKey(ctypes.Structure):
    """bpfgen_affinity_v4 key (sessionAffinity: ClientIP)."""

    _fields_ = [("client", ctypes.c_uint32), ("affinity_id", ctypes.c_uint32)]


class AffinityEntry(ctypes.Structure):
    _fields_ = [
        ("last_seen_ns", ctypes.c_uint64),
        ("addr", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class SockRevKey(ctypes.Structure):
    """bpfgen_sock_rev_v4 key (datapath.socketLB): the socket and the backend it was given."""

    _fields_ = [
        ("cookie", ctypes.c_uint64),
        ("addr", ctypes.c_uint32),
        ("port", ctypes.c_uint16),
        ("pad", ctypes.c_uint16),
    ]


class SockRevValue(ctypes.Structure):
    _fields_ = [("vip", ctypes.c_uint32), ("vip_port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class DropEvent(ctypes.Structure):
    """A record of the ring buffer bpfgen_drops (struct bpfgen_drop_event): host order but
    the tuple, which is as the packet had it."""

    _fields_ = [
        ("ns", ctypes.c_uint64),
        ("reason", ctypes.c_uint32),
        ("program", ctypes.c_uint32),
        ("t", Tuple4),
    ]


#: IP protocol numbers the datapath translates, by name (tuples shown to people).
IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP"}

#: The drop notifications' ring buffer (bpfgen_maps.h; plan/shared.py sizes it).
DROPS_MAP = "bpfgen_drops"
#: Ring buffer maps -> (the C struct of a record, its mirror). A ring holds no BTF type
#: (a record is only a reserved pointer's), so tests/build/test_layouts.py checks these
#: against the objects' DWARF instead.
RING_RECORDS: dict[str, tuple[str, type[ctypes.Structure]]] = {
    DROPS_MAP: ("bpfgen_drop_event", DropEvent),
}


class BackendKey(ctypes.Structure):
    _fields_ = [("frontend", ctypes.c_uint32), ("index", ctypes.c_uint32)]


class BackendMember(ctypes.Structure):
    """bpfgen_svc_members key: is addr:port still a backend of the frontend?"""

    _fields_ = [
        ("frontend", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 4),
        ("port", ctypes.c_uint8 * 2),
        ("pad", ctypes.c_uint16),
    ]


class BackendValue(ctypes.Structure):
    """struct bpfgen_backend: bpfgen_svc_backends value, and the .rodata arrays' element."""

    _fields_ = [
        ("addr", ctypes.c_uint8 * 4),
        ("port", ctypes.c_uint8 * 2),
        ("pad", ctypes.c_uint16),
    ]


def maglev_row(size: int) -> type[ctypes.Structure]:
    """struct bpfgen_maglev_row of a build whose Maglev tables have `size` slots (M): the
    bpfgen_svc_maglev value, one frontend's whole table (maglev.table_bytes fills it)."""
    return type("MaglevRow", (ctypes.Structure,), {"_fields_": [("slot", ctypes.c_uint16 * size)]})


# The program contexts BPF_PROG_TEST_RUN takes (testrun.py): the UAPI's structs.


class XdpMd(ctypes.Structure):
    """struct xdp_md."""

    _fields_ = [
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("rx_queue_index", ctypes.c_uint32),
        ("egress_ifindex", ctypes.c_uint32),
    ]


class SkBuffHead(ctypes.Structure):
    """The first fields of struct __sk_buff, up to the mark test runs set and read."""

    _fields_ = [("len", ctypes.c_uint32), ("pkt_type", ctypes.c_uint32), ("mark", ctypes.c_uint32)]


#: sizeof(struct __sk_buff): 192 bytes since 5.16 (hwtstamp); a test run's ctx is all of it.
SK_BUFF_SIZE = 192

#: C struct name -> mirror: every struct a map of either mode holds, bpfgen_cfg's, and the
#: contexts. tests/build/test_layouts.py checks each against the BTF of compiled objects,
#: and fails on a struct there that a map or a global holds and that has no mirror here.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "bpfgen_tuple4": Tuple4,
    "bpfgen_snat_entry": SnatEntry,
    "bpfgen_rsnat_entry": RsnatEntry,
    "bpfgen_frontend_key": FrontendKey,
    "bpfgen_frontend_value": FrontendValue,
    "bpfgen_config": Config,
    "bpfgen_nat_entry": NatEntry,
    "bpfgen_rnat_entry": RnatEntry,
    "bpfgen_svc_value": SvcValue,
    "bpfgen_backend_key": BackendKey,
    "bpfgen_backend": BackendValue,
    "bpfgen_backend_member": BackendMember,
    "bpfgen_affinity_key": AffinityKey,
    "bpfgen_affinity_entry": AffinityEntry,
    "bpfgen_sock_rev_key": SockRevKey,
    "bpfgen_sock_rev_value": SockRevValue,
    "xdp_md": XdpMd,
    "__sk_buff": SkBuffHead,  # a prefix: the test also checks SK_BUFF_SIZE
}


def be32(addr: IPv4Address | int) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * 4).from_buffer_copy(int(addr).to_bytes(4, "big"))


def be16(port: int) -> ctypes.Array[ctypes.c_uint8]:
    return (ctypes.c_uint8 * 2).from_buffer_copy(port.to_bytes(2, "big"))


def to_bytes(obj: ctypes.Structure) -> bytes:
    return bytes(memoryview(obj).cast("B"))


def net_int(value: int, size: int) -> int:
    """What a __u32/__u16 field holds for `value` kept in network order (the affinity and
    socketLB maps): the integer whose host-order bytes are value's big-endian ones."""
    return int.from_bytes(value.to_bytes(size, "big"), sys.byteorder)


def from_net_int(field: int, size: int) -> int:
    """The value a __u32/__u16 field in network order holds (net_int's inverse)."""
    return int.from_bytes(field.to_bytes(size, sys.byteorder), "big")


def from_be(field: ctypes.Array[ctypes.c_uint8]) -> int:
    """The number in a network-order field (be32, be16)."""
    return int.from_bytes(bytes(field), "big")

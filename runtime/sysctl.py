"""Kernel parameters under /proc/sys, read and written in the caller's network namespace.

Networking sysctls (net.*) belong to the namespace of the thread that opens the
file, so inside `netns.entered(name)` these functions see that namespace's
values. A value is a string as the kernel prints it, whitespace-normalized.
"""

from __future__ import annotations

import os

from .errors import operation

PROC_SYS = "/proc/sys"


def path(name: str) -> str:
    """'net.ipv4.ip_forward' or, where a part holds a dot (a VLAN device), sysctl(8)'s
    slash form 'net/ipv4/conf/eth0.100/arp_ignore'."""
    return os.path.join(PROC_SYS, *name.split("/" if "/" in name else "."))


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def _normalize(text: str) -> str:
    return " ".join(text.split())


def read(name: str) -> str:
    with operation(f"read sysctl {name}"), open(path(name)) as f:
        return _normalize(f.read())


def write(name: str, value: str) -> None:
    with operation(f"set sysctl {name}={value}"), open(path(name), "w") as f:
        f.write(value if value else "\n")


def parse_port_ranges(text: str) -> list[tuple[int, int]]:
    """'20000-29999,30080' -> [(20000, 29999), (30080, 30080)]"""
    ranges = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        ranges.append((int(first), int(last or first)))
    return ranges


def format_port_ranges(ranges: list[tuple[int, int]]) -> str:
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in merged)


def with_reserved(current: str, first: int, last: int) -> str:
    """The ip_local_reserved_ports value that adds first-last to `current`."""
    return format_port_ranges([*parse_port_ranges(current), (first, last)])

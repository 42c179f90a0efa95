"""The runtime's nftables table: raw-priority notrack for service traffic, both directions.

One table (`table ip bpfgen`), written with `nft -f -` as one transaction that
deletes and recreates it, so a sync swaps the whole rule set atomically and no
other table is touched. Why the nft CLI and not pyroute2: pyroute2's nftables
module builds raw netlink expressions without set concatenations or a batch
API for "delete table + create table" in one transaction; the CLI gives both, and
its input is the readable text `status` and the docs show.

What is untracked (priority raw, before conntrack):
  prerouting  client -> VIP:port (ClusterIP, external and LB IPs), client ->
              node address:NodePort, backend replies (from a real server's
              address:port), anything to a node address in the SNAT port range
  output      node process -> VIP:port or NodePort, replies of node-local backends
  both        ICMP echo requests to a service VIP and the VIP's echo replies: the
              VIPs are local (the dummy device), so the node answers a ping to a
              ClusterIP as kube-proxy's IPVS mode does, and that must not be
              tracked either (IPVS itself does not forward ICMP echo)
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterable

from .errors import RuntimeOpError

TABLE = "bpfgen"
FAMILY = "ip"


def _nft() -> str:
    found = shutil.which("nft") or shutil.which("nft", path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeOpError("run nft", 2, "nft not found: install the Debian package nftables")
    return found


def available() -> str | None:
    try:
        _nft()
    except RuntimeOpError as exc:
        return str(exc)
    return None


def _set(name: str, type_: str, elements: Iterable[str]) -> list[str]:
    elems = sorted(set(elements))
    lines = [f"  set {name} {{", f"    type {type_}"]
    if elems:
        lines.append("    elements = { " + ", ".join(elems) + " }")
    return [*lines, "  }"]


def render(
    *,
    frontends: Iterable[tuple[str, str, int]],  # (address, "tcp"|"udp", port)
    node_ports: Iterable[tuple[str, int]],  # ("tcp"|"udp", port)
    node_addresses: Iterable[str],
    backends: Iterable[tuple[str, str, int]],
    snat_port_range: tuple[int, int],
) -> str:
    """The table's definition, deterministic for the same input."""
    first, last = snat_port_range
    icmp = [
        "    ip daddr @vips icmp type echo-request notrack",
        "    ip saddr @vips icmp type echo-reply notrack",
    ]
    body = [
        f"table {FAMILY} {TABLE} {{",
        *_set("frontends", "ipv4_addr . inet_proto . inet_service",
              (f"{a} . {p} . {port}" for a, p, port in frontends)),
        *_set("node_addrs", "ipv4_addr", node_addresses),
        *_set("nodeports", "inet_proto . inet_service",
              (f"{p} . {port}" for p, port in node_ports)),
        *_set("backends", "ipv4_addr . inet_proto . inet_service",
              (f"{a} . {p} . {port}" for a, p, port in backends)),
        *_set("vips", "ipv4_addr", (a for a, _, _ in frontends)),
        "  chain prerouting {",
        "    type filter hook prerouting priority raw; policy accept;",
        "    ip daddr . meta l4proto . th dport @frontends notrack",
        "    ip daddr @node_addrs meta l4proto . th dport @nodeports notrack",
        "    ip saddr . meta l4proto . th sport @backends notrack",
        f"    ip daddr @node_addrs meta l4proto {{ tcp, udp }} th dport {first}-{last} notrack",
        *icmp,
        "  }",
        "  chain output {",
        "    type filter hook output priority raw; policy accept;",
        "    ip daddr . meta l4proto . th dport @frontends notrack",
        "    ip daddr @node_addrs meta l4proto . th dport @nodeports notrack",
        "    ip saddr . meta l4proto . th sport @backends notrack",
        *icmp,
        "  }",
        "}",
    ]  # fmt: skip
    return "\n".join(body) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run(op: str, args: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run([_nft(), *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeOpError(op, 22, proc.stderr.strip() or f"nft exit {proc.returncode}")
    return proc.stdout


def replace(definition: str) -> None:
    """Create or atomically replace the table with `definition` (one nft transaction)."""
    script = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{definition}"
    _run(f"install nftables table {FAMILY} {TABLE}", ["-f", "-"], script)


def check(definition: str) -> None:
    """Parse and check without applying (nft --check)."""
    script = f"table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n{definition}"
    _run(f"check nftables table {FAMILY} {TABLE}", ["--check", "-f", "-"], script)


def exists() -> bool:
    proc = subprocess.run(
        [_nft(), "list", "table", FAMILY, TABLE], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def delete() -> bool:
    """Remove the table; False when it was not there."""
    if not exists():
        return False
    _run(f"delete nftables table {FAMILY} {TABLE}", ["delete", "table", FAMILY, TABLE])
    return True


def listing() -> str:
    return _run(f"list nftables table {FAMILY} {TABLE}", ["list", "table", FAMILY, TABLE])

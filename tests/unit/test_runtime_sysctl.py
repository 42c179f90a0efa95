"""The sysctls a run wants, and where they live under /proc/sys (no kernel needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bpfgen_runtime import sysctl
from bpfgen_runtime.converge import desired_sysctls


def _build(uplink: str) -> Any:
    interfaces = (
        SimpleNamespace(name="veth*", role="pods", hook="tc"),
        SimpleNamespace(name=uplink, role="uplink", hook="tc"),
    )
    return SimpleNamespace(node=SimpleNamespace(interfaces=interfaces))


def test_dotted_names_and_the_slash_form() -> None:
    assert sysctl.path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    # a VLAN device's name holds a dot: sysctl(8)'s slash form keeps it whole
    assert sysctl.path("net/ipv4/conf/eth0.100/arp_ignore") == (
        "/proc/sys/net/ipv4/conf/eth0.100/arp_ignore"
    )


def test_strict_arp_on_the_uplink_only_in_the_ipvs_mode() -> None:
    """Kubernetes #76664: not conf.all, which would leave pods that ARP for a VIP on
    their own device unanswered (docs/runtime.md, "sysctls")."""
    wanted = desired_sysctls(_build("eth0.100"), with_ipvs=True)
    assert wanted["net/ipv4/conf/eth0.100/arp_ignore"] == "1"
    assert wanted["net/ipv4/conf/eth0.100/arp_announce"] == "2"
    assert not any("conf/all" in name or "conf.all" in name for name in wanted)
    assert not any("veth" in name for name in wanted)
    assert not any("arp" in name for name in desired_sysctls(_build("eth0"), with_ipvs=False))

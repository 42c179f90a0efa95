"""The ipvs mode's part of the runtime: IPVS, the notrack table and the VIPs' device.

IPVS does the DNAT (virtual services, real servers in masquerade mode, the
scheduler); nftables' raw-table notrack rules keep service traffic out of
conntrack; a dummy device holds every VIP as a /32, as kube-proxy's kube-ipvs0.
Here: what the build wants of each (`desired_*`), the checks before a run
(`IpvsMode.preflight`), the converge steps after the programs are attached
(`IpvsMode.converge`: the notrack table before IPVS takes traffic), and the
removal and status of what the state file records of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute

from . import ipvs, nft
from .builddir import Build
from .errors import RuntimeOpError
from .nlerr import netlink
from .options import Options, Report
from .state import (
    DummyRecord,
    IpvsDrainingRecord,
    IpvsServiceRecord,
    IpvsTimeoutsRecord,
    IpvsTimeoutValues,
    State,
)

if TYPE_CHECKING:
    from .converge import Converge

DUMMY_DEVICE = "bpfgen-ipvs0"  # holds every VIP as a /32, as kube-proxy's kube-ipvs0
# RFC 5382 REQ-5: established TCP idle timeout >= 2 h 4 min; transitory >= 4 min.
# RFC 4787 REQ-5: UDP >= 2 min (5 min recommended).
IPVS_TCP_FLOOR, IPVS_TCPFIN_FLOOR, IPVS_UDP_FLOOR = 7440, 240, 120


def desired_services(build: Build) -> dict[ipvs.ServiceKey, ipvs.VirtualService]:
    out: dict[ipvs.ServiceKey, ipvs.VirtualService] = {}
    for f in build.frontends:
        for address in [f.address] if f.address is not None else list(build.node.addresses):
            key = ipvs.ServiceKey(f.proto_number, address, f.port)
            dests = {(b.address, b.port): b.weight for b in f.backends}
            out[key] = ipvs.VirtualService(key, f.scheduler, f.persistence_timeout, dests)
    return out


def desired_nft(build: Build) -> str:
    frontends, node_ports, backends = [], [], []
    for f in build.frontends:
        proto = f.protocol.lower()
        if f.address is None:
            node_ports.append((proto, f.port))
        else:
            frontends.append((f.address, proto, f.port))
        backends += [(b.address, proto, b.port) for b in f.backends]
    return nft.render(
        frontends=frontends,
        node_ports=node_ports,
        node_addresses=build.node.addresses,
        backends=backends,
        snat_port_range=build.node.snat_port_range,
    )


def desired_timeouts(build: Build) -> ipvs.Timeouts:
    t = build.node.timeouts
    return ipvs.Timeouts(
        tcp=max(t.tcp_established, IPVS_TCP_FLOOR),
        tcp_fin=max(t.tcp_transitory, IPVS_TCPFIN_FLOOR),
        udp=max(t.udp, IPVS_UDP_FLOOR),
    )


class IpvsMode:
    """Converge steps of the ipvs mode, run by a `Converge` pass (converge.MODES)."""

    def __init__(self, c: Converge) -> None:
        self.c = c

    @staticmethod
    def preflight(build: Build, opts: Options) -> list[str]:
        """IPVS, its schedulers, the dummy device and the notrack rules are usable."""
        problems: list[str] = []
        if opts.ipvs:
            reason = ipvs.unavailable_reason()
            if reason is not None:
                problems.append(
                    f"this build is for datapath mode ipvs and {reason} (IPVS is in Debian's "
                    "kernels as the ip_vs module; BPFGEN_TEST_NO_IPVS is for tests only)"
                )
            else:
                for sched in sorted({f.scheduler for f in build.frontends}):
                    why = ipvs.load_scheduler(sched)
                    if why:
                        problems.append(why)
            if not dummy_available():
                problems.append(
                    "the kernel has no dummy network device (for the VIPs, as kube-ipvs0): "
                    "modprobe dummy failed"
                )
        reason = nft.available()
        if reason:
            problems.append(reason)
        else:
            try:
                nft.check(desired_nft(build))
            except RuntimeOpError as exc:
                problems.append(f"the nftables rules do not load: {exc}")
        return problems

    def converge(self) -> None:
        self.nft()  # before IPVS takes traffic: its packets are never tracked
        if self.c.opts.ipvs:
            self.dummy()
            with ipvs.opened() as sock:
                self.ipvs_timeouts(sock)
                self.ipvs_services(sock)

    # dummy device and VIPs

    def dummy(self) -> None:
        vips = self.c.build.frontend_addresses()
        with netlink(f"configure {DUMMY_DEVICE}"), IPRoute() as ipr:
            links = ipr.link_lookup(ifname=DUMMY_DEVICE)
            if not links:

                def create() -> None:
                    ipr.link("add", ifname=DUMMY_DEVICE, kind="dummy")
                    idx = ipr.link_lookup(ifname=DUMMY_DEVICE)[0]
                    self.c.state.dummy = DummyRecord(name=DUMMY_DEVICE, ifindex=idx)
                    self.c.save()
                    ipr.link("set", index=idx, state="up")

                self.c.change(f"create dummy device {DUMMY_DEVICE}", create)
                if self.c.dry:
                    self.c.report.changes += [f"add {v}/32 to {DUMMY_DEVICE}" for v in vips]
                    return
                links = ipr.link_lookup(ifname=DUMMY_DEVICE)
            elif self.c.state.dummy is None:
                self.c.report.notes.append(
                    f"{DUMMY_DEVICE} exists and was not created by bpfgen: using it"
                )
            idx = links[0]
            have = {
                str(a.get_attr("IFA_ADDRESS"))
                for a in ipr.get_addr(index=idx, family=socket.AF_INET)
                if a["prefixlen"] == 32
            }
            for vip in vips:
                if vip not in have:
                    self.c.change(
                        f"add {vip}/32 to {DUMMY_DEVICE}",
                        partial(ipr.addr, "add", index=idx, address=vip, prefixlen=32),
                    )
            for vip in sorted(have - set(vips)):
                self.c.change(
                    f"remove {vip}/32 from {DUMMY_DEVICE}",
                    partial(ipr.addr, "del", index=idx, address=vip, prefixlen=32),
                )

    # IPVS

    def ipvs_timeouts(self, sock: ipvs.Ipvs) -> None:
        want = desired_timeouts(self.c.build)
        have = sock.timeouts()
        if have == want:
            return

        def write() -> None:
            had = self.c.state.ipvs_timeouts  # bpfgen set them before: keep their previous
            previous = had.previous if had is not None else _timeout_values(have)
            self.c.state.ipvs_timeouts = IpvsTimeoutsRecord(previous, _timeout_values(want))
            self.c.save()
            sock.set_timeouts(want)

        self.c.change(
            f"IPVS timeouts tcp {have.tcp}/tcpfin {have.tcp_fin}/udp {have.udp} -> "
            f"{want.tcp}/{want.tcp_fin}/{want.udp}",
            write,
        )

    def ipvs_services(self, sock: ipvs.Ipvs) -> None:
        want = desired_services(self.c.build)
        live = sock.services()
        ours = {_service_key(k) for k in self.c.state.ipvs_services}
        for key, vs in sorted(want.items()):
            cur = live.get(key)
            if cur is None:

                def add(vs: ipvs.VirtualService = vs) -> None:
                    sock.add_service(vs)
                    self._own(vs.key)

                sticky = f", persistent {vs.persistence_timeout}s" if vs.persistence_timeout else ""
                self.c.change(f"add IPVS service {key} ({vs.scheduler}{sticky})", add)
                cur_dests: dict[tuple[str, int], ipvs.LiveDest] = {}
            else:
                if key not in ours:
                    self.c.report.notes.append(f"IPVS service {key} existed before: taking it over")
                    if not self.c.dry:
                        self._own(key)
                if (cur.scheduler, cur.persistence_timeout) != (
                    vs.scheduler,
                    vs.persistence_timeout,
                ):
                    self.c.change(f"change IPVS service {key}", partial(sock.set_service, vs))
                cur_dests = cur.dests
            self._dests(sock, key, vs.dests, cur_dests)
        for key in sorted(ours - set(want)):

            def remove(key: ipvs.ServiceKey = key) -> None:
                sock.del_service(key)
                self.c.state.ipvs_services = [
                    k for k in self.c.state.ipvs_services if _service_key(k) != key
                ]
                self.c.state.ipvs_draining = [
                    d for d in self.c.state.ipvs_draining if _service_key(d) != key
                ]

            self.c.change(f"delete IPVS service {key}", remove)

    def _own(self, key: ipvs.ServiceKey) -> None:
        entry = IpvsServiceRecord(key.protocol, key.address, key.port)
        if entry not in self.c.state.ipvs_services:
            self.c.state.ipvs_services.append(entry)

    def _dests(
        self,
        sock: ipvs.Ipvs,
        key: ipvs.ServiceKey,
        want: dict[tuple[str, int], int],
        have: dict[tuple[str, int], ipvs.LiveDest],
    ) -> None:
        for (addr, port), weight in sorted(want.items()):
            cur = have.get((addr, port))
            draining = IpvsDrainingRecord(key.protocol, key.address, key.port, addr, port)
            if cur is None:
                self.c.change(
                    f"add real server {addr}:{port} weight {weight} to {key}",
                    partial(sock.add_dest, key, addr, port, weight),
                )
            elif cur.weight != weight or cur.fwd_method != ipvs.IP_VS_CONN_F_MASQ:

                def reweight(
                    a: str = addr,
                    p: int = port,
                    w: int = weight,
                    d: IpvsDrainingRecord = draining,
                    method: int = cur.fwd_method,
                ) -> None:
                    if method != ipvs.IP_VS_CONN_F_MASQ:
                        sock.del_dest(key, a, p)
                        sock.add_dest(key, a, p, w)
                    else:
                        sock.set_dest(key, a, p, w)
                    if d in self.c.state.ipvs_draining:
                        self.c.state.ipvs_draining.remove(d)

                self.c.change(
                    f"real server {addr}:{port} of {key}: weight {cur.weight} -> {weight}", reweight
                )
        for (addr, port), cur in sorted(have.items()):
            if (addr, port) in want:
                continue
            draining = IpvsDrainingRecord(key.protocol, key.address, key.port, addr, port)
            # UDP has no end of a flow to wait for: a drained UDP real server keeps every
            # flow that goes on sending (each packet refreshes IPVS's entry), to a
            # backend that may be gone. Deleted at once, its flows are expired on their
            # next packet (expire_nodest_conn=1) and scheduled anew, as kube-proxy
            # does since Kubernetes #77802.
            udp = key.protocol == socket.IPPROTO_UDP
            if cur.active + cur.inactive > 0 and cur.weight != 0 and not udp:

                def quiesce(a: str = addr, p: int = port, d: IpvsDrainingRecord = draining) -> None:
                    sock.set_dest(key, a, p, 0)
                    if d not in self.c.state.ipvs_draining:
                        self.c.state.ipvs_draining.append(d)

                self.c.change(
                    f"drain real server {addr}:{port} of {key} (weight 0, "
                    f"{cur.active} active / {cur.inactive} inactive connections)",
                    quiesce,
                )
            elif cur.active + cur.inactive == 0 or udp:

                def delete(a: str = addr, p: int = port, d: IpvsDrainingRecord = draining) -> None:
                    sock.del_dest(key, a, p)
                    if d in self.c.state.ipvs_draining:
                        self.c.state.ipvs_draining.remove(d)

                moved = (f" ({cur.active + cur.inactive} UDP flows move on their next packet)"
                         if udp and cur.active + cur.inactive else "")  # fmt: skip
                self.c.change(f"delete real server {addr}:{port} from {key}{moved}", delete)
            else:
                self.c.report.notes.append(
                    f"real server {addr}:{port} of {key} is draining ({cur.active} active, "
                    f"{cur.inactive} inactive): a later sync removes it"
                )

    # nftables

    def nft(self) -> None:
        text = desired_nft(self.c.build)
        sha = nft.digest(text)
        if self.c.state.nft_sha256 == sha and nft.exists():
            return

        def install() -> None:
            self.c.state.nft_sha256 = "installing"
            self.c.save()
            nft.replace(text)
            self.c.state.nft_sha256 = sha

        self.c.change(f"install nftables table {nft.FAMILY} {nft.TABLE} (notrack)", install)


def dummy_available() -> bool:
    if os.path.isdir("/sys/module/dummy"):
        return True
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/usr/sbin:/sbin")
    if modprobe is not None:
        subprocess.run([modprobe, "-q", "dummy"], capture_output=True, check=False)
    return os.path.isdir("/sys/module/dummy")


#: teardown.py's step: run one removal, record it or its failure, go on.
Step = Callable[[str, Callable[[], object]], None]


def teardown_ipvs(state: State, report: Report, step: Step, failures: list[str]) -> None:
    """down: the IPVS services and timeouts, the VIPs' device and the notrack table that
    `state` lists, first of all (teardown.py); failures are appended to `failures`."""
    if state.ipvs_services or state.ipvs_timeouts:
        try:
            with ipvs.opened() as sock:
                for k in list(state.ipvs_services):
                    key = _service_key(k)
                    step(
                        f"delete IPVS service {key}",
                        partial(sock.del_service, key),
                    )
                t = state.ipvs_timeouts
                if t is not None:
                    prev = ipvs.Timeouts(t.previous.tcp, t.previous.tcp_fin, t.previous.udp)
                    if _timeout_values(sock.timeouts()) == t.value:
                        step(
                            f"restore IPVS timeouts {prev.tcp}/{prev.tcp_fin}/{prev.udp}",
                            lambda: sock.set_timeouts(prev),
                        )
                    else:
                        report.notes.append(
                            "IPVS timeouts were changed since bpfgen set them: left"
                        )
        except RuntimeOpError as exc:
            failures.append(f"IPVS: {exc}")
    if state.dummy is not None:
        dummy = state.dummy

        def del_dummy() -> None:
            with netlink(f"delete {dummy.name}"), IPRoute() as ipr:
                if ipr.link_lookup(ifname=dummy.name) == [dummy.ifindex]:
                    ipr.link("del", index=dummy.ifindex)

        step(f"delete dummy device {dummy.name}", del_dummy)
    if state.nft_sha256 is not None:  # after IPVS: no service packet is tracked meanwhile
        step(f"delete nftables table {nft.FAMILY} {nft.TABLE}", nft.delete)


def live_services(state: State) -> tuple[list[dict[str, Any]], str | None]:
    """status: the IPVS services `state` lists as they are live, and why IPVS could not be
    read (None: it was)."""
    services: list[dict[str, Any]] = []
    if state.ipvs_services:
        try:
            with ipvs.opened() as sock:
                live = sock.services()
            for k in state.ipvs_services:
                key = _service_key(k)
                s = live.get(key)
                services.append(
                    {"service": str(key), "present": s is not None,
                     "scheduler": s.scheduler if s else None,
                     "persistence_timeout": s.persistence_timeout if s else None,
                     "real_servers": [
                         {"address": f"{a}:{p}", "weight": d.weight, "active": d.active,
                          "inactive": d.inactive}
                         for (a, p), d in sorted(s.dests.items())
                     ] if s else []}
                )  # fmt: skip
        except RuntimeOpError as exc:
            return services, str(exc)
    return services, None


def _service_key(rec: IpvsServiceRecord | IpvsDrainingRecord) -> ipvs.ServiceKey:
    """The virtual service a state record names (a draining real server's: its service)."""
    return ipvs.ServiceKey(rec.protocol, rec.address, rec.port)


def _timeout_values(t: ipvs.Timeouts) -> IpvsTimeoutValues:
    return IpvsTimeoutValues(tcp=t.tcp, tcp_fin=t.tcp_fin, udp=t.udp)

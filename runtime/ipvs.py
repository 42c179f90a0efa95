"""IPVS over generic netlink (pyroute2): virtual services, real servers, timeouts.

The runtime describes what it wants as `VirtualService` values (one per frontend
address: a NodePort gives one per node address) and converges the kernel's table
to them: services added, changed (scheduler, persistence) or removed; real servers
added, reweighted, or removed. A real server that leaves a service while it still
has connections is first set to weight 0 (no new connections; established ones
complete, as kube-proxy's graceful termination does) and removed by a later sync
once it has none.

Real servers are in masquerade (NAT) mode. ClientIP affinity is IPVS persistence
(flag IP_VS_SVC_F_PERSISTENT with the affinity timeout, netmask /32).

IPVS timeouts (what `ipvsadm --set tcp tcpfin udp` sets) go through
IPVS_CMD_SET_CONFIG / IPVS_CMD_GET_CONFIG, with a message class of our own
because pyroute2 declares those attributes only as hex dumps.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pyroute2 import IPVS, IPVSDest, IPVSService
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.generic import ipvs as ipvs_nl

from .errors import RuntimeOpError

IP_VS_CONN_F_MASQ = 0x0000  # forwarding method: masquerade (NAT)
IP_VS_SVC_F_PERSISTENT = 0x0001
PROTO_NAMES = {socket.IPPROTO_TCP: "TCP", socket.IPPROTO_UDP: "UDP", 132: "SCTP"}


@dataclass(frozen=True, order=True)
class ServiceKey:
    protocol: int
    address: str
    port: int

    def __str__(self) -> str:
        return f"{PROTO_NAMES.get(self.protocol, self.protocol)} {self.address}:{self.port}"


@dataclass(frozen=True)
class VirtualService:
    key: ServiceKey
    scheduler: str
    persistence_timeout: int | None  # seconds of ClientIP affinity, or None
    dests: dict[tuple[str, int], int] = field(default_factory=dict, hash=False)  # -> weight


@dataclass(frozen=True)
class LiveDest:
    weight: int
    fwd_method: int
    active: int
    inactive: int


@dataclass(frozen=True)
class LiveService:
    key: ServiceKey
    scheduler: str
    persistence_timeout: int | None
    dests: dict[tuple[str, int], LiveDest]


@dataclass(frozen=True)
class Timeouts:
    tcp: int
    tcp_fin: int
    udp: int


class _ConfigMsg(genlmsg):  # type: ignore[misc]
    """IPVS_CMD_SET_CONFIG / GET_CONFIG: the three timeouts as u32 seconds."""

    prefix = "IPVS_CMD_ATTR_"
    nla_map = (
        ("IPVS_CMD_ATTR_UNSPEC", "none"),
        ("IPVS_CMD_ATTR_SERVICE", "hex"),
        ("IPVS_CMD_ATTR_DEST", "hex"),
        ("IPVS_CMD_ATTR_DAEMON", "hex"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", "uint32"),
        ("IPVS_CMD_ATTR_TIMEOUT_UDP", "uint32"),
    )


def unavailable_reason() -> str | None:
    """None when IPVS can be programmed here; else why not (after trying `modprobe ip_vs`)."""
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/usr/sbin:/sbin")
    tried = ""
    if modprobe is not None:
        proc = subprocess.run(
            [modprobe, "-q", "ip_vs"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tried = f"; modprobe ip_vs failed: {proc.stderr.strip() or f'exit {proc.returncode}'}"
    else:
        tried = "; no modprobe to load ip_vs"
    try:
        with IPVS():
            return None
    except Exception as exc:  # the generic netlink family lookup fails: no IPVS in this kernel
        return f"the kernel has no IPVS (generic netlink family IPVS: {exc}){tried}"


def load_scheduler(name: str) -> str | None:
    """Load ip_vs_<name> if it is a module; None when fine, else the reason."""
    modprobe = shutil.which("modprobe") or shutil.which("modprobe", path="/usr/sbin:/sbin")
    if modprobe is None:
        return None  # the kernel loads schedulers itself (request_module) when it can
    proc = subprocess.run(
        [modprobe, "-q", f"ip_vs_{name}"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return f"IPVS scheduler {name!r}: modprobe ip_vs_{name} failed ({proc.stderr.strip()})"
    return None


def _svc_request(key: ServiceKey, scheduler: str = "", persistence: int | None = None) -> Any:
    svc = IPVSService(addr=key.address, port=key.port, protocol=key.protocol)
    if scheduler:
        svc["sched_name"] = scheduler
        svc["flags"] = {
            "flags": IP_VS_SVC_F_PERSISTENT if persistence else 0,
            "mask": 0xFFFFFFFF,
        }
        svc["timeout"] = persistence or 0
        svc["netmask"] = "255.255.255.255"
    return svc


def _dest_request(address: str, port: int, weight: int) -> Any:
    return IPVSDest(addr=address, port=port, weight=weight, fwd_method=IP_VS_CONN_F_MASQ)


class Ipvs:
    """One IPVS netlink socket in the current network namespace."""

    def __init__(self) -> None:
        try:
            self._sock: Any = IPVS()
        except Exception as exc:
            raise RuntimeOpError("open IPVS netlink socket", errno.ENOENT, str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def _call(self, op: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except OSError as exc:
            raise RuntimeOpError(op, exc.errno or errno.EIO) from exc
        except Exception as exc:  # pyroute2's NetlinkError carries .code
            code = getattr(exc, "code", None) or errno.EIO
            raise RuntimeOpError(op, int(code), str(exc)) from exc

    # --- services -------------------------------------------------------------------

    def services(self) -> dict[ServiceKey, LiveService]:
        out = {}
        for msg in self._call("list IPVS services", self._sock.service, "dump"):
            svc = msg.get_attr("IPVS_CMD_ATTR_SERVICE")
            if svc.get_attr("IPVS_SVC_ATTR_FWMARK"):
                continue  # fwmark services are not ours
            key = ServiceKey(
                int(svc.get_attr("IPVS_SVC_ATTR_PROTOCOL")),
                str(svc.get_attr("IPVS_SVC_ATTR_ADDR")),
                int(svc.get_attr("IPVS_SVC_ATTR_PORT")),
            )
            flags = svc.get_attr("IPVS_SVC_ATTR_FLAGS") or {}
            persistent = bool(int(flags.get("flags", 0)) & IP_VS_SVC_F_PERSISTENT)
            out[key] = LiveService(
                key=key,
                scheduler=str(svc.get_attr("IPVS_SVC_ATTR_SCHED_NAME")),
                persistence_timeout=int(svc.get_attr("IPVS_SVC_ATTR_TIMEOUT"))
                if persistent
                else None,
                dests=self._dests(key),
            )
        return out

    def _dests(self, key: ServiceKey) -> dict[tuple[str, int], LiveDest]:
        out = {}
        msgs = self._call(f"list real servers of {key}", self._sock.dest, "dump", _svc_request(key))
        for msg in msgs:
            d = msg.get_attr("IPVS_CMD_ATTR_DEST")
            out[
                (str(d.get_attr("IPVS_DEST_ATTR_ADDR")), int(d.get_attr("IPVS_DEST_ATTR_PORT")))
            ] = LiveDest(
                weight=int(d.get_attr("IPVS_DEST_ATTR_WEIGHT")),
                fwd_method=int(d.get_attr("IPVS_DEST_ATTR_FWD_METHOD")) & 0x7,
                active=int(d.get_attr("IPVS_DEST_ATTR_ACTIVE_CONNS") or 0),
                inactive=int(d.get_attr("IPVS_DEST_ATTR_INACT_CONNS") or 0),
            )
        return out

    def add_service(self, vs: VirtualService) -> None:
        req = _svc_request(vs.key, vs.scheduler, vs.persistence_timeout)
        self._call(f"add IPVS service {vs.key}", self._sock.service, "add", req)

    def set_service(self, vs: VirtualService) -> None:
        req = _svc_request(vs.key, vs.scheduler, vs.persistence_timeout)
        self._call(f"change IPVS service {vs.key}", self._sock.service, "set", req)

    def del_service(self, key: ServiceKey) -> bool:
        try:
            self._call(f"delete IPVS service {key}", self._sock.service, "del", _svc_request(key))
        except RuntimeOpError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT):
                return False
            raise
        return True

    def add_dest(self, key: ServiceKey, address: str, port: int, weight: int) -> None:
        op = f"add real server {address}:{port} to IPVS service {key}"
        self._call(
            op, self._sock.dest, "add", _svc_request(key), _dest_request(address, port, weight)
        )

    def set_dest(self, key: ServiceKey, address: str, port: int, weight: int) -> None:
        op = f"set weight {weight} of real server {address}:{port} in IPVS service {key}"
        self._call(
            op, self._sock.dest, "set", _svc_request(key), _dest_request(address, port, weight)
        )

    def del_dest(self, key: ServiceKey, address: str, port: int) -> None:
        op = f"delete real server {address}:{port} from IPVS service {key}"
        self._call(op, self._sock.dest, "del", _svc_request(key), _dest_request(address, port, 0))

    # --- timeouts (ipvsadm --set) ---------------------------------------------------------

    def _config_request(self, cmd: int, attrs: list[tuple[str, int]], flags: int) -> list[Any]:
        sock = self._sock
        msg = _ConfigMsg()
        msg["cmd"] = cmd
        msg["version"] = ipvs_nl.GENL_VERSION
        msg["attrs"] = attrs
        marshal = sock.asyncore.marshal
        saved = marshal.msg_map.get(sock.asyncore.prid)
        marshal.msg_map[sock.asyncore.prid] = _ConfigMsg
        try:
            return list(sock._run_with_cleanup(sock.asyncore._do_request, msg, flags))
        finally:
            marshal.msg_map[sock.asyncore.prid] = saved

    def timeouts(self) -> Timeouts:
        replies = self._call(
            "read IPVS timeouts", self._config_request,
            ipvs_nl.IPVS_CMD_GET_CONFIG, [], NLM_F_REQUEST,
        )  # fmt: skip
        msg = replies[0]
        return Timeouts(
            tcp=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP")),
            tcp_fin=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")),
            udp=int(msg.get_attr("IPVS_CMD_ATTR_TIMEOUT_UDP")),
        )

    def set_timeouts(self, t: Timeouts) -> None:
        attrs = [
            ("IPVS_CMD_ATTR_TIMEOUT_TCP", t.tcp),
            ("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN", t.tcp_fin),
            ("IPVS_CMD_ATTR_TIMEOUT_UDP", t.udp),
        ]
        self._call(
            f"set IPVS timeouts tcp {t.tcp} tcpfin {t.tcp_fin} udp {t.udp}",
            self._config_request, ipvs_nl.IPVS_CMD_SET_CONFIG, attrs, NLM_F_REQUEST | NLM_F_ACK,
        )  # fmt: skip


@contextmanager
def opened() -> Iterator[Ipvs]:
    sock = Ipvs()
    try:
        yield sock
    finally:
        sock.close()

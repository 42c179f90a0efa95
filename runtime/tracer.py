"""bcc behind a small typed wrapper: what `bpfgen trace` asks of the kernel.

bcc (Debian's python3-bpfcc) compiles a tracing program at run time. That is what
bpfgen's datapath avoids, so bcc never loads or compiles the datapath; it is the
right tool for an operator's live look at it, and optional: nothing else in the
runtime imports this module.

The program (`TRACER_C`) reports, for IPv4 packets from or to the traced addresses
(and ports, when given), one `RawEvent` each for

- `drop`: the tracepoint skb:kfree_skb (reason: enum skb_drop_reason);
- `fib`: fib:fib_table_lookup that failed (reason: the negative errno), but for a
  miss in the local table, which policy routing makes of every forwarded packet;
- `neigh`: neigh:neigh_update / neigh_timer_handler to NUD_FAILED (a next hop that
  does not answer ARP).

Tracepoints only: they are there on every kernel with drop reasons, while fentry/fexit
(which could follow cls_bpf_classify, the classifier that runs bpfgen's tc programs)
and kprobes are not (this project's host kernel has neither). A packet bpfgen's tc
program drops is a kfree_skb with reason TC_INGRESS, tuple included; trace.py names
the program's own reason from its counters.

It reads kernel structs (sk_buff, net_device, sock, net) at offsets taken from the
running kernel's BTF (kbtf.py), handed to the C as -D macros: so the kernel header
tree bcc insists on compiling with need not be the running kernel's, which on a
node with a custom kernel it rarely is.

Debian installs bcc for the system python3 (/usr/lib/python3/dist-packages); a
venv's python finds it there when it is not importable otherwise (bcc's module is
pure Python over libbcc.so).
"""

from __future__ import annotations

import ctypes
import errno
import glob
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .builddir import InputRefused
from .errors import RuntimeOpError
from .kbtf import KernelBtf

BCC_PACKAGE = "python3-bpfcc"
SYSTEM_SITE = "/usr/lib/python3/dist-packages"
TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
OP = "bpfgen trace"

KINDS = {1: "drop", 2: "fib", 3: "neigh"}

#: Struct members the C reads, from the kernel's BTF: macro -> (struct, member path).
OFFSETS = {
    "OFF_SKB_HEAD": ("sk_buff", "head"),
    "OFF_SKB_NH": ("sk_buff", "network_header"),
    "OFF_SKB_DEV": ("sk_buff", "dev"),
    "OFF_SKB_SK": ("sk_buff", "sk"),
    "OFF_DEV_IFINDEX": ("net_device", "ifindex"),
    "OFF_DEV_NAME": ("net_device", "name"),
    "OFF_DEV_NET": ("net_device", "nd_net.net"),
    "OFF_SK_NET": ("sock", "__sk_common.skc_net.net"),
    "OFF_NET_INUM": ("net", "ns.inum"),
}

TRACER_C = r"""
#include <linux/skbuff.h> /* enum skb_drop_reason: the tracepoint's field type only */
#include <linux/socket.h>
#include <uapi/asm-generic/errno-base.h>
#include <uapi/linux/in.h>
#include <uapi/linux/neighbour.h>
#include <uapi/linux/rtnetlink.h>

#define KIND_DROP 1
#define KIND_FIB 2
#define KIND_NEIGH 3
#define CFG_PORTS 0 /* config[0]: 1 when the ports filter too */
#define IP_OFFSET_MASK 0x1fff

struct event {
	u64 ts;
	u64 location; /* kfree_skb: the caller; fib: the table */
	u32 kind;
	s32 reason;
	u32 netns;
	u32 ifindex;
	u32 saddr; /* network order */
	u32 daddr;
	u16 sport; /* network order */
	u16 dport;
	u8 proto;
	u8 pad[3];
	char dev[16];
};

BPF_HASH(addrs, u32, u8, 64);
BPF_HASH(ports, u16, u8, 64);
BPF_ARRAY(config, u32, 1);
BPF_PERF_OUTPUT(events);

static __always_inline u32 cfg(u32 index)
{
	u32 *v = config.lookup(&index);

	return v ? *v : 0;
}

static __always_inline int wanted(struct event *e)
{
	if (!addrs.lookup(&e->saddr) && !addrs.lookup(&e->daddr))
		return 0;
	if (!cfg(CFG_PORTS) || (e->proto != IPPROTO_TCP && e->proto != IPPROTO_UDP))
		return 1;
	return ports.lookup(&e->sport) || ports.lookup(&e->dport);
}

static __always_inline int skb_tuple(void *skb, struct event *e)
{
	unsigned char *head = NULL;
	u16 nh = 0;
	u8 ip[20];
	u16 l4[2] = {};
	int ports;

	bpf_probe_read_kernel(&head, sizeof(head), skb + OFF_SKB_HEAD);
	bpf_probe_read_kernel(&nh, sizeof(nh), skb + OFF_SKB_NH);
	if (!head || nh == (u16)~0U || bpf_probe_read_kernel(ip, sizeof(ip), head + nh))
		return 0;
	if ((ip[0] >> 4) != 4)
		return 0;
	e->proto = ip[9];
	__builtin_memcpy(&e->saddr, ip + 12, 4);
	__builtin_memcpy(&e->daddr, ip + 16, 4);
	ports = e->proto == IPPROTO_TCP || e->proto == IPPROTO_UDP;
	if (ports && !(((ip[6] << 8) | ip[7]) & IP_OFFSET_MASK))
		bpf_probe_read_kernel(l4, sizeof(l4), head + nh + (ip[0] & 0xf) * 4);
	e->sport = l4[0];
	e->dport = l4[1];
	return 1;
}

static __always_inline void skb_where(void *skb, struct event *e)
{
	void *dev = NULL, *sk = NULL, *net = NULL;

	bpf_probe_read_kernel(&dev, sizeof(dev), skb + OFF_SKB_DEV);
	if (dev) {
		bpf_probe_read_kernel(&e->ifindex, sizeof(e->ifindex), dev + OFF_DEV_IFINDEX);
		bpf_probe_read_kernel(e->dev, sizeof(e->dev), dev + OFF_DEV_NAME);
		bpf_probe_read_kernel(&net, sizeof(net), dev + OFF_DEV_NET);
	} else {
		bpf_probe_read_kernel(&sk, sizeof(sk), skb + OFF_SKB_SK);
		if (sk)
			bpf_probe_read_kernel(&net, sizeof(net), sk + OFF_SK_NET);
	}
	if (net)
		bpf_probe_read_kernel(&e->netns, sizeof(e->netns), net + OFF_NET_INUM);
}

TRACEPOINT_PROBE(skb, kfree_skb)
{
	struct event e = {};
	void *skb = args->skbaddr;

	if (!skb_tuple(skb, &e) || !wanted(&e))
		return 0;
	e.kind = KIND_DROP;
	e.reason = args->reason;
	e.location = (u64)args->location;
	e.ts = bpf_ktime_get_ns();
	skb_where(skb, &e);
	events.perf_submit(args, &e, sizeof(e));
	return 0;
}

TRACEPOINT_PROBE(fib, fib_table_lookup)
{
	struct event e = {};

	/* -EAGAIN: not in this table. In the local table: every forwarded packet */
	/* when there are policy rules. Elsewhere (main, or the merged table): no route. */
	if (!args->err || (args->err == -EAGAIN && args->tb_id == RT_TABLE_LOCAL))
		return 0;
	e.proto = args->proto;
	__builtin_memcpy(&e.saddr, args->src, 4);
	__builtin_memcpy(&e.daddr, args->dst, 4);
	e.sport = htons(args->sport); /* the tracepoint's ports are in host order */
	e.dport = htons(args->dport);
	if (!wanted(&e))
		return 0;
	e.kind = KIND_FIB;
	e.reason = args->err;
	e.ifindex = args->iif;
	e.location = args->tb_id;
	e.ts = bpf_ktime_get_ns();
	events.perf_submit(args, &e, sizeof(e));
	return 0;
}

static __always_inline int neigh_failed(void *ctx, struct event *e, const u8 *key4)
{
	__builtin_memcpy(&e->daddr, key4, 4);
	if (!addrs.lookup(&e->daddr))
		return 0;
	e->kind = KIND_NEIGH;
	e->reason = NUD_FAILED;
	e->ts = bpf_ktime_get_ns();
	events.perf_submit(ctx, e, sizeof(*e));
	return 0;
}

TRACEPOINT_PROBE(neigh, neigh_update)
{
	struct event e = {};

	if (args->family != AF_INET || args->new_state != NUD_FAILED)
		return 0;
	TP_DATA_LOC_READ_STR(e.dev, dev, sizeof(e.dev));
	return neigh_failed(args, &e, args->primary_key4);
}

TRACEPOINT_PROBE(neigh, neigh_timer_handler)
{
	struct event e = {};

	if (args->family != AF_INET || args->nud_state != NUD_FAILED)
		return 0;
	TP_DATA_LOC_READ_STR(e.dev, dev, sizeof(e.dev));
	return neigh_failed(args, &e, args->primary_key4);
}

"""


class _Event(ctypes.Structure):
    """struct event of TRACER_C."""

    _fields_ = [
        ("ts", ctypes.c_uint64),
        ("location", ctypes.c_uint64),
        ("kind", ctypes.c_uint32),
        ("reason", ctypes.c_int32),
        ("netns", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("saddr", ctypes.c_uint32),
        ("daddr", ctypes.c_uint32),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("proto", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
        ("dev", ctypes.c_char * 16),
    ]


@dataclass(frozen=True)
class RawEvent:
    """One report of the tracer, decoded: addresses dotted, ports in host order."""

    kind: str  # drop | fib | neigh
    ts_ns: int  # CLOCK_MONOTONIC (bpf_ktime_get_ns)
    location: int  # drop: the kernel address that freed the skb; fib: the table id
    reason: int  # drop: enum skb_drop_reason; fib: -errno; neigh: NUD_FAILED
    netns: int  # inode of the packet's network namespace (0: unknown)
    ifindex: int
    device: str
    proto: int
    saddr: str
    daddr: str
    sport: int
    dport: int


def _addr(value: int) -> str:
    return socket.inet_ntoa(value.to_bytes(4, "little"))


def _decode(raw: _Event) -> RawEvent:
    return RawEvent(
        kind=KINDS.get(raw.kind, str(raw.kind)),
        ts_ns=raw.ts,
        location=raw.location,
        reason=raw.reason,
        netns=raw.netns,
        ifindex=raw.ifindex,
        device=raw.dev.decode(errors="replace"),
        proto=raw.proto,
        saddr=_addr(raw.saddr) if raw.saddr else "",
        daddr=_addr(raw.daddr),
        sport=socket.ntohs(raw.sport),
        dport=socket.ntohs(raw.dport),
    )


def _missing(what: str) -> InputRefused:
    return InputRefused(OP, [what])


def import_bcc() -> Any:
    """bcc's Python module, from this interpreter's path or else Debian's system one."""
    try:
        import bcc
    except ImportError:
        if os.path.isdir(SYSTEM_SITE) and SYSTEM_SITE not in sys.path:
            sys.path.append(SYSTEM_SITE)  # last: the venv's own packages keep precedence
        try:
            import bcc
        except ImportError as exc:
            raise _missing(
                f"bcc's Python module is not installed ({exc}): install the Debian package "
                f"{BCC_PACKAGE} (apt-get install {BCC_PACKAGE}); bpfgen trace needs it, "
                "nothing else in bpfgen does"
            ) from exc
    return bcc


def ensure_tracefs() -> str | None:
    """tracefs (bcc reads the tracepoints' formats there) mounted at its standard place
    if it is nowhere; a note when it was mounted here."""
    if any(os.path.isdir(os.path.join(p, "events")) for p in TRACEFS):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", TRACEFS[0].encode(), b"tracefs", 0, None) != 0:
        raise RuntimeOpError(f"mount tracefs at {TRACEFS[0]}", ctypes.get_errno())
    return f"mounted tracefs at {TRACEFS[0]} (bcc reads the tracepoints there); left mounted"


def kernel_headers() -> tuple[dict[str, str], list[str], str | None]:
    """What bcc compiles with: (environment, cflags, note). bcc wants a kernel header
    tree; the running kernel's (/lib/modules/RELEASE/build, or kheaders) when there is
    one, else the newest installed Debian tree (source/ + build/), which does here
    because the C reads kernel structs at BTF offsets only."""
    release = os.uname().release
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return {}, [], None
    own = f"/lib/modules/{release}"
    if any(
        os.path.isfile(f"{own}/{d}/include/linux/kconfig.h") for d in ("build", "source")
    ) or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return {}, [], None
    trees = sorted(
        (d for d in glob.glob("/lib/modules/*")
         if os.path.isfile(f"{d}/source/include/linux/kconfig.h")
         and os.path.isdir(f"{d}/build/include/generated")),
        key=os.path.getmtime,
    )  # fmt: skip
    if not trees:
        raise _missing(
            f"bcc needs a kernel header tree and there is none for {release} (nor "
            "/sys/kernel/kheaders.tar.xz): install linux-headers-$(uname -r), or on a "
            "kernel without a package the distribution's (Debian: linux-headers-amd64); "
            "bpfgen trace reads kernel structs at offsets from the running kernel's BTF, "
            "so another release's headers do"
        )
    tree = trees[-1]
    build = f"{tree}/build"
    arch = f"{build}/arch/x86/include"
    cflags = [f"-I{arch}/generated", f"-I{build}/include", f"-I{arch}/generated/uapi",
              f"-I{build}/include/generated/uapi"]  # fmt: skip
    note = (f"no kernel headers for {release}: bcc compiles the tracer with {tree}'s "
            "(struct offsets come from the running kernel's BTF)")  # fmt: skip
    return {"BCC_KERNEL_SOURCE": os.path.realpath(f"{tree}/source")}, cflags, note


def offset_flags(btf: KernelBtf) -> list[str]:
    try:
        return [f"-D{macro}={btf.offset(s, m)}" for macro, (s, m) in OFFSETS.items()]
    except LookupError as exc:
        raise _missing(f"this kernel's BTF lacks what the tracer reads: {exc}") from exc


def check_tracepoints(tracefs: str) -> None:
    fmt = os.path.join(tracefs, "events", "skb", "kfree_skb", "format")
    try:
        with open(fmt) as f:
            has_reason = "reason;" in f.read()
    except OSError as exc:
        raise _missing(f"no tracepoint skb:kfree_skb ({fmt}: {exc.strerror})") from exc
    if not has_reason:
        raise _missing(
            f"skb:kfree_skb has no drop reason on kernel {os.uname().release} (Linux 5.17+)"
        )


class Tracer:
    """The compiled and attached tracer; `poll()` returns what it saw since the last call."""

    def __init__(self, addresses: Iterable[str], ports: Iterable[int], notes: list[str]) -> None:
        bcc = import_bcc()
        note = ensure_tracefs()
        if note:
            notes.append(note)
        tracefs = next(p for p in TRACEFS if os.path.isdir(os.path.join(p, "events")))
        check_tracepoints(tracefs)
        env, cflags, note = kernel_headers()
        if note:
            notes.append(note)
        os.environ.update(env)
        with KernelBtf() as btf:
            cflags += offset_flags(btf)
        try:
            self._bpf = bcc.BPF(text=TRACER_C, cflags=cflags)
        except Exception as exc:  # noqa: BLE001 - bcc raises bare Exception; its log is on stderr
            raise RuntimeOpError(OP, errno.EINVAL, f"bcc could not load the tracer: {exc}") from exc
        self._events: list[RawEvent] = []
        self.lost = 0
        u8, u16, u32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32
        for a in addresses:
            self._bpf["addrs"][u32(int.from_bytes(socket.inet_aton(a), "little"))] = u8(1)
        port_list = list(ports)
        for p in port_list:
            self._bpf["ports"][u16(socket.htons(p))] = u8(1)
        self._bpf["config"][ctypes.c_int(0)] = u32(1 if port_list else 0)
        self._bpf["events"].open_perf_buffer(self._on_event, lost_cb=self._on_lost)

    def _on_event(self, _cpu: int, data: int, _size: int) -> None:
        self._events.append(_decode(ctypes.cast(data, ctypes.POINTER(_Event)).contents))

    def _on_lost(self, count: int) -> None:
        self.lost += count

    def poll(self, timeout_ms: int) -> list[RawEvent]:
        self._bpf.perf_buffer_poll(timeout=timeout_ms)
        out, self._events = self._events, []
        return out

    def ksym(self, address: int) -> str:
        name: bytes = self._bpf.ksym(address)
        return name.decode(errors="replace")

    def close(self) -> None:
        self._bpf.cleanup()

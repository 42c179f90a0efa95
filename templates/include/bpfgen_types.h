/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — types shared by every program, and mirrored in Python
 * (bpfgen/layouts.py; tests/build checks both against the object's BTF).
 */
#ifndef BPFGEN_TYPES_H
#define BPFGEN_TYPES_H

#include <stdbool.h>
#include <linux/types.h>

/* Keeps argument @x of a global (non-static __noinline) function used where
 * its body may come to ignore it once the plan's constants are folded (the
 * random scheduler's h % 1 is 0). For an unused argument LLVM's dead-argument
 * elimination passes `poison`: the caller leaves the register as it was
 * (a pointer, say), and the verifier, which checks each argument of a global
 * function against its BTF type, refuses the call ("R3 is not a scalar",
 * "Caller passes invalid args into func#N"). Read by an empty asm, the
 * argument is live, so always passed (at most a register move).
 */
#define BPFGEN_ARG_USED(x) asm volatile("" : : "r"(x))

/* A flow as seen on the wire, in packet byte order. For ICMP echo the
 * identifier plays the port: a request carries it as sport (dport 0), a reply
 * as dport (sport 0), so a reply's tuple is the mirror of its request's.
 */
struct bpfgen_tuple4 {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* A drop notification (ring buffer bpfgen_drops; `bpfgen status --drops`). */
struct bpfgen_drop_event {
	__u64 ns; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 reason; /* a counter slot: manifest.json "counters"[reason] */
	__u32 program; /* BPFGEN_PROGRAM_ID: manifest.json "programs"[program] */
	struct bpfgen_tuple4 t; /* as parsed; zeros where nothing was */
};

/* Session flags (docs/datapath.md "The TCP session lifecycle"). "orig" is
 * the direction of the session's first packet (client -> service), "reply"
 * the other. FIN_ORIG/FIN_REPLY/REPLY_FIRST/FIN_ACKED/CLOSED/RST are TCP only.
 */
#define BPFGEN_SESSION_SEEN_REPLY 0x01 /* a reply was reverse-translated */
#define BPFGEN_SESSION_CLOSING 0x02 /* TCP FIN or RST seen: no longer established */
#define BPFGEN_SESSION_FIN_ORIG 0x04 /* a FIN passed in the orig direction */
#define BPFGEN_SESSION_FIN_REPLY 0x08 /* a FIN passed in the reply direction */
#define BPFGEN_SESSION_REPLY_FIRST 0x10 /* the reply side sent the first FIN */
#define BPFGEN_SESSION_FIN_ACKED 0x20 /* the second FIN acknowledged the first */
#define BPFGEN_SESSION_CLOSED 0x40 /* the second FIN was acknowledged */
#define BPFGEN_SESSION_RST 0x80 /* a RST passed */

/* bpfgen_snat_v4 value: one SNAT session, keyed by its original tuple. It is
 * the session's single source of truth (liveness, flags); bpfgen_rsnat_v4
 * is only an index from the translated side back to it.
 */
struct bpfgen_snat_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet, either way */
	__be32 nat_addr;
	__be16 nat_port;
	__u8 flags;
	__u8 pad;
	__u32 fin_ack; /* TCP: the ack number that acknowledges the latest FIN (host order) */
	__u32 pad2;
};

/* bpfgen_rsnat_v4 value, keyed by the reply tuple {remote, nat addr, remote
 * port, nat port}: the original source to restore.
 */
struct bpfgen_rsnat_entry {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* bpfgen_frontends key: a service frontend. NodePorts use addr 0, matched
 * when the destination is one of the node's addresses.
 */
struct bpfgen_frontend_key {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* What a frontend asks of the egress SNAT (decided per frontend by the plan,
 * following kube-proxy's KUBE-MARK-MASQ rules).
 */
enum bpfgen_masq {
	BPFGEN_FRONTEND_NONE = 0, /* not a frontend */
	BPFGEN_MASQ_NEVER = 1, /* e.g. externalTrafficPolicy: Local */
	BPFGEN_MASQ_IF_OUTSIDE = 2, /* ClusterIP: only sources outside the cluster pod CIDR */
	BPFGEN_MASQ_ALWAYS = 3, /* external with policy Cluster; ClusterIP, masqueradeAll */
	/* Not a masquerade policy: a Local traffic policy leaves no usable endpoint
	 * on this node while the Service has some elsewhere: new flows are dropped
	 * (kube-proxy rejects only a Service without any endpoint).
	 */
	BPFGEN_MASQ_DROP = 4,
};

struct bpfgen_frontend_value {
	__u8 masq; /* enum bpfgen_masq */
	__u8 pad[3];
};

/* Counters, per CPU, indexed by these. Events first, then drop reasons:
 * every drop goes through bpfgen_drop() (bpfgen_maps.h) with one of the
 * latter, named BPFGEN_DROP_* here and BPFGEN_SVC_DROP_* in the bpf mode's
 * enum bpfgen_svc_counter (whose indices follow these). A new reason here
 * moves the bpf mode's counters up: their map changes size, and `up` replaces
 * a pinned counter map whose size changed (its counts restart).
 */
enum bpfgen_event {
	BPFGEN_EVT_PASS = 0, /* not service traffic: left untouched */
	BPFGEN_EVT_MALFORMED, /* truncated or bad header: left to the stack */
	BPFGEN_EVT_MARKED, /* ingress: marked for SNAT at egress */
	BPFGEN_EVT_SNAT_NEW, /* egress: new session, translated */
	BPFGEN_EVT_SNAT_HIT, /* egress: existing session, translated */
	BPFGEN_EVT_RSNAT, /* ingress: reply translated back */
	BPFGEN_EVT_RSNAT_MISS, /* to a node address in the SNAT range, no live session: untouched */
	BPFGEN_EVT_RECLAIMED, /* an expired session's port was taken over */
	BPFGEN_EVT_MAX,
};

enum bpfgen_drop_reason {
	BPFGEN_DROP_EXHAUSTED = BPFGEN_EVT_MAX, /* no free SNAT port within the probe bound */
	BPFGEN_DROP_MAP_FULL, /* a session map is full */
	BPFGEN_DROP_FRAGMENT, /* needs SNAT but is an IPv4 fragment (not supported yet) */
	BPFGEN_DROP_REWRITE, /* a packet helper (load, store, checksum, resize) failed */
	BPFGEN_DROP_SOURCE_RANGE, /* to an LB IP from outside its loadBalancerSourceRanges */
	BPFGEN_DROP_NO_LOCAL_ENDPOINT, /* new flow, Local policy, endpoints only elsewhere */
	BPFGEN_DROP_VIP_PORT, /* ipvs mode: TCP/UDP to a VIP at no Service's port */
	BPFGEN_COUNTER_MAX,
};

/* bpfgen_src_ranges (LPM trie, spec.loadBalancerSourceRanges): prefixlen counts
 * the bits after it. Per LB IP:port/proto, one entry of prefixlen 64 (the
 * frontend, any source) says "drop", and one of 64 + n per allowed range
 * says "pass": the longest match decides. A frontend without ranges has no
 * entry at all.
 */
struct bpfgen_src_range_key {
	__u32 prefixlen;
	__be32 vip;
	__be16 port;
	__u8 proto;
	__u8 pad;
	__be32 saddr;
};

struct bpfgen_src_range_value {
	__u32 allow;
};

/* The generic build reads every specialized value from this, at run time. */
#define BPFGEN_MAX_NODE_ADDRS 8

struct bpfgen_config {
	__be32 node_addrs[BPFGEN_MAX_NODE_ADDRS];
	__u32 n_node_addrs;
	__be32 cluster_pod_net;
	__be32 cluster_pod_mask;
	__u32 snat_port_min; /* host order */
	__u32 snat_port_count;
	__u32 mark;
	__u32 hash_seed;
	__u8 proto_tcp;
	__u8 proto_udp;
	__u8 proto_icmp;
	__u8 pad;
	__be32 service_net;
	__be32 service_mask;
	__u64 timeout_tcp_established_ns;
	__u64 timeout_tcp_transitory_ns;
	__u64 timeout_udp_ns;
	__u64 timeout_icmp_ns;
	__u64 timeout_tcp_time_wait_ns;
	__u64 timeout_tcp_close_ns;
	__u32 selection_seed; /* bpf mode: datapath.selectionSeed */
	__u32 pad2;
};

/* ---- bpf mode (docs/datapath-bpf.md) ---- */

/* bpfgen_nat_v4 value: one NAT session, keyed by the original tuple (client,
 * VIP, client port, VIP port). The first fields are bpfgen_snat_entry's, so
 * the session code of bpfgen_nat.h serves both modes; nat_addr/nat_port are
 * 0 when the flow is not SNATed.
 */
struct bpfgen_nat_entry {
	__u64 last_seen_ns;
	__be32 nat_addr;
	__be16 nat_port;
	__u8 flags;
	__u8 pad;
	__u32 fin_ack;
	__u32 pad2;
	__be32 backend_addr;
	__be16 backend_port;
	__u16 backend_gen; /* reserved: backend generations are later work */
};

/* bpfgen_rnat_v4 value, keyed by the reply tuple as it arrives (backend,
 * SNAT addr or client, backend port, SNAT port or client port): the client
 * and the frontend to restore.
 */
struct bpfgen_rnat_entry {
	__be32 addr; /* client */
	__be16 port;
	__u16 pad;
	__be32 vip;
	__be16 vip_port;
	__u16 pad2;
};

/* A frontend: bpfgen_svc_frontends value (map builds), .rodata array element
 * (frontends as code).
 */
struct bpfgen_svc_value {
	__u32 id;
	__u16 n_backends; /* 0: reject */
	__u8 masq; /* enum bpfgen_masq */
	__u8 pad;
	__u32 first; /* frontends as code: its backends are bpfgen_backends[first, first + n) */
	__u32 table; /* frontends as code: its Maglev table in bpfgen_maglev[] */
	__u32 affinity_s; /* sessionAffinity ClientIP: timeoutSeconds; 0: none */
	__u32 affinity_id; /* the frontend id its Service port's affinity entries are kept under */
	/* externalTrafficPolicy: Local: the ClusterIP:port whose frontend (policy Cluster)
	 * serves clients from cluster.podCIDR (kube-proxy's "short-circuit pod traffic");
	 * 0: none.
	 */
	__be32 pod_vip;
	__be16 pod_port;
	__u16 pad2;
};

/* bpfgen_affinity_v4 (sessionAffinity: ClientIP): a client's backend per Service port. */
struct bpfgen_affinity_key {
	__be32 client;
	__u32 affinity_id;
};

struct bpfgen_affinity_entry {
	__u64 last_seen_ns; /* the last new flow that used it */
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct bpfgen_backend_key {
	__u32 frontend;
	__u32 index;
};

/* bpfgen_svc_members key: sessions keep their backend while this exists. */
struct bpfgen_backend_member {
	__u32 frontend;
	__be32 addr;
	__be16 port;
	__u16 pad;
};

struct bpfgen_backend {
	__be32 addr;
	__be16 port;
	__u16 pad;
};

/* A slice of bpfgen_backends[] (frontends as code): a frontend's member list. */
struct bpfgen_svc_span {
	__u32 first;
	__u32 n;
};

/* bpfgen_sock_rev_v4 (datapath.socketLB): what a node process's socket was
 * translated to, keyed by the socket and the backend, so that recvmsg4 and
 * getpeername4 show the VIP:port it asked for.
 */
struct bpfgen_sock_rev_key {
	__u64 cookie; /* bpf_get_socket_cookie: unique per socket, never reused */
	__be32 addr; /* backend */
	__be16 port;
	__u16 pad;
};

struct bpfgen_sock_rev_value {
	__be32 vip;
	__be16 vip_port;
	__u16 pad;
};

/* The bpf mode's counters follow the ipvs mode's; its counter map has
 * BPFGEN_SVC_COUNTER_MAX slots. New ones are appended: a pinned counter map
 * keeps its indices across an upgrade. BPFGEN_SVC_DROP_* are drop reasons
 * (bpfgen_drop()), the rest events.
 */
enum bpfgen_svc_counter {
	BPFGEN_SVC_DNAT_NEW = BPFGEN_COUNTER_MAX, /* new flow: backend selected, translated */
	BPFGEN_SVC_DNAT_HIT, /* existing session: translated */
	BPFGEN_SVC_RDNAT, /* reply translated back to VIP:port -> client */
	BPFGEN_SVC_REJECT_NO_BACKEND, /* frontend without backends: RST / ICMP unreachable sent */
	BPFGEN_SVC_DROP_BACKEND_GONE, /* TCP non-SYN of a session whose backend was removed */
	BPFGEN_SVC_FIB_FALLBACK, /* translated, but passed to the stack (no usable route) */
	BPFGEN_SVC_REDIRECT, /* translated and redirected (bpf_redirect_neigh) */
	BPFGEN_SVC_ICMP_ECHO_VIP, /* echo request to a VIP answered */
	BPFGEN_SVC_AFFINITY_HIT, /* new flow sent to its client's ClientIP-affinity backend */
	BPFGEN_SVC_XDP_TO_TC, /* XDP: not back out of its device: passed as it came, to tc */
	BPFGEN_SVC_DROP_NO_BACKEND, /* no backend, and no answer: to a RST, with IP options */
	BPFGEN_SVC_REJECT_VIP_PORT, /* to a VIP in the service CIDR at no frontend's port: answered */
	BPFGEN_SVC_DROP_UNALLOCATED, /* to a service-CIDR address that is no VIP */
	BPFGEN_SVC_COUNTER_MAX,
};

#endif /* BPFGEN_TYPES_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — maps. Sizes come from node_config.h (the plan). Every map is pinned
 * by name, so the programs of one build share them once loaded by the runtime.
 */
#ifndef BPFGEN_MAPS_H
#define BPFGEN_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"

#ifndef BPFGEN_MODE_BPF
/* Forward SNAT sessions, keyed by the original tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_snat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_snat_v4 SEC(".maps");

/* Reverse index, keyed by the reply tuple {remote, nat addr, remote port, nat port}. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_rsnat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_rsnat_v4 SEC(".maps");

/* The session code of bpfgen_nat.h names its maps and entries through these. */
#define BPFGEN_FWD_MAP bpfgen_snat_v4
#define BPFGEN_REV_MAP bpfgen_rsnat_v4
typedef struct bpfgen_snat_entry bpfgen_fwd_entry_t;
typedef struct bpfgen_rsnat_entry bpfgen_rev_entry_t;
#define BPFGEN_COUNTER_SLOTS BPFGEN_COUNTER_MAX
#else
/* bpf mode: NAT sessions (DNAT and SNAT halves), keyed by the original tuple. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_nat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_nat_v4 SEC(".maps");

/* bpf mode: reply tuple as it arrives -> client and frontend. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_tuple4);
	__type(value, struct bpfgen_rnat_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_rnat_v4 SEC(".maps");

#define BPFGEN_FWD_MAP bpfgen_nat_v4
#define BPFGEN_REV_MAP bpfgen_rnat_v4
typedef struct bpfgen_nat_entry bpfgen_fwd_entry_t;
typedef struct bpfgen_rnat_entry bpfgen_rev_entry_t;
#define BPFGEN_COUNTER_SLOTS BPFGEN_SVC_COUNTER_MAX

#if BPFGEN_FRONTENDS_IN_MAP
/* Frontends and their backend lists, from the build's map_init.json. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_frontend_key);
	__type(value, struct bpfgen_svc_value);
	__uint(max_entries, BPFGEN_FRONTENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_svc_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_backend_key);
	__type(value, struct bpfgen_backend);
	__uint(max_entries, BPFGEN_SVC_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_svc_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_backend_member);
	__type(value, __u32);
	__uint(max_entries, BPFGEN_SVC_BACKENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_svc_members SEC(".maps");
#endif

#if BPFGEN_SVC_AFFINITY
/* sessionAffinity: ClientIP: (client, Service port) -> backend, LRU: an entry
 * is only a preference, losing one under pressure costs a re-selection.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpfgen_affinity_key);
	__type(value, struct bpfgen_affinity_entry);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_affinity_v4 SEC(".maps");
#endif

#ifdef BPFGEN_SOCK_LB
/* datapath.socketLB: (socket cookie, backend addr, port) -> the VIP:port the
 * socket asked for; written by connect4/sendmsg4, read by recvmsg4 and
 * getpeername4. LRU: entries are not removed when their socket closes (a
 * cookie is never reused, so a stale one matches nothing), the oldest go.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct bpfgen_sock_rev_key);
	__type(value, struct bpfgen_sock_rev_value);
	__uint(max_entries, BPFGEN_SNAT_MAX_SESSIONS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_sock_rev_v4 SEC(".maps");
#endif

#if BPFGEN_SCHED_MAGLEV && BPFGEN_MAGLEV_IN_MAP
/* A frontend's Maglev table: slot -> index into its backends (bpfgen/maglev.py). */
struct bpfgen_maglev_row {
	__u16 slot[BPFGEN_MAGLEV_SIZE];
};

/* Maglev tables, one row (a whole table) per frontend id: the runtime writes a
 * table with one update, and the kernel keeps 2 bytes a slot (an array map of
 * __u16 values would round each slot up to 8).
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct bpfgen_maglev_row);
	__uint(max_entries, BPFGEN_MAGLEV_ROWS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_svc_maglev SEC(".maps");

/* Slot h % M of frontend @id's Maglev table: a backend index, or 0xffff. */
static __always_inline __u32 bpfgen_svc_maglev_slot(__u32 id, __u32 h)
{
	struct bpfgen_maglev_row *row = bpf_map_lookup_elem(&bpfgen_svc_maglev, &id);
	__u32 slot = h % BPFGEN_MAGLEV_SIZE;

	/* clang knows slot < M and would drop the check the verifier (which does
	 * not track modulo bounds) needs: hide the value from clang.
	 */
	asm volatile("" : "+r"(slot));
	if (!row || slot >= BPFGEN_MAGLEV_SIZE)
		return 0xffff;
	return row->slot[slot];
}
#endif
#endif /* BPFGEN_MODE_BPF */

#if BPFGEN_SOURCE_RANGES
/* spec.loadBalancerSourceRanges of every LB IP:port/proto that has them, from
 * the build's map_init.json (struct bpfgen_src_range_key says how it matches).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct bpfgen_src_range_key);
	__type(value, struct bpfgen_src_range_value);
	__uint(max_entries, BPFGEN_SRC_RANGES_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required of an LPM trie */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_src_ranges SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, BPFGEN_COUNTER_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_counters SEC(".maps");

#if BPFGEN_FRONTENDS_IN_MAP && !defined(BPFGEN_MODE_BPF)
/* Service frontends, filled by the runtime from the build's map_init.json. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct bpfgen_frontend_key);
	__type(value, struct bpfgen_frontend_value);
	__uint(max_entries, BPFGEN_FRONTENDS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_frontends SEC(".maps");
#endif

/* bpf_map_update_elem as an int. Before Linux 6.4 the verifier calls the map's
 * own update op, which returns int: only the low 32 bits of r0 are defined, so
 * a 64-bit comparison with -EEXIST fails there (seen on 6.1: every probe after
 * the first was lost). Compare the result as the int it is.
 */
static __always_inline int bpfgen_map_update(void *map, const void *key, const void *value,
					     __u64 flags)
{
	return (int)bpf_map_update_elem(map, key, value, flags);
}

static __always_inline void bpfgen_count(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&bpfgen_counters, &counter);

	if (v)
		*v += 1;
}

#ifndef BPFGEN_PROGRAM_ID
#define BPFGEN_PROGRAM_ID 0 /* the program file defines it: its manifest index */
#endif

/* Drop notifications, as Cilium's: one record per dropped packet, read by
 * `bpfgen status --drops`. Shared by every program of the node (pinned by
 * name). With no reader the ring fills and later records are lost, which
 * costs the drop path one failed reservation; the counters count every drop.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BPFGEN_DROP_RING_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bpfgen_drops SEC(".maps");

/* Inlined: as a global function (one copy, verified once) it cost the
 * verifier's pruning more than it saved; the ipvs mode's frozen ingress
 * walked 1,886 instructions instead of 999, more than its generic build.
 */
static __always_inline int bpfgen_drop_notify(__u32 reason, const struct bpfgen_tuple4 *t)
{
	struct bpfgen_drop_event *e;

	e = bpf_ringbuf_reserve(&bpfgen_drops, sizeof(*e), 0);
	if (!e)
		return -1; /* full: nobody reads */
	e->ns = bpf_ktime_get_ns();
	e->reason = reason;
	e->program = BPFGEN_PROGRAM_ID;
	if (t)
		e->t = *t;
	else
		__builtin_memset(&e->t, 0, sizeof(e->t));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/* The one way out for a dropped packet: named reason, counted, notified with
 * the packet's tuple @t (NULL: none parsed). @reason: an enum
 * bpfgen_drop_reason, or in the bpf mode a BPFGEN_SVC_DROP_* of enum
 * bpfgen_svc_counter (tests/build checks that every return of a drop verdict
 * in the templates comes from here).
 */
static __always_inline int bpfgen_drop(__u32 reason, const struct bpfgen_tuple4 *t)
{
	bpfgen_count(reason);
	bpfgen_drop_notify(reason, t);
	return BPFGEN_DROP;
}

static __always_inline int bpfgen_pass(enum bpfgen_event event)
{
	bpfgen_count(event);
	return BPFGEN_PASS;
}

#endif /* BPFGEN_MAPS_H */

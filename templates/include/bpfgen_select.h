/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — the bpf mode's frontend lookup and backend selection, shared by
 * svc_in (tc, per packet: bpfgen_svc.h) and the cgroup sock_addr programs
 * (per socket: bpfgen_sock.h), so both pick a backend the same way: the same
 * tables, the same scheduler over the same selection seed, the same ClientIP
 * affinity entries. Only the hash's input and the client differ (the caller
 * passes them).
 *
 * The program file defines, before including this header, what the plan
 * generated: with frontends as code, bpfgen_svc_lookup_inline(),
 * bpfgen_svc_info[], bpfgen_backends[], bpfgen_maglev[][] (Maglev in .rodata),
 * bpfgen_svc_bounded() and bpfgen_svc_mod_inline().
 */
#ifndef BPFGEN_SELECT_H
#define BPFGEN_SELECT_H

#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"
#include "bpfgen_maps.h"
#include "bpfgen_nat.h"

/* A frontend that is not one. */
#define BPFGEN_SVC_NONE ((__u32)~0U)

/* A hidden frontend's address: 0.0.0.0/8, "this network", a source only
 * (RFC 1122 3.2.1.3). A Service port's pods, when both its traffic policies are
 * Local, have a frontend of their own keyed there (the Cluster policy's
 * endpoints, kube-proxy's short-circuit): found through a frontend's pod_vip,
 * never as a packet's or a connect()'s destination.
 */
static __always_inline bool bpfgen_svc_hidden(__be32 addr)
{
#if BPFGEN_SVC_HIDDEN
	return !(addr & bpf_htonl(0xff000000));
#else
	return false;
#endif
}

/* The frontend at addr:port/proto into *v; false when there is none. */
static __always_inline bool bpfgen_svc_lookup(__be32 addr, __be16 port, __u8 proto,
					      struct bpfgen_svc_value *v)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_frontend_key k = { .addr = addr, .port = port, .proto = proto };
	struct bpfgen_svc_value *found;

	/* NodePorts are keyed by address 0, found only through a node address. */
	found = addr ? bpf_map_lookup_elem(&bpfgen_svc_frontends, &k) : NULL;
	if (!found) {
		if (!bpfgen_is_node_addr(addr))
			return false;
		k.addr = 0;
		found = bpf_map_lookup_elem(&bpfgen_svc_frontends, &k);
		if (!found)
			return false;
	}
	*v = *found;
	return true;
#else
	__u32 id = bpfgen_svc_lookup_inline(addr, port, proto);

	if (id >= BPFGEN_SVC_FRONTENDS)
		return false;
	*v = bpfgen_svc_info[id];
	return true;
#endif
}

/* The backend of a new flow of hash @h (under the selection seed): 0, or -1. */
static __always_inline int bpfgen_svc_pick(const struct bpfgen_svc_value *v, __u32 h,
					   struct bpfgen_backend *b)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_backend_key k = { .frontend = v->id };
	struct bpfgen_backend *found;

	if (!v->n_backends)
		return -1;
#if BPFGEN_SCHED_MAGLEV
	k.index = bpfgen_svc_maglev_slot(v->id, h);
#else
	k.index = h % v->n_backends;
#endif
	found = bpf_map_lookup_elem(&bpfgen_svc_backends, &k);
	if (!found)
		return -1;
	*b = *found;
	return 0;
#else
	__u32 i, idx;

#if BPFGEN_SCHED_MAGLEV && BPFGEN_MAGLEV_IN_MAP
	i = bpfgen_svc_maglev_slot(v->id, h);
#elif BPFGEN_SCHED_MAGLEV
	__u32 t = v->table, slot = bpfgen_svc_bounded(h % BPFGEN_MAGLEV_SIZE);

	if (t >= BPFGEN_MAGLEV_TABLES || slot >= BPFGEN_MAGLEV_SIZE)
		return -1;
	i = bpfgen_maglev[t][slot];
#else
	i = bpfgen_svc_mod_inline(h, v->n_backends);
#endif
	if (i >= v->n_backends)
		return -1;
	idx = bpfgen_svc_bounded(v->first + i);
	if (idx >= BPFGEN_SVC_BACKENDS_TOTAL)
		return -1;
	*b = bpfgen_backends[idx];
	return 0;
#endif
}

/* The sock object (BPFGEN_SOCK_OBJECT) needs it only for affinity (selectable). */
#if !BPFGEN_FRONTENDS_IN_MAP && (BPFGEN_SVC_AFFINITY || !defined(BPFGEN_SOCK_OBJECT))
/* Binary search of addr:port in bpfgen_backends[first, first + n), sorted.
 * A global function, verified once: inlined, the verifier walked its loop
 * once per caller state (about 40k instructions processed).
 */
__noinline int bpfgen_svc_has_backend_inline(__u32 first, __u32 n, __be32 addr, __be16 port)
{
	__u64 want = ((__u64)bpf_ntohl(addr) << 16) | bpf_ntohs(port);
	__u32 lo = first, hi = first + n;
	int step;

	/* BPFGEN_SVC_SEARCH_STEPS halvings cover the largest backend list. */
#pragma clang loop unroll(disable)
	for (step = 0; step < BPFGEN_SVC_SEARCH_STEPS; step++) {
		const struct bpfgen_backend *b;
		__u32 mid;
		__u64 got;

		if (lo >= hi)
			return 0;
		mid = bpfgen_svc_bounded(lo + (hi - lo) / 2);
		if (mid >= BPFGEN_SVC_BACKENDS_TOTAL)
			return 0;
		b = &bpfgen_backends[mid];
		got = ((__u64)bpf_ntohl(b->addr) << 16) | bpf_ntohs(b->port);
		if (got == want)
			return 1;
		if (got < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}
#endif

#if BPFGEN_SVC_AFFINITY
/* Is addr:port one of frontend @v's selectable backends (not a draining member)? */
static __always_inline bool bpfgen_svc_selectable(const struct bpfgen_svc_value *v, __be32 addr,
						  __be16 port)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_backend_member k = { .frontend = v->id, .addr = addr, .port = port };
	__u32 *draining = bpf_map_lookup_elem(&bpfgen_svc_members, &k);

	return draining && !*draining;
#else
	return bpfgen_svc_has_backend_inline(v->first, v->n_backends, addr, port);
#endif
}

/* sessionAffinity ClientIP: the backend of this client's last new flow to the
 * Service port (any of its frontends: v->affinity_id), if that was less than
 * timeoutSeconds ago and the backend is still selectable; touched, as
 * kube-proxy's `recent --set` is on every new connection. 0 and *b, or -1.
 */
static __always_inline int bpfgen_svc_affine(const struct bpfgen_svc_value *v, __be32 client,
					     __u64 now, struct bpfgen_backend *b)
{
	struct bpfgen_affinity_key k = { .client = client, .affinity_id = v->affinity_id };
	struct bpfgen_affinity_entry *a = bpf_map_lookup_elem(&bpfgen_affinity_v4, &k);

	if (!a || now - a->last_seen_ns >= (__u64)v->affinity_s * 1000000000ULL ||
	    !bpfgen_svc_selectable(v, a->addr, a->port))
		return -1;
	a->last_seen_ns = now;
	b->addr = a->addr;
	b->port = a->port;
	b->pad = 0;
	return 0;
}

/* Remember @b as this client's backend for the Service port. */
static __always_inline void bpfgen_svc_affinity_set(const struct bpfgen_svc_value *v, __be32 client,
						    __u64 now, const struct bpfgen_backend *b)
{
	struct bpfgen_affinity_key k = { .client = client, .affinity_id = v->affinity_id };
	struct bpfgen_affinity_entry a = { .last_seen_ns = now, .addr = b->addr, .port = b->port };

	/* An LRU map: a full one evicts, so the update cannot fail for room. */
	bpf_map_update_elem(&bpfgen_affinity_v4, &k, &a, BPF_ANY);
}
#endif

/* The backend of a new flow to frontend @v (which has backends) from @client, of
 * selection hash @h (under BPFGEN_SELECTION_SEED): the client's
 * ClientIP-affinity backend, or the scheduler's choice (remembered for
 * affinity). 0, or -1. With affinity a global function: verified once, its
 * result is one state for the rest of the program however it was chosen
 * (inlined, the affinity path doubled the verifier's work on the SNAT code
 * after it: 8,761 instructions processed instead of 5,396). Without, inlined
 * (a call would cost about 150 more).
 */
#if BPFGEN_SVC_AFFINITY
#define BPFGEN_SVC_SELECT_FN __noinline
#else
#define BPFGEN_SVC_SELECT_FN static __always_inline
#endif
BPFGEN_SVC_SELECT_FN int bpfgen_svc_select(const struct bpfgen_svc_value *v, __be32 client, __u32 h,
					   struct bpfgen_backend *b)
{
#if BPFGEN_SVC_AFFINITY
	/* Read here, not passed in: clang passes no value for an argument the
	 * function does not use, and the verifier refuses the call then.
	 */
	__u64 now = bpf_ktime_get_ns();

	/* So for h: when no frontend has more than one backend, the random
	 * scheduler's h % n folds to 0 (BPFGEN_ARG_USED).
	 */
	BPFGEN_ARG_USED(h);
#endif

	if (!v || !b)
		return -1;
#if BPFGEN_SVC_AFFINITY
	if (v->affinity_s && !bpfgen_svc_affine(v, client, now, b)) {
		bpfgen_count(BPFGEN_SVC_AFFINITY_HIT);
		return 0;
	}
#endif
	if (bpfgen_svc_pick(v, h, b))
		return -1;
#if BPFGEN_SVC_AFFINITY
	if (v->affinity_s)
		bpfgen_svc_affinity_set(v, client, now, b);
#endif
	return 0;
}

#endif /* BPFGEN_SELECT_H */

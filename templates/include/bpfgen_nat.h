/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — SNAT: sessions, port allocation, forward and reverse translation.
 *
 * A session is one bpfgen_snat_v4 entry (original tuple -> nat addr/port,
 * liveness, flags) plus one bpfgen_rsnat_v4 entry indexing it from the reply
 * side. Mapping is endpoint-dependent: the reverse key holds the remote
 * endpoint, so one nat port serves many remotes. A port is taken atomically
 * by inserting the reverse entry with BPF_NOEXIST.
 */
#ifndef BPFGEN_NAT_H
#define BPFGEN_NAT_H

#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"
#include "bpfgen_parse.h"
#include "bpfgen_maps.h"

/* How many ports a new session tries before counting exhaustion. Each probe
 * is an independent hash, so at occupancy o the failure odds are o^probes
 * (90 %: 1.4e-6 with 128; measured: make bench-ports).
 */
#define BPFGEN_SNAT_PROBES 128

/* Verdicts of the NAT steps, besides BPFGEN_PASS/BPFGEN_DROP. */
#define BPFGEN_NOT_MINE (-1)

/* murmur3's 32-bit finalizer: cheap, and every input bit reaches every output bit. */
static __always_inline __u32 bpfgen_mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

/* Hash of a tuple as loaded from the packet: __be32/__be16 values are used as
 * the integers the CPU reads (little-endian on x86), which the Python model
 * reproduces with int.from_bytes(..., "little").
 */
static __always_inline __u32 bpfgen_tuple_hash_seeded(__u32 seed, const struct bpfgen_tuple4 *t)
{
	__u32 h = seed;

	h = bpfgen_mix32(h ^ t->saddr);
	h = bpfgen_mix32(h ^ t->daddr);
	h = bpfgen_mix32(h ^ (((__u32)t->sport << 16) | t->dport));
	return bpfgen_mix32(h ^ t->proto);
}

/* The SNAT port-probing hash: seeded per build (BPFGEN_HASH_SEED). */
static __always_inline __u32 bpfgen_tuple_hash(const struct bpfgen_tuple4 *t)
{
	return bpfgen_tuple_hash_seeded(BPFGEN_HASH_SEED, t);
}

/* How long a session may stay idle (docs/datapath.md "The TCP session
 * lifecycle"). A TCP session after a RST: tcpClose; after both FINs and the
 * acknowledgment of the second: tcpTimeWait (the far side may hold TIME_WAIT
 * on its tuple); established (answered, no FIN/RST): tcpEstablished;
 * otherwise (not yet answered, or half-closed): tcpTransitory.
 */
static __always_inline __u64 bpfgen_timeout_ns(__u8 proto, __u8 flags)
{
	if (proto == IPPROTO_TCP) {
		if (flags & BPFGEN_SESSION_RST)
			return BPFGEN_TIMEOUT_TCP_CLOSE_NS;
		if (flags & BPFGEN_SESSION_CLOSED)
			return BPFGEN_TIMEOUT_TCP_TIME_WAIT_NS;
		return ((flags & BPFGEN_SESSION_SEEN_REPLY) && !(flags & BPFGEN_SESSION_CLOSING)) ?
			       BPFGEN_TIMEOUT_TCP_ESTABLISHED_NS :
			       BPFGEN_TIMEOUT_TCP_TRANSITORY_NS;
	}
	if (proto == IPPROTO_UDP)
		return BPFGEN_TIMEOUT_UDP_NS;
	return BPFGEN_TIMEOUT_ICMP_NS;
}

/* Another CPU may have stamped last_seen after we read the clock: a session
 * seen "in the future" is alive, not 2^64 ns old.
 */
static __always_inline bool bpfgen_expired(const bpfgen_fwd_entry_t *e, __u8 proto, __u64 now)
{
	__u64 seen = e->last_seen_ns;

	return now > seen && now - seen > bpfgen_timeout_ns(proto, e->flags);
}

/* The TCP close of a session, one packet at a time, in direction orig
 * (@reply 0) or reply (1). fin_ack holds the acknowledgment number of the
 * latest FIN; ACKs are compared with it, so a FIN that crossed the other
 * side's (simultaneous close) is never taken for an acknowledged one.
 * - a RST: CLOSING | RST;
 * - the first FIN: which side sent it (REPLY_FIRST);
 * - the second FIN: FIN_ACKED when it acknowledges the first, i.e. its
 *   sender closed passively (CLOSE_WAIT -> LAST_ACK: no TIME_WAIT there);
 * - any other packet acknowledging the second FIN from the first closer:
 *   CLOSED.
 * Computed with masks, not branches: every bit is independent, and as
 * branches they multiplied the verifier's paths (svc_in: 5,664 -> 10,771
 * processed instructions).
 */
static __always_inline __u8 bpfgen_tcp_close_step(__u8 flags, __u32 *fin_ack,
						  const struct bpfgen_pkt *p, __u32 reply)
{
	__u32 f = flags, tf = p->tcp_flags, diff = p->tcp_ack ^ *fin_ack;
	__u32 acks = ((tf & BPFGEN_TCP_ACK) >> 4) & (((diff | (0U - diff)) >> 31) ^ 1);
	__u32 had_fin = ((f >> 2) | (f >> 3)) & 1; /* FIN_ORIG or FIN_REPLY */
	__u32 both = (f >> 2) & (f >> 3) & 1;
	__u32 new_fin = (tf & BPFGEN_TCP_FIN) & (((f >> (2 + reply)) & 1) ^ 1);
	__u32 first_closer = ((f >> 4) & 1) ^ reply ^ 1; /* this packet is the first closer's */
	__u32 closed = (new_fin ^ 1) & both & acks & first_closer;

	f |= (0U - ((tf & BPFGEN_TCP_RST) >> 2)) & (BPFGEN_SESSION_CLOSING | BPFGEN_SESSION_RST);
	f |= (0U - (new_fin & (had_fin ^ 1) & reply)) & BPFGEN_SESSION_REPLY_FIRST;
	f |= (0U - (new_fin & had_fin & acks)) & BPFGEN_SESSION_FIN_ACKED;
	f |= (0U - new_fin) & ((BPFGEN_SESSION_FIN_ORIG << reply) | BPFGEN_SESSION_CLOSING);
	f |= (0U - closed) & BPFGEN_SESSION_CLOSED;
	*fin_ack ^= (*fin_ack ^ p->tcp_end) & (0U - new_fin);
	return f;
}

/* Is the session over with nothing left to protect? Both FINs acknowledged,
 * and either no SNAT port, or the reply side (the backend, the only one that
 * sees the SNAT port) closed passively and so holds no TIME_WAIT on it: the
 * port may serve any other flow at once.
 */
static __always_inline bool bpfgen_session_released(const bpfgen_fwd_entry_t *e)
{
	if (!(e->flags & BPFGEN_SESSION_CLOSED))
		return false;
	return !e->nat_port ||
	       (e->flags & (BPFGEN_SESSION_FIN_ACKED | BPFGEN_SESSION_REPLY_FIRST)) ==
		       BPFGEN_SESSION_FIN_ACKED;
}

/* A packet of the session passed, in direction orig (@add 0) or reply (@add
 * BPFGEN_SESSION_SEEN_REPLY). A bare SYN in the orig direction starts a new
 * incarnation of the same tuple (its port and backend kept: the reopen rule).
 * Returns 1 when the session is released (bpfgen_session_released): the
 * caller deletes it and its reverse entry; this last packet is still
 * translated. A global function: one copy, verified once on its own; inlined,
 * the close step's branches multiplied the verifier's states at every call
 * site (egress: 4,714 -> 14,811 processed instructions).
 */
#ifndef BPFGEN_SOCK_OBJECT /* the socket programs keep no sessions */
__noinline int bpfgen_session_touch(bpfgen_fwd_entry_t *e, const struct bpfgen_pkt *p, __u64 now,
				    __u32 add)
{
	__u8 flags;
	__u32 fin_ack;

	if (!e || !p)
		return 0;
	flags = e->flags | add;
	fin_ack = e->fin_ack;
	if (p->t.proto == IPPROTO_TCP) {
		if ((p->tcp_flags & (BPFGEN_TCP_SYN | BPFGEN_TCP_ACK | BPFGEN_TCP_FIN |
				     BPFGEN_TCP_RST)) == BPFGEN_TCP_SYN &&
		    !add)
			flags = 0;
		else
			flags = bpfgen_tcp_close_step(flags, &fin_ack, p, !!add);
	}
	e->last_seen_ns = now;
	e->flags = flags;
	e->fin_ack = fin_ack;
	return bpfgen_session_released(e);
}
#endif

/* The forward tuple a reverse entry points back to. */
static __always_inline void bpfgen_rsnat_owner(const struct bpfgen_tuple4 *rkey,
					       const bpfgen_rev_entry_t *r,
					       struct bpfgen_tuple4 *fkey)
{
	fkey->saddr = r->addr;
#ifdef BPFGEN_MODE_BPF
	fkey->daddr = r->vip; /* the reply comes from the backend, the flow went to the VIP */
	fkey->dport = r->vip_port;
#else
	fkey->daddr = rkey->saddr;
	fkey->dport = rkey->sport;
#endif
	fkey->sport = r->port;
	fkey->proto = rkey->proto;
	fkey->pad[0] = fkey->pad[1] = fkey->pad[2] = 0;
}

/* The reply tuple a session's reverse entry is keyed by, from its forward key. */
static __always_inline void bpfgen_session_rkey(const struct bpfgen_tuple4 *fkey,
						const bpfgen_fwd_entry_t *e,
						struct bpfgen_tuple4 *rkey)
{
#ifdef BPFGEN_MODE_BPF
	/* (backend, SNAT addr or client, bport, SNAT port or cport) */
	rkey->saddr = e->backend_addr;
	rkey->sport = e->backend_port;
	rkey->daddr = e->nat_port ? e->nat_addr : fkey->saddr;
	rkey->dport = e->nat_port ? e->nat_port : fkey->sport;
#else
	/* (remote, nat addr, remote port, nat port) */
	rkey->saddr = fkey->daddr;
	rkey->sport = fkey->dport;
	rkey->daddr = e->nat_addr;
	rkey->dport = e->nat_port;
#endif
	rkey->proto = fkey->proto;
	rkey->pad[0] = rkey->pad[1] = rkey->pad[2] = 0;
}

static __always_inline int bpfgen_rewrite_source(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
						 __be32 addr, __be16 port)
{
	__u64 l4_flags = p->l4_csum_flags & ~BPFGEN_F_CSUM_NEVER_ZERO; /* not a helper flag */

	/* sport_off 0: the packet has no source port (ICMP echo reply). */
	if (p->sport_off && port != p->t.sport &&
	    bpfgen_ctx_rewrite_port(ctx, p->sport_off, p->l4_csum_off, l4_flags, p->t.sport, port))
		return -1;
	return bpfgen_ctx_rewrite_addr(ctx, BPFGEN_IP_SADDR_OFF, BPFGEN_IP_CSUM_OFF,
				       p->l4_pseudo ? p->l4_csum_off : 0, l4_flags, p->t.saddr,
				       addr);
}

static __always_inline int bpfgen_rewrite_dest(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
					       __be32 addr, __be16 port)
{
	__u64 l4_flags = p->l4_csum_flags & ~BPFGEN_F_CSUM_NEVER_ZERO; /* not a helper flag */

	if (p->dport_off && port != p->t.dport) {
		if (bpfgen_ctx_rewrite_port(ctx, p->dport_off, p->l4_csum_off, l4_flags, p->t.dport,
					    port))
			return -1;
		if ((p->l4_csum_flags & BPFGEN_F_CSUM_NEVER_ZERO) &&
		    bpfgen_ctx_csum_never_zero(ctx, p->l4_csum_off))
			return -1;
	}
	return bpfgen_ctx_rewrite_addr(ctx, BPFGEN_IP_DADDR_OFF, BPFGEN_IP_CSUM_OFF,
				       p->l4_pseudo ? p->l4_csum_off : 0, l4_flags, p->t.daddr,
				       addr);
}

#ifndef BPFGEN_MODE_BPF /* bpf mode: bpfgen_svc_forget() */
/* Drop an expired session's reverse entry, unless another flow took it over. */
static __always_inline void bpfgen_forget_reverse(const struct bpfgen_pkt *p,
						  const struct bpfgen_snat_entry *old)
{
	struct bpfgen_tuple4 rkey = {
		.saddr = p->t.daddr,
		.daddr = old->nat_addr,
		.sport = p->t.dport,
		.dport = old->nat_port,
		.proto = p->t.proto,
	};
	struct bpfgen_rsnat_entry *r = bpf_map_lookup_elem(&bpfgen_rsnat_v4, &rkey);

	if (r && r->addr == p->t.saddr && r->port == p->t.sport)
		bpf_map_delete_elem(&bpfgen_rsnat_v4, &rkey);
}
#endif

#ifdef BPFGEN_SNAT_ALLOCATES /* the programs that allocate ports (egress, svc_in, svc_xdp) */
/* A reverse entry is stale when the session it indexes is gone, expired or
 * now translated to another port: its port may be taken over. A global
 * function, verified once: inlined into the bpf_loop callback, its expiry
 * branches were walked again at every iteration the verifier explores there.
 */
__noinline int bpfgen_rsnat_stale(const struct bpfgen_tuple4 *rkey_arg, __u64 now)
{
	struct bpfgen_tuple4 fkey, k;
	const struct bpfgen_tuple4 *rkey = &k;
	bpfgen_rev_entry_t *r;
	bpfgen_fwd_entry_t *e;

	if (!rkey_arg)
		return false;
	/* A copy on this frame's stack: 6.1's verifier takes no argument memory
	 * (PTR_TO_MEM) as a map key ("R2 type=mem expected=fp, ... map_key").
	 */
	__builtin_memcpy(&k, rkey_arg, sizeof(k));
	r = bpf_map_lookup_elem(&BPFGEN_REV_MAP, rkey);
	if (!r)
		return true;
	bpfgen_rsnat_owner(rkey, r, &fkey);
	e = bpf_map_lookup_elem(&BPFGEN_FWD_MAP, &fkey);
	if (!e)
		return true;
	if (e->nat_addr != rkey->daddr || e->nat_port != rkey->dport)
		return true;
	if (bpfgen_expired(e, rkey->proto, now)) {
		bpf_map_delete_elem(&BPFGEN_FWD_MAP, &fkey);
		return true;
	}
	return false;
}

/* State of one port search, shared with the bpf_loop callback. */
struct bpfgen_probe {
	struct bpfgen_tuple4 rkey; /* reply tuple; dport is the candidate port */
	bpfgen_rev_entry_t rval;
	__u64 now;
	__u32 hash;
	__be16 keep; /* the flow's own source port when it is in the SNAT range, else 0 */
	int result; /* 0: port taken; -EEXIST: none free yet; other: map error */
	bool reclaimed;
};

/* Port preservation (as nf_nat): a new flow keeps its own source port when
 * that port is in the SNAT range and no flow holds the reply tuple it makes
 * (bpfgen_snat_probe tries it first). bpfgen_probe.keep: the port, or 0.
 */
static __always_inline __be16 bpfgen_snat_keep(__be16 sport)
{
	__u32 port = bpf_ntohs(sport);

	if (port < BPFGEN_SNAT_PORT_MIN || port - BPFGEN_SNAT_PORT_MIN >= BPFGEN_SNAT_PORT_COUNT)
		return 0;
	return sport;
}

/* One probe: claim a port by inserting its reverse entry with BPF_NOEXIST,
 * or take it over when the session holding it is stale. bpf_loop keeps the
 * verifier's work to one pass over this body, whatever BPFGEN_SNAT_PROBES is.
 */
static long bpfgen_probe_port(__u32 i, void *data)
{
	struct bpfgen_probe *pr = data;
	__u32 idx = bpfgen_mix32(pr->hash + i) % BPFGEN_SNAT_PORT_COUNT;
	int err;

	pr->rkey.dport = bpf_htons(BPFGEN_SNAT_PORT_MIN + idx);
	err = bpfgen_map_update(&BPFGEN_REV_MAP, &pr->rkey, &pr->rval, BPF_NOEXIST);
	if (err == -EEXIST && bpfgen_rsnat_stale(&pr->rkey, pr->now)) {
		bpf_map_delete_elem(&BPFGEN_REV_MAP, &pr->rkey);
		err = bpfgen_map_update(&BPFGEN_REV_MAP, &pr->rkey, &pr->rval, BPF_NOEXIST);
		pr->reclaimed = !err;
	}
	pr->result = err;
	return err != -EEXIST; /* 1 stops the loop: taken, or the map refused */
}

/* Run the port search of @pr (rkey with every field but dport, rval, now,
 * hash set): 0 when rkey.dport is now ours, else the drop reason.
 */
static __always_inline int bpfgen_snat_probe(struct bpfgen_probe *pr)
{
	int err;

	/* The kept port: taken only when free (a stale holder is left to the
	 * probes below); outside the loop, so the callback stays one path.
	 */
	if (pr->keep) {
		pr->rkey.dport = pr->keep;
		err = bpfgen_map_update(&BPFGEN_REV_MAP, &pr->rkey, &pr->rval, BPF_NOEXIST);
		if (err != -EEXIST)
			return err ? BPFGEN_DROP_MAP_FULL : 0;
	}
	pr->result = -EEXIST;
	bpf_loop(BPFGEN_SNAT_PROBES, bpfgen_probe_port, pr, 0);
	if (pr->result == -EEXIST)
		return BPFGEN_DROP_EXHAUSTED;
	if (pr->result)
		return BPFGEN_DROP_MAP_FULL;
	return 0;
}

/* The sweep (docs/datapath.md "Sessions and time"): delete every expired
 * session, and its reverse entry when that still points back to it. Expired
 * sessions are otherwise removed only when their tuple comes back or their
 * SNAT port is probed; a session with no SNAT port (a pod's flow in the bpf
 * mode, a DNS query from a random port) would stay in the hash map for ever
 * and, in the end, fill it. So a packet that finds a session map full sweeps
 * it (bpf_for_each_map_elem: one callback, verified once; about 50 ns an
 * entry) and is dropped as drop_map_full; its retransmission finds room.
 */
struct bpf_map; /* opaque: the callback only hands it back to the delete helper */

static long bpfgen_sweep_one(struct bpf_map *map, const struct bpfgen_tuple4 *fkey,
			     bpfgen_fwd_entry_t *e, __u64 *now)
{
	struct bpfgen_tuple4 rkey, owner;
	bpfgen_rev_entry_t *r;

	if (!bpfgen_expired(e, fkey->proto, *now))
		return 0;
	bpfgen_session_rkey(fkey, e, &rkey);
	r = bpf_map_lookup_elem(&BPFGEN_REV_MAP, &rkey);
	if (r) {
		bpfgen_rsnat_owner(&rkey, r, &owner);
		if (owner.saddr == fkey->saddr && owner.daddr == fkey->daddr &&
		    owner.sport == fkey->sport && owner.dport == fkey->dport)
			bpf_map_delete_elem(&BPFGEN_REV_MAP, &rkey);
	}
	bpf_map_delete_elem(map, fkey);
	return 0;
}

/* A global function: one copy of the sweep for every map-full site. */
__noinline int bpfgen_sweep_full(__u64 now)
{
	bpf_for_each_map_elem(&BPFGEN_FWD_MAP, bpfgen_sweep_one, &now, 0);
	return 0;
}

/* A failed port search or map update of @t's flow: swept first when a map was
 * full.
 */
static __always_inline int bpfgen_drop_probe(int reason, __u64 now, const struct bpfgen_tuple4 *t)
{
	if (reason == BPFGEN_DROP_MAP_FULL)
		bpfgen_sweep_full(now);
	return bpfgen_drop(reason, t);
}

#ifndef BPFGEN_MODE_BPF
/* Egress: translate the source of a packet that needs SNAT. */
static __always_inline int bpfgen_snat(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	struct bpfgen_snat_entry fresh = {};
	struct bpfgen_snat_entry *e;
	struct bpfgen_probe pr = {};
	__u64 now = bpf_ktime_get_ns();
	int ret;

	e = bpf_map_lookup_elem(&bpfgen_snat_v4, &p->t);
	if (e) {
		if (!bpfgen_expired(e, p->t.proto, now)) {
			__be32 nat_addr;
			__be16 nat_port;
			int released;

			released = bpfgen_session_touch(e, p, now, 0);
			nat_addr = e->nat_addr;
			nat_port = e->nat_port;
			if (released) {
				bpfgen_forget_reverse(p, e);
				bpf_map_delete_elem(&bpfgen_snat_v4, &p->t);
			}
			if (bpfgen_rewrite_source(ctx, p, nat_addr, nat_port))
				return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
			return bpfgen_pass(BPFGEN_EVT_SNAT_HIT);
		}
		bpfgen_forget_reverse(p, e);
	}

	pr.hash = bpfgen_tuple_hash(&p->t);
	pr.keep = bpfgen_snat_keep(p->t.sport);
	pr.now = now;
	pr.rval.addr = p->t.saddr;
	pr.rval.port = p->t.sport;
	pr.rkey.saddr = p->t.daddr;
	pr.rkey.daddr = bpfgen_snat_addr(pr.hash);
	pr.rkey.sport = p->t.dport;
	pr.rkey.proto = p->t.proto;
	ret = bpfgen_snat_probe(&pr);
	if (ret)
		return bpfgen_drop_probe(ret, now, &p->t);

	fresh.nat_addr = pr.rkey.daddr;
	fresh.nat_port = pr.rkey.dport;
	bpfgen_session_touch(&fresh, p, now, 0);
	if (bpfgen_map_update(&bpfgen_snat_v4, &p->t, &fresh, BPF_ANY)) {
		bpf_map_delete_elem(&bpfgen_rsnat_v4, &pr.rkey);
		return bpfgen_drop_probe(BPFGEN_DROP_MAP_FULL, now, &p->t);
	}
	if (bpfgen_rewrite_source(ctx, p, fresh.nat_addr, fresh.nat_port))
		return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
	if (pr.reclaimed)
		bpfgen_count(BPFGEN_EVT_RECLAIMED);
	return bpfgen_pass(BPFGEN_EVT_SNAT_NEW);
}
#endif /* !BPFGEN_MODE_BPF */
#endif /* BPFGEN_SNAT_ALLOCATES */

#ifndef BPFGEN_MODE_BPF
/* Ingress: a reply to a node address in the SNAT range goes back to its
 * original source; anything without a live session is not ours.
 */
static __always_inline int bpfgen_rsnat(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	struct bpfgen_rsnat_entry *r;
	struct bpfgen_snat_entry *e;
	struct bpfgen_tuple4 fkey;
	__u32 port = bpf_ntohs(p->t.dport);
	__u64 now;

	if (port < BPFGEN_SNAT_PORT_MIN || port - BPFGEN_SNAT_PORT_MIN >= BPFGEN_SNAT_PORT_COUNT)
		return BPFGEN_NOT_MINE;
	if (!bpfgen_is_node_addr(p->t.daddr))
		return BPFGEN_NOT_MINE;
	r = bpf_map_lookup_elem(&bpfgen_rsnat_v4, &p->t);
	if (!r)
		return bpfgen_pass(BPFGEN_EVT_RSNAT_MISS);
	bpfgen_rsnat_owner(&p->t, r, &fkey);
	e = bpf_map_lookup_elem(&bpfgen_snat_v4, &fkey);
	now = bpf_ktime_get_ns();
	if (!e || e->nat_addr != p->t.daddr || e->nat_port != p->t.dport ||
	    bpfgen_expired(e, p->t.proto, now))
		return bpfgen_pass(BPFGEN_EVT_RSNAT_MISS);
	if (bpfgen_session_touch(e, p, now, BPFGEN_SESSION_SEEN_REPLY)) {
		bpf_map_delete_elem(&bpfgen_snat_v4, &fkey);
		bpf_map_delete_elem(&bpfgen_rsnat_v4, &p->t);
	}
	if (bpfgen_rewrite_dest(ctx, p, fkey.saddr, fkey.sport))
		return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
	return bpfgen_pass(BPFGEN_EVT_RSNAT);
}
#endif /* !BPFGEN_MODE_BPF: bpfgen_svc.h has the bpf mode's both directions */

#endif /* BPFGEN_NAT_H */

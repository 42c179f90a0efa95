/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — the bpf mode's service datapath (docs/datapath-bpf.md), tc ingress
 * and XDP: one code over the ctx vocabulary of bpfgen_ctx_tc.h /
 * bpfgen_ctx_xdp.h, which hold all that differs (forwarding, checksum state).
 *
 * One program does what IPVS and the ipvs mode's egress do together: a packet
 * to a frontend gets a backend (random: h % n, maglev: table[h % M], h the
 * tuple hash under datapath.selectionSeed), its destination rewritten
 * (DNAT) and, when the frontend's masquerade policy says so, its source too
 * (SNAT, ports allocated as in the ipvs mode: bpfgen_nat.h); a reply of such a
 * flow is translated back. Both then leave through bpf_fib_lookup +
 * bpf_redirect_neigh (tc) or bpf_redirect / XDP_TX (XDP), never through
 * netfilter.
 *
 * Session state: bpfgen_nat_v4 (original tuple -> backend, SNAT address and
 * port) and bpfgen_rnat_v4 (reply tuple -> client and frontend), written
 * together for every new flow, SNATed or not.
 *
 * The program file defines, before including this header, what the plan
 * generated: with frontends as code, bpfgen_svc_lookup_inline(),
 * bpfgen_svc_info[], bpfgen_backends[], bpfgen_maglev[][] (Maglev in .rodata),
 * bpfgen_svc_bounded() and bpfgen_svc_mod_inline().
 */
#ifndef BPFGEN_SVC_H
#define BPFGEN_SVC_H

#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"
#include "bpfgen_parse.h"
#include "bpfgen_maps.h"
#include "bpfgen_nat.h"
#include "bpfgen_classify.h"
#include "bpfgen_select.h"

#ifndef AF_INET
#define AF_INET 2
#endif

/* Is addr:port still a member of frontend @v (a backend, or listed but not
 * ready)? A session keeps its backend only while it is (docs/datapath-bpf.md
 * "Existing flows keep their backend").
 */
static __always_inline bool bpfgen_svc_has_backend(const struct bpfgen_svc_value *v, __be32 addr,
						   __be16 port)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_backend_member k = { .frontend = v->id, .addr = addr, .port = port };

	return bpf_map_lookup_elem(&bpfgen_svc_members, &k) != NULL;
#elif BPFGEN_SVC_DRAINING
	/* Some frontends list endpoints that are not ready: members are their own list. */
	__u32 id = v->id;

	if (id >= BPFGEN_SVC_FRONTENDS)
		return false;
	return bpfgen_svc_has_backend_inline(bpfgen_svc_members_at[id].first,
					     bpfgen_svc_members_at[id].n, addr, port);
#else
	return bpfgen_svc_has_backend_inline(v->first, v->n_backends, addr, port);
#endif
}

/* Does this flow need SNAT (docs/datapath.md's masquerade policy, plus hairpin)? */
static __always_inline bool bpfgen_svc_wants_snat(const struct bpfgen_svc_value *v,
						  const struct bpfgen_pkt *p, __be32 backend)
{
	if (p->t.saddr == backend)
		return true; /* hairpin: the backend would answer itself */
	return v->masq == BPFGEN_MASQ_ALWAYS ||
	       (v->masq == BPFGEN_MASQ_IF_OUTSIDE && !bpfgen_in_cluster_pods(p->t.saddr));
}

/* Drop an expired session's reverse entry, unless another flow took it over. */
static __always_inline void bpfgen_svc_forget(const struct bpfgen_pkt *p,
					      const struct bpfgen_nat_entry *old)
{
	struct bpfgen_tuple4 rkey;
	struct bpfgen_rnat_entry *r;

	bpfgen_session_rkey(&p->t, old, &rkey);
	r = bpf_map_lookup_elem(&bpfgen_rnat_v4, &rkey);
	if (r && r->addr == p->t.saddr && r->port == p->t.sport && r->vip == p->t.daddr &&
	    r->vip_port == p->t.dport)
		bpf_map_delete_elem(&bpfgen_rnat_v4, &rkey);
}

/* Decrement the TTL (the packet is forwarded, not delivered): 0, or -1 when it
 * must not be (TTL <= 1: the stack sends the time-exceeded). The TTL and
 * protocol bytes are one 16-bit word of the header checksum.
 */
static __always_inline int bpfgen_svc_ttl(bpfgen_ctx_t *ctx)
{
	__u8 w[2];
	__u16 from, to;

	if (bpfgen_ctx_load(ctx, BPFGEN_L3_OFF + offsetof(struct iphdr, ttl), w, 2))
		return -1;
	if (w[0] <= 1)
		return -1;
	__builtin_memcpy(&from, w, 2);
	w[0]--;
	__builtin_memcpy(&to, w, 2);
	if (bpfgen_ctx_l3_csum_replace(ctx, BPFGEN_IP_CSUM_OFF, from, to))
		return -1;
	return bpfgen_ctx_store(ctx, BPFGEN_L3_OFF + offsetof(struct iphdr, ttl), w, 1, 0);
}

/* The FIB's route for a translated packet's new addresses, without the policy
 * rules (DIRECT: OUTPUT returned the ingress device, docs/datapath-bpf.md).
 */
static __always_inline long bpfgen_svc_fib(bpfgen_ctx_t *ctx, struct bpf_fib_lookup *fib,
					   __u32 ifindex, __be32 saddr, __be32 daddr, __be16 sport,
					   __be16 dport, __u8 proto)
{
	fib->family = AF_INET;
	fib->l4_protocol = proto;
	fib->sport = sport;
	fib->dport = dport;
	fib->tot_len = bpfgen_ctx_len(ctx) - BPFGEN_L3_OFF;
	fib->ipv4_src = saddr;
	fib->ipv4_dst = daddr;
	fib->ifindex = ifindex;
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), BPF_FIB_LOOKUP_DIRECT);
}

/* The addresses and ports a packet leaves with. */
struct bpfgen_svc_xlat {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
};

/* Rewrite addresses and ports to @x, checksums updated. 0, or -1. */
static __always_inline int bpfgen_svc_translate(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
						const struct bpfgen_svc_xlat *x)
{
	if ((x->daddr != p->t.daddr || x->dport != p->t.dport) &&
	    bpfgen_rewrite_dest(ctx, p, x->daddr, x->dport))
		return -1;
	if ((x->saddr != p->t.saddr || x->sport != p->t.sport) &&
	    bpfgen_rewrite_source(ctx, p, x->saddr, x->sport))
		return -1;
	return 0;
}

/* Rewrite the packet to @x and forward it by the FIB, with the hook's
 * primitives (bpfgen_ctx_tc.h: bpf_redirect_neigh; bpfgen_ctx_xdp.h: the
 * FIB's MACs and XDP_TX, only back out of the device the frame came in on).
 * What the hook cannot forward (no usable route, TTL <= 1) tc passes to the
 * stack translated (fib_fallback) and XDP passes as it came to svc_in at tc
 * (xdp_to_tc), so netfilter never sees a service packet either way.
 * A global function: both directions end here, and one copy of the checksum
 * and FIB code, verified once on its own (not per call site, as a static one
 * would be), keeps the program and the verifier's work small.
 */
__noinline int bpfgen_svc_rewrite(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
				  const struct bpfgen_svc_xlat *x)
{
	struct bpf_fib_lookup fib = {};
	long rc;
	__u8 ttl;

	if (!ctx || !p || !x)
		return bpfgen_drop(BPFGEN_DROP_REWRITE,
				   NULL); /* never: the verifier's NULL check */
	/* tc translates first: what it cannot forward goes on translated. */
	if (!BPFGEN_CTX_PASS_UNTRANSLATED && bpfgen_svc_translate(ctx, p, x))
		return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
	rc = bpfgen_svc_fib(ctx, &fib, bpfgen_ctx_ifindex(ctx), x->saddr, x->daddr, x->sport,
			    x->dport, p->t.proto);
	if (!bpfgen_ctx_fib_usable(ctx, rc, &fib) ||
	    bpfgen_ctx_load(ctx, BPFGEN_L3_OFF + offsetof(struct iphdr, ttl), &ttl, 1) ||
	    ttl <= 1) {
		bpfgen_count(BPFGEN_CTX_PASS_UNTRANSLATED ? BPFGEN_SVC_XDP_TO_TC :
							    BPFGEN_SVC_FIB_FALLBACK);
		return BPFGEN_PASS;
	}
	if ((BPFGEN_CTX_PASS_UNTRANSLATED && bpfgen_svc_translate(ctx, p, x)) ||
	    bpfgen_svc_ttl(ctx) || bpfgen_ctx_set_l2(ctx, &fib))
		return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
	bpfgen_count(BPFGEN_SVC_REDIRECT);
	return bpfgen_ctx_redirect(ctx, rc, &fib);
}

/* A reply of a translated flow: backend:bport -> VIP:port as the source, and
 * the client (restored from the SNAT address and port, if any) as destination.
 */
static __always_inline int bpfgen_svc_reply(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	struct bpfgen_rnat_entry *r = bpf_map_lookup_elem(&bpfgen_rnat_v4, &p->t);
	struct bpfgen_svc_xlat x;
	struct bpfgen_nat_entry *e;
	struct bpfgen_tuple4 fkey;
	__be32 client, vip;
	__be16 cport, vport;
	int released, ret;
	__u64 now;

	if (!r)
		return BPFGEN_NOT_MINE;
	client = r->addr;
	cport = r->port;
	vip = r->vip;
	vport = r->vip_port;
	bpfgen_rsnat_owner(&p->t, r, &fkey);
	e = bpf_map_lookup_elem(&bpfgen_nat_v4, &fkey);
	now = bpf_ktime_get_ns();
	if (!e || e->backend_addr != p->t.saddr || e->backend_port != p->t.sport ||
	    (e->nat_port && (e->nat_addr != p->t.daddr || e->nat_port != p->t.dport)) ||
	    bpfgen_expired(e, p->t.proto, now))
		return BPFGEN_NOT_MINE; /* a stale index entry: the packet is not ours */
	released = bpfgen_session_touch(e, p, now, BPFGEN_SESSION_SEEN_REPLY);
	bpfgen_count(BPFGEN_SVC_RDNAT);
	x.saddr = vip;
	x.sport = vport;
	x.daddr = client;
	x.dport = cport;
	ret = bpfgen_svc_rewrite(ctx, p, &x);
	if (released && bpfgen_ctx_final(ret)) {
		bpf_map_delete_elem(&bpfgen_nat_v4, &fkey);
		bpf_map_delete_elem(&bpfgen_rnat_v4, &p->t);
	}
	return ret;
}

static __always_inline __sum16 bpfgen_svc_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__sum16)~s;
}

/* Answers built by the program (echo reply, RST, ICMP unreachable) go back
 * out of the device the request came in on, Ethernet addresses swapped.
 */
static __always_inline int bpfgen_svc_swap_macs(bpfgen_ctx_t *ctx)
{
	__u8 mac[12], swapped[12];

	if (bpfgen_ctx_load(ctx, 0, mac, sizeof(mac)))
		return -1;
	__builtin_memcpy(swapped, mac + 6, 6);
	__builtin_memcpy(swapped + 6, mac, 6);
	return bpfgen_ctx_store(ctx, 0, swapped, sizeof(swapped), 0);
}

/* The IPv4 header of such an answer (from the frontend address to the
 * client, TTL 64, @len bytes in all), its checksum computed whole. 0, or -1.
 */
static __always_inline int bpfgen_svc_answer_ip(struct iphdr *ip, const struct bpfgen_pkt *p,
						__u8 proto, __u16 len)
{
	__s64 sum;

	ip->version = 4;
	ip->ihl = 5;
	ip->ttl = 64;
	ip->protocol = proto;
	ip->tot_len = bpf_htons(len);
	ip->saddr = p->t.daddr;
	ip->daddr = p->t.saddr;
	ip->check = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0);
	if (sum < 0)
		return -1;
	ip->check = bpfgen_svc_csum_fold(sum);
	return 0;
}

/* Replace the packet by @len bytes of @answer after the Ethernet header
 * (MACs swapped), to be sent back. tc: BPF_F_RECOMPUTE_CSUM keeps a
 * CHECKSUM_COMPLETE skb's csum in step. 0, or the drop reason.
 */
static __always_inline int bpfgen_svc_put_answer(bpfgen_ctx_t *ctx, const void *answer, __u32 len)
{
	if (bpfgen_ctx_resize(ctx, BPFGEN_L3_OFF + len) || bpfgen_svc_swap_macs(ctx) ||
	    bpfgen_ctx_store(ctx, BPFGEN_L3_OFF, answer, len, BPF_F_RECOMPUTE_CSUM))
		return BPFGEN_DROP_REWRITE;
	return 0;
}

/* kube-proxy's REJECT for a TCP frontend without backends: the packet becomes
 * a RST (RFC 9293 3.10.7.1: to a segment with ACK, seq = its ack; else ACK of
 * everything it carried) and goes back out of the device it came in on.
 * The IP checksum is computed whole. At tc the TCP checksum depends on the
 * skb's checksum state, which tc cannot read or reset: a SYN from a local
 * veth is CHECKSUM_PARTIAL, and a device without tx checksum offload then
 * runs skb_checksum_help over the TCP header, expecting the check field to
 * hold the pseudo-header sum only (with the whole checksum there, it wrote 0:
 * found by the host e2e test, the client counted InCsumErrors). So the state
 * is probed (bpfgen_ctx_csum_partial) and the field written to match.
 * 0 (the RST is in place), or the drop reason.
 */
static __always_inline int bpfgen_svc_reset(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	struct {
		struct iphdr ip;
		struct tcphdr th;
	} r = {};
	struct {
		__be32 saddr;
		__be32 daddr;
		__u8 zero;
		__u8 proto;
		__be16 len;
	} ph = {};
	struct tcphdr in;
	__u32 hdr, end, seg, len = bpfgen_ctx_len(ctx);
	__be16 tot_len;
	int partial;
	__s64 sum;

	/* Never answer a RST; IP options: not rebuilt here, dropped. */
	if (p->l4_off != BPFGEN_L3_OFF + sizeof(struct iphdr) || (p->tcp_flags & BPFGEN_TCP_RST))
		return BPFGEN_SVC_DROP_NO_BACKEND;
	if (bpfgen_ctx_load(ctx, p->l4_off, &in, sizeof(in)) ||
	    bpfgen_ctx_load(ctx, BPFGEN_L3_OFF + offsetof(struct iphdr, tot_len), &tot_len,
			    sizeof(tot_len)))
		return BPFGEN_DROP_REWRITE;
	/* The payload ends where the IP total length says, at most at the frame's
	 * end: at tc ingress a frame still carries its Ethernet padding (a 54-byte
	 * SYN arrives as 60 bytes), which is no payload to acknowledge.
	 */
	hdr = p->l4_off + in.doff * 4;
	end = BPFGEN_L3_OFF + bpf_ntohs(tot_len);
	if (end > len)
		end = len;
	seg = end > hdr ? end - hdr : 0;
	if (bpfgen_svc_answer_ip(&r.ip, p, IPPROTO_TCP, sizeof(r)))
		return BPFGEN_DROP_REWRITE;
	r.th.source = p->t.dport;
	r.th.dest = p->t.sport;
	r.th.doff = 5;
	r.th.rst = 1;
	if (in.ack) {
		r.th.seq = in.ack_seq;
	} else {
		r.th.ack = 1;
		r.th.ack_seq = bpf_htonl(bpf_ntohl(in.seq) + seg + in.syn + in.fin);
	}
	ph.saddr = r.ip.saddr;
	ph.daddr = r.ip.daddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpf_htons(sizeof(r.th));
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (sum < 0)
		return BPFGEN_DROP_REWRITE;
	partial = bpfgen_ctx_csum_partial(ctx, p->l4_csum_off);
	if (partial < 0)
		return BPFGEN_DROP_REWRITE;
	if (partial) {
		/* The pseudo-header sum, folded, not complemented: the rest of the
		 * sum is added over the TCP header when the packet leaves.
		 */
		r.th.check = ~bpfgen_svc_csum_fold(sum);
	} else {
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.th, sizeof(r.th), (__wsum)sum);
		if (sum < 0)
			return BPFGEN_DROP_REWRITE;
		r.th.check = bpfgen_svc_csum_fold(sum);
	}
	return bpfgen_svc_put_answer(ctx, &r, sizeof(r));
}

/* kube-proxy's REJECT for UDP: an ICMP port unreachable from the frontend
 * address, quoting the datagram's IPv4 header and first 8 bytes (RFC 792),
 * back out of the ingress device. The packet is resized to exactly that.
 * 0 (the answer is in place), or the drop reason.
 */
static __always_inline int bpfgen_svc_unreachable(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	struct {
		struct iphdr ip;
		__u8 type;
		__u8 code;
		__sum16 check;
		__u32 unused;
		__u8 quote[sizeof(struct iphdr) + 8];
	} r = {};
	__s64 sum;

	if (p->l4_off != BPFGEN_L3_OFF + sizeof(struct iphdr))
		return BPFGEN_SVC_DROP_NO_BACKEND; /* IP options: not quoted here, dropped */
	if (bpfgen_ctx_load(ctx, BPFGEN_L3_OFF, r.quote, sizeof(r.quote)) ||
	    bpfgen_svc_answer_ip(&r.ip, p, IPPROTO_ICMP, sizeof(r)))
		return BPFGEN_DROP_REWRITE;
	r.type = 3; /* destination unreachable */
	r.code = 3; /* port unreachable */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&r.type, sizeof(r) - sizeof(r.ip), 0);
	if (sum < 0)
		return BPFGEN_DROP_REWRITE;
	r.check = bpfgen_svc_csum_fold(sum);
	return bpfgen_svc_put_answer(ctx, &r, sizeof(r));
}

/* bpfgen_svc_dnat's answer for a frontend without backends: the caller rejects
 * (one copy of the reject code per program: bpfgen_svc_ingress).
 */
#define BPFGEN_SVC_REJECT (-2)

/* A packet to a frontend without backends, or (@vip_port) to a VIP's other
 * port: answered (counted reject_no_backend, reject_vip_port) and sent back out
 * of the device it came in on, or dropped: drop_no_backend, drop_vip_port where
 * no answer is due (a RST, IP options), else the reason the answer could not
 * be built.
 */
static __always_inline int bpfgen_svc_reject(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
					     const volatile __u8 *vip_port)
{
	int reason = p->t.proto == IPPROTO_TCP ? bpfgen_svc_reset(ctx, p) :
						 bpfgen_svc_unreachable(ctx, p);

	if (reason == BPFGEN_SVC_DROP_NO_BACKEND && *vip_port)
		return bpfgen_drop(BPFGEN_DROP_VIP_PORT, &p->t);
	if (reason)
		return bpfgen_drop(reason, &p->t);
	bpfgen_count(*vip_port ? BPFGEN_SVC_REJECT_VIP_PORT : BPFGEN_SVC_REJECT_NO_BACKEND);
	return bpfgen_ctx_bounce(ctx);
}

/* A packet to frontend @v: its session's backend, or a new one. */
static __always_inline int bpfgen_svc_dnat(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p,
					   const struct bpfgen_svc_value *v)
{
	struct bpfgen_nat_entry fresh = {};
	struct bpfgen_nat_entry *e;
	struct bpfgen_probe pr = {};
	struct bpfgen_svc_xlat x;
	struct bpfgen_backend b = {};
	__u64 now = bpf_ktime_get_ns();
	__be32 saddr = p->t.saddr;
	__be16 sport = p->t.sport;
	int released = 0, ret;

	e = bpf_map_lookup_elem(&bpfgen_nat_v4, &p->t);
	if (e && !bpfgen_expired(e, p->t.proto, now) &&
	    !bpfgen_svc_has_backend(v, e->backend_addr, e->backend_port)) {
		/* The backend was removed: forget the session. A TCP packet other
		 * than a bare SYN (SYN; ACK, FIN, RST clear: docs/datapath.md's
		 * "bare SYN", as in bpfgen_session_touch) cannot start over at
		 * another backend (IPVS's expire_nodest_conn); anything else is
		 * selected anew.
		 */
		bpfgen_svc_forget(p, e);
		bpf_map_delete_elem(&bpfgen_nat_v4, &p->t);
		e = NULL;
		if (p->t.proto == IPPROTO_TCP &&
		    (p->tcp_flags & (BPFGEN_TCP_SYN | BPFGEN_TCP_ACK | BPFGEN_TCP_FIN |
				     BPFGEN_TCP_RST)) != BPFGEN_TCP_SYN)
			return bpfgen_drop(BPFGEN_SVC_DROP_BACKEND_GONE, &p->t);
	}
	if (e && !bpfgen_expired(e, p->t.proto, now)) {
		released = bpfgen_session_touch(e, p, now, 0);
		b.addr = e->backend_addr;
		b.port = e->backend_port;
		if (e->nat_port) {
			saddr = e->nat_addr;
			sport = e->nat_port;
		}
		bpfgen_count(BPFGEN_SVC_DNAT_HIT);
		goto rewrite;
	}
	if (e)
		bpfgen_svc_forget(p, e);
	if (v->masq == BPFGEN_MASQ_DROP) /* n_backends is 0: endpoints elsewhere only */
		return bpfgen_drop(BPFGEN_DROP_NO_LOCAL_ENDPOINT, &p->t);
	if (!v->n_backends)
		return BPFGEN_SVC_REJECT;
	/* Fails only when a map build's tables lack @v's backends (mid-sync). */
	if (bpfgen_svc_select(v, p->t.saddr, bpfgen_tuple_hash_seeded(BPFGEN_SELECTION_SEED, &p->t),
			      &b))
		return bpfgen_drop(BPFGEN_SVC_DROP_NO_BACKEND, &p->t);

	fresh.backend_addr = b.addr;
	fresh.backend_port = b.port;
	pr.now = now;
	pr.rval.addr = p->t.saddr;
	pr.rval.port = p->t.sport;
	pr.rval.vip = p->t.daddr;
	pr.rval.vip_port = p->t.dport;
	pr.rkey.saddr = b.addr;
	pr.rkey.sport = b.port;
	pr.rkey.proto = p->t.proto;
	if (bpfgen_svc_wants_snat(v, p, b.addr)) {
		pr.hash = bpfgen_tuple_hash(&p->t);
		pr.keep = bpfgen_snat_keep(p->t.sport);
		pr.rkey.daddr = bpfgen_snat_addr(pr.hash);
		ret = bpfgen_snat_probe(&pr);
		if (ret)
			return bpfgen_drop_probe(ret, now, &p->t);
		fresh.nat_addr = saddr = pr.rkey.daddr;
		fresh.nat_port = sport = pr.rkey.dport;
	} else {
		/* No SNAT: the reply tuple holds the client's address, so no other
		 * client's flow can own it.
		 */
		pr.rkey.daddr = p->t.saddr;
		pr.rkey.dport = p->t.sport;
		if (bpfgen_map_update(&bpfgen_rnat_v4, &pr.rkey, &pr.rval, BPF_ANY))
			return bpfgen_drop_probe(BPFGEN_DROP_MAP_FULL, now, &p->t);
	}
	bpfgen_session_touch(&fresh, p, now, 0);
	if (bpfgen_map_update(&bpfgen_nat_v4, &p->t, &fresh, BPF_ANY)) {
		bpf_map_delete_elem(&bpfgen_rnat_v4, &pr.rkey);
		return bpfgen_drop_probe(BPFGEN_DROP_MAP_FULL, now, &p->t);
	}
	if (fresh.nat_port)
		bpfgen_count(BPFGEN_EVT_SNAT_NEW);
	if (pr.reclaimed)
		bpfgen_count(BPFGEN_EVT_RECLAIMED);
	bpfgen_count(BPFGEN_SVC_DNAT_NEW);

rewrite:
	x.saddr = saddr;
	x.sport = sport;
	x.daddr = b.addr;
	x.dport = b.port;
	ret = bpfgen_svc_rewrite(ctx, p, &x);
	if (released && bpfgen_ctx_final(ret)) {
		bpfgen_svc_forget(p, e);
		bpf_map_delete_elem(&bpfgen_nat_v4, &p->t);
	}
	return ret;
}

/* Is @addr a VIP? (Map builds: an entry (VIP, port 0, ICMP) in bpfgen_svc_frontends.) */
static __always_inline bool bpfgen_svc_is_vip(__be32 addr)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_frontend_key k = { .addr = addr, .port = 0, .proto = IPPROTO_ICMP };

	return bpf_map_lookup_elem(&bpfgen_svc_frontends, &k) != NULL;
#else
	return bpfgen_svc_is_vip_inline(addr);
#endif
}

/* An echo request to a VIP: answered here, as the node answers for its VIPs
 * in the ipvs mode (the VIP is not local in this mode). Addresses and MACs
 * swapped (the IPv4 checksum does not change), type 8 -> 0, out of the device
 * it came in on.
 */
static __always_inline int bpfgen_svc_echo(bpfgen_ctx_t *ctx, const struct bpfgen_pkt *p)
{
	__u16 from = bpf_htons(BPFGEN_ICMP_ECHO << 8), to = bpf_htons(BPFGEN_ICMP_ECHOREPLY << 8);

	/* Type and code are one 16-bit word of the ICMP checksum. */
	if (bpfgen_svc_swap_macs(ctx) ||
	    bpfgen_ctx_store(ctx, BPFGEN_IP_SADDR_OFF, &p->t.daddr, 4, 0) ||
	    bpfgen_ctx_store(ctx, BPFGEN_IP_DADDR_OFF, &p->t.saddr, 4, 0) ||
	    bpfgen_ctx_rewrite_port(ctx, p->l4_off, p->l4_csum_off, 0, from, to))
		return bpfgen_drop(BPFGEN_DROP_REWRITE, &p->t);
	bpfgen_count(BPFGEN_SVC_ICMP_ECHO_VIP);
	return bpfgen_ctx_bounce(ctx);
}

/* The program: tc ingress (pods, uplink) or XDP (uplink, hook: xdp). */
static __always_inline int bpfgen_svc_ingress(bpfgen_ctx_t *ctx)
{
	/* In memory, not a register: kept in one across the reject code, it made
	 * LLVM spill the XDP packet pointer as 32 bits, which the verifier refuses
	 * ("invalid size of register spill").
	 */
	volatile __u8 vip_port = 0;
	struct bpfgen_svc_value v;
	struct bpfgen_pkt p;
	int ret = bpfgen_parse(ctx, &p);

	if (ret == BPFGEN_PARSE_MALFORMED)
		return bpfgen_pass(BPFGEN_EVT_MALFORMED);
	if (ret != BPFGEN_PARSE_OK || !bpfgen_proto_enabled(p.t.proto))
		return bpfgen_pass(BPFGEN_EVT_PASS);
	if (p.t.proto != IPPROTO_ICMP) {
		ret = bpfgen_svc_reply(ctx, &p);
		if (ret != BPFGEN_NOT_MINE)
			return ret;
		if (!bpfgen_svc_hidden(p.t.daddr) &&
		    bpfgen_svc_lookup(p.t.daddr, p.t.dport, p.t.proto, &v))
			goto frontend;
		/* No frontend: kube-proxy nftables' cluster-ips-check. In the service
		 * CIDR a VIP's other port is rejected, an address that is no VIP
		 * dropped (before, both went to the stack, routed out of the node).
		 */
		if (!bpfgen_in_service_cidr(p.t.daddr))
			return bpfgen_pass(BPFGEN_EVT_PASS);
	} else if (!p.sport_off) {
		/* ICMP: only an echo request (its identifier as sport) is ours. */
		return bpfgen_pass(BPFGEN_EVT_PASS);
	}
	/* One VIP test for both paths: a specialized build's is a switch over
	 * every VIP, too large to inline twice.
	 */
	if (!bpfgen_svc_is_vip(p.t.daddr))
		return p.t.proto == IPPROTO_ICMP ? bpfgen_pass(BPFGEN_EVT_PASS) :
						   bpfgen_drop(BPFGEN_SVC_DROP_UNALLOCATED, &p.t);
	if (p.t.proto == IPPROTO_ICMP)
		return bpfgen_svc_echo(ctx, &p);
	vip_port = 1;
	goto reject;

frontend:
	if (!bpfgen_source_allowed(&p))
		return bpfgen_drop(BPFGEN_DROP_SOURCE_RANGE, &p.t);
	/* externalTrafficPolicy: Local protects external clients' addresses; a pod's
	 * traffic goes to every endpoint, through the ClusterIP's frontend (or, when
	 * internalTrafficPolicy is Local too, the Service port's hidden one), and
	 * keeps its address (kube-proxy's "short-circuit pod traffic", nftables and
	 * iptables). The session is still keyed by what the pod sent.
	 */
	if (v.pod_vip && bpfgen_in_cluster_pods(p.t.saddr) &&
	    bpfgen_svc_lookup(v.pod_vip, v.pod_port, p.t.proto, &v))
		v.masq = BPFGEN_MASQ_NEVER;
	ret = bpfgen_svc_dnat(ctx, &p, &v);
	if (ret != BPFGEN_SVC_REJECT)
		return ret;
reject:
	return bpfgen_svc_reject(ctx, &p, &vip_port);
}

#endif /* BPFGEN_SVC_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — which packets need SNAT (kube-proxy's KUBE-MARK-MASQ, in BPF).
 *
 * IPVS does not tell tc which packets it DNATed, so the decision is taken at
 * ingress, where the original destination (VIP:port, NodePort) is still
 * visible, and carried to egress in a skb->mark bit, as kube-proxy does.
 * Egress also catches what never crossed an ingress hook: hairpin (a pod
 * reaching itself) and node processes talking to a ClusterIP (source: the VIP).
 */
#ifndef BPFGEN_CLASSIFY_H
#define BPFGEN_CLASSIFY_H

#include "bpfgen_types.h"
#include "bpfgen_maps.h"

static __always_inline bool bpfgen_in_cluster_pods(__be32 a)
{
	return (a & BPFGEN_CLUSTER_POD_MASK) == BPFGEN_CLUSTER_POD_NET;
}

static __always_inline bool bpfgen_in_service_cidr(__be32 a)
{
	return (a & BPFGEN_SERVICE_MASK) == BPFGEN_SERVICE_NET;
}

#ifndef BPFGEN_MODE_BPF
/* enum bpfgen_masq of the frontend at addr:port/proto, or BPFGEN_FRONTEND_NONE. */
static __always_inline __u8 bpfgen_frontend_masq(__be32 addr, __be16 port, __u8 proto)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_frontend_key k = { .addr = addr, .port = port, .proto = proto };
	struct bpfgen_frontend_value *v;

	/* NodePorts are keyed by address 0 below: an exact lookup of 0.0.0.0, which
	 * is no node address, must not find them. (It did: a packet to
	 * 0.0.0.0:<NodePort> was marked in the generic build, not the specialized.)
	 */
	v = addr ? bpf_map_lookup_elem(&bpfgen_frontends, &k) : NULL;
	if (v)
		return v->masq;
	if (!bpfgen_is_node_addr(addr))
		return BPFGEN_FRONTEND_NONE;
	k.addr = 0; /* NodePorts listen on every node address */
	v = bpf_map_lookup_elem(&bpfgen_frontends, &k);
	return v ? v->masq : BPFGEN_FRONTEND_NONE;
#else
	return bpfgen_frontend_masq_inline(addr, port, proto);
#endif
}

/* Is @addr a VIP on IPVS's dummy device (a ClusterIP, externalIP or LB IP that
 * is no node address)? Map builds: an entry (VIP, port 0, protocol 0), which
 * no packet's lookup asks for.
 */
static __always_inline bool bpfgen_is_vip(__be32 addr)
{
#if BPFGEN_FRONTENDS_IN_MAP
	struct bpfgen_frontend_key k = { .addr = addr };

	return addr && bpf_map_lookup_elem(&bpfgen_frontends, &k) != NULL;
#else
	return bpfgen_is_vip_inline(addr);
#endif
}

/* Ingress: does this packet, towards a frontend of policy @masq, need SNAT
 * after IPVS?
 */
static __always_inline bool bpfgen_ingress_wants_snat(const struct bpfgen_pkt *p, __u8 masq)
{
	return masq == BPFGEN_MASQ_ALWAYS ||
	       (masq == BPFGEN_MASQ_IF_OUTSIDE && !bpfgen_in_cluster_pods(p->t.saddr));
}

/* Egress: SNAT for packets no ingress hook could mark. */
static __always_inline bool bpfgen_egress_wants_snat(const struct bpfgen_pkt *p)
{
	/* An ICMP echo reply (the parser leaves its sport nowhere) never starts a
	 * flow: the node answers pings to its VIPs from the VIP, as it is.
	 */
	if (p->t.proto == IPPROTO_ICMP && !p->sport_off)
		return false;
	/* Hairpin: IPVS sent a pod's packet back to the same pod. */
	if (p->t.saddr == p->t.daddr && bpfgen_in_cluster_pods(p->t.saddr))
		return true;
	/* A node process reached a ClusterIP: the stack chose the VIP as source.
	 * IPVS's own replies also leave from a VIP, but from a frontend port.
	 */
	return bpfgen_in_service_cidr(p->t.saddr) &&
	       bpfgen_frontend_masq(p->t.saddr, p->t.sport, p->t.proto) == BPFGEN_FRONTEND_NONE;
}
#endif /* !BPFGEN_MODE_BPF: the bpf mode looks frontends up in bpfgen_svc.h */

/* spec.loadBalancerSourceRanges (both modes, before any translation): false when
 * the packet is to an LB IP:port/proto with ranges and its source is in none of
 * them. kube-proxy checks only new connections (ct state new); without conntrack
 * every packet is checked, so a narrowed range also ends established flows.
 */
static __always_inline bool bpfgen_source_allowed(const struct bpfgen_pkt *p)
{
#if BPFGEN_SOURCE_RANGES
	struct bpfgen_src_range_key k = {
		.prefixlen = 96, /* vip, port, proto, pad and all of saddr */
		.vip = p->t.daddr,
		.port = p->t.dport,
		.proto = p->t.proto,
		.saddr = p->t.saddr,
	};
	struct bpfgen_src_range_value *v = bpf_map_lookup_elem(&bpfgen_src_ranges, &k);

	return !v || v->allow;
#else
	return true; /* no Service has loadBalancerSourceRanges: compiled out */
#endif
}

static __always_inline bool bpfgen_proto_enabled(__u8 proto)
{
	if (proto == IPPROTO_TCP)
		return BPFGEN_PROTO_TCP;
	if (proto == IPPROTO_UDP)
		return BPFGEN_PROTO_UDP;
	if (proto == IPPROTO_ICMP)
		return BPFGEN_PROTO_ICMP;
	return false;
}

#endif /* BPFGEN_CLASSIFY_H */

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — packet parsing: Ethernet, IPv4 (options allowed), TCP/UDP/ICMP echo.
 *
 * The parser copies what the NAT needs into struct bpfgen_pkt and never keeps
 * packet pointers: the rewrite helpers invalidate them anyway.
 */
#ifndef BPFGEN_PARSE_H
#define BPFGEN_PARSE_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "bpfgen_types.h"

/* linux/icmp.h pulls in glibc's socket headers, which do not build for the
 * bpf target: the echo header is all the NAT needs.
 */
#define BPFGEN_ICMP_ECHOREPLY 0
#define BPFGEN_ICMP_ECHO 8

struct bpfgen_icmp_echo {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define BPFGEN_L3_OFF ((__u32)sizeof(struct ethhdr))
#define BPFGEN_IP_CSUM_OFF (BPFGEN_L3_OFF + offsetof(struct iphdr, check))
#define BPFGEN_IP_SADDR_OFF (BPFGEN_L3_OFF + offsetof(struct iphdr, saddr))
#define BPFGEN_IP_DADDR_OFF (BPFGEN_L3_OFF + offsetof(struct iphdr, daddr))

#define BPFGEN_TCP_FIN 0x01
#define BPFGEN_TCP_SYN 0x02
#define BPFGEN_TCP_RST 0x04
#define BPFGEN_TCP_ACK 0x10

enum bpfgen_parse_result {
	BPFGEN_PARSE_OK = 0, /* an unfragmented IPv4 TCP/UDP/ICMP-echo packet */
	BPFGEN_PARSE_OTHER, /* not something the NAT translates: pass */
	BPFGEN_PARSE_FRAGMENT, /* IPv4 fragment: tuple has addresses only */
	BPFGEN_PARSE_MALFORMED, /* truncated or inconsistent: pass to the stack */
};

/* bpfgen's own bit in bpfgen_pkt.l4_csum_flags, never passed to a helper: after
 * the identifier of an ICMP echo reply is rewritten, a checksum of 0x0000 becomes
 * 0xffff. Both are valid unless the message is all zeros (identifier 0, sequence
 * 0, zero payload), where only 0xffff is; no incremental update can tell, and
 * the kernel's csum helpers (and RFC 1624 eqn. 3 on some inputs) yield 0x0000.
 */
#define BPFGEN_F_CSUM_NEVER_ZERO (1ULL << 63)

struct bpfgen_pkt {
	struct bpfgen_tuple4 t;
	__u32 l4_off;
	__u32 l4_csum_off; /* offset of the L4 checksum field */
	__u32 sport_off; /* where the source port (ICMP: identifier) lives; 0: nowhere */
	__u32 dport_off; /* 0: nowhere (ICMP echo request) */
	__u64 l4_csum_flags; /* BPF_F_MARK_MANGLED_0 for UDP */
	__u8 tcp_flags; /* FIN/SYN/RST/ACK bits, TCP only */
	__u8 l4_pseudo; /* L4 checksum covers the addresses (TCP, UDP) */
	/* TCP only, host order, mod 2^32: the acknowledgment number, and the one
	 * that acknowledges this segment (seq + payload + SYN + FIN; the payload
	 * by the IP total length). The session lifecycle compares them to tell a
	 * FIN's acknowledgment (bpfgen_nat.h).
	 */
	__u32 tcp_ack;
	__u32 tcp_end;
};

static __always_inline int bpfgen_parse(bpfgen_ctx_t *ctx, struct bpfgen_pkt *p)
{
	void *data = bpfgen_ctx_data(ctx);
	void *end = bpfgen_ctx_data_end(ctx);
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 ihl;

	if ((void *)(eth + 1) > end)
		return BPFGEN_PARSE_OTHER; /* shorter than Ethernet: not ours */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return BPFGEN_PARSE_OTHER;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return BPFGEN_PARSE_MALFORMED;
	if (ip->version != 4)
		return BPFGEN_PARSE_MALFORMED;
	ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return BPFGEN_PARSE_MALFORMED;

	p->t.saddr = ip->saddr;
	p->t.daddr = ip->daddr;
	p->t.proto = ip->protocol;
	p->t.sport = 0;
	p->t.dport = 0;
	p->t.pad[0] = p->t.pad[1] = p->t.pad[2] = 0;
	p->tcp_flags = 0;
	p->tcp_ack = p->tcp_end = 0;
	p->l4_csum_flags = 0;
	p->l4_pseudo = 1;
	/* MF set or a non-zero offset: no usable L4 header in this packet. */
	if (ip->frag_off & bpf_htons(0x3fff))
		return BPFGEN_PARSE_FRAGMENT;

	p->l4_off = BPFGEN_L3_OFF + ihl;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *th = (void *)ip + ihl;

		if ((void *)(th + 1) > end)
			return BPFGEN_PARSE_MALFORMED;
		p->t.sport = th->source;
		p->t.dport = th->dest;
		p->sport_off = p->l4_off + offsetof(struct tcphdr, source);
		p->dport_off = p->l4_off + offsetof(struct tcphdr, dest);
		p->l4_csum_off = p->l4_off + offsetof(struct tcphdr, check);
		p->tcp_flags = (th->fin ? BPFGEN_TCP_FIN : 0) | (th->syn ? BPFGEN_TCP_SYN : 0) |
			       (th->rst ? BPFGEN_TCP_RST : 0) | (th->ack ? BPFGEN_TCP_ACK : 0);
		p->tcp_ack = bpf_ntohl(th->ack_seq);
		p->tcp_end = bpf_ntohl(th->seq) + (__u32)bpf_ntohs(ip->tot_len) - ihl -
			     th->doff * 4 + th->syn + th->fin;
		return BPFGEN_PARSE_OK;
	}
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *uh = (void *)ip + ihl;

		if ((void *)(uh + 1) > end)
			return BPFGEN_PARSE_MALFORMED;
		p->t.sport = uh->source;
		p->t.dport = uh->dest;
		p->sport_off = p->l4_off + offsetof(struct udphdr, source);
		p->dport_off = p->l4_off + offsetof(struct udphdr, dest);
		p->l4_csum_off = p->l4_off + offsetof(struct udphdr, check);
		p->l4_csum_flags = BPF_F_MARK_MANGLED_0;
		return BPFGEN_PARSE_OK;
	}
	if (ip->protocol == IPPROTO_ICMP) {
		struct bpfgen_icmp_echo *ih = (void *)ip + ihl;

		if ((void *)(ih + 1) > end)
			return BPFGEN_PARSE_MALFORMED;
		p->l4_pseudo = 0; /* ICMP's checksum has no pseudo-header */
		p->l4_csum_off = p->l4_off + offsetof(struct bpfgen_icmp_echo, checksum);
		if (ih->type == BPFGEN_ICMP_ECHO && ih->code == 0) {
			p->t.sport = ih->id;
			p->sport_off = p->l4_off + offsetof(struct bpfgen_icmp_echo, id);
			/* No destination "port": 0 tells the rewrite there is no field. (Was
			 * the identifier, which a destination rewrite would have replaced
			 * with a checksum update from t.dport = 0: a corrupt checksum.)
			 */
			p->dport_off = 0;
			return BPFGEN_PARSE_OK;
		}
		if (ih->type == BPFGEN_ICMP_ECHOREPLY && ih->code == 0) {
			p->t.dport = ih->id;
			p->dport_off = p->l4_off + offsetof(struct bpfgen_icmp_echo, id);
			/* Reverse SNAT may make it all zeros; an echo request (type 8)
			 * never is, its checksum needs no such care.
			 */
			p->l4_csum_flags = BPFGEN_F_CSUM_NEVER_ZERO;
			/* No source "port": SNAT of an echo reply (e.g. from a VIP) leaves
			 * the identifier, the destination side, alone. (Was the identifier:
			 * egress overwrote it with the SNAT port and updated the checksum
			 * from t.sport = 0, emitting a wrong ICMP checksum.)
			 */
			p->sport_off = 0;
			return BPFGEN_PARSE_OK;
		}
		return BPFGEN_PARSE_OTHER; /* ICMP errors: RFC 5508 translation is later work */
	}
	return BPFGEN_PARSE_OTHER;
}

#endif /* BPFGEN_PARSE_H */

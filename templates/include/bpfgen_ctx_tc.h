/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — the ctx vocabulary for tc (sched_cls) programs.
 *
 * Rewrites go through bpf_skb_store_bytes and the csum helpers, which know the
 * skb's checksum state: with CHECKSUM_PARTIAL (veth hands TCP/UDP on like
 * that) the L4 field holds only the pseudo-header sum, so an address change
 * must touch it (BPF_F_PSEUDO_HDR) but a port change must not; the helpers get
 * that right, a hand-rolled RFC 1624 update would not.
 */
#ifndef BPFGEN_CTX_TC_H
#define BPFGEN_CTX_TC_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define BPFGEN_CTX_TC 1
typedef struct __sk_buff bpfgen_ctx_t;

#define BPFGEN_PASS TC_ACT_OK
#define BPFGEN_DROP TC_ACT_SHOT

static __always_inline void *bpfgen_ctx_data(const bpfgen_ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *bpfgen_ctx_data_end(const bpfgen_ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

/* Replace a 32-bit address at @off that the IPv4 header checksum at @l3_csum
 * and (when @l4_csum is non-zero) a pseudo-header L4 checksum cover.
 */
static __always_inline int bpfgen_ctx_rewrite_addr(bpfgen_ctx_t *ctx, __u32 off, __u32 l3_csum,
						   __u32 l4_csum, __u64 l4_flags, __be32 from,
						   __be32 to)
{
	if (l4_csum &&
	    bpf_l4_csum_replace(ctx, l4_csum, from, to, BPF_F_PSEUDO_HDR | l4_flags | sizeof(to)))
		return -1;
	if (bpf_l3_csum_replace(ctx, l3_csum, from, to, sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(ctx, off, &to, sizeof(to), 0);
}

/* Replace a 16-bit L4 field (port, ICMP identifier) the L4 checksum covers. */
static __always_inline int bpfgen_ctx_rewrite_port(bpfgen_ctx_t *ctx, __u32 off, __u32 l4_csum,
						   __u64 l4_flags, __be16 from, __be16 to)
{
	if (bpf_l4_csum_replace(ctx, l4_csum, from, to, l4_flags | sizeof(to)))
		return -1;
	return bpf_skb_store_bytes(ctx, off, &to, sizeof(to), 0);
}

/* Write 0xffff over an L4 checksum the helpers left 0x0000 (see
 * BPFGEN_F_CSUM_NEVER_ZERO in bpfgen_parse.h).
 */
static __always_inline int bpfgen_ctx_csum_never_zero(bpfgen_ctx_t *ctx, __u32 l4_csum)
{
	__sum16 check;

	if (bpf_skb_load_bytes(ctx, l4_csum, &check, sizeof(check)))
		return -1;
	if (check)
		return 0;
	check = 0xffff;
	return bpf_skb_store_bytes(ctx, l4_csum, &check, sizeof(check), BPF_F_RECOMPUTE_CSUM);
}

static __always_inline __u32 bpfgen_ctx_len(const bpfgen_ctx_t *ctx)
{
	return ctx->len;
}

/* Bytes in and out at any offset (the bpf mode's reply builders). @flags:
 * BPF_F_RECOMPUTE_CSUM keeps a CHECKSUM_COMPLETE skb's csum true.
 */
static __always_inline int bpfgen_ctx_load(const bpfgen_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_skb_load_bytes(ctx, off, to, len);
}

static __always_inline int bpfgen_ctx_store(bpfgen_ctx_t *ctx, __u32 off, const void *from,
					    __u32 len, __u64 flags)
{
	return bpf_skb_store_bytes(ctx, off, from, len, flags);
}

/* Trim or extend the packet to @len bytes. */
static __always_inline int bpfgen_ctx_resize(bpfgen_ctx_t *ctx, __u32 len)
{
	return bpf_skb_change_tail(ctx, len, 0);
}

/* Send the packet back out of the device it came in on. */
static __always_inline int bpfgen_ctx_bounce(bpfgen_ctx_t *ctx)
{
	return bpf_redirect(ctx->ifindex, 0);
}

/* Replace a 16-bit word the IPv4 header checksum at @l3_csum covers (the
 * caller stores the word). 0, or -1.
 */
static __always_inline int bpfgen_ctx_l3_csum_replace(bpfgen_ctx_t *ctx, __u32 l3_csum, __u16 from,
						      __u16 to)
{
	return bpf_l3_csum_replace(ctx, l3_csum, from, to, sizeof(to)) ? -1 : 0;
}

/* Is the skb CHECKSUM_PARTIAL? bpf_l4_csum_replace without BPF_F_PSEUDO_HDR
 * leaves the L4 check field alone in that state (the device or
 * skb_checksum_help finishes the sum later) and folds the change into it in
 * every other state. So: zero the field, replace 0 by 1, read it back.
 * Only for packets whose check field is about to be rewritten anyway.
 * 1, 0, or -1.
 */
static __always_inline int bpfgen_ctx_csum_partial(bpfgen_ctx_t *ctx, __u32 check_off)
{
	__sum16 zero = 0, after;

	if (bpf_skb_store_bytes(ctx, check_off, &zero, sizeof(zero), 0) ||
	    bpf_l4_csum_replace(ctx, check_off, 0, bpf_htons(1), sizeof(__u16)) ||
	    bpf_skb_load_bytes(ctx, check_off, &after, sizeof(after)))
		return -1;
	return after == 0;
}

/* Forwarding (the bpf mode). The device the packet came in on, for the FIB. */
static __always_inline __u32 bpfgen_ctx_ifindex(const bpfgen_ctx_t *ctx)
{
	return ctx->ifindex;
}

/* What tc cannot forward itself it passes to the stack, translated: nothing
 * after it would translate the packet.
 */
#define BPFGEN_CTX_PASS_UNTRANSLATED 0

/* Can tc forward by this FIB answer? bpf_redirect_neigh resolves a missing
 * neighbour itself.
 */
static __always_inline bool bpfgen_ctx_fib_usable(const bpfgen_ctx_t *ctx, long rc,
						  const struct bpf_fib_lookup *fib)
{
	return rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH;
}

/* The Ethernet header of a forwarded packet: bpf_redirect_neigh writes it. */
static __always_inline int bpfgen_ctx_set_l2(bpfgen_ctx_t *ctx, const struct bpf_fib_lookup *fib)
{
	return 0;
}

/* Forward to the FIB's next hop (NULL when the FIB has no neighbour yet: the
 * helper resolves it).
 */
static __always_inline int bpfgen_ctx_redirect(bpfgen_ctx_t *ctx, long rc,
					       const struct bpf_fib_lookup *fib)
{
	struct bpf_redir_neigh nh = {};

	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return bpf_redirect_neigh(fib->ifindex, NULL, 0, 0);
	nh.nh_family = fib->family;
	nh.ipv4_nh = fib->ipv4_dst; /* the lookup leaves the next hop there */
	return bpf_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
}

/* Is @verdict the last a bpfgen program gives this packet? At tc anything
 * but a drop is (a dropped packet will come again).
 */
static __always_inline bool bpfgen_ctx_final(int verdict)
{
	return verdict != BPFGEN_DROP;
}

#endif /* BPFGEN_CTX_TC_H */

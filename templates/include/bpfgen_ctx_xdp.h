/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — the ctx vocabulary for XDP programs.
 *
 * XDP sees the frame before any skb exists, so there is no checksum state to
 * respect: fields are written directly and checksums updated incrementally
 * (RFC 1624: HC' = ~(~HC + ~m + m')).
 */
#ifndef BPFGEN_CTX_XDP_H
#define BPFGEN_CTX_XDP_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define BPFGEN_CTX_XDP 1
typedef struct xdp_md bpfgen_ctx_t;

#define BPFGEN_PASS XDP_PASS
#define BPFGEN_DROP XDP_DROP

/* Mirrors the tc helper's flag so shared NAT code can say "UDP: a zero
 * checksum means none; never produce a zero".
 */
#ifndef BPF_F_MARK_MANGLED_0
#define BPF_F_MARK_MANGLED_0 (1ULL << 5)
#endif

static __always_inline void *bpfgen_ctx_data(const bpfgen_ctx_t *ctx)
{
	return (void *)(long)ctx->data;
}

static __always_inline void *bpfgen_ctx_data_end(const bpfgen_ctx_t *ctx)
{
	return (void *)(long)ctx->data_end;
}

static __always_inline __u16 bpfgen_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624 eqn. 3 over 16-bit words, in network order as stored. */
static __always_inline __u16 bpfgen_csum_replace(__u16 check, __u32 from, __u32 to, int words)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)(~from & 0xffff) + (to & 0xffff);
	if (words == 2)
		sum += (__u16)(~from >> 16) + (to >> 16);
	return ~bpfgen_csum_fold(sum);
}

/* Header offsets are small; bounding them well under the verifier's
 * MAX_PACKET_OFF (0xffff) lets it carry the range check over to the access.
 */
#define BPFGEN_XDP_MAX_OFF 0x0fff

/* Load/store a 16-bit checksum field at @off with bounds checks the verifier sees. */
static __always_inline int bpfgen_xdp_csum_update(bpfgen_ctx_t *ctx, __u32 off, __u64 flags,
						  __u32 from, __u32 to, int words)
{
	void *data = bpfgen_ctx_data(ctx);
	void *end = bpfgen_ctx_data_end(ctx);
	__u16 *check;

	if (off > BPFGEN_XDP_MAX_OFF)
		return -1;
	check = data + off;
	if ((void *)(check + 1) > end)
		return -1;
	if ((flags & BPF_F_MARK_MANGLED_0) && *check == 0)
		return 0; /* UDP without checksum stays without */
	*check = bpfgen_csum_replace(*check, from, to, words);
	if ((flags & BPF_F_MARK_MANGLED_0) && *check == 0)
		*check = 0xffff;
	return 0;
}

static __always_inline int bpfgen_xdp_store(bpfgen_ctx_t *ctx, __u32 off, const void *from,
					    __u32 len)
{
	void *data = bpfgen_ctx_data(ctx);
	void *end = bpfgen_ctx_data_end(ctx);
	__u8 *p;

	if (off > BPFGEN_XDP_MAX_OFF)
		return -1;
	p = data + off;
	if (len == 4) {
		if ((void *)(p + 4) > end)
			return -1;
		__builtin_memcpy(p, from, 4);
	} else {
		if ((void *)(p + 2) > end)
			return -1;
		__builtin_memcpy(p, from, 2);
	}
	return 0;
}

static __always_inline int bpfgen_ctx_rewrite_addr(bpfgen_ctx_t *ctx, __u32 off, __u32 l3_csum,
						   __u32 l4_csum, __u64 l4_flags, __be32 from,
						   __be32 to)
{
	if (l4_csum && bpfgen_xdp_csum_update(ctx, l4_csum, l4_flags, from, to, 2))
		return -1;
	if (bpfgen_xdp_csum_update(ctx, l3_csum, 0, from, to, 2))
		return -1;
	return bpfgen_xdp_store(ctx, off, &to, 4);
}

static __always_inline int bpfgen_ctx_rewrite_port(bpfgen_ctx_t *ctx, __u32 off, __u32 l4_csum,
						   __u64 l4_flags, __be16 from, __be16 to)
{
	if (bpfgen_xdp_csum_update(ctx, l4_csum, l4_flags, from, to, 1))
		return -1;
	return bpfgen_xdp_store(ctx, off, &to, 2);
}

/* Write 0xffff over an L4 checksum left 0x0000 (see BPFGEN_F_CSUM_NEVER_ZERO in
 * bpfgen_parse.h).
 */
static __always_inline int bpfgen_ctx_csum_never_zero(bpfgen_ctx_t *ctx, __u32 l4_csum)
{
	void *data = bpfgen_ctx_data(ctx);
	void *end = bpfgen_ctx_data_end(ctx);
	__u16 *check;

	if (l4_csum > BPFGEN_XDP_MAX_OFF)
		return -1;
	check = data + l4_csum;
	if ((void *)(check + 1) > end)
		return -1;
	if (!*check)
		*check = 0xffff;
	return 0;
}

static __always_inline __u32 bpfgen_ctx_len(const bpfgen_ctx_t *ctx)
{
	return ctx->data_end - ctx->data;
}

/* Bytes in and out at any offset (the bpf mode's reply builders; 5.18+
 * helpers). @flags: the tc flags, meaningless here (no skb checksum state).
 */
static __always_inline int bpfgen_ctx_load(const bpfgen_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	return bpf_xdp_load_bytes((struct xdp_md *)ctx, off, to, len);
}

static __always_inline int bpfgen_ctx_store(bpfgen_ctx_t *ctx, __u32 off, const void *from,
					    __u32 len, __u64 flags)
{
	return bpf_xdp_store_bytes(ctx, off, (void *)from, len);
}

/* Trim or extend the frame to @len bytes (extending needs tailroom). */
static __always_inline int bpfgen_ctx_resize(bpfgen_ctx_t *ctx, __u32 len)
{
	return bpf_xdp_adjust_tail(ctx, (int)len - (int)(ctx->data_end - ctx->data));
}

/* Send the frame back out of the device it came in on. */
static __always_inline int bpfgen_ctx_bounce(bpfgen_ctx_t *ctx)
{
	return XDP_TX;
}

/* Replace a 16-bit word the IPv4 header checksum at @l3_csum covers (the
 * caller stores the word). 0, or -1.
 */
static __always_inline int bpfgen_ctx_l3_csum_replace(bpfgen_ctx_t *ctx, __u32 l3_csum, __u16 from,
						      __u16 to)
{
	return bpfgen_xdp_csum_update(ctx, l3_csum, 0, from, to, 1);
}

/* XDP runs before any skb: there is no checksum state, every sum is whole. */
static __always_inline int bpfgen_ctx_csum_partial(bpfgen_ctx_t *ctx, __u32 check_off)
{
	return 0;
}

/* Forwarding (the bpf mode). The device the frame came in on, for the FIB. */
static __always_inline __u32 bpfgen_ctx_ifindex(const bpfgen_ctx_t *ctx)
{
	return ctx->ingress_ifindex;
}

/* What XDP cannot send back out itself it passes as it came to svc_in at tc
 * on the same device, which finds the session just written and forwards
 * with bpf_redirect_neigh: XDP cannot resolve a neighbour, and redirecting
 * into a pod's veth needs NAPI on the pod's end (GRO or an XDP program
 * there), which bpfgen does not control.
 */
#define BPFGEN_CTX_PASS_UNTRANSLATED 1

/* Can XDP forward by this FIB answer? Only back out of the device the frame
 * came in on (XDP_TX), to a known neighbour.
 */
static __always_inline bool bpfgen_ctx_fib_usable(const bpfgen_ctx_t *ctx, long rc,
						  const struct bpf_fib_lookup *fib)
{
	return rc == BPF_FIB_LKUP_RET_SUCCESS && fib->ifindex == ctx->ingress_ifindex;
}

/* The Ethernet header of a forwarded frame: the FIB's MACs. 0, or -1. */
static __always_inline int bpfgen_ctx_set_l2(bpfgen_ctx_t *ctx, const struct bpf_fib_lookup *fib)
{
	__u8 macs[12];

	__builtin_memcpy(macs, fib->dmac, 6);
	__builtin_memcpy(macs + 6, fib->smac, 6);
	return bpfgen_ctx_store(ctx, 0, macs, sizeof(macs), 0);
}

/* Forward: back out of the device it came in on. */
static __always_inline int bpfgen_ctx_redirect(bpfgen_ctx_t *ctx, long rc,
					       const struct bpf_fib_lookup *fib)
{
	return XDP_TX;
}

/* Is @verdict the last a bpfgen program gives this frame? Only XDP_TX is:
 * a passed frame meets svc_in at tc, which must still find its session.
 */
static __always_inline bool bpfgen_ctx_final(int verdict)
{
	return verdict == XDP_TX;
}

#endif /* BPFGEN_CTX_XDP_H */

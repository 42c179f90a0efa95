/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* bpfgen — node process -> service in the bpf mode (datapath.socketLB):
 * cgroup sock_addr programs, socket-level DNAT (docs/datapath-bpf.md).
 *
 * connect4 (TCP, connected UDP) and sendmsg4 (unconnected UDP) find the
 * frontend of the destination the process asked for (VIP:port, or a node
 * address:NodePort) with svc_in's lookup, select a backend with svc_in's
 * selection (bpfgen_select.h) and rewrite the destination before the socket
 * uses it: the kernel then talks to the backend directly, with the node's own
 * source address. No packet is translated, no session is kept; what the
 * socket was given is remembered in bpfgen_sock_rev_v4, keyed by the socket
 * cookie and the backend, for recvmsg4 (a UDP reply's source back to VIP:port)
 * and getpeername4 (the peer shown as VIP:port).
 *
 * Selection hash: the tuple hash under BPFGEN_SELECTION_SEED of (socket
 * cookie, VIP, VIP port, protocol), the cookie in the source address and port
 * slots. There is no source address or port at connect time (the socket is
 * not bound yet); the cookie stands for the flow: unique per socket (so new
 * connections spread over the backends as random selection does), and the
 * same for every sendmsg of one socket, so an unconnected UDP socket keeps
 * one backend per frontend while the backends do not change.
 *
 * ClientIP affinity: the client is the node (BPFGEN_SOCK_CLIENT, its first
 * address: the source its processes get on the way to a pod).
 *
 * A frontend without backends: connect and sendmsg fail with ECONNREFUSED
 * (bpf_set_retval, then 0), what kube-proxy's REJECT gives a local TCP client;
 * a plain 0 would be EPERM. Counted reject_no_backend; translations dnat_new,
 * reverse translations rdnat.
 */
#ifndef BPFGEN_SOCK_H
#define BPFGEN_SOCK_H

#include <linux/errno.h>
#include <bpf/bpf_helpers.h>

#include "bpfgen_types.h"
#include "bpfgen_maps.h"
#include "bpfgen_classify.h"
#include "bpfgen_select.h"

/* The sock_addr verdicts. */
#define BPFGEN_SOCK_ALLOW 1
#define BPFGEN_SOCK_REFUSE 0

static __always_inline __u32 bpfgen_sock_hash(__u64 cookie, __be32 vip, __be16 port, __u8 proto)
{
	struct bpfgen_tuple4 t = {
		.saddr = (__u32)cookie,
		.daddr = vip,
		.sport = (__u16)(cookie >> 32),
		.dport = port,
		.proto = proto,
	};

	return bpfgen_tuple_hash_seeded(BPFGEN_SELECTION_SEED, &t);
}

static __always_inline int bpfgen_sock_refuse(void)
{
	bpfgen_count(BPFGEN_SVC_REJECT_NO_BACKEND);
	bpf_set_retval(-ECONNREFUSED);
	return BPFGEN_SOCK_REFUSE;
}

/* connect4, sendmsg4: a frontend's address -> the selected backend. */
static __always_inline int bpfgen_sock_forward(struct bpf_sock_addr *ctx)
{
	struct bpfgen_sock_rev_value rev = {};
	struct bpfgen_sock_rev_key key = {};
	struct bpfgen_backend b = {};
	struct bpfgen_svc_value v;
	__be32 vip = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u8 proto = (__u8)ctx->protocol;
	__u64 cookie;

	if ((proto != IPPROTO_TCP && proto != IPPROTO_UDP) || !bpfgen_proto_enabled(proto))
		return BPFGEN_SOCK_ALLOW;
	if (bpfgen_svc_hidden(vip) || !bpfgen_svc_lookup(vip, port, proto, &v))
		return BPFGEN_SOCK_ALLOW;
	/* externalTrafficPolicy: Local protects external clients' addresses: the
	 * node's own traffic to such an address goes to every endpoint, as a pod's
	 * does (kube-proxy since Kubernetes #77523: node-local traffic to an LB IP
	 * takes the Service's cluster endpoints, masqueraded; here the socket's
	 * source is the node's already). The frontend at pod_vip has them.
	 */
	if (v.pod_vip)
		bpfgen_svc_lookup(v.pod_vip, v.pod_port, proto, &v);
	if (!v.n_backends)
		return bpfgen_sock_refuse();
	cookie = bpf_get_socket_cookie(ctx);
	if (bpfgen_svc_select(&v, BPFGEN_SOCK_CLIENT, bpfgen_sock_hash(cookie, vip, port, proto),
			      &b))
		return bpfgen_sock_refuse();
	key.cookie = cookie;
	key.addr = b.addr;
	key.port = b.port;
	rev.vip = vip;
	rev.vip_port = port;
	/* An LRU map: a full one evicts, so the update cannot fail for room. */
	bpf_map_update_elem(&bpfgen_sock_rev_v4, &key, &rev, BPF_ANY);
	ctx->user_ip4 = b.addr;
	ctx->user_port = b.port;
	bpfgen_count(BPFGEN_SVC_DNAT_NEW);
	return BPFGEN_SOCK_ALLOW;
}

/* recvmsg4, getpeername4: a backend this socket was sent to -> its VIP:port. */
static __always_inline int bpfgen_sock_reverse(struct bpf_sock_addr *ctx)
{
	struct bpfgen_sock_rev_key key = {};
	struct bpfgen_sock_rev_value *rev;

	key.cookie = bpf_get_socket_cookie(ctx);
	key.addr = ctx->user_ip4;
	key.port = (__be16)ctx->user_port;
	rev = bpf_map_lookup_elem(&bpfgen_sock_rev_v4, &key);
	if (rev) {
		ctx->user_ip4 = rev->vip;
		ctx->user_port = rev->vip_port;
		bpfgen_count(BPFGEN_SVC_RDNAT);
	}
	return BPFGEN_SOCK_ALLOW; /* the only verdict these hooks take */
}

#endif /* BPFGEN_SOCK_H */

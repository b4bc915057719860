/* The translation the four socket hooks share: VIP:port -> backend on the way out
 * (connect, sendmsg), backend -> VIP on the way in (recvmsg, getpeername). The cores
 * (`lb4_fwd`, `lb4_rev`) work on an address and port the caller read from its context,
 * so the IPv6 hooks use them too for IPv4-mapped addresses (sock_lb6.h). */
#ifndef NETD_SOCK_LB4_H
#define NETD_SOCK_LB4_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "lb4.h"

#define NETD_ECONNREFUSED 111
#define NETD_SOCK_DGRAM 2 /* <sys/socket.h> is not for BPF targets */
#define NS_PER_SEC 1000000000ULL

static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	/* protocol is 0 for a socket opened with protocol 0: the type decides. */
	if (ctx->protocol)
		return ctx->protocol;
	return ctx->type == NETD_SOCK_DGRAM ? IPPROTO_UDP : IPPROTO_TCP;
}

/* What both families do once a service entry `svc` is found at `key`: 0 when this
 * namespace may not use it (isolation: only namespaces on the VIP's network, and the
 * host, see it; everyone else reaches the plain address, as without netd); else the
 * id of the backend chosen (the client's affinity while it lasts, else a random slot,
 * `*slot` being `key`'s slot field), or NETD_REFUSE for a service without backends.
 * `backends` is only asked whether an affine backend still exists. */
#define NETD_REFUSE 0xffffffff

static __always_inline __u32 lb_select(struct bpf_sock_addr *ctx, struct lb4_service *svc, void *services,
				       void *key, __u16 *slot, void *scope, void *backends, void *affinity)
{
	struct lb4_scope_key sk = {
		.netns_cookie = bpf_get_netns_cookie(ctx),
		.net_id = svc->net_id,
	};
	if (!bpf_map_lookup_elem(scope, &sk))
		return 0;
	/* No backend: refuse at once instead of letting the SYN time out. */
	if (svc->count == 0)
		return NETD_REFUSE;
	__u32 timeout = svc->affinity_secs;
	struct lb4_affinity_key ak = { .netns_cookie = sk.netns_cookie, .rev_nat_index = svc->rev_nat_index };
	__u64 now = bpf_ktime_get_ns();
	__u32 id = 0;
	if (timeout) {
		struct lb4_affinity *a = bpf_map_lookup_elem(affinity, &ak);
		if (a && now - a->last_used_ns <= (__u64)timeout * NS_PER_SEC &&
		    bpf_map_lookup_elem(backends, &a->backend_id))
			id = a->backend_id;
	}
	if (!id) {
		*slot = (bpf_get_prandom_u32() % svc->count) + 1;
		struct lb4_service *e = bpf_map_lookup_elem(services, key);
		if (!e)
			return 0;
		id = e->backend_id;
	}
	if (timeout) {
		struct lb4_affinity a = { .backend_id = id, .last_used_ns = now };
		bpf_map_update_elem(affinity, &ak, &a, BPF_ANY);
	}
	return id;
}

/* *addr:*port a VIP of this namespace's networks: rewritten to a backend (the reverse
 * entry written), 1. Not a VIP here: unchanged, 1. No backend: 0 (refuse, retval set). */
static __always_inline int lb4_fwd(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port)
{
	struct lb4_key key = {
		.address = *addr,
		.dport = *port,
		.proto = sock_proto(ctx),
	};
	struct lb4_service *svc = bpf_map_lookup_elem(&netd_lb4_services, &key);
	if (!svc)
		return 1;
	__u16 rev = svc->rev_nat_index;
	__u32 id = lb_select(ctx, svc, &netd_lb4_services, &key, &key.backend_slot, &netd_lb4_scope,
			     &netd_lb4_backends, &netd_lb4_affinity);
	if (id == NETD_REFUSE) {
		bpf_set_retval(-NETD_ECONNREFUSED);
		return 0;
	}
	struct lb4_backend *be = id ? bpf_map_lookup_elem(&netd_lb4_backends, &id) : 0;
	if (!be)
		return 1;
	struct lb4_reverse_sk_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = be->address,
		.port = be->port,
	};
	struct lb4_reverse_sk rv = {
		.address = *addr,
		.port = *port,
		.rev_nat_index = rev,
	};
	bpf_map_update_elem(&netd_lb4_reverse_sk, &rk, &rv, BPF_ANY);
	*addr = be->address;
	*port = be->port;
	return 1;
}

/* *addr:*port a backend this socket was sent to through a VIP that still is one:
 * rewritten to the VIP. */
static __always_inline void lb4_rev(struct bpf_sock_addr *ctx, __u32 *addr, __u16 *port)
{
	struct lb4_reverse_sk_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = *addr,
		.port = *port,
	};
	struct lb4_reverse_sk *rv = bpf_map_lookup_elem(&netd_lb4_reverse_sk, &rk);
	if (!rv)
		return;
	/* The VIP must still be a service; otherwise show the real peer. */
	struct lb4_key key = { .address = rv->address, .dport = rv->port, .proto = sock_proto(ctx) };
	if (!bpf_map_lookup_elem(&netd_lb4_services, &key)) {
		bpf_map_delete_elem(&netd_lb4_reverse_sk, &rk);
		return;
	}
	*addr = rv->address;
	*port = rv->port;
}

/* 1: go on (maybe rewritten); 0: refuse (retval set for no backend). */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	if (!lb4_fwd(ctx, &addr, &port))
		return 0;
	if (addr != ctx->user_ip4 || port != (__u16)ctx->user_port) {
		ctx->user_ip4 = addr;
		ctx->user_port = port;
	}
	return 1;
}

static __always_inline int sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	__u32 addr = ctx->user_ip4;
	__u16 port = (__u16)ctx->user_port;
	lb4_rev(ctx, &addr, &port);
	if (addr != ctx->user_ip4 || port != (__u16)ctx->user_port) {
		ctx->user_ip4 = addr;
		ctx->user_port = port;
	}
	return 1;
}

#endif

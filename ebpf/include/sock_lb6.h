/* The IPv6 socket hooks' translation, as sock_lb4.h's over the lb6 maps. An
 * IPv4-mapped address (::ffff:a.b.c.d, what a dual-stack socket uses to reach an IPv4
 * peer) goes through the IPv4 maps: an application on an AF_INET6 socket reaches IPv4
 * VIPs too. */
#ifndef NETD_SOCK_LB6_H
#define NETD_SOCK_LB6_H

#include <bpf/bpf_endian.h>
#include "sock_lb4.h"
#include "lb6.h"

struct ip6 {
	__u32 w[4];
};

static __always_inline void load6(struct bpf_sock_addr *ctx, struct ip6 *a)
{
	a->w[0] = ctx->user_ip6[0];
	a->w[1] = ctx->user_ip6[1];
	a->w[2] = ctx->user_ip6[2];
	a->w[3] = ctx->user_ip6[3];
}

static __always_inline void store6(struct bpf_sock_addr *ctx, const __u32 *a)
{
	ctx->user_ip6[0] = a[0];
	ctx->user_ip6[1] = a[1];
	ctx->user_ip6[2] = a[2];
	ctx->user_ip6[3] = a[3];
}

static __always_inline int v4_mapped(const struct ip6 *a)
{
	return a->w[0] == 0 && a->w[1] == 0 && a->w[2] == bpf_htonl(0x0000ffff);
}

static __always_inline void copy6(__u32 *dst, const __u32 *src)
{
	dst[0] = src[0];
	dst[1] = src[1];
	dst[2] = src[2];
	dst[3] = src[3];
}

/* As lb4_fwd. */
static __always_inline int lb6_fwd(struct bpf_sock_addr *ctx, struct ip6 *addr, __u16 *port)
{
	struct lb6_key key = { .dport = *port, .proto = sock_proto(ctx) };
	copy6(key.address, addr->w);
	struct lb4_service *svc = bpf_map_lookup_elem(&netd_lb6_services, &key);
	if (!svc)
		return 1;
	__u16 rev = svc->rev_nat_index;
	__u32 id = lb_select(ctx, svc, &netd_lb6_services, &key, &key.backend_slot, &netd_lb6_scope,
			     &netd_lb6_backends, &netd_lb6_affinity);
	if (id == NETD_REFUSE) {
		bpf_set_retval(-NETD_ECONNREFUSED);
		return 0;
	}
	struct lb6_backend *be = id ? bpf_map_lookup_elem(&netd_lb6_backends, &id) : 0;
	if (!be)
		return 1;
	struct lb6_reverse_sk_key rk = { .cookie = bpf_get_socket_cookie(ctx), .port = be->port };
	copy6(rk.address, be->address);
	struct lb6_reverse_sk rv = { .port = *port, .rev_nat_index = rev };
	copy6(rv.address, addr->w);
	bpf_map_update_elem(&netd_lb6_reverse_sk, &rk, &rv, BPF_ANY);
	copy6(addr->w, be->address);
	*port = be->port;
	return 1;
}

/* As lb4_rev. */
static __always_inline void lb6_rev(struct bpf_sock_addr *ctx, struct ip6 *addr, __u16 *port)
{
	struct lb6_reverse_sk_key rk = { .cookie = bpf_get_socket_cookie(ctx), .port = *port };
	copy6(rk.address, addr->w);
	struct lb6_reverse_sk *rv = bpf_map_lookup_elem(&netd_lb6_reverse_sk, &rk);
	if (!rv)
		return;
	struct lb6_key key = { .dport = rv->port, .proto = sock_proto(ctx) };
	copy6(key.address, rv->address);
	if (!bpf_map_lookup_elem(&netd_lb6_services, &key)) {
		bpf_map_delete_elem(&netd_lb6_reverse_sk, &rk);
		return;
	}
	copy6(addr->w, rv->address);
	*port = rv->port;
}

static __always_inline int same6(const struct ip6 *a, const struct ip6 *b)
{
	return a->w[0] == b->w[0] && a->w[1] == b->w[1] && a->w[2] == b->w[2] && a->w[3] == b->w[3];
}

/* 1: go on (maybe rewritten); 0: refuse (retval set for no backend). `fwd`: the way
 * out (connect, sendmsg), else the way in (recvmsg, getpeername). */
static __always_inline int sock6_xlate(struct bpf_sock_addr *ctx, int fwd)
{
	struct ip6 was, a;
	load6(ctx, &was);
	a = was;
	__u16 port = (__u16)ctx->user_port;
	if (v4_mapped(&a)) {
		if (fwd) {
			if (!lb4_fwd(ctx, &a.w[3], &port))
				return 0;
		} else {
			lb4_rev(ctx, &a.w[3], &port);
		}
	} else if (fwd) {
		if (!lb6_fwd(ctx, &a, &port))
			return 0;
	} else {
		lb6_rev(ctx, &a, &port);
	}
	if (!same6(&a, &was) || port != (__u16)ctx->user_port) {
		store6(ctx, a.w);
		ctx->user_port = port;
	}
	return 1;
}

#endif

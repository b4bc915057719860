// SPDX-License-Identifier: GPL-2.0
/* cgroup/sendmsg6: socket-level load balancing of IPv6 service VIPs, and of IPv4 VIPs
 * reached through IPv4-mapped addresses (VIP:port -> backend, once per datagram). */
#include "sock_lb6.h"

SEC("cgroup/sendmsg6")
int netd_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx, 1);
}

char LICENSE[] SEC("license") = "GPL";

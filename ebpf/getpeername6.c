// SPDX-License-Identifier: GPL-2.0
/* cgroup/getpeername6: socket-level load balancing of IPv6 service VIPs, and of IPv4 VIPs
 * reached through IPv4-mapped addresses (backend -> VIP, so the application sees the address it used). */
#include "sock_lb6.h"

SEC("cgroup/getpeername6")
int netd_getpeer6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx, 0);
}

char LICENSE[] SEC("license") = "GPL";

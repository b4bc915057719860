// SPDX-License-Identifier: GPL-2.0
/* cgroup/recvmsg6: socket-level load balancing of IPv6 service VIPs, and of IPv4 VIPs
 * reached through IPv4-mapped addresses (backend -> VIP, so the application sees the address it used). */
#include "sock_lb6.h"

SEC("cgroup/recvmsg6")
int netd_recvmsg6(struct bpf_sock_addr *ctx)
{
	return sock6_xlate(ctx, 0);
}

char LICENSE[] SEC("license") = "GPL";

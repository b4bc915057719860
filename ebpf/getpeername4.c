// SPDX-License-Identifier: GPL-2.0
/* cgroup/getpeername4: socket-level load balancing of service VIPs (backend -> VIP, so the application sees the address it used). */
#include "sock_lb4.h"

SEC("cgroup/getpeername4")
int netd_getpeer4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/* cgroup/recvmsg4: socket-level load balancing of service VIPs (backend -> VIP, so the application sees the address it used). */
#include "sock_lb4.h"

SEC("cgroup/recvmsg4")
int netd_recvmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_rev(ctx);
}

char LICENSE[] SEC("license") = "GPL";

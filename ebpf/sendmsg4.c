// SPDX-License-Identifier: GPL-2.0
/* cgroup/sendmsg4: socket-level load balancing of service VIPs (VIP:port -> backend, once per datagram). */
#include "sock_lb4.h"

SEC("cgroup/sendmsg4")
int netd_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx);
}

char LICENSE[] SEC("license") = "GPL";

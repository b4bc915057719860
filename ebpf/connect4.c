// SPDX-License-Identifier: GPL-2.0
/* cgroup/connect4: socket-level load balancing of service VIPs (VIP:port -> backend, once per connection). */
#include "sock_lb4.h"

SEC("cgroup/connect4")
int netd_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_xlate_fwd(ctx);
}

char LICENSE[] SEC("license") = "GPL";

/* Maps of the routing mesh (tc_nodeport4.c): published ingress ports and NodePorts
 * arriving on the host's devices, balanced by Maglev and DNATed in tc. Mirrored by
 * netd/src/kernel/bpf_types.rs (#[repr(C)], size tests). Layout after Cilium's
 * NodePort: a service entry per port (Cilium's 0.0.0.0 surrogate entry, here keyed by
 * port and protocol alone), a Maglev table per service (`netd_lb4_maglev`, Cilium's
 * lb4_maglev, flattened to one hash entry per slot so a backend change writes only the
 * slots it moves), and a flow table (Cilium's CT + SNAT entries, reduced to what NAT
 * needs) in both directions. Addresses and ports in network byte order.
 */
#ifndef NETD_NODEPORT4_H
#define NETD_NODEPORT4_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* The packet mark a DNATed packet leaves tc with: netd's forward chain lets it into
 * a network (a tc DNAT makes no conntrack NAT, so `ct status dnat` does not match).
 * Mirrored by `bpf_types::NODEPORT_MARK`. */
#define NETD_NODEPORT_MARK 0x0100

struct lb4_nodeport_key {
	__u16 dport; /* the published port */
	__u8 proto;
	__u8 pad;
};

struct lb4_nodeport {
	__u32 maglev_id;  /* which table of netd_lb4_maglev */
	__u32 table_size; /* its size M, a prime (default 16381) */
	__u16 count;      /* backends; 0: not balanced here (nftables rejects) */
	__u16 flags;
	__u32 pad;
};

struct lb4_maglev_key {
	__u32 maglev_id;
	__u32 slot; /* 0..M-1 */
};

/* A flow as the packet names it: ingress (client -> published address) or egress
 * (backend -> client). */
struct lb4_flow_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* The other end of a translation: the backend (forward) or the address the client
 * used (reverse). */
struct lb4_flow {
	__u32 address;
	__u16 port;
	__u16 pad;
};

#define NETD_NODEPORT_MAX 4096
#define NETD_MAGLEV_MAX_SLOTS (1 << 22)
#define NETD_FLOWS_MAX 262144

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_nodeport_key);
	__type(value, struct lb4_nodeport);
	__uint(max_entries, NETD_NODEPORT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_nodeport SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_maglev_key);
	__type(value, struct lb4_flow); /* the backend */
	__uint(max_entries, NETD_MAGLEV_MAX_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_maglev SEC(".maps");

/* client 5-tuple -> backend: a connection keeps its backend when the table moves. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_flow_key);
	__type(value, struct lb4_flow);
	__uint(max_entries, NETD_FLOWS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_np_fwd SEC(".maps");

/* backend -> client 5-tuple of a reply -> the address and port the client used. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_flow_key);
	__type(value, struct lb4_flow);
	__uint(max_entries, NETD_FLOWS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_np_rev SEC(".maps");

#endif

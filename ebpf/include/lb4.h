/* Maps and their entries shared by the socket-LB programs and netd
 * (netd/src/kernel/bpf_types.rs mirrors every struct here with #[repr(C)] and a
 * size assertion). Layout modelled on Cilium's lb4_* maps: a service is a master
 * entry (backend_slot 0, `count` backends) plus one entry per slot 1..=count naming
 * a backend by id; backends and reverse-NAT entries are shared by id. Addresses
 * and ports are in network byte order, as the kernel hands them to the programs.
 */
#ifndef NETD_LB4_H
#define NETD_LB4_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

struct lb4_key {
	__u32 address;      /* VIP */
	__u16 dport;        /* service port */
	__u16 backend_slot; /* 0: the master entry */
	__u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 scope;         /* reserved (Cilium: external/internal) */
	__u8 pad[2];
};

struct lb4_service {
	__u32 backend_id;   /* slot entries: the backend; master: 0 */
	__u16 count;        /* master: number of backend slots */
	__u16 rev_nat_index;
	__u32 net_id;       /* the VIP answers netns cookies scoped to this network */
	__u32 affinity_secs; /* client affinity timeout, 0: none */
};

struct lb4_backend {
	__u32 address;
	__u16 port;
	__u8 proto;
	__u8 flags;
};

struct lb4_reverse_nat {
	__u32 address;
	__u16 port;
	__u16 pad;
};

/* Which network namespaces (by cookie) may use the VIPs of network `net_id`. */
struct lb4_scope_key {
	__u64 netns_cookie;
	__u32 net_id;
	__u32 pad;
};

/* Per socket: the backend it was sent to, so replies and getpeername show the VIP. */
struct lb4_reverse_sk_key {
	__u64 cookie;
	__u32 address;
	__u16 port;
	__u16 pad;
};

struct lb4_reverse_sk {
	__u32 address;
	__u16 port;
	__u16 rev_nat_index;
};

/* Socket LB affinity: the client is its network namespace (no source address is
 * bound at connect time), as in Cilium's socket-LB affinity. */
struct lb4_affinity_key {
	__u64 netns_cookie;
	__u32 rev_nat_index;
	__u32 pad;
};

struct lb4_affinity {
	__u32 backend_id;
	__u32 pad;
	__u64 last_used_ns;
};

#define NETD_LB_MAX_SERVICES 65536
#define NETD_LB_MAX_BACKENDS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_service);
	__uint(max_entries, NETD_LB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb4_backend);
	__uint(max_entries, NETD_LB_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb4_reverse_nat);
	__uint(max_entries, NETD_LB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_scope_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_scope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_reverse_sk_key);
	__type(value, struct lb4_reverse_sk);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_reverse_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb4_affinity SEC(".maps");

#endif

/* The IPv6 socket-LB maps, as lb4.h's with 16-byte addresses (Cilium's lb6_* maps):
 * a service is a master entry (backend_slot 0) plus one entry per slot naming a
 * backend by id. Ids, reverse-NAT indexes, scopes and affinity are the IPv6 maps' own.
 * netd/src/kernel/bpf_types.rs mirrors the structs (`LbKey<[u32; 4]>` and friends).
 * Addresses are the 16 bytes in network order, read as four u32 words as the kernel
 * hands them (`user_ip6`).
 */
#ifndef NETD_LB6_H
#define NETD_LB6_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "lb4.h" /* the value structs without addresses, the sizes */

struct lb6_key {
	__u32 address[4];   /* VIP */
	__u16 dport;        /* service port */
	__u16 backend_slot; /* 0: the master entry */
	__u8 proto;
	__u8 scope;
	__u8 pad[2];
};

struct lb6_backend {
	__u32 address[4];
	__u16 port;
	__u8 proto;
	__u8 flags;
};

struct lb6_reverse_nat {
	__u32 address[4];
	__u16 port;
	__u16 pad;
};

struct lb6_reverse_sk_key {
	__u64 cookie;
	__u32 address[4];
	__u16 port;
	__u16 pad;
	__u32 pad2;
};

struct lb6_reverse_sk {
	__u32 address[4];
	__u16 port;
	__u16 rev_nat_index;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb4_service);
	__uint(max_entries, NETD_LB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb6_backend);
	__uint(max_entries, NETD_LB_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb6_reverse_nat);
	__uint(max_entries, NETD_LB_MAX_SERVICES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_reverse_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_scope_key);
	__type(value, __u8);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_scope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_reverse_sk_key);
	__type(value, struct lb6_reverse_sk);
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_reverse_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} netd_lb6_affinity SEC(".maps");

#endif

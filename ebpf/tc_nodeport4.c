// SPDX-License-Identifier: GPL-2.0
/* tc (tcx) on the host's devices: the routing mesh for published ingress ports and
 * NodePorts. Ingress: a TCP/UDP packet for a port in netd_lb4_nodeport, to a local
 * address, is DNATed to the backend its 5-tuple hashes to in the service's Maglev
 * table, and the flow is recorded both ways. Egress: a backend's reply on its way back
 * to the client gets the address and port the client used as its source again.
 * The client keeps its address (externalTrafficPolicy: Local); netd leaves services
 * that need SNAT to nftables.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "nodeport4.h"

#define IP_OFF (ETH_HLEN)
#define IP_CSUM_OFF (IP_OFF + offsetof(struct iphdr, check))
#define IP_SRC_OFF (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_DST_OFF (IP_OFF + offsetof(struct iphdr, daddr))
#define NETD_IP_MF 0x2000
#define NETD_IP_OFFSET 0x1fff
#define NETD_AF_INET 2 /* <sys/socket.h> is not for BPF targets */
#ifndef offsetof
#define offsetof(t, f) __builtin_offsetof(t, f)
#endif

struct pkt {
	struct lb4_flow_key t; /* as on the wire */
	__u32 l4_off;
	__u32 tot_len;
	__u8 syn; /* a TCP SYN without ACK: a new connection */
};

/* 0: not an unfragmented IPv4 TCP/UDP packet we can read the ports of. */
static __always_inline int parse(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl < 5)
		return 0;
	/* Fragments: only the first has ports; leave them all to the kernel. */
	if (ip->frag_off & bpf_htons(NETD_IP_MF | NETD_IP_OFFSET))
		return 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	__u32 l4_off = ETH_HLEN + ip->ihl * 4;
	__u16 *ports = data + l4_off;
	if ((void *)(ports + 2) > end)
		return 0;
	if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = (void *)ports;
		if ((void *)(tcp + 1) > end)
			return 0;
		p->syn = tcp->syn && !tcp->ack;
	}
	p->t.saddr = ip->saddr;
	p->t.daddr = ip->daddr;
	p->t.sport = ports[0];
	p->t.dport = ports[1];
	p->t.proto = ip->protocol;
	p->l4_off = l4_off;
	p->tot_len = bpf_ntohs(ip->tot_len);
	return 1;
}

/* The 5-tuple's hash: the same on every node (no per-boot seed, unlike the skb hash),
 * so the nodes of a cluster pick the same backend for a flow, as Maglev intends. */
static __always_inline __u32 flow_hash(const struct lb4_flow_key *t)
{
	__u32 h = 0x9e3779b9;
	__u32 w[4] = { t->saddr, t->daddr, ((__u32)t->sport << 16) | t->dport, t->proto };
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 k = w[i] * 0xcc9e2d51;
		k = (k << 15) | (k >> 17);
		h ^= k * 0x1b873593;
		h = ((h << 13) | (h >> 19)) * 5 + 0xe6546b64;
	}
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Whether the kernel would deliver `p` locally (or has no route for it at all, which
 * bpf_fib_lookup does not tell apart from local): the published port answers on the
 * host's own addresses, as `fib daddr type local` does for nftables. */
static __always_inline int to_local(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpf_fib_lookup fib = {
		.family = NETD_AF_INET,
		.l4_protocol = p->t.proto,
		.sport = p->t.sport,
		.dport = p->t.dport,
		.tot_len = p->tot_len,
		.ipv4_src = p->t.saddr,
		.ipv4_dst = p->t.daddr,
		.ifindex = skb->ingress_ifindex ? skb->ingress_ifindex : skb->ifindex,
	};
	return bpf_fib_lookup(skb, &fib, sizeof(fib), 0) == BPF_FIB_LKUP_RET_NOT_FWDED;
}

/* Rewrites one address and port of the packet (`src`: the source pair, else the
 * destination pair), fixing the IPv4 and the TCP/UDP checksums. */
static __always_inline int rewrite(struct __sk_buff *skb, const struct pkt *p, int src, __u32 addr, __u16 port)
{
	__u32 old_addr = src ? p->t.saddr : p->t.daddr;
	__u16 old_port = src ? p->t.sport : p->t.dport;
	__u32 addr_off = src ? IP_SRC_OFF : IP_DST_OFF;
	__u32 port_off = p->l4_off + (src ? 0 : 2);
	__u32 csum_off;
	__u64 mangled = 0;
	if (p->t.proto == IPPROTO_TCP) {
		csum_off = p->l4_off + offsetof(struct tcphdr, check);
	} else {
		csum_off = p->l4_off + offsetof(struct udphdr, check);
		/* UDP checksum 0 means none: keep it 0. */
		mangled = BPF_F_MARK_MANGLED_0;
	}
	if (old_addr != addr) {
		if (bpf_l4_csum_replace(skb, csum_off, old_addr, addr, BPF_F_PSEUDO_HDR | mangled | sizeof(addr)))
			return -1;
		if (bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_addr, addr, sizeof(addr)))
			return -1;
		if (bpf_skb_store_bytes(skb, addr_off, &addr, sizeof(addr), 0))
			return -1;
	}
	if (old_port != port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, port, mangled | sizeof(port)))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &port, sizeof(port), 0))
			return -1;
	}
	return 0;
}

SEC("classifier")
int netd_nodeport4_in(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (!parse(skb, &p))
		return TC_ACT_OK;
	struct lb4_nodeport_key nk = { .dport = p.t.dport, .proto = p.t.proto };
	struct lb4_nodeport *svc = bpf_map_lookup_elem(&netd_lb4_nodeport, &nk);
	if (!svc || svc->count == 0 || svc->table_size == 0) {
		if (p.syn) {
			/* A new connection straight to an address and port a translated flow
			 * used (a client port reused towards a backend's own address): its
			 * replies are not ours to rewrite. */
			struct lb4_flow_key stale = {
				.saddr = p.t.daddr,
				.daddr = p.t.saddr,
				.sport = p.t.dport,
				.dport = p.t.sport,
				.proto = p.t.proto,
			};
			bpf_map_delete_elem(&netd_lb4_np_rev, &stale);
		}
		return TC_ACT_OK;
	}
	struct lb4_flow be;
	/* A new connection picks again, so a client port reused after its backend went
	 * does not follow the old flow's entry to it. */
	struct lb4_flow *known = p.syn ? 0 : bpf_map_lookup_elem(&netd_lb4_np_fwd, &p.t);
	if (known) {
		be = *known;
	} else {
		if (!to_local(skb, &p))
			return TC_ACT_OK;
		struct lb4_maglev_key mk = {
			.maglev_id = svc->maglev_id,
			.slot = flow_hash(&p.t) % svc->table_size,
		};
		struct lb4_flow *slot = bpf_map_lookup_elem(&netd_lb4_maglev, &mk);
		if (!slot)
			return TC_ACT_OK;
		be = *slot;
		bpf_map_update_elem(&netd_lb4_np_fwd, &p.t, &be, BPF_ANY);
	}
	/* The reply, as it will leave: backend -> client. */
	struct lb4_flow_key rk = {
		.saddr = be.address,
		.daddr = p.t.saddr,
		.sport = be.port,
		.dport = p.t.sport,
		.proto = p.t.proto,
	};
	struct lb4_flow orig = { .address = p.t.daddr, .port = p.t.dport };
	bpf_map_update_elem(&netd_lb4_np_rev, &rk, &orig, BPF_ANY);
	if (rewrite(skb, &p, 0, be.address, be.port))
		return TC_ACT_SHOT;
	skb->mark |= NETD_NODEPORT_MARK;
	return TC_ACT_OK;
}

SEC("classifier")
int netd_nodeport4_out(struct __sk_buff *skb)
{
	struct pkt p = {};
	if (!parse(skb, &p))
		return TC_ACT_OK;
	struct lb4_flow *orig = bpf_map_lookup_elem(&netd_lb4_np_rev, &p.t);
	if (!orig)
		return TC_ACT_OK;
	struct lb4_flow o = *orig;
	if (rewrite(skb, &p, 1, o.address, o.port))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";

// SPDX-License-Identifier: GPL-2.0
/*
 * fwd.bpf.c: the in-kernel XDP forwarder anchor, the DSR rewrite in XDP (Katran's
 * architecture without its encapsulation): IPv4 TCP to VIP:port gets the destination MAC of a
 * backend chosen by a hash of (source address, source port) and the interface's own MAC as
 * source, and leaves by XDP_TX; IP and TCP stay untouched. Everything else passes.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct xdp_counters);
} counters SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct fwd_cfg);
} fwd_cfg SEC(".maps");

SEC("xdp")
int forward(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct xdp_counters *c = bpf_map_lookup_elem(&counters, &zero);
    struct fwd_cfg *cfg = bpf_map_lookup_elem(&fwd_cfg, &zero);
    if (!c || !cfg) return XDP_PASS;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP ||
        ip->ihl != 5 || ip->daddr != cfg->vip || tcp->dest != cfg->port || cfg->backends == 0) {
        c->passed++;
        return XDP_PASS;
    }
    __u32 hash = (ip->saddr ^ ((__u32)tcp->source << 16)) * 2654435761u;
    /* backends <= FWD_MAX_BACKENDS (a power of two), so the mask changes nothing; it gives the
     * verifier the bound that the 32-bit modulo loses. */
    __u64 index = ((hash >> 16) % cfg->backends) & (FWD_MAX_BACKENDS - 1);
    __builtin_memcpy(eth->h_dest, cfg->mac[index], ETH_ALEN);
    __builtin_memcpy(eth->h_source, cfg->own_mac, ETH_ALEN);
    c->packets++;
    c->bytes += end - data;
    return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";

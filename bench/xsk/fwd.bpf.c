// SPDX-License-Identifier: GPL-2.0
/*
 * fwd.bpf.c: the in-kernel XDP forwarder anchor, the DSR rewrite in XDP (Katran's
 * architecture without its encapsulation): IPv4 TCP to VIP:port gets the destination MAC of a
 * backend chosen by a hash of (source address, source port) and the interface's own MAC as
 * source, and leaves by XDP_TX; IP and TCP stay untouched. Everything else passes.
 */
#include "xdp_common.bpf.h"

CONFIG_MAP(fwd_cfg, struct fwd_cfg);

SEC("xdp")
int forward(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct xdp_counters *c = bpf_map_lookup_elem(&counters, &zero);
    struct fwd_cfg *cfg = bpf_map_lookup_elem(&fwd_cfg, &zero);
    if (!c || !cfg) return XDP_PASS;
    struct ethhdr *eth;
    struct iphdr *ip;
    struct tcphdr *tcp;
    if (!parse_ipv4_tcp(data, end, &eth, &ip, &tcp) || ip->daddr != cfg->vip || tcp->dest != cfg->port ||
        cfg->backends == 0) {
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

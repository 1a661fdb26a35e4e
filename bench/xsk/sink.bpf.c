// SPDX-License-Identifier: GPL-2.0
/*
 * sink.bpf.c: counts and drops the generator's packets (see struct sink_cfg), passes
 * everything else (ARP, health checks). Loaded by xdpload, which prints the counters when it
 * stops.
 */
#include "xdp_common.bpf.h"

CONFIG_MAP(sink_cfg, struct sink_cfg);

SEC("xdp")
int sink(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct xdp_counters *c = bpf_map_lookup_elem(&counters, &zero);
    struct sink_cfg *cfg = bpf_map_lookup_elem(&sink_cfg, &zero);
    if (!c || !cfg) return XDP_PASS;
    struct ethhdr *eth;
    struct iphdr *ip;
    struct tcphdr *tcp;
    if (!parse_ipv4_tcp(data, end, &eth, &ip, &tcp) || (tcp->source != cfg->port && tcp->dest != cfg->port))
        goto pass;
    __u32 mask = bpf_htonl(0xffffff00);
    if ((ip->saddr & mask) != cfg->net && (ip->daddr & mask) != cfg->net &&
        bpf_ntohs(tcp->source) < bpf_ntohs(cfg->min_nat_port))
        goto pass;
    c->packets++;
    c->bytes += end - data;
    return XDP_DROP;
pass:
    c->passed++;
    return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";

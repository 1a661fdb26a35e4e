// SPDX-License-Identifier: GPL-2.0
/*
 * sink.bpf.c: counts and drops the generator's packets (see struct sink_cfg), passes
 * everything else (ARP, health checks). Loaded by xdpload, which prints the counters when it
 * stops.
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
    __type(value, struct sink_cfg);
} sink_cfg SEC(".maps");

SEC("xdp")
int sink(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    __u32 zero = 0;
    struct xdp_counters *c = bpf_map_lookup_elem(&counters, &zero);
    struct sink_cfg *cfg = bpf_map_lookup_elem(&sink_cfg, &zero);
    if (!c || !cfg) return XDP_PASS;
    struct ethhdr *eth = data;
    struct iphdr *ip = (void *)(eth + 1);
    struct tcphdr *tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_TCP ||
        ip->ihl != 5 || (tcp->source != cfg->port && tcp->dest != cfg->port))
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

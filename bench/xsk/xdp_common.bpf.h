// SPDX-License-Identifier: GPL-2.0
/*
 * What the benchmark's XDP programs (sink.bpf.c, fwd.bpf.c) share: their includes, the
 * per-CPU counters map the loader reads, a one-entry config map, and the parse of a plain
 * Ethernet / IPv4 (no options) / TCP frame.
 */
#ifndef CONVEY_BENCH_XDP_COMMON_BPF_H
#define CONVEY_BENCH_XDP_COMMON_BPF_H
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

/* A one-entry array map called NAME holding a TYPE: the program's configuration. */
#define CONFIG_MAP(NAME, TYPE)                \
    struct {                                  \
        __uint(type, BPF_MAP_TYPE_ARRAY);     \
        __uint(max_entries, 1);               \
        __type(key, __u32);                   \
        __type(value, TYPE);                  \
    } NAME SEC(".maps")

/* The headers of an Ethernet / IPv4 without options / TCP frame, or 0 when it is not one. */
static __always_inline int parse_ipv4_tcp(void *data, void *end, struct ethhdr **eth, struct iphdr **ip,
                                          struct tcphdr **tcp) {
    *eth = data;
    *ip = (void *)(*eth + 1);
    *tcp = (void *)(*ip + 1);
    return (void *)(*tcp + 1) <= end && (*eth)->h_proto == bpf_htons(ETH_P_IP) &&
           (*ip)->protocol == IPPROTO_TCP && (*ip)->ihl == 5;
}
#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * gen.bpf.c: the traffic generator's XDP program, run over live frames by gen.c
 * (bpf_prog_test_run_opts with BPF_F_TEST_XDP_LIVE_FRAMES): each run turns the frame into
 * the next packet of many TCP flows and returns XDP_TX, which transmits it on the client's
 * veth.
 *
 * Flow f = counter % flows gets source address template + f % 250 (low octet) and source
 * port template + f / 250; its first packet is a SYN (when syn_first), later ones ACK|PSH
 * data. Checksums are
 * updated incrementally (RFC 1624) from the template's valid ones.
 *
 * Live frames are recycled pages: whatever touched a frame downstream (a DNAT rewriting its
 * address in place, a TTL decrement) would still be in it on the next run. So every run first
 * copies the whole template header (from the map) over the frame, then varies it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common.h"

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct gen_cfg);
} gen_cfg SEC(".maps");

/* Checksum `sum` after a 16-bit word of the covered data changes from `from` to `to`. */
static __always_inline __u16 csum_replace(__u16 sum, __u16 from, __u16 to) {
    __u32 s = (__u16)~sum + (__u32)(__u16)~from + (__u32)to;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return (__u16)~s;
}

SEC("xdp")
int generate(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    if (data + GEN_HDR_LEN > end) return XDP_ABORTED;
    __u32 zero = 0;
    struct gen_cfg *cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
    if (!cfg || cfg->flows == 0) return XDP_ABORTED;
    __u32 n = cfg->counter++;
    __u32 flow = n % cfg->flows;
    __u32 round = n / cfg->flows;

    __builtin_memcpy(data, cfg->hdr, GEN_HDR_LEN);
    struct iphdr *ip = data + sizeof(struct ethhdr);
    struct tcphdr *tcp = (void *)(ip + 1);
    __u16 *addr_words = (__u16 *)&ip->saddr;
    __u16 *flag_word = (__u16 *)tcp + 6;  /* doff, reserved bits, flags */

    __u16 old_port = tcp->source, old_addr = addr_words[1], old_flags = *flag_word;
    __u16 port = bpf_htons(bpf_ntohs(old_port) + flow / 250);
    __u16 addr = bpf_htons(bpf_ntohs(old_addr) + flow % 250);
    __u16 flags = cfg->syn_first && round == 0 ? bpf_htons(0x5002) : old_flags;  /* SYN : ACK|PSH */

    tcp->source = port;
    addr_words[1] = addr;
    *flag_word = flags;
    ip->check = csum_replace(ip->check, old_addr, addr);
    __u16 check = csum_replace(tcp->check, old_port, port);
    check = csum_replace(check, old_addr, addr);        /* pseudo-header */
    tcp->check = csum_replace(check, old_flags, flags);
    return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";

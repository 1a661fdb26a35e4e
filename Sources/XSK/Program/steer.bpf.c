// SPDX-License-Identifier: GPL-2.0
/*
 * Convey's steering program. Runs on the balancer's interface and decides, per frame, whether
 * the kernel or Convey's AF_XDP workers get it:
 *
 *   - TCP/UDP to a VIP (destination address, port and protocol in the steer_vips hash map) and,
 *     when enabled, backend replies to the NAT address + port range (steer_nat) are redirected
 *     to steer_xsks[rx_queue_index], with XDP_PASS as the fallback when no socket is bound;
 *   - in DSR (no NAT range for the family), ICMP "fragmentation needed" (IPv4) and ICMPv6
 *     "packet too big" addressed to a VIP and quoting a TCP segment that VIP sent (the
 *     backends send as the VIP: a router on the way to the client answers the VIP) are
 *     redirected too, so the workers pass them to the backend that holds the connection;
 *   - everything else is XDP_PASS: ARP, other ICMP, the host's own traffic, health-check
 *     replies, VLAN-tagged frames, IPv4 fragments, IPv6 with extension headers, malformed
 *     frames.
 *
 * Every verdict is counted in the per-CPU array steer_verdicts (indices in steer_maps.h).
 * The program only reads the frame; it never changes it.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "steer_maps.h"

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, STEER_MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} steer_xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, STEER_MAX_VIPS);
    __type(key, struct steer_vip_key);
    __type(value, struct steer_vip_value);
} steer_vips SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, STEER_NAT_ENTRIES);
    __type(key, __u32);
    __type(value, struct steer_nat_config);
} steer_nat SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STEER_VERDICT_COUNT);
    __type(key, __u32);
    __type(value, __u64);
} steer_verdicts SEC(".maps");

/* The first 8 bytes of an ICMP or ICMPv6 message (linux/icmp.h pulls in libc headers, which
 * a BPF target has none of). */
struct icmp_head {
    __u8 type;
    __u8 code;
    __sum16 checksum;
    __be32 rest;  /* unused, or the next hop's MTU */
};
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMPV6_PKT_TOOBIG 2

/* Minimal L4 header: both TCP and UDP start with source and destination port. */
struct l4_ports {
    __be16 source;
    __be16 dest;
};

static __always_inline int count(__u32 verdict, int action)
{
    __u64 *counter = bpf_map_lookup_elem(&steer_verdicts, &verdict);
    if (counter)
        *counter += 1;
    return action;
}

static __always_inline int steer(struct xdp_md *ctx, __u32 reason, const struct ethhdr *eth)
{
    /* A frame to a group address (broadcast, multicast) is no TCP segment for this host: the
     * kernel's TCP drops such frames, so they are left to it, never forwarded. */
    if (eth->h_dest[0] & 1)
        return count(STEER_PASS_NOT_STEERED, XDP_PASS);
    int action = bpf_redirect_map(&steer_xsks, ctx->rx_queue_index, XDP_PASS);
    return count(action == XDP_REDIRECT ? reason : STEER_PASS_NO_SOCKET, action);
}

static __always_inline int is_ipv6_extension(__u8 next)
{
    switch (next) {
    case 0:   /* hop-by-hop */
    case 43:  /* routing */
    case 44:  /* fragment */
    case 50:  /* ESP */
    case 51:  /* AH */
    case 60:  /* destination options */
    case 135: /* mobility */
    case 139: /* HIP */
    case 140: /* shim6 */
        return 1;
    default:
        return 0;
    }
}

/* DSR only: a NAT range for the family means passthrough, whose ICMP stays the kernel's. */
static __always_inline int dsr_for(__u32 nat_entry)
{
    struct steer_nat_config *nat = bpf_map_lookup_elem(&steer_nat, &nat_entry);
    return !nat || !nat->enabled;
}

/* An ICMP "too big" (`quote` is the quoted packet's IP header; the quote must hold its
 * source port) whose quoted TCP segment came from a VIP: the frame's destination (`key.addr`)
 * is the quote's source, and (that address, the quote's source port, TCP) is in steer_vips. */
static __always_inline int quotes_vip_segment(struct steer_vip_key *key, const void *quoted_ports, void *data_end)
{
    const struct l4_ports *ports = quoted_ports;
    if ((void *)(ports + 1) > data_end)
        return 0;
    key->port = ports->source;
    key->proto = IPPROTO_TCP;
    return bpf_map_lookup_elem(&steer_vips, key) != 0;
}

SEC("xdp")
int convey_steer(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    struct steer_vip_key key = {};
    __u32 nat_entry;
    void *l4;

    if ((void *)(eth + 1) > data_end)
        return count(STEER_MALFORMED, XDP_PASS);

    __be16 ether_type = eth->h_proto;
    if (ether_type == bpf_htons(ETH_P_8021Q) || ether_type == bpf_htons(ETH_P_8021AD))
        return count(STEER_PASS_VLAN, XDP_PASS);

    if (ether_type == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = (void *)(eth + 1);
        if ((void *)(ip + 1) > data_end)
            return count(STEER_MALFORMED, XDP_PASS);
        if (ip->version != 4 || ip->ihl < 5)
            return count(STEER_MALFORMED, XDP_PASS);
        if (ip->frag_off & bpf_htons(0x3fff)) /* MF set or offset != 0 */
            return count(STEER_PASS_FRAGMENT, XDP_PASS);
        l4 = (void *)ip + ip->ihl * 4;
        key.addr[10] = 0xff;
        key.addr[11] = 0xff;
        __builtin_memcpy(&key.addr[12], &ip->daddr, 4);
        if (ip->protocol == IPPROTO_ICMP) {
            struct icmp_head *icmp = l4;
            struct iphdr *quote = (void *)(icmp + 1);
            if ((void *)(quote + 1) <= data_end && icmp->type == ICMP_DEST_UNREACH && icmp->code == ICMP_FRAG_NEEDED
                && quote->version == 4 && quote->ihl >= 5 && quote->protocol == IPPROTO_TCP
                && quote->saddr == ip->daddr && dsr_for(STEER_NAT_IPV4)
                && quotes_vip_segment(&key, (void *)quote + quote->ihl * 4, data_end))
                return steer(ctx, STEER_REDIRECT_ICMP, eth);
            return count(STEER_PASS_NOT_STEERED, XDP_PASS);
        }
        if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
            return count(STEER_PASS_NOT_STEERED, XDP_PASS);
        key.proto = ip->protocol;
        nat_entry = STEER_NAT_IPV4;
    } else if (ether_type == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = (void *)(eth + 1);
        if ((void *)(ip6 + 1) > data_end)
            return count(STEER_MALFORMED, XDP_PASS);
        if (ip6->version != 6)
            return count(STEER_MALFORMED, XDP_PASS);
        if (is_ipv6_extension(ip6->nexthdr))
            return count(STEER_PASS_EXT_HEADER, XDP_PASS);
        l4 = (void *)(ip6 + 1);
        __builtin_memcpy(key.addr, &ip6->daddr, 16);
        if (ip6->nexthdr == IPPROTO_ICMPV6) {
            struct icmp_head *icmp6 = l4;
            struct ipv6hdr *quote = (void *)(icmp6 + 1);
            if ((void *)(quote + 1) <= data_end && icmp6->type == ICMPV6_PKT_TOOBIG && icmp6->code == 0
                && quote->version == 6 && quote->nexthdr == IPPROTO_TCP
                && __builtin_memcmp(&quote->saddr, &ip6->daddr, 16) == 0 && dsr_for(STEER_NAT_IPV6)
                && quotes_vip_segment(&key, quote + 1, data_end))
                return steer(ctx, STEER_REDIRECT_ICMP, eth);
            return count(STEER_PASS_NOT_STEERED, XDP_PASS);
        }
        if (ip6->nexthdr != IPPROTO_TCP && ip6->nexthdr != IPPROTO_UDP)
            return count(STEER_PASS_NOT_STEERED, XDP_PASS);
        key.proto = ip6->nexthdr;
        nat_entry = STEER_NAT_IPV6;
    } else {
        return count(STEER_PASS_NOT_IP, XDP_PASS);
    }

    struct l4_ports *ports = l4;
    if ((void *)(ports + 1) > data_end)
        return count(STEER_MALFORMED, XDP_PASS);
    key.port = ports->dest;

    if (bpf_map_lookup_elem(&steer_vips, &key))
        return steer(ctx, STEER_REDIRECT_VIP, eth);

    struct steer_nat_config *nat = bpf_map_lookup_elem(&steer_nat, &nat_entry);
    if (nat && nat->enabled && key.proto == IPPROTO_TCP) {
        __u16 port = bpf_ntohs(ports->dest);
        if (port >= nat->port_min && port <= nat->port_max
            && __builtin_memcmp(nat->addr, key.addr, 16) == 0)
            return steer(ctx, STEER_REDIRECT_NAT, eth);
    }
    return count(STEER_PASS_NOT_STEERED, XDP_PASS);
}

char _license[] SEC("license") = "GPL";

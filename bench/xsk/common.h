/*
 * Shared by the benchmark's C tools and BPF programs (bench/xsk): map layouts and constants,
 * declared once (Katran's rule: maps are the only contract between the two sides).
 */
#ifndef CONVEY_BENCH_XSK_COMMON_H
#define CONVEY_BENCH_XSK_COMMON_H

#include <linux/types.h>

/* Ethernet + IPv4 + TCP headers without options. */
#define GEN_HDR_LEN 54

/* gen.bpf.c's configuration and state: one entry of the "gen_cfg" array map. */
struct gen_cfg {
    __u32 flows;              /* distinct TCP flows cycled through (source address x port) */
    __u32 counter;            /* packets produced so far (one CPU runs the generator) */
    __u32 syn_first;          /* 1: a flow's first packet is a SYN; 0: all ACK|PSH data */
    __u8 hdr[GEN_HDR_LEN];    /* the template's headers, valid checksums, ACK|PSH */
    __u8 pad[2];
};

/* sink.bpf.c / fwd.bpf.c counters: one entry of the per-CPU "counters" array map. */
struct xdp_counters {
    __u64 packets;    /* matched (sink: counted and dropped; fwd: forwarded) */
    __u64 bytes;
    __u64 passed;     /* not matched, XDP_PASS */
};

/* sink.bpf.c: which packets to count and drop, in the "sink_cfg" array map: the generator's
 * flows, i.e. IPv4 TCP with `port` as source or destination port AND either an address in
 * `net`/24 (the generator's sources; a reflected packet has it as destination) or a source
 * port >= `min_nat_port` (a passthrough/SNAT balancer replaced the source with its own
 * address and a NAT port). Everything else passes: ARP, and the balancer's health checks,
 * which must reach the backend's listener. All fields in network order. */
struct sink_cfg {
    __u32 net;
    __u16 port;
    __u16 min_nat_port;
};

/* fwd.bpf.c: the DSR rewrite's configuration ("fwd_cfg" array map, one entry). */
#define FWD_MAX_BACKENDS 16
struct fwd_cfg {
    __u32 vip;                             /* network order */
    __u16 port;                            /* network order */
    __u16 backends;                        /* how many of mac[] are used */
    __u8 own_mac[6];                       /* becomes the source MAC */
    __u8 mac[FWD_MAX_BACKENDS][6];         /* backend MACs, chosen by flow hash */
};

#endif

#ifndef CONVEY_STEER_MAPS_H
#define CONVEY_STEER_MAPS_H
/*
 * The contract between the steering program (Sources/XSK/Program/steer.bpf.c) and the Swift
 * control plane (SteeringProgram): map names, key/value layouts and verdict indices, declared
 * once here and included by both sides. Every struct is padded explicitly so that the kernel's
 * byte-wise hash of a key equals what Swift writes (Swift zero-initialises the whole struct).
 */
#include <linux/types.h>

/* Maximum RX queues (XSKMAP entries) and VIPs. */
#define STEER_MAX_QUEUES 256
#define STEER_MAX_VIPS 1024

/* Program and map names as the kernel reports them (at most 15 characters). */
#define STEER_PROGRAM_NAME "convey_steer"
#define STEER_MAP_XSKS "steer_xsks"
#define STEER_MAP_VIPS "steer_vips"
#define STEER_MAP_NAT "steer_nat"
#define STEER_MAP_VERDICTS "steer_verdicts"

/*
 * A VIP: destination address, port and protocol. IPv4 addresses are stored IPv4-mapped
 * (::ffff:a.b.c.d) so one key type covers both families. Address and port in network order.
 */
struct steer_vip_key {
    __u8 addr[16];
    __be16 port;
    __u8 proto;   /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
    __u8 pad;
};

struct steer_vip_value {
    __u32 index;  /* the control plane's VIP index (informational) */
};

/*
 * Passthrough: backend replies addressed to (addr, port_min..port_max) are steered too.
 * An array map with one entry per family: STEER_NAT_IPV4 and STEER_NAT_IPV6 (a dual-stack
 * balancer has a NAT address of each). Ports in host order, address as in steer_vip_key.
 */
#define STEER_NAT_IPV4 0
#define STEER_NAT_IPV6 1
#define STEER_NAT_ENTRIES 2

struct steer_nat_config {
    __u32 enabled;
    __u16 port_min;
    __u16 port_max;
    __u8 addr[16];
};

/* Indices of the per-CPU verdict counter array. */
enum steer_verdict {
    STEER_PASS_NOT_IP = 0,      /* ARP, LLDP, ...: not IPv4/IPv6 */
    STEER_PASS_NOT_STEERED,     /* IP, but not a VIP or NAT destination (or not TCP/UDP) */
    STEER_PASS_VLAN,            /* VLAN-tagged: passed untouched */
    STEER_PASS_FRAGMENT,        /* IPv4 fragment: never redirected */
    STEER_PASS_EXT_HEADER,      /* IPv6 with an extension header: never redirected */
    STEER_PASS_NO_SOCKET,       /* steered, but no XSK socket on this queue: passed */
    STEER_REDIRECT_VIP,         /* redirected: destination is a VIP */
    STEER_REDIRECT_NAT,         /* redirected: a backend reply to the NAT range */
    STEER_MALFORMED,            /* truncated or invalid headers: passed */
    STEER_REDIRECT_ICMP,        /* redirected: DSR, an ICMP "too big" about a VIP's segment */
    STEER_VERDICT_COUNT
};

#endif

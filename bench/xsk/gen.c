/*
 * gen: the AF_XDP benchmarks' traffic generator. Loads gen.bpf.o and runs it over live frames
 * (bpf_prog_test_run_opts, BPF_F_TEST_XDP_LIVE_FRAMES, batch_size 64, XDP_TX on --iface),
 * so frames leave the client's veth as fast as the kernel can build them: TCP toward
 * DST:DPORT, DST_MAC, from many flows (see gen.bpf.c): each flow's first packet a SYN, then
 * ACK|PSH data; with --data-only every packet is data (established flows picked up mid-stream).
 * Bounded by --seconds and --count. Prints offered=<packets>, seconds=, offered_mpps= on
 * stdout ("offered": program runs that returned XDP_TX; what arrives is the sinks' business).
 *
 * --afpacket sends the same packets (same flows, same variation, done in C) through an
 * AF_PACKET socket with PACKET_QDISC_BYPASS and sendmmsg batches of 64 instead: slower, but
 * every frame is an ordinary skb. Live frames forwarded by the kernel's IP stack (nftables
 * DNAT) did not make it back out of the lb namespace here (see bench/README.md), so the
 * nftables anchor is driven this way.
 *
 *   gen --obj gen.bpf.o --iface veth0 --dst-mac MAC --dst IP [--dport 80] [--src 10.77.200.1]
 *       [--sport 10000] [--flows 4096] [--size 60] [--seconds 5] [--count N] [--data-only]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "common.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int parse_mac(const char *text, unsigned char mac[6]) {
    return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) == 6 ? 0 : -1;
}

static int interface_mac(const char *iface, unsigned char mac[6]) {
    struct ifreq ifr = {0};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
    int rc = ioctl(fd, SIOCGIFHWADDR, &ifr);
    close(fd);
    if (rc != 0) return -1;
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}

static unsigned short checksum(const void *data, size_t len, unsigned int sum) {
    const unsigned char *p = data;
    for (size_t i = 0; i + 1 < len; i += 2) sum += (p[i] << 8) | p[i + 1];
    if (len & 1) sum += p[len - 1] << 8;
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons((unsigned short)~sum);
}

/* Checksum `sum` (network order) after a 16-bit word changes from `from` to `to` (RFC 1624). */
static unsigned short csum_replace(unsigned short sum, unsigned short from, unsigned short to) {
    unsigned int s = (unsigned short)~ntohs(sum) + (unsigned int)(unsigned short)~ntohs(from) + ntohs(to);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    return htons((unsigned short)~s);
}

/* The packet gen.bpf.c would make of run `n`, written into `frame` (template in `tmpl`). */
static void vary(unsigned char *frame, const unsigned char *tmpl, unsigned int n, unsigned int flows, int syn_first) {
    memcpy(frame, tmpl, GEN_HDR_LEN);
    struct iphdr *ip = (void *)(frame + sizeof(struct ethhdr));
    struct tcphdr *tcp = (void *)(ip + 1);
    unsigned short *addr_words = (unsigned short *)&ip->saddr, *flag_word = (unsigned short *)tcp + 6;
    unsigned int flow = n % flows, round = n / flows;
    unsigned short old_port = tcp->source, old_addr = addr_words[1], old_flags = *flag_word;
    unsigned short port = htons((unsigned short)(ntohs(old_port) + flow / 250));
    unsigned short addr = htons((unsigned short)(ntohs(old_addr) + flow % 250));
    unsigned short flags = syn_first && round == 0 ? htons(0x5002) : old_flags;
    tcp->source = port;
    addr_words[1] = addr;
    *flag_word = flags;
    ip->check = csum_replace(ip->check, old_addr, addr);
    tcp->check = csum_replace(csum_replace(csum_replace(tcp->check, old_port, port), old_addr, addr), old_flags, flags);
}

/* --afpacket: sendmmsg batches of 64 on a PACKET_QDISC_BYPASS socket; returns packets sent. */
static long long send_afpacket(const char *iface, const unsigned char *tmpl, int size, unsigned int flows,
                               int syn_first, double deadline, unsigned long long count, double (*clock)(void)) {
    int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) { perror("gen: AF_PACKET socket"); return -1; }
    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll where = {.sll_family = AF_PACKET, .sll_ifindex = (int)if_nametoindex(iface), .sll_halen = 6};
    memcpy(where.sll_addr, tmpl, 6);
    if (bind(fd, (struct sockaddr *)&where, sizeof where) != 0) { perror("gen: bind"); close(fd); return -1; }
    static unsigned char frames[64][1514];
    struct iovec iov[64];
    struct mmsghdr msgs[64];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < 64; i++) {
        memcpy(frames[i], tmpl, (size_t)size);
        iov[i].iov_base = frames[i];
        iov[i].iov_len = (size_t)size;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long sent = 0;
    while (sent < count && clock() < deadline) {
        for (int i = 0; i < 64; i++) vary(frames[i], tmpl, (unsigned int)(sent + i), flows, syn_first);
        int n = sendmmsg(fd, msgs, 64, 0);
        if (n < 0) {
            if (errno == ENOBUFS || errno == EAGAIN || errno == EINTR) continue;
            perror("gen: sendmmsg");
            close(fd);
            return -1;
        }
        sent += (unsigned long long)n;
    }
    close(fd);
    return (long long)sent;
}

static void usage(void) {
    fprintf(stderr, "usage: gen --obj gen.bpf.o --iface IF --dst-mac MAC --dst IPV4 [--dport 80] [--src IPV4]\n"
                    "           [--sport 10000] [--flows 1-1000000] [--size 60-1514] [--seconds 1-600] [--count N]\n"
                    "           [--data-only] [--afpacket]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *obj_path = NULL, *iface = NULL, *dst_mac = NULL, *dst = NULL, *src = "10.77.200.1";
    int dport = 80, sport = 10000, size = 60;
    long flows = 4096;
    double seconds = 5;
    unsigned long long count = 1ULL << 40;
    int syn_first = 1, afpacket = 0;
    static const struct option options[] = {
        {"obj", 1, 0, 'o'}, {"iface", 1, 0, 'i'}, {"dst-mac", 1, 0, 'm'}, {"dst", 1, 0, 'd'},
        {"dport", 1, 0, 'p'}, {"src", 1, 0, 's'}, {"sport", 1, 0, 'P'}, {"flows", 1, 0, 'f'},
        {"size", 1, 0, 'S'}, {"seconds", 1, 0, 't'}, {"count", 1, 0, 'c'},
        {"data-only", 0, 0, 'D'}, {"afpacket", 0, 0, 'A'}, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'o': obj_path = optarg; break;
        case 'i': iface = optarg; break;
        case 'm': dst_mac = optarg; break;
        case 'd': dst = optarg; break;
        case 'p': dport = atoi(optarg); break;
        case 's': src = optarg; break;
        case 'P': sport = atoi(optarg); break;
        case 'f': flows = atol(optarg); break;
        case 'S': size = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'c': count = strtoull(optarg, NULL, 10); break;
        case 'D': syn_first = 0; break;
        case 'A': afpacket = 1; break;
        default: usage();
        }
    }
    if ((!obj_path && !afpacket) || !iface || !dst_mac || !dst || size < 60 || size > 1514 || flows < 1 || flows > 1000000 ||
        seconds <= 0 || seconds > 600 || dport < 1 || dport > 65535 || sport < 1 || sport + flows / 250 > 65535)
        usage();

    unsigned char frame[1514] = {0};
    struct ethhdr *eth = (void *)frame;
    struct iphdr *ip = (void *)(eth + 1);
    struct tcphdr *tcp = (void *)(ip + 1);
    if (parse_mac(dst_mac, eth->h_dest) != 0) { fprintf(stderr, "gen: bad MAC %s\n", dst_mac); return 2; }
    if (interface_mac(iface, eth->h_source) != 0) { fprintf(stderr, "gen: %s: %s\n", iface, strerror(errno)); return 1; }
    eth->h_proto = htons(ETH_P_IP);
    ip->version = 4; ip->ihl = 5; ip->ttl = 64; ip->protocol = IPPROTO_TCP;
    ip->tot_len = htons((unsigned short)(size - sizeof *eth));
    ip->frag_off = htons(0x4000);
    if (inet_pton(AF_INET, src, &ip->saddr) != 1 || inet_pton(AF_INET, dst, &ip->daddr) != 1) usage();
    if ((ntohl(ip->saddr) & 0xff) + 250 > 255) { fprintf(stderr, "gen: --src's last octet must be <= 5\n"); return 2; }
    ip->check = checksum(ip, sizeof *ip, 0);
    tcp->source = htons((unsigned short)sport);
    tcp->dest = htons((unsigned short)dport);
    tcp->seq = htonl(1000); tcp->ack_seq = htonl(1);
    tcp->doff = 5; tcp->ack = 1; tcp->psh = 1;
    tcp->window = htons(65535);
    size_t tcp_len = size - sizeof *eth - sizeof *ip;
    unsigned int pseudo = (ntohl(ip->saddr) >> 16) + (ntohl(ip->saddr) & 0xffff) + (ntohl(ip->daddr) >> 16) +
                          (ntohl(ip->daddr) & 0xffff) + IPPROTO_TCP + (unsigned int)tcp_len;
    tcp->check = checksum(tcp, tcp_len, pseudo);

    if (afpacket) {
        double start = now();
        long long sent = send_afpacket(iface, frame, size, (unsigned int)flows, syn_first, start + seconds, count, now);
        if (sent < 0) return 1;
        double elapsed = now() - start;
        printf("offered=%lld\nseconds=%.3f\noffered_mpps=%.4f\n", sent, elapsed, sent / elapsed / 1e6);
        return 0;
    }
    if (!getenv("XDP_BENCH_VERBOSE")) libbpf_set_print(NULL); /* libbpf and verifier logs on demand */
    struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
    if (!obj || libbpf_get_error(obj)) { fprintf(stderr, "gen: cannot open %s\n", obj_path); return 1; }
    int err = bpf_object__load(obj);
    if (err) { fprintf(stderr, "gen: loading %s: %s\n", obj_path, strerror(-err)); return 1; }
    struct bpf_program *prog = bpf_object__find_program_by_name(obj, "generate");
    struct bpf_map *map = bpf_object__find_map_by_name(obj, "gen_cfg");
    if (!prog || !map) { fprintf(stderr, "gen: %s lacks generate/gen_cfg\n", obj_path); return 1; }
    struct gen_cfg cfg = {.flows = (unsigned int)flows, .syn_first = (unsigned int)syn_first};
    memcpy(cfg.hdr, frame, GEN_HDR_LEN);
    unsigned int key = 0;
    if (bpf_map_update_elem(bpf_map__fd(map), &key, &cfg, 0) != 0) { perror("gen: gen_cfg"); return 1; }

    unsigned int ifindex = if_nametoindex(iface);
    if (!ifindex) { fprintf(stderr, "gen: no interface %s\n", iface); return 1; }
    struct xdp_md ctx = {.data_end = (unsigned int)size, .ingress_ifindex = ifindex};
    double start = now(), deadline = start + seconds;
    unsigned long long runs = 0;
    while (now() < deadline && runs < count) {
        unsigned long long left = count - runs;
        unsigned int repeat = left < 65536 ? (unsigned int)left : 65536;
        LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = frame, .data_size_in = (unsigned int)size,
                    .ctx_in = &ctx, .ctx_size_in = sizeof ctx, .repeat = repeat,
                    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
        err = bpf_prog_test_run_opts(bpf_program__fd(prog), &run);
        if (err && errno == EPERM) {
            /* Root with every capability still gets EPERM where the kernel's security policy
             * (seen: a 6.18 VM kernel with the BPF LSM) forbids live-frames test runs, while
             * plain test runs work: say so, since nothing on this machine can fix it. */
            fprintf(stderr, "gen: the kernel refused BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (EPERM): this "
                            "kernel does not let the XDP generator send packets; the packet-rate benchmarks "
                            "cannot run on this machine (--afpacket sends through AF_PACKET instead, far slower)\n");
            return 1;
        }
        if (err && errno != EINTR) { fprintf(stderr, "gen: bpf_prog_test_run_opts: %s\n", strerror(errno)); return 1; }
        runs += repeat;
    }
    double elapsed = now() - start;
    if (bpf_map_lookup_elem(bpf_map__fd(map), &key, &cfg) != 0) { perror("gen: reading gen_cfg"); return 1; }
    printf("offered=%u\nseconds=%.3f\noffered_mpps=%.4f\n", cfg.counter, elapsed, cfg.counter / elapsed / 1e6);
    bpf_object__close(obj);
    return 0;
}

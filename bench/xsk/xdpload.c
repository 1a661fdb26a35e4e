/*
 * xdpload: attaches one of the benchmark's XDP programs to an interface for a bounded time,
 * then prints its counters and detaches (restoring the program that was there before, e.g.
 * the lab's XDP_PASS). Writes READY_FILE once attached, so a script can wait for it.
 *
 *   xdpload sink --obj sink.bpf.o --iface IF --port 80 --net 10.77.200.0 [--min-nat-port 61000]
 *                --seconds S [--ready FILE] [--skb]
 *   xdpload fwd  --obj fwd.bpf.o  --iface IF --vip IP:PORT --backend-mac MAC [...] --seconds S
 *
 * Stops at --seconds or on SIGINT/SIGTERM; prints packets=, bytes=, passed= (summed over CPUs).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <signal.h>
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

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int parse_mac(const char *text, unsigned char mac[6]) {
    return sscanf(text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3], &mac[4], &mac[5]) == 6 ? 0 : -1;
}

static void usage(void) {
    fprintf(stderr, "usage: xdpload sink --obj O --iface IF --port P --net A.B.C.0 [--min-nat-port P]\n"
                    "                    --seconds S [--ready FILE] [--skb]\n"
                    "       xdpload fwd --obj O --iface IF --vip IP:PORT --backend-mac MAC... --seconds S [--ready FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    const char *kind = argv[1], *obj_path = NULL, *iface = NULL, *ready = NULL, *vip = NULL;
    int port = 0, skb = 0, min_nat_port = 65535;
    const char *net = NULL;
    double seconds = 0;
    struct fwd_cfg fcfg = {0};
    static const struct option options[] = {
        {"obj", 1, 0, 'o'}, {"iface", 1, 0, 'i'}, {"port", 1, 0, 'p'}, {"seconds", 1, 0, 't'},
        {"ready", 1, 0, 'r'}, {"vip", 1, 0, 'v'}, {"backend-mac", 1, 0, 'm'}, {"skb", 0, 0, 'k'},
        {"net", 1, 0, 'n'}, {"min-nat-port", 1, 0, 'N'}, {0, 0, 0, 0}};
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'o': obj_path = optarg; break;
        case 'i': iface = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'r': ready = optarg; break;
        case 'v': vip = optarg; break;
        case 'k': skb = 1; break;
        case 'n': net = optarg; break;
        case 'N': min_nat_port = atoi(optarg); break;
        case 'm':
            if (fcfg.backends >= FWD_MAX_BACKENDS || parse_mac(optarg, fcfg.mac[fcfg.backends]) != 0) usage();
            fcfg.backends++;
            break;
        default: usage();
        }
    }
    int is_sink = strcmp(kind, "sink") == 0, is_fwd = strcmp(kind, "fwd") == 0;
    if ((!is_sink && !is_fwd) || !obj_path || !iface || seconds <= 0 || seconds > 3600) usage();
    struct sink_cfg scfg = {0};
    if (is_sink) {
        if (port < 1 || port > 65535 || min_nat_port < 1 || min_nat_port > 65535 || !net ||
            inet_pton(AF_INET, net, &scfg.net) != 1)
            usage();
        scfg.port = htons((unsigned short)port);
        scfg.min_nat_port = htons((unsigned short)min_nat_port);
    }
    if (is_fwd) {
        char address[64];
        const char *colon = vip ? strrchr(vip, ':') : NULL;
        if (!colon || fcfg.backends == 0 || (size_t)(colon - vip) >= sizeof address) usage();
        memcpy(address, vip, colon - vip);
        address[colon - vip] = 0;
        if (inet_pton(AF_INET, address, &fcfg.vip) != 1) usage();
        fcfg.port = htons((unsigned short)atoi(colon + 1));
    }
    unsigned int ifindex = if_nametoindex(iface);
    if (!ifindex) { fprintf(stderr, "xdpload: no interface %s\n", iface); return 1; }
    if (is_fwd) {
        struct ifreq ifr = {0};
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
        if (fd < 0 || ioctl(fd, SIOCGIFHWADDR, &ifr) != 0) { perror("xdpload: SIOCGIFHWADDR"); return 1; }
        close(fd);
        memcpy(fcfg.own_mac, ifr.ifr_hwaddr.sa_data, 6);
    }

    if (!getenv("XDP_BENCH_VERBOSE")) libbpf_set_print(NULL); /* libbpf and verifier logs on demand */
    struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
    if (!obj || libbpf_get_error(obj)) { fprintf(stderr, "xdpload: cannot open %s\n", obj_path); return 1; }
    int err = bpf_object__load(obj);
    if (err) { fprintf(stderr, "xdpload: loading %s: %s\n", obj_path, strerror(-err)); return 1; }
    struct bpf_program *prog = bpf_object__next_program(obj, NULL);
    struct bpf_map *counters = bpf_object__find_map_by_name(obj, "counters");
    struct bpf_map *cfg = bpf_object__find_map_by_name(obj, is_sink ? "sink_cfg" : "fwd_cfg");
    if (!prog || !counters || !cfg) { fprintf(stderr, "xdpload: %s lacks its program or maps\n", obj_path); return 1; }
    unsigned int key = 0;
    if (bpf_map_update_elem(bpf_map__fd(cfg), &key, is_sink ? (void *)&scfg : (void *)&fcfg, 0) != 0) {
        perror("xdpload: config map");
        return 1;
    }

    unsigned int mode = skb ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
    __u32 previous = 0;
    bpf_xdp_query_id((int)ifindex, mode, &previous);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if ((err = bpf_xdp_attach((int)ifindex, bpf_program__fd(prog), mode, NULL)) != 0) {
        fprintf(stderr, "xdpload: attaching to %s: %s\n", iface, strerror(-err));
        return 1;
    }
    if (ready) { FILE *f = fopen(ready, "w"); if (f) fclose(f); }
    struct timespec tick = {0, 20 * 1000 * 1000};
    for (double waited = 0; waited < seconds && !stop; waited += 0.02) nanosleep(&tick, NULL);

    int cpus = libbpf_num_possible_cpus();
    struct xdp_counters *per_cpu = calloc(cpus > 0 ? cpus : 1, sizeof *per_cpu), sum = {0};
    if (per_cpu && bpf_map_lookup_elem(bpf_map__fd(counters), &key, per_cpu) == 0) {
        for (int i = 0; i < cpus; i++) {
            sum.packets += per_cpu[i].packets; sum.bytes += per_cpu[i].bytes; sum.passed += per_cpu[i].passed;
        }
    }
    if (previous) {
        int fd = bpf_prog_get_fd_by_id(previous);
        if (fd < 0 || bpf_xdp_attach((int)ifindex, fd, mode, NULL) != 0)
            fprintf(stderr, "xdpload: could not restore program %u on %s\n", previous, iface);
    } else {
        bpf_xdp_detach((int)ifindex, mode, NULL);
    }
    printf("packets=%llu\nbytes=%llu\npassed=%llu\n", (unsigned long long)sum.packets,
           (unsigned long long)sum.bytes, (unsigned long long)sum.passed);
    free(per_cpu);
    bpf_object__close(obj);
    return 0;
}

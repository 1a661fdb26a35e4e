/*
 * reflector: the AF_XDP anchor. A minimal C AF_XDP reflector on one queue: copy mode (veth
 * has no zero-copy), need_wakeup, batches of 64. Each received frame gets its MACs, IPv4
 * addresses and TCP ports swapped (checksums stay valid: the sums are order-independent) and
 * goes back out on TX in the same UMEM frame, no copy; completed TX frames return to FILL.
 * That is the least any AF_XDP forwarder must do per packet, so its rate is the ceiling of
 * the AF_XDP path on this interface. libxdp loads its default program redirecting the queue
 * to the socket.
 *
 * Frame ownership: all FRAMES frames start on FILL; a frame moves FILL -> RX -> (ours) -> TX
 * -> COMPLETION -> FILL, or RX -> FILL when TX has no room (a drop). FILL's size equals the
 * frame count, so returning a frame to FILL always finds room.
 *
 *   reflector --iface veth0 [--queue 0] --seconds S [--ready FILE]
 * Prints rx=, tx=, dropped= on stdout when the time is up or on SIGINT/SIGTERM; exits 1 with
 * the reason on stderr if a frame ever comes back twice (FILL full), as no rate is then valid.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <linux/if_ether.h>
#include <linux/if_link.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <xdp/xsk.h>

#define FRAMES 4096
#define FRAME_SIZE XSK_UMEM__DEFAULT_FRAME_SIZE
#define BATCH 64

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline void swap_bytes(unsigned char *a, unsigned char *b, size_t n) {
    unsigned char t[ETH_ALEN];
    memcpy(t, a, n); memcpy(a, b, n); memcpy(b, t, n);
}

static inline void reflect(unsigned char *frame, unsigned int len) {
    if (len < sizeof(struct ethhdr)) return;
    struct ethhdr *eth = (void *)frame;
    swap_bytes(eth->h_dest, eth->h_source, ETH_ALEN);
    if (eth->h_proto != htons(ETH_P_IP) || len < sizeof *eth + sizeof(struct iphdr)) return;
    struct iphdr *ip = (void *)(eth + 1);
    __u32 a = ip->saddr; ip->saddr = ip->daddr; ip->daddr = a;
    if (ip->protocol != IPPROTO_TCP || len < sizeof *eth + ip->ihl * 4u + sizeof(struct tcphdr)) return;
    struct tcphdr *tcp = (void *)((unsigned char *)ip + ip->ihl * 4);
    __u16 p = tcp->source; tcp->source = tcp->dest; tcp->dest = p;
}

int main(int argc, char **argv) {
    const char *iface = NULL, *ready = NULL;
    int queue = 0, opt;
    double seconds = 0;
    static const struct option options[] = {
        {"iface", 1, 0, 'i'}, {"queue", 1, 0, 'q'}, {"seconds", 1, 0, 't'}, {"ready", 1, 0, 'r'}, {0, 0, 0, 0}};
    while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (opt) {
        case 'i': iface = optarg; break;
        case 'q': queue = atoi(optarg); break;
        case 't': seconds = atof(optarg); break;
        case 'r': ready = optarg; break;
        default: goto usage;
        }
    }
    if (!iface || queue < 0 || seconds <= 0 || seconds > 3600) goto usage;

    size_t area_size = (size_t)FRAMES * FRAME_SIZE;
    void *area = mmap(NULL, area_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED) { perror("reflector: mmap"); return 1; }
    /* Zeroed: libxdp leaves the rings' cached producer/consumer indices as it finds them
       (its own samples calloc these). From the stack, a garbage cached index on COMPLETION
       made the first peek return thousands of entries the kernel never wrote; those frames
       went back to FILL twice, FILL overflowed and the reflector stopped receiving
       (rx=8064 in most runs: the "0.001 Mpps" samples). */
    struct xsk_ring_prod fill = {0}, tx = {0};
    struct xsk_ring_cons comp = {0}, rx = {0};
    struct xsk_umem *umem;
    struct xsk_umem_config ucfg = {.fill_size = FRAMES, .comp_size = FRAMES, .frame_size = FRAME_SIZE,
                                   .frame_headroom = 0, .flags = 0};
    int err = xsk_umem__create(&umem, area, area_size, &fill, &comp, &ucfg);
    if (err) { fprintf(stderr, "reflector: xsk_umem__create: %s\n", strerror(-err)); return 1; }
    struct xsk_socket_config cfg = {.rx_size = 2048, .tx_size = 2048, .libxdp_flags = 0,
                                    .xdp_flags = XDP_FLAGS_DRV_MODE, .bind_flags = XDP_USE_NEED_WAKEUP | XDP_COPY};
    struct xsk_socket *xsk;
    err = xsk_socket__create(&xsk, iface, (unsigned int)queue, umem, &rx, &tx, &cfg);
    if (err) { fprintf(stderr, "reflector: xsk_socket__create on %s queue %d: %s\n", iface, queue, strerror(-err)); return 1; }
    int fd = xsk_socket__fd(xsk);

    __u32 idx;
    if (xsk_ring_prod__reserve(&fill, FRAMES, &idx) != FRAMES) { fprintf(stderr, "reflector: FILL too small\n"); return 1; }
    for (__u32 i = 0; i < FRAMES; i++) *xsk_ring_prod__fill_addr(&fill, idx + i) = (__u64)i * FRAME_SIZE;
    xsk_ring_prod__submit(&fill, FRAMES);

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (ready) { FILE *f = fopen(ready, "w"); if (f) fclose(f); }
    unsigned long long received = 0, sent = 0, dropped = 0, loops = 0;
    double deadline = now() + seconds;
    while (!stop) {
        if ((++loops & 0xffff) == 0 && now() >= deadline) break;
        /* completions back to FILL */
        __u32 cidx, fidx;
        __u32 done = xsk_ring_cons__peek(&comp, BATCH, &cidx);
        if (done) {
            if (xsk_ring_prod__reserve(&fill, done, &fidx) != done) goto broken;
            for (__u32 i = 0; i < done; i++)
                *xsk_ring_prod__fill_addr(&fill, fidx + i) = *xsk_ring_cons__comp_addr(&comp, cidx + i);
            xsk_ring_prod__submit(&fill, done);
            xsk_ring_cons__release(&comp, done);
            sent += done;
        }
        __u32 ridx, tidx;
        __u32 got = xsk_ring_cons__peek(&rx, BATCH, &ridx);
        if (!got) {
            if (xsk_ring_prod__needs_wakeup(&fill)) recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
            if (xsk_ring_prod__needs_wakeup(&tx)) sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
            continue;
        }
        received += got;
        __u32 room = xsk_ring_prod__reserve(&tx, got, &tidx);
        if (room != got) room = 0; /* all-or-nothing: drop the batch back to FILL */
        for (__u32 i = 0; i < got; i++) {
            const struct xdp_desc *d = xsk_ring_cons__rx_desc(&rx, ridx + i);
            if (room) {
                reflect(xsk_umem__get_data(area, d->addr), d->len);
                struct xdp_desc *t = xsk_ring_prod__tx_desc(&tx, tidx + i);
                t->addr = d->addr;
                t->len = d->len;
            } else {
                if (xsk_ring_prod__reserve(&fill, 1, &fidx) != 1) goto broken;
                *xsk_ring_prod__fill_addr(&fill, fidx) = d->addr;
                xsk_ring_prod__submit(&fill, 1);
                dropped++;
            }
        }
        xsk_ring_cons__release(&rx, got);
        if (room) xsk_ring_prod__submit(&tx, got);
        /* A full TX ring is kicked too: in copy mode each sendto sends a few dozen frames, and
           a ring left full while RX keeps arriving was not kicked again. */
        if (!room || xsk_ring_prod__needs_wakeup(&tx)) sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0);
    }
    printf("rx=%llu\ntx=%llu\ndropped=%llu\n", received, sent, dropped);
    xsk_socket__delete(xsk);
    xsk_umem__delete(umem);
    munmap(area, area_size);
    return 0;
broken:
    /* FILL holds every frame at most once, so it always has room for one coming back; no
       room means a frame came back twice. Stop with an error rather than report a rate. */
    fprintf(stderr, "reflector: FILL ring full while returning a frame (a frame came back twice) after rx=%llu tx=%llu\n",
            received, sent);
    xsk_socket__delete(xsk);
    xsk_umem__delete(umem);
    munmap(area, area_size);
    return 1;
usage:
    fprintf(stderr, "usage: reflector --iface IF [--queue N] --seconds S(<=3600) [--ready FILE]\n");
    return 2;
}

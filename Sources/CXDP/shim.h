#ifndef CONVEY_CXDP_SHIM_H
#define CONVEY_CXDP_SHIM_H
/*
 * libxdp / libbpf and the kernel's AF_XDP definitions, imported into Swift as one module,
 * plus the steering program's map layouts (steer_maps.h) and a few static inline shims for
 * what Swift cannot call directly: ioctl (variadic) with struct ifreq / ethtool requests,
 * and AF_XDP socket options. Each shim returns 0 (or a value >= 0) on success and -errno on
 * failure; typed Swift wrappers turn that into thrown errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <net/if.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#include <linux/if_xdp.h>
#include <linux/if_link.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <xdp/libxdp.h>
#include <xdp/xsk.h>
#include "steer_maps.h"

/* Runs one SIOC* ioctl on `name` with a throwaway datagram socket. */
/* Asks the CPU to bring the cache line at p in, for writing, without waiting for it: the
 * forwarders call it for a whole RX batch's flow-table slots before handling the first frame,
 * so the batch's cache misses overlap. Swift has no prefetch intrinsic. */
static inline void cxdp_prefetch(const void *p)
{
#if defined(__x86_64__)
	/* PREFETCHW (Intel since Broadwell, AMD since K6; older CPUs decode it as a NOP): the
	 * line arrives ready to be written, as the forwarders update the flow's last-seen time.
	 * Inline assembly, because the compiler emits it only when told the target has it. */
	__asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
	__builtin_prefetch(p, 1, 3);
#endif
}

static inline int cxdp__ifreq_ioctl(const char *name, unsigned long request, struct ifreq *ifr)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    memset(ifr->ifr_name, 0, IFNAMSIZ);
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    int rc = ioctl(fd, request, ifr);
    int err = errno;
    close(fd);
    return rc < 0 ? -err : 0;
}

/* Runs one SIOCETHTOOL request (`request` starts with its ETHTOOL_* command) on `name`. */
static inline int cxdp__ethtool(const char *name, void *request)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_data = (char *)request;
    return cxdp__ifreq_ioctl(name, SIOCETHTOOL, &ifr);
}

/* SIOCGIFHWADDR: the interface's 6-byte hardware address. */
static inline int cxdp_if_hwaddr(const char *name, uint8_t mac[6])
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = cxdp__ifreq_ioctl(name, SIOCGIFHWADDR, &ifr);
    if (rc == 0)
        memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    return rc;
}

/* SIOCGIFMTU: the MTU, or -errno. */
static inline int cxdp_if_mtu(const char *name)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    int rc = cxdp__ifreq_ioctl(name, SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

/* ETHTOOL_GCHANNELS: current rx and combined channel counts. */
static inline int cxdp_if_channels(const char *name, uint32_t *rx, uint32_t *combined)
{
    struct ethtool_channels channels;
    memset(&channels, 0, sizeof channels);
    channels.cmd = ETHTOOL_GCHANNELS;
    int rc = cxdp__ethtool(name, &channels);
    if (rc == 0) {
        *rx = channels.rx_count;
        *combined = channels.combined_count;
    }
    return rc;
}

/* ETHTOOL_GDRVINFO: the driver's name ("veth", "mlx5_core", ...). */
static inline int cxdp_if_driver(const char *name, char *buffer, size_t size)
{
    struct ethtool_drvinfo info;
    memset(&info, 0, sizeof info);
    info.cmd = ETHTOOL_GDRVINFO;
    int rc = cxdp__ethtool(name, &info);
    if (rc == 0 && size > 0) {
        memset(buffer, 0, size);
        strncpy(buffer, info.driver, size - 1);
    }
    return rc;
}

/* ETHTOOL_GFLAGS: 1 when the device moves received VLAN tags out of the frame
 * (ETH_FLAG_RXVLAN, "rx-vlan-hw-parse") before XDP sees it, 0 when not, or -errno. */
static inline int cxdp_if_strips_vlan(const char *name)
{
    struct ethtool_value value;
    memset(&value, 0, sizeof value);
    value.cmd = ETHTOOL_GFLAGS;
    int rc = cxdp__ethtool(name, &value);
    if (rc < 0)
        return rc;
    return (value.data & ETH_FLAG_RXVLAN) ? 1 : 0;
}

/* ETHTOOL_GRXFHINDIR: how many RX queues the RSS indirection table spreads flows over (its
 * largest queue index + 1), or -errno (-EOPNOTSUPP: the driver has no table). */
static inline int cxdp_if_rss_queue_span(const char *name)
{
    struct ethtool_rxfh_indir head;
    memset(&head, 0, sizeof head);
    head.cmd = ETHTOOL_GRXFHINDIR;
    int rc = cxdp__ethtool(name, &head);
    if (rc < 0)
        return rc;
    if (head.size == 0 || head.size > 65536)
        return -EOPNOTSUPP;
    struct ethtool_rxfh_indir *table = calloc(1, sizeof *table + head.size * sizeof(uint32_t));
    if (!table)
        return -ENOMEM;
    table->cmd = ETHTOOL_GRXFHINDIR;
    table->size = head.size;
    rc = cxdp__ethtool(name, table);
    int span = 0;
    if (rc == 0)
        for (uint32_t i = 0; i < table->size; i++)
            if ((int)table->ring_index[i] + 1 > span)
                span = (int)table->ring_index[i] + 1;
    free(table);
    return rc < 0 ? rc : span;
}

/* getsockopt(XDP_OPTIONS): XDP_OPTIONS_ZEROCOPY when the socket runs in zero-copy mode. */
static inline int cxdp_xsk_options(int fd, uint32_t *flags)
{
    struct xdp_options options;
    socklen_t len = sizeof options;
    if (getsockopt(fd, SOL_XDP, XDP_OPTIONS, &options, &len) < 0)
        return -errno;
    *flags = options.flags;
    return 0;
}

/* getsockopt(XDP_STATISTICS). */
static inline int cxdp_xsk_statistics(int fd, struct xdp_statistics *stats)
{
    socklen_t len = sizeof *stats;
    memset(stats, 0, sizeof *stats);
    if (getsockopt(fd, SOL_XDP, XDP_STATISTICS, stats, &len) < 0)
        return -errno;
    return 0;
}

/* Wakes the kernel to transmit what is on the TX ring (the need_wakeup protocol). */
static inline int cxdp_xsk_kick_tx(int fd)
{
    if (sendto(fd, NULL, 0, MSG_DONTWAIT, NULL, 0) >= 0)
        return 0;
    return -errno;
}

/* XDP_MAX_TX_SKB_BUDGET (Linux 6.17+, not in older headers): how many TX descriptors one
 * sendto() may send in copy mode, from 32 (the default) up to the TX ring's size. Beyond its
 * budget a sendto() returns EAGAIN with descriptors left on the ring. Older kernels answer
 * ENOPROTOOPT. */
#ifndef XDP_MAX_TX_SKB_BUDGET
#define XDP_MAX_TX_SKB_BUDGET 9
#endif
static inline int cxdp_xsk_set_tx_budget(int fd, unsigned int budget)
{
    if (setsockopt(fd, SOL_XDP, XDP_MAX_TX_SKB_BUDGET, &budget, sizeof budget) < 0)
        return -errno;
    return 0;
}

/* poll() for input on `fd` or a wake-up on the eventfd `wake_fd` (ignored when negative), up to
 * `timeout_ms`: an idle AF_XDP worker sleeps here, and a stop request wakes it at once. */
static inline int cxdp_poll_in_or_wake(int fd, int wake_fd, int timeout_ms)
{
    struct pollfd pfd[2] = { { .fd = fd, .events = POLLIN, .revents = 0 },
                             { .fd = wake_fd, .events = POLLIN, .revents = 0 } };
    int rc = poll(pfd, 2, timeout_ms);
    return rc < 0 ? -errno : rc;
}

/* eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), or -errno. */
static inline int cxdp_eventfd(void)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Makes the eventfd readable (a wake-up). */
static inline void cxdp_eventfd_signal(int fd)
{
    unsigned long long one = 1;
    if (fd >= 0)
        (void)!write(fd, &one, sizeof one);
}

/* Consumes pending wake-ups (non-blocking). */
static inline void cxdp_eventfd_drain(int fd)
{
    unsigned long long count;
    if (fd >= 0)
        (void)!read(fd, &count, sizeof count);
}

/* Wakes the kernel to refill from the FILL ring (recvfrom with MSG_DONTWAIT). */
static inline int cxdp_xsk_kick_rx(int fd)
{
    if (recvfrom(fd, NULL, 0, MSG_DONTWAIT, NULL, NULL) >= 0)
        return 0;
    return -errno;
}

/* setns(fd, CLONE_NEWNET) for the calling thread (declared here: glibc needs _GNU_SOURCE). */
extern int setns(int fd, int nstype);
static inline int cxdp_setns_net(int fd)
{
    return setns(fd, 0x40000000 /* CLONE_NEWNET */) < 0 ? -errno : 0;
}

/* The four rings of an AF_XDP socket mapped into this process (see cxdp_xsk_adopt_rings). */
struct cxdp_adopted_rings {
    void *maps[4];      /* RX, TX, FILL, COMPLETION */
    size_t lengths[4];
};

/* Maps the rings of an AF_XDP socket that another process bound and handed over (its
 * descriptor arrived with SCM_RIGHTS; its UMEM, registered on the same descriptor, is a
 * memfd mapped separately) into the given ring structs, as libxdp's xsk_ring_* inline
 * functions read them. The cached indices start from the rings' shared producer and consumer:
 * the sender stopped with nothing reserved or peeked. Returns 0 or -errno; on failure nothing
 * stays mapped. */
static inline int cxdp_xsk_adopt_rings(int fd, __u32 rx_size, __u32 tx_size, __u32 fill_size, __u32 comp_size,
                                       struct xsk_ring_cons *rx, struct xsk_ring_prod *tx,
                                       struct xsk_ring_prod *fill, struct xsk_ring_cons *comp,
                                       struct cxdp_adopted_rings *out)
{
    struct xdp_mmap_offsets off;
    socklen_t optlen = sizeof(off);
    if (getsockopt(fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen) < 0)
        return -errno;
    const struct xdp_ring_offset *offsets[4] = { &off.rx, &off.tx, &off.fr, &off.cr };
    const __u32 sizes[4] = { rx_size, tx_size, fill_size, comp_size };
    const size_t entry[4] = { sizeof(struct xdp_desc), sizeof(struct xdp_desc), sizeof(__u64), sizeof(__u64) };
    const off_t pgoff[4] = { XDP_PGOFF_RX_RING, XDP_PGOFF_TX_RING, XDP_UMEM_PGOFF_FILL_RING,
                             XDP_UMEM_PGOFF_COMPLETION_RING };
    for (int i = 0; i < 4; i++) {
        if (sizes[i] == 0 || (sizes[i] & (sizes[i] - 1)) != 0) {
            for (int j = 0; j < i; j++)
                munmap(out->maps[j], out->lengths[j]);
            return -EINVAL;
        }
        out->lengths[i] = offsets[i]->desc + sizes[i] * entry[i];
        out->maps[i] = mmap(NULL, out->lengths[i], PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, pgoff[i]);
        if (out->maps[i] == MAP_FAILED) {
            int error = errno;
            for (int j = 0; j < i; j++)
                munmap(out->maps[j], out->lengths[j]);
            return -error;
        }
    }
#define CXDP_RING(r, i, is_producer) do {                                                     \
        char *base = out->maps[i];                                                            \
        (r)->mask = sizes[i] - 1;                                                             \
        (r)->size = sizes[i];                                                                 \
        (r)->producer = (__u32 *)(base + offsets[i]->producer);                               \
        (r)->consumer = (__u32 *)(base + offsets[i]->consumer);                               \
        (r)->flags = (__u32 *)(base + offsets[i]->flags);                                     \
        (r)->ring = base + offsets[i]->desc;                                                  \
        (r)->cached_prod = __atomic_load_n((r)->producer, __ATOMIC_ACQUIRE);                   \
        (r)->cached_cons = __atomic_load_n((r)->consumer, __ATOMIC_ACQUIRE)                    \
                           + ((is_producer) ? sizes[i] : 0);                                  \
    } while (0)
    CXDP_RING(rx, 0, 0);
    CXDP_RING(tx, 1, 1);
    CXDP_RING(fill, 2, 1);
    CXDP_RING(comp, 3, 0);
#undef CXDP_RING
    return 0;
}

/* Unmaps what cxdp_xsk_adopt_rings mapped. */
static inline void cxdp_xsk_release_rings(struct cxdp_adopted_rings *rings)
{
    for (int i = 0; i < 4; i++)
        if (rings->maps[i] && rings->maps[i] != MAP_FAILED)
            munmap(rings->maps[i], rings->lengths[i]);
}

/* memfd_create (declared here: glibc needs _GNU_SOURCE). Plain memfds: Balancer's MemoryFile. */
extern int memfd_create(const char *name, unsigned int flags);

/* A memfd of exactly `size` bytes whose size is sealed (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL):
 * a UMEM area, which another process maps after a takeover; no one can then truncate it
 * under a mapping (a SIGBUS). The descriptor, or -errno. */
static inline int cxdp_memfd_sealed(const char *name, off_t size)
{
    int fd = memfd_create(name, 1U /* MFD_CLOEXEC */ | 2U /* MFD_ALLOW_SEALING */);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, size) < 0 || fcntl(fd, 1033 /* F_ADD_SEALS */, 0x0001 | 0x0002 | 0x0004 /* SEAL, SHRINK, GROW */) < 0) {
        int error = errno;
        close(fd);
        return -error;
    }
    return fd;
}

/* Attaches prog_fd to ifindex in place of expected_fd (XDP_FLAGS_REPLACE; expected_fd -1:
 * only where none is attached, XDP_FLAGS_UPDATE_IF_NOEXIST). mode_flags: XDP_FLAGS_DRV_MODE
 * or XDP_FLAGS_SKB_MODE. The options are zeroed here: libbpf refuses options whose bytes past
 * the fields it knows are not zero, and Swift does not zero a C struct's padding. 0 or -errno. */
static inline int cxdp_xdp_replace(int ifindex, int prog_fd, __u32 mode_flags, int expected_fd)
{
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = expected_fd);
    if (expected_fd < 0)
        return bpf_xdp_attach(ifindex, prog_fd, mode_flags | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
    return bpf_xdp_attach(ifindex, prog_fd, mode_flags | XDP_FLAGS_REPLACE, &opts);
}

/* Detaches the program of ifindex only if it is expected_fd's. 0 or -errno. */
static inline int cxdp_xdp_detach_expected(int ifindex, __u32 mode_flags, int expected_fd)
{
    LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = expected_fd);
    return bpf_xdp_detach(ifindex, mode_flags, &opts);
}

/* The id of the BPF program prog_fd, or 0. */
static inline __u32 cxdp_prog_id(int prog_fd)
{
    struct bpf_prog_info info;
    __u32 length = sizeof(info);
    memset(&info, 0, sizeof(info));
    return bpf_obj_get_info_by_fd(prog_fd, &info, &length) == 0 ? info.id : 0;
}

#endif

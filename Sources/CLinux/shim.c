#define _GNU_SOURCE
#include "CLinux.h"
#include <fcntl.h>
#include <unistd.h>
#include <sched.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>

int cl_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cl_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &ev);
}

int cl_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms) {
    return epoll_wait(epfd, events, max, timeout_ms);
}

uint32_t cl_epoll_event_events(const struct epoll_event *ev) { return ev->events; }
uint64_t cl_epoll_event_data(const struct epoll_event *ev) { return ev->data.u64; }
size_t cl_epoll_event_size(void) { return sizeof(struct epoll_event); }

ssize_t cl_splice(int fd_in, int fd_out, size_t len, unsigned int flags) {
    return splice(fd_in, NULL, fd_out, NULL, len, flags);
}

unsigned int cl_splice_flags_move_nonblock_more(void) {
    return SPLICE_F_MOVE | SPLICE_F_NONBLOCK | SPLICE_F_MORE;
}

unsigned int cl_splice_flags_move_nonblock(void) { return SPLICE_F_MOVE | SPLICE_F_NONBLOCK; }

int cl_get_pipe_size(int fd) { return fcntl(fd, F_GETPIPE_SZ); }

int cl_pipe_bytes(int fd) {
    int n = 0;
    if (ioctl(fd, FIONREAD, &n) != 0) return -1;
    return n;
}

int cl_pipe2_nonblock(int fds[2]) { return pipe2(fds, O_NONBLOCK | O_CLOEXEC); }

int cl_set_pipe_size(int fd, int size) { return fcntl(fd, F_SETPIPE_SZ, size); }

int cl_accept4_nonblock(int fd, struct sockaddr *addr, socklen_t *len) {
    return accept4(fd, addr, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
}

int cl_socket_nonblock(int domain, int type) {
    return socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

int cl_pin_thread_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int cl_eventfd_nonblock(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int cl_inotify_init_nonblock(void) { return inotify_init1(IN_NONBLOCK | IN_CLOEXEC); }

int cl_tcp_info_state(int fd) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    return info.tcpi_state;
}

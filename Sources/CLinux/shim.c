#define _GNU_SOURCE
#include "CLinux.h"
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sched.h>
#include <pthread.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

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

int cl_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int cl_inotify_init_nonblock(void) { return inotify_init1(IN_NONBLOCK | IN_CLOEXEC); }

int cl_tcp_info_state(int fd) {
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
    return info.tcpi_state;
}

ssize_t cl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > CL_MAX_FDS_PER_MESSAGE) { errno = EINVAL; return -1; }
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * CL_MAX_FDS_PER_MESSAGE)]; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.bytes;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        cmsg->cmsg_level = SOL_SOCKET;
        cmsg->cmsg_type = SCM_RIGHTS;
        cmsg->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do { n = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n;
}

ssize_t cl_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds) {
    union { struct cmsghdr align; char bytes[CMSG_SPACE(sizeof(int) * CL_MAX_FDS_PER_MESSAGE)]; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof control.bytes;
    *nfds = 0;
    ssize_t n;
    do { n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (n < 0 && errno == EINTR);
    if (n < 0) return n;
    int count = 0, overflow = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int in = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int got[CL_MAX_FDS_PER_MESSAGE];
        if (in > CL_MAX_FDS_PER_MESSAGE) in = CL_MAX_FDS_PER_MESSAGE;
        memcpy(got, CMSG_DATA(c), sizeof(int) * in);
        for (int i = 0; i < in; i++) {
            if (count < maxfds) fds[count++] = got[i]; else { close(got[i]); overflow = 1; }
        }
    }
    if (overflow || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
        for (int i = 0; i < count; i++) close(fds[i]);
        *nfds = 0;
        errno = EMSGSIZE;
        return -1;
    }
    *nfds = count;
    return n;
}

int cl_peer_credentials(int sock, int32_t *pid, uint32_t *uid) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    *pid = cred.pid;
    *uid = cred.uid;
    return 0;
}

uint64_t cl_netns_cookie(int sock) {
    uint64_t cookie = 0;
    socklen_t len = sizeof cookie;
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
    if (getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) return 0;
    return cookie;
}

#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>

int cl_spawn_sibling(const char *path, char *const argv[], char *const envp[], int *pidfd, int *exec_errno) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -1;
    int fd = -1;
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&fd;
    /* With CLONE_PARENT the kernel takes the caller's own exit signal (SIGCHLD to the shared
     * parent) and refuses another. */
    args.exit_signal = 0;
    /* Every signal blocked across the clone: the new process must not act on one (with the
     * caller's handlers, or ignore one the caller ignores) before it has reset them. */
    sigset_t all, before;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &before);
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) {
        /* The new process: a copy of a multithreaded one, so only async-signal-safe calls
         * until execve. Signals back to their defaults, then none blocked; no descriptor but
         * 0-2 and the report pipe (close-on-exec) on 3. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (int s = 1; s < NSIG; s++) sigaction(s, &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int e = 0;
        if (report[1] != 3 && dup3(report[1], 3, O_CLOEXEC) != 3) {
            e = errno;
            ssize_t ignored = write(report[1], &e, sizeof e);
            (void)ignored;
            _exit(127);
        }
        if (syscall(SYS_close_range, 4U, ~0U, 0U) != 0) {
            for (int fd = 4; fd < 65536; fd++) close(fd);  /* kernels before 5.9 */
        }
        execve(path, argv, envp);
        e = errno;
        ssize_t ignored = write(3, &e, sizeof e);
        (void)ignored;
        _exit(127);
    }
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &before, NULL);
    if (pid < 0) {
        close(report[0]);
        close(report[1]);
        errno = clone_errno;
        return -1;
    }
    close(report[1]);
    int e = 0;
    ssize_t n;
    do { n = read(report[0], &e, sizeof e); } while (n < 0 && errno == EINTR);
    close(report[0]);
    *exec_errno = n == (ssize_t)sizeof e ? e : 0;
    *pidfd = fd;
    return (int)pid;
}

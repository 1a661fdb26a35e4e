#ifndef CONVEY_CLINUX_H
#define CONVEY_CLINUX_H
/*
 * Linux syscalls that Swift's Glibc module does not import cleanly: the ones that need
 * _GNU_SOURCE (splice, pipe2, accept4, sched_setaffinity, F_SETPIPE_SZ) and epoll's flag
 * macros. Each wrapper is a plain call-through (defined in shim.c, compiled with _GNU_SOURCE);
 * errno is left as the syscall set it. Typed Swift wrappers above these turn errno into throws.
 */
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

/* epoll event bits as plain constants (the C header declares them as enum + macro). */
static const uint32_t CL_EPOLLIN = 0x001;
static const uint32_t CL_EPOLLOUT = 0x004;
static const uint32_t CL_EPOLLERR = 0x008;
static const uint32_t CL_EPOLLHUP = 0x010;
static const uint32_t CL_EPOLLRDHUP = 0x2000;
static const uint32_t CL_EPOLLEXCLUSIVE = 1u << 28;
static const uint32_t CL_EPOLLET = 1u << 31;

int cl_epoll_create(void);
int cl_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/* Waits for events; writes at most `max` (events, data) pairs. */
int cl_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms);
uint32_t cl_epoll_event_events(const struct epoll_event *ev);
uint64_t cl_epoll_event_data(const struct epoll_event *ev);
size_t cl_epoll_event_size(void);

ssize_t cl_splice(int fd_in, int fd_out, size_t len, unsigned int flags);
unsigned int cl_splice_flags_move_nonblock_more(void);
/* SPLICE_F_MOVE | SPLICE_F_NONBLOCK: no SPLICE_F_MORE, which would cork small replies. */
unsigned int cl_splice_flags_move_nonblock(void);
int cl_get_pipe_size(int fd);
/* Bytes waiting in a pipe (FIONREAD), or -1. */
int cl_pipe_bytes(int fd);
int cl_pipe2_nonblock(int fds[2]);
int cl_set_pipe_size(int fd, int size);
int cl_accept4_nonblock(int fd, struct sockaddr *addr, socklen_t *len);
int cl_socket_nonblock(int domain, int type);
int cl_pin_thread_to_cpu(int cpu);
int cl_eventfd_nonblock(void);
/* memfd_create(name, MFD_CLOEXEC): an anonymous file for a document a takeover hands over. */
int cl_memfd(const char *name);
int cl_inotify_init_nonblock(void);
int cl_tcp_info_state(int fd);

/* Descriptor passing over a Unix socket (SCM_RIGHTS), for a takeover's listener handover:
 * the control-message macros are not importable from Swift. */
#define CL_MAX_FDS_PER_MESSAGE 64
/* sendmsg of `len` bytes with `nfds` (<= CL_MAX_FDS_PER_MESSAGE) descriptors attached. */
ssize_t cl_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);
/* recvmsg of at most `len` bytes; the descriptors that came with it (close-on-exec) are
 * written to `fds` and counted in `*nfds`. A message whose bytes or descriptors did not all
 * fit fails with EMSGSIZE, with none of them left open. */
ssize_t cl_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds);
/* The peer's credentials of a connected Unix socket (SO_PEERCRED). */
int cl_peer_credentials(int sock, int32_t *pid, uint32_t *uid);
/* The cookie of the network namespace a socket belongs to (SO_NETNS_COOKIE, Linux 5.14+);
 * 0 when the kernel cannot say. */
uint64_t cl_netns_cookie(int sock);

#include "CLinuxNetlink.h"

/* Starts `path` with `argv` and `envp` as a sibling of the caller (clone3 with CLONE_PARENT:
 * its parent is the caller's, a service manager's own child, which reaps it and sees its
 * exit), with every signal at its default disposition and none blocked, and no descriptor of
 * the caller's but 0-2. Returns its pid and a pidfd for it in `*pidfd` (readable once it has
 * exited); `*exec_errno` is the errno of a failed execve (the process has then exited), else
 * 0. Returns -1 with errno when no process could be made. */
int cl_spawn_sibling(const char *path, char *const argv[], char *const envp[], int *pidfd, int *exec_errno);

#endif

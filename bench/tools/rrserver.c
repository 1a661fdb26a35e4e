/*
 * rrserver: the request/response backend of the conn/s benchmark (identical for every proxy).
 *
 * THREADS threads, each with its own SO_REUSEPORT listener and edge-triggered epoll: accept,
 * read the request, write a 64-byte reply, close (the server closes first, so the client
 * reads to EOF). Runs for at most SECONDS (default 600), then exits.
 *
 *   rrserver [-t THREADS] [-d SECONDS] IPV4 PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in address;
static time_t deadline;
static const char reply[64] = "PONG 0123456789abcdef0123456789abcdef0123456789abcdef012345678\n";

static int listener(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 4096) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void serve(int fd) {
    char request[512];
    ssize_t n = read(fd, request, sizeof request);
    if (n > 0) {
        (void)!write(fd, reply, sizeof reply);
        close(fd);
    } else if (n == 0 || errno != EAGAIN) {
        close(fd);
    } /* else: not readable yet, epoll reports it */
}

static void *worker(void *arg) {
    int lfd = *(int *)arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd }, events[128];
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    while (time(NULL) < deadline) {
        int n = epoll_wait(ep, events, 128, 500);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    struct epoll_event cev = { .events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.fd = c };
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev); /* before serve: close removes it */
                    serve(c);
                }
            } else {
                serve(fd);
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    int threads = 2, seconds = 600, opt;
    while ((opt = getopt(argc, argv, "t:d:")) != -1) {
        if (opt == 't') threads = atoi(optarg);
        else if (opt == 'd') seconds = atoi(optarg);
        else goto usage;
    }
    if (argc - optind != 2 || threads < 1 || threads > 64 || seconds < 1 || seconds > 86400) goto usage;
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
    if (inet_pton(AF_INET, argv[optind], &address.sin_addr) != 1) goto usage;
    deadline = time(NULL) + seconds;
    pthread_t ids[64];
    int fds[64];
    for (int i = 0; i < threads; i++) {
        if ((fds[i] = listener()) < 0) { fprintf(stderr, "rrserver: listen: %s\n", strerror(errno)); return 1; }
        pthread_create(&ids[i], NULL, worker, &fds[i]);
    }
    for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
    return 0;
usage:
    fprintf(stderr, "usage: rrserver [-t THREADS(1-64)] [-d SECONDS] IPV4 PORT\n");
    return 2;
}
